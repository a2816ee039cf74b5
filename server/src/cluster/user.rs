//! One actor per user with connections on this node. It alone sends that user's messages to
//! the node's connections, so order holds: it receives what the stream's leader republishes
//! after storing (through the node-wide live subscription), fills any gap from the stream
//! (republish is at most once), replays a new connection's backlog before it joins the live
//! flow, and persists the user's acknowledged position cluster-wide. It sleeps while idle
//! (actors.rs) and ends when the node holds no connection of the user any more.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use push_protocol::{ErrorCode, Stream};
use tokio::sync::{mpsc, oneshot};

use super::acks::{AckState, Purged, UNSTORED};
use super::actors::{Asleep, Start};
use super::engine::{ClusterEngine, Tail};
use super::js::last_for_subject;
use super::names;
use super::names::header_u64;
use super::retry::{Retry, Step};
use super::rooms::reset_gap;
use crate::hub::{Conn, Stamp};
use crate::stream::{StreamKey, SCENARIO_USER};

/// How often an actor retries storing an ack record it could not store.
const CHECK: Duration = Duration::from_secs(2);

/// Requests to a user's actor (kept small: each actor's queue allocates room for several).
pub(crate) enum Cmd {
    /// Replay what the connection has not acknowledged, then register it.
    Attach(Box<Attach>),
    /// A connection acknowledged the user's stream up to a position.
    Ack(u64),
    /// A stored message, as the stream's leader republished it.
    Live(Box<async_nats::Message>),
    /// The user's last connection on this node left: retire unless one came back.
    Left,
    /// Compare what was delivered with the stored tail (live messages may have been missed);
    /// `periodic` (the safety-net check) also purges what is acknowledged and retires an
    /// actor whose user left unnoticed.
    CatchUp { periodic: bool },
}

/// A connection to attach.
pub(crate) struct Attach {
    conn: Arc<Conn>,
    resume: Option<u64>,
    broadcast: Option<u64>,
    reply: oneshot::Sender<Result<(), ErrorCode>>,
}

impl ClusterEngine {
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

/// What a user's actor knows.
struct Actor {
    engine: Arc<ClusterEngine>,
    user: String,
    /// The last message delivered to the node's connections.
    delivered: Tail,
    ack: AckState,
    retry: Retry,
    purged: Purged,
}

// Handlers are awaited through `Box::pin`: the actor's own future then holds only what waits
// between events, not the largest handler's state.
/// Runs a user's actor from where it went to sleep, or from the stored tail and ack record
/// when it starts afresh; it sleeps (ends, leaving its state in the table) when idle.
pub(crate) async fn run(
    engine: Arc<ClusterEngine>,
    user: String,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    from: Option<Asleep>,
) {
    let state = match from {
        Some(s) => s,
        // Registered (in `users`) before the tail is read: anything stored later arrives live.
        None => {
            let (delivered, ack) = Box::pin(async {
                tokio::join!(first_tail(&engine, &user), engine.stored_ack(&user))
            })
            .await;
            Asleep {
                delivered,
                // Unread: taken as not stored yet, so the next check reads and merges it.
                ack: ack.unwrap_or(AckState {
                    seq: UNSTORED,
                    ..AckState::default()
                }),
                purged: Purged::default(),
            }
        }
    };
    let retry = Retry::new(engine.settings.retry_interval, engine.settings.max_retries);
    let mut a = Actor {
        engine,
        user,
        delivered: state.delivered,
        ack: state.ack,
        retry,
        purged: state.purged,
    };
    let mut next: Option<Cmd> = None;
    loop {
        if let Some(cmd) = next.take() {
            match cmd {
                Cmd::Left => {
                    if Box::pin(a.retire(&rx)).await {
                        return;
                    }
                }
                Cmd::CatchUp { periodic } => {
                    Box::pin(a.catch_up(periodic)).await;
                    if periodic && Box::pin(a.retire(&rx)).await {
                        return;
                    }
                }
                cmd => next = Box::pin(a.on_cmd(cmd, &mut rx)).await,
            }
            continue;
        }
        // Nothing to resend and nothing to store: sleep until the next request.
        let busy = a.retry.wait(a.engine.clock.now().at).is_some() || a.ack.seq == UNSTORED;
        if !busy && a.engine.sleep_if_idle(&a.user, &rx, a.asleep()) {
            return;
        }
        let wait = a.retry.wait(a.engine.clock.now().at).unwrap_or(CHECK);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(cmd) => next = Some(cmd),
            },
            _ = tokio::time::sleep(wait) => {
                if a.ack.seq == UNSTORED {
                    Box::pin(a.store_ack()).await;
                }
                Box::pin(a.on_retry()).await;
            }
        }
    }
}

async fn first_tail(engine: &ClusterEngine, user: &str) -> Tail {
    loop {
        match engine.tail(user).await {
            Ok(t) => return t,
            Err(e) => {
                tracing::warn!(%user, "reading the user's tail: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Actor {
    /// Handles one request; acknowledgements queued behind it are taken together, and the
    /// first other request met on the way is handed back to be handled next.
    async fn on_cmd(&mut self, cmd: Cmd, rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Option<Cmd> {
        let (engine, user) = (&self.engine, &self.user);
        match cmd {
            Cmd::Ack(pos) => {
                let mut pos = pos;
                let mut next = None;
                while let Ok(cmd) = rx.try_recv() {
                    match cmd {
                        Cmd::Ack(p) => pos = pos.max(p),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                if pos > self.ack.acked && pos <= self.delivered.pos {
                    let want = AckState {
                        acked: pos,
                        ..self.ack
                    };
                    self.ack = engine.write_ack(user, want, self.ack).await;
                }
                if self.ack.acked >= self.delivered.pos {
                    self.retry.stop();
                    engine
                        .purge_acked(user, self.ack, self.delivered, &mut self.purged, false)
                        .await;
                }
                return next;
            }
            Cmd::Attach(req) => {
                let Attach {
                    conn,
                    resume,
                    broadcast,
                    reply,
                } = *req;
                let (acked, delivered) = (self.ack.acked, self.delivered.pos);
                if let Some(r) = resume.filter(|r| *r > delivered) {
                    // The client is ahead of the stream (recreated): say so (§5.11).
                    engine.reply(&conn, 0, reset_gap(Stream::User, r, acked + 1));
                }
                if let Some(r) = resume.filter(|r| *r > acked && *r <= delivered) {
                    let want = AckState {
                        acked: r,
                        ..self.ack
                    };
                    self.ack = engine.write_ack(user, want, self.ack).await;
                }
                let result = attach(
                    engine,
                    user,
                    &conn,
                    self.ack.acked,
                    self.delivered,
                    broadcast,
                )
                .await;
                if self.ack.acked < self.delivered.pos {
                    self.retry.start(engine.clock.now().at);
                }
                let _ = reply.send(result);
            }
            Cmd::Live(msg) => self.on_live(&msg).await,
            // Handled by the loop (they may end the actor).
            cmd @ (Cmd::Left | Cmd::CatchUp { .. }) => return Some(cmd),
        }
        None
    }

    /// A message the stream's leader republished: delivered in position order, any gap
    /// before it filled from the stream.
    async fn on_live(&mut self, msg: &async_nats::Message) {
        let engine = &self.engine;
        let Some(headers) = msg.headers.as_ref() else {
            return;
        };
        if engine.notify_recall(&crate::stream::StreamKey::user(&self.user), headers) {
            return;
        }
        let Some(pos) = header_u64(headers, names::POSITION) else {
            return;
        };
        let seq = header_u64(headers, "Nats-Sequence").unwrap_or(0);
        if pos <= self.delivered.pos {
            return;
        }
        if pos > self.delivered.pos + 1 {
            self.delivered = fill_gap(engine, &self.user, self.delivered, pos - 1).await;
        }
        if pos == self.delivered.pos + 1 {
            if !engine.expired(headers) {
                let frame = engine.push_frame(headers, msg.payload.clone(), &Stream::User);
                if let Some((_, frame)) = frame {
                    let user = &self.user;
                    engine.deliver_live(
                        headers,
                        SCENARIO_USER,
                        || StreamKey::user(user),
                        |stamp| engine.hub.send_user(user, &frame, stamp),
                    );
                }
            }
            self.delivered = Tail { seq, pos };
            engine.note_tail(&self.user, self.delivered);
            self.retry.start(engine.clock.now().at);
        }
    }

    async fn on_retry(&mut self) {
        let (engine, user) = (&self.engine, &self.user);
        match self.retry.due(engine.clock.now().at) {
            None => {}
            Some(_)
                if self.ack.acked >= self.delivered.pos
                    || engine.hub.user_connections(user).is_empty() =>
            {
                self.retry.stop()
            }
            Some(Step::Resend(attempt)) => {
                let n = engine
                    .resend(user, self.ack.acked, self.delivered.pos)
                    .await;
                engine.stats.add(&engine.stats.retries, n as u64);
                tracing::debug!(%user, resent = n, retry = attempt, "resent unacknowledged messages");
            }
            Some(Step::Fail) => {
                let want = AckState {
                    failed: self.delivered.pos,
                    ..self.ack
                };
                self.ack = engine.write_ack(user, want, self.ack).await;
                engine.stats.inc(&engine.stats.messages_failed);
                tracing::warn!(%user, "retries exhausted: unacknowledged messages marked failed until the user reconnects");
            }
        }
    }

    /// Retries storing an ack record that could not be stored.
    async fn store_ack(&mut self) {
        let (engine, user) = (&self.engine, &self.user);
        if let Ok(stored) = engine.stored_ack(user).await {
            self.ack = engine.write_ack(user, self.ack, stored).await;
        }
    }

    /// True when the actor retired (no connection of the user left on this node), after
    /// purging what is acknowledged.
    async fn retire(&mut self, rx: &mpsc::UnboundedReceiver<Cmd>) -> bool {
        let (engine, user) = (&self.engine, &self.user);
        if !engine.retire_if_idle(user, rx) {
            return false;
        }
        engine
            .purge_acked(user, self.ack, self.delivered, &mut self.purged, true)
            .await;
        true
    }

    /// What the actor keeps while it sleeps.
    fn asleep(&self) -> Asleep {
        Asleep {
            delivered: self.delivered,
            ack: self.ack,
            purged: self.purged,
        }
    }

    /// Sends what was stored and not received live; with `purge`, also purges what is
    /// acknowledged.
    async fn catch_up(&mut self, purge: bool) {
        let (engine, user) = (&self.engine, &self.user);
        self.delivered = catch_up(engine, user, self.delivered).await;
        if purge {
            engine
                .purge_acked(user, self.ack, self.delivered, &mut self.purged, true)
                .await;
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
                let fan = engine
                    .hub
                    .send_user(user, &frame, Stamp::delivery(SCENARIO_USER));
                engine.count_delivered(SCENARIO_USER, fan);
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
    /// Registers a connection of a user and replays what it has not acknowledged.
    pub async fn attach(
        self: &Arc<Self>,
        conn: Arc<Conn>,
        resume: Option<u64>,
        broadcast: Option<u64>,
    ) -> Result<(), ErrorCode> {
        let (reply, rx) = oneshot::channel();
        let user = conn.user.to_string();
        let cmd = Cmd::Attach(Box::new(Attach {
            conn,
            resume,
            broadcast,
            reply,
        }));
        self.to_user(&user, cmd, Start::Always)?;
        rx.await.map_err(|_| ErrorCode::SHUTTING_DOWN)?
    }

    /// A connection acknowledged its user's stream up to `pos`.
    pub async fn ack(self: &Arc<Self>, user: &str, pos: u64) {
        let _ = self.to_user(user, Cmd::Ack(pos), Start::Always);
    }
}
