//! Failures while messages flow through a cluster (real processes: three nats-server nodes and
//! two push-server binaries): a push node dies (SIGKILL), a push node and the users stream's
//! leader die together, and every NATS server is restarted in turn. A publisher sends through
//! node B and retries each message under its id until accepted; the SDK client starts on node
//! A with node B as its fallback. Every time the application gets every message exactly once,
//! in order.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::process::{free_addrs, spawn, wait_up_logged};
use common::*;
use push_client::{Client, ClientConfig};

/// Messages each scenario publishes.
const N: usize = 200;

/// What happens once the client has received a given number of messages.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL push node A (the client's node).
    KillNodeA,
    /// SIGKILL the NATS server leading the users stream.
    KillLeader,
    /// SIGKILL NATS server `i` and start it again (waiting until it is current).
    RestartNats(usize),
}

struct Run {
    nats: NatsCluster,
    prefix: &'static str,
    nodes: Vec<Child>,
    _dir: TempDir,
}

impl Run {
    async fn apply(&mut self, fault: Fault) {
        match fault {
            Fault::KillNodeA => {
                let _ = self.nodes[0].kill();
                let _ = self.nodes[0].wait();
            }
            Fault::KillLeader => {
                let client = async_nats::connect(self.nats.urls()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let names = push_server::cluster::names::Names::new(self.prefix);
                let mut stream = js.get_stream(&names.users_stream).await.unwrap();
                let leader = self.nats.leader_of(&mut stream).await;
                self.nats.kill(leader);
            }
            Fault::RestartNats(i) => {
                self.nats.kill(i);
                self.nats.restart(i).await;
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Runs the publish stream with `faults` applied when the client has received that many
/// messages, and checks what the application got.
async fn scenario(prefix: &'static str, faults: &[(usize, Fault)]) {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    let toml = format!(
        "[cluster]\nnats_urls = [{}]\nprefix = \"{prefix}\"\nreplicas = 3\n",
        urls.join(", ")
    );
    let dir = temp_dir();
    let (tcp_a, http_a) = free_addrs();
    let (tcp_b, http_b) = free_addrs();
    let nodes = vec![
        spawn(tcp_a, http_a, &dir.path().join("a"), "sled", &toml),
        spawn(tcp_b, http_b, &dir.path().join("b"), "sled", &toml),
    ];
    let mut run = Run {
        nats,
        prefix,
        nodes,
        _dir: dir,
    };
    wait_up_logged(http_a, &run._dir.path().join("a")).await;
    wait_up_logged(http_b, &run._dir.path().join("b")).await;

    let user = format!("{prefix}-user");
    let mut cfg = ClientConfig::new(tcp_a, token(&user));
    cfg.fallback = vec![tcp_b];
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    let mut client = Client::connect(cfg)
        .await
        .expect("client connects to node A");

    let publisher = tokio::spawn(async move {
        let mut longest = Duration::ZERO;
        for i in 1..=N {
            let body = serde_json::json!({
                "to": {"users": [user]}, "kind": "k", "payload": format!("m{i}"), "id": format!("{prefix}-{i}")
            })
            .to_string();
            let started = Instant::now();
            loop {
                let r =
                    try_http(http_b, "POST", "/api/v1/push", Some(API_TOKEN), &body, WAIT).await;
                if r.is_some_and(|(s, _, _)| s == 200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            longest = longest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        longest
    });

    let mut got = Vec::new();
    let mut faulted: Option<Instant> = None;
    while got.len() < N {
        let m = tokio::time::timeout(Duration::from_secs(30), client.next_message())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} messages", got.len()))
            .expect("client running");
        got.push((m.position, String::from_utf8_lossy(&m.payload).to_string()));
        if let Some(at) = faulted.take() {
            eprintln!("first message after the fault: {:?}", at.elapsed());
        }
        for (_, fault) in faults.iter().filter(|(at, _)| *at == got.len()) {
            run.apply(*fault).await;
            faulted = Some(Instant::now());
        }
    }
    let longest = publisher.await.unwrap();
    eprintln!("longest publish (with retries): {longest:?}");
    let expected: Vec<(u64, String)> = (1..=N as u64).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(
        got, expected,
        "every message once, in order, across {faults:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_node_killed_mid_stream_loses_nothing_and_repeats_nothing() {
    scenario("fo", &[(60, Fault::KillNodeA)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_node_and_the_stream_leader_killed_together_lose_nothing() {
    scenario("fl", &[(60, Fault::KillNodeA), (60, Fault::KillLeader)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_nats_server_loses_nothing() {
    let faults = [
        (40, Fault::RestartNats(0)),
        (90, Fault::RestartNats(1)),
        (140, Fault::RestartNats(2)),
    ];
    scenario("fr", &faults).await;
}
