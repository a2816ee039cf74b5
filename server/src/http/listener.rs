//! The HTTP accept loop: HTTP/1.1 with upgrades (for `/ws`), the peer address in every
//! request, a deadline on request headers, and a graceful drain on shutdown.
//!
//! Our own loop rather than `axum::serve`: after a WebSocket upgrade the session task needs the
//! bare `TcpStream`, which hyper only hands back (`Upgraded::downcast`) when it served the
//! socket directly, not through hyper-util's auto-detecting wrapper.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::context::Ctx;

/// Refusals answered at once at most; more are closed without an answer.
const MAX_REFUSING: usize = 64;

/// Serves `app` on `listener` until shutdown, then waits for requests in flight.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Ctx>, app: Router, what: &'static str) {
    let tracker = TaskTracker::new();
    let header_timeout = ctx.config.handshake_timeout();
    // HTTP connections in flight on this listener (upgraded WebSockets leave it: they count
    // in ctx.open like TCP connections).
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max = ctx.config.max_http_connections;
    let refusing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(
                    "{what}: accept failed: {e}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = max, "{what}: HTTP connection refused: limit reached");
            // Answering costs a descriptor for up to a second; under a flood, just close. A TLS
            // listener closes too: a plaintext answer would only be a handshake error.
            if ctx.tls.is_none() && refusing.fetch_add(1, Ordering::Relaxed) < MAX_REFUSING {
                let refusing = refusing.clone();
                tokio::spawn(async move {
                    refuse(stream).await;
                    refusing.fetch_sub(1, Ordering::Relaxed);
                });
            } else if ctx.tls.is_none() {
                refusing.fetch_sub(1, Ordering::Relaxed);
            }
            continue;
        }
        let guard = OpenHttp(open.clone());
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = ctx.shutdown.clone();
        let tls = ctx.tls.clone();
        let stats = ctx.stats.clone();
        tracker.spawn(async move {
            let _guard = guard;
            let Some(tls) = tls else {
                return serve_conn(stream, peer, app, header_timeout, shutdown, what).await;
            };
            let accept = crate::session::TlsStream::accept(stream, tls);
            match tokio::time::timeout(header_timeout, accept).await {
                Ok(Ok(s)) => {
                    stats.tls_handshake(s.handshake_kind());
                    serve_conn(s, peer, app, header_timeout, shutdown, what).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, "{what}: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "{what}: TLS handshake timed out"),
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!("{what} listener stopped");
}

/// Answers 503 to a connection over the limit: reads what the request sent (closing with
/// unread bytes would reset the connection and lose the answer), writes the reason, closes.
/// Bounded to one second.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = r#"{"error":"too many HTTP connections (max_http_connections)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// One counted HTTP connection, released when its task ends.
struct OpenHttp(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenHttp {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or the server shuts down.
async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        hyper::service::Service::call(&svc, req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "{what}: connection ended: {e}");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
