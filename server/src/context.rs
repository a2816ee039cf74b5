//! State shared by every task of one running server.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use push_protocol::{EncodeOptions, ErrorCode, Limits};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::hub::{Framing, Hub, QueueLimits};
use crate::jwt::TokenVerifier;
use crate::stats::Stats;

/// Shared server state.
pub struct Ctx {
    /// Client token (JWT) keys and checks.
    pub tokens: TokenVerifier,
    /// Connection attempts per source address.
    pub connect_limiter: crate::ratelimit::AddressLimiter,
    /// Failed handshakes per source address.
    pub handshake_limiter: crate::ratelimit::AddressLimiter,
    /// Effective configuration.
    pub config: Config,
    /// Connection registry.
    pub hub: Arc<Hub>,
    /// Message acceptance and routing.
    pub delivery: Arc<Delivery>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Receive limits for the codec.
    pub limits: Limits,
    /// Sockets currently open, authenticated or not (the global connection limit).
    pub open: AtomicUsize,
    /// Source of connection ids.
    conn_ids: AtomicU64,
    /// Cancelled when the server begins shutting down.
    pub shutdown: CancellationToken,
    /// True while the message-queue consumer is connected (false when not configured).
    pub broker_up: std::sync::atomic::AtomicBool,
    /// TLS for every listener, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why the shared state cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CtxError {
    /// Storage cannot be opened.
    #[error("cannot open storage: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The client token keys cannot be loaded.
    #[error("client token keys: {0}")]
    Keys(#[from] crate::jwt::KeyError),
    /// Tracing is configured but cannot start.
    #[error("{0}")]
    Tracing(#[from] crate::trace::TraceError),
}

/// One admitted socket: counted in `Ctx::open` (the global connection limit) for exactly as
/// long as the permit lives, whichever way the connection ends. Derefs to the shared context.
pub struct Admission(Arc<Ctx>);

impl std::ops::Deref for Admission {
    type Target = Arc<Ctx>;

    fn deref(&self) -> &Arc<Ctx> {
        &self.0
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ctx {
    /// Builds the shared state from a validated config; opens storage. No TLS, system clock.
    pub fn new(config: Config) -> Result<Arc<Ctx>, CtxError> {
        Ctx::build(config, None, Arc::new(crate::clock::SystemClock))
    }

    /// Like `new`, with a loaded TLS configuration and the delivery engine's clock.
    pub fn build(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Arc<Ctx>, CtxError> {
        let mut config = config;
        config.max_connections = crate::fd_limit::cap_connections(config.max_connections);
        let tokens = TokenVerifier::from_config(&config)?;
        let tracer = match &config.tracing {
            Some(t) => Some(Arc::new(crate::trace::Tracer::start(t)?)),
            None => None,
        };
        let stats = Arc::new(Stats {
            tracer,
            ..Stats::default()
        });
        let slow = crate::hub::close_frame(
            ErrorCode::SLOW_CONSUMER,
            Some(config.reconnect_hint_ms),
            "outbound queue full: reading too slowly",
        );
        let options = EncodeOptions {
            compress_min: if config.compress_min == 0 {
                usize::MAX
            } else {
                config.compress_min
            },
            ..EncodeOptions::default()
        };
        let limits = Limits {
            max_frame_len: config.max_frame_len,
            max_message_len: config.max_message_len,
            max_decompressed_len: config.max_message_len,
            reassembly_timeout_ms: config.reassembly_timeout_ms,
            require_checksum: config.require_checksum,
            ..Limits::default()
        };
        let hub = Arc::new(Hub::new(
            QueueLimits {
                max_frames: config.queue_max_frames,
                max_bytes: config.queue_max_bytes,
            },
            config.max_connections_per_user,
            config.max_rooms_per_connection,
            slow,
            Framing { limits, options },
        ));
        let delivery = Arc::new(if config.cluster.is_some() {
            // Connected by `server::start` before anything is served.
            Delivery::for_cluster(&config, hub.clone(), stats.clone(), options)
        } else {
            Delivery::start(&config, hub.clone(), stats.clone(), options, clock)?
        });
        Ok(Arc::new(Ctx {
            tokens,
            connect_limiter: crate::ratelimit::AddressLimiter::new(
                config.connect_rate_per_ip,
                config.connect_burst_per_ip,
            ),
            handshake_limiter: crate::ratelimit::AddressLimiter::new(
                config.failed_handshake_rate_per_ip,
                config.failed_handshake_burst_per_ip,
            ),
            config,
            hub,
            delivery,
            stats,
            limits,
            open: AtomicUsize::new(0),
            conn_ids: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            broker_up: std::sync::atomic::AtomicBool::new(false),
            tls,
        }))
    }

    /// Admits a new socket from `peer` under the per-address and global limits (TCP and
    /// WebSocket alike): a permit that counts it in `open` until dropped, or why not.
    pub fn admit(
        self: &Arc<Self>,
        peer: std::net::SocketAddr,
    ) -> Result<Admission, (ErrorCode, String)> {
        self.stats.inc(&self.stats.accepted);
        let ip = peer.ip();
        if !self.handshake_limiter.has_budget(ip) || !self.connect_limiter.allow(ip) {
            self.stats.inc(&self.stats.rate_limited_handshake);
            tracing::warn!(%peer, "connection refused: too many attempts or failed handshakes from this address");
            let reason = "too many connection attempts or failed handshakes from your address";
            return Err((ErrorCode::RATE_LIMITED, reason.into()));
        }
        let max = self.config.max_connections;
        if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.stats.inc(&self.stats.refused_limit);
            tracing::warn!(%peer, limit = max, "connection refused: server is full");
            let reason = format!("server holds its maximum of {max} connections");
            return Err((ErrorCode::TOO_MANY_CONNECTIONS, reason));
        }
        Ok(Admission(self.clone()))
    }

    /// Counts a failed handshake against its source address.
    pub fn note_failed_handshake(&self, ip: std::net::IpAddr) {
        let _ = self.handshake_limiter.allow(ip);
    }

    /// The gauges `/metrics` reads outside the counters.
    pub fn gauges(&self) -> crate::metrics::Gauges {
        crate::metrics::Gauges {
            sockets_open: self.open.load(Ordering::Relaxed) as u64,
            rooms: self.hub.room_count() as u64,
            broker_up: self
                .config
                .amqp
                .as_ref()
                .map(|_| self.broker_up.load(Ordering::Relaxed)),
            user_actors: self.delivery.cluster().map(|c| c.actor_counts()),
            storage_bytes: self
                .delivery
                .cluster()
                .is_none()
                .then(|| crate::store::disk_bytes(&self.config.data_dir)),
        }
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.conn_ids.fetch_add(1, Ordering::Relaxed)
    }
}
