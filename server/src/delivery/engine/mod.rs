//! The delivery engine: one thread that owns the store and serialises everything that touches
//! stream positions. Requests arrive over a channel; whatever accumulated while the previous
//! batch was being made durable is committed together (group commit, one fsync), and only then
//! are publishers answered and messages fanned out, in position order per stream.
//!
//! Reads that must see committed state (attach and replay, join with resume, history) first
//! commit everything staged before them, so a replay is never overtaken by a live message.
//!
//! This file holds the engine's state, loading, the run loop and the dispatch of each
//! [`Request`] (`request`); the work per kind lives beside it: `publish` (idempotency and
//! staging), `commit` (group commit and fan-out), `ack`, `history`, `replay` (attach, join,
//! resume) and `maintenance` (retries, compaction). The state's fields are private to the
//! engine and these files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::trace::SpanContext;
use push_protocol::{
    encode_to_bytes, EncodeOptions, ErrorBody, ErrorCode, Frame, MessageId, Packet, Push, StreamPos,
};

mod ack;
mod commit;
mod history;
mod maintenance;
mod publish;
mod recall;
mod replay;
mod request;

use publish::accepted_from;
use request::prioritize;
pub(super) use request::{Reply, Request};

use super::ids::IdGen;
use super::{Accepted, DeliveryError, HistoryItem, HistoryPage, Message, Target};
use crate::clock::{Clock, Now};
use crate::config::Config;
use crate::hub::{Conn, Hub, Stamp};
use crate::stats::Stats;
use crate::store::{
    decode_accepted, encode_accepted, idem_key, meta_key, record_key, Kv, Meta, Op, Record,
    StoreError, IDEM_PREFIX, META_PREFIX,
};
use crate::stream::{StreamKey, SCENARIO_ROOM};

/// Idempotency ids kept in memory; beyond this a miss is checked on disk.
const IDEM_IN_MEMORY: usize = 100_000;
/// Most requests committed in one batch.
const MAX_BATCH: usize = 4096;
/// Housekeeping cadence.
const TICK: Duration = Duration::from_millis(100);

/// Frames to fan out after a commit, one per accepted stream.
type Sends = Vec<(StreamKey, Bytes)>;

/// A publish waiting for its commit.
enum Done {
    Service {
        reply: Reply<Vec<Accepted>>,
        accepted: Vec<Accepted>,
        sends: Sends,
        staged: Instant,
        scenario: usize,
        /// The publish's `push.accept` span, when traced.
        trace: Option<SpanContext>,
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
    metas: HashMap<StreamKey, Meta>,
    idem: HashMap<String, Vec<Accepted>>,
    done: Vec<Done>,
}

/// Retry bookkeeping for a user with unacknowledged messages while online.
struct RetryState {
    retries: u8,
    next_at: Instant,
}

/// Settings the engine uses.
#[derive(Debug, Clone)]
pub(super) struct EngineConfig {
    room_retention_count: u64,
    room_retention_ms: u64,
    user_max_pending: u64,
    retry_interval: Duration,
    max_retries: u8,
    idempotency_window_ms: u64,
    compaction_interval: Duration,
    commit_linger: Duration,
    /// Messages queued per replay step: small enough to fit a connection's queue.
    replay_chunk: usize,
}

impl EngineConfig {
    /// Takes the delivery settings from the server config.
    pub(super) fn from(c: &Config) -> Self {
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
pub(super) struct Engine {
    kv: Box<dyn Kv>,
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    cfg: EngineConfig,
    options: EncodeOptions,
    seq: Arc<AtomicU32>,
    pending: Arc<AtomicUsize>,
    ids: IdGen,
    /// Committed positions of every stream.
    metas: HashMap<StreamKey, Meta>,
    /// Recently accepted idempotency keys (the store holds them for the whole window).
    idem: super::IdempotencyCache<Vec<Accepted>>,
    /// Users with unacknowledged messages while online.
    retry: HashMap<String, RetryState>,
    /// Per user, the oldest live message not yet acknowledged and when it was accepted: the
    /// sample behind the accept-to-ack latency histogram.
    ack_watch: HashMap<String, (u64, Instant)>,
    next_compaction: Instant,
    /// What is left of the current compaction pass.
    compaction: maintenance::Compaction,
    /// Where the engine's time comes from.
    clock: Arc<dyn Clock>,
    /// The current batch's time, read from `clock` once per batch: every decision (expiry,
    /// retries, compaction, idempotency windows) uses it, never the system clock.
    now: Now,
    /// Where the last idempotency-expiry pass stopped.
    idem_cursor: Vec<u8>,
    stage: Stage,
}

impl Engine {
    /// Loads stream metadata from `kv` and prepares the engine.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        kv: Box<dyn Kv>,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        cfg: EngineConfig,
        options: EncodeOptions,
        seq: Arc<AtomicU32>,
        pending: Arc<AtomicUsize>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, StoreError> {
        let mut metas = HashMap::new();
        for (k, v) in kv.scan(&[META_PREFIX], &[META_PREFIX + 1], usize::MAX)? {
            let name = String::from_utf8_lossy(&k[1..]);
            let Some(stream) = StreamKey::parse(&name) else {
                tracing::warn!(stream = %name, "ignoring the metadata of an unknown stream kind");
                continue;
            };
            metas.insert(stream, Meta::decode(&v)?);
        }
        let now_at = clock.now();
        let now = now_at.unix_ms;
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
            next_compaction: now_at.at + cfg.compaction_interval,
            compaction: maintenance::Compaction::default(),
            clock,
            now: now_at,
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
    pub(super) fn run(mut self, rx: Receiver<Request>) {
        let mut batch = Vec::with_capacity(64);
        let mut next_tick = Instant::now() + TICK;
        loop {
            // With compaction left to do, only look for waiting requests: a slice runs either
            // way, with their commit or alone.
            let wait = if self.compaction.pending() {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
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
            // The batch is what waited in the queue (up to MAX_BATCH): sampled here rather
            // than counted by every sender, which would put one contended counter on the
            // path of every request of every connection.
            self.now = self.clock.now();
            let waiting = batch.len() as u64;
            self.stats.engine_queued.store(waiting, Ordering::Relaxed);
            self.stats
                .engine_queued_max
                .fetch_max(waiting, Ordering::Relaxed);
            prioritize(&mut batch);
            for req in batch.drain(..) {
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
            if self.compaction.pending() {
                self.compact_slice();
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
                        trace: msg.trace,
                    }),
                    Err(e) => {
                        self.stats.inc(&self.stats.failed_by[scenario]);
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Recall { target, reply } => {
                let _ = reply.send(self.recall(&target));
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
                if msg.transient {
                    // Nothing to store: answered and queued now, in order with its JOINs.
                    let t = crate::delivery::transient::Transient {
                        hub: &self.hub,
                        stats: &self.stats,
                        options: &self.options,
                    };
                    let push_seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    t.publish_for(self.ids.next(), push_seq, &conn, seq, &room, &msg);
                    return;
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
                        self.stats.inc(&self.stats.failed_by[SCENARIO_ROOM]);
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
            Request::Housekeeping(done) => {
                self.tick();
                self.compact_all();
                self.flush();
                let _ = done.send(());
            }
            Request::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// The committed or staged metadata of `stream`.
    pub(super) fn meta(&self, stream: &StreamKey) -> Meta {
        self.stage
            .metas
            .get(stream)
            .or_else(|| self.metas.get(stream))
            .copied()
            .unwrap_or_default()
    }

    /// Stages a metadata change.
    pub(super) fn set_meta(&mut self, stream: &StreamKey, meta: Meta) {
        self.stage.metas.insert(stream.clone(), meta);
    }

    /// Stages a raw write.
    pub(super) fn stage_op(&mut self, op: Op) {
        self.stage.ops.push(op);
    }

    /// Encodes a PUSH with a fresh server sequence number.
    pub(super) fn encode_push(
        &self,
        id: MessageId,
        stream: &StreamKey,
        position: u64,
        rec: &Record,
    ) -> Option<Bytes> {
        let packet = Packet::new(
            self.seq.fetch_add(1, Ordering::Relaxed),
            Frame::Push(Push {
                id,
                stream: stream.wire(),
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
}

/// Maps a storage failure to the publish error the caller sees.
pub(super) fn storage(e: StoreError) -> DeliveryError {
    DeliveryError::Storage(e.to_string())
}
