//! The peer rows of the load harness (`push-bench --peer mqtt|nats`, benches/run-peers.sh)
//! against the real brokers, so the comparison cannot rot: Debian's Mosquitto and the
//! nats-server the cluster tests use, each on a port of its own.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: push_test_support::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn start(peer: &str) -> Option<Broker> {
        let dir = push_test_support::temp_dir();
        let addr = push_test_support::free_port();
        let child = match peer {
            "mqtt" => {
                let bin = push_test_support::mosquitto()?;
                let conf = dir.path().join("mosquitto.conf");
                let text = format!(
                    "listener {} 127.0.0.1\nallow_anonymous true\nlog_type error\n",
                    addr.port()
                );
                std::fs::write(&conf, text).unwrap();
                Command::new(bin)
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .spawn()
            }
            _ => {
                let bin = push_test_support::nats_server()?;
                Command::new(bin)
                    .args(["-a", "127.0.0.1", "-p", &addr.port().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            }
        }
        .expect("start the broker");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "{peer} broker did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Broker {
            child,
            addr,
            _dir: dir,
        })
    }

    fn bench(&self, peer: &str, args: &[&str]) -> (bool, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_push-bench"))
            .args(args)
            .args(["--peer", peer, "--addr", &self.addr.to_string()])
            .args(["--server-pid", &self.child.id().to_string()])
            .args(["--per-worker", "100"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let v = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    }
}

fn idle_and_fanout(peer: &str) {
    let Some(broker) = Broker::start(peer) else {
        return;
    };
    let (ok, v) = broker.bench(
        peer,
        &["idle", "--conns", "150", "--room", "r", "--hold", "0.2"],
    );
    assert!(ok, "{v}");
    assert_eq!(v["transport"], peer);
    assert_eq!(v["connections_ok"], 150);
    assert!(v["server_rss_per_connection_bytes"].is_number(), "{v}");
    let (ok, v) = broker.bench(
        peer,
        &[
            "fanout",
            "--conns",
            "150",
            "--messages",
            "10",
            "--rate",
            "0",
            "--publishers",
            "3",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["deliveries_received"], 1500);
    assert_eq!(v["deliveries_lost"], 0);
    assert!(v["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_harness_speaks_mqtt_to_mosquitto() {
    idle_and_fanout("mqtt");
}

#[test]
fn the_harness_speaks_nats_core_to_nats_server() {
    idle_and_fanout("nats");
}

#[test]
fn scenarios_that_only_this_server_speaks_refuse_a_peer() {
    let out = Command::new(env!("CARGO_BIN_EXE_push-bench"))
        .args(["unicast", "--peer", "nats", "--conns", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--peer works with idle and fanout"), "{err}");
}
