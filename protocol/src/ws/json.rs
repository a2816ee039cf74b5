//! The JSON text mode (subprotocol `push.v1.json`, SPEC.md §12): the phase-1 message format
//! `{"type","id","timestamp","data":{"title","content","level"}}` plus an `op` field, mapped
//! one to one onto the binary protocol's frames so the session logic is shared.

use crate::{
    Frame, Hello, HelloOptions, Join, Level, Notice, Packet, PayloadFormat, Publish, Push, Stream,
    StreamPos, MAX_VERSION, MIN_VERSION,
};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Why a client's JSON message was rejected (answered with close 1007).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON message: {0}")]
pub struct JsonError(pub String);

fn bad(reason: impl Into<String>) -> JsonError {
    JsonError(reason.into())
}

/// The JSON name of a stream: `user`, `broadcast` or `room:<name>`.
pub fn stream_name(s: &Stream) -> String {
    match s {
        Stream::User => "user".into(),
        Stream::Broadcast => "broadcast".into(),
        Stream::Room(r) => format!("room:{r}"),
    }
}

/// Parses a JSON stream name.
pub fn parse_stream(s: &str) -> Option<Stream> {
    match s {
        "user" => Some(Stream::User),
        "broadcast" => Some(Stream::Broadcast),
        _ => s
            .strip_prefix("room:")
            .filter(|r| !r.is_empty())
            .map(|r| Stream::Room(r.to_string())),
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, JsonError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("\"{key}\" must be a string"))),
    }
}

fn required<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str, JsonError> {
    str_field(o, key)?.ok_or_else(|| bad(format!("\"{key}\" is required")))
}

/// An optional boolean field (absent or null: false).
fn bool_field(o: &Map<String, Value>, key: &str) -> Result<bool, JsonError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("\"{key}\" must be true or false"))),
    }
}

fn u64_field(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, JsonError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("\"{key}\" must be a non-negative integer"))),
    }
}

/// `{"user": 5, "room:lobby": 3}` to positions.
fn positions(v: Option<&Value>) -> Result<Vec<StreamPos>, JsonError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let o = v
        .as_object()
        .ok_or_else(|| bad("positions must be an object of stream name to position"))?;
    if o.len() > crate::frame::MAX_POSITIONS {
        return Err(bad("more than 256 positions"));
    }
    o.iter()
        .map(|(k, v)| {
            let stream = parse_stream(k).ok_or_else(|| bad(format!("unknown stream \"{k}\"")))?;
            let position = v
                .as_u64()
                .ok_or_else(|| bad(format!("position of \"{k}\" must be an integer")))?;
            Ok(StreamPos { stream, position })
        })
        .collect()
}

/// Message content from `data` (an object = notice, a string = opaque UTF-8) or
/// `data_base64` (opaque bytes).
fn content(o: &Map<String, Value>) -> Result<(PayloadFormat, Bytes), JsonError> {
    if let Some(b64) = str_field(o, "data_base64")? {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("\"data_base64\" is not base64: {e}")))?;
        return Ok((PayloadFormat::OPAQUE, bytes.into()));
    }
    match o.get("data") {
        Some(Value::String(s)) => Ok((PayloadFormat::OPAQUE, Bytes::from(s.clone()))),
        Some(Value::Object(d)) => {
            let level = match str_field(d, "level")? {
                None => Level::Info,
                Some(l) => Level::parse(l)
                    .ok_or_else(|| bad("\"level\" must be info, warning, error or critical"))?,
            };
            let notice = Notice {
                level,
                title: str_field(d, "title")?.unwrap_or_default().to_string(),
                content: str_field(d, "content")?.unwrap_or_default().to_string(),
            };
            let payload = notice.encode().map_err(|e| bad(e.to_string()))?;
            Ok((PayloadFormat::NOTICE, payload))
        }
        None => Ok((PayloadFormat::OPAQUE, Bytes::new())),
        Some(_) => Err(bad("\"data\" must be an object or a string")),
    }
}

/// Parses one client text message into the frame it stands for.
pub fn parse_client(text: &[u8]) -> Result<Packet, JsonError> {
    let v: Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    let o = v
        .as_object()
        .ok_or_else(|| bad("a message must be a JSON object"))?;
    let seq = u64_field(o, "seq")?.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    let op = required(o, "op")?;
    let frame = match op {
        "hello" => {
            // A client may hold the session to an older version (`"max_version": 1`).
            let max_version = u64_field(o, "max_version")?
                .map_or(MAX_VERSION, |v| v.min(u64::from(u16::MAX)) as u16);
            // Frame size, zstd and checksums do not exist in JSON mode; echo does.
            let no_echo = bool_field(o, "no_echo")?;
            let epoch = u64_field(o, "epoch")?.unwrap_or(0);
            if (no_echo || epoch != 0) && max_version < 2 {
                return Err(bad("\"no_echo\" and \"epoch\" need max_version 2 or more"));
            }
            Frame::Hello(Hello {
                min_version: MIN_VERSION,
                max_version,
                token: required(o, "token")?.to_string(),
                device: str_field(o, "device")?.unwrap_or_default().to_string(),
                resume: positions(o.get("resume"))?,
                options: HelloOptions {
                    no_echo,
                    epoch,
                    ..HelloOptions::default()
                },
            })
        }
        "pong" => Frame::Pong,
        // Version 2: answered by {"op":"pong","seq":...}.
        "ping" => Frame::Ping,
        "ack" => {
            let mut list = positions(o.get("positions"))?;
            if let Some(s) = str_field(o, "stream")? {
                let stream =
                    parse_stream(s).ok_or_else(|| bad(format!("unknown stream \"{s}\"")))?;
                let position =
                    u64_field(o, "position")?.ok_or_else(|| bad("\"position\" is required"))?;
                list.push(StreamPos { stream, position });
            }
            if list.is_empty() {
                return Err(bad(
                    "ack needs \"positions\" or \"stream\" and \"position\"",
                ));
            }
            Frame::Ack(list)
        }
        "join" => Frame::Join(Join {
            room: required(o, "room")?.to_string(),
            resume_after: u64_field(o, "after")?,
        }),
        "leave" => Frame::Leave(required(o, "room")?.to_string()),
        // Version 2: answered by `ok`, or `error` NOT_FOUND.
        "withdraw" => Frame::Withdraw(crate::Withdraw {
            room: required(o, "room")?.to_string(),
            key: required(o, "key")?.to_string(),
        }),
        "publish" => {
            let (format, payload) = content(o)?;
            let transient = bool_field(o, "transient")?;
            Frame::Publish(Publish {
                room: required(o, "room")?.to_string(),
                key: str_field(o, "key")?.unwrap_or_default().to_string(),
                kind: str_field(o, "type")?.unwrap_or_default().to_string(),
                format,
                payload,
                transient,
            })
        }
        "close" => Frame::Close(crate::Close {
            code: crate::ErrorCode(0),
            reconnect_ms: None,
            reason: str_field(o, "reason")?.unwrap_or_default().to_string(),
        }),
        other => {
            return Err(bad(format!(
                "unknown op \"{other}\" (hello, ping, pong, ack, join, leave, publish, withdraw, close)"
            )))
        }
    };
    Ok(Packet::new(seq, frame))
}

/// The message fields of a PUSH: the phase-1 format plus stream and position.
pub fn push_json(p: &Push) -> Value {
    let mut v = json!({
        "op": "push",
        "type": p.kind,
        "id": p.id.to_string(),
        "timestamp": p.timestamp_ms,
        "stream": stream_name(&p.stream),
        "position": p.position,
    });
    if p.position == 0 {
        // Version 2: not stored, nothing to acknowledge or resume from (SPEC.md §5.4).
        v["transient"] = json!(true);
    }
    let notice = (p.format == PayloadFormat::NOTICE)
        .then(|| Notice::decode(p.payload.clone()).ok())
        .flatten();
    if let Some(n) = notice {
        v["data"] = json!({"title": n.title, "content": n.content, "level": n.level.as_str()});
    } else {
        match std::str::from_utf8(&p.payload) {
            Ok(s) => v["data"] = json!(s),
            Err(_) => {
                v["data_base64"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(&p.payload))
            }
        }
    }
    v
}

fn error_json(op: &str, seq: u32, e: &crate::ErrorBody) -> Value {
    json!({"op": op, "seq": seq, "code": e.code.0, "name": e.code.name(), "reason": e.reason})
}

/// The JSON text a server frame becomes in this mode.
pub fn server_json(packet: &Packet) -> Value {
    let seq = packet.seq;
    match &packet.frame {
        Frame::AuthOk(a) => {
            let mut v = json!({
                "op": "welcome", "seq": seq, "version": a.version, "conn_id": a.conn_id,
                "user": a.user, "heartbeat_ms": a.heartbeat_ms,
                "max_message_len": a.max_message_len,
            });
            if a.epoch != 0 {
                v["epoch"] = json!(a.epoch);
            }
            v
        }
        Frame::AuthError(e) => error_json("auth_error", seq, e),
        Frame::Error(e) => error_json("error", seq, e),
        Frame::Ping => json!({"op": "ping"}),
        Frame::Push(p) => push_json(p),
        Frame::Ok(tail) => json!({"op": "ok", "seq": seq, "tail": tail}),
        Frame::PublishAck(a) => json!({
            "op": "publish_ack", "seq": seq, "id": a.id.to_string(),
            "position": a.position, "duplicate": a.duplicate,
        }),
        Frame::Close(c) => json!({
            "op": "close", "code": c.code.0, "name": c.code.name(),
            "reconnect_ms": c.reconnect_ms, "reason": c.reason,
        }),
        Frame::Gap(g) => json!({
            "op": "gap", "stream": stream_name(&g.stream),
            "requested_after": g.requested_after, "first_available": g.first_available,
        }),
        Frame::Recall(r) => json!({
            "op": "recall", "id": r.id.to_string(), "stream": stream_name(&r.stream),
            "position": r.position,
        }),
        other => json!({"op": Frame::type_name(other.type_id()).to_ascii_lowercase(), "seq": seq}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageId;

    #[test]
    fn client_ops_map_to_frames() {
        let p =
            parse_client(br#"{"op":"hello","token":"t","resume":{"user":4,"room:a":2}}"#).unwrap();
        let Frame::Hello(h) = p.frame else { panic!() };
        assert_eq!(h.token, "t");
        assert_eq!(h.resume.len(), 2);
        let p = parse_client(br#"{"op":"ack","seq":9,"stream":"user","position":7}"#).unwrap();
        assert_eq!(p.seq, 9);
        assert_eq!(
            p.frame,
            Frame::Ack(vec![StreamPos {
                stream: Stream::User,
                position: 7
            }])
        );
        let p = parse_client(br#"{"op":"join","room":"lobby","after":3}"#).unwrap();
        assert_eq!(
            p.frame,
            Frame::Join(Join {
                room: "lobby".into(),
                resume_after: Some(3)
            })
        );
        let p = parse_client(
            br#"{"op":"publish","room":"r","type":"chat","data":{"title":"a","level":"warning"}}"#,
        )
        .unwrap();
        let Frame::Publish(pb) = p.frame else {
            panic!()
        };
        assert_eq!(pb.format, PayloadFormat::NOTICE);
        assert_eq!(Notice::decode(pb.payload).unwrap().level, Level::Warning);
    }

    #[test]
    fn bad_client_messages_say_why() {
        for (text, needle) in [
            (&b"not json"[..], "expected"),
            (b"[1]", "object"),
            (b"{\"op\":\"fly\"}", "unknown op"),
            (b"{\"op\":\"ack\"}", "positions"),
            (
                b"{\"op\":\"ack\",\"positions\":{\"nowhere\":1}}",
                "unknown stream",
            ),
            (b"{\"op\":\"hello\",\"token\":5}", "string"),
            (
                b"{\"op\":\"join\",\"room\":\"a\",\"after\":-1}",
                "non-negative",
            ),
        ] {
            let e = parse_client(text).unwrap_err().0;
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn push_uses_the_phase_one_fields() {
        let n = Notice {
            level: Level::Critical,
            title: "T".into(),
            content: "C".into(),
        };
        let p = Push {
            id: MessageId([1; 16]),
            stream: Stream::Room("lobby".into()),
            position: 3,
            timestamp_ms: 1_700_000_000_000,
            kind: "alarm".into(),
            format: PayloadFormat::NOTICE,
            payload: n.encode().unwrap(),
        };
        let v = push_json(&p);
        assert_eq!(v["type"], "alarm");
        assert_eq!(v["id"], "01".repeat(16));
        assert_eq!(v["timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["data"]["level"], "critical");
        assert_eq!(v["stream"], "room:lobby");
        let raw = Push {
            format: PayloadFormat::OPAQUE,
            payload: Bytes::from_static(&[0xff]),
            ..p
        };
        assert_eq!(push_json(&raw)["data_base64"], "/w==");
    }
}
