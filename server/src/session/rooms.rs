//! Room requests from a client: JOIN, LEAVE, upstream PUBLISH and WITHDRAW.

use std::sync::Arc;

use push_protocol::{
    encode_to_bytes, ErrorBody, ErrorCode, Frame, Join, Packet, Publish, Withdraw,
};

use super::Session;
use crate::delivery::{Message, RecallTarget};
use crate::stream::{may_join, valid_room_name, StreamKey};

impl Session {
    pub(super) fn on_join(&mut self, seq: u32, join: Join) {
        if let Err(reason) = valid_room_name(&join.room) {
            return self.error(seq, ErrorCode::BAD_REQUEST, reason);
        }
        let restricted = &self.ctx.config.restricted_room_prefixes;
        if !may_join(self.conn.room_grants(), &join.room, restricted) {
            let reason = format!(
                "room {} is restricted and the token grants no access to it",
                join.room
            );
            return self.error(seq, ErrorCode::FORBIDDEN, reason);
        }
        // Membership, replay and the OK reply happen on the delivery engine, in stream order.
        self.ctx
            .delivery
            .join(self.conn.clone(), join.room, join.resume_after, seq);
    }

    pub(super) fn on_leave(&mut self, seq: u32, room: String) {
        self.ctx.delivery.leave(self.conn.clone(), room, seq);
    }

    /// WITHDRAW (version 2): recalls what this user published to the room with the key.
    pub(super) fn on_withdraw(&mut self, seq: u32, w: Withdraw) {
        if self.conn.version() < 2 {
            let reason = "WITHDRAW needs protocol version 2";
            return self.error(seq, ErrorCode::UNEXPECTED_FRAME, reason);
        }
        if !self.ctx.config.allow_client_publish {
            let reason = "client publishing is disabled on this server (allow_client_publish)";
            return self.error(seq, ErrorCode::FORBIDDEN, reason);
        }
        if w.key.is_empty() {
            let reason =
                "WITHDRAW names the PUBLISH by its key; a PUBLISH without one cannot be withdrawn";
            return self.error(seq, ErrorCode::BAD_REQUEST, reason);
        }
        let target = RecallTarget::Key {
            key: format!("conn-publish:{}:{}", self.conn.user, w.key),
            stream: Some(StreamKey::room(&w.room)),
        };
        let (ctx, conn) = (Arc::clone(&self.ctx), self.conn.clone());
        tokio::spawn(async move {
            let frame = match ctx.delivery.recall(target).await {
                Ok(_) => Frame::Ok(None),
                Err(e) => Frame::Error(ErrorBody {
                    code: e.code(),
                    reason: e.to_string(),
                }),
            };
            if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), ctx.delivery.options()) {
                let _ = ctx.hub.send_conn(&conn, bytes);
            }
        });
    }

    pub(super) fn on_publish(&mut self, seq: u32, p: Publish) {
        if !self.ctx.config.allow_client_publish {
            return self.error(
                seq,
                ErrorCode::FORBIDDEN,
                "client publishing is disabled on this server (allow_client_publish)",
            );
        }
        if p.transient && self.conn.version() < 2 {
            let reason = "a transient PUBLISH needs protocol version 2";
            return self.error(seq, ErrorCode::BAD_REQUEST, reason);
        }
        if p.transient && !p.key.is_empty() {
            let reason = "a transient message is not stored, so it has no idempotency key";
            return self.error(seq, ErrorCode::BAD_REQUEST, reason);
        }
        let key = (!p.key.is_empty()).then(|| format!("conn-publish:{}:{}", self.conn.user, p.key));
        let msg = Message {
            key,
            kind: p.kind,
            format: p.format,
            payload: p.payload,
            ttl_ms: None,
            high_priority: false,
            transient: p.transient,
            trace: None,
        };
        // PUBLISH_ACK (or ERROR) comes from the engine once the message is durable (at once
        // for a transient one), in order with the connection's JOIN and LEAVE.
        self.ctx
            .delivery
            .publish_from_conn(self.conn.clone(), seq, p.room, msg);
    }
}
