//! The background task behind a [`super::Client`]: one session after another, with backoff
//! and jitter between them, resuming from the positions seen and re-joining rooms; within a
//! session, heartbeats, dead-server detection, acknowledgements and de-duplication.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use push_protocol::{Frame, Join, PublishAck, Push, Stream, StreamPos};
use tokio::sync::{mpsc, oneshot};

use super::{ClientConfig, Command, Event, Message};
use crate::connection::{ConnectOptions, Connection};
use crate::dedupe::Dedupe;
use crate::error::ClientError;

/// State that survives reconnects.
struct State {
    config: ClientConfig,
    positions: HashMap<Stream, u64>,
    /// The epoch `positions` belong to (from the last AUTH_OK; 0 = none yet).
    epoch: u64,
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

pub(super) async fn run(
    config: ClientConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut state = State {
        dedupe: Dedupe::new(config.dedupe_window),
        config,
        positions: HashMap::new(),
        epoch: 0,
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
            local_ip: state.config.local_ip,
            checksum: state.config.checksum,
            hello_options: push_protocol::HelloOptions {
                epoch: state.epoch,
                ..state.config.hello_options
            },
        };
        let end = match Connection::connect(addr, &opts).await {
            Err(e) if e.is_auth_failure() => SessionEnd::Stop(e),
            Err(e) => SessionEnd::Retry(e),
            Ok(conn) => {
                failures = 0;
                new_epoch(&mut state, conn.auth.epoch, &events);
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
        Command::Withdraw(_, tx) => {
            let _ = tx.send(Err(ClientError::ConnectionLost));
        }
        Command::Ping(tx) => {
            let _ = tx.send(Err(ClientError::ConnectionLost));
        }
        Command::Ack(..) | Command::Close => {}
    }
}

enum Pending {
    Join(String, oneshot::Sender<Result<u64, ClientError>>),
    /// A LEAVE or a WITHDRAW: answered by an empty OK.
    Leave(oneshot::Sender<Result<(), ClientError>>),
    Publish(oneshot::Sender<Result<PublishAck, ClientError>>),
    Ping(
        std::time::Instant,
        oneshot::Sender<Result<Duration, ClientError>>,
    ),
    Rejoin,
}

async fn session(
    mut conn: Connection,
    state: &mut State,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::UnboundedSender<Event>,
) -> SessionEnd {
    let mut dead_after = state
        .config
        .dead_after
        .unwrap_or(Duration::from_millis(conn.auth.heartbeat_ms.max(1000) * 3));
    // Version 2: our own PINGs detect a dead server sooner than its heartbeat would.
    let ping_every = state
        .config
        .ping_interval
        .filter(|_| conn.auth.version >= 2);
    let mut pinger = ping_every.map(|d| {
        dead_after = dead_after.min(d * 2);
        tokio::time::interval_at(tokio::time::Instant::now() + d, d)
    });
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut last_heard = tokio::time::Instant::now();
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
            // Silence counts from the last frame heard, not from the last loop turn (our own
            // pings and commands must not keep a dead server alive).
            packet = tokio::time::timeout_at(last_heard + dead_after, conn.recv()) => {
                let packet = match packet {
                    Err(_) => return SessionEnd::Retry(ClientError::Timeout("server silent past the heartbeat timeout")),
                    Ok(Err(e)) => return SessionEnd::Retry(e),
                    Ok(Ok(p)) => p,
                };
                last_heard = tokio::time::Instant::now();
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
                    Frame::Recall(r) => {
                        let _ = events.send(Event::Recalled { id: r.id, stream: r.stream, position: r.position });
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
                    Frame::Pong => {
                        if let Some(Pending::Ping(t0, tx)) = pending.remove(&seq) {
                            let _ = tx.send(Ok(t0.elapsed()));
                        }
                    }
                    Frame::Error(e) => {
                        let err = ClientError::Request { code: e.code, reason: e.reason };
                        match pending.remove(&seq) {
                            Some(Pending::Join(_, tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Leave(tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Publish(tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Ping(_, tx)) => { let _ = tx.send(Err(err)); }
                            Some(Pending::Rejoin) | None => {}
                        }
                    }
                    _ => {}
                }
            }
            _ = async {
                match pinger.as_mut() {
                    Some(p) => { p.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Err(e) = conn.send(Frame::Ping).await {
                    return SessionEnd::Retry(e);
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
                    Command::Withdraw(_, tx) if conn.auth.version < 2 => {
                        let _ = tx.send(Err(ClientError::Unsupported("WITHDRAW needs protocol version 2")));
                        Ok(())
                    }
                    Command::Withdraw(w, tx) => conn.send(Frame::Withdraw(w)).await.map(|seq| {
                        pending.insert(seq, Pending::Leave(tx));
                    }),
                    Command::Publish(p, tx) if p.transient && conn.auth.version < 2 => {
                        let _ = tx.send(Err(ClientError::Unsupported("a transient PUBLISH needs protocol version 2")));
                        Ok(())
                    }
                    Command::Publish(p, tx) => conn.send(Frame::Publish(p)).await.map(|seq| {
                        pending.insert(seq, Pending::Publish(tx));
                    }),
                    Command::Ping(tx) if conn.auth.version < 2 => {
                        let _ = tx.send(Err(ClientError::Unsupported("PING from a client needs protocol version 2")));
                        Ok(())
                    }
                    Command::Ping(tx) => conn.send(Frame::Ping).await.map(|seq| {
                        pending.insert(seq, Pending::Ping(std::time::Instant::now(), tx));
                    }),
                };
                if let Err(e) = sent {
                    return SessionEnd::Retry(e);
                }
            }
        }
    }
}

/// The server's streams are in epoch `epoch` (0: a version-1 server says nothing). Positions
/// of an earlier epoch mean nothing now: the server answers the ones sent in HELLO with GAPs;
/// the rooms about to be re-joined are reset here, with a GAP event each, and re-joined from
/// the start of what the room retains.
fn new_epoch(state: &mut State, epoch: u64, events: &mpsc::UnboundedSender<Event>) {
    if epoch == 0 || epoch == state.epoch {
        return;
    }
    if state.epoch != 0 {
        for (stream, position) in state.positions.iter_mut() {
            if matches!(stream, Stream::Room(_)) && *position != 0 {
                *position = 0;
                let _ = events.send(Event::Gap {
                    stream: stream.clone(),
                    first_available: 1,
                });
            }
        }
    }
    state.epoch = epoch;
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
    // A transient message (position 0, version 2) is neither acknowledged nor resumed from.
    if state.config.auto_ack && p.stream == Stream::User && p.position != 0 {
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
