//! `publish-ack`: durable PUBLISHes over the binary protocol, K in flight per connection, each
//! connection publishing to a room of its own (joined first, no echo): PUBLISH -> PUBLISH_ACK
//! latency (including its maximum: a stall shows there) and accepted messages per second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use push_client::protocol::{Frame, HelloOptions, Join, PayloadFormat, Publish};
use push_client::{ConnectOptions, Connection};
use serde::Serialize;

use crate::{Common, Res};

/// Slow acks listed in the report.
const MAX_SLOW: usize = 200;

/// The figures of one run.
#[derive(Serialize)]
struct AckReport {
    connections: usize,
    in_flight_per_connection: usize,
    payload_bytes: usize,
    messages_requested: usize,
    messages_acked: u64,
    seconds: f64,
    acked_per_second: f64,
    ack_p50_us: u64,
    ack_p99_us: u64,
    ack_p999_us: u64,
    ack_max_us: u64,
    /// Acks slower than 10 ms, with the time since the start of the run each arrived at
    /// (the first `MAX_SLOW` of them; `slow_acks_total` counts all).
    slow_acks: Vec<(f64, u64)>,
    slow_acks_total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_us_per_message: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// What one connection did.
struct Outcome {
    hist: Histogram<u64>,
    acked: u64,
    slow: Vec<(f64, u64)>,
    error: Option<String>,
}

/// Runs the scenario.
pub(crate) async fn run(
    c: Common,
    conns: usize,
    in_flight: usize,
    messages: usize,
    size: usize,
) -> Res {
    let pid = c.servers();
    let addr: SocketAddr = c.addr.parse()?;
    let conns = conns.max(1);
    let cpu0 = pid.cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let token = crate::spec::bench_token(&c.secret, format!("{}-ack-{i}", c.user_prefix));
        let share = messages / conns + usize::from(i < messages % conns);
        let room = format!("{}-ack-{i}", c.user_prefix);
        let publisher = Publisher {
            addr,
            token,
            room,
            messages: share,
            in_flight: in_flight.max(1),
            size,
            t0,
        };
        tasks.spawn(publisher.run());
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut acked, mut slow, mut first_error) = (0, Vec::new(), None);
    while let Some(r) = tasks.join_next().await {
        let o = r?;
        hist.add(&o.hist)?;
        acked += o.acked;
        slow.extend(o.slow);
        first_error = first_error.or(o.error);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu0.zip(pid.cpu_seconds()).map(|(a, b)| b - a);
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    let slow_acks_total = slow.len();
    slow.truncate(MAX_SLOW);
    let ok = acked as usize == messages && first_error.is_none();
    crate::report::print(
        "publish-ack",
        AckReport {
            connections: conns,
            in_flight_per_connection: in_flight,
            payload_bytes: size,
            messages_requested: messages,
            messages_acked: acked,
            seconds,
            acked_per_second: (acked as f64 / seconds.max(1e-9)).round(),
            ack_p50_us: hist.value_at_quantile(0.5),
            ack_p99_us: hist.value_at_quantile(0.99),
            ack_p999_us: hist.value_at_quantile(0.999),
            ack_max_us: hist.max(),
            slow_acks: slow,
            slow_acks_total,
            server_cpu_us_per_message: cpu.map(|s| s * 1e6 / acked.max(1) as f64),
            first_error,
        },
    );
    Ok(ok)
}

/// One publishing connection's part of the run.
struct Publisher {
    addr: SocketAddr,
    token: String,
    room: String,
    messages: usize,
    in_flight: usize,
    size: usize,
    t0: Instant,
}

impl Publisher {
    async fn run(self) -> Outcome {
        let mut out = Outcome {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            acked: 0,
            slow: Vec::new(),
            error: None,
        };
        if let Err(e) = self.publish_all(&mut out).await {
            out.error = Some(e);
        }
        out
    }

    async fn publish_all(&self, out: &mut Outcome) -> Result<(), String> {
        let Publisher {
            addr,
            ref token,
            ref room,
            messages,
            in_flight,
            size,
            t0,
        } = *self;
        let opts = ConnectOptions {
            token: token.clone(),
            timeout: Some(Duration::from_secs(30)),
            hello_options: HelloOptions {
                no_echo: true,
                ..HelloOptions::default()
            },
            ..ConnectOptions::default()
        };
        let mut conn = Connection::connect(addr, &opts)
            .await
            .map_err(|e| e.to_string())?;
        conn.request(Frame::Join(Join {
            room: room.clone(),
            resume_after: None,
        }))
        .await
        .map_err(|e| format!("JOIN: {e}"))?;
        let payload = Bytes::from(vec![b'x'; size]);
        let mut sent: HashMap<u32, Instant> = HashMap::with_capacity(in_flight);
        let mut next = 0;
        while (out.acked as usize) < messages {
            while next < messages && sent.len() < in_flight {
                let frame = Frame::Publish(Publish {
                    room: room.clone(),
                    key: String::new(),
                    kind: "bench".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: payload.clone(),
                    transient: false,
                });
                let seq = conn.send(frame).await.map_err(|e| e.to_string())?;
                sent.insert(seq, Instant::now());
                next += 1;
            }
            let p = tokio::time::timeout(Duration::from_secs(30), conn.next())
                .await
                .map_err(|_| "no PUBLISH_ACK within 30 s".to_string())?
                .map_err(|e| e.to_string())?;
            match p.frame {
                Frame::PublishAck(_) => {
                    let Some(at) = sent.remove(&p.seq) else {
                        continue;
                    };
                    let us = at.elapsed().as_micros() as u64;
                    out.hist.record(us.max(1)).ok();
                    if us > 10_000 {
                        out.slow.push((t0.elapsed().as_secs_f64(), us));
                    }
                    out.acked += 1;
                }
                Frame::Error(e) => return Err(format!("ERROR {}: {}", e.code.name(), e.reason)),
                _ => {}
            }
        }
        Ok(())
    }
}
