//! What goes in and comes out of delivery: where a message goes, the message, each stream's
//! acceptance of it, history pages, and why a publish was refused.

use bytes::Bytes;
use push_protocol::{ErrorCode, MessageId, PayloadFormat, ProtocolError};

use crate::store::Record;
use crate::stream::{StreamKey, SCENARIO_BROADCAST, SCENARIO_ROOM, SCENARIO_USER};

/// Where a message goes: one or more streams of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connection of each listed user (one stream per user).
    Users(Vec<String>),
    /// Every member of a room.
    Room(String),
    /// Every connection.
    Broadcast,
}

impl Target {
    /// Index into `stats::SCENARIOS`.
    pub fn scenario(&self) -> usize {
        match self {
            Target::Users(_) => SCENARIO_USER,
            Target::Room(_) => SCENARIO_ROOM,
            Target::Broadcast => SCENARIO_BROADCAST,
        }
    }

    /// The streams the message is appended to.
    pub fn streams(&self) -> Vec<StreamKey> {
        match self {
            Target::Users(users) => users.iter().map(|u| StreamKey::user(u)).collect(),
            Target::Room(room) => vec![StreamKey::room(room)],
            Target::Broadcast => vec![StreamKey::Broadcast],
        }
    }
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
    /// Time to live: not delivered (nor replayed, nor retried) once this long has passed.
    pub ttl_ms: Option<u64>,
    /// Accepted ahead of normal publishes waiting for the same commit.
    pub high_priority: bool,
    /// Not stored, no position: queued once to the version-2 connections online now
    /// (SPEC.md §5.4).
    pub transient: bool,
    /// The `push.accept` span of a traced publish.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

/// One stream's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Message id.
    pub id: MessageId,
    /// The stream.
    pub stream: StreamKey,
    /// Position in that stream.
    pub position: u64,
    /// Connections the message was queued to right away.
    pub queued: usize,
    /// True when the key had been accepted before (nothing was stored or sent this time).
    pub duplicate: bool,
}

/// One stored message with its delivery state.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// Position.
    pub position: u64,
    /// The stored message.
    pub record: Record,
    /// `pending`, `sent` (acknowledged), `failed` (retries exhausted) or `stored` (rooms).
    pub state: &'static str,
}

/// A page of a stream's history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The stream.
    pub stream: StreamKey,
    /// First position still retained.
    pub first_retained: u64,
    /// Last position assigned.
    pub tail: u64,
    /// Last acknowledged position (user streams).
    pub acked: u64,
    /// The messages.
    pub items: Vec<HistoryItem>,
}

/// Why a publish was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The message cannot be encoded (a field too long for the wire).
    #[error("message cannot be encoded: {0}")]
    Encode(String),
    /// Storage failed; nothing was accepted.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// Too many publishes are waiting for storage.
    #[error("too many publishes waiting for storage ({0}); retry later")]
    Overloaded(usize),
    /// The engine has stopped (shutdown).
    #[error("the server is shutting down")]
    Stopped,
    /// The other nodes of the cluster cannot be reached.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A recall named a message the server does not have (or no longer knows the key of).
    #[error("no such message: {0}")]
    NotFound(String),
}

/// What a publisher withdraws (SPEC.md §5.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecallTarget {
    /// The message at `position` of `stream`; when `id` is given it must be that message.
    At {
        /// Its stream.
        stream: StreamKey,
        /// Its position.
        position: u64,
        /// Its id, to make sure.
        id: Option<MessageId>,
    },
    /// Every message a publish with this idempotency key accepted (within the window); when
    /// `stream` is given, only if that is the stream it reached (else nothing is recalled).
    Key {
        /// The publish's idempotency key.
        key: String,
        /// The stream it must have reached.
        stream: Option<StreamKey>,
    },
}

/// A withdrawn message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recalled {
    /// Its id.
    pub id: MessageId,
    /// Its stream.
    pub stream: StreamKey,
    /// Its position.
    pub position: u64,
    /// It had been recalled before (nothing changed).
    pub already: bool,
}

impl DeliveryError {
    /// The wire code for a client-side publish.
    pub fn code(&self) -> ErrorCode {
        match self {
            DeliveryError::Encode(_) => ErrorCode::BAD_REQUEST,
            DeliveryError::Storage(_)
            | DeliveryError::Overloaded(_)
            | DeliveryError::Unavailable(_) => ErrorCode::STORAGE_UNAVAILABLE,
            DeliveryError::Stopped => ErrorCode::SHUTTING_DOWN,
            DeliveryError::NotFound(_) => ErrorCode::NOT_FOUND,
        }
    }
}

impl From<ProtocolError> for DeliveryError {
    fn from(e: ProtocolError) -> Self {
        DeliveryError::Encode(e.to_string())
    }
}
