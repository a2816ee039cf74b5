//! Version-1 and version-2 clients on one server at once, on every transport (TCP, WebSocket
//! binary, JSON): each gets what its version promises (SPEC.md §9.3). The same room receives a
//! transient message, a stored one, and the stored one's recall: version-1 sessions see the
//! stored message only, version-2 sessions all three.

mod common;

use common::ws::WsClient;
use common::*;
use push_client::protocol::{Frame, Hello, Join, Packet};
use serde_json::{json, Value};

/// A WebSocket binary session in `room`, speaking at most `max_version`.
async fn ws_binary(server: &TestServer, user: &str, max_version: u16, room: &str) -> WsClient {
    let mut ws = WsClient::connect(server.http_addr, "/ws", &["push.v1"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    let hello = Hello {
        min_version: 1,
        max_version,
        token: token(user),
        device: String::new(),
        resume: vec![],
        options: Default::default(),
    };
    ws.send_packet(&Packet::new(1, Frame::Hello(hello))).await;
    let p = ws.recv_packet().await;
    assert!(
        matches!(p.frame, Frame::AuthOk(ref a) if a.version == max_version),
        "{p:?}"
    );
    let join = Join {
        room: room.into(),
        resume_after: None,
    };
    ws.send_packet(&Packet::new(2, Frame::Join(join))).await;
    assert!(matches!(ws.recv_packet().await.frame, Frame::Ok(_)));
    ws
}

/// A JSON session in `room`, speaking at most `max_version`.
async fn ws_json(server: &TestServer, user: &str, max_version: u16, room: &str) -> WsClient {
    let mut ws = WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    ws.send_json(json!({"op": "hello", "token": token(user), "max_version": max_version}))
        .await;
    assert_eq!(ws.recv_json().await["version"], max_version);
    ws.send_json(json!({"op": "join", "seq": 2, "room": room}))
        .await;
    assert_eq!(ws.recv_json().await["op"], "ok");
    ws
}

/// What a binary session receives until the stored message's recall or `last` stored push.
fn describe(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Push(m) if m.position == 0 => Some(format!("transient {}", m.kind)),
        Frame::Push(m) => Some(format!("stored {} {}", m.kind, m.position)),
        Frame::Recall(r) => Some(format!("recall {}", r.position)),
        _ => None,
    }
}

fn describe_json(v: &Value) -> Option<String> {
    match v["op"].as_str() {
        Some("push") if v["transient"] == true => {
            Some(format!("transient {}", v["type"].as_str()?))
        }
        Some("push") => Some(format!("stored {} {}", v["type"].as_str()?, v["position"])),
        Some("recall") => Some(format!("recall {}", v["position"])),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_gets_what_it_promises_on_every_transport() {
    let server = start(config()).await;
    let room = "mixed";
    let mut tcp1 = version_1(&server, "t1").await;
    join(&mut tcp1, room).await;
    let mut tcp2 = connect(server.tcp_addr, "t2").await;
    join(&mut tcp2, room).await;
    let mut bin1 = ws_binary(&server, "b1", 1, room).await;
    let mut bin2 = ws_binary(&server, "b2", 2, room).await;
    let mut json1 = ws_json(&server, "j1", 1, room).await;
    let mut json2 = ws_json(&server, "j2", 2, room).await;

    let body = json!({"to": {"room": room}, "kind": "typing", "payload": "t", "transient": true});
    assert_eq!(push(&server, &body.to_string()).await.0, 200);
    let body = json!({"to": {"room": room}, "kind": "news", "payload": "n"});
    assert_eq!(push(&server, &body.to_string()).await.0, 200);
    let body = json!({"to": {"room": room}, "kind": "last", "payload": "l"});
    assert_eq!(push(&server, &body.to_string()).await.0, 200);
    let (status, text) = http(
        server.http_addr,
        "POST",
        "/api/v1/recall",
        Some(API_TOKEN),
        &json!({"stream": format!("room:{room}"), "position": 1}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let v1 = ["stored news 1", "stored last 2"];
    let v2 = [
        "transient typing",
        "stored news 1",
        "stored last 2",
        "recall 1",
    ];
    for (c, want) in [(&mut tcp1, &v1[..]), (&mut tcp2, &v2[..])] {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let p = c.next_timeout(WAIT).await.expect("a frame in time");
            got.extend(describe(&p.frame));
        }
        assert_eq!(got, want, "TCP");
    }
    for (c, want) in [(&mut bin1, &v1[..]), (&mut bin2, &v2[..])] {
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend(describe(&c.recv_packet().await.frame));
        }
        assert_eq!(got, want, "WebSocket binary");
    }
    for (c, want) in [(&mut json1, &v1[..]), (&mut json2, &v2[..])] {
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.extend(describe_json(&c.recv_json().await));
        }
        assert_eq!(got, want, "JSON");
    }
    // Nothing else is on its way to the version-1 sessions: the next thing they get is the
    // next stored message.
    let body = json!({"to": {"room": room}, "kind": "after", "payload": "a"});
    assert_eq!(push(&server, &body.to_string()).await.0, 200);
    let p = tcp1.next_timeout(WAIT).await.unwrap();
    assert_eq!(describe(&p.frame).as_deref(), Some("stored after 3"));
    assert_eq!(
        describe(&bin1.recv_packet().await.frame).as_deref(),
        Some("stored after 3")
    );
    assert_eq!(
        describe_json(&json1.recv_json().await).as_deref(),
        Some("stored after 3")
    );
}
