//! The SDK against a real server: connect, receive, ack, rooms, reconnect after a restart,
//! rejected tokens. The load harness's smoke runs are in `benches/tests/harness.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use push_client::protocol::{ErrorCode, PayloadFormat, Stream};
use push_client::{Client, ClientConfig, ClientError, Event};
use push_server::delivery::{Message, Target};
use push_server::Config;
use push_test_support::{pass, start_clocked, token, until, TestServer, WAIT};

fn config(listen: SocketAddr) -> Config {
    Config {
        listen,
        shutdown_drain_ms: 1000,
        reconnect_hint_ms: 50,
        ..push_test_support::config()
    }
}

async fn start(listen: SocketAddr) -> TestServer {
    push_test_support::start(config(listen)).await
}

fn client_config(addr: SocketAddr, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr, token(user));
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

fn text(kind: &str, payload: &str) -> Message {
    Message {
        key: None,
        kind: kind.into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::from(payload.to_string()),
        ttl_ms: None,
        high_priority: false,
        transient: false,
        trace: None,
    }
}

/// Polls an async condition until it is true or the wait runs out.
async fn next_message(c: &mut Client) -> push_client::Message {
    tokio::time::timeout(WAIT, c.next_message())
        .await
        .expect("message in time")
        .expect("client running")
}

#[tokio::test]
async fn receives_user_and_room_messages() {
    let server = start("127.0.0.1:0".parse().unwrap()).await;
    let mut c = Client::connect(client_config(server.tcp_addr, "alice"))
        .await
        .unwrap();
    assert_eq!(c.join("news").await.unwrap(), 0);
    server
        .ctx
        .delivery
        .publish(&Target::Users(vec!["alice".into()]), text("k", "direct"))
        .await
        .unwrap();
    let m = next_message(&mut c).await;
    assert_eq!((m.stream, &m.payload[..]), (Stream::User, &b"direct"[..]));
    server
        .ctx
        .delivery
        .publish(&Target::Room("news".into()), text("k", "room"))
        .await
        .unwrap();
    let m = next_message(&mut c).await;
    assert_eq!(m.stream, Stream::Room("news".into()));
    c.leave("news").await.unwrap();
    assert_eq!(server.ctx.hub.room_size("news"), 0);
}

#[tokio::test]
async fn a_rejected_token_is_reported_not_retried() {
    let server = start("127.0.0.1:0".parse().unwrap()).await;
    let mut cfg = client_config(server.tcp_addr, "alice");
    cfg.token = "garbage".into();
    match Client::connect(cfg).await {
        Err(e @ ClientError::Rejected { .. }) => assert!(e.is_auth_failure()),
        other => panic!("expected rejection, got {:?}", other.err()),
    }
    assert_eq!(
        push_server::stats::Stats::get(&server.ctx.stats.handshakes_failed),
        1,
        "exactly one attempt"
    );
}

#[tokio::test]
async fn reconnects_after_a_server_restart_and_rejoins_rooms() {
    let first = start("127.0.0.1:0".parse().unwrap()).await;
    let addr = first.tcp_addr;
    let mut c = Client::connect(client_config(addr, "bob")).await.unwrap();
    c.join("ops").await.unwrap();
    first.shutdown();
    let _data = first.wait().await;
    let second = start(addr).await;
    // The client sees the CLOSE (a shutdown, with a reconnect hint), then reconnects.
    let mut saw_shutdown = false;
    loop {
        match tokio::time::timeout(WAIT, c.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Disconnected { error, fatal } => {
                assert!(!fatal, "{error}");
                if let ClientError::Closed { code, .. } = error {
                    saw_shutdown |= code == ErrorCode::SHUTTING_DOWN;
                }
            }
            Event::Connected { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_shutdown);
    // Rooms are re-joined by the client itself.
    until("room re-joined", async || {
        second.ctx.hub.room_size("ops") == 1
    })
    .await;
    second
        .ctx
        .delivery
        .publish(&Target::Room("ops".into()), text("k", "after restart"))
        .await
        .unwrap();
    let m = next_message(&mut c).await;
    assert_eq!(&m.payload[..], b"after restart");
}

#[tokio::test]
async fn manual_ack_and_no_duplicate_ids_when_the_server_resends() {
    let (server, clock) = start_clocked(Config {
        retry_interval_ms: 30,
        max_retries: 3,
        ..config("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let mut cfg = client_config(server.tcp_addr, "kim");
    cfg.auto_ack = false;
    let mut c = Client::connect(cfg).await.unwrap();
    server
        .ctx
        .delivery
        .publish(&Target::Users(vec!["kim".into()]), text("k", "only once"))
        .await
        .unwrap();
    let m = next_message(&mut c).await;
    assert_eq!(&m.payload[..], b"only once");
    // Unacknowledged, the server resends the same id; the SDK must not hand it over again.
    for _ in 0..2 {
        pass(&server, &clock, Duration::from_secs(3600)).await;
    }
    let page = server
        .ctx
        .delivery
        .history(&push_server::stream::StreamKey::user("kim"), 0, 10)
        .await
        .unwrap();
    assert!(page.items[0].record.retries >= 2, "the server resent");
    server
        .ctx
        .delivery
        .publish(&Target::Users(vec!["kim".into()]), text("k", "second"))
        .await
        .unwrap();
    let next = next_message(&mut c).await;
    assert_eq!(&next.payload[..], b"second", "the resent id was dropped");
    // Manual ack of both: no more resends, the stream is acknowledged.
    c.ack(Stream::User, next.position);
    until("ack reached the server", async || {
        server
            .ctx
            .delivery
            .history(&push_server::stream::StreamKey::user("kim"), 0, 10)
            .await
            .unwrap()
            .acked
            == 2
    })
    .await;
}
