//! `soak`: moderate mixed load for a long time (receivers that ack, connect/join/leave/close
//! churn, unicast and room publishes) while the server's RSS, open descriptors and storage
//! size are sampled, to show they stay flat. Prints one row per sample and a summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::coordinator::Workers;
use crate::spec::{Mode, WorkerSpec};
use crate::{http, report, specs, tls_of, Common, Res};

/// Room every soak receiver joins.
const ROOM: &str = "soak";

/// What to run.
#[derive(clap::Args)]
pub(crate) struct SoakArgs {
    /// Receivers connected for the whole run (in the soak room, acknowledging).
    #[arg(long, default_value_t = 2000)]
    pub conns: usize,
    /// Run time in seconds.
    #[arg(long, default_value_t = 1800.0)]
    pub seconds: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60.0)]
    pub sample: f64,
    /// Publishes per second (one in ten to the room every receiver joined).
    #[arg(long, default_value_t = 200.0)]
    pub publish_rate: f64,
    /// Connect, authenticate, join, leave, close cycles per second.
    #[arg(long, default_value_t = 50.0)]
    pub churn_rate: f64,
    /// The server's data directory (for the storage figure).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn dir_bytes(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Runs the soak.
pub(crate) async fn run(c: Common, s: SoakArgs) -> Res {
    let pid = c.servers();
    let mut all = specs(
        &c,
        s.conns,
        Mode::Receive {
            room: Some(ROOM.into()),
        },
    );
    let churners = 2;
    for w in 0..churners {
        all.push(WorkerSpec {
            source_ip: c.source_ip(w),
            addr: c.addr.clone(),
            secret: c.secret.clone(),
            user_prefix: format!("{}soakchurn{w}-", c.user_prefix),
            first: 0,
            count: 500,
            concurrency: 8,
            mode: Mode::Churn {
                rate: s.churn_rate / churners as f64,
                seconds: s.seconds,
                rooms: true,
            },
            tls: tls_of(&c),
        });
    }
    let mut workers = Workers::spawn(all)?;
    let ready = workers.wait_ready(Duration::from_secs(600)).await;
    let receivers = ready.ok;
    if receivers == 0 {
        return Err(format!("no receiver connected: {:?}", ready.error).into());
    }
    let t0 = Instant::now();
    let publisher = {
        let c = c.clone();
        let (rate, seconds, conns) = (s.publish_rate, s.seconds, s.conns);
        tokio::spawn(async move {
            let mut http = http::Http::new(c.http);
            let (mut users, mut rooms, mut failed) = (0u64, 0u64, 0u64);
            let mut i = 0usize;
            while t0.elapsed().as_secs_f64() < seconds {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / rate)).into())
                    .await;
                let to = if i % 10 == 9 {
                    json!({ "room": ROOM })
                } else {
                    json!({ "users": [format!("{}{}", c.user_prefix, i % conns)] })
                };
                let body = json!({"to": to, "kind": "soak", "payload": format!("soak {i}")});
                match http
                    .post("/api/v1/push", &c.api_token, &body.to_string())
                    .await
                {
                    Ok((200, _)) if i % 10 == 9 => rooms += 1,
                    Ok((200, _)) => users += 1,
                    _ => failed += 1,
                }
                i += 1;
            }
            (users, rooms, failed)
        })
    };
    let mut rows: Vec<Value> = Vec::new();
    let mut next = t0;
    while t0.elapsed().as_secs_f64() < s.seconds {
        let received = workers.poll_received(Duration::from_millis(200)).await;
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs_f64(s.sample);
        let row = json!({
            "t_s": t0.elapsed().as_secs(),
            "rss_bytes": pid.rss_bytes(),
            "fds": pid.open_fds(),
            "storage_bytes": s.data_dir.as_deref().map(dir_bytes),
            "received": received,
        });
        eprintln!("  {row}");
        rows.push(row);
    }
    let (users, rooms, failed) = publisher.await?;
    let expected = users + rooms * receivers as u64;
    // Drain: wait until deliveries stop arriving.
    let mut received = 0;
    let mut last_change = Instant::now();
    while received < expected && last_change.elapsed() < Duration::from_secs(15) {
        let r = workers.poll_received(Duration::from_millis(250)).await;
        if r != received {
            received = r;
            last_change = Instant::now();
        }
    }
    let done = workers.stop().await;
    let merged = report::merge(&done);
    let mut fig = Map::new();
    fig.insert("seconds".into(), json!(s.seconds));
    fig.insert("receivers".into(), json!(receivers));
    fig.insert("publish_rate".into(), json!(s.publish_rate));
    fig.insert("churn_rate".into(), json!(s.churn_rate));
    fig.insert("published_to_users".into(), json!(users));
    fig.insert("published_to_room".into(), json!(rooms));
    fig.insert("publish_failures".into(), json!(failed));
    report::deliveries(&mut fig, expected, &merged);
    fig.insert("churn_cycles_ok".into(), json!(merged.cycles_ok));
    fig.insert("churn_cycles_failed".into(), json!(merged.cycles_failed));
    if let Some(e) = merged.error {
        fig.insert("first_error".into(), json!(e));
    }
    fig.insert("samples".into(), json!(rows));
    report::print("soak", fig);
    Ok(failed == 0 && merged.received == expected && merged.duplicates == 0)
}
