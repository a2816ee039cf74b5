//! `idle`: open N authenticated connections, hold them, report server RSS per connection and
//! the connect rate.

use std::time::Duration;

use serde::Serialize;

use crate::coordinator::Workers;
use crate::report::{self, ServerNow};
use crate::spec::Mode;
use crate::{specs, Common, Res};

/// The figures of one run.
#[derive(Serialize)]
struct IdleReport {
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    connections_requested: usize,
    connections_ok: usize,
    connections_failed: usize,
    handshakes_in_flight: usize,
    connect_seconds: f64,
    connects_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_before_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_rss_per_connection_bytes: Option<f64>,
    /// Summed proportional set size while connected (shared pages counted once).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_pss_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_seconds_connecting: Option<f64>,
    #[serde(flatten)]
    server: ServerNow,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    connections_lost_while_idle: u64,
}

/// Runs the scenario.
pub(crate) async fn run(
    mut c: Common,
    conns: usize,
    hold: f64,
    ws: bool,
    room: Option<String>,
) -> Res {
    let pid = c.servers();
    let rss0 = pid.rss_bytes();
    let cpu0 = pid.cpu_seconds();
    let mode = if ws {
        c.addr = c.http.to_string();
        Mode::IdleWs { room: room.clone() }
    } else {
        Mode::Idle { room: room.clone() }
    };
    let mut workers = Workers::spawn(specs(&c, conns, mode))?;
    let ready = workers.wait_ready(Duration::from_secs(600)).await;
    let cpu1 = pid.cpu_seconds();
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let rss1 = pid.rss_bytes();
    let pss1 = pid.pss_bytes();
    let transport = match (c.peer, ws, c.tls_ca.is_some()) {
        (crate::peer::Peer::Mqtt, ..) => "mqtt",
        (crate::peer::Peer::Nats, ..) => "nats",
        (_, true, _) => "websocket",
        (_, false, true) => "tcp+tls",
        (_, false, false) => "tcp",
    };
    let rss_pair = rss0.zip(rss1);
    let server = ServerNow::read(&pid);
    let done = workers.stop().await;
    let merged = report::merge(&done);
    let fig = IdleReport {
        transport,
        room,
        connections_requested: conns,
        connections_ok: ready.ok,
        connections_failed: ready.failed,
        handshakes_in_flight: c.concurrency,
        connect_seconds: ready.elapsed.as_secs_f64(),
        connects_per_second: (ready.ok as f64 / ready.elapsed.as_secs_f64().max(1e-9)).round(),
        server_rss_before_bytes: rss0.filter(|_| rss_pair.is_some()),
        server_rss_after_bytes: rss1.filter(|_| rss_pair.is_some()),
        server_rss_per_connection_bytes: rss_pair
            .map(|(a, b)| ((b as f64 - a as f64) / ready.ok.max(1) as f64).round()),
        server_pss_after_bytes: pss1,
        server_cpu_seconds_connecting: cpu0.zip(cpu1).map(|(a, b)| b - a),
        server,
        first_error: ready.error.clone(),
        connections_lost_while_idle: merged.lost_connections,
    };
    report::print("idle", fig);
    Ok(ready.failed == 0 && merged.lost_connections == 0)
}
