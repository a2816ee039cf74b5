//! The work the engine is asked to do: one variant per request kind, answered through a
//! reply channel or on the requesting connection.

use std::sync::Arc;

use push_protocol::{ErrorCode, StreamPos};
use tokio::sync::oneshot;

use crate::delivery::{Accepted, DeliveryError, HistoryPage, Message, Target};
use crate::hub::Conn;
use crate::stream::StreamKey;

/// Reply channel for callers that wait.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, DeliveryError>>;

/// Work for the engine.
pub(crate) enum Request {
    /// Accept a message from a service (HTTP, queue).
    Publish {
        /// Where to.
        target: Target,
        /// What.
        msg: Message,
        /// Answered once durable.
        reply: Reply<Vec<Accepted>>,
    },
    /// Withdraw a stored message (SPEC.md §5.12).
    Recall {
        /// Which.
        target: crate::delivery::RecallTarget,
        /// Answered once durable.
        reply: Reply<Vec<crate::delivery::Recalled>>,
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
        /// The stream.
        stream: StreamKey,
        /// Positions after this one.
        after: u64,
        /// Page size.
        limit: usize,
        /// Answer.
        reply: Reply<HistoryPage>,
    },
    /// Liveness probe for /readyz.
    Ping(oneshot::Sender<()>),
    /// Run the housekeeping that is due now (retries, compaction), then answer.
    Housekeeping(oneshot::Sender<()>),
    /// Commit everything and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Moves high-priority publishes ahead of everything else waiting in the batch (stable, so the
/// order within each priority is kept). Positions are assigned afterwards, in the new order, so
/// no stream is ever delivered out of position order.
pub(super) fn prioritize(batch: &mut [Request]) {
    batch.sort_by_key(|r| !matches!(r, Request::Publish { msg, .. } if msg.high_priority));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::oneshot;

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
                transient: false,
                trace: None,
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
