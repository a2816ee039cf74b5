//! Prometheus text exposition (format 0.0.4) of the server's counters, gauges and histograms,
//! written by hand: a few dozen lines instead of a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::Ctx;
use crate::stats::{Stats, SCENARIOS, TRANSPORTS};

/// Upper bounds of the latency buckets, in seconds.
/// They reach 10 minutes: accept-to-ack includes retries, the first of which comes after
/// `retry_interval_ms` (10 s by default) and the later ones after doubling intervals.
pub const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 600.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation in microseconds.
    pub fn observe_micros(&self, micros: u64) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A counter family with one sample per delivery scenario.
fn by_scenario(out: &mut String, name: &str, help: &str, values: &[AtomicU64; 3]) {
    header(out, name, "counter", help);
    for (sc, v) in SCENARIOS.iter().zip(values) {
        let _ = writeln!(out, "{name}{{scenario=\"{sc}\"}} {}", Stats::get(v));
    }
}

/// A histogram family with one histogram per delivery scenario.
fn histograms_by_scenario(out: &mut String, name: &str, help: &str, hists: &[Histogram; 3]) {
    header(out, name, "histogram", help);
    for (sc, h) in SCENARIOS.iter().zip(hists) {
        h.render(out, name, &format!("scenario=\"{sc}\""));
    }
}

/// Renders every metric.
pub fn render(ctx: &Ctx) -> String {
    let s: &Stats = &ctx.stats;
    let get = Stats::get;
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "push_connections",
        "gauge",
        "Authenticated connections open, by transport.",
    );
    for (t, n) in TRANSPORTS.iter().zip(&s.connections) {
        let _ = writeln!(out, "push_connections{{transport=\"{t}\"}} {}", get(n));
    }
    single(
        &mut out,
        "push_sockets_open",
        "gauge",
        "Sockets open, authenticated or not.",
        ctx.open.load(Ordering::Relaxed) as u64,
    );
    single(
        &mut out,
        "push_rooms",
        "gauge",
        "Rooms with at least one member.",
        ctx.hub.room_count() as u64,
    );
    single(
        &mut out,
        "push_accepted_sockets_total",
        "counter",
        "Sockets accepted: TCP connections and WebSocket upgrades.",
        get(&s.accepted),
    );
    single(
        &mut out,
        "push_websocket_upgrades_total",
        "counter",
        "WebSocket upgrades admitted (binary and JSON modes).",
        get(&s.ws_upgrades),
    );
    single(
        &mut out,
        "push_long_polls_total",
        "counter",
        "Long-poll requests served.",
        get(&s.long_polls),
    );
    header(
        &mut out,
        "push_handshakes_total",
        "counter",
        "Handshakes by result and reason.",
    );
    let _ = writeln!(
        out,
        "push_handshakes_total{{result=\"ok\",reason=\"\"}} {}",
        get(&s.handshakes_ok)
    );
    for (code, n) in s.handshake_failures() {
        let _ = writeln!(
            out,
            "push_handshakes_total{{result=\"failed\",reason=\"{}\"}} {n}",
            code.name()
        );
    }
    let _ = writeln!(
        out,
        "push_handshakes_total{{result=\"failed\",reason=\"closed\"}} {}",
        get(&s.handshakes_abandoned)
    );
    single(
        &mut out,
        "push_refused_connection_limit_total",
        "counter",
        "Sockets refused at the global connection limit.",
        get(&s.refused_limit),
    );
    single(
        &mut out,
        "push_frames_in_total",
        "counter",
        "Frames decoded from clients.",
        get(&s.frames_in),
    );
    single(
        &mut out,
        "push_bytes_out_total",
        "counter",
        "Bytes written to clients.",
        get(&s.bytes_out),
    );
    single(
        &mut out,
        "push_bytes_in_total",
        "counter",
        "Bytes read from clients.",
        get(&s.bytes_in),
    );
    single(
        &mut out,
        "push_frames_out_total",
        "counter",
        "Queued frames written to clients.",
        get(&s.frames_out),
    );
    single(
        &mut out,
        "push_protocol_errors_total",
        "counter",
        "Protocol errors that closed a connection.",
        get(&s.protocol_errors),
    );
    by_scenario(
        &mut out,
        "push_messages_accepted_total",
        "Messages accepted (durably stored), by scenario.",
        &s.accepted_by,
    );
    by_scenario(
        &mut out,
        "push_messages_failed_total",
        "Publishes refused (storage, overload), by scenario.",
        &s.failed_by,
    );
    by_scenario(
        &mut out,
        "push_deliveries_queued_total",
        "Message frames queued to connections, by scenario.",
        &s.queued_by,
    );
    histograms_by_scenario(
        &mut out,
        "push_accept_to_queue_seconds",
        "Time from acceptance (commit) to the frame being queued on every connection, by scenario.",
        &s.fanout_latency,
    );
    header(
        &mut out,
        "push_publish_seconds",
        "histogram",
        "Time from a publish request reaching storage to its commit.",
    );
    s.publish_latency
        .render(&mut out, "push_publish_seconds", "");
    histograms_by_scenario(
        &mut out,
        "push_accept_to_write_seconds",
        "Time from acceptance to the frame being written to the client's socket, by scenario.",
        &s.write_latency,
    );
    header(
        &mut out,
        "push_accept_to_ack_seconds",
        "histogram",
        "Time from acceptance to the client's ACK, user messages (sampled: the oldest unacknowledged live message per user).",
    );
    s.ack_latency
        .render(&mut out, "push_accept_to_ack_seconds", "");
    single(
        &mut out,
        "push_duplicates_total",
        "counter",
        "Publishes answered from the idempotency record.",
        get(&s.duplicates),
    );
    single(
        &mut out,
        "push_slow_consumer_disconnects_total",
        "counter",
        "Connections dropped as slow consumers.",
        get(&s.slow_consumers),
    );
    single(
        &mut out,
        "push_heartbeat_timeouts_total",
        "counter",
        "Connections closed by the heartbeat timeout.",
        get(&s.heartbeat_timeouts),
    );
    single(
        &mut out,
        "push_kicked_total",
        "counter",
        "Connections closed through the API.",
        get(&s.kicked),
    );
    single(
        &mut out,
        "push_retries_total",
        "counter",
        "Unacknowledged messages resent.",
        get(&s.retries),
    );
    single(
        &mut out,
        "push_users_failed_total",
        "counter",
        "Times a user's unacknowledged messages were marked failed.",
        get(&s.messages_failed),
    );
    single(
        &mut out,
        "push_store_commits_total",
        "counter",
        "Group commits to storage.",
        get(&s.store_commits),
    );
    single(
        &mut out,
        "push_store_errors_total",
        "counter",
        "Failed storage commits.",
        get(&s.store_errors),
    );
    single(
        &mut out,
        "push_storage_failing",
        "gauge",
        "1 from a failed commit until the next successful one (disk full, I/O error).",
        u64::from(s.storage_failing.load(Ordering::Relaxed)),
    );
    header(
        &mut out,
        "push_store_commit_seconds",
        "histogram",
        "Duration of one group commit.",
    );
    s.commit_latency
        .render(&mut out, "push_store_commit_seconds", "");
    single(
        &mut out,
        "push_compactions_total",
        "counter",
        "Compaction steps that deleted records.",
        get(&s.compactions),
    );
    header(
        &mut out,
        "push_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by kind.",
    );
    let _ = writeln!(
        out,
        "push_rate_limited_total{{kind=\"api\"}} {}",
        get(&s.rate_limited_api)
    );
    let _ = writeln!(
        out,
        "push_rate_limited_total{{kind=\"handshake\"}} {}",
        get(&s.rate_limited_handshake)
    );
    let _ = writeln!(
        out,
        "push_rate_limited_total{{kind=\"connection\"}} {}",
        get(&s.rate_limited_closes)
    );
    header(
        &mut out,
        "push_inbound_paused_total",
        "counter",
        "Times a connection's reader paused: its requests filled max_requests_in_flight (engine) or it went over a frame-rate window (rate).",
    );
    let _ = writeln!(
        out,
        "push_inbound_paused_total{{reason=\"engine\"}} {}",
        get(&s.paused_for_engine)
    );
    let _ = writeln!(
        out,
        "push_inbound_paused_total{{reason=\"rate\"}} {}",
        get(&s.paused_for_rate)
    );
    single(
        &mut out,
        "push_engine_queue",
        "gauge",
        "Requests waiting for the delivery engine.",
        get(&s.engine_queued),
    );
    single(
        &mut out,
        "push_engine_queue_max",
        "gauge",
        "Most requests ever waiting for the delivery engine at once (since start).",
        get(&s.engine_queued_max),
    );
    header(
        &mut out,
        "push_ingest_total",
        "counter",
        "Message-queue deliveries by outcome.",
    );
    for (outcome, c) in [
        ("accepted", &s.ingest_accepted),
        ("duplicate", &s.ingest_duplicates),
        ("dead_lettered", &s.ingest_dead_lettered),
        ("requeued", &s.ingest_requeued),
    ] {
        let _ = writeln!(out, "push_ingest_total{{outcome=\"{outcome}\"}} {}", get(c));
    }
    if ctx.config.amqp.is_some() {
        single(
            &mut out,
            "push_broker_up",
            "gauge",
            "1 while the message-queue consumer is connected.",
            u64::from(ctx.broker_up.load(Ordering::Relaxed)),
        );
        single(
            &mut out,
            "push_broker_disconnects_total",
            "counter",
            "Broker connections lost or refused.",
            get(&s.broker_disconnects),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe_micros(50);
        h.observe_micros(2_000);
        h.observe_micros(10_000_000);
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0001\"} 1"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0025\"} 2"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"5\"} 2"), "{out}");
        // Ten seconds (a retried message's accept-to-ack) is inside a finite bucket.
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 3"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3"), "{out}");
    }
}
