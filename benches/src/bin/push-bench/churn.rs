//! `churn`: connect, authenticate and disconnect continuously at a given rate.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::coordinator::Workers;
use crate::report::{self, Latency};
use crate::spec::{Mode, WorkerSpec};
use crate::{tls_of, Common, Res};

/// The figures of one run.
#[derive(Serialize)]
struct ChurnReport {
    rate_requested: f64,
    seconds: f64,
    cycles_ok: u64,
    cycles_failed: u64,
    cycles_per_second: f64,
    connect_auth_latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_fds_before: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_fds_after: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// Runs the scenario with `workers_n` worker processes.
pub(crate) async fn run(c: Common, rate: f64, seconds: f64, workers_n: usize) -> Res {
    let pid = c.servers();
    let rss0 = pid.rss_bytes();
    let fds0 = pid.open_fds();
    let n = workers_n.max(1);
    let per = (c.concurrency / n).max(1);
    let specs: Vec<WorkerSpec> = (0..n)
        .map(|w| WorkerSpec {
            source_ip: c.source_ip(w),
            tls: tls_of(&c),
            addr: c.addr.clone(),
            secret: c.secret.clone(),
            user_prefix: format!("{}churn{w}-", c.user_prefix),
            first: 0,
            count: 1000,
            concurrency: per,
            mode: Mode::Churn {
                rate: rate / n as f64,
                seconds,
                rooms: false,
            },
            peer: crate::peer::Peer::Push,
        })
        .collect();
    let t0 = Instant::now();
    let mut workers = Workers::spawn(specs)?;
    workers.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let done = workers.stop().await;
    let elapsed = t0.elapsed().as_secs_f64();
    // Give the server a moment to finish closing the last sockets before reading its RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = report::merge(&done);
    let rss = rss0.zip(pid.rss_bytes());
    let fds = fds0.zip(pid.open_fds());
    let fig = ChurnReport {
        rate_requested: rate,
        seconds,
        cycles_ok: m.cycles_ok,
        cycles_failed: m.cycles_failed,
        cycles_per_second: (m.cycles_ok as f64 / elapsed).round(),
        connect_auth_latency: Latency::of(&m.hist),
        server_rss_before_bytes: rss.map(|r| r.0),
        server_rss_after_bytes: rss.map(|r| r.1),
        server_fds_before: fds.map(|f| f.0),
        server_fds_after: fds.map(|f| f.1),
        first_error: m.error.clone(),
    };
    report::print("churn", fig);
    Ok(m.cycles_failed == 0)
}
