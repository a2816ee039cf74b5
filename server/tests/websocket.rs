//! The WebSocket shim against a real server: binary and JSON modes, token in the first frame
//! or the query string, replay on reconnect, a port of its own, and hostile input.

mod common;

use common::ws::WsClient;
use common::*;
use push_client::protocol::ws::frame::{close_code, encode_masked, opcode};
use push_protocol::{Frame, Hello, Join, Packet, Stream, StreamPos, MAX_VERSION, MIN_VERSION};
use push_server::{Config, ServerHandle};
use serde_json::json;

fn hello(user: &str) -> Packet {
    Packet::new(
        1,
        Frame::Hello(Hello {
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            token: token(user),
            device: "test".into(),
            resume: vec![],
            options: Default::default(),
        }),
    )
}

async fn binary_client(server: &ServerHandle, user: &str) -> WsClient {
    let mut c = WsClient::connect(server.http_addr, "/ws", &["push.v1"], &[])
        .await
        .unwrap();
    assert_eq!(c.subprotocol.as_deref(), Some("push.v1"));
    c.send_packet(&hello(user)).await;
    let ok = c.recv_packet().await;
    assert!(
        matches!(ok.frame, Frame::AuthOk(ref a) if a.user == user),
        "{ok:?}"
    );
    c
}

async fn json_client(server: &ServerHandle, user: &str) -> WsClient {
    let mut c = WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap();
    assert_eq!(c.subprotocol.as_deref(), Some("push.v1.json"));
    c.send_json(json!({"op": "hello", "token": token(user)}))
        .await;
    let w = c.recv_json().await;
    assert_eq!(w["op"], "welcome", "{w}");
    assert_eq!(w["user"], user);
    c
}

async fn push_notice(server: &ServerHandle, to: serde_json::Value, title: &str) {
    let body =
        json!({"to": to, "kind": "alarm", "title": title, "content": "c", "level": "warning"});
    let (status, v) = push(server, &body.to_string()).await;
    assert_eq!(status, 200, "{v}");
}

async fn acked(server: &ServerHandle, user: &str) -> u64 {
    user_history(server.http_addr, user, "").await["acked"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn binary_mode_carries_protocol_frames() {
    let server = start(config()).await;
    let mut c = binary_client(&server, "alice").await;
    push_notice(&server, json!({"users": ["alice"]}), "one").await;
    let p = c.recv_packet().await;
    let Frame::Push(push) = p.frame else {
        panic!("{p:?}")
    };
    assert_eq!((push.stream, push.position), (Stream::User, 1));
    c.send_packet(&Packet::new(
        7,
        Frame::Join(Join {
            room: "lobby".into(),
            resume_after: None,
        }),
    ))
    .await;
    let ok = c.recv_packet().await;
    assert_eq!((ok.seq, ok.frame), (7, Frame::Ok(Some(0))));
    push_notice(&server, json!({"room": "lobby"}), "room").await;
    let p = c.recv_packet().await;
    assert!(matches!(p.frame, Frame::Push(ref x) if x.stream == Stream::Room("lobby".into())));
    let ack = Frame::Ack(vec![StreamPos {
        stream: Stream::User,
        position: 1,
    }]);
    c.send_packet(&Packet::new(8, ack)).await;
    until("the ack to be recorded", async || {
        acked(&server, "alice").await == 1
    })
    .await;
    server.shutdown();
    // Shutdown reaches the client as a protocol CLOSE, then WebSocket close 1001.
    let (code, _, before) = c.recv_close().await;
    assert_eq!(code, close_code::GOING_AWAY);
    assert!(before.iter().any(|(op, _)| *op == opcode::BINARY));
}

#[tokio::test]
async fn json_mode_speaks_the_phase_one_format_with_acks_and_rooms() {
    let server = start(config()).await;
    let mut c = json_client(&server, "bob").await;
    let (_, metrics) = http(server.http_addr, "GET", "/metrics", None, "").await;
    assert!(
        metrics.contains("push_websocket_upgrades_total 1"),
        "{metrics}"
    );
    push_notice(&server, json!({"users": ["bob"]}), "hello bob").await;
    let m = c.recv_json().await;
    assert_eq!(m["op"], "push");
    assert_eq!(m["type"], "alarm");
    assert_eq!(m["data"]["title"], "hello bob");
    assert_eq!(m["data"]["level"], "warning");
    assert_eq!(m["stream"], "user");
    assert_eq!(m["id"].as_str().unwrap().len(), 32);
    assert!(m["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    c.send_json(json!({"op": "ack", "stream": "user", "position": m["position"]}))
        .await;
    until("the JSON ack", async || acked(&server, "bob").await == 1).await;

    c.send_json(json!({"op": "join", "room": "ops", "seq": 5}))
        .await;
    let ok = c.recv_json().await;
    assert_eq!(
        (ok["op"].as_str(), ok["seq"].as_u64()),
        (Some("ok"), Some(5))
    );
    let (status, _) = push(
        &server,
        &json!({"to": {"room": "ops"}, "kind": "text", "payload": "plain words"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let m = c.recv_json().await;
    assert_eq!(
        (m["stream"].as_str(), m["data"].as_str()),
        (Some("room:ops"), Some("plain words"))
    );
    // A request the server refuses gets a JSON error, and the connection carries on.
    c.send_json(json!({"op": "join", "room": "bad room", "seq": 6}))
        .await;
    let e = c.recv_json().await;
    assert_eq!(
        (e["op"].as_str(), e["seq"].as_u64()),
        (Some("error"), Some(6))
    );
    c.send_json(json!({"op": "leave", "room": "ops", "seq": 9}))
        .await;
    assert_eq!(c.recv_json().await["op"], "ok");
}

#[tokio::test]
async fn offline_messages_replay_in_order_on_reconnect_with_token_in_query() {
    let server = start(config()).await;
    let first = json_client(&server, "carol").await;
    drop(first);
    for i in 0..5 {
        push_notice(&server, json!({"users": ["carol"]}), &format!("m{i}")).await;
    }
    let path = format!("/ws?token={}&resume=user:2", token("carol"));
    let mut c = WsClient::connect(server.http_addr, &path, &["push.v1.json"], &[])
        .await
        .unwrap();
    assert_eq!(c.recv_json().await["op"], "welcome");
    // Resuming after 2 acknowledged 1..=2: 3, 4, 5 follow, in order.
    for want in 3..=5u64 {
        let m = c.recv_json().await;
        assert_eq!(m["position"].as_u64(), Some(want), "{m}");
        assert_eq!(m["data"]["title"], format!("m{}", want - 1));
    }
    assert_eq!(acked(&server, "carol").await, 2);
}

#[tokio::test]
async fn a_port_of_its_own_and_origin_checks() {
    let server = start(Config {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        ws_on_http: false,
        ws_allowed_origins: vec!["https://app.example".into()],
        ..config()
    })
    .await;
    let ws_addr = server.ws_addr.expect("ws listener");
    let r = WsClient::connect(server.http_addr, "/ws", &[], &[]).await;
    assert_eq!(r.err().map(|r| r.status), Some(404), "not on the HTTP port");
    let r = WsClient::connect(ws_addr, "/ws", &[], &[("Origin", "https://evil.example")]).await;
    let r = r.err().expect("refused");
    assert_eq!(r.status, 403);
    assert!(
        r.body
            .contains("origin https://evil.example is not allowed"),
        "{}",
        r.body
    );
    let mut c = WsClient::connect(ws_addr, "/ws", &[], &[("Origin", "https://app.example")])
        .await
        .unwrap();
    assert_eq!(c.subprotocol, None, "no subprotocol offered: binary mode");
    c.send_packet(&hello("dave")).await;
    assert!(matches!(c.recv_packet().await.frame, Frame::AuthOk(_)));
}

#[tokio::test]
async fn upgrade_refusals_say_why() {
    let server = start(config()).await;
    let r = WsClient::connect(server.http_addr, "/ws", &["mqtt"], &[])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("push.v1.json"), "{}", r.body);
    let (status, body) = http(server.http_addr, "GET", "/ws", None, "").await;
    assert_eq!(status, 426, "{body}");
    let r = WsClient::connect(server.http_addr, "/ws?tokn=x", &[], &[])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn bad_tokens_get_auth_error_and_a_close_code() {
    let server = start(config()).await;
    let mut c = WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap();
    c.send_json(json!({"op": "hello", "token": "not.a.jwt"}))
        .await;
    let e = c.recv_json().await;
    assert_eq!(
        (e["op"].as_str(), e["name"].as_str()),
        (Some("auth_error"), Some("TOKEN_INVALID"))
    );
    let (code, reason, _) = c.recv_close().await;
    assert_eq!(code, 4202, "4000 + TOKEN_INVALID");
    assert!(reason.contains("token"), "{reason}");
}

/// Each hostile input closes only its own connection, with its code; a client beside them
/// keeps receiving.
#[tokio::test]
async fn malformed_input_gets_a_clear_close_and_harms_no_one_else() {
    let server = start(Config {
        ws_max_message: 64 * 1024,
        ..config()
    })
    .await;
    let mut bystander = json_client(&server, "bystander").await;

    // Text where binary is expected.
    let mut c = binary_client(&server, "h1").await;
    c.send(opcode::TEXT, b"{\"op\":\"pong\"}").await;
    let (code, reason, _) = c.recv_close().await;
    assert_eq!(code, close_code::UNSUPPORTED_DATA);
    assert!(reason.contains("binary"), "{reason}");

    // Binary where JSON is expected.
    let mut c = json_client(&server, "h2").await;
    c.send(opcode::BINARY, &[1, 2, 3]).await;
    assert_eq!(c.recv_close().await.0, close_code::UNSUPPORTED_DATA);

    // Invalid JSON.
    let mut c = json_client(&server, "h3").await;
    c.send(opcode::TEXT, b"{nope").await;
    assert_eq!(c.recv_close().await.0, close_code::INVALID_PAYLOAD);

    // An unmasked frame.
    let mut c = binary_client(&server, "h4").await;
    c.send_raw(&[0x82, 0x01, 0x00]).await;
    assert_eq!(c.recv_close().await.0, close_code::PROTOCOL_ERROR);

    // A frame announcing far more than the limit: refused from its header.
    let mut c = binary_client(&server, "h5").await;
    c.send_raw(&[0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4])
        .await;
    let (code, reason, _) = c.recv_close().await;
    assert_eq!(code, close_code::TOO_BIG);
    assert!(reason.contains("limit"), "{reason}");

    // A message of many small fragments adding up past the limit.
    let mut c = json_client(&server, "h6").await;
    c.send_raw(&encode_masked(
        opcode::TEXT,
        &[b' '; 16 * 1024],
        [1, 2, 3, 4],
    ))
    .await;
    for _ in 0..4 {
        c.send_raw(&encode_masked(
            opcode::CONTINUATION,
            &[b' '; 16 * 1024],
            [1, 2, 3, 4],
        ))
        .await;
    }
    assert_eq!(c.recv_close().await.0, close_code::TOO_BIG);

    // Garbage inside a binary message: the push protocol's ERROR, then close 4000 + code.
    let mut c = binary_client(&server, "h7").await;
    c.send(opcode::BINARY, b"GARBAGE-GARBAGE-GARBAGE").await;
    let (code, _, before) = c.recv_close().await;
    assert_eq!(code, 4100, "4000 + BAD_MAGIC");
    assert!(
        before.iter().any(|(op, _)| *op == opcode::BINARY),
        "ERROR frame first"
    );

    // A message that ends inside a protocol frame.
    let mut c = binary_client(&server, "h8").await;
    let wire =
        push_protocol::encode_to_bytes(&Packet::new(2, Frame::Pong), &Default::default()).unwrap();
    c.send(opcode::BINARY, &wire[..wire.len() - 2]).await;
    let (code, reason, _) = c.recv_close().await;
    assert_eq!(code, close_code::INVALID_PAYLOAD);
    assert!(reason.contains("whole frames"), "{reason}");

    // A continuation with nothing to continue, and a fragmented ping.
    let mut c = binary_client(&server, "h9").await;
    c.send_raw(&encode_masked(0x80, b"x", [9, 9, 9, 9])).await;
    assert_eq!(c.recv_close().await.0, close_code::PROTOCOL_ERROR);
    let mut c = binary_client(&server, "h10").await;
    c.send_raw(&encode_masked(opcode::PING, b"x", [9, 9, 9, 9]))
        .await;
    assert_eq!(c.recv_close().await.0, close_code::PROTOCOL_ERROR);

    // Garbage before the handshake is finished.
    let mut c = WsClient::connect(server.http_addr, "/ws", &["push.v1"], &[])
        .await
        .unwrap();
    c.send_raw(&[0x82, 0x01, 0x00]).await;
    assert_eq!(c.recv_close().await.0, close_code::PROTOCOL_ERROR);

    // The bystander still receives, and answers WebSocket pings are honoured.
    bystander.send(opcode::PING, b"are you there").await;
    let (op, payload) = bystander.recv().await.unwrap();
    assert_eq!(
        (op, payload.as_slice()),
        (opcode::PONG, &b"are you there"[..])
    );
    push_notice(&server, json!({"users": ["bystander"]}), "still here").await;
    assert_eq!(bystander.recv_json().await["data"]["title"], "still here");
    // Clean close from the client is echoed.
    bystander
        .send(opcode::CLOSE, &close_code::NORMAL.to_be_bytes())
        .await;
    assert_eq!(bystander.recv_close().await.0, close_code::NORMAL);
}

#[tokio::test]
async fn slow_websocket_consumer_is_dropped_with_its_code() {
    let server = start(Config {
        queue_max_frames: 8,
        // The client reads only after all 300 pushes; the server must still be waiting to
        // write its close frame by then (it gave up after 2 s on a slow run).
        shutdown_drain_ms: 60_000,
        ..config()
    })
    .await;
    let mut c = json_client(&server, "slow").await;
    c.send_json(json!({"op": "join", "room": "flood"})).await;
    assert_eq!(c.recv_json().await["op"], "ok");
    // Not reading while a burst arrives overflows the queue of 8 frames.
    let big = "x".repeat(60_000);
    // Loopback socket buffers absorb several MB first.
    for _ in 0..300 {
        let body = json!({"to": {"room": "flood"}, "kind": "k", "payload": big}).to_string();
        let (status, _) = push(&server, &body).await;
        assert_eq!(status, 200);
    }
    let (code, _, _) = c.recv_close().await;
    assert_eq!(code, 4304, "4000 + SLOW_CONSUMER");
}

#[tokio::test]
async fn a_client_close_frame_is_answered_with_websocket_close_1000() {
    let server = start(config()).await;
    // Binary mode: a protocol CLOSE frame.
    let mut c = binary_client(&server, "leaving-binary").await;
    let close = Frame::Close(push_protocol::Close {
        code: push_protocol::ErrorCode(0),
        reconnect_ms: None,
        reason: "bye".into(),
    });
    c.send_packet(&Packet::new(2, close)).await;
    assert_eq!(c.recv_close().await.0, close_code::NORMAL);
    // JSON mode: {"op":"close"}.
    let mut c = json_client(&server, "leaving-json").await;
    c.send_json(json!({"op": "close", "code": 0, "reason": "bye"}))
        .await;
    assert_eq!(c.recv_close().await.0, close_code::NORMAL);
}
