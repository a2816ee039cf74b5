//! Results: a human summary plus one JSON line per run.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::spec::Event;

/// Figures gathered from every worker's Done event.
#[derive(Debug)]
pub(crate) struct Merged {
    /// Messages received.
    pub received: u64,
    /// Out-of-order or repeated positions.
    pub duplicates: u64,
    /// Connections that ended early.
    pub lost_connections: u64,
    /// Churn cycles that worked.
    pub cycles_ok: u64,
    /// Churn cycles that failed.
    pub cycles_failed: u64,
    /// Merged latency histogram (µs).
    pub hist: Histogram<u64>,
    /// First error any worker saw.
    pub error: Option<String>,
}

/// The delivery figures every receiving scenario reports.
#[derive(Debug, Serialize)]
pub(crate) struct Deliveries {
    /// Deliveries the scenario should have seen.
    pub deliveries_expected: u64,
    /// Deliveries seen.
    pub deliveries_received: u64,
    /// Expected but never seen.
    pub deliveries_lost: u64,
    /// Out-of-order or repeated positions.
    pub duplicates_or_reordered: u64,
    /// Connections that ended early.
    pub connections_lost: u64,
}

impl Deliveries {
    /// The figures of `m` against `expected`.
    pub(crate) fn of(expected: u64, m: &Merged) -> Deliveries {
        Deliveries {
            deliveries_expected: expected,
            deliveries_received: m.received,
            deliveries_lost: expected.saturating_sub(m.received),
            duplicates_or_reordered: m.duplicates,
            connections_lost: m.lost_connections,
        }
    }
}

/// Inserts the delivery figures into a scenario's map of figures.
pub(crate) fn deliveries(fig: &mut Map<String, Value>, expected: u64, m: &Merged) {
    if let Ok(Value::Object(d)) = serde_json::to_value(Deliveries::of(expected, m)) {
        fig.extend(d);
    }
}

/// The server's RSS and descriptors right now (when its pid is known).
#[derive(Debug, Default, Serialize)]
pub(crate) struct ServerNow {
    /// Resident memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    /// Open descriptors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_fds: Option<usize>,
}

impl ServerNow {
    /// Reads both figures of process `pid`.
    pub(crate) fn read(pid: &crate::procstat::Servers) -> ServerNow {
        ServerNow {
            server_rss_bytes: pid.rss_bytes(),
            server_fds: pid.open_fds(),
        }
    }
}

/// Merges Done events.
pub(crate) fn merge(events: &[Event]) -> Merged {
    let mut m = Merged {
        received: 0,
        duplicates: 0,
        lost_connections: 0,
        cycles_ok: 0,
        cycles_failed: 0,
        hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        error: None,
    };
    for e in events {
        if let Event::Done {
            received,
            duplicates,
            lost_connections,
            cycles_ok,
            cycles_failed,
            hist,
            error,
        } = e
        {
            m.received += received;
            m.duplicates += duplicates;
            m.lost_connections += lost_connections;
            m.cycles_ok += cycles_ok;
            m.cycles_failed += cycles_failed;
            for (v, c) in hist {
                let _ = m.hist.record_n(*v, *c);
            }
            if m.error.is_none() {
                m.error = error.clone();
            }
        }
    }
    m
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    /// Observations.
    pub samples: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds, as a JSON value for a map of figures.
pub(crate) fn latency(h: &Histogram<u64>) -> Value {
    serde_json::to_value(Latency::of(h)).unwrap_or(Value::Null)
}

/// Prints the summary and the JSON line of a scenario's figures (a struct or a map).
pub(crate) fn print(scenario: &str, figures: impl Serialize) {
    let figures = match serde_json::to_value(figures) {
        Ok(Value::Object(m)) => m,
        other => panic!("figures must serialize to a JSON object, got {other:?}"),
    };
    println!("== push-bench {scenario} ==");
    for (k, v) in &figures {
        println!("  {k:<28} {v}");
    }
    let mut line = Map::new();
    line.insert("scenario".into(), json!(scenario));
    line.extend(figures);
    println!("{}", Value::Object(line));
}
