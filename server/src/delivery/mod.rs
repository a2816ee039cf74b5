//! Accepting messages and routing them: ids, positions per stream, idempotency, fan-out.
//!
//! Positions and idempotency keys live in memory for now; the durable store takes over both
//! (persist first, then push) without changing this module's interface.

mod idempotency;
pub mod ids;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use push_protocol::{
    encode_to_bytes, EncodeOptions, Frame, MessageId, Packet, PayloadFormat, ProtocolError, Push,
    Stream,
};

use crate::hub::{FanOut, Hub};
use crate::stats::Stats;
pub use idempotency::IdempotencyCache;
use ids::{unix_ms, IdGen};

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection of each listed user (one stream per user).
    Users(Vec<String>),
    /// Every member of a room.
    Room(String),
    /// Every connection.
    Broadcast,
}

/// A message as handed in by a publisher.
#[derive(Debug, Clone)]
pub struct Message {
    /// Publisher's idempotency key.
    pub key: Option<String>,
    /// Application kind.
    pub kind: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// Payload bytes.
    pub payload: Bytes,
}

/// One stream's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Message id.
    pub id: MessageId,
    /// Stream name: `user:<id>`, `room:<id>` or `broadcast`.
    pub stream: String,
    /// Position in that stream.
    pub position: u64,
    /// Connections the message was queued to right away.
    pub queued: usize,
    /// True when the key had been accepted before (nothing was sent this time).
    pub duplicate: bool,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The message cannot be encoded (a field too long for the wire).
    #[error("message cannot be encoded: {0}")]
    Encode(#[from] ProtocolError),
}

const POSITION_SHARDS: usize = 64;

/// Idempotency keys remembered (count).
const IDEMPOTENCY_ENTRIES: usize = 100_000;
/// Idempotency keys remembered (time).
const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// The delivery service shared by the API, the sessions and (later) the queue consumer.
pub struct Delivery {
    hub: Arc<Hub>,
    stats: Arc<Stats>,
    ids: IdGen,
    positions: Box<[Mutex<HashMap<String, u64>>]>,
    hasher: RandomState,
    idempotency: Mutex<IdempotencyCache<Vec<Accepted>>>,
    options: EncodeOptions,
    seq: AtomicU32,
}

impl Delivery {
    /// A delivery service routing through `hub`, encoding with `options`.
    pub fn new(hub: Arc<Hub>, stats: Arc<Stats>, options: EncodeOptions) -> Self {
        Delivery {
            hub,
            stats,
            ids: IdGen::default(),
            positions: (0..POSITION_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            idempotency: Mutex::new(IdempotencyCache::new(
                IDEMPOTENCY_ENTRIES,
                IDEMPOTENCY_WINDOW_MS,
            )),
            options,
            seq: AtomicU32::new(1),
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

    /// Assigns the next position in `stream` and runs `send` with it while still holding the
    /// stream's lock, so that two concurrent publishes to one stream reach every connection in
    /// position order.
    fn sequenced<T>(&self, stream: &str, send: impl FnOnce(u64) -> T) -> T {
        let shard = (self.hasher.hash_one(stream) as usize) % POSITION_SHARDS;
        let mut map = self.positions[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let p = map.entry(stream.to_owned()).or_insert(0);
        *p += 1;
        send(*p)
    }

    /// Last position assigned in `stream` (0 when none).
    pub fn tail(&self, stream: &str) -> u64 {
        let shard = (self.hasher.hash_one(stream) as usize) % POSITION_SHARDS;
        self.positions[shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .copied()
            .unwrap_or(0)
    }

    fn encode_push(
        &self,
        id: MessageId,
        stream: Stream,
        position: u64,
        msg: &Message,
        timestamp_ms: u64,
    ) -> Result<Bytes, ProtocolError> {
        let packet = Packet::new(
            self.next_seq(),
            Frame::Push(Push {
                id,
                stream,
                position,
                timestamp_ms,
                kind: msg.kind.clone(),
                format: msg.format,
                payload: msg.payload.clone(),
            }),
        );
        encode_to_bytes(&packet, &self.options)
    }

    /// Accepts a message for `target` and queues it to every connection it reaches.
    pub fn publish(&self, target: &Target, msg: Message) -> Result<Vec<Accepted>, DeliveryError> {
        let now = unix_ms();
        if let Some(key) = &msg.key {
            let mut cache = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(previous) = cache.get(key, now) {
                self.stats.inc(&self.stats.duplicates);
                return Ok(previous
                    .into_iter()
                    .map(|a| Accepted {
                        duplicate: true,
                        queued: 0,
                        ..a
                    })
                    .collect());
            }
        }
        let id = self.ids.next();
        let mut accepted = Vec::new();
        match target {
            Target::Users(users) => {
                for user in users {
                    let stream = format!("user:{user}");
                    let (position, fan) = self.sequenced(&stream, |position| {
                        let frame = self.encode_push(id, Stream::User, position, &msg, now)?;
                        Ok::<_, ProtocolError>((position, self.hub.send_user(user, &frame)))
                    })?;
                    self.count(fan, "user");
                    accepted.push(Accepted {
                        id,
                        stream,
                        position,
                        queued: fan.queued,
                        duplicate: false,
                    });
                }
            }
            Target::Room(room) => {
                let stream = format!("room:{room}");
                let (position, fan) = self.sequenced(&stream, |position| {
                    let frame =
                        self.encode_push(id, Stream::Room(room.clone()), position, &msg, now)?;
                    Ok::<_, ProtocolError>((position, self.hub.send_room(room, &frame)))
                })?;
                self.count(fan, "room");
                accepted.push(Accepted {
                    id,
                    stream,
                    position,
                    queued: fan.queued,
                    duplicate: false,
                });
            }
            Target::Broadcast => {
                let stream = "broadcast".to_string();
                let (position, fan) = self.sequenced(&stream, |position| {
                    let frame = self.encode_push(id, Stream::Broadcast, position, &msg, now)?;
                    Ok::<_, ProtocolError>((position, self.hub.broadcast(&frame)))
                })?;
                self.count(fan, "broadcast");
                accepted.push(Accepted {
                    id,
                    stream,
                    position,
                    queued: fan.queued,
                    duplicate: false,
                });
            }
        }
        if let Some(key) = msg.key {
            self.idempotency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, accepted.clone(), now);
        }
        Ok(accepted)
    }

    fn count(&self, fan: FanOut, scenario: &'static str) {
        self.stats
            .add(&self.stats.deliveries_queued, fan.queued as u64);
        self.stats.add(&self.stats.slow_consumers, fan.slow as u64);
        if fan.slow > 0 {
            tracing::warn!(scenario, dropped = fan.slow, "slow consumers disconnected");
        }
        self.stats.inc(&self.stats.messages_accepted);
    }
}
