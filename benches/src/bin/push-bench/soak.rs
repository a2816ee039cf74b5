//! `soak`: moderate mixed load for a long time (receivers that ack, connect/join/leave/close
//! churn, unicast and room publishes) while the server's RSS, open descriptors and storage
//! size are sampled, to show they stay flat. Prints one row per sample and a summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::coordinator::Workers;
use crate::procstat::Servers;
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
    /// Publishes per second (one in `room_every` to the room every receiver joined, the rest
    /// to one receiver each).
    #[arg(long, default_value_t = 200.0)]
    pub publish_rate: f64,
    /// Every how many publishes one goes to the room (10: one in ten; with 100,000 receivers
    /// each room message is 100,000 deliveries).
    #[arg(long, default_value_t = 10)]
    pub room_every: usize,
    /// HTTP requests in flight at once (a cluster's publish takes tens of ms).
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// Connect, authenticate, join, leave, close cycles per second.
    #[arg(long, default_value_t = 50.0)]
    pub churn_rate: f64,
    /// The server's data directory (for the storage figure); repeat or separate with commas
    /// for several (a NATS cluster's store directories: summed).
    #[arg(long, value_delimiter = ',')]
    pub data_dir: Vec<PathBuf>,
    /// Other processes sampled apart from the server (the NATS servers): summed RSS.
    #[arg(long, value_delimiter = ',')]
    pub other_pid: Vec<u32>,
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
            peer: crate::peer::Peer::Push,
        });
    }
    let mut workers = Workers::spawn(all)?;
    let ready = workers.wait_ready(Duration::from_secs(600)).await;
    let receivers = ready.ok;
    if receivers == 0 {
        return Err(format!("no receiver connected: {:?}", ready.error).into());
    }
    let t0 = Instant::now();
    let publisher = tokio::spawn(publish(c.clone(), t0, s.rates()));
    let mut rows: Vec<Value> = Vec::new();
    let mut next = t0;
    let mut metrics = http::Http::new(c.http);
    while t0.elapsed().as_secs_f64() < s.seconds {
        let received = workers.poll_received(Duration::from_millis(200)).await;
        if Instant::now() < next {
            continue;
        }
        next += Duration::from_secs_f64(s.sample);
        let alloc = allocator(&mut metrics).await;
        let row = json!({
            "t_s": t0.elapsed().as_secs(),
            "rss_bytes": pid.rss_bytes(),
            "fds": pid.open_fds(),
            "storage_bytes": (!s.data_dir.is_empty())
                .then(|| s.data_dir.iter().map(|d| dir_bytes(d)).sum::<u64>()),
            "other_rss_bytes": (!s.other_pid.is_empty())
                .then(|| Servers(s.other_pid.clone()).rss_bytes()),
            "received": received,
            "allocated_bytes": alloc.map(|a| a.allocated),
            "allocator_active_bytes": alloc.map(|a| a.active),
            "allocator_resident_bytes": alloc.map(|a| a.resident),
            "allocator_dirty_bytes": alloc.and_then(|a| a.dirty),
            "allocator_muzzy_bytes": alloc.and_then(|a| a.muzzy),
        });
        eprintln!("  {row}");
        rows.push(row);
    }
    let (users, rooms, failed) = publisher.await??;
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
    fig.insert("room_every".into(), json!(s.room_every));
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

/// What the publisher needs of the arguments.
#[derive(Clone, Copy)]
struct Rates {
    rate: f64,
    seconds: f64,
    conns: usize,
    room_every: usize,
    publishers: usize,
}

impl SoakArgs {
    fn rates(&self) -> Rates {
        Rates {
            rate: self.publish_rate,
            seconds: self.seconds,
            conns: self.conns,
            room_every: self.room_every.max(1),
            publishers: self.publishers.max(1),
        }
    }
}

/// Publishes at `r.rate` through `r.publishers` HTTP connections (publish `i` goes through
/// connection `i % publishers` at `t0 + i / rate`); returns (to users, to the room, failed).
async fn publish(
    c: Common,
    t0: Instant,
    r: Rates,
) -> Result<(u64, u64, u64), tokio::task::JoinError> {
    let mut tasks = Vec::new();
    for k in 0..r.publishers {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut http = http::Http::new(c.http);
            let (mut users, mut rooms, mut failed) = (0u64, 0u64, 0u64);
            let mut i = k;
            while t0.elapsed().as_secs_f64() < r.seconds {
                tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / r.rate)).into())
                    .await;
                let to_room = i % r.room_every == r.room_every - 1;
                let to = if to_room {
                    json!({ "room": ROOM })
                } else {
                    json!({ "users": [format!("{}{}", c.user_prefix, i % r.conns)] })
                };
                let body = json!({"to": to, "kind": "soak", "payload": format!("soak {i}")});
                match http
                    .post("/api/v1/push", &c.api_token, &body.to_string())
                    .await
                {
                    Ok((200, _)) if to_room => rooms += 1,
                    Ok((200, _)) => users += 1,
                    _ => failed += 1,
                }
                i += r.publishers;
            }
            (users, rooms, failed)
        }));
    }
    let mut sum = (0, 0, 0);
    for t in tasks {
        let (u, r, f) = t.await?;
        sum = (sum.0 + u, sum.1 + r, sum.2 + f);
    }
    Ok(sum)
}

/// jemalloc's figures from one `/metrics` scrape.
#[derive(Clone, Copy)]
struct Allocator {
    allocated: u64,
    active: u64,
    resident: u64,
    dirty: Option<u64>,
    muzzy: Option<u64>,
}

/// jemalloc's allocated, active and resident bytes from the (first) server's `/metrics`, when
/// it exports them: beside RSS they tell a leak (allocated grows) from fragmentation (active -
/// allocated grows) and from freed pages the allocator keeps (resident - active grows).
async fn allocator(http: &mut http::Http) -> Option<Allocator> {
    let (status, text) = http.get("/metrics", "").await.ok()?;
    if status != 200 {
        return None;
    }
    let sample = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some(Allocator {
        allocated: sample("push_memory_allocated_bytes")?,
        active: sample("push_memory_active_bytes")?,
        resident: sample("push_memory_resident_bytes")?,
        dirty: sample("push_memory_dirty_bytes"),
        muzzy: sample("push_memory_muzzy_bytes"),
    })
}
