//! `push-bench`: drives a running push server and reports honestly measured figures.
//!
//! Scenarios: `idle`, `fanout`, `unicast`, `churn`, `soak`, `hostile`, `flood`. Connections are spread over worker
//! processes (this binary re-executed as `push-bench worker`), because one process can hold at
//! most about 19,000 sockets on the target machines.

mod coordinator;
mod flood;
mod hostile;
mod hostile_worker;
use push_client::http_api as http;
mod procstat;
mod publish;
mod report;
mod soak;
mod spec;
mod worker;
mod ws;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use coordinator::{split, Workers};
use spec::{stamped_payload, Mode, WorkerSpec};

/// Load-test harness for the push server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N authenticated connections, hold them, report server RSS per connection and the
    /// connect rate.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold before measuring (lets the server settle).
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
        /// Connect over WebSocket (`GET /ws` on --http, binary mode) instead of raw TCP.
        #[arg(long)]
        ws: bool,
    },
    /// N receivers in one room (or on broadcast); publish M messages of S bytes at rate R.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// Use broadcast instead of a room.
        #[arg(long)]
        broadcast: bool,
    },
    /// N users, each with one connection; M messages to individual users at rate R.
    Unicast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
    },
    /// Connect, authenticate and disconnect continuously at rate R.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Cycles per second, all workers together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Long mixed load (receivers that ack, join/leave churn, unicast and room publishes) with
    /// server RSS, descriptors and storage sampled over time.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        soak: soak::SoakArgs,
    },
    /// Bystanders in a room receive a fan-out while slowloris connections, never-reading
    /// members and garbage senders press on the server.
    Hostile {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        hostile: hostile::HostileArgs,
    },
    /// Bystanders in room `news` receive a steady fan-out while clients flood the server with
    /// valid frames (ACK, JOIN, LEAVE/JOIN churn, PUBLISH); `--kind none` is the baseline.
    Flood {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        flood: flood::FloodArgs,
    },
    /// Internal: one worker process.
    #[command(hide = true)]
    Worker { spec: String },
}

#[derive(Args, Clone)]
struct Common {
    /// Server's binary-protocol address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    addr: String,
    /// Server's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7180")]
    http: SocketAddr,
    /// JWT secret the server was started with.
    #[arg(long, env = "PUSH_JWT_SECRET", default_value = "dev-secret-change-me")]
    secret: String,
    /// API token the server accepts.
    #[arg(long, env = "PUSH_API_TOKEN", default_value = "dev-api-token")]
    api_token: String,
    /// Server pid, for RSS and CPU figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most connections per worker process.
    #[arg(long, default_value_t = 9000)]
    per_worker: usize,
    /// Handshakes in flight, all workers together.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// User id prefix.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// Connect with TLS, trusting the CA certificate in this PEM file (binary protocol only).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Name the server's certificate carries (with --tls-ca).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

#[derive(Args, Clone)]
struct Load {
    /// Receiving connections.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per second (0 = as fast as the publishers go).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Concurrent publisher connections to the HTTP API.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Seconds to wait for stragglers after the last publish.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Unicast: users per publish request (each gets its own stored message).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Receive over WebSocket (`GET /ws` on --http, binary mode) instead of raw TCP.
    #[arg(long)]
    ws: bool,
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Worker { spec } = &cli.cmd {
        let spec: WorkerSpec = serde_json::from_str(spec).expect("worker spec from coordinator");
        if let Err(e) = worker::run(spec) {
            eprintln!("worker failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        let r = match cli.cmd {
            Cmd::Idle {
                common,
                conns,
                hold,
                ws,
            } => idle(common, conns, hold, ws).await,
            Cmd::Hostile { common, hostile } => hostile::run(common, hostile).await,
            Cmd::Flood { common, flood } => flood::run(common, flood).await,
            Cmd::Soak { common, soak } => soak::run(common, soak).await,
            Cmd::Fanout {
                common,
                load,
                broadcast,
            } => {
                deliver(
                    common,
                    load,
                    if broadcast {
                        Target::Broadcast
                    } else {
                        Target::Room
                    },
                )
                .await
            }
            Cmd::Unicast { common, load } => deliver(common, load, Target::Users).await,
            Cmd::Churn {
                common,
                rate,
                seconds,
                workers,
            } => churn(common, rate, seconds, workers).await,
            Cmd::Worker { .. } => unreachable!("handled above"),
        };
        match r {
            Ok(ok) => i32::from(!ok),
            Err(e) => {
                eprintln!("push-bench: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}

type Res = Result<bool, Box<dyn std::error::Error>>;

/// The TLS name and CA PEM for workers, from --tls-ca and --tls-name.
fn tls_of(c: &Common) -> Option<(String, String)> {
    c.tls_ca.as_ref().map(|path| {
        let pem = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read --tls-ca {}: {e}", path.display()));
        (c.tls_name.clone(), pem)
    })
}

fn specs(c: &Common, conns: usize, mode: Mode) -> Vec<WorkerSpec> {
    let parts = split(conns, c.per_worker);
    let per = (c.concurrency / parts.len()).max(1);
    parts
        .into_iter()
        .map(|(first, count)| WorkerSpec {
            tls: tls_of(c),
            addr: c.addr.clone(),
            secret: c.secret.clone(),
            user_prefix: c.user_prefix.clone(),
            first,
            count,
            concurrency: per,
            mode: mode.clone(),
        })
        .collect()
}

fn server_figures(pid: Option<u32>, fig: &mut Map<String, Value>, prefix: &str) {
    if let Some(pid) = pid {
        if let Some(r) = procstat::rss_bytes(pid) {
            fig.insert(format!("{prefix}server_rss_bytes"), json!(r));
        }
        if let Some(f) = procstat::open_fds(pid) {
            fig.insert(format!("{prefix}server_fds"), json!(f));
        }
    }
}

async fn idle(mut c: Common, conns: usize, hold: f64, ws: bool) -> Res {
    let pid = c.server_pid;
    let rss0 = pid.and_then(procstat::rss_bytes);
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let mode = if ws {
        c.addr = c.http.to_string();
        Mode::IdleWs
    } else {
        Mode::Idle
    };
    let mut workers = Workers::spawn(specs(&c, conns, mode))?;
    let ready = workers.wait_ready(Duration::from_secs(600)).await;
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let rss1 = pid.and_then(procstat::rss_bytes);
    let mut fig = Map::new();
    let transport = match (ws, c.tls_ca.is_some()) {
        (true, _) => "websocket",
        (false, true) => "tcp+tls",
        (false, false) => "tcp",
    };
    fig.insert("transport".into(), json!(transport));
    fig.insert("connections_requested".into(), json!(conns));
    fig.insert("connections_ok".into(), json!(ready.ok));
    fig.insert("connections_failed".into(), json!(ready.failed));
    fig.insert("handshakes_in_flight".into(), json!(c.concurrency));
    fig.insert("connect_seconds".into(), json!(ready.elapsed.as_secs_f64()));
    fig.insert(
        "connects_per_second".into(),
        json!((ready.ok as f64 / ready.elapsed.as_secs_f64().max(1e-9)).round()),
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        fig.insert("server_rss_before_bytes".into(), json!(a));
        fig.insert("server_rss_after_bytes".into(), json!(b));
        fig.insert(
            "server_rss_per_connection_bytes".into(),
            json!(((b as f64 - a as f64) / ready.ok.max(1) as f64).round()),
        );
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        fig.insert("server_cpu_seconds_connecting".into(), json!(b - a));
    }
    server_figures(pid, &mut fig, "");
    if let Some(e) = &ready.error {
        fig.insert("first_error".into(), json!(e));
    }
    let done = workers.stop().await;
    let merged = report::merge(&done);
    fig.insert(
        "connections_lost_while_idle".into(),
        json!(merged.lost_connections),
    );
    report::print("idle", fig);
    Ok(ready.failed == 0 && merged.lost_connections == 0)
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Room,
    Broadcast,
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
    json!({ "to": to, "kind": "bench", "payload": stamped_payload(size) }).to_string()
}

async fn deliver(c: Common, load: Load, target: Target) -> Res {
    let pid = c.server_pid;
    let room = (target == Target::Room).then(|| ROOM.to_string());
    let mode = if load.ws {
        Mode::ReceiveWs { room }
    } else {
        Mode::Receive { room }
    };
    let mut receivers = c.clone();
    if load.ws {
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
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let t0 = Instant::now();
    let publishers = load.publishers.max(1);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (c, load) = (c.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = http::Http::new(c.http);
            let mut failed = 0u64;
            let mut first_error = None;
            for i in (p..load.messages).step_by(publishers) {
                if load.rate > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / load.rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let b = body(target, i, &load, &c.user_prefix);
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
            (failed, first_error)
        }));
    }
    let mut publish_failed = 0;
    let mut publish_error = None;
    for t in tasks {
        let (f, e) = t.await?;
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
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    let mut fig = Map::new();
    fig.insert(
        "transport".into(),
        json!(if load.ws { "websocket" } else { "tcp" }),
    );
    fig.insert("receivers".into(), json!(ready.ok));
    fig.insert("receivers_failed".into(), json!(ready.failed));
    fig.insert("messages".into(), json!(load.messages));
    if target == Target::Users {
        fig.insert("users_per_request".into(), json!(load.batch.max(1)));
        fig.insert(
            "accepted_per_second".into(),
            json!((expected as f64 / publish_secs.max(1e-9)).round()),
        );
    }
    fig.insert("payload_bytes".into(), json!(load.size));
    fig.insert(
        "rate_requested".into(),
        if load.rate > 0.0 {
            json!(load.rate)
        } else {
            json!("max")
        },
    );
    fig.insert("publish_seconds".into(), json!(publish_secs));
    fig.insert(
        "publish_rate_achieved".into(),
        json!((load.messages as f64 / publish_secs.max(1e-9)).round()),
    );
    fig.insert("publish_failures".into(), json!(publish_failed));
    if let Some(e) = publish_error {
        fig.insert("publish_first_error".into(), json!(e));
    }
    server_figures(pid, &mut fig, "");
    let done = workers.stop().await;
    let m = report::merge(&done);
    report::deliveries(&mut fig, expected, &m);
    let secs = t_last.as_secs_f64().max(1e-9);
    fig.insert("delivery_seconds".into(), json!(secs));
    fig.insert(
        "deliveries_per_second".into(),
        json!((m.received as f64 / secs).round()),
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        fig.insert("server_cpu_seconds".into(), json!(b - a));
        fig.insert(
            "server_cpu_us_per_delivery".into(),
            json!(((b - a) * 1e6 / m.received.max(1) as f64 * 1000.0).round() / 1000.0),
        );
    }
    fig.insert("latency".into(), report::latency(&m.hist));
    if let Some(e) = m.error {
        fig.insert("first_error".into(), json!(e));
    }
    let name = match target {
        Target::Room => "fanout-room",
        Target::Broadcast => "fanout-broadcast",
        Target::Users => "unicast",
    };
    report::print(name, fig);
    Ok(m.received == expected && m.duplicates == 0 && publish_failed == 0)
}

async fn churn(c: Common, rate: f64, seconds: f64, workers_n: usize) -> Res {
    let pid = c.server_pid;
    let rss0 = pid.and_then(procstat::rss_bytes);
    let fds0 = pid.and_then(procstat::open_fds);
    let n = workers_n.max(1);
    let per = (c.concurrency / n).max(1);
    let specs: Vec<WorkerSpec> = (0..n)
        .map(|w| WorkerSpec {
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
    let mut fig = Map::new();
    fig.insert("rate_requested".into(), json!(rate));
    fig.insert("seconds".into(), json!(seconds));
    fig.insert("cycles_ok".into(), json!(m.cycles_ok));
    fig.insert("cycles_failed".into(), json!(m.cycles_failed));
    fig.insert(
        "cycles_per_second".into(),
        json!((m.cycles_ok as f64 / elapsed).round()),
    );
    fig.insert("connect_auth_latency".into(), report::latency(&m.hist));
    if let (Some(a), Some(b)) = (rss0, pid.and_then(procstat::rss_bytes)) {
        fig.insert("server_rss_before_bytes".into(), json!(a));
        fig.insert("server_rss_after_bytes".into(), json!(b));
    }
    if let (Some(a), Some(b)) = (fds0, pid.and_then(procstat::open_fds)) {
        fig.insert("server_fds_before".into(), json!(a));
        fig.insert("server_fds_after".into(), json!(b));
    }
    if let Some(e) = m.error {
        fig.insert("first_error".into(), json!(e));
    }
    report::print("churn", fig);
    Ok(m.cycles_failed == 0)
}
