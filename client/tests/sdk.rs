//! The SDK against a real server: connect, receive, ack, rooms, reconnect after a restart,
//! rejected tokens; and a small smoke run of the load harness.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use push_client::protocol::{ErrorCode, PayloadFormat, Stream};
use push_client::token::{mint, Claims};
use push_client::{Client, ClientConfig, ClientError, Event};
use push_server::delivery::{Message, Target};
use push_server::{Config, ServerHandle};

const SECRET: &str = "sdk-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

fn config(listen: SocketAddr) -> Config {
    let dir = std::env::temp_dir().join(format!(
        "push-sdk-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    Config {
        listen,
        data_dir: dir,
        http_listen: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: SECRET.into(),
        api_tokens: vec!["sdk-test-api-token".into()],
        shutdown_drain_ms: 1000,
        reconnect_hint_ms: 50,
        ..Config::default()
    }
}

async fn start(listen: SocketAddr) -> ServerHandle {
    push_server::start(config(listen)).await.unwrap()
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    mint(
        SECRET.as_bytes(),
        &Claims {
            sub: user.into(),
            exp,
            device: None,
            rooms: Vec::new(),
        },
    )
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
    }
}

/// Polls an async condition until it is true or the wait runs out.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs push-bench against `server` and returns its exit status and final JSON line.
fn bench(server: &ServerHandle, args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_push-bench"))
        .args(args)
        .args(["--addr", &server.tcp_addr.to_string()])
        .args(["--http", &server.http_addr.to_string()])
        .args(["--secret", SECRET, "--api-token", "sdk-test-api-token"])
        .args([
            "--server-pid",
            &std::process::id().to_string(),
            "--per-worker",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.success(), v)
}

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
    first.wait().await;
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

/// The harness tests run one at a time: the soak counts the descriptors of this process, which
/// holds the server, and the other run's 200 connections would land in its samples.
static HARNESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn load_harness_smoke_run() {
    // A tiny run of push-bench against a real server, so the harness cannot rot.
    let _one_at_a_time = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start("127.0.0.1:0".parse().unwrap()));
    let (ok, v) = bench(&server, &["idle", "--conns", "200", "--hold", "0.2"]);
    assert!(ok, "{v}");
    assert_eq!(v["connections_ok"], 200);
    let (ok, v) = bench(
        &server,
        &[
            "fanout",
            "--conns",
            "200",
            "--messages",
            "10",
            "--rate",
            "100",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["deliveries_received"], 2000);
    assert_eq!(v["deliveries_lost"], 0);
    assert!(v["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

/// The CI-sized soak (issue 8; the 30-minute run is in BENCHMARKS.md): churn with room
/// join/leave, acking receivers, unicast and room publishes; nothing lost or repeated, no
/// descriptor leak, storage bounded.
#[test]
fn soak_smoke_run() {
    let _one_at_a_time = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start("127.0.0.1:0".parse().unwrap()));
    let dir = server.ctx.config.data_dir.to_string_lossy().to_string();
    let (ok, v) = bench(
        &server,
        &[
            "soak",
            "--conns",
            "100",
            "--seconds",
            "8",
            "--sample",
            "2",
            "--publish-rate",
            "100",
            "--churn-rate",
            "20",
            "--data-dir",
            &dir,
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["deliveries_lost"], 0, "{v}");
    assert_eq!(v["duplicates_or_reordered"], 0, "{v}");
    assert_eq!(v["connections_lost"], 0, "{v}");
    assert_eq!(v["churn_cycles_failed"], 0, "{v}");
    assert!(v["churn_cycles_ok"].as_u64().unwrap() > 50, "{v}");
    let samples = v["samples"].as_array().unwrap();
    let fds: Vec<u64> = samples.iter().map(|r| r["fds"].as_u64().unwrap()).collect();
    // Receivers and churn connections come and go; descriptors do not pile up.
    assert!(
        fds.iter().max().unwrap() - fds.iter().min().unwrap() < 60,
        "{fds:?}"
    );
    let storage = samples.last().unwrap()["storage_bytes"].as_u64().unwrap();
    assert!(storage < 64 << 20, "storage {storage}");
}

#[tokio::test]
async fn manual_ack_and_no_duplicate_ids_when_the_server_resends() {
    let dir = std::env::temp_dir().join(format!(
        "push-sdk-dedupe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let server = push_server::start(Config {
        retry_interval_ms: 30,
        max_retries: 3,
        data_dir: dir,
        ..config("127.0.0.1:0".parse().unwrap())
    })
    .await
    .unwrap();
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
    until("the server resent", async || {
        let page = server
            .ctx
            .delivery
            .history("user:kim", 0, 10)
            .await
            .unwrap();
        page.items[0].record.retries >= 2
    })
    .await;
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
            .history("user:kim", 0, 10)
            .await
            .unwrap()
            .acked
            == 2
    })
    .await;
}
