//! Hostile clients (issue 8): every case gets its documented error code or close, and a
//! bystander connection keeps receiving throughout. Scale versions of the resource cases are in
//! `push-bench hostile` (BENCHMARKS.md).

mod common;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use push_client::protocol::{
    encode_to_bytes, EncodeOptions, ErrorCode, Frame, Packet, PayloadFormat, Publish, Stream,
    StreamPos,
};
use push_client::{ClientError, Connection};
use push_server::{Config, ServerHandle};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn hostile_config() -> Config {
    Config {
        handshake_timeout_ms: 500,
        heartbeat_interval_ms: 200,
        heartbeat_timeout_ms: 1_000,
        reassembly_timeout_ms: 300,
        allow_client_publish: true,
        ..config()
    }
}

/// Reads until an ERROR (or AUTH_ERROR) arrives; returns its code; then expects the close.
async fn fatal_error(c: &mut Connection) -> ErrorCode {
    fatal_error_seq(c).await.0
}

/// The fatal error's code and the Sequence it echoes.
async fn fatal_error_seq(c: &mut Connection) -> (ErrorCode, u32) {
    loop {
        match c.next_timeout(WAIT).await {
            Ok(Packet {
                frame: Frame::Error(e) | Frame::AuthError(e),
                seq,
            }) => {
                assert!(!e.reason.is_empty());
                let closed = c.next_timeout(WAIT).await;
                assert!(
                    matches!(closed, Err(ClientError::ConnectionLost)),
                    "{closed:?}"
                );
                return (e.code, seq);
            }
            Ok(_) => continue,
            Err(e) => panic!("connection ended without an error frame: {e}"),
        }
    }
}

/// Raw bytes on a fresh authenticated connection; returns the fatal error code and the
/// Sequence it echoes.
async fn after_auth(server: &ServerHandle, user: &str, bytes: &[u8]) -> (ErrorCode, u32) {
    let mut c = connect(server.tcp_addr, user).await;
    c.send_raw(bytes).await.unwrap();
    fatal_error_seq(&mut c).await
}

fn header(version: u16, flags: u8, ty: u8, length: u32, seq: u32) -> Vec<u8> {
    let mut h = b"PUSH".to_vec();
    h.extend_from_slice(&version.to_be_bytes());
    h.push(flags);
    h.push(ty);
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h
}

/// Splits encoded wire bytes into their frames.
fn wire_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(bytes[at..at + 16 + len].to_vec());
        at += 16 + len;
    }
    out
}

fn publish(room: &str, payload: Vec<u8>) -> Frame {
    Frame::Publish(Publish {
        room: room.into(),
        key: String::new(),
        kind: "k".into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::from(payload),
        transient: false,
    })
}

#[tokio::test]
async fn bad_bytes_get_their_codes() {
    let server = start(hostile_config()).await;
    let mut b = bystander(&server).await;
    let mut bad_crc = encode_to_bytes(
        &Packet::new(3, Frame::Pong),
        &EncodeOptions {
            checksum: true,
            ..EncodeOptions::default()
        },
    )
    .unwrap()
    .to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    // Every error echoes the Sequence of the frame it is about, read from the header even
    // when the version or flags are not understood; 0 only when the magic is wrong.
    let cases: Vec<(&str, Vec<u8>, ErrorCode, u32)> = vec![
        (
            "garbage",
            b"\x00\x01garbage bytes!!".to_vec(),
            ErrorCode::BAD_MAGIC,
            0,
        ),
        (
            "wrong magic",
            b"POSH\x00\x01\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01".to_vec(),
            ErrorCode::BAD_MAGIC,
            0,
        ),
        (
            "unknown version",
            header(9, 0, 5, 0, 11),
            ErrorCode::UNSUPPORTED_VERSION,
            11,
        ),
        (
            "reserved flag",
            header(1, 0x80, 5, 0, 12),
            ErrorCode::UNSUPPORTED_FLAGS,
            12,
        ),
        (
            "huge length, then nothing",
            header(1, 0, 6, u32::MAX, 13),
            ErrorCode::FRAME_TOO_LARGE,
            13,
        ),
        ("bad checksum", bad_crc, ErrorCode::BAD_CHECKSUM, 3),
        (
            "malformed body",
            [header(1, 0, 7, 1, 14), vec![0x05]].concat(),
            ErrorCode::MALFORMED_BODY,
            14,
        ),
    ];
    for (i, (what, bytes, code, seq)) in cases.into_iter().enumerate() {
        let got = after_auth(&server, &format!("bad{i}"), &bytes).await;
        assert_eq!(got, (code, seq), "{what}");
        still_served(&server, &mut b, i as u64 + 1).await;
    }
    // Before authentication too: a HELLO (Sequence 5) whose token is over 4,096 bytes.
    let mut body = vec![0, 1, 0, 1, 0x88, 0x27];
    body.extend(std::iter::repeat_n(b'x', 5000));
    body.extend([0, 0]);
    let mut c = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    c.send_raw(&[header(1, 0, 1, body.len() as u32, 5), body].concat())
        .await
        .unwrap();
    assert_eq!(
        fatal_error_seq(&mut c).await,
        (ErrorCode::MALFORMED_BODY, 5)
    );
    // Before authentication the same input gets AUTH_ERROR with the same code.
    let mut c = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    c.send_raw(&header(9, 0, 1, 0, 1)).await.unwrap();
    assert_eq!(fatal_error(&mut c).await, ErrorCode::UNSUPPORTED_VERSION);
    // An unknown frame type is answered, not fatal.
    let mut c = connect(server.tcp_addr, "future").await;
    c.send_raw(&header(1, 0, 0x33, 0, 44)).await.unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!(p.seq, 44);
    assert!(matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::UNKNOWN_FRAME_TYPE));
    still_served(&server, &mut b, 8).await;
    eventually("hostile connections gone", || {
        server.ctx.hub.connection_count() == 2
    })
    .await;
}

#[tokio::test]
async fn slowloris_connections_are_timed_out_and_cost_no_frame_buffers() {
    let server = start(hostile_config()).await;
    let mut b = bystander(&server).await;
    let mut idle = Vec::new();
    // Before HELLO: a header announcing 60 KB, then one byte at a time.
    for _ in 0..50 {
        let mut s = TcpStream::connect(server.tcp_addr).await.unwrap();
        s.write_all(&header(1, 0, 1, 60_000, 1)).await.unwrap();
        idle.push(s);
    }
    // After HELLO: the same, so no whole frame ever arrives again.
    let mut authed = Vec::new();
    for i in 0..50 {
        let mut c = connect(server.tcp_addr, &format!("loris{i}")).await;
        c.send_raw(&header(1, 0, 10, 60_000, 1)).await.unwrap();
        authed.push(c);
    }
    for round in 0..3u8 {
        for s in &mut idle {
            let _ = s.write_all(&[round]).await;
        }
        for c in &mut authed {
            let _ = c.send_raw(&[round]).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    still_served(&server, &mut b, 1).await;
    // Unauthenticated ones hit the handshake deadline, authenticated ones the heartbeat.
    for s in idle {
        let mut c = Connection::from_stream(s);
        assert_eq!(fatal_error(&mut c).await, ErrorCode::AUTH_TIMEOUT);
    }
    for mut c in authed {
        // recv, not next: answering the server's PINGs would feed the pending frame.
        loop {
            match tokio::time::timeout(WAIT, c.recv())
                .await
                .expect("a CLOSE in time")
            {
                Ok(Packet {
                    frame: Frame::Close(close),
                    ..
                }) => {
                    assert_eq!(close.code, ErrorCode::HEARTBEAT_TIMEOUT);
                    break;
                }
                Ok(_) => continue,
                Err(e) => panic!("expected CLOSE HEARTBEAT_TIMEOUT, got {e}"),
            }
        }
    }
    still_served(&server, &mut b, 2).await;
    eventually("only the bystander left", || {
        server.ctx.hub.connection_count() == 1
    })
    .await;
}

#[tokio::test]
async fn fragment_and_compression_bombs() {
    let server = start(Config {
        max_message_len: 64 * 1024,
        ..hostile_config()
    })
    .await;
    let mut b = bystander(&server).await;
    let small_frames = EncodeOptions {
        max_frame_len: 1024,
        compress_min: usize::MAX,
        ..EncodeOptions::default()
    };
    // Endless fragments: a message of many fragments, sent until the limit stops it.
    let long = encode_to_bytes(
        &Packet::new(5, publish("r", vec![7; 200 * 1024])),
        &small_frames,
    )
    .unwrap();
    let mut c = connect(server.tcp_addr, "endless").await;
    for f in wire_frames(&long).iter().take(100) {
        if c.send_raw(f).await.is_err() {
            break;
        }
    }
    assert_eq!(fatal_error(&mut c).await, ErrorCode::MESSAGE_TOO_LARGE);
    still_served(&server, &mut b, 1).await;

    // Too many messages in reassembly at once.
    let mut c = connect(server.tcp_addr, "partials").await;
    for seq in 10..15 {
        let m = encode_to_bytes(
            &Packet::new(seq, publish("r", vec![1; 3000])),
            &small_frames,
        )
        .unwrap();
        let _ = c.send_raw(&wire_frames(&m)[0]).await;
    }
    assert_eq!(fatal_error(&mut c).await, ErrorCode::TOO_MANY_PARTIAL);

    // Several half-sent messages share one byte budget.
    let mut c = connect(server.tcp_addr, "budget").await;
    for seq in 20..24 {
        let m = encode_to_bytes(
            &Packet::new(seq, publish("r", vec![1; 60 * 1024])),
            &small_frames,
        )
        .unwrap();
        for f in wire_frames(&m).iter().take(20) {
            let _ = c.send_raw(f).await;
        }
    }
    assert_eq!(fatal_error(&mut c).await, ErrorCode::MESSAGE_TOO_LARGE);

    // A message that is never finished, on a connection that stays otherwise alive.
    let mut c = connect(server.tcp_addr, "unfinished").await;
    let m = encode_to_bytes(&Packet::new(30, publish("r", vec![1; 3000])), &small_frames).unwrap();
    c.send_raw(&wire_frames(&m)[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(Frame::Pong).await.unwrap();
    assert_eq!(fatal_error(&mut c).await, ErrorCode::REASSEMBLY_TIMEOUT);

    // Compression bomb: a few hundred bytes that inflate to 8 MB.
    let bomb = encode_to_bytes(
        &Packet::new(40, publish("r", vec![0; 8 * 1024 * 1024])),
        &EncodeOptions {
            compress_min: 0,
            max_frame_len: 1 << 20,
            ..EncodeOptions::default()
        },
    )
    .unwrap();
    assert!(bomb.len() < 2048, "{} bytes", bomb.len());
    assert_eq!(
        after_auth(&server, "bomber", &bomb).await,
        (ErrorCode::DECOMPRESSED_TOO_LARGE, 40)
    );
    still_served(&server, &mut b, 2).await;
}

fn jwt(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let signing = format!("{}.{}", b64(&header), b64(&claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(signing.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing}.{sig}")
}

#[tokio::test]
async fn authentication_abuse() {
    let server = start(Config {
        failed_handshake_rate_per_ip: 1.0,
        failed_handshake_burst_per_ip: 40.0,
        ..hostile_config()
    })
    .await;
    let mut b = bystander(&server).await;
    let exp = now_secs() + 600;
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let key = SECRET.as_bytes();
    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"sub": "mallory", "exp": exp}).to_string())
    );
    let cases = [
        ("alg none", unsigned, ErrorCode::TOKEN_INVALID),
        (
            "algorithm confusion (RS256 header, HMAC signature)",
            jwt(
                json!({"alg": "RS256"}),
                json!({"sub": "m", "exp": exp}),
                key,
            ),
            ErrorCode::TOKEN_INVALID,
        ),
        (
            "wrong key",
            jwt(
                hs.clone(),
                json!({"sub": "m", "exp": exp}),
                b"not-the-server-key-0123456789",
            ),
            ErrorCode::TOKEN_INVALID,
        ),
        (
            "expired",
            jwt(
                hs.clone(),
                json!({"sub": "m", "exp": now_secs() - 3600}),
                key,
            ),
            ErrorCode::TOKEN_EXPIRED,
        ),
        (
            "exp of the wrong JSON type",
            jwt(hs.clone(), json!({"sub": "m", "exp": exp.to_string()}), key),
            ErrorCode::TOKEN_INVALID,
        ),
        (
            "no sub",
            jwt(hs.clone(), json!({"exp": exp}), key),
            ErrorCode::TOKEN_INVALID,
        ),
    ];
    for (what, token, code) in cases {
        match try_connect(server.tcp_addr, &token).await {
            Err(ClientError::Rejected { code: got, reason }) => {
                assert_eq!(got, code, "{what}: {reason}")
            }
            other => panic!("{what}: expected a rejection, got {:?}", other.map(|_| ())),
        }
    }
    // No HELLO at all, and a first frame that is not HELLO.
    let mut c = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    assert_eq!(fatal_error(&mut c).await, ErrorCode::AUTH_TIMEOUT);
    let mut c = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    c.send(Frame::Ack(vec![])).await.unwrap();
    assert_eq!(fatal_error(&mut c).await, ErrorCode::AUTH_REQUIRED);
    still_served(&server, &mut b, 1).await;
    // A flood of failed handshakes from one address is cut off with RATE_LIMITED.
    let mut limited = 0;
    for _ in 0..200 {
        if let Err(ClientError::Rejected { code, .. }) = try_connect(server.tcp_addr, "x").await {
            if code == ErrorCode::RATE_LIMITED {
                limited += 1;
            }
        }
    }
    assert!(
        limited >= 100,
        "only {limited} of 200 refused as RATE_LIMITED"
    );
    // The bystander, already connected, is unaffected.
    still_served(&server, &mut b, 2).await;
}

#[tokio::test]
async fn requests_beyond_permission_are_refused_and_not_fatal() {
    let server = start(Config {
        allow_client_publish: false,
        restricted_room_prefixes: vec!["private:".into()],
        ..hostile_config()
    })
    .await;
    // Restricted rooms need a grant in the token; open rooms do not.
    let granted = push_client::token::mint(
        SECRET.as_bytes(),
        &push_client::token::Claims {
            sub: "grace".into(),
            exp: now_secs() + 600,
            device: None,
            rooms: vec!["private:team-7:*".into(), "private:ops".into()],
        },
    );
    let mut g = try_connect(server.tcp_addr, &granted).await.unwrap();
    for (room, allowed) in [
        ("lobby", true),
        ("private:ops", true),
        ("private:team-7:alerts", true),
        ("private:team-8:alerts", false),
        ("private:opsx", false),
    ] {
        let r = g
            .request(Frame::Join(push_client::protocol::Join {
                room: room.into(),
                resume_after: None,
            }))
            .await;
        match r {
            Ok(_) => assert!(allowed, "{room} should be refused"),
            Err(ClientError::Request { code, reason }) => {
                assert!(!allowed, "{room}: {reason}");
                assert_eq!(code, ErrorCode::FORBIDDEN);
                assert!(reason.contains("restricted"), "{reason}");
            }
            Err(e) => panic!("{room}: {e}"),
        }
    }
    // Long-poll applies the same rule.
    let path = format!(
        "/api/v1/poll?rooms=private:vault:0&wait_ms=0&token={}",
        token("eve")
    );
    let (status, body) = http(server.http_addr, "GET", &path, None, "").await;
    assert_eq!(status, 403, "{body}");
    let mut c = connect(server.tcp_addr, "eve").await;
    // An ack for a position never sent.
    let seq = c
        .send(Frame::Ack(vec![StreamPos {
            stream: Stream::User,
            position: 99,
        }]))
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!(p.seq, seq);
    assert!(matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::INVALID_ACK));
    // An ack on a room stream, never joined, beyond its tail: room ACKs only count as life
    // (SPEC.md §5.5), so the next answer is the PUBLISH's.
    c.send(Frame::Ack(vec![StreamPos {
        stream: Stream::Room("vault".into()),
        position: 5,
    }]))
    .await
    .unwrap();
    // Publishing with client publishing off.
    c.send(publish("vault", b"x".to_vec())).await.unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::FORBIDDEN));
    // Bad room names.
    c.send(Frame::Join(push_client::protocol::Join {
        room: "../etc".into(),
        resume_after: None,
    }))
    .await
    .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::BAD_REQUEST));
    // A server-only frame from the client (PING is a client's too from version 2).
    c.send(Frame::Ok(None)).await.unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::UNEXPECTED_FRAME));
    // The user's own acked position is untouched by the invalid ack.
    let h = user_history(server.http_addr, "eve", "").await;
    assert_eq!(h["acked"], 0, "{h}");
    // Frames after CLOSE are ignored: the server closes.
    let mut raw = encode_to_bytes(
        &Packet::new(
            9,
            Frame::Close(push_client::protocol::Close {
                code: ErrorCode(0),
                reconnect_ms: None,
                reason: "bye".into(),
            }),
        ),
        &EncodeOptions::default(),
    )
    .unwrap()
    .to_vec();
    raw.extend_from_slice(b"trailing garbage after close");
    c.send_raw(&raw).await.unwrap();
    assert!(matches!(
        c.next_timeout(WAIT).await,
        Err(ClientError::ConnectionLost)
    ));
    eventually("closed", || server.ctx.hub.connection_count() == 0).await;
}

#[tokio::test]
async fn connections_that_never_read_during_a_broadcast_are_dropped_alone() {
    let server = start(Config {
        queue_max_frames: 32,
        queue_max_bytes: 128 * 1024,
        ..hostile_config()
    })
    .await;
    let mut b = bystander(&server).await;
    let mut sleepers = Vec::new();
    for i in 0..300 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(server.tcp_addr).await.unwrap();
        let opts = push_client::ConnectOptions {
            token: token(&format!("sleeper{i}")),
            ..Default::default()
        };
        sleepers.push(Connection::handshake(stream, &opts).await.unwrap());
    }
    // Incompressible payloads so the backlog cannot shrink.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let payload: String = (0..8 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let total = 200u64;
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < total {
            let p = b
                .next_timeout(WAIT)
                .await
                .expect("bystander keeps receiving");
            if let Frame::Push(push) = p.frame {
                assert_eq!(push.stream, Stream::Broadcast);
                assert_eq!(push.position, last + 1, "in order, nothing skipped");
                last = push.position;
            }
        }
        last
    });
    for _ in 0..total {
        let body = json!({"to": {"broadcast": true}, "kind": "k", "payload": payload});
        let (status, _) = push(&server, &body.to_string()).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        tokio::time::timeout(WAIT, reader).await.unwrap().unwrap(),
        total
    );
    // Each sleeper goes, as a slow consumer once its queue overflows or by the heartbeat
    // (it answers no PING either), whichever comes first.
    eventually("sleepers dropped", || {
        let s = &server.ctx.stats;
        push_server::stats::Stats::get(&s.slow_consumers)
            + push_server::stats::Stats::get(&s.heartbeat_timeouts)
            >= 300
    })
    .await;
    eventually("only the bystander left", || {
        server.ctx.hub.connection_count() == 1
    })
    .await;
    drop(sleepers);
}

/// A client that pipelines its first requests behind HELLO (one write) is answered at once:
/// bytes read with the HELLO are decoded without waiting for more to arrive.
#[tokio::test]
async fn frames_pipelined_behind_hello_are_answered() {
    use push_client::protocol::{Hello, MAX_VERSION, MIN_VERSION};
    // Default heartbeats: nothing else would wake the connection within the wait.
    let server = start(config()).await;
    let mut c = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    let hello = Frame::Hello(Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        token: token("pipe"),
        device: String::new(),
        resume: vec![],
        options: Default::default(),
    });
    let mut burst = encode_to_bytes(&Packet::new(1, hello), &EncodeOptions::default())
        .unwrap()
        .to_vec();
    let join = Frame::Join(push_client::protocol::Join {
        room: "piped".into(),
        resume_after: None,
    });
    burst.extend_from_slice(
        &encode_to_bytes(&Packet::new(2, join), &EncodeOptions::default()).unwrap(),
    );
    c.send_raw(&burst).await.unwrap();
    let ok = tokio::time::timeout(WAIT, c.recv()).await.unwrap().unwrap();
    assert!(matches!(ok.frame, Frame::AuthOk(_)), "{ok:?}");
    let joined = tokio::time::timeout(WAIT, c.recv())
        .await
        .expect("JOIN answered without waiting for more bytes")
        .unwrap();
    assert_eq!((joined.seq, joined.frame), (2, Frame::Ok(Some(0))));
}

/// Idle HTTP connections cannot pile up past `max_http_connections`: the next one gets 503
/// with the reason, and service returns when they go.
#[tokio::test]
async fn http_connections_are_limited() {
    let server = start(Config {
        max_http_connections: 3,
        ..config()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.http_addr).await.unwrap());
    }
    until("the idle connections to be counted", async || {
        let r = try_http(server.http_addr, "GET", "/healthz", None, "", WAIT).await;
        matches!(r, Some((503, _, _)))
    })
    .await;
    let (status, _, body) = try_http(server.http_addr, "GET", "/healthz", None, "", WAIT)
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("max_http_connections"), "{body}");
    drop(idle);
    until("service to return", async || {
        let r = try_http(server.http_addr, "GET", "/healthz", None, "", WAIT).await;
        matches!(r, Some((200, _, _)))
    })
    .await;
}
