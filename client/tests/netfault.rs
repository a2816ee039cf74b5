//! Network faults between client and server (issue 8), in network namespaces the test makes:
//! the SDK (as `push-cli subscribe`) runs in its own namespace behind a veth pair. Faults: a
//! slow link (`tc tbf`: queueing delay and tail drops) with 15% random packet loss (nftables
//! `numgen random`), then a full partition (nftables drops everything, a silent black hole).
//! This machine's kernel has no `netem`, so delay and loss come from those two instead.
//! Heartbeats detect the dead peer on both sides, the client reconnects and resumes when the
//! network heals, and every message arrives exactly once, in order. Needs root (`ip netns`,
//! `tc`, `nft`), as on CI, where scripts/test.sh installs nftables.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use push_client::protocol::PayloadFormat;
use push_server::delivery::{Message, Target};
use push_server::{Config, ServerHandle};

const SECRET: &str = "netfault-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(20);

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{} is needed for the network-fault test: {e}", args[0]));
    assert!(
        out.status.success(),
        "{:?} failed (the network-fault test needs root): {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace joined to the host by a veth pair: host side `10.77.N.1`, namespace side `.2`.
struct Net {
    ns: String,
    host_if: String,
    ns_if: String,
    host_ip: String,
}

impl Net {
    fn new() -> Net {
        let n = std::process::id() % 200 + 20;
        let net = Net {
            ns: format!("pushnf{n}"),
            host_if: format!("pnfh{n}"),
            ns_if: format!("pnfc{n}"),
            host_ip: format!("10.77.{n}.1"),
        };
        let _ = Command::new("ip").args(["netns", "del", &net.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &net.host_if])
            .output();
        sh(&["ip", "netns", "add", &net.ns]);
        sh(&[
            "ip",
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.ns_if,
        ]);
        sh(&["ip", "link", "set", &net.ns_if, "netns", &net.ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.host_ip),
            "dev",
            &net.host_if,
        ]);
        sh(&["ip", "link", "set", &net.host_if, "up"]);
        let ns_ip = format!("10.77.{n}.2/24");
        net.in_ns(&["ip", "addr", "add", &ns_ip, "dev", &net.ns_if]);
        net.in_ns(&["ip", "link", "set", &net.ns_if, "up"]);
        net.in_ns(&["ip", "link", "set", "lo", "up"]);
        net
    }

    fn in_ns(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Replaces the faults on the link: `rate` throttles both ends with a token bucket (its
    /// queue adds delay and drops what overflows), `drop_pct` drops packets at random in both
    /// directions (100 = partition). `fault(None, 0)` heals the link.
    fn fault(&self, rate: Option<&str>, drop_pct: u32) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.ns])
            .output();
        for (inside, dev) in [(false, &self.host_if), (true, &self.ns_if)] {
            let args: Vec<&str> = match rate {
                Some(r) => vec![
                    "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", r, "burst", "8kb",
                    "latency", "200ms",
                ],
                None => vec!["tc", "qdisc", "replace", "dev", dev, "root", "pfifo"],
            };
            if inside {
                self.in_ns(&args);
            } else {
                sh(&args);
            }
        }
        if drop_pct > 0 {
            let rule = if drop_pct >= 100 {
                String::new()
            } else {
                format!("numgen random mod 100 < {drop_pct} ")
            };
            let dev = &self.host_if;
            let table = format!(
                "table inet {ns} {{ chain o {{ type filter hook output priority 0; oifname \"{dev}\" {rule}drop; }}; \
                 chain i {{ type filter hook input priority 0; iifname \"{dev}\" {rule}drop; }}; }}",
                ns = self.ns
            );
            sh(&["nft", &table]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.ns])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

async fn publish(server: &ServerHandle, n: usize) {
    let msg = Message {
        key: Some(format!("m{n}")),
        kind: "k".into(),
        format: PayloadFormat::OPAQUE,
        payload: Bytes::from(format!("m{n}")),
        ttl_ms: None,
        high_priority: false,
        transient: false,
        trace: None,
    };
    server
        .ctx
        .delivery
        .publish(&Target::Users(vec!["netuser".into()]), msg)
        .await
        .expect("accepted");
}

/// Waits for `n` more message lines from the subscriber.
fn take(lines: &mpsc::Receiver<String>, n: usize, got: &mut Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("subscriber line in time");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let payload = v["payload"].as_str().unwrap_or_default();
        got.push(payload.trim_start_matches('m').parse().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_loss_and_partition_lose_nothing() {
    let net = Net::new();
    let server = push_server::start(Config {
        listen: format!("{}:0", net.host_ip).parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: std::env::temp_dir().join(format!("push-netfault-{}", std::process::id())),
        jwt_secret: SECRET.into(),
        heartbeat_interval_ms: 300,
        heartbeat_timeout_ms: 1_500,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.ns])
        .arg(env!("CARGO_BIN_EXE_push-cli"))
        .args([
            "subscribe",
            "--json",
            "--user",
            "netuser",
            "--secret",
            SECRET,
        ])
        .args(["--addr", &server.tcp_addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("push-cli starts in the namespace");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let (etx, events) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    until("the subscriber to connect", || {
        !server.ctx.hub.user_connections("netuser").is_empty()
    })
    .await;
    let mut got = Vec::new();

    // 1. A slow, lossy link: TCP retransmits, everything arrives.
    net.fault(Some("256kbit"), 15);
    for n in 1..=40 {
        publish(&server, n).await;
    }
    take(&lines, 40, &mut got);

    // 2. Partition: the server's heartbeat closes the silent connection; the client's own
    //    dead-server timeout gives up on it; messages published meanwhile are stored.
    net.fault(None, 100);
    let cut = Instant::now();
    until("the server to drop the partitioned client", || {
        server.ctx.hub.user_connections("netuser").is_empty()
    })
    .await;
    let detected_ms = cut.elapsed().as_millis();
    for n in 41..=80 {
        publish(&server, n).await;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    // 3. Heal: the client reconnects, resumes, and receives the rest.
    net.fault(None, 0);
    let healed = Instant::now();
    take(&lines, 40, &mut got);
    let resumed_ms = healed.elapsed().as_millis();
    for n in 81..=100 {
        publish(&server, n).await;
    }
    take(&lines, 20, &mut got);

    let want: Vec<u64> = (1..=100).collect();
    assert_eq!(got, want, "every message once, in order");
    let log: Vec<String> = events.try_iter().collect();
    assert!(
        log.iter().any(|l| l.starts_with("disconnected")),
        "the client noticed the dead connection: {log:?}"
    );
    eprintln!(
        "network faults: 100 messages, lost 0, duplicated 0; partition detected by the server \
         after {detected_ms} ms (heartbeat timeout 1500 ms); all 40 stored messages received \
         {resumed_ms} ms after healing"
    );
    let _ = child.kill();
    let _ = child.wait();
}
