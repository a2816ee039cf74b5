//! Room requests from a client: JOIN, LEAVE and upstream PUBLISH.

use push_protocol::{ErrorCode, Frame, Gap, Join, Publish, PublishAck, Stream};

use super::Session;
use crate::delivery::{Message, Target};

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
        match self.ctx.hub.join(&join.room, &self.conn) {
            Err(code) => self.error(
                seq,
                code,
                format!(
                    "a connection may join at most {} rooms",
                    self.ctx.config.max_rooms_per_connection
                ),
            ),
            Ok(_) => {
                let tail = self.ctx.delivery.tail(&format!("room:{}", join.room));
                if let Some(after) = join.resume_after {
                    // No room history is retained yet: everything after `after` is gone.
                    if after < tail {
                        self.reply(
                            0,
                            Frame::Gap(Gap {
                                stream: Stream::Room(join.room.clone()),
                                requested_after: after,
                                first_available: tail + 1,
                            }),
                        );
                    }
                }
                self.reply(seq, Frame::Ok(Some(tail)));
            }
        }
    }

    pub(super) fn on_leave(&mut self, seq: u32, room: String) {
        self.ctx.hub.leave(&room, &self.conn);
        self.reply(seq, Frame::Ok(None));
    }

    pub(super) fn on_publish(&mut self, seq: u32, p: Publish) {
        if !self.ctx.config.allow_client_publish {
            return self.error(
                seq,
                ErrorCode::FORBIDDEN,
                "client publishing is disabled on this server (allow_client_publish)",
            );
        }
        if !self.conn.in_room(&p.room) {
            return self.error(
                seq,
                ErrorCode::FORBIDDEN,
                format!("join room {} before publishing to it", p.room),
            );
        }
        let key = (!p.key.is_empty()).then(|| format!("conn-publish:{}:{}", self.conn.user, p.key));
        let msg = Message {
            key,
            kind: p.kind,
            format: p.format,
            payload: p.payload,
        };
        match self.ctx.delivery.publish(&Target::Room(p.room), msg) {
            Ok(accepted) => {
                let a = &accepted[0];
                self.reply(
                    seq,
                    Frame::PublishAck(PublishAck {
                        id: a.id,
                        position: a.position,
                        duplicate: a.duplicate,
                    }),
                );
            }
            Err(e) => self.error(seq, ErrorCode::INTERNAL, e.to_string()),
        }
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
