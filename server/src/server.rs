//! Server lifecycle: bind, run the listeners and the heartbeat sweep, shut down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use push_protocol::{encode_to_bytes, ErrorCode, Frame, Packet};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::context::Ctx;
use crate::http::listener;
use crate::hub::CloseOrder;
use crate::{api, transport};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage or the token keys could not be opened.
    #[error(transparent)]
    Ctx(#[from] crate::context::CtxError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Cluster mode: NATS cannot be reached or the streams cannot be set up.
    #[error("cluster: {0}")]
    Cluster(crate::delivery::DeliveryError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running server.
pub struct ServerHandle {
    /// Bound address of the binary-protocol listener.
    pub tcp_addr: SocketAddr,
    /// Bound address of the HTTP API.
    pub http_addr: SocketAddr,
    /// Bound address of the WebSocket listener of its own, when configured.
    pub ws_addr: Option<SocketAddr>,
    /// Shared state (hub, stats) for inspection.
    pub ctx: Arc<Ctx>,
    done: JoinHandle<()>,
}

impl ServerHandle {
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.ctx.shutdown.cancel();
    }

    /// Waits until shutdown has completed.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Pending connections the kernel queues per listener before `accept` takes them.
const BACKLOG: u32 = 1024;

async fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    if !reuse_port {
        return TcpListener::bind(addr).await.map_err(err);
    }
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

/// A node's name when none is configured: the host name and the binary-protocol port, which
/// tell apart several nodes on one machine too.
fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{port}")
}

/// Binds the listeners and starts serving.
pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
    start_with_clock(config, Arc::new(crate::clock::SystemClock)).await
}

/// Like [`start`], with the delivery engine's time taken from `clock` (tests pass a
/// [`crate::clock::ManualClock`] to move time themselves).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<ServerHandle, StartError> {
    config.validate()?;
    let tls = config.tls.as_ref().map(|t| t.load()).transpose()?;
    let tcp = bind(config.listen, config.reuse_port).await?;
    let http = bind(config.http_listen, config.reuse_port).await?;
    let tcp_addr = tcp.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| StartError::Bind {
        addr: config.http_listen,
        source,
    })?;
    let ws = match config.ws_listen {
        Some(addr) => {
            let l = bind(addr, config.reuse_port).await?;
            let bound = l
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            Some((l, bound))
        }
        None => None,
    };
    let ws_addr = ws.as_ref().map(|(_, a)| *a);
    let mut config = config;
    let node_name = config
        .cluster
        .as_ref()
        .and_then(|c| c.node_name.clone())
        .unwrap_or_else(|| default_node_name(tcp_addr.port()));
    if let Some(t) = config.tracing.as_mut() {
        t.instance.get_or_insert_with(|| node_name.clone());
    }
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| crate::cluster::ClusterSettings {
            node: node_name,
            urls: c.nats_urls.clone(),
            prefix: c.prefix.clone(),
            replicas: c.replicas,
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            user_max_pending: config.user_max_pending,
            idempotency_window: Duration::from_millis(config.idempotency_window_ms),
            replay_chunk: config.replay_limit.min(config.queue_max_frames / 2).max(1),
            room_retention_count: config.room_retention_count,
            room_retention: Duration::from_millis(config.room_retention_ms),
            max_inflight_batches: c.max_inflight_batches,
            tail_check: Duration::from_millis(c.tail_check_ms),
            retry_interval: Duration::from_millis(config.retry_interval_ms),
            max_retries: config.max_retries,
            new_epoch: config.new_epoch,
        });
    let ctx = Ctx::build(config, tls, clock.clone())?;
    if let Some(settings) = cluster {
        ctx.delivery
            .connect_cluster(settings, clock)
            .await
            .map_err(StartError::Cluster)?;
    }
    tokio::spawn(transport::tcp::accept_loop(tcp, ctx.clone()));
    tokio::spawn(heartbeat(ctx.clone()));
    let mut app = api::router(ctx.clone());
    if ctx.config.ws_on_http {
        app = app.merge(transport::ws::router(ctx.clone()));
    }
    let mut api = vec![tokio::spawn(listener::serve(
        http,
        ctx.clone(),
        app,
        "http api",
    ))];
    if let Some((l, _)) = ws {
        let app = transport::ws::router(ctx.clone());
        api.push(tokio::spawn(listener::serve(
            l,
            ctx.clone(),
            app,
            "websocket",
        )));
    }
    if let Some(amqp) = ctx.config.amqp.clone() {
        tokio::spawn(crate::ingest::run(ctx.clone(), amqp));
    }
    tracing::info!(%tcp_addr, %http_addr, ws = ?ws_addr, ws_on_http = ctx.config.ws_on_http, "push server listening");
    let done = tokio::spawn(supervise(ctx.clone(), api));
    Ok(ServerHandle {
        tcp_addr,
        http_addr,
        ws_addr,
        ctx,
        done,
    })
}

/// A reconnect hint spread uniformly over [hint/2, 3*hint/2).
fn jittered(hint: u32) -> u32 {
    let span = u64::from(hint).max(1);
    let offset = crate::delivery::ids::random_u64() % span;
    (u64::from(hint / 2) + offset).min(u64::from(u32::MAX)) as u32
}

/// Waits for shutdown, then closes every connection with a reconnect hint and drains.
async fn supervise(ctx: Arc<Ctx>, api: Vec<JoinHandle<()>>) {
    ctx.shutdown.cancelled().await;
    let open = ctx.hub.connection_count();
    tracing::info!(connections = open, "shutting down: closing connections");
    // Each connection gets its own hint, spread over [hint/2, 3*hint/2), so the clients of a
    // node that restarts (or of a node that died, reconnecting to the others) do not all come
    // back in the same millisecond.
    let hint = ctx.config.reconnect_hint_ms;
    ctx.hub.close_each(|| {
        CloseOrder::new(
            ErrorCode::SHUTTING_DOWN,
            Some(jittered(hint)),
            "server shutting down",
        )
    });
    let drain = Duration::from_millis(ctx.config.shutdown_drain_ms);
    let deadline = tokio::time::Instant::now() + drain;
    while ctx.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let remaining = ctx.open.load(Ordering::Relaxed);
    if remaining > 0 {
        tracing::warn!(remaining, "drain period over, abandoning connections");
    }
    for task in api {
        let _ = task.await;
    }
    ctx.delivery.shutdown().await;
    if let Some(tracer) = ctx.stats.tracer.clone() {
        // Blocks until the last spans are sent, which needs this runtime's workers.
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }
    tracing::info!("shutdown complete");
}

/// One shared sweep pings every connection and closes the silent ones, so connections need no
/// timers of their own.
async fn heartbeat(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.config.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let timeout_order = CloseOrder::new(
        ErrorCode::HEARTBEAT_TIMEOUT,
        Some(ctx.config.reconnect_hint_ms),
        "no frame received within the heartbeat timeout",
    );
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ping = encode_to_bytes(
            &Packet::new(ctx.delivery.next_seq(), Frame::Ping),
            &Default::default(),
        )
        .expect("PING encodes");
        let deadline = ctx
            .hub
            .now_ms()
            .saturating_sub(ctx.config.heartbeat_timeout_ms);
        let (pinged, dead) = ctx.hub.sweep(&ping, deadline, &timeout_order);
        if dead > 0 {
            tracing::info!(
                pinged,
                timed_out = dead,
                "heartbeat sweep closed silent connections"
            );
        }
    }
}
