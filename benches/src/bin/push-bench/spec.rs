//! What a coordinator tells a worker process, and what the worker reports back (JSON lines).

use serde::{Deserialize, Serialize};

/// What one worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// Server's binary-protocol address.
    pub addr: String,
    /// JWT secret for minting tokens.
    pub secret: String,
    /// User ids are `{user_prefix}{index}`.
    pub user_prefix: String,
    /// First index of this worker's users.
    pub first: usize,
    /// Connections this worker opens.
    pub count: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Role.
    pub mode: Mode,
    /// TLS: the certificate name to verify and the CA PEM to trust.
    pub tls: Option<(String, String)>,
    /// Address to connect from (its own ephemeral ports).
    #[serde(default)]
    pub source_ip: Option<std::net::IpAddr>,
    /// The server's kind: this project's, or a peer (MQTT, NATS) for comparison rows.
    #[serde(default)]
    pub peer: crate::peer::Peer,
}

/// The worker's role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// Hold connections, answer heartbeats.
    Idle {
        /// Room each connection joins, if any.
        room: Option<String>,
    },
    /// Hostile connections (`push-bench hostile`).
    Hostile {
        /// What they do.
        kind: crate::hostile_worker::Kind,
        /// Garbage connections per second.
        rate: f64,
        /// Room the never-reading members join.
        room: String,
    },
    /// Like `Receive`, over WebSocket (binary mode, token in the query).
    ReceiveWs {
        /// Room to join, if any.
        room: Option<String>,
        /// JSON text mode instead of binary.
        #[serde(default)]
        json: bool,
    },
    /// Hold WebSocket connections (binary mode, token in the query), answer heartbeats.
    IdleWs {
        /// Room each connection joins, if any.
        room: Option<String>,
    },
    /// Like `Receive`, through the SDK's reconnecting client: a connection whose node dies
    /// comes back (to another node), resumes and deduplicates; reconnects are counted.
    ReceiveResilient {
        /// Room to join, if any.
        room: Option<String>,
    },
    /// Hold connections, optionally join a room, record latency of every PUSH.
    Receive {
        /// Room to join, if any.
        room: Option<String>,
    },
    /// Connect, authenticate (and with `rooms`, join and leave a room) and disconnect at
    /// `rate` per second for `seconds`.
    Churn {
        /// Connections per second from this worker.
        rate: f64,
        /// Duration.
        seconds: f64,
        /// Join and leave a room in each cycle.
        #[serde(default)]
        rooms: bool,
    },
}

/// A line a worker prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event")]
pub(crate) enum Event {
    /// All connections attempted; `ok` are authenticated (and joined).
    Ready {
        /// Authenticated connections.
        ok: usize,
        /// Failed attempts.
        failed: usize,
        /// Time to open them all.
        elapsed_ms: u64,
        /// First failure reason, if any.
        error: Option<String>,
    },
    /// Periodic progress while receiving.
    Progress {
        /// Messages received so far.
        received: u64,
    },
    /// Reconnects of resilient receivers, sent just before `Done`.
    Reconnects {
        /// Sessions established after the first, all connections together.
        count: u64,
        /// GAP notices (history no longer available).
        gaps: u64,
        /// When the last reconnect happened (µs since the Unix epoch; 0 = none).
        last_us: u64,
    },
    /// Final figures.
    Done {
        /// Messages received.
        received: u64,
        /// Messages whose position was not above the last one seen on that connection.
        duplicates: u64,
        /// Connections that ended early.
        lost_connections: u64,
        /// Churn: successful connect+auth+close cycles.
        cycles_ok: u64,
        /// Churn: failed cycles.
        cycles_failed: u64,
        /// Latency histogram in microseconds: `[value, count]` pairs.
        hist: Vec<(u64, u64)>,
        /// First error seen, if any.
        error: Option<String>,
    },
}

/// Microseconds since the Unix epoch (the clock publishers and receivers share on one machine).
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A day-long token for user `sub`, signed with the server's JWT secret.
pub(crate) fn bench_token(secret: &str, sub: String) -> String {
    push_client::token::mint(
        secret.as_bytes(),
        &push_client::token::Claims {
            sub,
            exp: unix_micros() / 1_000_000 + 24 * 3600,
            device: None,
            rooms: Vec::new(),
        },
    )
}

/// A payload of `size` bytes starting with the send time: `<micros>|xxxx...`.
pub(crate) fn stamped_payload(size: usize) -> String {
    let mut s = format!("{}|", unix_micros());
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Reads the send time back out of a stamped payload.
pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    let end = payload.iter().position(|&b| b == b'|')?;
    std::str::from_utf8(&payload[..end]).ok()?.parse().ok()
}
