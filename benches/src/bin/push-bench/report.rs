//! Results: a human summary plus one JSON line per run.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::spec::Event;

/// Figures gathered from every worker's Done event.
#[derive(Debug)]
pub struct Merged {
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

/// Inserts the delivery figures every receiving scenario reports.
pub fn deliveries(fig: &mut Map<String, Value>, expected: u64, m: &Merged) {
    fig.insert("deliveries_expected".into(), json!(expected));
    fig.insert("deliveries_received".into(), json!(m.received));
    fig.insert(
        "deliveries_lost".into(),
        json!(expected.saturating_sub(m.received)),
    );
    fig.insert("duplicates_or_reordered".into(), json!(m.duplicates));
    fig.insert("connections_lost".into(), json!(m.lost_connections));
}

/// Merges Done events.
pub fn merge(events: &[Event]) -> Merged {
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
pub fn latency(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "samples": h.len(),
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

/// Prints the summary and the JSON line.
pub fn print(scenario: &str, figures: Map<String, Value>) {
    println!("== push-bench {scenario} ==");
    for (k, v) in &figures {
        println!("  {k:<28} {v}");
    }
    let mut line = Map::new();
    line.insert("scenario".into(), json!(scenario));
    line.extend(figures);
    println!("{}", Value::Object(line));
}
