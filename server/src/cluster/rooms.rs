//! Rooms and broadcast across nodes (publishing them is `room_publish`). Each node runs
//! one actor per room it has members in, and one for the broadcast stream: it delivers what
//! the leader republishes in position order, fills gaps from the stream, and serialises the
//! room's JOIN (membership, replay after a position or an explicit GAP, then OK with the
//! tail), LEAVE and client PUBLISH, so they take effect in the order a connection sent them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use push_protocol::{encode_to_bytes, ErrorBody, ErrorCode, Frame, Gap, Packet, PublishAck};
use tokio::sync::{mpsc, oneshot};

use super::engine::{ClusterEngine, Tail};
use super::js::{last_for_subject, next_for_subject, JsError};
use super::names::header_u64;
use super::names::{self, stream_token};
use super::no_echo::OwnPublishes;
use crate::delivery::Message;
use crate::hub::{Conn, FanOut, Stamp};
use crate::stream::StreamKey;

/// How often an actor checks that its room still has members here.
const CHECK: Duration = Duration::from_secs(2);

/// Requests to a room's (or the broadcast stream's) actor.
pub enum Cmd {
    /// JOIN with optional replay after a position; answered on the connection.
    Join {
        /// The joining connection.
        conn: Arc<Conn>,
        /// Replay the room after this position.
        resume_after: Option<u64>,
        /// The request's Sequence.
        seq: u32,
    },
    /// LEAVE; answered on the connection.
    Leave {
        /// The leaving connection.
        conn: Arc<Conn>,
        /// The request's Sequence.
        seq: u32,
    },
    /// Client PUBLISH to the room; answered on the connection.
    Publish {
        /// The publishing connection (must be a member).
        conn: Arc<Conn>,
        /// The request's Sequence.
        seq: u32,
        /// The message.
        msg: Message,
    },
    /// Start the room's actor if none runs (members were added through the API).
    Watch,
    /// Broadcast only: replay after a position to a connecting client, then register it.
    Resume {
        /// The connecting client.
        conn: Arc<Conn>,
        /// Replay after this position.
        after: u64,
        /// Answered once it is registered.
        done: oneshot::Sender<Result<(), ErrorCode>>,
    },
}

/// The way to a running room actor.
pub(crate) type Handle = mpsc::UnboundedSender<Cmd>;

impl ClusterEngine {
    /// Starts the broadcast actor (it lives as long as the engine).
    pub(crate) fn start_broadcast(self: &Arc<Self>) {
        let key = StreamKey::Broadcast;
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_actors().insert(stream_token(&key), tx);
        tokio::spawn(run(self.clone(), key, rx));
    }

    fn lock_actors(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Handle>> {
        self.room_actors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// JOIN, LEAVE or client PUBLISH of a connection, in order with its other room requests
    /// (counted against its in-flight limit until the room's actor has handled it).
    pub fn room_request(self: &Arc<Self>, room: &str, cmd: Cmd) {
        let conn = match &cmd {
            Cmd::Join { conn, .. } | Cmd::Leave { conn, .. } | Cmd::Publish { conn, .. } => {
                conn.clone()
            }
            Cmd::Resume { .. } | Cmd::Watch => return,
        };
        conn.begin_request();
        self.to_room(&StreamKey::room(room), cmd);
    }

    /// Makes sure the room's actor runs on this node.
    pub(crate) fn watch_room(self: &Arc<Self>, key: &StreamKey) {
        self.to_room(key, Cmd::Watch);
    }

    /// Hands `cmd` to the stream's actor, starting one when none runs.
    fn to_room(self: &Arc<Self>, key: &StreamKey, cmd: Cmd) {
        let tok = stream_token(key);
        let mut cmd = cmd;
        for _ in 0..2 {
            let handle = {
                let mut actors = self.lock_actors();
                match actors.get(&tok) {
                    Some(h) if !h.is_closed() => h.clone(),
                    _ => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        actors.insert(tok.clone(), tx.clone());
                        tokio::spawn(run(self.clone(), key.clone(), rx));
                        tx
                    }
                }
            };
            match handle.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
        }
    }

    /// Replays broadcast after `after` to a connecting client, then registers it, in order
    /// with live broadcast messages.
    pub(crate) async fn resume_broadcast(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        after: u64,
    ) -> Result<(), ErrorCode> {
        let (done, rx) = oneshot::channel();
        self.to_room(&StreamKey::Broadcast, Cmd::Resume { conn, after, done });
        rx.await.map_err(|_| ErrorCode::SHUTTING_DOWN)?
    }

    /// Queues `frame` to `conn` with Sequence `seq`.
    pub(crate) fn reply(&self, conn: &Conn, seq: u32, frame: Frame) {
        if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), &self.options) {
            let _ = self.hub.send_conn(conn, bytes);
        }
    }

    /// Answers the request `seq` of `conn` with ERROR.
    pub(crate) fn refuse(&self, conn: &Conn, seq: u32, code: ErrorCode, reason: String) {
        self.reply(conn, seq, Frame::Error(ErrorBody { code, reason }));
    }

    /// Queues a live message to the stream's connections here, but connection `skip`, and
    /// counts the deliveries.
    fn send_live(&self, key: &StreamKey, frame: &Bytes, stamp: Stamp, skip: Option<u64>) {
        let fan = self.send_to(key, frame, stamp, skip);
        self.count_delivered(key.scenario(), fan);
    }

    /// Queues `frame` to the room's members here (but `skip`), or to everyone for broadcast.
    fn send_to(&self, key: &StreamKey, frame: &Bytes, stamp: Stamp, skip: Option<u64>) -> FanOut {
        match key {
            StreamKey::Room(r) => self.hub.send_room_except(r, frame, stamp, skip),
            _ => self.hub.broadcast(frame, stamp),
        }
    }

    /// First retained position of the stream (the oldest message still stored), if any.
    async fn first_retained(&self, tok: &str) -> Result<Option<u64>, JsError> {
        let first = next_for_subject(&self.rooms, &self.names.room(tok), None).await?;
        Ok(first.and_then(|m| header_u64(&m.headers, names::POSITION)))
    }

    /// Queues to `conn` the stream's messages after `after` up to `upto` (at most one replay
    /// chunk, the newest; older ones are reported with a GAP, as on one node).
    async fn replay_stream(
        &self,
        key: &StreamKey,
        conn: &Conn,
        after: u64,
        upto: u64,
    ) -> Result<(), JsError> {
        if after > upto {
            // The client is ahead of the stream (restored or recreated): say so, never silence.
            self.reply(conn, 0, reset_gap(key.wire(), after, upto + 1));
            return Ok(());
        }
        if after == upto {
            return Ok(());
        }
        let tok = stream_token(key);
        let window_start = upto.saturating_sub(self.settings.replay_chunk as u64) + 1;
        let first = self
            .first_retained(&tok)
            .await?
            .unwrap_or(upto + 1)
            .max(window_start);
        let wire = key.wire();
        if after + 1 < first {
            let gap = Frame::Gap(Gap {
                stream: wire.clone(),
                requested_after: after,
                first_available: first,
            });
            self.reply(conn, 0, gap);
        }
        let from = (after + 1).max(first);
        let subject = self.names.room(&tok);
        let mut at_seq = 0;
        loop {
            let chunk = self
                .read_subject_after(&self.rooms, &subject, &wire, at_seq, upto, 256)
                .await?;
            let Some(last) = chunk.last().map(|c| c.0) else {
                return Ok(());
            };
            at_seq = last;
            for (_, pos, frame) in chunk {
                if pos >= from && self.hub.send_conn(conn, frame).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The GAP telling a client whose position `requested_after` is beyond the stream that the
/// stream's positions start again below it, with `first_available` next (SPEC.md §5.11).
pub(crate) fn reset_gap(
    stream: push_protocol::Stream,
    requested_after: u64,
    first_available: u64,
) -> Frame {
    Frame::Gap(Gap {
        stream,
        requested_after,
        first_available,
    })
}

async fn start_point(engine: &ClusterEngine, key: &StreamKey) -> Tail {
    let tok = stream_token(key);
    loop {
        let r = last_for_subject(&engine.rooms, &engine.names.room(&tok)).await;
        match r {
            Ok(Some(m)) => {
                return Tail {
                    seq: m.sequence,
                    pos: header_u64(&m.headers, names::POSITION).unwrap_or(0),
                }
            }
            // Nothing retained: start after the counter (stream sequence 0 reads from the
            // start of the subject when a gap must be filled).
            Ok(None) => match engine.room_tail(&tok, false).await {
                Ok(t) => return Tail { seq: 0, pos: t.pos },
                Err(e) => tracing::warn!(stream = %key, "reading the counter: {e}; retrying"),
            },
            Err(e) => tracing::warn!(stream = %key, "reading the tail: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fill_gap(
    engine: &ClusterEngine,
    key: &StreamKey,
    from: Tail,
    upto: u64,
    own: &mut OwnPublishes,
) -> Tail {
    let tok = stream_token(key);
    let subject = engine.names.room(&tok);
    let wire = key.wire();
    let mut at = from;
    while at.pos < upto {
        let Ok(batch) = engine
            .read_subject_after(&engine.rooms, &subject, &wire, at.seq, upto, 256)
            .await
        else {
            return at;
        };
        let Some(last) = batch.last() else {
            return Tail {
                seq: at.seq,
                pos: upto.max(at.pos),
            };
        };
        let last_seq = last.0;
        for (seq, pos, frame) in batch {
            if pos > at.pos {
                engine.send_live(key, &frame, Stamp::delivery(key.scenario()), own.take(pos));
                at = Tail { seq, pos };
            }
        }
        at.seq = at.seq.max(last_seq);
    }
    at
}

/// Sends what was stored after `delivered` and not received live.
async fn catch_up(
    engine: &ClusterEngine,
    key: &StreamKey,
    delivered: Tail,
    own: &mut OwnPublishes,
) -> Tail {
    let tok = stream_token(key);
    let Ok(Some(m)) = last_for_subject(&engine.rooms, &engine.names.room(&tok)).await else {
        return delivered;
    };
    match header_u64(&m.headers, names::POSITION) {
        Some(pos) if pos > delivered.pos => fill_gap(engine, key, delivered, pos, own).await,
        _ => delivered,
    }
}

async fn run(engine: Arc<ClusterEngine>, key: StreamKey, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let tok = stream_token(&key);
    let mut sub = match engine.client.subscribe(engine.names.live_room(&tok)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(stream = %key, "cannot subscribe to live messages: {e}");
            engine.lock_actors().remove(&tok);
            return;
        }
    };
    let mut delivered = start_point(&engine, &key).await;
    let mut own = OwnPublishes::default();
    let mut tick = tokio::time::interval(CHECK);
    let mut resync = engine.resync.subscribe();
    let mut tail_check = tokio::time::interval_at(
        tokio::time::Instant::now() + engine.settings.tail_check,
        engine.settings.tail_check,
    );
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(cmd) => {
                    if let Some((pos, conn)) = handle(&engine, &key, cmd, delivered).await {
                        own.note(pos, conn);
                    }
                }
            },
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                let Some(h) = msg.headers.as_ref() else { continue };
                if engine.notify_recall(&key, h) {
                    continue;
                }
                let Some(pos) = header_u64(h, names::POSITION) else { continue };
                let seq = header_u64(h, "Nats-Sequence").unwrap_or(0);
                if pos <= delivered.pos {
                    continue;
                }
                if pos > delivered.pos + 1 {
                    delivered = fill_gap(&engine, &key, delivered, pos - 1, &mut own).await;
                }
                if pos == delivered.pos + 1 {
                    if !engine.expired(h) {
                        if let Some((_, frame)) = engine.push_frame(h, msg.payload.clone(), &key.wire()) {
                            let skip = own.take(pos);
                            engine.deliver_live(h, key.scenario(), || key.clone(), |stamp| {
                                engine.send_to(&key, &frame, stamp, skip)
                            });
                        }
                    }
                    delivered = Tail { seq, pos };
                }
            }
            _ = tick.tick() => {
                if let StreamKey::Room(room) = &key {
                    let mut actors = engine.lock_actors();
                    if rx.is_empty() && engine.hub.room_size(room) == 0 {
                        actors.remove(&tok);
                        return;
                    }
                }
            }
            // Republish is at most once: catch up with the stored tail.
            _ = tail_check.tick() => delivered = catch_up(&engine, &key, delivered, &mut own).await,
            Ok(()) = resync.changed() => {
                delivered = catch_up(&engine, &key, delivered, &mut own).await;
            }
        }
    }
}

/// Handles one request; for a new message published by a connection that wants no echo,
/// returns its position and the connection.
async fn handle(
    engine: &Arc<ClusterEngine>,
    key: &StreamKey,
    cmd: Cmd,
    delivered: Tail,
) -> Option<(u64, u64)> {
    let room = match key {
        StreamKey::Room(r) => r.as_str(),
        _ => "",
    };
    match cmd {
        Cmd::Join {
            conn,
            resume_after,
            seq,
        } => {
            match engine.hub.join(room, &conn) {
                Ok(true) => {
                    if let Some(after) = resume_after {
                        if let Err(e) = engine.replay_stream(key, &conn, after, delivered.pos).await
                        {
                            tracing::warn!(%room, "replay on JOIN failed: {e}");
                        }
                    }
                }
                Ok(false) => {}
                Err(code) => {
                    let reason = if code == ErrorCode::TOO_MANY_ROOMS {
                        "this connection has joined the maximum number of rooms".to_string()
                    } else {
                        format!("cannot join {room}")
                    };
                    conn.end_request();
                    engine.refuse(&conn, seq, code, reason);
                    return None;
                }
            }
            engine.reply(&conn, seq, Frame::Ok(Some(delivered.pos)));
            conn.end_request();
        }
        Cmd::Leave { conn, seq } => {
            engine.hub.leave(room, &conn);
            engine.reply(&conn, seq, Frame::Ok(None));
            conn.end_request();
        }
        Cmd::Publish { conn, seq, msg } => {
            conn.end_request();
            if !conn.in_room(room) {
                let reason = format!("join room {room} before publishing to it");
                engine.refuse(&conn, seq, ErrorCode::FORBIDDEN, reason);
                return None;
            }
            if msg.transient {
                let t = crate::delivery::transient::Transient {
                    hub: &engine.hub,
                    stats: &engine.stats,
                    options: &engine.options,
                };
                let push_seq = engine
                    .seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(frame) =
                    t.publish_for(engine.ids.next(), push_seq, &conn, seq, room, &msg)
                {
                    if let Err(e) = engine.publish_transient(key, frame, None).await {
                        tracing::warn!(%room, "transient message not handed to other nodes: {e}");
                    }
                }
                return None;
            }
            match engine.publish_stream(key, &msg).await {
                Ok(a) => {
                    if let Some(a) = a.first() {
                        let ack = PublishAck {
                            id: a.id,
                            position: a.position,
                            duplicate: a.duplicate,
                        };
                        engine.reply(&conn, seq, Frame::PublishAck(ack));
                        if conn.no_echo() && !a.duplicate {
                            return Some((a.position, conn.id));
                        }
                    }
                }
                Err(e) => engine.refuse(&conn, seq, e.code(), e.to_string()),
            }
        }
        Cmd::Watch => {}
        Cmd::Resume { conn, after, done } => {
            if let Err(e) = engine.replay_stream(key, &conn, after, delivered.pos).await {
                tracing::warn!("broadcast replay on connect failed: {e}");
            }
            let _ = done.send(engine.hub.register(conn));
        }
    }
    None
}
