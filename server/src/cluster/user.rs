//! One actor per user with connections on this node. It alone sends that user's messages to
//! the node's connections, so order holds: it subscribes to the user's live subject (what the
//! stream's leader republishes after storing), fills any gap from the stream (republish is
//! at most once), replays a new connection's backlog before it joins the live flow, and
//! persists the user's acknowledged position cluster-wide. It ends when the node holds no
//! connection of the user any more.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use push_protocol::{ErrorCode, Stream};
use tokio::sync::{mpsc, oneshot};

use super::acks::{AckState, Purged, UNSTORED};
use super::engine::{header_u64, ClusterEngine, Tail};
use super::js::{last_for_subject, next_for_subject, JsError};
use super::names;
use super::retry::{Retry, Step};
use crate::hub::{Conn, Stamp};

/// How often an actor checks that it still has connections (and retries storing an ack
/// record it could not store).
const CHECK: Duration = Duration::from_secs(2);

/// Requests to a user's actor.
pub(crate) enum Cmd {
    /// Replay what the connection has not acknowledged, then register it.
    Attach {
        conn: Arc<Conn>,
        resume: Option<u64>,
        broadcast: Option<u64>,
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    /// A connection acknowledged the user's stream up to a position.
    Ack(u64),
}

/// The way to a running actor.
pub(crate) type Handle = mpsc::UnboundedSender<Cmd>;

impl ClusterEngine {
    /// Hands `cmd` to the user's actor, starting one when none runs.
    pub(crate) async fn to_user(self: &Arc<Self>, user: &str, cmd: Cmd) -> Result<(), ErrorCode> {
        let mut cmd = cmd;
        for _ in 0..2 {
            let handle = {
                let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
                match users.get(user) {
                    Some(h) if !h.is_closed() => h.clone(),
                    _ => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        users.insert(user.to_string(), tx.clone());
                        tokio::spawn(run(self.clone(), user.to_string(), rx));
                        tx
                    }
                }
            };
            match handle.send(cmd) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
        }
        Err(ErrorCode::SHUTTING_DOWN)
    }

    /// The user's stored messages after stream sequence `after_seq` with positions up to
    /// `upto`, at most `limit` of them, in order: (sequence, position, frame).
    async fn read_after(
        &self,
        user: &str,
        after_seq: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, Bytes)>, JsError> {
        let subject = self.names.user(user);
        self.read_subject_after(
            &self.stream,
            &subject,
            &Stream::User,
            after_seq,
            upto,
            limit,
        )
        .await
    }

    /// The sequence of the user's stored message just before position `pos` (0: none), found
    /// by walking from the start of the subject; used to start a replay.
    async fn seq_before(&self, user: &str, pos: u64) -> Result<u64, JsError> {
        let subject = self.names.user(user);
        let mut prev = 0;
        let mut next = 1;
        loop {
            let Some(m) = next_for_subject(&self.stream, &subject, Some(next)).await? else {
                return Ok(prev);
            };
            if header_u64(&m.headers, names::POSITION).unwrap_or(0) >= pos {
                return Ok(prev);
            }
            prev = m.sequence;
            next = m.sequence + 1;
        }
    }

    /// Resends the user's unacknowledged messages (after `acked`, up to `upto`, one replay
    /// chunk) to the user's connections on this node; returns how many.
    async fn resend(&self, user: &str, acked: u64, upto: u64) -> usize {
        let Ok(after) = self.seq_before(user, acked + 1).await else {
            return 0;
        };
        let chunk = self.settings.replay_chunk.max(1);
        let Ok(frames) = self.read_after(user, after, upto, chunk).await else {
            return 0;
        };
        let mut n = 0;
        for (_, pos, frame) in frames {
            if pos > acked {
                self.hub.send_user(user, &frame, Stamp::NONE);
                n += 1;
            }
        }
        n
    }
}

/// Sends `frames` to one connection, waiting while its queue is more than half full so a long
/// backlog never overflows it.
async fn replay_to(conn: &Conn, engine: &ClusterEngine, frames: Vec<(u64, u64, Bytes)>) -> bool {
    let half = engine.settings.replay_chunk.max(2) / 2;
    for (_, _, f) in frames {
        while conn.queued().0 > half {
            if conn.is_closing() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if engine.hub.send_conn(conn, f).is_err() {
            return false;
        }
    }
    true
}

async fn run(engine: Arc<ClusterEngine>, user: String, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let live = engine.names.live_user(&user);
    let mut sub = match engine.client.subscribe(live).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%user, "cannot subscribe to the user's live messages: {e}");
            engine.forget_user(&user);
            return;
        }
    };
    // Subscribed first, then the tail: anything stored later arrives live.
    let mut delivered = loop {
        match engine.tail(&user).await {
            Ok(t) => break t,
            Err(e) => {
                tracing::warn!(%user, "reading the user's tail: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut ack = engine.stored_ack(&user).await.unwrap_or_default();
    let mut retry = Retry::new(engine.settings.retry_interval, engine.settings.max_retries);
    let mut purged = Purged::default();
    let mut tick = tokio::time::interval(CHECK);
    let mut resync = engine.resync.subscribe();
    let mut tail_check = tokio::time::interval_at(
        tokio::time::Instant::now() + engine.settings.tail_check,
        engine.settings.tail_check,
    );
    loop {
        let retry_wait = retry.wait(engine.clock.now().at).unwrap_or(CHECK);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Ack(pos)) => {
                    let mut pos = pos;
                    while let Ok(Cmd::Ack(p)) = rx.try_recv() {
                        pos = pos.max(p);
                    }
                    if pos > ack.acked && pos <= delivered.pos {
                        let want = AckState { acked: pos, ..ack };
                        ack = engine.write_ack(&user, want, ack).await;
                    }
                    if ack.acked >= delivered.pos {
                        retry.stop();
                        engine.purge_acked(&user, ack, delivered, &mut purged, false).await;
                    }
                }
                Some(Cmd::Attach { conn, resume, broadcast, reply }) => {
                    if let Some(r) = resume.filter(|r| *r > ack.acked && *r <= delivered.pos) {
                        ack = engine.write_ack(&user, AckState { acked: r, ..ack }, ack).await;
                    }
                    let result = attach(&engine, &user, &conn, ack.acked, delivered, broadcast).await;
                    if ack.acked < delivered.pos {
                        retry.start(engine.clock.now().at);
                    }
                    let _ = reply.send(result);
                }
            },
            _ = tokio::time::sleep(retry_wait) => {
                match retry.due(engine.clock.now().at) {
                    None => {}
                    Some(_) if ack.acked >= delivered.pos
                        || engine.hub.user_connections(&user).is_empty() => retry.stop(),
                    Some(Step::Resend(attempt)) => {
                        let n = engine.resend(&user, ack.acked, delivered.pos).await;
                        engine.stats.add(&engine.stats.retries, n as u64);
                        tracing::debug!(%user, resent = n, retry = attempt, "resent unacknowledged messages");
                    }
                    Some(Step::Fail) => {
                        let want = AckState { failed: delivered.pos, ..ack };
                        ack = engine.write_ack(&user, want, ack).await;
                        engine.stats.inc(&engine.stats.messages_failed);
                        tracing::warn!(%user, "retries exhausted: unacknowledged messages marked failed until the user reconnects");
                    }
                }
            },
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                let Some(headers) = msg.headers.as_ref() else { continue };
                let Some(pos) = header_u64(headers, names::POSITION) else { continue };
                let seq = header_u64(headers, "Nats-Sequence").unwrap_or(0);
                if pos <= delivered.pos {
                    continue;
                }
                if pos > delivered.pos + 1 {
                    delivered = fill_gap(&engine, &user, delivered, pos - 1).await;
                }
                if pos == delivered.pos + 1 {
                    if !engine.expired(headers) {
                        if let Some((_, frame)) = engine.push_frame(headers, msg.payload.clone(), &Stream::User) {
                            engine.hub.send_user(&user, &frame, Stamp::NONE);
                        }
                    }
                    delivered = Tail { seq, pos };
                    engine.note_tail(&user, delivered);
                    retry.start(engine.clock.now().at);
                }
            }
            _ = tick.tick() => {
                if ack.seq == UNSTORED {
                    if let Ok(stored) = engine.stored_ack(&user).await {
                        ack = engine.write_ack(&user, ack, stored).await;
                    }
                }
                if engine.retire_if_idle(&user, &rx) {
                    engine.purge_acked(&user, ack, delivered, &mut purged, true).await;
                    return;
                }
            }
            // Republish is at most once: catch up with the stored tail.
            _ = tail_check.tick() => {
                delivered = catch_up(&engine, &user, delivered).await;
                engine.purge_acked(&user, ack, delivered, &mut purged, true).await;
            }
            Ok(()) = resync.changed() => delivered = catch_up(&engine, &user, delivered).await,
        }
    }
}

/// Sends what was stored after `delivered` and not received live.
async fn catch_up(engine: &ClusterEngine, user: &str, delivered: Tail) -> Tail {
    let Ok(t) = last_for_subject(&engine.stream, &engine.names.user(user)).await else {
        return delivered;
    };
    match t.and_then(|m| header_u64(&m.headers, names::POSITION)) {
        Some(pos) if pos > delivered.pos => fill_gap(engine, user, delivered, pos).await,
        _ => delivered,
    }
}

/// Sends the stored messages after `from` up to position `upto` to the user's connections.
async fn fill_gap(engine: &ClusterEngine, user: &str, from: Tail, upto: u64) -> Tail {
    let mut at = from;
    while at.pos < upto {
        let Ok(batch) = engine.read_after(user, at.seq, upto, 256).await else {
            return at;
        };
        if batch.is_empty() {
            return at;
        }
        for (seq, pos, frame) in batch {
            if pos > at.pos {
                engine.hub.send_user(user, &frame, Stamp::NONE);
                at = Tail { seq, pos };
            }
        }
    }
    engine.note_tail(user, at);
    at
}

async fn attach(
    engine: &Arc<ClusterEngine>,
    user: &str,
    conn: &Arc<Conn>,
    acked: u64,
    delivered: Tail,
    broadcast: Option<u64>,
) -> Result<(), ErrorCode> {
    if acked < delivered.pos {
        let mut after = engine
            .seq_before(user, acked + 1)
            .await
            .map_err(|_| ErrorCode::STORAGE_UNAVAILABLE)?;
        loop {
            let chunk = engine
                .read_after(
                    user,
                    after,
                    delivered.pos,
                    engine.settings.replay_chunk.max(1),
                )
                .await
                .map_err(|_| ErrorCode::STORAGE_UNAVAILABLE)?;
            let Some(last) = chunk.last().map(|c| c.0) else {
                break;
            };
            after = last;
            let chunk: Vec<_> = chunk.into_iter().filter(|c| c.1 > acked).collect();
            if !replay_to(conn, engine, chunk).await {
                return Err(ErrorCode::SLOW_CONSUMER);
            }
        }
    }
    // Registered by the broadcast actor when the client resumes broadcast, so its replay and
    // the live broadcast flow keep their order; meanwhile this actor waits, so no live user
    // message can slip past the connection either.
    match broadcast {
        Some(after) => engine.resume_broadcast(conn.clone(), after).await,
        None => engine.hub.register(conn.clone()),
    }
}

impl ClusterEngine {
    /// Ends the user's actor when the node holds none of their connections and nothing is
    /// waiting for it (checked under the map's lock, so no request can slip in between).
    fn retire_if_idle(&self, user: &str, rx: &mpsc::UnboundedReceiver<Cmd>) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() || !self.hub.user_connections(user).is_empty() {
            return false;
        }
        users.remove(user);
        true
    }

    fn forget_user(&self, user: &str) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }

    /// Registers a connection of a user and replays what it has not acknowledged.
    pub async fn attach(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        resume: Option<u64>,
        broadcast: Option<u64>,
    ) -> Result<(), ErrorCode> {
        let (reply, rx) = oneshot::channel();
        let user = conn.user.to_string();
        let cmd = Cmd::Attach {
            conn,
            resume,
            broadcast,
            reply,
        };
        self.to_user(&user, cmd).await?;
        rx.await.map_err(|_| ErrorCode::SHUTTING_DOWN)?
    }

    /// A connection acknowledged its user's stream up to `pos`.
    pub async fn ack(self: &Arc<Self>, user: &str, pos: u64) {
        let _ = self.to_user(user, Cmd::Ack(pos)).await;
    }
}
