//! Metrics for Prometheus, encoded by the `prometheus-client` crate (OpenMetrics text). The
//! values live in `Stats` as plain atomics and lock-free [`Histogram`]s, which sit on the
//! per-frame path; on each scrape a collector hands them to the crate's encoder,
//! which writes the families, label sets, HELP/TYPE lines and histogram buckets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::stats::{Histogram, Stats, SCENARIOS, TRANSPORTS};

/// Content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of one sample.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// Writes families through the crate's encoder.
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let m = self
            .0
            .encode_descriptor(base, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(m)
    }

    /// A counter family, one sample per label set. `name` ends in `_total`, which the
    /// encoder adds to the samples itself.
    fn counters(&mut self, name: &str, help: &str, samples: Vec<(Labels, u64)>) -> fmt::Result {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut m = self
            .0
            .encode_descriptor(base, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(m)
    }

    fn gauges(&mut self, name: &str, help: &str, samples: Vec<(Labels, u64)>) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: Vec<(Labels, &Histogram)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in samples {
            let (sum, count, buckets) = h.snapshot();
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        let (sum, count, buckets) = h.snapshot();
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

fn by_scenario(values: &[AtomicU64; 3]) -> Vec<(Labels<'static>, u64)> {
    SCENARIOS
        .iter()
        .zip(values)
        .map(|(sc, v)| (vec![("scenario", *sc)], Stats::get(v)))
        .collect()
}

fn histograms_by_scenario(hists: &[Histogram; 3]) -> Vec<(Labels<'static>, &Histogram)> {
    SCENARIOS
        .iter()
        .zip(hists)
        .map(|(sc, h)| (vec![("scenario", *sc)], h))
        .collect()
}

/// Values that live outside [`Stats`], read by the caller for one scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Sockets open, authenticated or not.
    pub sockets_open: u64,
    /// Rooms with at least one member.
    pub rooms: u64,
    /// Whether the message-queue consumer is connected; `None` when none is configured.
    pub broker_up: Option<bool>,
    /// Cluster mode: user actors running and asleep on this node.
    pub user_actors: Option<(usize, usize)>,
    /// One node: bytes the store takes on disk; `None` in cluster mode (JetStream stores).
    pub storage_bytes: Option<u64>,
}

/// The server's metrics, read on each scrape.
struct Exporter(Arc<Stats>, Gauges);

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exporter")
    }
}

impl Collector for Exporter {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let (s, g): (&Stats, &Gauges) = (&self.0, &self.1);
        let get = Stats::get;
        let mut f = Families(encoder);
        let transports = TRANSPORTS.iter().zip(&s.connections);
        f.gauges(
            "push_connections",
            "Authenticated connections open, by transport.",
            transports
                .map(|(t, n)| (vec![("transport", *t)], get(n)))
                .collect(),
        )?;
        f.gauge(
            "push_sockets_open",
            "Sockets open, authenticated or not.",
            g.sockets_open,
        )?;
        f.gauge("push_rooms", "Rooms with at least one member.", g.rooms)?;
        f.counter(
            "push_accepted_sockets_total",
            "Sockets accepted: TCP connections and WebSocket upgrades.",
            get(&s.accepted),
        )?;
        f.counter(
            "push_websocket_upgrades_total",
            "WebSocket upgrades admitted (binary and JSON modes).",
            get(&s.ws_upgrades),
        )?;
        f.counter(
            "push_long_polls_total",
            "Long-poll requests served.",
            get(&s.long_polls),
        )?;
        f.counters(
            "push_tls_handshakes_total",
            "TLS handshakes completed on every listener, by kind: full, or resumed with a session ticket.",
            [("full", 0), ("resumed", 1)]
                .map(|(kind, i)| (vec![("kind", kind)], get(&s.tls_handshakes[i])))
                .to_vec(),
        )?;
        let failures = s.handshake_failures();
        let mut handshakes = vec![(
            vec![("result", "ok"), ("reason", "")],
            get(&s.handshakes_ok),
        )];
        handshakes.extend(
            failures
                .iter()
                .map(|(code, n)| (vec![("result", "failed"), ("reason", code.name())], *n)),
        );
        handshakes.push((
            vec![("result", "failed"), ("reason", "closed")],
            get(&s.handshakes_abandoned),
        ));
        f.counters(
            "push_handshakes_total",
            "Handshakes by result and reason.",
            handshakes,
        )?;
        f.counter(
            "push_refused_connection_limit_total",
            "Sockets refused at the global connection limit.",
            get(&s.refused_limit),
        )?;
        f.counter(
            "push_frames_in_total",
            "Frames decoded from clients.",
            get(&s.frames_in),
        )?;
        f.counter(
            "push_bytes_out_total",
            "Bytes written to clients.",
            get(&s.bytes_out),
        )?;
        f.counter(
            "push_bytes_in_total",
            "Bytes read from clients.",
            get(&s.bytes_in),
        )?;
        f.counter(
            "push_frames_out_total",
            "Queued frames written to clients.",
            get(&s.frames_out),
        )?;
        f.counter(
            "push_protocol_errors_total",
            "Protocol errors that closed a connection.",
            get(&s.protocol_errors),
        )?;
        f.counters(
            "push_messages_accepted_total",
            "Messages accepted (durably stored), by scenario.",
            by_scenario(&s.accepted_by),
        )?;
        f.counters(
            "push_transient_messages_total",
            "Transient messages published (not stored, version-2 connections online only), by scenario.",
            by_scenario(&s.transient_by),
        )?;
        f.counters(
            "push_messages_failed_total",
            "Publishes refused (storage, overload), by scenario.",
            by_scenario(&s.failed_by),
        )?;
        f.counters(
            "push_deliveries_queued_total",
            "Message frames queued to connections, by scenario.",
            by_scenario(&s.queued_by),
        )?;
        f.histograms(
            "push_accept_to_queue_seconds",
            "Time from acceptance (commit) to the frame being queued on every connection, by scenario.",
            histograms_by_scenario(&s.fanout_latency),
        )?;
        f.histogram(
            "push_publish_seconds",
            "Time from a publish request reaching storage to its commit.",
            &s.publish_latency,
        )?;
        f.histograms(
            "push_accept_to_write_seconds",
            "Time from acceptance to the frame being written to the client's socket, by scenario.",
            histograms_by_scenario(&s.write_latency),
        )?;
        f.histogram(
            "push_accept_to_ack_seconds",
            "Time from acceptance to the client's ACK, user messages (sampled: the oldest unacknowledged live message per user).",
            &s.ack_latency,
        )?;
        f.counter(
            "push_duplicates_total",
            "Publishes answered from the idempotency record.",
            get(&s.duplicates),
        )?;
        f.counter(
            "push_slow_consumer_disconnects_total",
            "Connections dropped as slow consumers.",
            get(&s.slow_consumers),
        )?;
        f.counter(
            "push_heartbeat_timeouts_total",
            "Connections closed by the heartbeat timeout.",
            get(&s.heartbeat_timeouts),
        )?;
        f.counter(
            "push_kicked_total",
            "Connections closed through the API.",
            get(&s.kicked),
        )?;
        f.counter(
            "push_retries_total",
            "Unacknowledged messages resent.",
            get(&s.retries),
        )?;
        f.counter(
            "push_users_failed_total",
            "Times a user's unacknowledged messages were marked failed.",
            get(&s.messages_failed),
        )?;
        f.counter(
            "push_store_commits_total",
            "Group commits to storage.",
            get(&s.store_commits),
        )?;
        f.counter(
            "push_store_errors_total",
            "Failed storage commits.",
            get(&s.store_errors),
        )?;
        f.gauge(
            "push_storage_failing",
            "1 from a failed commit until the next successful one (disk full, I/O error).",
            u64::from(s.storage_failing.load(Ordering::Relaxed)),
        )?;
        f.histogram(
            "push_store_commit_seconds",
            "Duration of one group commit.",
            &s.commit_latency,
        )?;
        f.counter(
            "push_compactions_total",
            "Compaction steps that deleted records.",
            get(&s.compactions),
        )?;
        f.counters(
            "push_rate_limited_total",
            "Requests refused by a rate limit, by kind: API keys, handshakes per address, connections closed with RATE_LIMITED.",
            vec![
                (vec![("kind", "api")], get(&s.rate_limited_api)),
                (vec![("kind", "handshake")], get(&s.rate_limited_handshake)),
                (vec![("kind", "connection")], get(&s.rate_limited_closes)),
            ],
        )?;
        f.counters(
            "push_inbound_paused_total",
            "Times a connection's reader paused: its requests filled max_requests_in_flight (engine) or it went over a rate slice (rate).",
            vec![
                (vec![("reason", "engine")], get(&s.paused_for_engine)),
                (vec![("reason", "rate")], get(&s.paused_for_rate)),
            ],
        )?;
        f.gauge(
            "push_engine_queue",
            "Requests the delivery engine found waiting when it last took a batch.",
            get(&s.engine_queued),
        )?;
        f.gauge(
            "push_engine_queue_max",
            "Most requests the delivery engine found waiting at once since start (capped by its batch of 4096).",
            get(&s.engine_queued_max),
        )?;
        f.counters(
            "push_ingest_total",
            "Message-queue deliveries by outcome.",
            vec![
                (vec![("outcome", "accepted")], get(&s.ingest_accepted)),
                (vec![("outcome", "duplicate")], get(&s.ingest_duplicates)),
                (
                    vec![("outcome", "dead_lettered")],
                    get(&s.ingest_dead_lettered),
                ),
                (vec![("outcome", "requeued")], get(&s.ingest_requeued)),
            ],
        )?;
        if let Some(bytes) = g.storage_bytes {
            f.gauge(
                "push_storage_bytes",
                "Bytes the store's files take on disk (data_dir).",
                bytes,
            )?;
        }
        if let Some((awake, asleep)) = g.user_actors {
            f.gauges(
                "push_cluster_user_actors",
                "Cluster mode: actors of users connected to this node, running or asleep.",
                vec![
                    (vec![("state", "awake")], awake as u64),
                    (vec![("state", "asleep")], asleep as u64),
                ],
            )?;
        }
        if let Some(m) = crate::memory::read() {
            for (name, help, v) in [
                ("push_memory_allocated_bytes", "Bytes in live allocations (jemalloc stats.allocated): grows with a leak.", m.allocated),
                ("push_memory_active_bytes", "Bytes in pages holding live allocations (jemalloc stats.active).", m.active),
                ("push_memory_resident_bytes", "Bytes the allocator holds in physical memory (jemalloc stats.resident): grows with allocator caching or fragmentation.", m.resident),
                ("push_memory_mapped_bytes", "Bytes in extents mapped for allocations (jemalloc stats.mapped).", m.mapped),
                ("push_memory_retained_bytes", "Bytes kept mapped but returned to the OS (jemalloc stats.retained, virtual only).", m.retained),
                ("push_memory_metadata_bytes", "Bytes of the allocator's own bookkeeping (jemalloc stats.metadata).", m.metadata),
                ("push_memory_dirty_bytes", "Bytes in freed pages the allocator still holds, purged after its dirty decay time (jemalloc pdirty).", m.dirty),
                ("push_memory_muzzy_bytes", "Bytes in freed pages given back lazily with MADV_FREE; they leave RSS only under memory pressure (jemalloc pmuzzy).", m.muzzy),
            ] {
                f.gauge(name, help, v)?;
            }
        }
        if let Some(up) = g.broker_up {
            f.gauge(
                "push_broker_up",
                "1 while the message-queue consumer is connected.",
                u64::from(up),
            )?;
            f.counter(
                "push_broker_disconnects_total",
                "Broker connections lost or refused.",
                get(&s.broker_disconnects),
            )?;
        }
        Ok(())
    }
}

/// Renders every metric (OpenMetrics text, [`CONTENT_TYPE`]): the counters and histograms
/// of `stats` and the `gauges` read for this scrape.
pub(crate) fn render(stats: &Arc<Stats>, gauges: Gauges) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exporter(stats.clone(), gauges)));
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}
