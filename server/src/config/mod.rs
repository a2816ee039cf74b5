//! Server configuration: embedded defaults, then a TOML file, then `PUSH_*` environment variables,
//! then command-line flags (each layer overrides the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod layers;
mod tracing;
mod validate;
pub use layers::{all_keys, load, ENV_PREFIX};
pub use tracing::{OtlpProtocol, TracingConfig};

/// A public key for verifying client tokens (`[[jwt_public_keys]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPublicKey {
    /// The one algorithm this key verifies: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384 or EdDSA.
    pub alg: String,
    /// PEM file with the public key (RSA, EC or Ed25519; SubjectPublicKeyInfo or PKCS#1).
    pub pem_file: PathBuf,
    /// Key id: when set, only tokens whose header names this `kid` (or none) use the key.
    #[serde(default)]
    pub kid: Option<String>,
}

/// The JWT secret used when none is configured; the server warns loudly when it is in use.
pub const DEV_JWT_SECRET: &str = "dev-secret-change-me";
/// The API token used when none is configured; the server warns loudly when it is in use.
pub const DEV_API_TOKEN: &str = "dev-api-token";

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Push to users.
    Users,
    /// Push to rooms.
    Rooms,
    /// Push to everyone.
    Broadcast,
    /// Read presence, rooms, history.
    Read,
    /// Disconnect users, change room membership.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::Users,
        Scope::Rooms,
        Scope::Broadcast,
        Scope::Read,
        Scope::Admin,
    ];
}

fn all_scopes() -> Vec<Scope> {
    Scope::ALL.to_vec()
}

fn default_key_rate() -> f64 {
    50_000.0
}

fn default_key_burst() -> f64 {
    100_000.0
}

/// A named API key for one calling service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Name for logs and metrics (e.g. the calling service).
    pub name: String,
    /// Bearer token.
    pub token: String,
    /// What it may do (default: everything).
    #[serde(default = "all_scopes")]
    pub scopes: Vec<Scope>,
    /// Requests per second (token bucket rate).
    #[serde(default = "default_key_rate")]
    pub rate_per_sec: f64,
    /// Burst size (token bucket capacity).
    #[serde(default = "default_key_burst")]
    pub burst: f64,
    /// Source addresses the key may be used from (CIDRs such as `10.0.0.0/8` or
    /// `2001:db8::/32`, or single addresses); empty = anywhere.
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
}

impl ApiKey {
    /// True when a request from `ip` may use this key.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_from.is_empty() || self.allow_from.iter().any(|n| n.contains(&ip))
    }
}

fn default_amqp_queue() -> String {
    "push.messages".into()
}
fn default_amqp_dlx() -> String {
    "push.dlx".into()
}
fn default_amqp_dlq() -> String {
    "push.messages.dead".into()
}
fn default_prefetch() -> u16 {
    256
}
fn default_amqp_concurrency() -> usize {
    32
}

fn default_cluster_prefix() -> String {
    "push".into()
}
fn default_replicas() -> usize {
    3
}
fn default_cluster_timeout_ms() -> u64 {
    2000
}
fn default_inflight_batches() -> usize {
    16
}
fn default_tail_check_ms() -> u64 {
    300_000
}

/// Cluster mode (CLUSTER.md): this server is one node of a cluster whose state lives in NATS
/// JetStream. User streams (with retries and the failed state), rooms, broadcast, history and
/// the admin API work across nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs; give several so a node finds the cluster while one is down.
    pub nats_urls: Vec<String>,
    /// This node's name in logs, in its NATS connection and in presence answers (default:
    /// the host name and the binary-protocol port, e.g. `box-3:7100`).
    #[serde(default)]
    pub node_name: Option<String>,
    /// Prefix of the streams and subjects, so several deployments can share one NATS.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// Replicas of each stream: 1, 3 or 5 (3 keeps a majority through one lost server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long one JetStream request may take before it is retried (and, after several
    /// attempts, the publish refused with 503), in ms.
    #[serde(default = "default_cluster_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Atomic batches (publishes) this node has in flight at once. JetStream allows 50 per
    /// stream for all nodes together: keep nodes x this under 50.
    #[serde(default = "default_inflight_batches")]
    pub max_inflight_batches: usize,
    /// How often each user's actor compares what it delivered with the stored tail, in ms
    /// (a safety net: a reconnect to NATS, a dropped live message or a new stream leader
    /// triggers the check at once; each check is one read per connected user, so 100,000
    /// users at 30 s would be 3,333 reads/s).
    #[serde(default = "default_tail_check_ms")]
    pub tail_check_ms: u64,
}

/// RabbitMQ (AMQP 0-9-1) ingestion: messages in the push API's JSON schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Queue consumed (declared durable if missing).
    #[serde(default = "default_amqp_queue")]
    pub queue: String,
    /// Dead-letter exchange for messages that can never be valid.
    #[serde(default = "default_amqp_dlx")]
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange.
    #[serde(default = "default_amqp_dlq")]
    pub dead_letter_queue: String,
    /// Unacknowledged deliveries the broker may send ahead.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Deliveries processed at once (1 keeps the queue's order exactly).
    #[serde(default = "default_amqp_concurrency")]
    pub concurrency: usize,
}

/// Everything the server can be told. Field docs double as the reference in `push-server.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the binary-protocol TCP listener.
    pub listen: SocketAddr,
    /// Address of the HTTP API listener.
    pub http_listen: SocketAddr,
    /// Directory for persistent data.
    pub data_dir: PathBuf,
    /// HS256 secret that signs client JWTs (empty = no HS256, with public keys configured).
    pub jwt_secret: String,
    /// Public keys for client JWTs signed elsewhere (RS256, ES256, EdDSA, ...), one
    /// algorithm per key.
    pub jwt_public_keys: Vec<JwtPublicKey>,
    /// JWKS file (`{"keys":[...]}`) with more public keys; every key must name its `alg`.
    pub jwt_jwks_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub jwt_leeway_sec: u64,
    /// Required `iss` of client JWTs; absent = not checked.
    pub jwt_issuer: Option<String>,
    /// Required `aud` of client JWTs; absent = not checked.
    pub jwt_audience: Option<String>,
    /// Bearer tokens accepted by the HTTP API with every scope (simple setups).
    pub api_tokens: Vec<String>,
    /// Named API keys with scopes and rate limits (one per calling service).
    pub api_keys: Vec<ApiKey>,
    /// Connection attempts per second allowed from one source address (0 = unlimited).
    pub connect_rate_per_ip: f64,
    /// Burst of connection attempts per source address.
    pub connect_burst_per_ip: f64,
    /// Failed handshakes per second tolerated from one address before it is refused.
    pub failed_handshake_rate_per_ip: f64,
    /// Burst of failed handshakes per address.
    pub failed_handshake_burst_per_ip: f64,
    /// Time allowed between accept and a valid HELLO, in ms.
    pub handshake_timeout_ms: u64,
    /// Interval between server PINGs, in ms.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a connection is closed, in ms.
    pub heartbeat_timeout_ms: u64,
    /// Most connections the server holds at once (above it: TOO_MANY_CONNECTIONS); lowered at
    /// start, with a warning, to the open-file limit minus 1,000.
    pub max_connections: usize,
    /// Most connections one user may hold (devices).
    pub max_connections_per_user: usize,
    /// Most rooms one connection may join.
    pub max_rooms_per_connection: usize,
    /// Largest wire frame accepted (Length field), in bytes.
    pub max_frame_len: u32,
    /// Largest reassembled/decompressed message accepted, in bytes; also the most bytes a
    /// connection may hold in reassembly, all its fragmented messages together.
    pub max_message_len: usize,
    /// Time a fragmented message may take from its first to its last fragment, in ms.
    pub reassembly_timeout_ms: u64,
    /// Refuse binary frames without a crc32 trailer, HELLO included (`CHECKSUM_REQUIRED`,
    /// SPEC.md §8.1): for paths that corrupt bytes TCP does not catch. JSON mode has none.
    pub require_checksum: bool,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub queue_max_frames: usize,
    /// Bytes queued for one connection before it counts as a slow consumer.
    pub queue_max_bytes: usize,
    /// Requests of one connection (ACK, JOIN, PUBLISH) waiting for the delivery engine; at
    /// this many the server stops reading the connection until the engine has caught up.
    pub max_requests_in_flight: u32,
    /// Frames one connection may send per second (0 = unlimited, at most 65535), a tenth of
    /// it per 100 ms slice; beyond it the server stops reading the connection until the slice
    /// ends.
    pub max_frames_per_sec: u32,
    /// JOIN and LEAVE frames one connection may send per second (0 = unlimited, at most 2540),
    /// a tenth of it per 100 ms slice; beyond it the connection is paused like
    /// `max_frames_per_sec`.
    pub max_room_ops_per_sec: u32,
    /// PUBLISH frames one connection may send per second (0 = unlimited, at most 655340), a
    /// tenth of it per 100 ms slice; beyond it the connection is paused like
    /// `max_frames_per_sec`. Each PUBLISH is a durable write.
    pub max_publishes_per_sec: u32,
    /// Consecutive seconds (1 to 15) in which a connection goes over a rate limit before it is
    /// closed with RATE_LIMITED.
    pub rate_limit_close_after_sec: u8,
    /// Whether clients may PUBLISH to rooms they have joined.
    pub allow_client_publish: bool,
    /// Room name prefixes that clients may JOIN only when their token grants the room (claim
    /// `rooms`: names or prefixes ending in `*`); other rooms are open. Empty = all open.
    pub restricted_room_prefixes: Vec<String>,
    /// Largest JSON body accepted by the HTTP API, in bytes.
    pub max_api_body: usize,
    /// HTTP connections held at once per HTTP listener (503 above it); WebSocket sessions
    /// count against `max_connections` instead once upgraded.
    pub max_http_connections: usize,
    /// Time given to connections to flush their CLOSE frames on shutdown, in ms.
    pub shutdown_drain_ms: u64,
    /// Reconnect hint sent in CLOSE on shutdown, in ms (each connection gets its own, spread
    /// over [hint/2, 3*hint/2)).
    pub reconnect_hint_ms: u32,
    /// Compress outgoing bodies of at least this many bytes (0 disables compression).
    pub compress_min: usize,
    /// Storage backend: `sled` or `redb`.
    pub store: crate::store::Backend,
    /// Start a new epoch at startup (SPEC.md §5.2): set it for the one start after restoring
    /// the data directory from a backup, so clients that saw positions of the lost timeline
    /// are told (GAP) instead of having them taken as acknowledgements.
    pub new_epoch: bool,
    /// Room and broadcast history kept per stream (count).
    pub room_retention_count: u64,
    /// Room and broadcast history kept per stream (age, ms).
    pub room_retention_ms: u64,
    /// Unacknowledged messages kept per user; older ones are dropped (and reported as a GAP).
    pub user_max_pending: u64,
    /// First retry delay for unacknowledged messages to an online user, ms (doubles per retry).
    pub retry_interval_ms: u64,
    /// Retries before unacknowledged messages are marked failed (still replayed on reconnect).
    pub max_retries: u8,
    /// How long a publisher's idempotency id is remembered, ms.
    pub idempotency_window_ms: u64,
    /// Interval of the compaction pass (acked messages, expired history, old ids), ms.
    pub compaction_interval_ms: u64,
    /// Most messages queued per replay step (also capped at half of `queue_max_frames`). A
    /// user's larger backlog follows step by step as the connection drains its queue; a room
    /// or broadcast resume replays one step and reports anything older with a GAP.
    pub replay_limit: usize,
    /// Publishes waiting for the storage engine before new ones are refused with 503.
    pub max_pending_publishes: usize,
    /// Time the storage engine waits for more messages before a group commit, µs.
    pub commit_linger_us: u64,
    /// Serve the WebSocket shim at `GET /ws` on the HTTP listener.
    pub ws_on_http: bool,
    /// A listener of its own for the WebSocket shim (`GET /ws`); absent = none.
    pub ws_listen: Option<SocketAddr>,
    /// Bind every listener with SO_REUSEPORT, so several server processes on one machine
    /// share the same ports and the kernel spreads new connections across them.
    pub reuse_port: bool,
    /// Browser origins allowed to open WebSockets (exact `scheme://host:port`); empty = any.
    /// Requests without an Origin header (non-browser clients) are always allowed.
    pub ws_allowed_origins: Vec<String>,
    /// Largest WebSocket message (and frame) accepted from a client, in bytes.
    pub ws_max_message: usize,
    /// Longest a long-poll request waits for messages, in ms.
    pub poll_max_wait_ms: u64,
    /// RabbitMQ ingestion; absent = off.
    pub amqp: Option<AmqpConfig>,
    /// Cluster mode on NATS JetStream; absent = the embedded single node.
    pub cluster: Option<ClusterConfig>,
    /// TLS on every listener; absent = plain TCP and HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Message tracing over OTLP (`[tracing]`); off when absent.
    pub tracing: Option<TracingConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:7100".parse().expect("literal address"),
            http_listen: "0.0.0.0:7180".parse().expect("literal address"),
            data_dir: PathBuf::from("./data"),
            jwt_secret: DEV_JWT_SECRET.into(),
            jwt_public_keys: Vec::new(),
            jwt_jwks_file: None,
            jwt_leeway_sec: 30,
            jwt_issuer: None,
            jwt_audience: None,
            api_tokens: vec![DEV_API_TOKEN.into()],
            api_keys: Vec::new(),
            connect_rate_per_ip: 0.0,
            connect_burst_per_ip: 1000.0,
            failed_handshake_rate_per_ip: 20.0,
            failed_handshake_burst_per_ip: 200.0,
            handshake_timeout_ms: 10_000,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 90_000,
            max_connections: 100_000,
            max_connections_per_user: 16,
            max_rooms_per_connection: 64,
            max_frame_len: 64 * 1024,
            max_message_len: 1024 * 1024,
            reassembly_timeout_ms: 30_000,
            require_checksum: false,
            queue_max_frames: 4096,
            queue_max_bytes: 4 * 1024 * 1024,
            max_requests_in_flight: 256,
            max_frames_per_sec: 10_000,
            max_room_ops_per_sec: 20,
            max_publishes_per_sec: 1000,
            rate_limit_close_after_sec: 10,
            allow_client_publish: false,
            restricted_room_prefixes: Vec::new(),
            max_api_body: 1024 * 1024,
            max_http_connections: 4096,
            shutdown_drain_ms: 5_000,
            reconnect_hint_ms: 2_000,
            compress_min: 512,
            store: crate::store::Backend::Sled,
            new_epoch: false,
            room_retention_count: 1000,
            room_retention_ms: 24 * 3600 * 1000,
            user_max_pending: 10_000,
            retry_interval_ms: 10_000,
            max_retries: 5,
            idempotency_window_ms: 24 * 3600 * 1000,
            compaction_interval_ms: 10_000,
            replay_limit: 10_000,
            max_pending_publishes: 100_000,
            commit_linger_us: 0,
            ws_on_http: true,
            reuse_port: false,
            ws_listen: None,
            ws_allowed_origins: Vec::new(),
            ws_max_message: 1024 * 1024 + 64 * 1024,
            poll_max_wait_ms: 30_000,
            amqp: None,
            cluster: None,
            tls: None,
            tracing: None,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// The file or an environment variable does not fit the schema.
    #[error("invalid configuration{}: {source}", file.as_ref().map(|f| format!(" (file {}, or a PUSH_* environment variable)", f.display())).unwrap_or_else(|| " (a PUSH_* environment variable)".into()))]
    Layered {
        /// The file, when one was given.
        file: Option<PathBuf>,
        /// Cause, naming the key and where its value came from.
        source: Box<figment::Error>,
    },
    /// A value is out of its allowed range.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// Setting name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl Config {
    /// Reads a TOML file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\nmax_rooms_per_connection = 3").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_rooms_per_connection, 3);
        assert_eq!(c.heartbeat_interval_ms, 30_000);
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let c = Config {
            heartbeat_timeout_ms: 10,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("heartbeat_timeout_ms"), "{e}");
    }
}
