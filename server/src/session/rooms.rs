//! Room requests from a client: JOIN, LEAVE and upstream PUBLISH.

use push_protocol::{ErrorCode, Join, Publish};

use super::Session;
use crate::delivery::Message;

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// Checks a room name against SPEC.md §5.7: 1–64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_room_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_ROOM_LEN {
        return Err("room name must be 1 to 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err("room name may only contain A-Z a-z 0-9 _ . : -");
    }
    Ok(())
}

impl Session {
    pub(super) fn on_join(&mut self, seq: u32, join: Join) {
        if let Err(reason) = valid_room_name(&join.room) {
            return self.error(seq, ErrorCode::BAD_REQUEST, reason);
        }
        if !self
            .conn
            .may_join(&join.room, &self.ctx.config.restricted_room_prefixes)
        {
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

    pub(super) fn on_publish(&mut self, seq: u32, p: Publish) {
        if !self.ctx.config.allow_client_publish {
            return self.error(
                seq,
                ErrorCode::FORBIDDEN,
                "client publishing is disabled on this server (allow_client_publish)",
            );
        }
        let key = (!p.key.is_empty()).then(|| format!("conn-publish:{}:{}", self.conn.user, p.key));
        let msg = Message {
            key,
            kind: p.kind,
            format: p.format,
            payload: p.payload,
            ttl_ms: None,
            high_priority: false,
        };
        // PUBLISH_ACK (or ERROR) comes from the engine once the message is durable.
        self.ctx
            .delivery
            .publish_from_conn(self.conn.clone(), seq, p.room, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(valid_room_name("lobby").is_ok());
        assert!(valid_room_name("team:42.a_b-c").is_ok());
        assert!(valid_room_name("").is_err());
        assert!(valid_room_name("has space").is_err());
        assert!(valid_room_name(&"x".repeat(65)).is_err());
    }
}
