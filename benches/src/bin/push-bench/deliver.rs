//! `fanout` and `unicast`: receivers connect, publishers post over the HTTP API at a given
//! rate, and every delivery is counted, ordered and timed.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Load;
use crate::coordinator::Workers;
use crate::peer::Peer;
use crate::report::{self, Deliveries, Latency, ServerNow};
use crate::spec::{stamped_payload, Mode};
use crate::{http, specs, Common, Res};

/// The figures of one run.
#[derive(Serialize)]
struct DeliverReport {
    transport: &'static str,
    receivers: usize,
    receivers_failed: usize,
    messages: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    users_per_request: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_per_second: Option<f64>,
    payload_bytes: usize,
    /// Messages per second, or "max".
    rate_requested: Value,
    publish_seconds: f64,
    publish_rate_achieved: f64,
    publish_failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_first_error: Option<String>,
    #[serde(flatten)]
    server: ServerNow,
    #[serde(flatten)]
    deliveries: Deliveries,
    delivery_seconds: f64,
    deliveries_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us_per_delivery: Option<f64>,
    latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storm: Option<crate::failover::Storm>,
}

/// Where the scenario publishes.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// One room all receivers joined.
    Room,
    /// Broadcast.
    Broadcast,
    /// Individual users (`--batch` per request).
    Users,
}

const ROOM: &str = "bench-room";

fn body(target: Target, i: usize, load: &Load, prefix: &str) -> String {
    let to = match target {
        Target::Room => json!({ "room": ROOM }),
        Target::Broadcast => json!({ "broadcast": true }),
        Target::Users => {
            let k = load.batch.max(1);
            let users: Vec<String> = (0..k)
                .map(|j| format!("{prefix}{}", (i * k + j) % load.conns))
                .collect();
            json!({ "users": users })
        }
    };
    let size = load.size;
    let mut body = json!({ "to": to, "kind": "bench", "payload": stamped_payload(size) });
    if load.transient {
        body["transient"] = json!(true);
    }
    if load.resilient {
        // Unique to this run, so ids of an earlier run within the window are not duplicates.
        static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let run = RUN.get_or_init(crate::spec::unix_micros);
        body["id"] = json!(format!("bench-{run}-{i}"));
    }
    body.to_string()
}

/// Runs the scenario: receivers connect, publishers send, every delivery is counted.
pub(crate) async fn run(c: Common, load: Load, target: Target) -> Res {
    let pid = c.servers();
    let room = (target == Target::Room).then(|| ROOM.to_string());
    let mode = if load.resilient {
        Mode::ReceiveResilient { room }
    } else if load.ws || load.ws_json {
        Mode::ReceiveWs {
            room,
            json: load.ws_json,
        }
    } else {
        Mode::Receive { room }
    };
    let mut receivers = c.clone();
    if load.ws || load.ws_json {
        receivers.addr = c.http.to_string();
    }
    let mut workers = Workers::spawn(specs(&receivers, load.conns, mode))?;
    let ready = workers.wait_ready(Duration::from_secs(600)).await;
    if ready.ok == 0 {
        return Err(format!("no receiver connected: {:?}", ready.error).into());
    }
    let expected = match target {
        Target::Users => (load.messages * load.batch.max(1)) as u64,
        _ => (load.messages * ready.ok) as u64,
    };
    let cpu0 = pid.cpu_seconds();
    let t0 = Instant::now();
    let kill = load
        .kill_pid
        .map(|p| (p, crate::failover::kill_later(p, load.kill_after)));
    let publishers = load.publishers.max(1);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (c, load) = (c.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            if (c.tls_ca.is_some() || load.binary_publish) && target == Target::Room {
                let share = (p, publishers);
                return Ok(crate::binary_publish::publish_share(&c, ROOM, share, &load, t0).await);
            }
            if c.peer != Peer::Push {
                let addr = c.addr.parse()?;
                let share = (p, publishers);
                return Ok(crate::peer::publish_share(c.peer, addr, ROOM, share, &load, t0).await);
            }
            let mut http = http::Http::new(c.http);
            let mut failed = 0u64;
            let mut first_error = None;
            for i in (p..load.messages).step_by(publishers) {
                if load.rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / load.rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let b = body(target, i, &load, &c.user_prefix);
                if load.resilient {
                    // Retried under its id until accepted (a node may die under it).
                    let until = Instant::now() + Duration::from_secs(60);
                    loop {
                        match http.post("/api/v1/push", &c.api_token, &b).await {
                            Ok((200, _)) => break,
                            _ if Instant::now() < until => {
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                            Ok((s, text)) => {
                                failed += 1;
                                first_error.get_or_insert(format!("HTTP {s}: {text}"));
                                break;
                            }
                            Err(e) => {
                                failed += 1;
                                first_error.get_or_insert(e.to_string());
                                break;
                            }
                        }
                    }
                    continue;
                }
                match http.post("/api/v1/push", &c.api_token, &b).await {
                    Ok((200, _)) => {}
                    Ok((s, text)) => {
                        failed += 1;
                        first_error.get_or_insert(format!("HTTP {s}: {text}"));
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            Ok::<_, std::net::AddrParseError>((failed, first_error))
        }));
    }
    let mut publish_failed = 0;
    let mut publish_error = None;
    for t in tasks {
        let (f, e) = t.await??;
        publish_failed += f;
        if publish_error.is_none() {
            publish_error = e;
        }
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut received = 0;
    let mut last_change = Instant::now();
    let mut t_last = t0.elapsed();
    while received < expected && last_change.elapsed() < Duration::from_secs_f64(load.drain) {
        let r = workers.poll_received(Duration::from_millis(250)).await;
        if r != received {
            received = r;
            last_change = Instant::now();
            t_last = t0.elapsed();
        }
        eprint!("\r  received {received}/{expected}   ");
    }
    eprintln!();
    let cpu1 = pid.cpu_seconds();
    let server = ServerNow::read(&pid);
    let done = workers.stop().await;
    let m = report::merge(&done);
    let storm = match kill {
        Some((p, k)) => Some(crate::failover::Storm::of(p, k.await?, &done)),
        None => None,
    };
    let secs = t_last.as_secs_f64().max(1e-9);
    let unicast = target == Target::Users;
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let fig = DeliverReport {
        transport: match (c.peer, load.ws_json, load.ws) {
            (Peer::Mqtt, ..) => "mqtt",
            (Peer::Nats, ..) => "nats",
            (_, true, _) => "websocket-json",
            (_, _, true) => "websocket",
            _ => "tcp",
        },
        receivers: ready.ok,
        receivers_failed: ready.failed,
        messages: load.messages,
        users_per_request: unicast.then_some(load.batch.max(1)),
        accepted_per_second: unicast.then(|| (expected as f64 / publish_secs.max(1e-9)).round()),
        payload_bytes: load.size,
        rate_requested: if load.rate > 0.0 {
            json!(load.rate)
        } else {
            json!("max")
        },
        publish_seconds: publish_secs,
        publish_rate_achieved: (load.messages as f64 / publish_secs.max(1e-9)).round(),
        publish_failures: publish_failed,
        publish_first_error: publish_error,
        server,
        deliveries: Deliveries::of(expected, &m),
        delivery_seconds: secs,
        deliveries_per_second: (m.received as f64 / secs).round(),
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivery: cpu
            .map(|c| (c * 1e6 / m.received.max(1) as f64 * 1000.0).round() / 1000.0),
        latency: Latency::of(&m.hist),
        first_error: m.error.clone(),
        storm,
    };
    let name = match target {
        Target::Room => "fanout-room",
        Target::Broadcast => "fanout-broadcast",
        Target::Users => "unicast",
    };
    report::print(name, fig);
    Ok(m.received == expected && m.duplicates == 0 && publish_failed == 0)
}
