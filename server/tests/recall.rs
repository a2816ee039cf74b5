//! Recall (protocol version 2, SPEC.md §5.12): a publisher withdraws a stored message through
//! the HTTP API (by stream and position, or by the publish's idempotency id) or with WITHDRAW
//! (by its PUBLISH key). Online version-2 connections get RECALL, a replay meets RECALL where
//! the message was (one node), history shows it recalled; version-1 sessions see nothing new.
//! In cluster mode the recall is a tombstone in the stream: every node tells its connections.

mod common;

use common::cluster::node_with;
use common::ws::WsClient;
use common::*;
use push_client::protocol::{ErrorCode, Frame, PayloadFormat, Publish, Recall, Stream, Withdraw};
use push_client::{Client, ClientConfig, ClientError, Connection, Event};
use serde_json::{json, Value};

async fn recall(server: &TestServer, body: Value) -> (u16, Value) {
    let (status, text) = http(
        server.http_addr,
        "POST",
        "/api/v1/recall",
        Some(API_TOKEN),
        &body.to_string(),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn push_json(server: &TestServer, body: Value) -> Value {
    let (status, v) = push(server, &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// The next frame that is a PUSH or a RECALL, as text.
async fn next_event(c: &mut Connection) -> String {
    loop {
        let p = c.next_timeout(WAIT).await.expect("a frame in time");
        match p.frame {
            Frame::Push(m) => {
                return format!(
                    "push {} {}",
                    m.position,
                    String::from_utf8_lossy(&m.payload)
                )
            }
            Frame::Recall(Recall { position, .. }) => return format!("recall {position}"),
            _ => {}
        }
    }
}

/// A delivered user message published and recalled through `via`, to connections on `on`:
/// the version-2 connection is told, the version-1 one sees nothing new; positions are not
/// reused; recalling again is idempotent; a wrong id or position is 404; history lists it.
async fn recall_delivered(via: &TestServer, on: &TestServer) {
    let mut rae = connect(on.tcp_addr, "rae").await;
    let mut old = version_1(on, "rae").await;
    let v = push_json(
        via,
        json!({"to": {"users": ["rae"]}, "kind": "k", "payload": "oops"}),
    )
    .await;
    let id = v["accepted"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(next_event(&mut rae).await, "push 1 oops");
    assert_eq!(next_event(&mut old).await, "push 1 oops");

    // Delivered: the version-2 connection is told; the version-1 one sees nothing new.
    let (status, v) = recall(
        via,
        json!({"stream": "user:rae", "position": 1, "message_id": id}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recalled"][0]["already"], json!(false), "{v}");
    assert_eq!(next_event(&mut rae).await, "recall 1");
    push_json(
        via,
        json!({"to": {"users": ["rae"]}, "kind": "k", "payload": "next"}),
    )
    .await;
    assert_eq!(next_event(&mut old).await, "push 2 next");
    assert_eq!(next_event(&mut rae).await, "push 2 next");

    // Idempotent; a wrong id or position is 404 and changes nothing.
    let (status, v) = recall(via, json!({"stream": "user:rae", "position": 1})).await;
    assert_eq!(
        (status, &v["recalled"][0]["already"]),
        (200, &json!(true)),
        "{v}"
    );
    let wrong = "00000000000000000000000000000000";
    let (status, _) = recall(
        via,
        json!({"stream": "user:rae", "position": 2, "message_id": wrong}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = recall(via, json!({"stream": "user:rae", "position": 9})).await;
    assert_eq!(status, 404);
    let (status, _) = recall(via, json!({"stream": "user:rae"})).await;
    assert_eq!(status, 400);

    // History shows it recalled, without its payload.
    let h = user_history(on.http_addr, "rae", "after=0&limit=10").await;
    assert_eq!(h["messages"][0]["state"], "recalled", "{h}");
    assert_eq!(h["messages"][1]["state"], "pending", "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_recalls_delivered_and_undelivered_messages() {
    let server = start(config()).await;
    recall_delivered(&server, &server).await;

    // Not yet delivered (the user is offline): the replay meets RECALL instead of the message.
    // By the publish's idempotency id: every user it reached.
    let body =
        json!({"to": {"users": ["ray", "roy"]}, "kind": "k", "payload": "gone", "id": "p-1"});
    push_json(&server, body).await;
    push_json(
        &server,
        json!({"to": {"users": ["ray"]}, "kind": "k", "payload": "stays"}),
    )
    .await;
    let (status, v) = recall(&server, json!({"id": "p-1"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recalled"].as_array().unwrap().len(), 2, "{v}");
    let mut ray = connect(server.tcp_addr, "ray").await;
    assert_eq!(next_event(&mut ray).await, "recall 1");
    assert_eq!(next_event(&mut ray).await, "push 2 stays");
}

/// A member publishes with a key and withdraws it: every member hears RECALL, through the SDK
/// and in JSON mode too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_withdraws_what_it_published() {
    let server = start(publishing()).await;
    let mut quinn = connect(server.tcp_addr, "quinn").await;
    join(&mut quinn, "hall").await;
    let mut json_member = WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    json_member
        .send_json(json!({"op": "hello", "token": token("jo")}))
        .await;
    assert_eq!(json_member.recv_json().await["op"], "welcome");
    json_member
        .send_json(json!({"op": "join", "seq": 2, "room": "hall"}))
        .await;
    assert_eq!(json_member.recv_json().await["op"], "ok");

    let mut cfg = ClientConfig::new(server.tcp_addr, token("pia"));
    cfg.backoff_min = std::time::Duration::from_millis(10);
    let mut pia = Client::start(cfg);
    assert!(matches!(
        tokio::time::timeout(WAIT, pia.next_event()).await.unwrap(),
        Some(Event::Connected { .. })
    ));
    pia.join("hall").await.unwrap();
    let ack = pia
        .publish("hall", "chat", bytes::Bytes::from_static(b"typo"), "m-1")
        .await
        .unwrap();
    assert_eq!(next_event(&mut quinn).await, "push 1 typo");
    assert_eq!(json_member.recv_json().await["op"], "push");
    pia.withdraw("hall", "m-1").await.unwrap();
    assert_eq!(next_event(&mut quinn).await, "recall 1");
    let r = json_member.recv_json().await;
    assert_eq!(
        (&r["op"], &r["id"], &r["stream"], &r["position"]),
        (
            &json!("recall"),
            &json!(ack.id.to_string()),
            &json!("room:hall"),
            &json!(1)
        ),
        "{r}"
    );
    loop {
        match tokio::time::timeout(WAIT, pia.next_event()).await.unwrap() {
            Some(Event::Recalled {
                id,
                stream,
                position,
            }) => {
                assert_eq!(
                    (id, stream, position),
                    (ack.id, Stream::Room("hall".into()), 1)
                );
                break;
            }
            Some(Event::Disconnected { fatal: true, error }) => panic!("{error}"),
            _ => {}
        }
    }

    // A key it never used (or used in another room) is NOT_FOUND; so is a key of another user.
    let refused = pia.withdraw("hall", "m-2").await;
    assert!(
        matches!(refused, Err(ClientError::Request { code, .. }) if code == ErrorCode::NOT_FOUND),
        "{refused:?}"
    );
    let (answer, _) = quinn
        .request(Frame::Publish(Publish {
            room: "hall".into(),
            key: "q-1".into(),
            kind: "chat".into(),
            format: PayloadFormat::OPAQUE,
            payload: bytes::Bytes::from_static(b"mine"),
            transient: false,
        }))
        .await
        .unwrap();
    assert!(matches!(answer.frame, Frame::PublishAck(_)));
    assert_eq!(
        pia.withdraw("hall", "q-1")
            .await
            .err()
            .map(|e| e.to_string().contains("no publish")),
        Some(true)
    );
    json_member
        .send_json(json!({"op": "withdraw", "seq": 9, "room": "hall", "key": "q-1"}))
        .await;
    let mut answer = json_member.recv_json().await;
    while answer["op"] == "push" {
        answer = json_member.recv_json().await;
    }
    assert_eq!(
        (&answer["op"], &answer["name"]),
        (&json!("error"), &json!("NOT_FOUND")),
        "{answer}"
    );
    let (ok, _) = quinn
        .request(Frame::Withdraw(Withdraw {
            room: "hall".into(),
            key: "q-1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(ok.frame, Frame::Ok(None));
}

/// Cluster mode: the recall is a tombstone in the stream, so every node tells its version-2
/// connections; positions are not reused; history lists it; a replay skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_in_cluster_mode() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = node_with(&nats, "rc1", publishing()).await;
    let b = node_with(&nats, "rc1", publishing()).await;
    recall_delivered(&a, &b).await;

    // Offline: the replay skips what was recalled.
    let body =
        json!({"to": {"users": ["ray", "roy"]}, "kind": "k", "payload": "gone", "id": "p-1"});
    push_json(&a, body).await;
    push_json(
        &a,
        json!({"to": {"users": ["ray"]}, "kind": "k", "payload": "stays"}),
    )
    .await;
    let (status, v) = recall(&b, json!({"id": "p-1"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recalled"].as_array().unwrap().len(), 2, "{v}");
    let mut ray = connect(b.tcp_addr, "ray").await;
    assert_eq!(next_event(&mut ray).await, "push 2 stays");

    // A member withdraws its room message: members on both nodes are told.
    let mut quinn = connect(a.tcp_addr, "quinn").await;
    join(&mut quinn, "hall").await;
    let mut pia = connect(b.tcp_addr, "pia").await;
    join(&mut pia, "hall").await;
    let (ack, _) = pia
        .request(Frame::Publish(Publish {
            room: "hall".into(),
            key: "m-1".into(),
            kind: "chat".into(),
            format: PayloadFormat::OPAQUE,
            payload: bytes::Bytes::from_static(b"typo"),
            transient: false,
        }))
        .await
        .unwrap();
    assert!(matches!(ack.frame, Frame::PublishAck(_)), "{ack:?}");
    assert_eq!(next_event(&mut quinn).await, "push 1 typo");
    let (ok, _) = pia
        .request(Frame::Withdraw(Withdraw {
            room: "hall".into(),
            key: "m-1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(ok.frame, Frame::Ok(None));
    assert_eq!(next_event(&mut quinn).await, "recall 1");
    let body = json!({"to": {"room": "hall"}, "kind": "k", "payload": "after"});
    push_json(&b, body).await;
    assert_eq!(next_event(&mut quinn).await, "push 2 after");
}
