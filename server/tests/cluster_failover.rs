//! A push node dies (SIGKILL) in a cluster while messages flow: its client reconnects to the
//! other node and resumes, and the application gets every message exactly once, in order.
//! Real processes: three nats-server nodes and two push-server binaries.

mod common;

use std::time::Duration;

use common::process::{free_addrs, spawn, wait_up_logged};
use common::*;
use push_client::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_node_killed_mid_stream_loses_nothing_and_repeats_nothing() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    let toml = format!(
        "[cluster]\nnats_urls = [{}]\nprefix = \"fo\"\nreplicas = 3\n",
        urls.join(", ")
    );
    let tmp = temp_dir();
    let (tcp_a, http_a) = free_addrs();
    let (tcp_b, http_b) = free_addrs();
    let mut node_a = spawn(tcp_a, http_a, &tmp.path().join("a"), "sled", &toml);
    let mut node_b = spawn(tcp_b, http_b, &tmp.path().join("b"), "sled", &toml);
    wait_up_logged(http_a, &tmp.path().join("a")).await;
    wait_up_logged(http_b, &tmp.path().join("b")).await;

    let mut cfg = ClientConfig::new(tcp_a, token("fo-user"));
    cfg.fallback = vec![tcp_b];
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    let mut client = Client::connect(cfg)
        .await
        .expect("client connects to node A");

    // Publishers go through node B; a failed publish is retried with the same id.
    const N: u64 = 200;
    let publisher = tokio::spawn(async move {
        for i in 1..=N {
            let body = serde_json::json!({
                "to": {"users": ["fo-user"]}, "kind": "k", "payload": format!("m{i}"), "id": format!("fo-{i}")
            })
            .to_string();
            loop {
                let r =
                    try_http(http_b, "POST", "/api/v1/push", Some(API_TOKEN), &body, WAIT).await;
                if r.is_some_and(|(s, _, _)| s == 200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut got = Vec::new();
    let mut killed = None;
    while (got.len() as u64) < N {
        let m = tokio::time::timeout(Duration::from_secs(30), client.next_message())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", got.len()))
            .expect("client running");
        got.push((m.position, String::from_utf8_lossy(&m.payload).to_string()));
        if got.len() == 61 {
            if let Some(at) = killed {
                let at: std::time::Instant = at;
                eprintln!("first message after the node kill: {:?}", at.elapsed());
            }
        }
        if got.len() == 60 {
            let _ = node_a.kill();
            let _ = node_a.wait();
            killed = Some(std::time::Instant::now());
        }
    }
    publisher.await.unwrap();
    let expected: Vec<(u64, String)> = (1..=N).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(
        got, expected,
        "every message once, in order, across the node loss"
    );
    for node in [&mut node_a, &mut node_b] {
        let _ = node.kill();
        let _ = node.wait();
    }
}
