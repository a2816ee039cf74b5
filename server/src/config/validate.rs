//! The ranges a configuration must keep, checked once at startup with the setting named.

use super::{Config, ConfigError};

impl Config {
    /// Checks ranges that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError::Invalid { field, reason });
        let public_keys = !self.jwt_public_keys.is_empty() || self.jwt_jwks_file.is_some();
        if self.jwt_secret.len() < 16 && !(self.jwt_secret.is_empty() && public_keys) {
            return bad(
                "jwt_secret",
                "must be at least 16 bytes (or empty, with jwt_public_keys or jwt_jwks_file)",
            );
        }
        if self.jwt_leeway_sec > 600 {
            return bad("jwt_leeway_sec", "must be at most 600");
        }
        if self.heartbeat_interval_ms < 100 {
            return bad("heartbeat_interval_ms", "must be at least 100");
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return bad(
                "heartbeat_timeout_ms",
                "must be greater than heartbeat_interval_ms",
            );
        }
        if self.max_frame_len < 1024 {
            return bad("max_frame_len", "must be at least 1024");
        }
        if self.queue_max_frames == 0 || self.queue_max_bytes == 0 {
            return bad("queue_max_frames", "queue limits must be positive");
        }
        if self.retry_interval_ms < 10 || self.compaction_interval_ms < 10 {
            return bad(
                "retry_interval_ms",
                "retry and compaction intervals must be at least 10 ms",
            );
        }
        if self.replay_limit == 0 || self.room_retention_count == 0 {
            return bad(
                "replay_limit",
                "replay_limit and room_retention_count must be positive",
            );
        }
        if self.max_requests_in_flight == 0 || self.max_requests_in_flight > 1 << 20 {
            return bad("max_requests_in_flight", "must be between 1 and 1048576");
        }
        if self.rate_limit_close_after_sec == 0 || self.rate_limit_close_after_sec > 15 {
            return bad("rate_limit_close_after_sec", "must be between 1 and 15");
        }
        if self.max_frames_per_sec > 65_535 {
            return bad(
                "max_frames_per_sec",
                "must be at most 65535 (0 = unlimited)",
            );
        }
        // The per-slice counters saturate at 65535 and 255: a tenth of each limit stays below.
        if self.max_publishes_per_sec > 655_340 {
            return bad(
                "max_publishes_per_sec",
                "must be at most 655340 (0 = unlimited)",
            );
        }
        if self.max_room_ops_per_sec > 2540 {
            return bad(
                "max_room_ops_per_sec",
                "must be at most 2540 (0 = unlimited)",
            );
        }
        if self.ws_max_message < 1024 {
            return bad("ws_max_message", "must be at least 1024");
        }
        if self.poll_max_wait_ms > 300_000 {
            return bad("poll_max_wait_ms", "must be at most 300000 (5 minutes)");
        }
        if let Some(c) = &self.cluster {
            if c.nats_urls.is_empty() {
                return bad("cluster.nats_urls", "list at least one NATS server URL");
            }
            if !matches!(c.replicas, 1 | 3 | 5) {
                return bad("cluster.replicas", "must be 1, 3 or 5");
            }
            let token = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            if c.prefix.is_empty() || !c.prefix.bytes().all(token) {
                return bad("cluster.prefix", "must be letters, digits, _ or -");
            }
            if c.request_timeout_ms == 0 {
                return bad("cluster.request_timeout_ms", "must be positive");
            }
            if let Some(n) = &c.node_name {
                if n.is_empty() || n.len() > 64 || n.chars().any(char::is_control) {
                    return bad("cluster.node_name", "must be 1 to 64 printable characters");
                }
            }
            if c.tail_check_ms < 100 {
                return bad("cluster.tail_check_ms", "must be at least 100");
            }
            if !(1..=50).contains(&c.max_inflight_batches) {
                return bad("cluster.max_inflight_batches", "must be 1 to 50");
            }
        }
        if let Some(a) = &self.amqp {
            if a.prefetch == 0 || a.concurrency == 0 {
                return bad("amqp", "prefetch and concurrency must be positive");
            }
        }
        if let Some((key, reason)) = self.tracing.as_ref().and_then(|t| t.invalid()) {
            return bad(key, reason);
        }
        if self.queue_max_bytes > 1 << 30 {
            return bad("queue_max_bytes", "must be at most 1 GiB");
        }
        if self.api_tokens.iter().any(|t| t.len() < 8)
            || self.api_keys.iter().any(|k| k.token.len() < 8)
        {
            return bad("api_tokens", "every token must be at least 8 bytes");
        }
        if self
            .api_keys
            .iter()
            .any(|k| k.rate_per_sec <= 0.0 || k.burst < 1.0)
        {
            return bad(
                "api_keys",
                "rate_per_sec must be positive and burst at least 1",
            );
        }
        Ok(())
    }
}
