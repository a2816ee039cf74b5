//! Where cluster state lives in JetStream: one stream per kind of state, subjects per user,
//! and the headers a stored message carries (written and read here). User ids become subject tokens in hex, so any id
//! the tokens allow (dots, spaces, `*`, `>`) is a valid single token.

use std::fmt::Write as _;

use async_nats::HeaderMap;
use push_protocol::MessageId;

use super::js::Outbound;
use crate::delivery::Message;

/// Header: the message id (32 hex digits), shared by every user of one publish.
pub const ID: &str = "Push-Id";
/// Header: the message's position in the user's stream.
pub const POSITION: &str = "Push-Pos";
/// Header: application kind.
pub const KIND: &str = "Push-Kind";
/// Header: payload format byte.
pub const FORMAT: &str = "Push-Format";
/// Header: acceptance time, Unix ms.
pub const TIMESTAMP: &str = "Push-Ts";
/// Header: expiry time, Unix ms (absent: never).
pub const EXPIRES: &str = "Push-Expires";
/// Header: the W3C trace context of a traced publish (its `push.accept` span).
pub const TRACEPARENT: &str = "traceparent";

/// Hex of `s`'s bytes: a subject token for any user id or key.
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The user id a token was made from.
pub fn untoken(t: &str) -> Option<String> {
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Subject names of one deployment (`prefix` keeps several apart on one NATS).
#[derive(Debug, Clone)]
pub struct Names {
    /// Stream holding user messages, acknowledgements and idempotency records.
    pub users_stream: String,
    /// Stream holding room and broadcast messages, their position counters and idempotency
    /// records.
    pub rooms_stream: String,
    prefix: String,
}

/// The subject token of a room or of the broadcast stream (`_b`: never a hex token).
pub fn stream_token(key: &crate::stream::StreamKey) -> String {
    match key {
        crate::stream::StreamKey::Broadcast => "_b".into(),
        crate::stream::StreamKey::Room(r) => token(r),
        crate::stream::StreamKey::User(u) => token(u),
    }
}

impl Names {
    /// Names under `prefix` (e.g. `push`).
    pub fn new(prefix: &str) -> Names {
        Names {
            users_stream: format!("{}_USERS", prefix.to_uppercase()),
            rooms_stream: format!("{}_ROOMS", prefix.to_uppercase()),
            prefix: prefix.to_string(),
        }
    }

    /// Every subject of the users stream.
    pub fn users_subjects(&self) -> Vec<String> {
        let p = &self.prefix;
        vec![
            format!("{p}.u.>"),
            format!("{p}.ack.>"),
            format!("{p}.idem.>"),
        ]
    }

    /// Every subject of the rooms stream.
    pub fn rooms_subjects(&self) -> Vec<String> {
        let p = &self.prefix;
        vec![
            format!("{p}.r.>"),
            format!("{p}.rm.>"),
            format!("{p}.ridem.>"),
        ]
    }

    /// A room's (or the broadcast stream's) messages, by [`stream_token`].
    pub fn room(&self, tok: &str) -> String {
        format!("{}.r.{tok}", self.prefix)
    }

    /// A room's position counter.
    pub fn room_meta(&self, tok: &str) -> String {
        format!("{}.rm.{tok}", self.prefix)
    }

    /// The record of an idempotency key of a room or broadcast publish.
    pub fn room_idem(&self, key: &str) -> String {
        format!("{}.ridem.{}", self.prefix, token(key))
    }

    /// Republish pattern of room messages (source, destination).
    pub fn room_republish(&self) -> (String, String) {
        let p = &self.prefix;
        (format!("{p}.r.>"), format!("{p}.live.r.>"))
    }

    /// The live subject of a room's stored messages.
    pub fn live_room(&self, tok: &str) -> String {
        format!("{}.live.r.{tok}", self.prefix)
    }

    /// The deployment's epoch (in the rooms stream; no room token starts with `_`).
    pub fn epoch(&self) -> String {
        format!("{}.rm._e", self.prefix)
    }

    /// Transient messages (not stored): every node subscribes.
    pub fn transient(&self) -> String {
        format!("{}.transient", self.prefix)
    }

    /// The control subject every node answers admin requests on.
    pub fn control(&self) -> String {
        format!("{}.ctl", self.prefix)
    }

    /// A user's messages.
    pub fn user(&self, user: &str) -> String {
        format!("{}.u.{}", self.prefix, token(user))
    }

    /// A user's acknowledged position (only the latest is kept).
    pub fn ack(&self, user: &str) -> String {
        format!("{}.ack.{}", self.prefix, token(user))
    }

    /// The record of an idempotency key.
    pub fn idem(&self, key: &str) -> String {
        format!("{}.idem.{}", self.prefix, token(key))
    }

    /// Where the stream's leader republishes stored user messages (source pattern, then
    /// destination pattern).
    pub fn republish(&self) -> (String, String) {
        let p = &self.prefix;
        (format!("{p}.u.>"), format!("{p}.live.u.>"))
    }

    /// The live subject of a user's stored messages.
    pub fn live_user(&self, user: &str) -> String {
        format!("{}.live.u.{}", self.prefix, token(user))
    }

    /// Every user's live subject (one node-wide subscription).
    pub fn live_users(&self) -> String {
        format!("{}.live.u.*", self.prefix)
    }

    /// The user a live subject belongs to.
    pub fn user_of_live(&self, subject: &str) -> Option<String> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".live.u.")?;
        untoken(rest)
    }
}

/// Adds the headers every stored message carries.
pub(crate) fn message_headers(
    mut m: Outbound,
    id: MessageId,
    position: u64,
    msg: &Message,
    now: u64,
) -> Outbound {
    let h = &mut m.headers;
    h.insert(ID, id.to_string().as_str());
    h.insert(POSITION, position.to_string().as_str());
    h.insert(KIND, msg.kind.as_str());
    h.insert(FORMAT, msg.format.0.to_string().as_str());
    h.insert(TIMESTAMP, now.to_string().as_str());
    if let Some(ttl) = msg.ttl_ms {
        h.insert(EXPIRES, now.saturating_add(ttl).to_string().as_str());
    }
    if let Some(tp) = msg.trace.as_ref().and_then(crate::trace::traceparent) {
        h.insert(TRACEPARENT, tp.as_str());
    }
    m
}

/// A message id from its 32 hex digits.
pub(crate) fn parse_id(hex: &str) -> Option<MessageId> {
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(MessageId(id))
}

/// A header's value as a number.
pub(crate) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_become_single_subject_tokens_and_back() {
        for id in ["alice", "a.b c*>", "ünï", ""] {
            let t = token(id);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(untoken(&t).as_deref(), Some(id));
        }
        assert_eq!(untoken("abc"), None);
        let n = Names::new("push");
        assert_eq!(n.users_stream, "PUSH_USERS");
        assert_eq!(n.user("a.b"), "push.u.612e62");
        assert_eq!(n.live_user("a.b"), "push.live.u.612e62");
        assert_eq!(n.republish().1, "push.live.u.>");
        assert_eq!(n.user_of_live("push.live.u.612e62").as_deref(), Some("a.b"));
        assert_eq!(n.user_of_live("push.live.r.612e62"), None);
        assert_eq!(n.user_of_live("pushx.live.u.612e62"), None);
    }
}
