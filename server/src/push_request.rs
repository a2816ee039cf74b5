//! The publish request as services send it, whatever carries it: the JSON body of
//! `POST /api/v1/push` and the body of a RabbitMQ message share this schema and this
//! validation, which turns it into a [`Target`] and a [`Message`] for the delivery engine.

use bytes::Bytes;
use push_protocol::token::MAX_USER_LEN;
use push_protocol::{Level, Notice, PayloadFormat};
use serde::Deserialize;

use crate::delivery::{Message, Target};
use crate::stream::valid_room_name;

/// Most users one request may target.
pub(crate) const MAX_USERS_PER_REQUEST: usize = 1000;
/// Longest idempotency id.
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest kind.
pub(crate) const MAX_KIND_LEN: usize = 64;
/// Longest TTL: 30 days.
pub(crate) const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushRequest {
    /// Target: exactly one of users, room, broadcast.
    pub to: To,
    /// Application kind, e.g. `alarm`.
    pub kind: String,
    /// Idempotency id chosen by the caller.
    #[serde(default)]
    pub id: Option<String>,
    /// Notice title (makes the payload a NOTICE).
    #[serde(default)]
    pub title: Option<String>,
    /// Notice content (makes the payload a NOTICE).
    #[serde(default)]
    pub content: Option<String>,
    /// Notice level: info, warning, error, critical (default info).
    #[serde(default)]
    pub level: Option<String>,
    /// Opaque UTF-8 payload, when not a notice.
    #[serde(default)]
    pub payload: Option<String>,
    /// Time to live in seconds: not delivered, replayed or retried after it.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// `normal` (default) or `high`: accepted ahead of normal publishes waiting for storage.
    #[serde(default)]
    pub priority: Option<String>,
    /// Not stored, no position: delivered at most once to the version-2 connections online
    /// now (typing indicators, live scores).
    #[serde(default)]
    pub transient: bool,
}

/// The `to` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct To {
    /// User ids.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Room id.
    #[serde(default)]
    pub room: Option<String>,
    /// Everyone.
    #[serde(default)]
    pub broadcast: bool,
}

/// A validation failure naming the offending field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// JSON path of the field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Validates a request into a target and a message.
pub(crate) fn validate(
    req: PushRequest,
    max_message_len: usize,
) -> Result<(Target, Message), Invalid> {
    let chosen =
        req.to.users.is_some() as u8 + req.to.room.is_some() as u8 + req.to.broadcast as u8;
    if chosen != 1 {
        return Err(invalid(
            "to",
            "set exactly one of to.users, to.room, to.broadcast",
        ));
    }
    let target = if let Some(users) = req.to.users {
        if users.is_empty() || users.len() > MAX_USERS_PER_REQUEST {
            return Err(invalid(
                "to.users",
                format!("must list 1 to {MAX_USERS_PER_REQUEST} user ids"),
            ));
        }
        if let Some(u) = users
            .iter()
            .find(|u| u.is_empty() || u.len() > MAX_USER_LEN)
        {
            return Err(invalid(
                "to.users",
                format!("user id {u:?} must be 1 to {MAX_USER_LEN} bytes"),
            ));
        }
        let mut users = users;
        users.sort();
        users.dedup();
        Target::Users(users)
    } else if let Some(room) = req.to.room {
        valid_room_name(&room).map_err(|r| invalid("to.room", r))?;
        Target::Room(room)
    } else {
        Target::Broadcast
    };
    if req.kind.is_empty() || req.kind.len() > MAX_KIND_LEN {
        return Err(invalid(
            "kind",
            format!("must be 1 to {MAX_KIND_LEN} bytes"),
        ));
    }
    if let Some(id) = &req.id {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(invalid("id", format!("must be 1 to {MAX_ID_LEN} bytes")));
        }
    }
    if let Some(ttl) = req.ttl_seconds {
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(invalid(
                "ttl_seconds",
                format!("must be 1 to {MAX_TTL_SECONDS}"),
            ));
        }
    }
    if req.transient {
        // Both only mean something for a stored message.
        if req.id.is_some() {
            return Err(invalid(
                "id",
                "a transient message is not stored, so it has no idempotency id",
            ));
        }
        if req.ttl_seconds.is_some() {
            return Err(invalid(
                "ttl_seconds",
                "a transient message is delivered now or never; it has no time to live",
            ));
        }
    }
    let ttl_ms = req.ttl_seconds.map(|t| t * 1000);
    let high_priority = match req.priority.as_deref() {
        None | Some("normal") => false,
        Some("high") => true,
        Some(_) => return Err(invalid("priority", "must be normal or high")),
    };
    let is_notice = req.title.is_some() || req.content.is_some() || req.level.is_some();
    let (format, payload) = match (is_notice, req.payload) {
        (true, Some(_)) => {
            return Err(invalid(
                "payload",
                "give either payload or title/content/level, not both",
            ))
        }
        (true, None) => {
            let level = match req.level.as_deref() {
                None => Level::Info,
                Some(l) => Level::parse(l).ok_or_else(|| {
                    invalid("level", "must be one of info, warning, error, critical")
                })?,
            };
            let notice = Notice {
                level,
                title: req.title.unwrap_or_default(),
                content: req.content.unwrap_or_default(),
            };
            let bytes = notice
                .encode()
                .map_err(|e| invalid("title", e.to_string()))?;
            (PayloadFormat::NOTICE, bytes)
        }
        (false, Some(p)) => (PayloadFormat::OPAQUE, Bytes::from(p)),
        (false, None) => {
            return Err(invalid(
                "payload",
                "give payload, or title/content/level for a notice",
            ))
        }
    };
    if payload.len() > max_message_len {
        return Err(invalid(
            "payload",
            format!(
                "message is {} bytes, the limit is {max_message_len}",
                payload.len()
            ),
        ));
    }
    Ok((
        target,
        Message {
            key: req.id,
            kind: req.kind,
            format,
            payload,
            ttl_ms,
            high_priority,
            transient: req.transient,
            trace: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Target, Message), Invalid> {
        validate(serde_json::from_str(json).unwrap(), 1024)
    }

    #[test]
    fn notice_to_users() {
        let (t, m) = parse(
            r#"{"to":{"users":["b","a","a"]},"kind":"alarm","title":"T","content":"C","level":"critical"}"#,
        )
        .unwrap();
        assert_eq!(t, Target::Users(vec!["a".into(), "b".into()]));
        assert_eq!(m.format, PayloadFormat::NOTICE);
        let n = Notice::decode(m.payload).unwrap();
        assert_eq!(n.level, Level::Critical);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"to":{},"kind":"k","payload":"p"}"#, "to"),
            (
                r#"{"to":{"room":"a b"},"kind":"k","payload":"p"}"#,
                "to.room",
            ),
            (
                r#"{"to":{"users":[]},"kind":"k","payload":"p"}"#,
                "to.users",
            ),
            (
                r#"{"to":{"broadcast":true},"kind":"","payload":"p"}"#,
                "kind",
            ),
            (r#"{"to":{"broadcast":true},"kind":"k"}"#, "payload"),
            (
                r#"{"to":{"broadcast":true},"kind":"k","level":"loud"}"#,
                "level",
            ),
            (
                r#"{"to":{"broadcast":true},"kind":"k","payload":"p","title":"t"}"#,
                "payload",
            ),
            (
                r#"{"to":{"broadcast":true},"kind":"k","payload":"p","priority":"urgent"}"#,
                "priority",
            ),
            (
                r#"{"to":{"broadcast":true},"kind":"k","payload":"p","ttl_seconds":0}"#,
                "ttl_seconds",
            ),
            (
                r#"{"to":{"broadcast":true},"kind":"k","payload":"p","transient":true,"id":"x"}"#,
                "id",
            ),
            (
                r#"{"to":{"room":"r"},"kind":"k","payload":"p","transient":true,"ttl_seconds":5}"#,
                "ttl_seconds",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
        let big = format!(
            r#"{{"to":{{"broadcast":true}},"kind":"k","payload":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(parse(&big).unwrap_err().field, "payload");
    }
}
