//! The server core against real sockets: auth, user/room/broadcast push, heartbeats, slow
//! consumers, limits, shutdown, and empty registries afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use push_client::protocol::{
    ErrorCode, Frame, Join, Notice, Packet, PayloadFormat, Publish, Stream,
};
use push_client::token::{mint, Claims};
use push_client::ClientError;
use push_server::delivery::{Message, Target};

fn opaque(kind: &str, payload: &[u8]) -> Message {
    Message {
        key: None,
        kind: kind.into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::copy_from_slice(payload),
        ttl_ms: None,
        high_priority: false,
        transient: false,
        trace: None,
    }
}

#[tokio::test]
async fn auth_succeeds_with_a_valid_token_and_fails_with_reasons() {
    let server = start(config()).await;
    let c = connect(server.tcp_addr, "alice").await;
    assert_eq!(c.auth.user, "alice");
    assert_eq!(c.auth.version, 2);
    assert!(c.auth.heartbeat_ms > 0);

    let wrong_key = mint(
        b"some-other-secret-0123456789",
        &Claims {
            sub: "alice".into(),
            exp: now_secs() + 60,
            device: None,
            rooms: Vec::new(),
        },
    );
    let expired = mint(
        SECRET.as_bytes(),
        &Claims {
            sub: "alice".into(),
            exp: now_secs() - 3600, // beyond the 30 s leeway for clock skew
            device: None,
            rooms: Vec::new(),
        },
    );
    for (token, code) in [
        (wrong_key.as_str(), ErrorCode::TOKEN_INVALID),
        (expired.as_str(), ErrorCode::TOKEN_EXPIRED),
        ("not-a-jwt", ErrorCode::TOKEN_INVALID),
        ("", ErrorCode::TOKEN_INVALID),
    ] {
        match try_connect(server.tcp_addr, token).await {
            Err(e @ ClientError::Rejected { .. }) => {
                assert!(e.is_auth_failure());
                let ClientError::Rejected { code: got, reason } = e else {
                    unreachable!()
                };
                assert_eq!(got, code, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("token {token:?}: expected rejection, got {:?}", other.err()),
        }
    }
    assert_eq!(server.ctx.hub.connection_count(), 1);
}

#[tokio::test]
async fn first_frame_must_be_hello_and_arrive_in_time() {
    let server = start(push_server::Config {
        handshake_timeout_ms: 300,
        ..config()
    })
    .await;
    // A PING instead of HELLO.
    let s = tokio::net::TcpStream::connect(server.tcp_addr)
        .await
        .unwrap();
    let mut c = push_client::Connection::from_stream(s);
    c.send(Frame::Pong).await.unwrap();
    match c.recv().await.unwrap().frame {
        Frame::AuthError(e) => assert_eq!(e.code, ErrorCode::AUTH_REQUIRED),
        other => panic!("{other:?}"),
    }
    // Nothing at all.
    let s = tokio::net::TcpStream::connect(server.tcp_addr)
        .await
        .unwrap();
    let mut c = push_client::Connection::from_stream(s);
    match c.recv().await.unwrap().frame {
        Frame::AuthError(e) => assert_eq!(e.code, ErrorCode::AUTH_TIMEOUT),
        other => panic!("{other:?}"),
    }
    // Garbage.
    let s = tokio::net::TcpStream::connect(server.tcp_addr)
        .await
        .unwrap();
    let mut c = push_client::Connection::from_stream(s);
    c.send_raw(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    match c.recv().await.unwrap().frame {
        Frame::AuthError(e) => assert_eq!(e.code, ErrorCode::BAD_MAGIC),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.recv().await, Err(ClientError::ConnectionLost)));
}

#[tokio::test]
async fn push_to_a_user_reaches_every_device_and_nobody_else() {
    let server = start(config()).await;
    let mut phone = connect(server.tcp_addr, "alice").await;
    let mut laptop = connect(server.tcp_addr, "alice").await;
    let mut bob = connect(server.tcp_addr, "bob").await;
    let (status, body) = push(
        &server,
        r#"{"to":{"users":["alice"]},"kind":"password_changed","title":"Password changed","content":"Log in again","level":"warning","id":"pw-1"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"][0]["online"], 2);
    assert_eq!(body["accepted"][0]["stream"], "user:alice");
    let a = expect_push(phone.next_timeout(WAIT).await.unwrap());
    let b = expect_push(laptop.next_timeout(WAIT).await.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(a.stream, Stream::User);
    assert_eq!(a.kind, "password_changed");
    assert_eq!(a.position, 1);
    let n = Notice::decode(a.payload).unwrap();
    assert_eq!(n.title, "Password changed");
    // Idempotent retry: acknowledged again, delivered once.
    let (status, body) = push(
        &server,
        r#"{"to":{"users":["alice"]},"kind":"password_changed","title":"Password changed","content":"Log in again","level":"warning","id":"pw-1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"][0]["duplicate"], true);
    // Bob's first message is his own: he never saw alice's.
    push(
        &server,
        r#"{"to":{"users":["bob"]},"kind":"k","payload":"for bob"}"#,
    )
    .await;
    let p = expect_push(bob.next_timeout(WAIT).await.unwrap());
    assert_eq!(&p.payload[..], b"for bob");
    // And alice's next message is position 2, not a duplicate of pw-1.
    push(
        &server,
        r#"{"to":{"users":["alice"]},"kind":"k","payload":"second"}"#,
    )
    .await;
    let p = expect_push(phone.next_timeout(WAIT).await.unwrap());
    assert_eq!((p.position, &p.payload[..]), (2, &b"second"[..]));
}

#[tokio::test]
async fn rooms_join_push_leave() {
    let server = start(config()).await;
    let mut a = connect(server.tcp_addr, "a").await;
    let mut b = connect(server.tcp_addr, "b").await;
    for c in [&mut a, &mut b] {
        let (reply, _) = c
            .request(Frame::Join(Join {
                room: "lobby".into(),
                resume_after: None,
            }))
            .await
            .unwrap();
        assert_eq!(reply.frame, Frame::Ok(Some(0)));
    }
    assert_eq!(server.ctx.hub.room_size("lobby"), 2);
    let (status, body) = push(
        &server,
        r#"{"to":{"room":"lobby"},"kind":"chat","payload":"hi"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"][0]["online"], 2);
    for c in [&mut a, &mut b] {
        let p = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!(p.stream, Stream::Room("lobby".into()));
        assert_eq!(&p.payload[..], b"hi");
    }
    b.request(Frame::Leave("lobby".into())).await.unwrap();
    assert_eq!(server.ctx.hub.room_size("lobby"), 1);
    push(
        &server,
        r#"{"to":{"room":"lobby"},"kind":"chat","payload":"only a"}"#,
    )
    .await;
    push(
        &server,
        r#"{"to":{"broadcast":true},"kind":"news","payload":"all"}"#,
    )
    .await;
    assert_eq!(
        &expect_push(a.next_timeout(WAIT).await.unwrap()).payload[..],
        b"only a"
    );
    // b's next frame is the broadcast: the room message never reached it.
    let p = expect_push(b.next_timeout(WAIT).await.unwrap());
    assert_eq!((p.stream, &p.payload[..]), (Stream::Broadcast, &b"all"[..]));
    // Bad names and the room limit are refused with their codes.
    match a
        .request(Frame::Join(Join {
            room: "bad name".into(),
            resume_after: None,
        }))
        .await
    {
        Err(ClientError::Request { code, .. }) => assert_eq!(code, ErrorCode::BAD_REQUEST),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn room_limit_per_connection() {
    let server = start(push_server::Config {
        max_rooms_per_connection: 2,
        ..config()
    })
    .await;
    let mut a = connect(server.tcp_addr, "a").await;
    for room in ["r1", "r2"] {
        a.request(Frame::Join(Join {
            room: room.into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    }
    match a
        .request(Frame::Join(Join {
            room: "r3".into(),
            resume_after: None,
        }))
        .await
    {
        Err(ClientError::Request { code, .. }) => assert_eq!(code, ErrorCode::TOO_MANY_ROOMS),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn broadcast_reaches_every_client_with_one_shared_frame() {
    let server = start(config()).await;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(connect(server.tcp_addr, &format!("user{i}")).await);
    }
    let accepted = server
        .ctx
        .delivery
        .publish(&Target::Broadcast, opaque("news", b"hello everyone"))
        .await
        .unwrap();
    assert_eq!(accepted[0].queued, 100);
    for c in &mut clients {
        let p = expect_push(c.next_timeout(WAIT).await.unwrap());
        assert_eq!(p.id, accepted[0].id);
        assert_eq!(&p.payload[..], b"hello everyone");
    }
}

#[tokio::test]
async fn silent_clients_are_closed_by_the_heartbeat_and_live_ones_stay() {
    let server = start(push_server::Config {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 400,
        ..config()
    })
    .await;
    let mut silent = connect(server.tcp_addr, "silent").await;
    let mut lively = connect(server.tcp_addr, "lively").await;
    // The silent client reads but never answers; it must get CLOSE HEARTBEAT_TIMEOUT.
    let silent_task = tokio::spawn(async move {
        loop {
            match silent.recv().await {
                Ok(Packet {
                    frame: Frame::Close(c),
                    ..
                }) => return c.code,
                Ok(_) => continue,
                Err(e) => panic!("connection ended without CLOSE: {e}"),
            }
        }
    });
    // The lively client answers PINGs (next() does) until the silent one is gone.
    let hub = server.ctx.hub.clone();
    let lively_task = tokio::spawn(async move {
        while hub.user_connections("silent").len() == 1 {
            let _ = lively.next_timeout(Duration::from_millis(50)).await;
        }
        lively
    });
    let code = tokio::time::timeout(WAIT, silent_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, ErrorCode::HEARTBEAT_TIMEOUT);
    let _lively = tokio::time::timeout(WAIT, lively_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.ctx.hub.user_connections("lively").len(), 1);
    eventually("silent client unregistered", || {
        server.ctx.hub.user_connections("silent").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_while_others_keep_receiving() {
    let server = start(push_server::Config {
        queue_max_frames: 64,
        queue_max_bytes: 256 * 1024,
        ..config()
    })
    .await;
    // A tiny receive buffer (which also disables autotuning) so the kernel cannot absorb the
    // backlog on the reader's side; this client never reads again.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(server.tcp_addr).await.unwrap();
    let opts = push_client::ConnectOptions {
        token: token("slow"),
        ..Default::default()
    };
    let slow = push_client::Connection::handshake(stream, &opts)
        .await
        .unwrap();
    let mut fast = connect(server.tcp_addr, "fast").await;
    // Incompressible, so zstd cannot shrink the backlog away.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let payload: Vec<u8> = (0..32 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let total = 400; // 12.8 MiB: more than the socket buffers and the queue can absorb
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            let p = expect_push(fast.next_timeout(WAIT).await.unwrap());
            assert_eq!(p.position, got as u64 + 1, "in order, nothing skipped");
            got += 1;
        }
        got
    });
    for _ in 0..total {
        server
            .ctx
            .delivery
            .publish(
                &Target::Users(vec!["slow".into(), "fast".into()]),
                opaque("bulk", &payload),
            )
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokio::time::timeout(WAIT, reader).await.unwrap().unwrap(),
        total
    );
    eventually("slow consumer dropped", || {
        server.ctx.hub.user_connections("slow").is_empty()
    })
    .await;
    assert!(push_server::stats::Stats::get(&server.ctx.stats.slow_consumers) >= 1);
    drop(slow);
}

#[tokio::test]
async fn graceful_shutdown_sends_close_with_a_reconnect_hint_spread_over_the_clients() {
    let server = start(push_server::Config {
        reconnect_hint_ms: 2000,
        ..config()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(connect(server.tcp_addr, &format!("u{i}")).await);
    }
    server.shutdown();
    let mut hints = std::collections::BTreeSet::new();
    for c in &mut clients {
        match c.next_timeout(WAIT).await {
            Err(ClientError::Closed {
                code, reconnect_ms, ..
            }) => {
                assert_eq!(code, ErrorCode::SHUTTING_DOWN);
                let hint = reconnect_ms.expect("a reconnect hint");
                assert!((1000..3000).contains(&hint), "{hint} ms");
                hints.insert(hint);
            }
            other => panic!("expected CLOSE, got {other:?}"),
        }
    }
    // 20 draws from 2,000 values: all alike only if the jitter is missing.
    assert!(hints.len() > 1, "every client got the same hint: {hints:?}");
    tokio::time::timeout(WAIT, server.wait()).await.unwrap();
}

#[tokio::test]
async fn registries_are_empty_after_clients_leave_cleanly_or_vanish() {
    let server = start(config()).await;
    let mut weak = Vec::new();
    let mut clients = Vec::new();
    for i in 0..40 {
        let mut c = connect(server.tcp_addr, &format!("u{}", i % 10)).await;
        c.request(Frame::Join(Join {
            room: format!("room{}", i % 3),
            resume_after: None,
        }))
        .await
        .unwrap();
        clients.push(c);
    }
    for u in 0..10 {
        for c in server.ctx.hub.user_connections(&format!("u{u}")) {
            weak.push(Arc::downgrade(&c));
        }
    }
    assert_eq!(weak.len(), 40);
    assert_eq!(server.ctx.hub.room_count(), 3);
    for (i, c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.close().await.unwrap();
        } else {
            drop(c); // vanish without CLOSE
        }
    }
    let ctx = server.ctx.clone();
    eventually("registries empty", || {
        ctx.hub.connection_count() == 0
            && ctx.hub.user_count() == 0
            && ctx.hub.room_count() == 0
            && ctx.open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    eventually("connection state freed", || {
        weak.iter().all(|w| w.upgrade().is_none())
    })
    .await;
}

#[tokio::test]
async fn connection_limits_global_and_per_user() {
    let server = start(push_server::Config {
        max_connections: 3,
        max_connections_per_user: 2,
        ..config()
    })
    .await;
    let _a1 = connect(server.tcp_addr, "a").await;
    let _a2 = connect(server.tcp_addr, "a").await;
    match try_connect(server.tcp_addr, &token("a")).await {
        Err(ClientError::Rejected { code, .. }) => {
            assert_eq!(code, ErrorCode::TOO_MANY_USER_CONNECTIONS)
        }
        other => panic!("{:?}", other.err()),
    }
    let _b = connect(server.tcp_addr, "b").await;
    match try_connect(server.tcp_addr, &token("c")).await {
        Err(ClientError::Rejected { code, .. }) => {
            assert_eq!(code, ErrorCode::TOO_MANY_CONNECTIONS)
        }
        other => panic!("{:?}", other.err()),
    }
}

#[tokio::test]
async fn upstream_publish_respects_config_and_membership() {
    let server = start(push_server::Config {
        allow_client_publish: true,
        ..config()
    })
    .await;
    let mut a = connect(server.tcp_addr, "a").await;
    let mut b = connect(server.tcp_addr, "b").await;
    let publish = |key: &str| {
        Frame::Publish(Publish {
            room: "chat".into(),
            key: key.into(),
            kind: "msg".into(),
            format: PayloadFormat::OPAQUE,
            payload: Bytes::from_static(b"hello room"),
            transient: false,
        })
    };
    match a.request(publish("")).await {
        Err(ClientError::Request { code, .. }) => assert_eq!(code, ErrorCode::FORBIDDEN),
        other => panic!("{:?}", other.map(|_| ())),
    }
    for c in [&mut a, &mut b] {
        c.request(Frame::Join(Join {
            room: "chat".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    }
    let (ack, _) = a.request(publish("k1")).await.unwrap();
    let Frame::PublishAck(ack) = ack.frame else {
        panic!()
    };
    assert!(!ack.duplicate);
    let p = expect_push(b.next_timeout(WAIT).await.unwrap());
    assert_eq!(p.id, ack.id);
    // Same key again: acknowledged as a duplicate, not delivered again.
    let (again, others) = a.request(publish("k1")).await.unwrap();
    let Frame::PublishAck(again) = again.frame else {
        panic!()
    };
    assert!(again.duplicate);
    assert_eq!(again.id, ack.id);
    assert!(others
        .iter()
        .all(|p| matches!(&p.frame, Frame::Push(x) if x.id == ack.id)));

    let closed = start(config()).await;
    let mut c = connect(closed.tcp_addr, "c").await;
    c.request(Frame::Join(Join {
        room: "chat".into(),
        resume_after: None,
    }))
    .await
    .unwrap();
    match c.request(publish("")).await {
        Err(ClientError::Request { code, reason }) => {
            assert_eq!(code, ErrorCode::FORBIDDEN);
            assert!(reason.contains("allow_client_publish"), "{reason}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn unknown_frames_are_answered_and_garbage_closes() {
    let server = start(config()).await;
    let mut c = connect(server.tcp_addr, "a").await;
    let seq = c
        .send(Frame::Unknown {
            ty: 0x7f,
            body: Bytes::from_static(b"future"),
        })
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!(p.seq, seq);
    match p.frame {
        Frame::Error(e) => assert_eq!(e.code, ErrorCode::UNKNOWN_FRAME_TYPE),
        other => panic!("{other:?}"),
    }
    // Still usable.
    c.request(Frame::Join(Join {
        room: "r".into(),
        resume_after: None,
    }))
    .await
    .unwrap();
    c.send_raw(&[0u8; 32]).await.unwrap();
    match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Error(e) => assert_eq!(e.code, ErrorCode::BAD_MAGIC),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.next_timeout(WAIT).await,
        Err(ClientError::ConnectionLost)
    ));
    eventually("unregistered", || server.ctx.hub.connection_count() == 0).await;
}

#[tokio::test]
async fn http_api_success_and_errors() {
    let server = start(config()).await;
    let (status, body) = http(server.http_addr, "GET", "/healthz", None, "").await;
    assert_eq!(status, 200, "{body}");
    let body_ok = r#"{"to":{"users":["nobody"]},"kind":"k","payload":"p"}"#;
    let (status, _) = http(server.http_addr, "POST", "/api/v1/push", None, body_ok).await;
    assert_eq!(status, 401);
    let (status, _) = http(
        server.http_addr,
        "POST",
        "/api/v1/push",
        Some("wrong-token"),
        body_ok,
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = push(&server, "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let (status, body) = push(&server, r#"{"to":{"users":["a"]},"payload":"p"}"#).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("kind"), "{body}");
    let (status, body) = push(
        &server,
        r#"{"to":{"room":"no spaces"},"kind":"k","payload":"p"}"#,
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("to.room")),
        "{body}"
    );
    let (status, body) = push(&server, body_ok).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"][0]["online"], 0);
    assert_eq!(body["accepted"][0]["id"].as_str().unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_never_reorder_a_stream() {
    let server = start(config()).await;
    let mut receivers = Vec::new();
    for i in 0..3 {
        let mut c = connect(server.tcp_addr, &format!("r{i}")).await;
        c.request(Frame::Join(Join {
            room: "busy".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
        receivers.push(c);
    }
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let delivery = server.ctx.delivery.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    delivery
                        .publish(
                            &Target::Room("busy".into()),
                            opaque("seq", format!("{p}-{i}").as_bytes()),
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for c in &mut receivers {
        for expected in 1..=800u64 {
            let p = expect_push(c.next_timeout(WAIT).await.unwrap());
            assert_eq!(
                p.position, expected,
                "positions arrive in order without gaps"
            );
        }
    }
}
