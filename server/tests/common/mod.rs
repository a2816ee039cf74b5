//! Helpers shared by the integration tests: a real server on ephemeral ports, tokens, clients
//! and a minimal HTTP/1.1 client.

#![allow(dead_code)]

pub(crate) mod amqp;
pub(crate) mod process;
pub(crate) mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use push_client::protocol::{Frame, Stream, StreamPos};
use push_client::token::{mint, Claims};
use push_client::{ClientError, ConnectOptions, Connection};
use push_server::clock::ManualClock;
use push_server::{Config, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const SECRET: &str = "integration-test-secret-0123456789";
pub(crate) const API_TOKEN: &str = "integration-api-token";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A fresh data directory per server, under the system temp dir.
pub(crate) fn data_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("push-test-{}-{n}-{nanos}", std::process::id()))
}

pub(crate) fn config() -> Config {
    Config {
        data_dir: data_dir(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        jwt_secret: SECRET.into(),
        api_tokens: vec![API_TOKEN.into()],
        shutdown_drain_ms: 2000,
        ..Config::default()
    }
}

pub(crate) async fn start(config: Config) -> ServerHandle {
    push_server::start(config).await.expect("server starts")
}

/// A server whose delivery engine takes its time from a manual clock (see [`pass`]).
pub(crate) async fn start_clocked(config: Config) -> (ServerHandle, std::sync::Arc<ManualClock>) {
    let clock = std::sync::Arc::new(ManualClock::new());
    let server = push_server::start_with_clock(config, clock.clone())
        .await
        .expect("server starts");
    (server, clock)
}

/// Moves the server's clock forward by `by`, then runs the housekeeping due by then
/// (retries, expiry, compaction) and waits until it is committed.
pub(crate) async fn pass(server: &ServerHandle, clock: &ManualClock, by: Duration) {
    clock.advance(by);
    server
        .ctx
        .delivery
        .housekeeping()
        .await
        .expect("engine running");
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn token(user: &str) -> String {
    mint(
        SECRET.as_bytes(),
        &Claims {
            sub: user.into(),
            exp: now_secs() + 3600,
            device: None,
            rooms: Vec::new(),
        },
    )
}

pub(crate) async fn connect(addr: SocketAddr, user: &str) -> Connection {
    try_connect(addr, &token(user)).await.expect("connects")
}

pub(crate) async fn try_connect(addr: SocketAddr, token: &str) -> Result<Connection, ClientError> {
    Connection::connect(
        addr,
        &ConnectOptions {
            token: token.into(),
            ..ConnectOptions::default()
        },
    )
    .await
}

/// Minimal HTTP/1.1 request; returns (status, body).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, auth, body).await;
    (status, body)
}

/// Minimal HTTP/1.1 request; returns (status, head, body).
pub(crate) async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    try_http(addr, method, path, auth, body, WAIT)
        .await
        .expect("HTTP response in time")
}

/// Minimal HTTP/1.1 request; `None` when the server cannot be reached or does not answer a
/// well-formed response within `timeout`.
pub(crate) async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = auth {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).to_string();
        let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((status, head, decode_chunked(&body)))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// Undoes chunked transfer encoding if the body looks chunked.
fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return body.to_string();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_string();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

pub(crate) async fn push(server: &ServerHandle, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(
        server.http_addr,
        "POST",
        "/api/v1/push",
        Some(API_TOKEN),
        body,
    )
    .await;
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, v)
}

/// A user's stream from the history API (`query` like `after=0&limit=10`, or empty).
pub(crate) async fn user_history(addr: SocketAddr, user: &str, query: &str) -> serde_json::Value {
    let path = format!("/api/v1/history/users/{user}?{query}");
    let (status, body) = http(addr, "GET", &path, Some(API_TOKEN), "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls an async condition until it is true or the wait runs out.
pub(crate) async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `f` until it is true or the wait runs out.
pub(crate) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A connected, authenticated client that stays quiet and must keep receiving.
pub(crate) async fn bystander(server: &ServerHandle) -> Connection {
    connect(server.tcp_addr, "bystander").await
}

/// Pushes one message to the bystander and checks it arrives (heartbeats answered meanwhile).
pub(crate) async fn still_served(server: &ServerHandle, b: &mut Connection, n: u64) {
    let body = serde_json::json!({"to": {"users": ["bystander"]}, "kind": "k", "payload": format!("m{n}")});
    let (status, _) = push(server, &body.to_string()).await;
    assert_eq!(status, 200);
    loop {
        let p = b
            .next_timeout(WAIT)
            .await
            .expect("the bystander is still served");
        if let Frame::Push(push) = p.frame {
            assert_eq!(push.position, n);
            b.send(Frame::Ack(vec![StreamPos {
                stream: Stream::User,
                position: n,
            }]))
            .await
            .unwrap();
            return;
        }
    }
}
