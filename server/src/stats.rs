//! Process-wide counters (exported as Prometheus metrics later; read by tests and /healthz now).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Handshakes that ended in AUTH_OK.
    pub handshakes_ok: AtomicU64,
    /// Handshakes refused or abandoned.
    pub handshakes_failed: AtomicU64,
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
    /// Protocol errors that closed a connection.
    pub protocol_errors: AtomicU64,
    /// Group commits to storage.
    pub store_commits: AtomicU64,
    /// Total time spent in storage commits, µs.
    pub store_commit_micros: AtomicU64,
    /// Failed storage commits.
    pub store_errors: AtomicU64,
    /// Messages resent to online users that had not acknowledged them.
    pub retries: AtomicU64,
    /// Users whose unacknowledged messages were marked failed after the last retry.
    pub messages_failed: AtomicU64,
    /// Compaction steps that deleted records.
    pub compactions: AtomicU64,
}

impl Stats {
    /// Adds one.
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
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
}
