//! Smoke runs of the load harness (`push-bench`) against a real server, so it cannot rot: the
//! idle and fan-out scenarios, and the CI-sized soak.

use std::net::SocketAddr;

use push_server::{Config, ServerHandle};
use push_test_support::{TestServer, API_TOKEN, SECRET};

async fn start(listen: SocketAddr) -> TestServer {
    push_test_support::start(Config {
        listen,
        shutdown_drain_ms: 1000,
        // For fan-out runs with --binary-publish.
        allow_client_publish: true,
        ..push_test_support::config()
    })
    .await
}

fn bench(server: &ServerHandle, args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_push-bench"))
        .args(args)
        .args(["--addr", &server.tcp_addr.to_string()])
        .args(["--http", &server.http_addr.to_string()])
        .args(["--secret", SECRET, "--api-token", API_TOKEN])
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
    let (ok, v) = bench(
        &server,
        &[
            "fanout",
            "--conns",
            "50",
            "--messages",
            "10",
            "--rate",
            "100",
            "--binary-publish",
            "--transient",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["deliveries_received"], 500);
    assert_eq!(v["publish_failures"], 0);
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
