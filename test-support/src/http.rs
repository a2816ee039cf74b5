//! A small HTTP/1.1 client over hyper for the API tests: one connection per request.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::WAIT;

/// One request; returns (status, body). Panics when no answer comes within [`WAIT`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, auth, body).await;
    (status, body)
}

/// One request; returns (status, head, body), the head as `HTTP/1.1 <status>` and one
/// `name: value` line per header. Panics when no answer comes within [`WAIT`].
pub async fn http_full(
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

/// One request with extra headers; returns (status, body). Panics when no answer comes
/// within [`WAIT`].
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, auth, headers, body, WAIT)
        .await
        .expect("HTTP response in time");
    (status, body)
}

/// One request; `None` when the server cannot be reached or does not answer a well-formed
/// response within `timeout`.
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    exchange(addr, method, path, auth, &[], body, timeout).await
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = auth {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let mut head = format!("HTTP/1.1 {}", resp.status());
        for (name, value) in resp.headers() {
            head.push_str(&format!("\r\n{name}: {}", value.to_str().unwrap_or("")));
        }
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, head, String::from_utf8_lossy(&bytes).to_string()))
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}
