//! The cluster engine of one node: its settings, its NATS connection and the two streams
//! (users; rooms and broadcast), and the per-user writer locks. Publishing is in `publish`
//! and `room_publish`, the tails cache in `tails`, delivery in `user` and `rooms`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::Client;
use push_protocol::EncodeOptions;

use super::commit::Committer;
use super::names::Names;
use crate::clock::Clock;
use crate::delivery::ids::IdGen;
use crate::delivery::DeliveryError;
use crate::hub::Hub;
use crate::stats::Stats;

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
    /// Start a new epoch (after restoring the streams from a backup).
    pub new_epoch: bool,
}

/// A user's last stored message: its stream sequence and its position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) seq: u64,
    pub(crate) pos: u64,
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
    /// Marks this node's transient messages, which it delivers itself before other nodes.
    pub(crate) origin: u64,
    /// The epoch of every stream of the deployment (SPEC.md §5.2).
    pub epoch: u64,
    pub(super) tails: Mutex<HashMap<String, Tail>>,
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
        let epoch = super::epoch::load_epoch(&client, &rooms, &names, timeout, settings.new_epoch)
            .await
            .map_err(|e| DeliveryError::Storage(format!("reading the cluster's epoch: {e}")))?;
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
            origin: crate::delivery::ids::random_u64(),
            epoch,
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
        engine.start_transient().await.map_err(unavailable)?;
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
}
