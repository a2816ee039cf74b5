//! Transient messages (protocol version 2, SPEC.md §5.4, §5.8): published through the HTTP
//! API or a transient PUBLISH, never stored, position 0, delivered once to the version-2
//! connections online now (TCP and JSON mode, on every node), never to a version-1 session,
//! never replayed; checked on one node and in cluster mode.

mod common;

use common::cluster::node_with;
use common::ws::WsClient;
use common::*;
use push_client::protocol::{ErrorCode, Frame, Join, PayloadFormat, Publish, Stream};
use push_client::{Client, ClientConfig, ClientError, Connection, Event};
use serde_json::json;

async fn publish_api(server: &TestServer, to: serde_json::Value, kind: &str) -> serde_json::Value {
    let body = json!({"to": to, "kind": kind, "payload": kind, "transient": true});
    let (status, v) = push(server, &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn publish_durable(server: &TestServer, room: &str, kind: &str) {
    let body = json!({"to": {"room": room}, "kind": kind, "payload": kind});
    assert_eq!(push(server, &body.to_string()).await.0, 200);
}

/// The next PUSH on `c` (other frames skipped): (stream, position, kind).
async fn next_push(c: &mut Connection) -> (Stream, u64, String) {
    loop {
        let p = c.next_timeout(WAIT).await.expect("a PUSH in time");
        if let Frame::Push(m) = p.frame {
            return (m.stream, m.position, m.kind);
        }
    }
}

fn transient_publish(room: &str, kind: &str) -> Frame {
    Frame::Publish(Publish {
        room: room.into(),
        key: String::new(),
        kind: kind.into(),
        format: PayloadFormat::OPAQUE,
        payload: bytes::Bytes::from_static(b"typing"),
        transient: true,
    })
}

/// Clients on `a` and `b`; transient messages published on `a`.
async fn transient(a: &TestServer, b: &TestServer) {
    let mut vic = connect(b.tcp_addr, "vic").await;
    let mut old = version_1(b, "olaf").await;
    let mut json = WsClient::connect(a.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    json.send_json(json!({"op": "hello", "token": token("jay")}))
        .await;
    assert_eq!(json.recv_json().await["op"], "welcome");
    json.send_json(json!({"op": "join", "seq": 2, "room": "live"}))
        .await;
    assert_eq!(json.recv_json().await["op"], "ok");
    join(&mut vic, "live").await;
    join(&mut old, "live").await;

    // From the API: position 0, marked transient, to the version-2 members only.
    let v = publish_api(a, json!({"room": "live"}), "score").await;
    let accepted = &v["accepted"][0];
    assert_eq!(
        (&accepted["position"], &accepted["transient"]),
        (&json!(0), &json!(true)),
        "{v}"
    );
    assert_eq!(
        next_push(&mut vic).await,
        (Stream::Room("live".into()), 0, "score".into())
    );
    let got = json.recv_json().await;
    assert_eq!(
        (&got["type"], &got["position"], &got["transient"]),
        (&json!("score"), &json!(0), &json!(true)),
        "{got}"
    );

    // From a member, through the SDK: PUBLISH_ACK with position 0, then the members get it.
    let mut cfg = ClientConfig::new(a.tcp_addr, token("pam"));
    cfg.backoff_min = std::time::Duration::from_millis(10);
    let mut pam = Client::start(cfg);
    loop {
        match tokio::time::timeout(WAIT, pam.next_event()).await.unwrap() {
            Some(Event::Connected { .. }) => break,
            other => assert!(!matches!(
                other,
                None | Some(Event::Disconnected { fatal: true, .. })
            )),
        }
    }
    pam.join("live").await.unwrap();
    let ack = pam
        .publish_transient("live", "typing", bytes::Bytes::from_static(b"..."))
        .await
        .unwrap();
    assert_eq!(ack.position, 0);
    let m = tokio::time::timeout(WAIT, pam.next_message())
        .await
        .unwrap()
        .unwrap();
    assert!(m.is_transient() && m.kind == "typing", "{m:?}");
    assert_eq!(
        next_push(&mut vic).await,
        (Stream::Room("live".into()), 0, "typing".into())
    );
    assert_eq!(json.recv_json().await["type"], "typing");

    // A PUBLISH right behind its JOIN waits for the JOIN (membership), like a stored one.
    let mut quick = connect(a.tcp_addr, "quinn").await;
    let join_seq = quick
        .send(Frame::Join(Join {
            room: "fresh".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    let publish_seq = quick.send(transient_publish("fresh", "hi")).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let p = quick.next_timeout(WAIT).await.unwrap();
        answers.push(match p.frame {
            Frame::Ok(_) => format!("ok {}", p.seq == join_seq),
            Frame::PublishAck(a) => format!("ack {} {}", p.seq == publish_seq, a.position),
            Frame::Push(m) => format!("push {} {}", m.kind, m.position),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(answers, ["ok true", "ack true 0", "push hi 0"]);

    // A durable message after them: the version-1 member's first message.
    publish_durable(a, "live", "goal").await;
    assert_eq!(
        next_push(&mut old).await,
        (Stream::Room("live".into()), 1, "goal".into()),
        "a version-1 session never sees a transient message"
    );
    assert_eq!(next_push(&mut vic).await.2, "goal");

    // To a user and to everyone; nothing is stored, so a reconnect replays nothing.
    publish_api(a, json!({"users": ["vic"]}), "presence").await;
    assert_eq!(
        next_push(&mut vic).await,
        (Stream::User, 0, "presence".into())
    );
    publish_api(a, json!({"broadcast": true}), "tick").await;
    assert_eq!(
        next_push(&mut vic).await,
        (Stream::Broadcast, 0, "tick".into())
    );
    assert_eq!(json.recv_json().await["type"], "goal");
    let tick = json.recv_json().await;
    assert_eq!(
        (&tick["type"], &tick["stream"]),
        (&json!("tick"), &json!("broadcast"))
    );
    let history = user_history(b.http_addr, "vic", "after=0&limit=10").await;
    assert_eq!(history["messages"], json!([]), "{history}");
    drop(vic);
    let mut again = connect(b.tcp_addr, "vic").await;
    let (pong_rtt, before) = again.ping().await.unwrap();
    assert!(pong_rtt > std::time::Duration::ZERO);
    assert!(
        before.iter().all(|p| !matches!(p.frame, Frame::Push(_))),
        "nothing replayed: {before:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_messages_on_one_node() {
    let server = start(publishing()).await;
    transient(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_messages_in_cluster_mode() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = node_with(&nats, "t1", publishing()).await;
    let b = node_with(&nats, "t1", publishing()).await;
    transient(&a, &b).await;
}

/// What a transient publish may not carry, and who may not send one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_publishes_are_checked() {
    let server = start(publishing()).await;
    for extra in [json!({"id": "k1"}), json!({"ttl_seconds": 5})] {
        let mut body = json!({"to": {"room": "r"}, "kind": "k", "payload": "p", "transient": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, v) = push(&server, &body.to_string()).await;
        assert_eq!(status, 400, "{v}");
    }
    let mut old = version_1(&server, "olga").await;
    join(&mut old, "r").await;
    let refused = old.request(transient_publish("r", "k")).await;
    assert!(
        matches!(refused, Err(ClientError::Request { code, .. }) if code == ErrorCode::BAD_REQUEST),
        "{refused:?}"
    );
    let mut c = connect(server.tcp_addr, "carl").await;
    let refused = c.request(transient_publish("r", "k")).await;
    assert!(
        matches!(refused, Err(ClientError::Request { code, .. }) if code == ErrorCode::FORBIDDEN),
        "not a member: {refused:?}"
    );
}
