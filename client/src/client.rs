//! The high-level client: reconnects with backoff and jitter, resumes from the positions it has
//! seen, re-joins its rooms, answers heartbeats, detects a dead server, acknowledges (by default)
//! and never hands the application the same message id twice.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use push_protocol::{
    Frame, Join, MessageId, PayloadFormat, Publish, PublishAck, Push, Stream, StreamPos,
};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{ConnectOptions, Connection};
use crate::dedupe::Dedupe;
use crate::error::ClientError;

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Other nodes of a cluster: after a failed connect or a lost session the client tries
    /// the next address in turn (`addr`, then these), resuming from its positions there.
    pub fallback: Vec<SocketAddr>,
    /// Access token.
    pub token: String,
    /// Device label.
    pub device: String,
    /// Acknowledge every message as soon as it is handed to the application.
    pub auto_ack: bool,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Consider the server dead after this much silence (default: 3 heartbeat intervals).
    pub dead_after: Option<Duration>,
    /// How many recent message ids to remember for de-duplication.
    pub dedupe_window: usize,
    /// Give up reconnecting after this many consecutive failures (`None` = never).
    pub max_attempts: Option<u32>,
    /// TLS with certificate verification; `None` = plain TCP.
    pub tls: Option<crate::TlsOptions>,
}

impl ClientConfig {
    /// Defaults for `addr` and `token`.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        ClientConfig {
            addr,
            fallback: Vec::new(),
            token: token.into(),
            device: String::new(),
            auto_ack: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            dead_after: None,
            dedupe_window: 4096,
            max_attempts: None,
            tls: None,
        }
    }
}

/// A message handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id (never delivered twice by this client).
    pub id: MessageId,
    /// Stream it belongs to.
    pub stream: Stream,
    /// Position in the stream; pass it to [`Client::ack`] in manual-ack mode.
    pub position: u64,
    /// Server acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application kind.
    pub kind: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// Payload.
    pub payload: Bytes,
}

/// What the client reports.
#[derive(Debug)]
pub enum Event {
    /// A session is established (first connect or reconnect).
    Connected {
        /// Server connection id.
        conn_id: u64,
        /// Authenticated user.
        user: String,
    },
    /// A new message.
    Message(Message),
    /// History the client asked for is gone; positions up to `first_available - 1` were lost.
    Gap {
        /// Stream.
        stream: Stream,
        /// First position still available.
        first_available: u64,
    },
    /// The session ended; the client reconnects unless the error is final.
    Disconnected {
        /// Why.
        error: ClientError,
        /// True when the client stops (token rejected, attempts exhausted, closed by the app).
        fatal: bool,
    },
}

enum Command {
    Join(String, oneshot::Sender<Result<u64, ClientError>>),
    Leave(String, oneshot::Sender<Result<(), ClientError>>),
    Publish(Publish, oneshot::Sender<Result<PublishAck, ClientError>>),
    Ack(Stream, u64),
    Close,
}

/// Handle to a running client.
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Client {
    /// Starts the client; it connects in the background. A rejected token is reported as a
    /// fatal [`Event::Disconnected`] and is not retried.
    pub fn start(config: ClientConfig) -> Client {
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(run(config, cmd_rx, ev_tx));
        Client { commands, events }
    }

    /// Starts the client and waits for its first session; fails on a fatal error.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut c = Client::start(config);
        loop {
            match c.events.recv().await {
                Some(Event::Connected { .. }) => return Ok(c),
                Some(Event::Disconnected { error, fatal: true }) => return Err(error),
                Some(_) => {}
                None => return Err(ClientError::ConnectionLost),
            }
        }
    }

    /// The next event; `None` once the client has stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next message, skipping other events; `None` once the client has stopped.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            match self.events.recv().await? {
                Event::Message(m) => return Some(m),
                _ => continue,
            }
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ClientError>>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| ClientError::ConnectionLost)?;
        rx.await.map_err(|_| ClientError::ConnectionLost)?
    }

    /// Joins a room (re-joined automatically after reconnects, resuming from the last position
    /// seen); returns the room's last position.
    pub async fn join(&self, room: &str) -> Result<u64, ClientError> {
        self.call(|tx| Command::Join(room.to_string(), tx)).await
    }

    /// Leaves a room.
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        self.call(|tx| Command::Leave(room.to_string(), tx)).await
    }

    /// Publishes upstream to a joined room (when the server allows it).
    pub async fn publish(
        &self,
        room: &str,
        kind: &str,
        payload: Bytes,
        key: &str,
    ) -> Result<PublishAck, ClientError> {
        let p = Publish {
            room: room.into(),
            key: key.into(),
            kind: kind.into(),
            format: PayloadFormat::OPAQUE,
            payload,
        };
        self.call(|tx| Command::Publish(p, tx)).await
    }

    /// Acknowledges everything up to `position` in `stream` (manual-ack mode).
    pub fn ack(&self, stream: Stream, position: u64) {
        let _ = self.commands.send(Command::Ack(stream, position));
    }

    /// Closes the session and stops reconnecting.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// State that survives reconnects.
struct State {
    config: ClientConfig,
    positions: HashMap<Stream, u64>,
    rooms: BTreeSet<String>,
    dedupe: Dedupe,
}

/// Why one session ended.
enum SessionEnd {
    Retry(ClientError),
    Stop(ClientError),
}

fn jitter(d: Duration) -> Duration {
    // Cheap randomness: the hasher keys of std are randomly seeded per instance.
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one(0u8) % 1000;
    d.mul_f64(0.5 + r as f64 / 2000.0)
}

async fn run(
    config: ClientConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut state = State {
        dedupe: Dedupe::new(config.dedupe_window),
        config,
        positions: HashMap::new(),
        rooms: BTreeSet::new(),
    };
    let mut failures = 0u32;
    let addrs: Vec<SocketAddr> = std::iter::once(state.config.addr)
        .chain(state.config.fallback.iter().copied())
        .collect();
    let mut next_addr = 0usize;
    loop {
        let addr = addrs[next_addr % addrs.len()];
        let opts = ConnectOptions {
            token: state.config.token.clone(),
            device: state.config.device.clone(),
            resume: state
                .positions
                .iter()
                .filter(|(s, _)| !matches!(s, Stream::Room(_)))
                .map(|(s, p)| StreamPos {
                    stream: s.clone(),
                    position: *p,
                })
                .collect(),
            timeout: Some(Duration::from_secs(10)),
            tls: state.config.tls.clone(),
        };
        let end = match Connection::connect(addr, &opts).await {
            Err(e) if e.is_auth_failure() => SessionEnd::Stop(e),
            Err(e) => SessionEnd::Retry(e),
            Ok(conn) => {
                failures = 0;
                let _ = events.send(Event::Connected {
                    conn_id: conn.auth.conn_id,
                    user: conn.auth.user.clone(),
                });
                session(conn, &mut state, &mut commands, &events).await
            }
        };
        match end {
            SessionEnd::Stop(error) => {
                let _ = events.send(Event::Disconnected { error, fatal: true });
                return;
            }
            SessionEnd::Retry(error) => {
                failures += 1;
                next_addr += 1;
                let give_up = state.config.max_attempts.is_some_and(|m| failures >= m);
                let hint = match &error {
                    ClientError::Closed {
                        reconnect_ms: None, ..
                    } => {
                        let _ = events.send(Event::Disconnected { error, fatal: true });
                        return;
                    }
                    ClientError::Closed {
                        reconnect_ms: Some(ms),
                        ..
                    } => Some(Duration::from_millis(u64::from(*ms))),
                    _ => None,
                };
                let _ = events.send(Event::Disconnected {
                    error,
                    fatal: give_up,
                });
                if give_up || events.is_closed() {
                    return;
                }
                let exp = state
                    .config
                    .backoff_min
                    .saturating_mul(1u32 << failures.min(16))
                    .min(state.config.backoff_max);
                let delay = jitter(hint.unwrap_or(exp).max(exp / 2));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    cmd = commands.recv() => match cmd {
                        None | Some(Command::Close) => return,
                        Some(other) => fail_command(other),
                    }
                }
            }
        }
    }
}

/// Answers a command that arrived while disconnected.
fn fail_command(cmd: Command) {
    match cmd {
        Command::Join(_, tx) => {
            let _ = tx.send(Err(ClientError::ConnectionLost));
        }
        Command::Leave(_, tx) => {
            let _ = tx.send(Err(ClientError::ConnectionLost));
        }
        Command::Publish(_, tx) => {
            let _ = tx.send(Err(ClientError::ConnectionLost));
        }
        Command::Ack(..) | Command::Close => {}
    }
}

enum Pending {
    Join(String, oneshot::Sender<Result<u64, ClientError>>),
    Leave(oneshot::Sender<Result<(), ClientError>>),
    Publish(oneshot::Sender<Result<PublishAck, ClientError>>),
    Rejoin,
}

async fn session(
    mut conn: Connection,
    state: &mut State,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::UnboundedSender<Event>,
) -> SessionEnd {
    let dead_after = state
        .config
        .dead_after
        .unwrap_or(Duration::from_millis(conn.auth.heartbeat_ms.max(1000) * 3));
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    for room in state.rooms.clone() {
        let resume_after = state.positions.get(&Stream::Room(room.clone())).copied();
        match conn.send(Frame::Join(Join { room, resume_after })).await {
            Ok(seq) => {
                pending.insert(seq, Pending::Rejoin);
            }
            Err(e) => return SessionEnd::Retry(e),
        }
    }
    loop {
        tokio::select! {
            packet = tokio::time::timeout(dead_after, conn.recv()) => {
                let packet = match packet {
                    Err(_) => return SessionEnd::Retry(ClientError::Timeout("server silent past the heartbeat timeout")),
                    Ok(Err(e)) => return SessionEnd::Retry(e),
                    Ok(Ok(p)) => p,
                };
                let seq = packet.seq;
                match packet.frame {
                    Frame::Ping => {
                        if let Err(e) = conn.send_packet(&push_protocol::Packet::new(seq, Frame::Pong)).await {
                            return SessionEnd::Retry(e);
                        }
                    }
                    Frame::Push(p) => {
                        if let Err(e) = on_push(&mut conn, state, events, p).await {
                            return SessionEnd::Retry(e);
                        }
                    }
                    Frame::Gap(g) => {
                        state.positions.insert(g.stream.clone(), g.first_available.saturating_sub(1));
                        let _ = events.send(Event::Gap { stream: g.stream, first_available: g.first_available });
                    }
                    Frame::Close(c) => {
                        return SessionEnd::Retry(ClientError::Closed {
                            code: c.code,
                            reason: c.reason,
                            reconnect_ms: c.reconnect_ms,
                        });
                    }
                    Frame::Ok(pos) => match pending.remove(&seq) {
                        Some(Pending::Join(room, tx)) => {
                            state.rooms.insert(room);
                            let _ = tx.send(Ok(pos.unwrap_or(0)));
                        }
                        Some(Pending::Leave(tx)) => {
                            let _ = tx.send(Ok(()));
                        }
                        _ => {}
                    },
                    Frame::PublishAck(a) => {
                        if let Some(Pending::Publish(tx)) = pending.remove(&seq) {
                            let _ = tx.send(Ok(a));
                        }
                    }
                    Frame::Error(e) => {
                        let err = ClientError::Request { code: e.code, reason: e.reason };
                        match pending.remove(&seq) {
                            Some(Pending::Join(_, tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Leave(tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Publish(tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Rejoin) | None => {}
                        }
                    }
                    _ => {}
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else {
                    let _ = conn.close().await;
                    return SessionEnd::Stop(ClientError::ConnectionLost);
                };
                let sent = match cmd {
                    Command::Close => {
                        let _ = conn.close().await;
                        return SessionEnd::Stop(ClientError::Closed {
                            code: push_protocol::ErrorCode(0),
                            reason: "closed by the application".into(),
                            reconnect_ms: None,
                        });
                    }
                    Command::Ack(stream, position) => conn.send(Frame::Ack(vec![StreamPos { stream, position }])).await.map(|_| ()),
                    Command::Join(room, tx) => {
                        let resume_after = state.positions.get(&Stream::Room(room.clone())).copied();
                        conn.send(Frame::Join(Join { room: room.clone(), resume_after })).await.map(|seq| {
                            pending.insert(seq, Pending::Join(room, tx));
                        })
                    }
                    Command::Leave(room, tx) => {
                        state.rooms.remove(&room);
                        conn.send(Frame::Leave(room)).await.map(|seq| {
                            pending.insert(seq, Pending::Leave(tx));
                        })
                    }
                    Command::Publish(p, tx) => conn.send(Frame::Publish(p)).await.map(|seq| {
                        pending.insert(seq, Pending::Publish(tx));
                    }),
                };
                if let Err(e) = sent {
                    return SessionEnd::Retry(e);
                }
            }
        }
    }
}

async fn on_push(
    conn: &mut Connection,
    state: &mut State,
    events: &mpsc::UnboundedSender<Event>,
    p: Push,
) -> Result<(), ClientError> {
    let last = state.positions.entry(p.stream.clone()).or_insert(0);
    if p.position > *last {
        *last = p.position;
    }
    let fresh = state.dedupe.insert(p.id);
    if state.config.auto_ack && p.stream == Stream::User {
        // Only the user's own stream keeps per-recipient state on the server; room and
        // broadcast positions are remembered here for resume and need no ACK. Duplicates are
        // acknowledged too, so the server stops resending them. In manual mode the application
        // acknowledges once it has processed the message; a resent copy is just dropped.
        conn.send(Frame::Ack(vec![StreamPos {
            stream: p.stream.clone(),
            position: p.position,
        }]))
        .await?;
    }
    if fresh {
        let _ = events.send(Event::Message(Message {
            id: p.id,
            stream: p.stream,
            position: p.position,
            timestamp_ms: p.timestamp_ms,
            kind: p.kind,
            format: p.format,
            payload: p.payload,
        }));
    }
    Ok(())
}
