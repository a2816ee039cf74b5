//! Accepting messages and routing them: persist first (group-committed), then push; positions
//! per stream; cumulative acks; retries; replay on connect; idempotency; retention.
//!
//! [`Delivery`] is the handle the rest of the server uses; the work happens on the engine
//! thread (`engine`: one file per kind of work). DELIVERY.md states the guarantees.

mod engine;
mod idempotency;
pub mod ids;
mod message;
pub(crate) mod transient;

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use push_protocol::{
    encode_to_bytes, EncodeOptions, ErrorBody, ErrorCode, Frame, Packet, StreamPos,
};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::Config;
use crate::hub::{Conn, Hub};
use crate::stats::Stats;
use crate::store::{self, StoreError};
use crate::stream::{StreamKey, SCENARIO_ROOM};
use engine::{Engine, EngineConfig, Request};
pub use idempotency::IdempotencyCache;
pub use message::{
    Accepted, DeliveryError, HistoryItem, HistoryPage, Message, RecallTarget, Recalled, Target,
};

/// The delivery service shared by the API, the sessions and the queue consumer: the local
/// engine thread, or in cluster mode the cluster engine.
pub struct Delivery {
    /// The single-node engine thread's queue; `None` in cluster mode.
    tx: Option<mpsc::Sender<Request>>,
    /// The cluster engine, once connected (cluster mode only).
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterEngine>>,
    stats: Arc<Stats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    hub: Arc<Hub>,
    options: EncodeOptions,
    seq: Arc<AtomicU32>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// Ids of transient messages (stored ones get theirs from the engine).
    ids: ids::IdGen,
    /// The store's epoch (single node; in cluster mode the cluster's).
    epoch: u64,
}

impl Delivery {
    /// Opens the store under `config.data_dir` and starts the engine thread, which takes its
    /// time from `clock`.
    pub fn start(
        config: &Config,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        options: EncodeOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Delivery, StoreError> {
        let kv = store::open(config.store, Path::new(&config.data_dir))?;
        let epoch = store::load_epoch(&*kv, config.new_epoch)?;
        if config.new_epoch {
            tracing::warn!(
                epoch,
                "new_epoch: a new epoch starts; clients resuming positions of the old one get GAPs"
            );
        }
        let seq = Arc::new(AtomicU32::new(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let engine = Engine::load(
            kv,
            hub.clone(),
            stats.clone(),
            EngineConfig::from(config),
            options,
            seq.clone(),
            pending.clone(),
            clock,
        )?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("push-storage".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the storage thread: {e}")))?;
        Ok(Delivery {
            tx: Some(tx),
            cluster: std::sync::OnceLock::new(),
            stats,
            thread: Mutex::new(Some(thread)),
            hub,
            options,
            seq,
            pending,
            max_pending: config.max_pending_publishes,
            ids: ids::IdGen::default(),
            epoch,
        })
    }

    /// A delivery service for cluster mode: no local store; [`Delivery::connect_cluster`]
    /// must succeed before the server serves anyone.
    pub fn for_cluster(
        config: &Config,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        options: EncodeOptions,
    ) -> Delivery {
        Delivery {
            tx: None,
            cluster: std::sync::OnceLock::new(),
            stats,
            thread: Mutex::new(None),
            hub,
            options,
            seq: Arc::new(AtomicU32::new(1)),
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: config.max_pending_publishes,
            ids: ids::IdGen::default(),
            epoch: 0,
        }
    }

    /// Connects the cluster engine (cluster mode).
    pub async fn connect_cluster(
        &self,
        settings: crate::cluster::ClusterSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<(), DeliveryError> {
        let engine = crate::cluster::ClusterEngine::connect(
            settings,
            self.hub.clone(),
            self.stats.clone(),
            self.options,
            self.seq.clone(),
            clock,
        )
        .await?;
        let _ = self.cluster.set(engine);
        Ok(())
    }

    /// The cluster engine, in cluster mode.
    /// Resume positions of another epoch than this server's name places in a timeline it
    /// does not have: they are never taken as acknowledgements or resume points. Each gets a
    /// GAP saying its stream starts again at 1 (queued ahead of any replay) and resumes from
    /// 0 (SPEC.md §5.2). An `epoch` of 0 (none known) leaves the positions as they are.
    pub fn restart_positions(&self, conn: &Conn, epoch: u64, resume: &mut [StreamPos]) {
        if epoch == 0 || epoch == self.epoch() {
            return;
        }
        for p in resume.iter_mut().filter(|p| p.position != 0) {
            let gap = Frame::Gap(push_protocol::Gap {
                stream: p.stream.clone(),
                requested_after: p.position,
                first_available: 1,
            });
            if let Ok(bytes) = encode_to_bytes(&Packet::new(0, gap), &self.options) {
                let _ = self.hub.send_conn(conn, bytes);
            }
            p.position = 0;
        }
    }

    /// The epoch of every stream this server serves (SPEC.md §5.2).
    pub fn epoch(&self) -> u64 {
        self.cluster().map_or(self.epoch, |c| c.epoch)
    }

    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterEngine>> {
        self.cluster.get()
    }

    /// Counts a publish against `max_pending_publishes` until the engine takes it; over the
    /// limit it is refused and counted as failed for its scenario.
    fn reserve_pending(&self, scenario: usize) -> Result<(), DeliveryError> {
        let waiting = self.pending.fetch_add(1, Ordering::Relaxed);
        if waiting >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.inc(&self.stats.failed_by[scenario]);
            return Err(DeliveryError::Overloaded(waiting));
        }
        Ok(())
    }

    /// Hands a request to the engine thread; `Err` when the engine has stopped (or, in
    /// cluster mode, does not exist).
    fn send(&self, req: Request) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(req).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Sends a request on behalf of `conn`, counted against its in-flight limit until the
    /// engine has handled it.
    fn send_for(&self, conn: &Conn, req: Request) {
        conn.begin_request();
        if self.send(req).is_err() {
            // The engine is gone (shutdown); the connection is being closed anyway.
            conn.end_request();
        }
    }

    /// The hub this service routes through.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Encoder options for server frames.
    pub fn options(&self) -> &EncodeOptions {
        &self.options
    }

    /// A server-chosen sequence number for an unsolicited frame.
    pub fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Accepts a message: answered once it is durable, after it has been queued to every
    /// connection it reaches.
    pub async fn publish(
        &self,
        target: &Target,
        msg: Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        if msg.transient {
            return self.publish_transient(target, &msg).await;
        }
        if let Some(cluster) = self.cluster() {
            self.reserve_pending(target.scenario())?;
            let started = std::time::Instant::now();
            let r = match target {
                Target::Users(users) => cluster.publish_users(users, &msg).await,
                Target::Room(room) => cluster.publish_stream(&StreamKey::room(room), &msg).await,
                Target::Broadcast => cluster.publish_stream(&StreamKey::Broadcast, &msg).await,
            };
            self.pending.fetch_sub(1, Ordering::Relaxed);
            if let Some((tracer, parent)) = self.stats.tracer.as_ref().zip(msg.trace.as_ref()) {
                // Stored on a majority of the NATS servers, or refused.
                let error = r.as_ref().err().map(ToString::to_string);
                let streams = r.as_ref().map_or(0, Vec::len);
                tracer.commit(parent, started, streams, error.as_deref());
            }
            let scenario = target.scenario();
            // Counted as the engine counts them: the message once, each stream it reached.
            match &r {
                Ok(accepted) => {
                    self.stats.inc(&self.stats.messages_accepted);
                    let streams = accepted.len() as u64;
                    self.stats.add(&self.stats.accepted_by[scenario], streams);
                }
                Err(_) => self.stats.inc(&self.stats.failed_by[scenario]),
            }
            return r;
        }
        self.reserve_pending(target.scenario())?;
        let (reply, rx) = oneshot::channel();
        let req = Request::Publish {
            target: target.clone(),
            msg,
            reply,
        };
        if self.send(req).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(DeliveryError::Stopped);
        }
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// Upstream PUBLISH from a connection; the engine answers on the connection. Counted
    /// against `max_pending_publishes` like every other publish.
    pub fn publish_from_conn(&self, conn: Arc<Conn>, seq: u32, room: String, msg: Message) {
        if msg.transient && conn.requests_in_flight() == 0 {
            return self.transient_from_conn(conn, seq, room, msg);
        }
        if let Some(cluster) = self.cluster() {
            let req = crate::cluster::RoomRequest::Publish {
                conn: conn.clone(),
                seq,
                msg,
            };
            return cluster.room_request(&room, req);
        }
        if let Err(e) = self.reserve_pending(SCENARIO_ROOM) {
            let frame = Frame::Error(ErrorBody {
                code: e.code(),
                reason: e.to_string(),
            });
            if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), &self.options) {
                let _ = self.hub.send_conn(&conn, bytes);
            }
            return;
        }
        let req = Request::PublishFromConn {
            conn: conn.clone(),
            seq,
            room,
            msg,
        };
        conn.begin_request();
        if self.send(req).is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            conn.end_request();
        }
    }

    /// Registers an authenticated connection and queues what it missed.
    pub async fn attach(&self, conn: Arc<Conn>, resume: Vec<StreamPos>) -> Result<(), ErrorCode> {
        if let Some(cluster) = self.cluster() {
            let at = |s: push_protocol::Stream| {
                resume.iter().find(|p| p.stream == s).map(|p| p.position)
            };
            let user = at(push_protocol::Stream::User);
            let broadcast = at(push_protocol::Stream::Broadcast);
            return cluster.attach(conn, user, broadcast).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Attach {
            conn,
            resume,
            reply,
        })
        .map_err(|_| ErrorCode::SHUTTING_DOWN)?;
        rx.await.map_err(|_| ErrorCode::SHUTTING_DOWN)?
    }

    /// JOIN with optional replay; answered on the connection.
    pub fn join(&self, conn: Arc<Conn>, room: String, resume_after: Option<u64>, seq: u32) {
        if let Some(cluster) = self.cluster() {
            let req = crate::cluster::RoomRequest::Join {
                conn: conn.clone(),
                resume_after,
                seq,
            };
            return cluster.room_request(&room, req);
        }
        let req = Request::Join {
            conn: conn.clone(),
            room,
            resume_after,
            seq,
        };
        self.send_for(&conn, req);
    }

    /// LEAVE; answered on the connection, in order with the connection's JOINs.
    pub fn leave(&self, conn: Arc<Conn>, room: String, seq: u32) {
        if let Some(cluster) = self.cluster() {
            let req = crate::cluster::RoomRequest::Leave {
                conn: conn.clone(),
                seq,
            };
            return cluster.room_request(&room, req);
        }
        let req = Request::Leave {
            conn: conn.clone(),
            room,
            seq,
        };
        self.send_for(&conn, req);
    }

    /// The connection drained its queue during a replay: queue the next chunk.
    pub fn continue_replay(&self, conn: Arc<Conn>) {
        let _ = self.send(Request::ContinueReplay { conn });
    }

    /// ACKs from a connection: per stream the highest position, with the Sequence of the
    /// frame that carried it (for INVALID_ACK).
    pub fn ack(&self, conn: Arc<Conn>, positions: Vec<(StreamPos, u32)>) {
        if let Some(cluster) = self.cluster() {
            // Room and broadcast ACKs only count as life (SPEC.md §5.5).
            let user_pos = positions
                .iter()
                .filter(|(p, _)| p.stream == push_protocol::Stream::User)
                .max_by_key(|(p, _)| p.position)
                .map(|(p, seq)| (p.position, *seq));
            if let Some((pos, seq)) = user_pos {
                let cluster = cluster.clone();
                let tracer = self.stats.tracer.clone();
                tokio::spawn(async move {
                    match cluster.ack_beyond_tail(&conn.user, pos).await {
                        Some(tail) => {
                            let reason = format!(
                                "position {pos} of the user's stream was never sent (last is {tail})"
                            );
                            cluster.refuse(&conn, seq, ErrorCode::INVALID_ACK, reason);
                        }
                        None => {
                            if let Some(tracer) = tracer {
                                tracer.acked(&conn, pos);
                            }
                            cluster.ack(&conn.user, pos).await
                        }
                    }
                });
            }
            return;
        }
        let req = Request::Ack {
            conn: conn.clone(),
            positions,
        };
        self.send_for(&conn, req);
    }

    /// A page of a stream's history.
    pub async fn history(
        &self,
        stream: &StreamKey,
        after: u64,
        limit: usize,
    ) -> Result<HistoryPage, DeliveryError> {
        if let Some(cluster) = self.cluster() {
            return cluster.history(stream, after, limit).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::History {
            stream: stream.clone(),
            after,
            limit,
            reply,
        })
        .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// Withdraws stored messages (SPEC.md §5.12).
    pub async fn recall(&self, target: RecallTarget) -> Result<Vec<Recalled>, DeliveryError> {
        if let Some(cluster) = self.cluster() {
            return cluster.recall(&target).await;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Recall { target, reply })
            .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// True when the storage engine answers within `within`.
    pub async fn ready(&self, within: std::time::Duration) -> bool {
        if let Some(cluster) = self.cluster() {
            return cluster.ready();
        }
        let (done, rx) = oneshot::channel();
        if self.send(Request::Ping(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, rx).await, Ok(Ok(())))
    }

    /// Runs the housekeeping that is due at the clock's current time (retries of
    /// unacknowledged messages, compaction, expiry) and returns once it is committed. The
    /// engine also runs it by itself every 100 ms; tests with a manual clock call this after
    /// moving time forward instead of waiting.
    pub async fn housekeeping(&self) -> Result<(), DeliveryError> {
        if self.cluster().is_some() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.send(Request::Housekeeping(done))
            .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)
    }

    /// Commits everything pending and stops the engine thread.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Request::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
