//! Process-wide counters and gauges: plain atomics on the hot path, exported by `metrics` on
//! each scrape and read by /healthz and the tests.

use std::sync::atomic::{AtomicU64, Ordering};

use push_protocol::ErrorCode;

mod histogram;
mod summary;

pub use histogram::{Histogram, BUCKETS};
pub use summary::{quantile, NodeStats};

/// Delivery scenarios, the label of per-scenario metrics.
pub const SCENARIOS: [&str; 3] = ["user", "room", "broadcast"];

/// Transports, the label of `push_connections`: raw TCP (with or without TLS), WebSocket (both
/// modes), long-poll requests waiting. Sessions index it with `usize::from(is_ws)`.
pub const TRANSPORTS: [&str; 3] = ["tcp", "websocket", "long_poll"];

/// One counter per error code of `ErrorCode::ALL`.
#[derive(Debug)]
pub struct CodeCounters([AtomicU64; ErrorCode::ALL.len()]);

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// Monotonic counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sockets accepted: TCP connections and WebSocket upgrades.
    pub accepted: AtomicU64,
    /// WebSocket upgrades admitted (also counted in `accepted`).
    pub ws_upgrades: AtomicU64,
    /// Long-poll requests that registered (SPEC.md §13).
    pub long_polls: AtomicU64,
    /// Handshakes that ended in AUTH_OK.
    pub handshakes_ok: AtomicU64,
    /// Handshakes refused or abandoned.
    pub handshakes_failed: AtomicU64,
    /// TLS handshakes completed, on every listener: full, and resumed with a ticket.
    pub tls_handshakes: [AtomicU64; 2],
    /// Connections refused at accept because of the global limit.
    pub refused_limit: AtomicU64,
    /// Messages accepted from publishers.
    pub messages_accepted: AtomicU64,
    /// Publishes answered from the idempotency cache.
    pub duplicates: AtomicU64,
    /// Frames queued to connections by fan-out.
    pub deliveries_queued: AtomicU64,
    /// Connections dropped as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Connections closed by the heartbeat timeout.
    pub heartbeat_timeouts: AtomicU64,
    /// Frames decoded from clients.
    pub frames_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Queued frames fully written to clients.
    pub frames_out: AtomicU64,
    /// Protocol errors that closed a connection.
    pub protocol_errors: AtomicU64,
    /// Group commits to storage.
    pub store_commits: AtomicU64,
    /// Total time spent in storage commits, µs.
    pub store_commit_micros: AtomicU64,
    /// Failed storage commits.
    pub store_errors: AtomicU64,
    /// True from a failed commit until the next successful one (disk full, I/O error).
    pub storage_failing: std::sync::atomic::AtomicBool,
    /// Messages resent to online users that had not acknowledged them.
    pub retries: AtomicU64,
    /// Users whose unacknowledged messages were marked failed after the last retry.
    pub messages_failed: AtomicU64,
    /// Compaction steps that deleted records.
    pub compactions: AtomicU64,
    /// Handshakes that ended because the peer went away.
    pub handshakes_abandoned: AtomicU64,
    /// Handshake refusals, indexed like `ErrorCode::ALL`.
    pub handshake_refusals: CodeCounters,
    /// The message tracer, when `[tracing]` is configured.
    pub tracer: Option<std::sync::Arc<crate::trace::Tracer>>,
    /// Authenticated connections open, by transport (index into `TRANSPORTS`).
    pub connections: [AtomicU64; 3],
    /// Messages accepted per scenario (index into `SCENARIOS`).
    pub accepted_by: [AtomicU64; 3],
    /// Publishes refused per scenario.
    pub failed_by: [AtomicU64; 3],
    /// Frames queued per scenario.
    pub queued_by: [AtomicU64; 3],
    /// Transient messages published (not stored), per scenario.
    pub transient_by: [AtomicU64; 3],
    /// Commit-to-queued latency per scenario.
    pub fanout_latency: [Histogram; 3],
    /// Acceptance to the frame being written to the socket, per scenario.
    pub write_latency: [Histogram; 3],
    /// Time from a publish reaching the storage engine to its commit.
    pub publish_latency: Histogram,
    /// Duration of group commits.
    pub commit_latency: Histogram,
    /// Acceptance to client acknowledgement of user messages (sampled: the oldest unacked
    /// live message per user).
    pub ack_latency: Histogram,
    /// Requests the delivery engine found waiting when it last took a batch (a gauge).
    pub engine_queued: AtomicU64,
    /// Most requests the delivery engine ever found waiting at once (capped by its batch
    /// size, 4,096).
    pub engine_queued_max: AtomicU64,
    /// Times a connection's reader paused because its requests filled its in-flight limit.
    pub paused_for_engine: AtomicU64,
    /// Times a connection's reader paused because it exceeded a frame-rate limit.
    pub paused_for_rate: AtomicU64,
    /// Connections closed with RATE_LIMITED after staying over a rate limit.
    pub rate_limited_closes: AtomicU64,
    /// Connections closed through the API.
    pub kicked: AtomicU64,
    /// API requests refused by a key's rate limit.
    pub rate_limited_api: AtomicU64,
    /// Connections refused because their address failed too many handshakes.
    pub rate_limited_handshake: AtomicU64,
    /// Queue messages accepted.
    pub ingest_accepted: AtomicU64,
    /// Queue messages that repeated an accepted id.
    pub ingest_duplicates: AtomicU64,
    /// Queue messages sent to the dead-letter exchange.
    pub ingest_dead_lettered: AtomicU64,
    /// Queue messages requeued after a temporary failure.
    pub ingest_requeued: AtomicU64,
    /// Times the broker connection was lost or could not be made.
    pub broker_disconnects: AtomicU64,
}

impl Stats {
    /// Adds one.
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a completed TLS handshake by its kind.
    pub fn tls_handshake(&self, kind: Option<rustls::HandshakeKind>) {
        let resumed = matches!(kind, Some(rustls::HandshakeKind::Resumed));
        self.inc(&self.tls_handshakes[usize::from(resumed)]);
    }

    /// Adds `n`.
    pub fn add(&self, c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Counts a refused handshake by its code.
    pub fn handshake_refused(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            if let Some(slot) = self.handshake_refusals.0.get(i) {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Non-zero handshake refusals by code.
    pub fn handshake_failures(&self) -> Vec<(ErrorCode, u64)> {
        ErrorCode::ALL
            .iter()
            .zip(self.handshake_refusals.0.iter())
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_refusal_counter() {
        let s = Stats::default();
        for code in ErrorCode::ALL {
            s.handshake_refused(*code);
        }
        let counted = s.handshake_failures();
        assert_eq!(counted.len(), ErrorCode::ALL.len());
        assert!(counted.iter().all(|(_, n)| *n == 1));
    }
}
