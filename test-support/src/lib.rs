//! What the integration tests of every crate share: a real server on ephemeral ports whose
//! data directory is removed after the test, client tokens, waiting on a condition, the
//! first PUSH of a packet, an HTTP client built on hyper, a NATS cluster and a TCP proxy a
//! test can cut.

mod http;
mod nats;
mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use push_client::protocol::{Frame, Packet, Push};
use push_client::token::{mint, Claims};
use push_server::clock::ManualClock;
use push_server::{Config, ServerHandle};

pub use http::{http, http_full, http_with, try_http};
pub use nats::{free_port, mosquitto, nats_server, NatsCluster};
pub use proxy::Proxy;
pub use tempfile::TempDir;

/// HS256 secret of the test servers.
pub const SECRET: &str = "integration-test-secret-0123456789";
/// API token of the test servers (every scope).
pub const API_TOKEN: &str = "integration-api-token";
/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Temporary directories handed out by [`data_dir`] that no server has claimed yet.
static UNCLAIMED: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());

/// A temporary directory the test holds itself (removed when dropped): for a server run as a
/// child process, certificates, files.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("push-test-")
        .tempdir()
        .expect("temporary directory")
}

/// A fresh, empty data directory. The first [`start`] whose config names it takes it over and
/// removes it when the server is dropped (or hands it back from [`TestServer::wait`], for a
/// restart on the same data).
pub fn data_dir() -> PathBuf {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    UNCLAIMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir);
    path
}

fn claim(path: &Path) -> Option<TempDir> {
    let mut dirs = UNCLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let i = dirs.iter().position(|d| d.path() == path)?;
    Some(dirs.swap_remove(i))
}

/// A server config on ephemeral localhost ports, with the test secret and API token and a
/// fresh data directory.
pub fn config() -> Config {
    Config {
        data_dir: data_dir(),
        listen: "127.0.0.1:0".parse().expect("address"),
        http_listen: "127.0.0.1:0".parse().expect("address"),
        jwt_secret: SECRET.into(),
        api_tokens: vec![API_TOKEN.into()],
        shutdown_drain_ms: 2000,
        ..Config::default()
    }
}

/// A running server and the data directory it owns.
pub struct TestServer {
    handle: ServerHandle,
    dir: Option<TempDir>,
}

impl std::ops::Deref for TestServer {
    type Target = ServerHandle;

    fn deref(&self) -> &ServerHandle {
        &self.handle
    }
}

impl TestServer {
    /// Waits until a shutdown has completed; the data directory is handed back, so a test
    /// can start the next server on the same data (it is removed when dropped).
    pub async fn wait(self) -> Option<TempDir> {
        self.handle.wait().await;
        self.dir
    }
}

/// Starts a server with `config`.
pub async fn start(config: Config) -> TestServer {
    let dir = claim(&config.data_dir);
    let handle = push_server::start(config).await.expect("server starts");
    TestServer { handle, dir }
}

/// A server whose delivery engine takes its time from a manual clock (see [`pass`]).
pub async fn start_clocked(config: Config) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let dir = claim(&config.data_dir);
    let handle = push_server::start_with_clock(config, clock.clone())
        .await
        .expect("server starts");
    (TestServer { handle, dir }, clock)
}

/// Moves the server's clock forward by `by`, then runs the housekeeping due by then
/// (retries, expiry, compaction) and waits until it is committed.
pub async fn pass(server: &ServerHandle, clock: &ManualClock, by: Duration) {
    clock.advance(by);
    server
        .ctx
        .delivery
        .housekeeping()
        .await
        .expect("engine running");
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client token for `user`, valid for an hour, signed with [`SECRET`].
pub fn token(user: &str) -> String {
    token_with(SECRET, user)
}

/// A client token for `user`, valid for an hour, signed with `secret`.
pub fn token_with(secret: &str, user: &str) -> String {
    mint(
        secret.as_bytes(),
        &Claims {
            sub: user.into(),
            exp: now_secs() + 3600,
            device: None,
            rooms: Vec::new(),
        },
    )
}

/// The PUSH a packet carries; panics on anything else.
pub fn expect_push(p: Packet) -> Push {
    match p.frame {
        Frame::Push(push) => push,
        other => panic!("expected PUSH, got {other:?}"),
    }
}

/// Polls an async condition until it is true or [`WAIT`] runs out.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `f` until it is true or [`WAIT`] runs out.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The HTTP address of a server, for the HTTP helpers.
pub fn http_addr(server: &ServerHandle) -> SocketAddr {
    server.http_addr
}
