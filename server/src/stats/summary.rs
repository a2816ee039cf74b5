//! One node's figures as a value (`GET /api/v1/stats`, the admin dashboard, `push-cli stats`):
//! counters, gauges and the raw latency buckets, so an answer can travel between cluster nodes,
//! be added up into a total, and a watcher can take quantiles over the interval between two
//! readings (a quantile since start says little about now).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Histogram, Stats, BUCKETS, SCENARIOS, TRANSPORTS};

/// Counters per scenario (user, room, broadcast).
type PerScenario = [u64; 3];

/// One node's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's name (cluster mode), empty on a single node.
    pub node: String,
    /// Connections by transport (tcp, websocket, long_poll).
    pub connections: [u64; 3],
    /// Rooms with at least one member on this node.
    pub rooms: u64,
    /// Messages accepted per scenario.
    pub accepted: PerScenario,
    /// Publishes refused per scenario.
    pub failed: PerScenario,
    /// Transient messages per scenario.
    pub transient: PerScenario,
    /// Deliveries queued to connections per scenario.
    pub deliveries: PerScenario,
    /// Accept -> write-to-socket latency buckets per scenario (counts per bucket of
    /// [`BUCKETS`], overflow last; not cumulative).
    pub write_buckets: [Vec<u64>; 3],
    /// Group-commit duration buckets.
    pub commit_buckets: Vec<u64>,
    /// Group commits.
    pub commits: u64,
    /// Storage errors.
    pub store_errors: u64,
    /// True while storage refuses writes.
    pub storage_failing: bool,
    /// Bytes the store takes on disk (single node).
    pub storage_bytes: Option<u64>,
    /// Connections dropped as slow consumers.
    pub slow_consumers: u64,
    /// Connections dropped for missed heartbeats.
    pub heartbeat_timeouts: u64,
    /// Connections closed through the API.
    pub kicked: u64,
    /// Handshakes refused.
    pub handshakes_failed: u64,
    /// Protocol errors.
    pub protocol_errors: u64,
    /// The allocator's live bytes (the binary's jemalloc).
    pub memory_allocated: Option<u64>,
    /// The allocator's resident bytes.
    pub memory_resident: Option<u64>,
}

fn buckets(h: &Histogram) -> Vec<u64> {
    h.snapshot().2.into_iter().map(|(_, n)| n).collect()
}

fn read3(c: &[std::sync::atomic::AtomicU64; 3]) -> [u64; 3] {
    std::array::from_fn(|i| Stats::get(&c[i]))
}

fn add(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Adds `b` into `a`, taking the longer length (an empty `a` takes `b` whole).
fn add_buckets(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    add(a, b);
}

/// The `q` quantile (0..1) of bucket counts laid out like [`BUCKETS`] plus the overflow,
/// interpolated linearly inside the bucket as Prometheus's `histogram_quantile` does; `None`
/// without observations. A quantile in the overflow bucket reports the last bound.
pub fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (seen + n) as f64 >= rank {
            let Some(&upper) = BUCKETS.get(i) else {
                return BUCKETS.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let within = (rank - seen as f64) / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        seen += n;
    }
    BUCKETS.last().copied()
}

impl NodeStats {
    /// This process's figures now (`rooms` from the hub; storage size and node name are the
    /// caller's to fill in).
    pub fn read(stats: &Stats, rooms: u64) -> NodeStats {
        let memory = crate::memory::read();
        NodeStats {
            node: String::new(),
            connections: read3(&stats.connections),
            rooms,
            accepted: read3(&stats.accepted_by),
            failed: read3(&stats.failed_by),
            transient: read3(&stats.transient_by),
            deliveries: read3(&stats.queued_by),
            write_buckets: std::array::from_fn(|i| buckets(&stats.write_latency[i])),
            commit_buckets: buckets(&stats.commit_latency),
            commits: Stats::get(&stats.store_commits),
            store_errors: Stats::get(&stats.store_errors),
            storage_failing: stats
                .storage_failing
                .load(std::sync::atomic::Ordering::Relaxed),
            storage_bytes: None,
            slow_consumers: Stats::get(&stats.slow_consumers),
            heartbeat_timeouts: Stats::get(&stats.heartbeat_timeouts),
            kicked: Stats::get(&stats.kicked),
            handshakes_failed: Stats::get(&stats.handshakes_failed),
            protocol_errors: Stats::get(&stats.protocol_errors),
            memory_allocated: memory.map(|m| m.allocated),
            memory_resident: memory.map(|m| m.resident),
        }
    }

    /// The sum of several nodes' figures (latency buckets added, so quantiles of the total are
    /// the cluster's, not an average of the nodes').
    pub fn total(nodes: &[NodeStats]) -> NodeStats {
        let mut t = NodeStats {
            node: "total".into(),
            ..NodeStats::default()
        };
        let opt = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        for n in nodes {
            add(&mut t.connections, &n.connections);
            t.rooms += n.rooms;
            add(&mut t.accepted, &n.accepted);
            add(&mut t.failed, &n.failed);
            add(&mut t.transient, &n.transient);
            add(&mut t.deliveries, &n.deliveries);
            for (a, b) in t.write_buckets.iter_mut().zip(&n.write_buckets) {
                add_buckets(a, b);
            }
            add_buckets(&mut t.commit_buckets, &n.commit_buckets);
            t.commits += n.commits;
            t.store_errors += n.store_errors;
            t.storage_failing |= n.storage_failing;
            t.storage_bytes = opt(t.storage_bytes, n.storage_bytes);
            t.slow_consumers += n.slow_consumers;
            t.heartbeat_timeouts += n.heartbeat_timeouts;
            t.kicked += n.kicked;
            t.handshakes_failed += n.handshakes_failed;
            t.protocol_errors += n.protocol_errors;
            t.memory_allocated = opt(t.memory_allocated, n.memory_allocated);
            t.memory_resident = opt(t.memory_resident, n.memory_resident);
        }
        t
    }

    /// The JSON the API answers with: named fields, quantiles since start beside the raw
    /// buckets (for quantiles over an interval).
    pub fn to_json(&self) -> Value {
        let named = |v: &[u64; 3], names: &[&str; 3]| -> Value {
            names
                .iter()
                .zip(v)
                .map(|(k, n)| ((*k).to_string(), json!(n)))
                .collect()
        };
        let scenarios: serde_json::Map<String, Value> = SCENARIOS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let b = &self.write_buckets[i];
                let v = json!({
                    "accepted": self.accepted[i],
                    "failed": self.failed[i],
                    "transient": self.transient[i],
                    "deliveries": self.deliveries[i],
                    "accept_to_write_p50_s": quantile(b, 0.5),
                    "accept_to_write_p99_s": quantile(b, 0.99),
                    "accept_to_write_buckets": b,
                });
                ((*s).to_string(), v)
            })
            .collect();
        let mut connections = named(&self.connections, &TRANSPORTS);
        connections["total"] = json!(self.connections.iter().sum::<u64>());
        json!({
            "node": self.node,
            "connections": connections,
            "rooms": self.rooms,
            "scenarios": scenarios,
            "storage": {
                "commits": self.commits,
                "errors": self.store_errors,
                "failing": self.storage_failing,
                "bytes": self.storage_bytes,
                "commit_p50_s": quantile(&self.commit_buckets, 0.5),
                "commit_p99_s": quantile(&self.commit_buckets, 0.99),
                "commit_buckets": self.commit_buckets,
            },
            "problems": {
                "slow_consumers": self.slow_consumers,
                "heartbeat_timeouts": self.heartbeat_timeouts,
                "kicked": self.kicked,
                "handshakes_failed": self.handshakes_failed,
                "protocol_errors": self.protocol_errors,
            },
            "memory": {
                "allocated": self.memory_allocated,
                "resident": self.memory_resident,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut counts = vec![0u64; BUCKETS.len() + 1];
        assert_eq!(quantile(&counts, 0.5), None);
        // 100 observations in (1 ms, 2.5 ms].
        counts[4] = 100;
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        // One more in the overflow: p100 reports the last bound.
        counts[BUCKETS.len()] = 1;
        assert_eq!(quantile(&counts, 1.0), Some(600.0));
    }

    #[test]
    fn the_total_adds_nodes_and_their_buckets() {
        let stats = Stats::default();
        stats.connections[1].fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        stats.write_latency[0].observe_micros(1_500);
        let mut a = NodeStats::read(&stats, 1);
        a.storage_bytes = Some(10);
        let b = NodeStats::read(&stats, 2);
        let t = NodeStats::total(&[a, b]);
        assert_eq!(t.connections, [0, 4, 0]);
        assert_eq!(t.rooms, 3);
        assert_eq!(t.write_buckets[0].iter().sum::<u64>(), 2);
        assert_eq!(t.storage_bytes, Some(10));
        let v = t.to_json();
        assert_eq!(v["connections"]["websocket"], 4);
        assert_eq!(v["connections"]["total"], 4);
        let p50 = v["scenarios"]["user"]["accept_to_write_p50_s"]
            .as_f64()
            .unwrap();
        assert!(p50 > 0.001 && p50 <= 0.0025, "{p50}");
    }
}
