//! The delivery engine: one thread that owns the store and serialises everything that touches
//! stream positions. Requests arrive over a channel; whatever accumulated while the previous
//! batch was being made durable is committed together (group commit, one fsync), and only then
//! are publishers answered and messages fanned out, in position order per stream.
//!
//! Reads that must see committed state (attach and replay, join with resume, history) first
//! commit everything staged before them, so a replay is never overtaken by a live message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use push_protocol::{
    encode_to_bytes, EncodeOptions, ErrorBody, ErrorCode, Frame, MessageId, Packet, Push, Stream,
    StreamPos,
};
use tokio::sync::oneshot;

use super::ids::{unix_ms, IdGen};
use super::{Accepted, DeliveryError, HistoryItem, HistoryPage, Message, Target};
use crate::config::Config;
use crate::hub::{Conn, Hub, Stamp};
use crate::stats::Stats;
use crate::store::{
    decode_accepted, encode_accepted, idem_key, meta_key, record_key, Kv, Meta, Op, Record,
    StoreError, IDEM_PREFIX, META_PREFIX,
};

/// Idempotency ids kept in memory; beyond this a miss is checked on disk.
const IDEM_IN_MEMORY: usize = 100_000;
/// Most requests committed in one batch.
const MAX_BATCH: usize = 4096;
/// Housekeeping cadence.
const TICK: Duration = Duration::from_millis(100);

/// Reply channel for callers that wait.
pub type Reply<T> = oneshot::Sender<Result<T, DeliveryError>>;

/// Work for the engine.
pub enum Request {
    /// Accept a message from a service (HTTP, queue).
    Publish {
        /// Where to.
        target: Target,
        /// What.
        msg: Message,
        /// Answered once durable.
        reply: Reply<Vec<Accepted>>,
    },
    /// Accept an upstream PUBLISH; the engine answers on the connection itself.
    PublishFromConn {
        /// Publisher.
        conn: Arc<Conn>,
        /// Request sequence number.
        seq: u32,
        /// Room.
        room: String,
        /// Message.
        msg: Message,
    },
    /// Register a freshly authenticated connection and replay what it missed.
    Attach {
        /// The connection.
        conn: Arc<Conn>,
        /// Positions from HELLO.
        resume: Vec<StreamPos>,
        /// Answered once registered and replayed.
        reply: oneshot::Sender<Result<(), ErrorCode>>,
    },
    /// JOIN, with optional replay; answered on the connection.
    Join {
        /// The connection.
        conn: Arc<Conn>,
        /// Room.
        room: String,
        /// Replay after this position.
        resume_after: Option<u64>,
        /// Request sequence number.
        seq: u32,
    },
    /// LEAVE, answered on the connection; through the engine so that it cannot overtake the
    /// connection's earlier JOIN.
    Leave {
        /// The connection.
        conn: Arc<Conn>,
        /// Room.
        room: String,
        /// Request sequence number.
        seq: u32,
    },
    /// The connection drained its queue; queue the next replay chunk.
    ContinueReplay {
        /// The connection.
        conn: Arc<Conn>,
    },
    /// ACKs from a connection, coalesced per stream.
    Ack {
        /// The connection.
        conn: Arc<Conn>,
        /// Cumulative positions, each with the Sequence of its frame (for INVALID_ACK).
        positions: Vec<(StreamPos, u32)>,
    },
    /// Read a page of a stream's history.
    History {
        /// Stream name.
        stream: String,
        /// Positions after this one.
        after: u64,
        /// Page size.
        limit: usize,
        /// Answer.
        reply: Reply<HistoryPage>,
    },
    /// Liveness probe for /readyz.
    Ping(oneshot::Sender<()>),
    /// Commit everything and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Where a committed message goes.
enum Route {
    User(String),
    Room(String),
    Broadcast,
}

impl Route {
    /// Index into `stats::SCENARIOS`.
    fn scenario(&self) -> usize {
        match self {
            Route::User(_) => 0,
            Route::Room(_) => 1,
            Route::Broadcast => 2,
        }
    }
}

/// Frames to fan out after a commit, one per accepted stream.
type Sends = Vec<(Route, Bytes)>;

/// A publish waiting for its commit.
enum Done {
    Service {
        reply: Reply<Vec<Accepted>>,
        accepted: Vec<Accepted>,
        sends: Sends,
        staged: Instant,
        scenario: usize,
    },
    Conn {
        conn: Arc<Conn>,
        seq: u32,
        accepted: Vec<Accepted>,
        sends: Sends,
        staged: Instant,
    },
}

/// Writes and state changes staged for the next commit.
#[derive(Default)]
struct Stage {
    ops: Vec<Op>,
    metas: HashMap<String, Meta>,
    idem: HashMap<String, Vec<Accepted>>,
    done: Vec<Done>,
}

/// Retry bookkeeping for a user with unacknowledged messages while online.
pub(super) struct RetryState {
    pub(super) retries: u8,
    pub(super) next_at: Instant,
}

/// Settings the engine uses.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub(super) room_retention_count: u64,
    pub(super) room_retention_ms: u64,
    pub(super) user_max_pending: u64,
    pub(super) retry_interval: Duration,
    pub(super) max_retries: u8,
    pub(super) idempotency_window_ms: u64,
    pub(super) compaction_interval: Duration,
    pub(super) commit_linger: Duration,
    /// Messages queued per replay step: small enough to fit a connection's queue.
    pub(super) replay_chunk: usize,
}

impl EngineConfig {
    /// Takes the delivery settings from the server config.
    pub fn from(c: &Config) -> Self {
        EngineConfig {
            room_retention_count: c.room_retention_count,
            room_retention_ms: c.room_retention_ms,
            user_max_pending: c.user_max_pending,
            retry_interval: Duration::from_millis(c.retry_interval_ms),
            max_retries: c.max_retries,
            idempotency_window_ms: c.idempotency_window_ms,
            compaction_interval: Duration::from_millis(c.compaction_interval_ms),
            commit_linger: Duration::from_micros(c.commit_linger_us),
            replay_chunk: c.replay_limit.min(c.queue_max_frames / 2).max(1),
        }
    }
}

/// The engine's state; lives on its own thread.
pub struct Engine {
    pub(super) kv: Box<dyn Kv>,
    pub(super) hub: Arc<Hub>,
    pub(super) stats: Arc<Stats>,
    pub(super) cfg: EngineConfig,
    options: EncodeOptions,
    seq: Arc<AtomicU32>,
    pending: Arc<AtomicUsize>,
    ids: IdGen,
    /// Committed positions of every stream.
    pub(super) metas: HashMap<String, Meta>,
    /// Recently accepted idempotency keys (the store holds them for the whole window).
    idem: super::IdempotencyCache<Vec<Accepted>>,
    /// Users with unacknowledged messages while online.
    pub(super) retry: HashMap<String, RetryState>,
    /// Per user, the oldest live message not yet acknowledged and when it was accepted: the
    /// sample behind the accept-to-ack latency histogram.
    pub(super) ack_watch: HashMap<String, (u64, Instant)>,
    pub(super) next_compaction: Instant,
    /// Where the last idempotency-expiry pass stopped.
    pub(super) idem_cursor: Vec<u8>,
    stage: Stage,
}

/// Stream name of a user's stream.
pub fn user_stream(user: &str) -> String {
    format!("user:{user}")
}

/// Stream name of a room.
pub fn room_stream(room: &str) -> String {
    format!("room:{room}")
}

/// Stream name of the broadcast stream.
pub const BROADCAST: &str = "broadcast";

impl Engine {
    /// Loads stream metadata from `kv` and prepares the engine.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        kv: Box<dyn Kv>,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        cfg: EngineConfig,
        options: EncodeOptions,
        seq: Arc<AtomicU32>,
        pending: Arc<AtomicUsize>,
    ) -> Result<Engine, StoreError> {
        let mut metas = HashMap::new();
        for (k, v) in kv.scan(&[META_PREFIX], &[META_PREFIX + 1], usize::MAX)? {
            let stream = String::from_utf8_lossy(&k[1..]).to_string();
            metas.insert(stream, Meta::decode(&v)?);
        }
        let now = unix_ms();
        let mut idem = super::IdempotencyCache::new(IDEM_IN_MEMORY, cfg.idempotency_window_ms);
        let stored = kv.scan(&[IDEM_PREFIX], &[IDEM_PREFIX + 1], IDEM_IN_MEMORY)?;
        if stored.len() >= IDEM_IN_MEMORY {
            // More ids on disk than memory holds: misses must be checked on disk.
            idem.mark_incomplete();
        }
        for (k, v) in stored {
            let (at, list) = decode_accepted(&v)?;
            if now.saturating_sub(at) <= cfg.idempotency_window_ms {
                let key = String::from_utf8_lossy(&k[1..]).to_string();
                idem.insert(key, accepted_from(list), at);
            }
        }
        tracing::info!(
            backend = kv.name(),
            streams = metas.len(),
            idempotency_keys = idem.len(),
            "storage opened"
        );
        Ok(Engine {
            kv,
            hub,
            stats,
            next_compaction: Instant::now() + cfg.compaction_interval,
            cfg,
            options,
            seq,
            pending,
            ids: IdGen::default(),
            metas,
            idem,
            retry: HashMap::new(),
            ack_watch: HashMap::new(),
            idem_cursor: vec![IDEM_PREFIX],
            stage: Stage::default(),
        })
    }

    /// Serves requests until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Request>) {
        let mut batch = Vec::with_capacity(64);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(r) => {
                    batch.push(r);
                    // Linger briefly so that one commit (one fsync) covers more messages; the
                    // wait is bounded by `commit_linger` and cut short by a full batch.
                    let linger_until = Instant::now() + self.cfg.commit_linger;
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => {
                                let left = linger_until.saturating_duration_since(Instant::now());
                                if left.is_zero() {
                                    break;
                                }
                                match rx.recv_timeout(left) {
                                    Ok(r) => batch.push(r),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            prioritize(&mut batch);
            for req in batch.drain(..) {
                self.stats.engine_queued.fetch_sub(1, Ordering::Relaxed);
                if let Request::Shutdown(done) = req {
                    self.flush();
                    tracing::info!("storage engine stopped");
                    let _ = done.send(());
                    return;
                }
                self.handle(req);
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
            self.flush();
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Publish { target, msg, reply } => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                let scenario = target.scenario();
                match self.stage_publish(&target, &msg) {
                    Ok((accepted, sends)) => self.stage.done.push(Done::Service {
                        reply,
                        accepted,
                        sends,
                        staged: Instant::now(),
                        scenario,
                    }),
                    Err(e) => {
                        self.stats.inc(&self.stats.failed_by[scenario]);
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::PublishFromConn {
                conn,
                seq,
                room,
                msg,
            } => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                conn.end_request();
                // Checked here, in order with the connection's JOIN and LEAVE.
                if !conn.in_room(&room) {
                    let reason = format!("join room {room} before publishing to it");
                    return self.send_error(&conn, seq, ErrorCode::FORBIDDEN, reason);
                }
                match self.stage_publish(&Target::Room(room), &msg) {
                    Ok((accepted, sends)) => self.stage.done.push(Done::Conn {
                        conn,
                        seq,
                        accepted,
                        sends,
                        staged: Instant::now(),
                    }),
                    Err(e) => {
                        self.stats.inc(&self.stats.failed_by[1]);
                        self.send_error(&conn, seq, e.code(), e.to_string())
                    }
                }
            }
            Request::Ack { conn, positions } => {
                for (sp, seq) in positions {
                    self.ack(&conn, sp, seq);
                }
                conn.end_request();
            }
            Request::Leave { conn, room, seq } => {
                self.hub.leave(&room, &conn);
                self.send_frame(&conn, seq, Frame::Ok(None));
                conn.end_request();
            }
            Request::ContinueReplay { conn } => {
                self.flush();
                self.continue_replay(&conn);
            }
            Request::Attach {
                conn,
                resume,
                reply,
            } => {
                self.flush();
                let _ = reply.send(self.attach(&conn, &resume));
            }
            Request::Join {
                conn,
                room,
                resume_after,
                seq,
            } => {
                self.flush();
                self.join(&conn, &room, resume_after, seq);
                conn.end_request();
            }
            Request::History {
                stream,
                after,
                limit,
                reply,
            } => {
                self.flush();
                let _ = reply.send(self.history(&stream, after, limit));
            }
            Request::Ping(done) => {
                let _ = done.send(());
            }
            Request::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// The committed or staged metadata of `stream`.
    pub(super) fn meta(&self, stream: &str) -> Meta {
        self.stage
            .metas
            .get(stream)
            .or_else(|| self.metas.get(stream))
            .copied()
            .unwrap_or_default()
    }

    /// Stages a metadata change.
    pub(super) fn set_meta(&mut self, stream: &str, meta: Meta) {
        self.stage.metas.insert(stream.to_string(), meta);
    }

    /// Stages a raw write.
    pub(super) fn stage_op(&mut self, op: Op) {
        self.stage.ops.push(op);
    }

    /// Encodes a PUSH with a fresh server sequence number.
    pub(super) fn encode_push(
        &self,
        id: MessageId,
        stream: Stream,
        position: u64,
        rec: &Record,
    ) -> Option<Bytes> {
        let packet = Packet::new(
            self.seq.fetch_add(1, Ordering::Relaxed),
            Frame::Push(Push {
                id,
                stream,
                position,
                timestamp_ms: rec.timestamp_ms,
                kind: rec.kind.clone(),
                format: rec.format,
                payload: rec.payload.clone(),
            }),
        );
        match encode_to_bytes(&packet, &self.options) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("cannot encode stored message {id}: {e}");
                None
            }
        }
    }

    /// Queues a frame to one connection.
    pub(super) fn send_frame(&self, conn: &Conn, seq: u32, frame: Frame) {
        if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), &self.options) {
            let _ = self.hub.send_conn(conn, bytes);
        }
    }

    /// Queues an ERROR frame to one connection.
    pub(super) fn send_error(&self, conn: &Conn, seq: u32, code: ErrorCode, reason: String) {
        self.send_frame(conn, seq, Frame::Error(ErrorBody { code, reason }));
    }

    fn lookup_idem(&mut self, key: &str, now: u64) -> Result<Option<Vec<Accepted>>, DeliveryError> {
        if let Some(v) = self.stage.idem.get(key) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = self.idem.get(key, now) {
            return Ok(Some(v));
        }
        // While memory holds every id of the window, a miss means a new id: no disk read on
        // the publish path. Once ids were evicted by count, they may still be on disk.
        if !self.idem.is_incomplete() {
            return Ok(None);
        }
        if let Some(v) = self.kv.get(&idem_key(key)).map_err(storage)? {
            let (at, list) = decode_accepted(&v).map_err(storage)?;
            if now.saturating_sub(at) <= self.cfg.idempotency_window_ms {
                return Ok(Some(accepted_from(list)));
            }
        }
        Ok(None)
    }

    fn stage_publish(
        &mut self,
        target: &Target,
        msg: &Message,
    ) -> Result<(Vec<Accepted>, Sends), DeliveryError> {
        let now = unix_ms();
        if let Some(key) = &msg.key {
            if let Some(previous) = self.lookup_idem(key, now)? {
                self.stats.inc(&self.stats.duplicates);
                let dup = previous
                    .into_iter()
                    .map(|a| Accepted {
                        duplicate: true,
                        queued: 0,
                        ..a
                    })
                    .collect();
                return Ok((dup, Vec::new()));
            }
        }
        let id = self.ids.next();
        let rec = Record {
            id,
            timestamp_ms: now,
            failed: false,
            retries: 0,
            updated_ms: now,
            expires_ms: msg.ttl_ms.map_or(0, |t| now.saturating_add(t)),
            kind: msg.kind.clone(),
            format: msg.format,
            payload: msg.payload.clone(),
        };
        let encoded = rec.encode();
        let streams: Vec<(String, Stream, Route)> = match target {
            Target::Users(users) => users
                .iter()
                .map(|u| (user_stream(u), Stream::User, Route::User(u.clone())))
                .collect(),
            Target::Room(room) => vec![(
                room_stream(room),
                Stream::Room(room.clone()),
                Route::Room(room.clone()),
            )],
            Target::Broadcast => vec![(BROADCAST.to_string(), Stream::Broadcast, Route::Broadcast)],
        };
        let mut accepted = Vec::with_capacity(streams.len());
        let mut sends = Vec::with_capacity(streams.len());
        for (name, wire, route) in streams {
            let mut meta = self.meta(&name);
            meta.tail += 1;
            let position = meta.tail;
            self.stage
                .ops
                .push(Op::Put(record_key(&name, position), encoded.clone()));
            self.set_meta(&name, meta);
            if let Some(frame) = self.encode_push(id, wire, position, &rec) {
                sends.push((route, frame));
            }
            accepted.push(Accepted {
                id,
                stream: name,
                position,
                queued: 0,
                duplicate: false,
            });
        }
        if let Some(key) = &msg.key {
            let list: Vec<(MessageId, String, u64)> = accepted
                .iter()
                .map(|a| (a.id, a.stream.clone(), a.position))
                .collect();
            self.stage
                .ops
                .push(Op::Put(idem_key(key), encode_accepted(now, &list)));
            self.stage.idem.insert(key.clone(), accepted.clone());
        }
        Ok((accepted, sends))
    }

    /// Commits what is staged, then answers publishers and fans messages out.
    pub(super) fn flush(&mut self) {
        let mut stage = std::mem::take(&mut self.stage);
        if stage.ops.is_empty() && stage.metas.is_empty() && stage.done.is_empty() {
            return;
        }
        for (stream, meta) in &stage.metas {
            stage.ops.push(Op::Put(meta_key(stream), meta.encode()));
        }
        let result = if stage.ops.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let result = self.kv.apply(&stage.ops);
            let micros = started.elapsed().as_micros() as u64;
            self.stats.add(&self.stats.store_commit_micros, micros);
            self.stats.commit_latency.observe_micros(micros);
            self.stats.inc(&self.stats.store_commits);
            result
        };
        self.stats
            .storage_failing
            .store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.metas.extend(stage.metas);
                let now = unix_ms();
                for (k, v) in stage.idem {
                    self.idem.insert(k, v, now);
                }
                for done in stage.done {
                    self.complete(done);
                }
            }
            Err(e) => {
                self.stats.inc(&self.stats.store_errors);
                tracing::error!("commit of {} writes failed: {e}", stage.ops.len());
                for done in stage.done {
                    match done {
                        Done::Service {
                            reply, scenario, ..
                        } => {
                            self.stats.inc(&self.stats.failed_by[scenario]);
                            let _ = reply.send(Err(storage(e.clone())));
                        }
                        Done::Conn { conn, seq, .. } => self.send_error(
                            &conn,
                            seq,
                            ErrorCode::STORAGE_UNAVAILABLE,
                            e.to_string(),
                        ),
                    }
                }
            }
        }
    }

    fn fan_out(&mut self, accepted: &mut [Accepted], sends: Sends, staged: Instant) {
        let stamp_us = self
            .hub
            .now_us()
            .saturating_sub(staged.elapsed().as_micros() as u64)
            .max(1);
        for ((route, frame), a) in sends.into_iter().zip(accepted.iter_mut()) {
            let scenario = route.scenario();
            let stamp = Stamp {
                accepted_us: stamp_us,
                scenario: scenario as u8,
            };
            let fan = match &route {
                Route::User(u) => {
                    let fan = self.hub.send_user(u, &frame, stamp);
                    if fan.queued > 0 {
                        self.ack_watch
                            .entry(u.clone())
                            .or_insert((a.position, staged));
                    }
                    if fan.queued > 0 && !self.retry.contains_key(u) {
                        self.retry.insert(
                            u.clone(),
                            RetryState {
                                retries: 0,
                                next_at: Instant::now() + self.cfg.retry_interval,
                            },
                        );
                    }
                    fan
                }
                Route::Room(r) => self.hub.send_room(r, &frame, stamp),
                Route::Broadcast => self.hub.broadcast(&frame, stamp),
            };
            a.queued = fan.queued;
            self.stats.inc(&self.stats.accepted_by[scenario]);
            self.stats
                .add(&self.stats.queued_by[scenario], fan.queued as u64);
            self.stats.fanout_latency[scenario].observe_micros(staged.elapsed().as_micros() as u64);
            self.stats
                .add(&self.stats.deliveries_queued, fan.queued as u64);
            self.stats.add(&self.stats.slow_consumers, fan.slow as u64);
            if fan.slow > 0 {
                tracing::warn!(stream = %a.stream, dropped = fan.slow, "slow consumers disconnected");
            }
        }
    }

    /// Counts a committed publish and fans it out; `accepted` gets the queued counts.
    fn deliver(&mut self, accepted: &mut [Accepted], sends: Sends, staged: Instant) {
        if !sends.is_empty() {
            self.stats.inc(&self.stats.messages_accepted);
            self.stats
                .publish_latency
                .observe_micros(staged.elapsed().as_micros() as u64);
        }
        self.fan_out(accepted, sends, staged);
    }

    fn complete(&mut self, done: Done) {
        match done {
            Done::Service {
                reply,
                mut accepted,
                sends,
                staged,
                ..
            } => {
                self.deliver(&mut accepted, sends, staged);
                let _ = reply.send(Ok(accepted));
            }
            Done::Conn {
                conn,
                seq,
                mut accepted,
                sends,
                staged,
            } => {
                self.deliver(&mut accepted, sends, staged);
                if let Some(a) = accepted.first() {
                    self.send_frame(
                        &conn,
                        seq,
                        Frame::PublishAck(push_protocol::PublishAck {
                            id: a.id,
                            position: a.position,
                            duplicate: a.duplicate,
                        }),
                    );
                }
            }
        }
    }

    fn ack(&mut self, conn: &Conn, sp: StreamPos, seq: u32) {
        let name = match &sp.stream {
            Stream::User => user_stream(&conn.user),
            Stream::Room(r) => room_stream(r),
            Stream::Broadcast => BROADCAST.to_string(),
        };
        let mut meta = self.meta(&name);
        if sp.position > meta.tail {
            let reason = format!(
                "position {} of {name} was never sent (last is {})",
                sp.position, meta.tail
            );
            return self.send_error(conn, seq, ErrorCode::INVALID_ACK, reason);
        }
        if !matches!(sp.stream, Stream::User) {
            return;
        }
        if let Some((pos, since)) = self.ack_watch.get(&*conn.user) {
            if sp.position >= *pos {
                self.stats
                    .ack_latency
                    .observe_micros(since.elapsed().as_micros() as u64);
                self.ack_watch.remove(&*conn.user);
            }
        }
        if sp.position > meta.acked {
            meta.acked = sp.position;
            self.set_meta(&name, meta);
            if meta.acked >= meta.tail {
                self.retry.remove(&*conn.user);
            }
        }
    }

    fn history(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, DeliveryError> {
        let meta = self.meta(stream);
        let first = after.saturating_add(1).max(meta.first);
        let items = if first > meta.tail {
            Vec::new()
        } else {
            let (from, to) = crate::store::record_range(stream, first, meta.tail);
            self.kv
                .scan(&from, &to, limit)
                .map_err(storage)?
                .into_iter()
                .filter_map(|(k, v)| {
                    let position = crate::store::keys_position(&k)?;
                    let rec = Record::decode(&v).ok()?;
                    let state = if !stream.starts_with("user:") {
                        "stored"
                    } else if position <= meta.acked {
                        "sent"
                    } else if rec.expired(super::ids::unix_ms()) {
                        "expired"
                    } else if rec.failed {
                        "failed"
                    } else {
                        "pending"
                    };
                    Some(HistoryItem {
                        position,
                        record: rec,
                        state,
                    })
                })
                .collect()
        };
        Ok(HistoryPage {
            stream: stream.to_string(),
            first_retained: meta.first,
            tail: meta.tail,
            acked: meta.acked,
            items,
        })
    }
}

/// Moves high-priority publishes ahead of everything else waiting in the batch (stable, so the
/// order within each priority is kept). Positions are assigned afterwards, in the new order, so
/// no stream is ever delivered out of position order.
fn prioritize(batch: &mut [Request]) {
    batch.sort_by_key(|r| !matches!(r, Request::Publish { msg, .. } if msg.high_priority));
}

/// Maps a storage failure to the publish error the caller sees.
pub fn storage(e: StoreError) -> DeliveryError {
    DeliveryError::Storage(e.to_string())
}

fn accepted_from(list: Vec<(MessageId, String, u64)>) -> Vec<Accepted> {
    list.into_iter()
        .map(|(id, stream, position)| Accepted {
            id,
            stream,
            position,
            queued: 0,
            duplicate: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(text: &str, high: bool) -> Request {
        let (reply, _) = oneshot::channel();
        Request::Publish {
            target: Target::Broadcast,
            msg: Message {
                key: None,
                kind: "k".into(),
                format: push_protocol::PayloadFormat::OPAQUE,
                payload: Bytes::from(text.to_string()),
                ttl_ms: None,
                high_priority: high,
            },
            reply,
        }
    }

    fn text(r: &Request) -> String {
        match r {
            Request::Publish { msg, .. } => String::from_utf8_lossy(&msg.payload).to_string(),
            _ => "other".into(),
        }
    }

    #[test]
    fn high_priority_publishes_jump_the_batch_in_stable_order() {
        let (ping, _) = oneshot::channel();
        let mut batch = vec![
            publish("n1", false),
            publish("h1", true),
            Request::Ping(ping),
            publish("n2", false),
            publish("h2", true),
        ];
        prioritize(&mut batch);
        let order: Vec<String> = batch.iter().map(text).collect();
        assert_eq!(order, ["h1", "h2", "n1", "other", "n2"]);
    }
}
