//! The command line: scenarios and the options they share.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::coordinator::split;
use crate::spec::{Mode, WorkerSpec};
use crate::{flood, hostile, soak};

/// Load-test harness for the push server.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
        /// Every connection joins this room and then idles (the membership's memory counts).
        #[arg(long)]
        room: Option<String>,
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
    /// Durable PUBLISHes over the binary protocol, K in flight per connection:
    /// PUBLISH -> PUBLISH_ACK latency (with its maximum) and accepted messages per second.
    PublishAck {
        #[command(flatten)]
        common: Common,
        /// Publishing connections (tasks of this process), each to a room of its own.
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// PUBLISHes awaiting their PUBLISH_ACK per connection.
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        /// Messages, all connections together.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 100)]
        size: usize,
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
pub(crate) struct Common {
    /// Server's binary-protocol address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub addr: String,
    /// Server's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub http: SocketAddr,
    /// JWT secret the server was started with.
    #[arg(long, env = "PUSH_JWT_SECRET", default_value = "dev-secret-change-me")]
    pub secret: String,
    /// API token the server accepts.
    #[arg(long, env = "PUSH_API_TOKEN", default_value = "dev-api-token")]
    pub api_token: String,
    /// Server pid, for RSS and CPU figures; several (comma-separated or repeated) for the
    /// nodes of a cluster, whose figures are summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Source addresses to connect from, e.g. `127.0.0.2-127.0.0.7` or a comma list: worker
    /// `i` uses address `i mod n`, so each has its own ephemeral ports (about 28,000 per
    /// source address and server address).
    #[arg(long, value_parser = parse_ips)]
    pub source_ips: Option<SourceIps>,
    /// Most connections per worker process.
    #[arg(long, default_value_t = 9000)]
    pub per_worker: usize,
    /// Handshakes in flight, all workers together.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// User id prefix.
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    /// Connect with TLS, trusting the CA certificate in this PEM file (binary protocol only;
    /// fanout then publishes as with --binary-publish, since the HTTP API speaks TLS too).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Name the server's certificate carries (with --tls-ca).
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// The server is a peer for comparison: an MQTT 3.1.1 broker or a NATS server at --addr
    /// (idle and fanout only; rooms are topics, QoS 0, publishers on their own connections).
    #[arg(long, value_enum, default_value_t = crate::peer::Peer::Push)]
    pub peer: crate::peer::Peer,
}

#[derive(Args, Clone)]
pub(crate) struct Load {
    /// Receiving connections.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per second (0 = as fast as the publishers go).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Concurrent publisher connections to the HTTP API.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Seconds to wait for stragglers after the last publish.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,
    /// Unicast: users per publish request (each gets its own stored message).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Receive over WebSocket (`GET /ws` on --http, binary mode) instead of raw TCP.
    #[arg(long)]
    pub ws: bool,
    /// Receive over WebSocket in the JSON text mode (`push.v1.json`).
    #[arg(long)]
    pub ws_json: bool,
    /// Receivers reconnect (the SDK's client: resume, dedupe) and publishers retry each
    /// message under its id until accepted: for runs where a node dies.
    #[arg(long)]
    pub resilient: bool,
    /// SIGKILL this process (a node) `--kill-after` seconds into publishing.
    #[arg(long, requires = "resilient")]
    pub kill_pid: Option<u32>,
    /// Seconds into publishing before `--kill-pid` is killed.
    #[arg(long, default_value_t = 5.0)]
    pub kill_after: f64,
    /// Publish to the room with binary PUBLISH frames on connections of their own instead of
    /// the HTTP API (needs the server's allow_client_publish; implied by --tls-ca).
    #[arg(long)]
    pub binary_publish: bool,
    /// Publish transient messages (not stored, position 0; protocol version 2 receivers).
    #[arg(long, conflicts_with = "resilient")]
    pub transient: bool,
}

impl Cmd {
    /// Why this scenario cannot run with the `--peer` given, if it cannot: only idle and
    /// fanout to a room, over plain TCP, speak MQTT and NATS.
    pub(crate) fn peer_refusal(&self) -> Option<String> {
        let common = match self {
            Cmd::Idle { common, .. }
            | Cmd::Fanout { common, .. }
            | Cmd::Unicast { common, .. }
            | Cmd::PublishAck { common, .. }
            | Cmd::Churn { common, .. }
            | Cmd::Soak { common, .. }
            | Cmd::Hostile { common, .. }
            | Cmd::Flood { common, .. } => common,
            Cmd::Worker { .. } => return None,
        };
        if common.peer == crate::peer::Peer::Push {
            return None;
        }
        let speaks = match self {
            Cmd::Idle { ws, .. } => !ws,
            Cmd::Fanout {
                load, broadcast, ..
            } => {
                !(*broadcast
                    || load.ws
                    || load.ws_json
                    || load.resilient
                    || load.transient
                    || load.binary_publish)
            }
            _ => false,
        };
        if common.tls_ca.is_some() || !speaks {
            return Some(
                "--peer works with idle and fanout to a room over plain TCP only".to_string(),
            );
        }
        None
    }
}

/// The TLS name and CA PEM for workers, from --tls-ca and --tls-name.
pub(crate) fn tls_of(c: &Common) -> Option<(String, String)> {
    c.tls_ca.as_ref().map(|path| {
        let pem = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read --tls-ca {}: {e}", path.display()));
        (c.tls_name.clone(), pem)
    })
}

/// Source addresses given with `--source-ips`.
#[derive(Debug, Clone)]
pub(crate) struct SourceIps(pub Vec<std::net::IpAddr>);

/// `a.b.c.x-a.b.c.y` (IPv4, last octet counts up) or `ip,ip,...`.
fn parse_ips(s: &str) -> Result<SourceIps, String> {
    let bad = |e: std::net::AddrParseError| format!("{s:?}: {e}");
    let ips = if let Some((from, to)) = s.split_once('-') {
        let (from, to): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (from.parse().map_err(bad)?, to.parse().map_err(bad)?);
        let (a, b) = (u32::from(from), u32::from(to));
        if b < a || b - a > 255 {
            return Err(format!("{s:?}: a range of 1 to 256 addresses, low to high"));
        }
        (a..=b)
            .map(|x| std::net::Ipv4Addr::from(x).into())
            .collect()
    } else {
        s.split(',')
            .map(|p| p.trim().parse().map_err(bad))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(SourceIps(ips))
}

impl Common {
    /// The server processes to measure.
    pub(crate) fn servers(&self) -> crate::procstat::Servers {
        crate::procstat::Servers(self.server_pid.clone())
    }

    /// The source address of worker `i`, when `--source-ips` gives any.
    pub(crate) fn source_ip(&self, i: usize) -> Option<std::net::IpAddr> {
        let ips = &self.source_ips.as_ref()?.0;
        ips.get(i % ips.len().max(1)).copied()
    }
}

/// One worker spec per process for `conns` connections in `mode`.
pub(crate) fn specs(c: &Common, conns: usize, mode: Mode) -> Vec<WorkerSpec> {
    let parts = split(conns, c.per_worker);
    let per = (c.concurrency / parts.len()).max(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (first, count))| WorkerSpec {
            source_ip: c.source_ip(i),
            tls: tls_of(c),
            addr: c.addr.clone(),
            secret: c.secret.clone(),
            user_prefix: c.user_prefix.clone(),
            first,
            count,
            concurrency: per,
            mode: mode.clone(),
            peer: c.peer,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_ranges_and_lists() {
        let r = parse_ips("127.0.0.2-127.0.0.7").unwrap().0;
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].to_string(), "127.0.0.2");
        assert_eq!(r[5].to_string(), "127.0.0.7");
        let l = parse_ips("127.0.0.9, ::1").unwrap().0;
        assert_eq!(l.len(), 2);
        assert!(parse_ips("127.0.0.7-127.0.0.2").is_err());
        assert!(parse_ips("127.0.0.1-127.0.2.1").is_err());
        assert!(parse_ips("nope").is_err());
    }
}
