//! Peers in the same harness: with `--peer mqtt` or `--peer nats`, the idle and fan-out
//! scenarios speak MQTT 3.1.1 (Mosquitto) or NATS core (nats-server) instead of this
//! project's protocol. A room is a topic (subject) of the same name, subscribers subscribe at
//! QoS 0, publishers publish to it on their own connections; receivers go through the same
//! counting and timing loop as the push server's.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use push_client::protocol::{Frame, MessageId, PayloadFormat, Push, Stream};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

use crate::mqtt::{self, MqttConn};
use crate::nats::{self, NatsConn};

/// Which server the harness talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub(crate) enum Peer {
    /// This project's server (binary protocol, HTTP API for publishing).
    #[default]
    Push,
    /// An MQTT 3.1.1 broker (Mosquitto).
    Mqtt,
    /// A NATS server, core protocol (no JetStream).
    Nats,
}

pub(crate) fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A TCP connection to `addr`, from `local` if given, without Nagle.
async fn dial(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A subscriber connection to a peer.
pub(crate) enum PeerConn {
    /// MQTT.
    Mqtt(MqttConn),
    /// NATS.
    Nats(NatsConn),
}

impl PeerConn {
    /// Connects as client `name` (MQTT client id, NATS connection name).
    pub(crate) async fn connect(
        peer: Peer,
        addr: SocketAddr,
        name: &str,
        local: Option<IpAddr>,
    ) -> io::Result<PeerConn> {
        let stream = dial(addr, local).await?;
        match peer {
            Peer::Mqtt => Ok(PeerConn::Mqtt(MqttConn::connect(stream, name).await?)),
            Peer::Nats => Ok(PeerConn::Nats(NatsConn::connect(stream, name).await?)),
            Peer::Push => Err(bad("the push server is not a peer")),
        }
    }

    /// Every message sent before returns has been processed by the server.
    pub(crate) async fn barrier(&mut self) -> io::Result<()> {
        match self {
            PeerConn::Mqtt(c) => c.barrier().await,
            PeerConn::Nats(c) => c.barrier().await,
        }
    }

    /// Sends an encoded publish.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            PeerConn::Mqtt(c) => c.send(bytes).await,
            PeerConn::Nats(c) => c.send(bytes).await,
        }
    }

    /// Publishes `payload` to `topic` (QoS 0 / core PUB; nothing waits for the server).
    pub(crate) async fn publish(&mut self, topic: &str, payload: &[u8]) -> io::Result<()> {
        let bytes: BytesMut = match self {
            PeerConn::Mqtt(_) => mqtt::publish_packet(topic, payload),
            PeerConn::Nats(_) => nats::publish_op(topic, payload),
        };
        self.send(&bytes).await
    }
}

impl crate::worker::PushSource for PeerConn {
    async fn join(&mut self, room: String) -> Result<(), String> {
        let r = match self {
            PeerConn::Mqtt(c) => c.subscribe(&room).await,
            PeerConn::Nats(c) => c.subscribe(&room).await,
        };
        r.map_err(|e| e.to_string())
    }

    async fn next_frame(&mut self) -> Result<Frame, String> {
        let payload = match self {
            PeerConn::Mqtt(c) => c.next_publish().await,
            PeerConn::Nats(c) => c.next_message().await,
        }
        .map_err(|e| e.to_string())?;
        // Position 0: the receive loop counts and times it like a transient message (QoS 0
        // has no position to check order or duplicates against).
        Ok(Frame::Push(Push {
            id: MessageId::default(),
            stream: Stream::Broadcast,
            position: 0,
            timestamp_ms: 0,
            kind: String::new(),
            format: PayloadFormat::OPAQUE,
            payload,
        }))
    }

    async fn send_frame(&mut self, _frame: Frame) -> Result<(), String> {
        Err("peers are not sent push frames".into())
    }
}

/// Publisher `first` of `step`: publishes messages `first, first + step, ...` below
/// `load.messages` to `topic` at `load.rate` from `t0` (0 = as fast as the socket takes them),
/// then waits until the server has processed them all. Returns the messages that failed and
/// the first error.
pub(crate) async fn publish_share(
    peer: Peer,
    addr: SocketAddr,
    topic: &str,
    (first, step): (usize, usize),
    load: &crate::cli::Load,
    t0: std::time::Instant,
) -> (u64, Option<String>) {
    let share = (first..load.messages).step_by(step.max(1));
    let all = share.len() as u64;
    let name = format!("bench-publisher-{first}");
    let mut conn = match PeerConn::connect(peer, addr, &name, None).await {
        Ok(c) => c,
        Err(e) => return (all, Some(format!("publisher connect: {e}"))),
    };
    for (sent, i) in share.enumerate() {
        if load.rate > 0.0 {
            let due = t0 + std::time::Duration::from_secs_f64(i as f64 / load.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let payload = crate::spec::stamped_payload(load.size);
        if let Err(e) = conn.publish(topic, payload.as_bytes()).await {
            return (all - sent as u64, Some(format!("publish: {e}")));
        }
    }
    match conn.barrier().await {
        Ok(()) => (0, None),
        Err(e) => (all, Some(format!("publisher barrier: {e}"))),
    }
}
