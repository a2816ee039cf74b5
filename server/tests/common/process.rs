//! The real server binary as a child process (crash and disk-full tests).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{API_TOKEN, SECRET, WAIT};

/// A free loopback port (bound, then released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two free loopback addresses: binary protocol and HTTP.
pub(crate) fn free_addrs() -> (SocketAddr, SocketAddr) {
    let tcp = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let http = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (tcp, http)
}

/// Starts the server binary on `dir` with `store`; `toml` is extra configuration.
pub(crate) fn spawn(
    tcp: SocketAddr,
    http: SocketAddr,
    dir: &Path,
    store: &str,
    toml: &str,
) -> Child {
    let config = dir.with_extension("toml");
    std::fs::write(&config, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_push-server"))
        .arg("--config")
        .arg(&config)
        .args([
            "--listen",
            &tcp.to_string(),
            "--http-listen",
            &http.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--store", store, "--log", "warn"])
        .env("PUSH_JWT_SECRET", SECRET)
        .env("PUSH_API_TOKENS", API_TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).expect("server log file"))
        .spawn()
        .expect("server binary starts")
}

/// Waits until `/healthz` answers 200; on failure the panic shows the server's log (written
/// next to its data directory by [`spawn`]).
pub(crate) async fn wait_up_logged(http: SocketAddr, dir: &Path) {
    let up = async {
        loop {
            let r = super::try_http(http, "GET", "/healthz", None, "", Duration::from_secs(1));
            if r.await.is_some_and(|(s, _, _)| s == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(WAIT * 3, up).await.is_err() {
        let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
        panic!("server on {http} did not come up; its log:\n{log}");
    }
}

/// Waits until `/healthz` answers 200.
pub(crate) async fn wait_up(http: SocketAddr) {
    let start = Instant::now();
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(http).await {
            drop(s);
            let (status, _) = super::http(http, "GET", "/healthz", None, "").await;
            if status == 200 {
                return;
            }
        }
        assert!(start.elapsed() < WAIT, "server came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
