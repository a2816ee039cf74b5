//! Transient messages (protocol version 2, SPEC.md §5.4, §5.8): accepted without storage,
//! no position (0 on the wire), queued at once and at most once to the version-2 connections
//! online for the stream; in cluster mode the other nodes get them over NATS core. Nothing is
//! replayed, retried or kept, so nothing waits for a commit.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry::trace::SpanContext;
use push_protocol::{
    encode_to_bytes, EncodeOptions, ErrorBody, ErrorCode, Frame, MessageId, Packet, PublishAck,
    Push,
};

use super::ids::unix_ms;
use super::{Accepted, Delivery, DeliveryError, Message, Target};
use crate::hub::{Conn, Hub, Stamp};
use crate::stats::Stats;
use crate::stream::StreamKey;

/// What a node needs to queue transient messages.
pub(crate) struct Transient<'a> {
    /// Where the connections are.
    pub(crate) hub: &'a Hub,
    /// Counters.
    pub(crate) stats: &'a Stats,
    /// The server's encoding.
    pub(crate) options: &'a EncodeOptions,
}

impl Transient<'_> {
    /// The PUSH of a transient message of `stream`: position 0, timestamp now.
    pub(crate) fn frame(
        &self,
        id: MessageId,
        push_seq: u32,
        stream: &StreamKey,
        msg: &Message,
    ) -> Result<Bytes, DeliveryError> {
        let push = Push {
            id,
            stream: stream.wire(),
            position: 0,
            timestamp_ms: unix_ms(),
            kind: msg.kind.clone(),
            format: msg.format,
            payload: msg.payload.clone(),
        };
        Ok(encode_to_bytes(
            &Packet::new(push_seq, Frame::Push(push)),
            self.options,
        )?)
    }

    /// Queues `frame` to the version-2 connections of `stream` here but `skip`, under the
    /// `push.accept` span `trace` when traced; returns how many got it.
    pub(crate) fn queue(
        &self,
        stream: &StreamKey,
        frame: &Bytes,
        skip: Option<u64>,
        trace: Option<&SpanContext>,
    ) -> usize {
        let stamp = Stamp {
            accepted_us: self.hub.now_us().max(1),
            scenario: stream.scenario() as u8,
            ..Stamp::NONE
        };
        let send = |stamp| self.hub.send_transient(stream, frame, stamp, skip);
        let fan =
            crate::trace::fan_out(self.stats.tracer.as_deref(), trace, stream, 0, stamp, send);
        let scenario = stream.scenario();
        self.stats.inc(&self.stats.transient_by[scenario]);
        self.stats
            .add(&self.stats.queued_by[scenario], fan.queued as u64);
        self.stats.add(&self.stats.slow_consumers, fan.slow as u64);
        fan.queued
    }

    /// A member's transient PUBLISH to `room` (membership already checked): PUBLISH_ACK with
    /// position 0 first, then the message to the room's members here (not to the publisher if
    /// it asked for no echo). Returns the frame for the other nodes.
    pub(crate) fn publish_for(
        &self,
        id: MessageId,
        push_seq: u32,
        conn: &Conn,
        seq: u32,
        room: &str,
        msg: &Message,
    ) -> Option<Bytes> {
        let stream = StreamKey::room(room);
        let reply = match self.frame(id, push_seq, &stream, msg) {
            Ok(frame) => Ok(frame),
            Err(e) => Err(Frame::Error(ErrorBody {
                code: e.code(),
                reason: e.to_string(),
            })),
        };
        let answer = match &reply {
            Ok(_) => Frame::PublishAck(PublishAck {
                id,
                position: 0,
                duplicate: false,
            }),
            Err(error) => error.clone(),
        };
        if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, answer), self.options) {
            let _ = self.hub.send_conn(conn, bytes);
        }
        let frame = reply.ok()?;
        self.queue(&stream, &frame, conn.no_echo().then_some(conn.id), None);
        Some(frame)
    }
}

impl Delivery {
    fn transient(&self) -> Transient<'_> {
        Transient {
            hub: &self.hub,
            stats: &self.stats,
            options: &self.options,
        }
    }

    /// Publishes a transient message from a service (HTTP API, RabbitMQ): one id per stream,
    /// `queued` counting this node's connections.
    pub(super) async fn publish_transient(
        &self,
        target: &Target,
        msg: &Message,
    ) -> Result<Vec<Accepted>, DeliveryError> {
        let mut accepted = Vec::new();
        for stream in target.streams() {
            let id = self.ids.next();
            let frame = self.transient().frame(id, self.next_seq(), &stream, msg)?;
            let queued = self
                .transient()
                .queue(&stream, &frame, None, msg.trace.as_ref());
            if let Some(cluster) = self.cluster() {
                cluster
                    .publish_transient(&stream, frame, msg.trace.as_ref())
                    .await
                    .map_err(|e| DeliveryError::Unavailable(format!("NATS publish: {e}")))?;
            }
            accepted.push(Accepted {
                id,
                stream,
                position: 0,
                queued,
                duplicate: false,
            });
        }
        Ok(accepted)
    }

    /// A connection's transient PUBLISH with none of its requests in flight (so no JOIN of
    /// its can be pending): handled here and now instead of behind storage or a room actor.
    pub(super) fn transient_from_conn(
        &self,
        conn: Arc<Conn>,
        seq: u32,
        room: String,
        msg: Message,
    ) {
        if !conn.in_room(&room) {
            let frame = Frame::Error(ErrorBody {
                code: ErrorCode::FORBIDDEN,
                reason: format!("join room {room} before publishing to it"),
            });
            if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), &self.options) {
                let _ = self.hub.send_conn(&conn, bytes);
            }
            return;
        }
        let id = self.ids.next();
        let Some(frame) =
            self.transient()
                .publish_for(id, self.next_seq(), &conn, seq, &room, &msg)
        else {
            return;
        };
        if let Some(cluster) = self.cluster() {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Err(e) = cluster
                    .publish_transient(&StreamKey::room(&room), frame, None)
                    .await
                {
                    tracing::warn!(%room, "transient message not handed to other nodes: {e}");
                }
            });
        }
    }
}
