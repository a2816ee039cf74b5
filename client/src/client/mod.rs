//! The high-level client: reconnects with backoff and jitter, resumes from the positions it has
//! seen, re-joins its rooms, answers heartbeats, detects a dead server, acknowledges (by default)
//! and never hands the application the same message id twice.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use push_protocol::{MessageId, PayloadFormat, Publish, PublishAck, Stream};
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;

mod task;

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
    /// Local address to connect from; `None` = the system's choice.
    pub local_ip: Option<std::net::IpAddr>,
    /// Protocol version 2: send PING this often, and count the server dead after twice this
    /// without any frame from it (sooner than the heartbeat timeout). `None`: only the
    /// server's heartbeat.
    pub ping_interval: Option<Duration>,
    /// Send every frame with a crc32 trailer (a server with `require_checksum` refuses frames
    /// without one).
    pub checksum: bool,
    /// What to ask of the server's frames in HELLO (protocol version 2; see
    /// [`crate::ConnectOptions::hello_options`]).
    pub hello_options: push_protocol::HelloOptions,
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
            ping_interval: None,
            checksum: false,
            hello_options: push_protocol::HelloOptions::default(),
            local_ip: None,
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
    /// Position in the stream; pass it to [`Client::ack`] in manual-ack mode. 0 for a
    /// transient message (see [`Message::is_transient`]).
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

impl Message {
    /// A transient message (protocol version 2): not stored, so nothing to acknowledge, and
    /// never replayed.
    pub fn is_transient(&self) -> bool {
        self.position == 0
    }
}

impl From<Message> for push_protocol::Push {
    /// The message as the PUSH frame that carried it.
    fn from(m: Message) -> Self {
        push_protocol::Push {
            id: m.id,
            stream: m.stream,
            position: m.position,
            timestamp_ms: m.timestamp_ms,
            kind: m.kind,
            format: m.format,
            payload: m.payload,
        }
    }
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
    /// Version 2: the publisher withdrew a message. An application that showed it should
    /// take it back; one that never got it can ignore this.
    Recalled {
        /// The message's id.
        id: push_protocol::MessageId,
        /// Its stream.
        stream: Stream,
        /// Its position.
        position: u64,
    },
    /// The session ended; the client reconnects unless the error is final.
    Disconnected {
        /// Why.
        error: ClientError,
        /// True when the client stops (token rejected, attempts exhausted, closed by the app).
        fatal: bool,
    },
}

/// What the handle asks of the background task.
enum Command {
    Join(String, oneshot::Sender<Result<u64, ClientError>>),
    Leave(String, oneshot::Sender<Result<(), ClientError>>),
    Publish(Publish, oneshot::Sender<Result<PublishAck, ClientError>>),
    Withdraw(
        push_protocol::Withdraw,
        oneshot::Sender<Result<(), ClientError>>,
    ),
    Ack(Stream, u64),
    Ping(oneshot::Sender<Result<Duration, ClientError>>),
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
        tokio::spawn(task::run(config, cmd_rx, ev_tx));
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
            transient: false,
        };
        self.call(|tx| Command::Publish(p, tx)).await
    }

    /// Version 2: publishes a transient message to a room this client has joined: not
    /// stored, no position (the ack's is 0), delivered at most once to the members connected
    /// now. Fails with [`ClientError::Unsupported`] on a version-1 session.
    pub async fn publish_transient(
        &self,
        room: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<PublishAck, ClientError> {
        let p = Publish {
            room: room.into(),
            key: String::new(),
            kind: kind.into(),
            format: PayloadFormat::OPAQUE,
            payload,
            transient: true,
        };
        self.call(|tx| Command::Publish(p, tx)).await
    }

    /// Version 2: withdraws what this user published to `room` with idempotency `key` (see
    /// [`Client::publish`]); the room's members get [`Event::Recalled`]. Fails with
    /// [`ClientError::Unsupported`] on a version-1 session.
    pub async fn withdraw(&self, room: &str, key: &str) -> Result<(), ClientError> {
        let w = push_protocol::Withdraw {
            room: room.into(),
            key: key.into(),
        };
        self.call(|tx| Command::Withdraw(w, tx)).await
    }

    /// Version 2: the round trip of a PING to the server on the current session (the PONG
    /// also means every frame the server queued before it has arrived).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        self.call(Command::Ping).await
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
