//! Protocol version 2, negotiated in HELLO (SPEC.md §9): a client PING is answered by PONG in
//! order with what was queued for the client before it, over TCP and in JSON mode, through the
//! SDK's `Connection` and `Client` (whose pings find a frozen server long before the server's
//! heartbeat timeout would); a version-1 client is unchanged, and its PING is refused.

mod common;

use std::time::Duration;

use common::process::{free_addrs, spawn, wait_up};
use common::ws::WsClient;
use common::*;
use push_client::protocol::{ErrorCode, Frame, Hello, Join, Stream};
use push_client::{Client, ClientConfig, Connection, Event};
use serde_json::json;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ping_in_version_2_and_refused_in_version_1() {
    let server = start(config()).await;

    // The SDK negotiates version 2; a PONG comes after what was queued before the PING.
    let mut c = connect(server.tcp_addr, "vera").await;
    assert_eq!(c.auth.version, 2);
    let body = r#"{"to":{"users":["vera"]},"kind":"k","payload":"before the ping"}"#;
    assert_eq!(push(&server, body).await.0, 200);
    let (rtt, before) = c.ping().await.unwrap();
    assert!(rtt > Duration::ZERO);
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(expect_push(before[0].clone()).payload, "before the ping");

    // A version-1 client (HELLO 1..=1) gets version 1 and everything as before; its PING is
    // refused without ending the session.
    let mut old = Connection::from_stream(TcpStream::connect(server.tcp_addr).await.unwrap());
    let seq = old
        .send(Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            token: token("olga"),
            device: String::new(),
            resume: vec![],
            options: Default::default(),
        }))
        .await
        .unwrap();
    let p = old.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::AuthOk(ref a) if a.version == 1) && p.seq == seq,
        "{p:?}"
    );
    let seq = old.send(Frame::Ping).await.unwrap();
    let p = old.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::UNEXPECTED_FRAME)
            && p.seq == seq,
        "{p:?}"
    );
    let (ok, _) = old
        .request(Frame::Join(Join {
            room: "still-here".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    assert_eq!(ok.frame, Frame::Ok(Some(0)));

    // JSON mode: {"op":"ping"} is answered by {"op":"pong"} with its seq in version 2, and
    // refused when the client holds the session to version 1.
    for (max, answer) in [(2, "pong"), (1, "error")] {
        let mut ws = WsClient::connect(server.http_addr, "/ws", &["push.v1.json"], &[])
            .await
            .unwrap_or_else(|_| panic!("upgrade"));
        ws.send_json(json!({"op": "hello", "token": token("wendy"), "max_version": max}))
            .await;
        let welcome = ws.recv_json().await;
        assert_eq!(welcome["version"], max, "{welcome}");
        ws.send_json(json!({"op": "ping", "seq": 7})).await;
        let got = ws.recv_json().await;
        assert_eq!(
            (got["op"].as_str(), got["seq"].as_u64()),
            (Some(answer), Some(7)),
            "{got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_find_a_frozen_server_before_its_heartbeat_would() {
    // Node A runs as a process so it can be frozen (SIGSTOP: its sockets stay open, it answers
    // nothing); node B is the fallback. The heartbeat timeout is 90 s; the client's pings
    // every 200 ms count A dead after 400 ms of silence.
    let (tcp, http) = free_addrs();
    let dir = data_dir();
    let mut a = spawn(tcp, http, &dir, "sled", "");
    wait_up(http).await;
    let b = start(config()).await;
    let mut cfg = ClientConfig::new(tcp, token("fred"));
    cfg.fallback = vec![b.tcp_addr];
    cfg.ping_interval = Some(Duration::from_millis(200));
    cfg.backoff_min = Duration::from_millis(10);
    let mut client = Client::start(cfg);
    next_connected(&mut client).await;
    assert!(client.ping().await.unwrap() > Duration::ZERO);

    signal(a.id(), "-STOP");
    // Reconnected (to B: only B has the message pushed next).
    next_connected(&mut client).await;
    let body = r#"{"to":{"users":["fred"]},"kind":"k","payload":"on B"}"#;
    assert_eq!(push(&b, body).await.0, 200);
    let m = tokio::time::timeout(WAIT, client.next_message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.stream, m.payload.as_ref()), (Stream::User, &b"on B"[..]));
    signal(a.id(), "-CONT");
    let _ = a.kill();
    let _ = a.wait();
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Waits (bounded) for the client's next Connected event.
async fn next_connected(client: &mut Client) {
    let wait = async {
        loop {
            match client.next_event().await.expect("client running") {
                Event::Connected { .. } => return,
                Event::Disconnected { fatal: true, error } => panic!("client stopped: {error}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("connected in time (well before the 90 s heartbeat timeout)")
}
