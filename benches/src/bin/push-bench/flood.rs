//! `flood`: bystanders in room `news` receive a steady fan-out through the HTTP API while
//! authenticated clients flood the server with *valid* frames (ACK, JOIN with replay of a
//! full room, LEAVE/JOIN churn, PUBLISH) as fast as their sockets take them, draining what the
//! server sends back. Reports the bystanders' latency and losses, what the flooders got
//! through, how the server paused or closed them, and its memory. `--kind none` is the
//! baseline the flood rows are compared with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use push_client::protocol::{
    encode_to_bytes, EncodeOptions, Frame, Hello, Join, Packet, PayloadFormat, Publish, Stream,
    StreamPos, MAX_VERSION, MIN_VERSION,
};
use push_client::token::{mint, Claims};
use serde_json::{json, Map};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::coordinator::Workers;
use crate::spec::{stamped_payload, unix_micros, Mode};
use crate::{http, report, specs, Common, Res};

const NEWS: &str = "news";
const BIG: &str = "big";

/// What the flooders send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FloodKind {
    /// No flood: the baseline.
    None,
    /// ACK of the user's stream, position 0 (always valid).
    Ack,
    /// JOIN `big` with resume_after=0 (the room holds --big messages).
    Join,
    /// JOIN `big` resume_after=0, LEAVE `big`, over and over.
    Churn,
    /// PUBLISH to a room the flooder joined (needs allow_client_publish).
    Publish,
}

/// What to run.
#[derive(clap::Args)]
pub(crate) struct FloodArgs {
    /// What the flooders send.
    #[arg(long, value_enum, default_value = "ack")]
    pub kind: FloodKind,
    /// Flooding connections.
    #[arg(long, default_value_t = 1)]
    pub flooders: usize,
    /// Bystanders (members of `news` that read and record latency).
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Publish rate to `news`, messages per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of publishing (and flooding).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Messages put in room `big` first (for the JOIN floods).
    #[arg(long, default_value_t = 1000)]
    pub big: usize,
}

fn encode(frames: impl IntoIterator<Item = Frame>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.into_iter().enumerate() {
        let p = Packet::new(i as u32 + 2, f);
        out.extend_from_slice(&encode_to_bytes(&p, &EncodeOptions::default()).expect("encodes"));
    }
    out
}

fn join(room: &str, resume_after: Option<u64>) -> Frame {
    Frame::Join(Join {
        room: room.into(),
        resume_after,
    })
}

/// The bytes a flooder writes first (after HELLO), and then over and over, with the number of
/// frames in the repeated chunk.
fn flood_bytes(kind: FloodKind, room: &str) -> (Vec<u8>, Vec<u8>, u64) {
    let ack = || {
        Frame::Ack(vec![StreamPos {
            stream: Stream::User,
            position: 0,
        }])
    };
    let frames: Vec<Frame> = match kind {
        FloodKind::None => Vec::new(),
        FloodKind::Ack => (0..4096).map(|_| ack()).collect(),
        FloodKind::Join => (0..512).map(|_| join(BIG, Some(0))).collect(),
        FloodKind::Churn => (0..256)
            .flat_map(|_| [join(BIG, Some(0)), Frame::Leave(BIG.into())])
            .collect(),
        FloodKind::Publish => (0..512)
            .map(|i| {
                Frame::Publish(Publish {
                    room: room.into(),
                    key: String::new(),
                    kind: "flood".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from(format!("flood {i}")),
                    transient: false,
                })
            })
            .collect(),
    };
    let first = if kind == FloodKind::Publish {
        encode([join(room, None)])
    } else {
        Vec::new()
    };
    let n = frames.len() as u64;
    (first, encode(frames), n)
}

/// Counts shared by the flooders.
#[derive(Default)]
struct FloodCounts {
    /// Frames written to the socket (the kernel took them).
    frames: AtomicU64,
    /// Bytes the server sent back.
    bytes_back: AtomicU64,
}

/// One flooder: authenticates over a raw socket, drains whatever comes back, and writes its
/// chunk until `until`.
async fn flooder(c: &Common, i: usize, kind: FloodKind, until: Instant, counts: Arc<FloodCounts>) {
    let Ok(s) = TcpStream::connect(&c.addr).await else {
        return;
    };
    let _ = s.set_nodelay(true);
    let (mut r, mut w) = s.into_split();
    let token = mint(
        c.secret.as_bytes(),
        &Claims {
            sub: format!("{}flooder{i}", c.user_prefix),
            exp: unix_micros() / 1_000_000 + 3600,
            device: None,
            rooms: Vec::new(),
        },
    );
    let hello = Frame::Hello(Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        token,
        device: String::new(),
        resume: vec![],
        options: Default::default(),
    });
    let room = format!("flood-{i}");
    let (first, chunk, per_chunk) = flood_bytes(kind, &room);
    let mut start = encode_to_bytes(&Packet::new(1, hello), &EncodeOptions::default())
        .expect("HELLO encodes")
        .to_vec();
    start.extend_from_slice(&first);
    if w.write_all(&start).await.is_err() {
        return;
    }
    let back = counts.clone();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut r, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    back.bytes_back.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    });
    while Instant::now() < until && !chunk.is_empty() {
        match tokio::time::timeout_at(until.into(), w.write_all(&chunk)).await {
            Ok(Ok(())) => {
                counts.frames.fetch_add(per_chunk, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    if chunk.is_empty() {
        tokio::time::sleep_until(until.into()).await;
    }
    drop(w);
    drain.abort();
}

/// Reads one sample of a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the scenario.
pub(crate) async fn run(c: Common, f: FloodArgs) -> Res {
    let pid = c.servers();
    let mut http = http::Http::new(c.http);
    if matches!(f.kind, FloodKind::Join | FloodKind::Churn) {
        for i in 0..f.big {
            let body = json!({"to": {"room": BIG}, "kind": "fill", "payload": format!("big {i}")});
            http.post("/api/v1/push", &c.api_token, &body.to_string())
                .await?;
        }
    }
    let mut bystanders = Workers::spawn(specs(
        &c,
        f.conns,
        Mode::Receive {
            room: Some(NEWS.into()),
        },
    ))?;
    let ready = bystanders.wait_ready(Duration::from_secs(600)).await;
    let rss0 = pid.rss_bytes();
    let cpu0 = pid.cpu_seconds();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(f.seconds);
    let counts = Arc::new(FloodCounts::default());
    let mut tasks = Vec::new();
    let kind = f.kind;
    for i in 0..f.flooders {
        let (c, counts) = (c.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            flooder(&c, i, kind, until, counts).await
        }));
    }
    let messages = (f.rate * f.seconds) as usize;
    let (publish_failed, rss_peak) = crate::publish::publish_paced(
        &mut http,
        &c.api_token,
        (messages, f.rate, t0),
        &pid,
        rss0.unwrap_or(0),
        |_| {
            json!({"to": {"room": NEWS}, "kind": "bench", "payload": stamped_payload(64)})
                .to_string()
        },
    )
    .await;
    for t in tasks {
        let _ = t.await;
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    let cpu1 = pid.cpu_seconds();
    let expected = (messages * ready.ok) as u64;
    bystanders
        .drain_received(expected, Duration::from_secs(15))
        .await;
    let merged = report::merge(&bystanders.stop().await);
    let metrics = match http.get("/metrics", &c.api_token).await {
        Ok((200, text)) => text,
        _ => String::new(),
    };
    let mut fig = Map::new();
    fig.insert("kind".into(), json!(format!("{:?}", f.kind).to_lowercase()));
    fig.insert("flooders".into(), json!(f.flooders));
    fig.insert("bystanders".into(), json!(ready.ok));
    fig.insert("messages".into(), json!(messages));
    fig.insert("publish_failures".into(), json!(publish_failed));
    report::deliveries(&mut fig, expected, &merged);
    fig.insert("latency".into(), report::latency(&merged.hist));
    let frames = counts.frames.load(Ordering::Relaxed);
    fig.insert("flood_frames_written".into(), json!(frames));
    fig.insert(
        "flood_frames_per_sec".into(),
        json!((frames as f64 / flood_secs).round()),
    );
    fig.insert(
        "flood_bytes_back".into(),
        json!(counts.bytes_back.load(Ordering::Relaxed)),
    );
    for (key, name) in [
        ("server_engine_queue_max", "push_engine_queue_max"),
        (
            "server_paused_engine",
            "push_inbound_paused_total{reason=\"engine\"}",
        ),
        (
            "server_paused_rate",
            "push_inbound_paused_total{reason=\"rate\"}",
        ),
        (
            "server_rate_limited_closes",
            "push_rate_limited_total{kind=\"connection\"}",
        ),
    ] {
        if let Some(v) = metric(&metrics, name) {
            fig.insert(key.into(), json!(v));
        }
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        fig.insert(
            "server_cpu_percent".into(),
            json!(((b - a) / flood_secs * 1000.0).round() / 10.0),
        );
    }
    if let Some(a) = rss0 {
        fig.insert("server_rss_before_bytes".into(), json!(a));
        fig.insert("server_rss_peak_bytes".into(), json!(rss_peak.max(a)));
    }
    report::print("flood", fig);
    Ok(merged.received == expected && merged.duplicates == 0)
}
