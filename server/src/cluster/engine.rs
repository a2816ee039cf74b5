//! The cluster engine for user streams: publishes go to JetStream as one atomic batch per
//! publish (an idempotency record that must not exist yet, and per user a message written on
//! top of the user's last one with compare-and-set, so positions stay contiguous whichever
//! node writes), and each node delivers what the stream's leader republishes to the users it
//! holds connections of (`user`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::Client;
use bytes::Bytes;
use push_protocol::{EncodeOptions, MessageId};
use serde::{Deserialize, Serialize};

use super::commit::Committer;
use super::js::{last_for_subject, JsError, Outbound};
use super::names::{self, header_u64, message_headers, parse_id, Names};
use crate::clock::Clock;
use crate::delivery::ids::IdGen;
use crate::delivery::{Accepted, DeliveryError, Message};
use crate::hub::Hub;
use crate::stats::Stats;
use crate::stream::StreamKey;

/// Attempts at one publish before it is refused (lost races and unavailable engine alike).
pub(crate) const MAX_ATTEMPTS: usize = 8;

/// Users' tails a node caches (~100 B each): every connected user's and recent publish
/// targets'. The soak showed the unbounded map growing with every user published to.
const MAX_TAILS: usize = 65_536;

/// What the cluster engine needs to know.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This node's name (logs, its NATS connection, presence answers).
    pub node: String,
    /// NATS server URLs.
    pub urls: Vec<String>,
    /// Subject and stream prefix.
    pub prefix: String,
    /// Replicas of each stream (1, 3 or 5).
    pub replicas: usize,
    /// Answer wait for every JetStream request.
    pub request_timeout: Duration,
    /// Messages kept per user (the oldest go beyond it).
    pub user_max_pending: u64,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// Messages queued per replay step.
    pub replay_chunk: usize,
    /// Room and broadcast messages kept per stream.
    pub room_retention_count: u64,
    /// How long room and broadcast messages are kept.
    pub room_retention: Duration,
    /// Atomic batches this node has in flight at once (JetStream allows 50 per stream, for
    /// all nodes together).
    pub max_inflight_batches: usize,
    /// First resend of unacknowledged messages to a connected user.
    pub retry_interval: Duration,
    /// Resends before the messages are marked failed.
    pub max_retries: u8,
    /// How often the node checks every user's stored tail for missed live messages.
    pub tail_check: Duration,
}

/// A user's last stored message: its stream sequence and its position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) seq: u64,
    pub(crate) pos: u64,
}

/// What an idempotency record holds: the publish's result (for rooms and broadcast, one
/// entry named by the room, or empty for broadcast).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IdemRecord {
    pub(crate) id: String,
    pub(crate) users: Vec<(String, u64)>,
}

/// Reads an idempotency record.
pub(crate) async fn read_record(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<IdemRecord>, JsError> {
    let Some(m) = last_for_subject(stream, subject).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&m.payload).ok())
}

/// The acceptances a record describes, each entry's name made a stream by `key`.
pub(crate) fn accepted(
    rec: IdemRecord,
    duplicate: bool,
    key: impl Fn(String) -> StreamKey,
) -> Vec<Accepted> {
    let id = parse_id(&rec.id).unwrap_or(MessageId([0; 16]));
    rec.users
        .into_iter()
        .map(|(name, position)| Accepted {
            id,
            stream: key(name),
            position,
            queued: 0,
            duplicate,
        })
        .collect()
}

/// The engine of one node.
pub struct ClusterEngine {
    pub(crate) client: Client,
    pub(crate) stream: stream::Stream,
    /// The rooms and broadcast stream.
    pub(crate) rooms: stream::Stream,
    /// Room tails: token -> (counter sequence, position).
    pub(crate) room_tails: Mutex<HashMap<String, Tail>>,
    /// The actors of rooms with members on this node, and of the broadcast stream.
    pub(crate) room_actors: Mutex<HashMap<String, super::rooms::Handle>>,
    pub(crate) names: Names,
    pub(crate) settings: ClusterSettings,
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) options: EncodeOptions,
    pub(crate) seq: Arc<AtomicU32>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: IdGen,
    tails: Mutex<HashMap<String, Tail>>,
    /// Stores user publishes, grouping those that wait together.
    pub(crate) commit_users: Committer,
    /// Stores room and broadcast publishes the same way.
    pub(crate) commit_rooms: Committer,
    /// One writer per user (and room) on this node at a time: publishes from one node never
    /// race each other, only other nodes'.
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The actors of users with connections on this node.
    pub(crate) users: Mutex<HashMap<String, super::actors::Slot>>,
    /// Bumped when live messages may have been missed (the NATS connection came back, or a
    /// subscription overflowed): every actor then checks the stored tail.
    pub(crate) resync: tokio::sync::watch::Sender<u64>,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Storage(format!("cluster engine: {e}"))
}

/// How long a starting node waits for JetStream to accept its streams.
const SETUP_WAIT: Duration = Duration::from_secs(60);

/// Creates the stream or finds it, waiting while JetStream is not ready yet (a cluster that
/// is still electing its meta leader answers 503), so nodes and NATS can start in any order.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, DeliveryError> {
    let started = std::time::Instant::now();
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if started.elapsed() < SETUP_WAIT => {
                tracing::warn!(stream = %config.name, "JetStream not ready ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(unavailable(format!("stream {}: {e}", config.name))),
        }
    }
}

impl ClusterEngine {
    /// Connects to NATS and creates (or updates) the users stream.
    pub async fn connect(
        settings: ClusterSettings,
        hub: Arc<Hub>,
        stats: Arc<Stats>,
        options: EncodeOptions,
        seq: Arc<AtomicU32>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<ClusterEngine>, DeliveryError> {
        let resync = tokio::sync::watch::Sender::new(0u64);
        let events = resync.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("push-server {}", settings.node))
            .event_callback(move |event| {
                let events = events.clone();
                async move { super::live::on_event(&events, event) }
            })
            .request_timeout(Some(settings.request_timeout))
            .retry_on_initial_connect()
            .connect(settings.urls.clone())
            .await
            .map_err(unavailable)?;
        let js = jetstream::new(client.clone());
        let names = Names::new(&settings.prefix);
        let inflight = settings.max_inflight_batches;
        let slots = |n: usize| Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        let timeout = settings.request_timeout;
        let (src, dest) = names.republish();
        let config = stream::Config {
            name: names.users_stream.clone(),
            subjects: names.users_subjects(),
            num_replicas: settings.replicas,
            storage: stream::StorageType::File,
            max_messages_per_subject: settings.user_max_pending.min(i64::MAX as u64) as i64,
            allow_direct: true,
            allow_atomic_publish: true,
            allow_message_ttl: true,
            allow_rollup: true,
            republish: Some(stream::Republish {
                source: src,
                destination: dest,
                headers_only: false,
            }),
            ..Default::default()
        };
        let stream = ensure_stream(&js, config).await?;
        let (src, dest) = names.room_republish();
        let rooms_config = stream::Config {
            name: names.rooms_stream.clone(),
            subjects: names.rooms_subjects(),
            num_replicas: settings.replicas,
            storage: stream::StorageType::File,
            max_messages_per_subject: settings.room_retention_count.min(i64::MAX as u64) as i64,
            allow_direct: true,
            allow_atomic_publish: true,
            allow_message_ttl: true,
            republish: Some(stream::Republish {
                source: src,
                destination: dest,
                headers_only: false,
            }),
            ..Default::default()
        };
        let rooms = ensure_stream(&js, rooms_config).await?;
        tracing::info!(
            node = %settings.node,
            stream = %names.users_stream,
            replicas = settings.replicas,
            "cluster mode: connected to NATS JetStream"
        );
        let engine = Arc::new(ClusterEngine {
            stream,
            rooms,
            room_tails: Mutex::new(HashMap::new()),
            room_actors: Mutex::new(HashMap::new()),
            names,
            settings,
            hub,
            stats,
            options,
            seq,
            clock,
            ids: IdGen::default(),
            tails: Mutex::new(HashMap::new()),
            commit_users: Committer::start(client.clone(), timeout, slots(inflight)),
            commit_rooms: Committer::start(client.clone(), timeout, slots(inflight)),
            client,
            writers: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            resync,
        });
        engine.start_broadcast();
        engine.start_live_users().await.map_err(unavailable)?;
        engine.watch_leaders().await.map_err(unavailable)?;
        engine.watch_departures();
        engine.start_user_checks();
        engine.start_control().await.map_err(unavailable)?;
        Ok(engine)
    }

    /// True while the node is connected to NATS.
    pub fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Locks the writers of `keys` (sorted, so two publishes never wait on each other in a
    /// circle); held until the publish is answered.
    pub(crate) async fn lock_writers(
        &self,
        keys: &[String],
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let locks: Vec<_> = {
            let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            sorted
                .into_iter()
                .map(|k| w.entry(k.clone()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for l in locks {
            guards.push(l.lock_owned().await);
        }
        guards
    }

    /// Releases `guards` and forgets writer locks nobody else holds or waits for.
    pub(crate) fn unlock_writers(
        &self,
        keys: &[String],
        guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
    ) {
        drop(guards);
        let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if w.get(k).is_some_and(|l| Arc::strong_count(l) == 1) {
                w.remove(k);
            }
        }
    }

    /// The user's last stored message, from this node's cache or the stream (through the
    /// leader when `fresh`: after a lost race a replica may still be behind).
    pub(crate) async fn tail(&self, user: &str) -> Result<Tail, JsError> {
        self.tail_from(user, false).await
    }

    pub(crate) async fn tail_from(&self, user: &str, fresh: bool) -> Result<Tail, JsError> {
        if let Some(t) = self.lock_tails().get(user) {
            return Ok(*t);
        }
        let subject = self.names.user(user);
        let last = super::js::last_for_subject_maybe_fresh(&self.stream, &subject, fresh).await?;
        let tail = match last {
            Some(m) => Tail {
                seq: m.sequence,
                pos: header_u64(&m.headers, names::POSITION).unwrap_or(0),
            },
            None => Tail::default(),
        };
        self.note_tail(user, tail);
        Ok(tail)
    }

    /// The newest tail this node has seen of the user's stream, if any.
    pub(crate) fn known_tail(&self, user: &str) -> Option<Tail> {
        self.lock_tails().get(user).copied()
    }

    /// Records a tail seen (a commit, a live message), keeping the newest. The map is a cache
    /// (a tail it lacks costs one read): at [`MAX_TAILS`] an arbitrary half is forgotten, so
    /// its memory stays bounded however many users a node publishes to over months.
    pub(crate) fn note_tail(&self, user: &str, tail: Tail) {
        let mut tails = self.lock_tails();
        if tails.len() >= MAX_TAILS && !tails.contains_key(user) {
            let mut keep = false;
            tails.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        let t = tails.entry(user.to_string()).or_default();
        if tail.seq > t.seq {
            *t = tail;
        }
    }

    fn forget_tails(&self, users: &[String]) {
        let mut tails = self.lock_tails();
        for u in users {
            tails.remove(u);
        }
    }

    fn lock_tails(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tail>> {
        self.tails.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn idem_record(&self, key: &str) -> Result<Option<IdemRecord>, JsError> {
        read_record(&self.stream, &self.names.idem(key)).await
    }

    /// The idempotency record of a publish: stored only if absent, forgotten after the
    /// window when the client gave the key (`client_key`). A publish without one keeps its
    /// record only as long as its own retries may need it (every attempt's timeout and
    /// backoff, plus a minute): a record per publish for the whole window (24 h) grew NATS's
    /// storage and memory without bound in the cluster soak (BENCHMARKS.md).
    pub(crate) fn idem_message(
        &self,
        subject: String,
        rec: &IdemRecord,
        client_key: bool,
    ) -> Result<Outbound, DeliveryError> {
        let bytes = serde_json::to_vec(rec).map_err(unavailable)?;
        let mut idem = Outbound::new(subject, Bytes::from(bytes)).expect_last_subject_sequence(0);
        let own = (self.settings.request_timeout + Duration::from_secs(1)) * MAX_ATTEMPTS as u32
            + Duration::from_secs(60);
        let window = if client_key {
            self.settings.idempotency_window
        } else {
            own.min(self.settings.idempotency_window)
        };
        let ttl = window.as_secs().max(1);
        idem.headers.insert("Nats-TTL", format!("{ttl}s").as_str());
        Ok(idem)
    }

    fn accepted_of(rec: IdemRecord, duplicate: bool) -> Vec<Accepted> {
        accepted(rec, duplicate, StreamKey::User)
    }

    /// Stores a message for `users` (sorted, deduplicated) durably on a majority of the
    /// replicas; answers with each user's position. A key given before within the window
    /// answers the first result with `duplicate: true`; a publish retried after an unknown
    /// outcome (timeout, leader change) is recognised by its own record and stored once.
    pub async fn publish_users(
        &self,
        users: &[String],
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let keys: Vec<String> = users.iter().map(|u| format!("u/{u}")).collect();
        let guards = self.lock_writers(&keys).await;
        let r = self.publish_users_locked(users, msg).await;
        self.unlock_writers(&keys, guards);
        r
    }

    async fn publish_users_locked(
        &self,
        users: &[String],
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let id = self.ids.next();
        let key = msg.key.clone().unwrap_or_else(|| format!("~{id}"));
        let now = self.clock.now().unix_ms;
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // The previous attempt's outcome may be unknown: our own record says.
                match self.idem_record(&key).await {
                    Ok(Some(rec)) => {
                        let ours = rec.id == id.to_string();
                        if !ours {
                            self.stats.inc(&self.stats.duplicates);
                        }
                        return Ok(Self::accepted_of(rec, !ours));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!("reading idempotency record {key:?}: {e}"),
                }
                let backoff = Duration::from_millis(20 << attempt.min(5));
                tokio::time::sleep(backoff).await;
            } else if msg.key.is_some() {
                if let Ok(Some(rec)) = self.idem_record(&key).await {
                    self.stats.inc(&self.stats.duplicates);
                    return Ok(Self::accepted_of(rec, true));
                }
            }
            let mut tails = Vec::with_capacity(users.len());
            let mut failed = None;
            for u in users {
                match self.tail_from(u, attempt > 0).await {
                    Ok(t) => tails.push(t),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                last_error = e.to_string();
                continue;
            }
            let rec = IdemRecord {
                id: id.to_string(),
                users: users
                    .iter()
                    .zip(&tails)
                    .map(|(u, t)| (u.clone(), t.pos + 1))
                    .collect(),
            };
            let mut batch =
                vec![self.idem_message(self.names.idem(&key), &rec, msg.key.is_some())?];
            for (u, t) in users.iter().zip(&tails) {
                let m = Outbound::new(self.names.user(u), msg.payload.clone())
                    .expect_last_subject_sequence(t.seq);
                batch.push(message_headers(m, id, t.pos + 1, msg, now));
            }
            let result = self.commit_users.commit(batch).await;
            match result {
                Ok(ack) => {
                    let first = ack.sequence + 1 - (users.len() as u64 + 1);
                    for (i, (u, t)) in users.iter().zip(&tails).enumerate() {
                        let seq = first + 1 + i as u64;
                        self.note_tail(
                            u,
                            Tail {
                                seq,
                                pos: t.pos + 1,
                            },
                        );
                    }
                    return Ok(Self::accepted_of(rec, false));
                }
                Err(e @ (JsError::WrongLastSequence(_) | JsError::Unavailable(_))) => {
                    last_error = e.to_string();
                    self.forget_tails(users);
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!(
            "not stored after {MAX_ATTEMPTS} attempts: {last_error}"
        )))
    }
}
