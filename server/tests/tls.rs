//! TLS on every listener (issue 8) with a self-signed certificate made by the test: the SDK
//! connects only when it trusts that CA and the name matches; HTTPS and WSS work; a plain client
//! on a TLS port is refused without harming anyone.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use push_client::protocol::ws::frame::{encode_masked, opcode};
use push_client::protocol::Frame;
use push_client::{Client, ClientConfig, ClientError, ConnectOptions, Connection, TlsOptions};
use push_server::tls::TlsConfig;
use push_server::Config;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Cert {
    pem: String,
    dir: PathBuf,
    _tmp: TempDir,
}

fn self_signed() -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    Cert {
        pem: ck.cert.pem(),
        dir,
        _tmp: tmp,
    }
}

async fn tls_server(cert: &Cert) -> TestServer {
    start(Config {
        tls: Some(TlsConfig {
            cert: cert.dir.join("cert.pem"),
            key: cert.dir.join("key.pem"),
            resumption: true,
        }),
        ..config()
    })
    .await
}

fn trusting(cert: &Cert, name: &str) -> TlsOptions {
    TlsOptions::new(name)
        .with_ca_pem(cert.pem.as_bytes())
        .unwrap()
}

/// One HTTP/1.1 request over TLS; returns (status, body).
async fn https(
    addr: SocketAddr,
    tls: &TlsOptions,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = tls.connect(tcp).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn sdk_connects_over_tls_only_when_it_can_verify_the_server() {
    let cert = self_signed();
    let server = tls_server(&cert).await;
    let good = trusting(&cert, "localhost");

    // Trusting the CA, by name and by IP address: connects and receives.
    let mut config = ClientConfig::new(server.tcp_addr, token("tina"));
    config.tls = Some(good.clone());
    let mut client = Client::connect(config).await.unwrap();
    let body = json!({"to": {"users": ["tina"]}, "kind": "k", "payload": "over TLS"}).to_string();
    let (status, text) = https(server.http_addr, &good, "POST", "/api/v1/push", &body).await;
    assert_eq!(status, 200, "{text}");
    let m = tokio::time::timeout(WAIT, client.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"over TLS");
    let by_ip = ConnectOptions {
        token: token("tina"),
        tls: Some(trusting(&cert, "127.0.0.1")),
        ..Default::default()
    };
    Connection::connect(server.tcp_addr, &by_ip).await.unwrap();

    // Verification is on by default: the public roots do not know this certificate.
    let unknown_ca = ConnectOptions {
        token: token("tina"),
        tls: Some(TlsOptions::new("localhost")),
        ..Default::default()
    };
    match Connection::connect(server.tcp_addr, &unknown_ca).await {
        Err(ClientError::Tls(reason)) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a TLS refusal, got {:?}", other.map(|_| ())),
    }
    // A name the certificate does not carry.
    let wrong_name = ConnectOptions {
        token: token("tina"),
        tls: Some(trusting(&cert, "push.example.com")),
        ..Default::default()
    };
    match Connection::connect(server.tcp_addr, &wrong_name).await {
        Err(ClientError::Tls(reason)) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a TLS refusal, got {:?}", other.map(|_| ())),
    }
    // A plain client on the TLS port gets no session; the TLS client carries on.
    let plain = ConnectOptions {
        token: token("tina"),
        ..Default::default()
    };
    assert!(Connection::connect(server.tcp_addr, &plain).await.is_err());
    let (status, _) = https(server.http_addr, &good, "POST", "/api/v1/push", &body).await;
    assert_eq!(status, 200);
    let m = tokio::time::timeout(WAIT, client.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"over TLS");
    client.close();
}

#[tokio::test]
async fn binary_protocol_over_tls_survives_large_messages_and_heartbeats() {
    let cert = self_signed();
    let server = start(Config {
        heartbeat_interval_ms: 200,
        heartbeat_timeout_ms: 2_000,
        tls: Some(TlsConfig {
            cert: cert.dir.join("cert.pem"),
            key: cert.dir.join("key.pem"),
            resumption: true,
        }),
        ..config()
    })
    .await;
    let opts = ConnectOptions {
        token: token("uma"),
        tls: Some(trusting(&cert, "localhost")),
        ..Default::default()
    };
    let mut c = Connection::connect(server.tcp_addr, &opts).await.unwrap();
    // Bigger than a TLS record and the frame limit: fragmented, encrypted in several records.
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for i in 0..5 {
        let body = json!({"to": {"users": ["uma"]}, "kind": "k", "payload": format!("{i}{big}")});
        let (status, _) = https(
            server.http_addr,
            &trusting(&cert, "localhost"),
            "POST",
            "/api/v1/push",
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut got = 0;
    while got < 5 {
        let p = c.next_timeout(WAIT).await.unwrap();
        if let Frame::Push(push) = p.frame {
            assert_eq!(push.payload.len(), 300_001);
            assert_eq!(push.payload[0], b'0' + got as u8);
            got += 1;
        }
    }
    // Several heartbeat intervals pass; next_timeout answers the PINGs over TLS.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert!(c
        .next_timeout(std::time::Duration::from_millis(300))
        .await
        .is_err_and(|e| matches!(e, ClientError::Timeout(_))));
    assert_eq!(server.ctx.hub.connection_count(), 1, "still connected");
}

#[tokio::test]
async fn websocket_over_tls() {
    let cert = self_signed();
    let server = tls_server(&cert).await;
    let tls = trusting(&cert, "localhost");
    let tcp = TcpStream::connect(server.http_addr).await.unwrap();
    let mut s = tls.connect(tcp).await.unwrap();
    let req = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: push.v1.json\r\n\r\n",
        token("vera")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the 101 and then text frames until the pushed message shows up.
    let mut pushed = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if text.contains("\"op\":\"welcome\"") && !pushed {
            assert!(text.starts_with("HTTP/1.1 101"), "{text}");
            let body = json!({"to": {"users": ["vera"]}, "kind": "k", "payload": "wss works"});
            let (status, _) = https(
                server.http_addr,
                &tls,
                "POST",
                "/api/v1/push",
                &body.to_string(),
            )
            .await;
            assert_eq!(status, 200);
            pushed = true;
        }
        if text.contains("wss works") {
            break;
        }
    }
    // And the client side of WebSocket works through TLS too: a ping is answered.
    s.write_all(&encode_masked(
        0x80 | opcode::PING,
        b"tls-ping",
        [1, 2, 3, 4],
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !seen.windows(8).any(|w| w == b"tls-ping") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&chunk[..n]);
    }
    // Plain HTTP on the TLS port gets nothing useful, and the server carries on.
    let (status, _) = https(server.http_addr, &tls, "GET", "/healthz", "").await;
    assert_eq!(status, 200);
    assert!(try_http(
        server.http_addr,
        "GET",
        "/healthz",
        None,
        "",
        std::time::Duration::from_secs(3)
    )
    .await
    .is_none());
}

/// Bytes rustls has already decrypted count as readable: a client that sends HELLO and more
/// in one TLS record (more than one read's worth) is served without waiting for more bytes.
#[tokio::test]
async fn frames_sent_with_the_hello_in_one_record_are_all_served() {
    use push_client::protocol::{encode_to_bytes, Hello, Join, Packet, MAX_VERSION, MIN_VERSION};
    let cert = self_signed();
    // 400 JOINs at once are far over the default JOIN/LEAVE rate (SPEC.md §9.2); this test is
    // about bytes buffered inside rustls, not about that limit.
    let server = start(Config {
        tls: Some(TlsConfig {
            cert: cert.dir.join("cert.pem"),
            key: cert.dir.join("key.pem"),
            resumption: true,
        }),
        max_room_ops_per_sec: 0,
        ..config()
    })
    .await;
    let tcp = TcpStream::connect(server.tcp_addr).await.unwrap();
    let mut s = trusting(&cert, "localhost").connect(tcp).await.unwrap();
    let mut burst = encode_to_bytes(
        &Packet::new(
            1,
            Frame::Hello(Hello {
                min_version: MIN_VERSION,
                max_version: MAX_VERSION,
                token: token("walt"),
                device: String::new(),
                resume: vec![],
                options: Default::default(),
            }),
        ),
        &Default::default(),
    )
    .unwrap()
    .to_vec();
    for i in 0..400u32 {
        let join = Frame::Join(Join {
            room: format!("room-{i}"),
            resume_after: None,
        });
        burst.extend_from_slice(
            &encode_to_bytes(&Packet::new(100 + i, join), &Default::default()).unwrap(),
        );
    }
    assert!(burst.len() > 8192, "{}", burst.len());
    s.write_all(&burst).await.unwrap();
    // AUTH_OK, then an answer to every JOIN (OK, or TOO_MANY_ROOMS past the limit of 64).
    let mut c = push_client::protocol::FrameCodec::new(Default::default(), Default::default());
    let mut buf = bytes::BytesMut::new();
    let mut answers = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while answers < 401 {
        use tokio_util::codec::Decoder;
        while let Some(p) = c.decode(&mut buf).unwrap() {
            if p.seq == 1 || p.seq >= 100 {
                answers += 1;
            }
        }
        if answers >= 401 {
            break;
        }
        let n = tokio::time::timeout_at(deadline, s.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stalled after {answers} answers"))
            .unwrap();
        assert!(n > 0);
    }
}

/// `push_tls_handshakes_total` for `kind`, read over HTTPS with options of its own (a full
/// handshake, counted before the answer is made).
async fn tls_handshakes(server: &TestServer, cert: &Cert, kind: &str) -> u64 {
    let (status, text) = https(
        server.http_addr,
        &trusting(cert, "localhost"),
        "GET",
        "/metrics",
        "",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let prefix = format!("push_tls_handshakes_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_reconnect_through_the_same_options_resumes_the_tls_session() {
    let cert = self_signed();
    for resumption in [true, false] {
        let server = start(Config {
            tls: Some(TlsConfig {
                cert: cert.dir.join("cert.pem"),
                key: cert.dir.join("key.pem"),
                resumption,
            }),
            ..config()
        })
        .await;
        let opts = ConnectOptions {
            token: token("rita"),
            tls: Some(trusting(&cert, "localhost")),
            ..Default::default()
        };
        // The ticket arrives before AUTH_OK, so the first connection leaves one behind.
        let first = Connection::connect(server.tcp_addr, &opts).await.unwrap();
        drop(first);
        let again = opts.clone();
        let mut second = Connection::connect(server.tcp_addr, &again).await.unwrap();
        second.ping().await.unwrap();
        let resumed = tls_handshakes(&server, &cert, "resumed").await;
        let full = tls_handshakes(&server, &cert, "full").await;
        if resumption {
            assert_eq!((resumed, full), (1, 3), "first full, second resumed");
        } else {
            assert_eq!((resumed, full), (0, 4), "no tickets: every handshake full");
        }
        // Options reset forget the ticket.
        opts.tls.as_ref().unwrap().reset();
        drop(Connection::connect(server.tcp_addr, &opts).await.unwrap());
        assert_eq!(tls_handshakes(&server, &cert, "resumed").await, resumed);
    }
}
