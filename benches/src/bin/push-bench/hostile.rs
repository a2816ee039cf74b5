//! `hostile`: bystanders in a room receive a fan-out while slowloris connections, never-reading
//! room members and garbage senders press on the server; reports what reached the bystanders,
//! their latency, how the server treated each hostile kind, and its memory.

use std::time::{Duration, Instant};

use serde_json::{json, Map};

use crate::coordinator::{split, Workers};
use crate::hostile_worker::Kind;
use crate::spec::{stamped_payload, Mode, WorkerSpec};
use crate::{http, report, specs, tls_of, Common, Res};

const ROOM: &str = "hostile-room";

/// What to run.
#[derive(clap::Args)]
pub(crate) struct HostileArgs {
    /// Bystanders (room members that read and record latency).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Slowloris connections.
    #[arg(long, default_value_t = 2000)]
    pub slowloris: usize,
    /// Never-reading members of the room.
    #[arg(long, default_value_t = 1000)]
    pub nonreaders: usize,
    /// Garbage connections per second.
    #[arg(long, default_value_t = 200.0)]
    pub garbage_rate: f64,
    /// Messages published to the room.
    #[arg(long, default_value_t = 300)]
    pub messages: usize,
    /// Publish rate (messages per second).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Payload bytes (incompressible enough to fill queues).
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
}

fn hostile_specs(c: &Common, n: usize, kind: Kind, rate: f64, prefix: &str) -> Vec<WorkerSpec> {
    split(n.max(usize::from(kind == Kind::Garbage)), c.per_worker)
        .into_iter()
        .enumerate()
        .map(|(i, (first, count))| WorkerSpec {
            source_ip: c.source_ip(i),
            addr: c.addr.clone(),
            secret: c.secret.clone(),
            user_prefix: format!("{}{prefix}", c.user_prefix),
            first,
            count,
            concurrency: 16,
            mode: Mode::Hostile {
                kind,
                rate,
                room: ROOM.into(),
            },
            tls: tls_of(c),
            peer: crate::peer::Peer::Push,
        })
        .collect()
}

/// A stamped payload of letters zstd cannot shrink much, so queues really fill.
fn noisy(size: usize, seed: usize) -> String {
    let mut s = stamped_payload(0);
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed as u64;
    while s.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(b'a' + (x % 26) as u8));
    }
    s
}

/// Runs the scenario.
pub(crate) async fn run(c: Common, h: HostileArgs) -> Res {
    let pid = c.servers();
    let rss0 = pid.rss_bytes();
    let mut bystanders = Workers::spawn(specs(
        &c,
        h.conns,
        Mode::Receive {
            room: Some(ROOM.into()),
        },
    ))?;
    let ready = bystanders.wait_ready(Duration::from_secs(600)).await;
    let mut kinds = Vec::new();
    for (kind, n, tag) in [
        (Kind::Slowloris, h.slowloris, "loris"),
        (Kind::NonReader, h.nonreaders, "sleeper"),
        (Kind::Garbage, usize::from(h.garbage_rate > 0.0), "garbage"),
    ] {
        if n == 0 {
            continue;
        }
        let mut w = Workers::spawn(hostile_specs(&c, n, kind, h.garbage_rate, tag))?;
        let r = w.wait_ready(Duration::from_secs(600)).await;
        kinds.push((tag, r.ok, w));
    }
    let rss_loaded = pid.rss_bytes();
    let mut http = http::Http::new(c.http);
    let (publish_failed, rss_peak) = crate::publish::publish_paced(
        &mut http,
        &c.api_token,
        (h.messages, h.rate, Instant::now()),
        &pid,
        rss_loaded.unwrap_or(0),
        |i| json!({"to": {"room": ROOM}, "kind": "bench", "payload": noisy(h.size, i)}).to_string(),
    )
    .await;
    let expected = (h.messages * ready.ok) as u64;
    bystanders
        .drain_received(expected, Duration::from_secs(15))
        .await;
    let rss_after = pid.rss_bytes();
    let merged = report::merge(&bystanders.stop().await);
    let mut fig = Map::new();
    fig.insert("bystanders".into(), json!(ready.ok));
    fig.insert("messages".into(), json!(h.messages));
    fig.insert("publish_failures".into(), json!(publish_failed));
    report::deliveries(&mut fig, expected, &merged);
    fig.insert("latency".into(), report::latency(&merged.hist));
    for (tag, up, w) in kinds {
        let m = report::merge(&w.stop().await);
        if tag != "garbage" {
            fig.insert(format!("{tag}_established"), json!(up));
        }
        fig.insert(
            format!("{tag}_ended_or_refused_by_server"),
            json!(m.cycles_ok),
        );
        if tag == "garbage" {
            fig.insert("garbage_unanswered".into(), json!(m.cycles_failed));
        }
    }
    if let (Some(a), Some(b), Some(d)) = (rss0, rss_loaded, rss_after) {
        fig.insert("server_rss_before_bytes".into(), json!(a));
        fig.insert("server_rss_with_hostiles_bytes".into(), json!(b));
        fig.insert("server_rss_peak_bytes".into(), json!(rss_peak.max(b)));
        fig.insert("server_rss_after_bytes".into(), json!(d));
    }
    report::print("hostile", fig);
    Ok(merged.received == expected && merged.duplicates == 0)
}
