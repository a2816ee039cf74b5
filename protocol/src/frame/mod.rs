//! Logical frames and their body layouts (SPEC.md §5).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};
use crate::wire::{put_bytesv, put_str8, put_varint, Reader};

mod body;

pub use body::*;
use body::{put_positions, read_positions};

/// Longest token accepted in HELLO.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Most stream positions in one HELLO or ACK.
pub const MAX_POSITIONS: usize = 256;
/// Longest reason text in ERROR / AUTH_ERROR / CLOSE.
pub const MAX_REASON_LEN: usize = 1024;

/// Frame type numbers (the low byte of the header's Type field).
pub mod types {
    /// Client opens the session.
    pub const HELLO: u8 = 0x01;
    /// Server accepts the session.
    pub const AUTH_OK: u8 = 0x02;
    /// Server rejects the session.
    pub const AUTH_ERROR: u8 = 0x03;
    /// Server heartbeat.
    pub const PING: u8 = 0x04;
    /// Client heartbeat answer.
    pub const PONG: u8 = 0x05;
    /// Server delivers a message.
    pub const PUSH: u8 = 0x06;
    /// Client confirms positions.
    pub const ACK: u8 = 0x07;
    /// Client joins a room.
    pub const JOIN: u8 = 0x08;
    /// Client leaves a room.
    pub const LEAVE: u8 = 0x09;
    /// Client publishes upstream to a room.
    pub const PUBLISH: u8 = 0x0A;
    /// Server confirms a request.
    pub const OK: u8 = 0x0B;
    /// Server confirms a PUBLISH.
    pub const PUBLISH_ACK: u8 = 0x0C;
    /// Either side reports an error.
    pub const ERROR: u8 = 0x0D;
    /// Either side ends the session.
    pub const CLOSE: u8 = 0x0E;
    /// Server reports that history before a position is gone.
    pub const GAP: u8 = 0x0F;
    /// Server withdraws a message the connection may have received (version 2).
    pub const RECALL: u8 = 0x10;
    /// Client withdraws a message it published (version 2).
    pub const WITHDRAW: u8 = 0x11;
}

/// A logical frame (one or more wire frames when fragmented).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// 0x01, client to server.
    Hello(Hello),
    /// 0x02, server to client.
    AuthOk(AuthOk),
    /// 0x03, server to client.
    AuthError(ErrorBody),
    /// 0x04, server to client.
    Ping,
    /// 0x05, client to server.
    Pong,
    /// 0x06, server to client.
    Push(Push),
    /// 0x07, client to server.
    Ack(Vec<StreamPos>),
    /// 0x08, client to server.
    Join(Join),
    /// 0x09, client to server.
    Leave(String),
    /// 0x0A, client to server.
    Publish(Publish),
    /// 0x0B, server to client; optional stream tail position.
    Ok(Option<u64>),
    /// 0x0C, server to client.
    PublishAck(PublishAck),
    /// 0x0D, either direction.
    Error(ErrorBody),
    /// 0x0E, either direction.
    Close(Close),
    /// 0x0F, server to client.
    Gap(Gap),
    /// 0x10, server to client (version 2).
    Recall(Recall),
    /// 0x11, client to server (version 2).
    Withdraw(Withdraw),
    /// A type this build does not know; kept so the session can answer UNKNOWN_FRAME_TYPE.
    Unknown {
        /// Type number.
        ty: u8,
        /// Raw (decompressed, reassembled) body.
        body: Bytes,
    },
}

/// A frame with its header sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Header Sequence (SPEC.md §6).
    pub seq: u32,
    /// The frame.
    pub frame: Frame,
}

impl Packet {
    /// Pairs a frame with a sequence number.
    pub fn new(seq: u32, frame: Frame) -> Self {
        Packet { seq, frame }
    }
}

impl Frame {
    /// The frame type number.
    pub fn type_id(&self) -> u8 {
        use types::*;
        match self {
            Frame::Hello(_) => HELLO,
            Frame::AuthOk(_) => AUTH_OK,
            Frame::AuthError(_) => AUTH_ERROR,
            Frame::Ping => PING,
            Frame::Pong => PONG,
            Frame::Push(_) => PUSH,
            Frame::Ack(_) => ACK,
            Frame::Join(_) => JOIN,
            Frame::Leave(_) => LEAVE,
            Frame::Publish(_) => PUBLISH,
            Frame::Ok(_) => OK,
            Frame::PublishAck(_) => PUBLISH_ACK,
            Frame::Error(_) => ERROR,
            Frame::Close(_) => CLOSE,
            Frame::Gap(_) => GAP,
            Frame::Recall(_) => RECALL,
            Frame::Withdraw(_) => WITHDRAW,
            Frame::Unknown { ty, .. } => *ty,
        }
    }

    /// The SPEC.md name of a frame type.
    pub fn type_name(ty: u8) -> &'static str {
        use types::*;
        match ty {
            HELLO => "HELLO",
            AUTH_OK => "AUTH_OK",
            AUTH_ERROR => "AUTH_ERROR",
            PING => "PING",
            PONG => "PONG",
            PUSH => "PUSH",
            ACK => "ACK",
            JOIN => "JOIN",
            LEAVE => "LEAVE",
            PUBLISH => "PUBLISH",
            OK => "OK",
            PUBLISH_ACK => "PUBLISH_ACK",
            ERROR => "ERROR",
            CLOSE => "CLOSE",
            GAP => "GAP",
            RECALL => "RECALL",
            WITHDRAW => "WITHDRAW",
            _ => "UNKNOWN",
        }
    }

    /// Appends the (uncompressed, unfragmented) body.
    pub fn encode_body(&self, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Frame::Hello(h) => {
                dst.put_u16(h.min_version);
                dst.put_u16(h.max_version);
                put_bytesv(dst, "token", h.token.as_bytes(), MAX_TOKEN_LEN)?;
                put_str8(dst, "device", &h.device)?;
                put_positions(dst, &h.resume)?;
                if !h.options.is_default() {
                    h.options.encode(dst);
                }
            }
            Frame::AuthOk(a) => {
                dst.put_u16(a.version);
                put_varint(dst, a.conn_id);
                put_str8(dst, "user", &a.user)?;
                put_varint(dst, a.heartbeat_ms);
                put_varint(dst, a.max_frame_len);
                put_varint(dst, a.max_message_len);
                if a.epoch != 0 {
                    put_varint(dst, a.epoch);
                }
            }
            Frame::AuthError(e) | Frame::Error(e) => {
                dst.put_u16(e.code.0);
                put_reason(dst, &e.reason)?;
            }
            Frame::Ping | Frame::Pong => {}
            Frame::Push(p) => {
                dst.put_slice(&p.id.0);
                p.stream.encode(dst)?;
                put_varint(dst, p.position);
                put_varint(dst, p.timestamp_ms);
                put_str8(dst, "kind", &p.kind)?;
                dst.put_u8(p.format.0);
                dst.put_slice(&p.payload);
            }
            Frame::Ack(list) => put_positions(dst, list)?,
            Frame::Join(j) => {
                put_str8(dst, "room", &j.room)?;
                match j.resume_after {
                    None => dst.put_u8(0),
                    Some(p) => {
                        dst.put_u8(1);
                        put_varint(dst, p);
                    }
                }
            }
            Frame::Leave(room) => put_str8(dst, "room", room)?,
            Frame::Publish(p) => {
                put_str8(dst, "room", &p.room)?;
                put_str8(dst, "key", &p.key)?;
                put_str8(dst, "kind", &p.kind)?;
                dst.put_u8(p.format.0);
                if p.transient {
                    dst.put_u8(body::PUBLISH_TRANSIENT);
                }
                dst.put_slice(&p.payload);
            }
            Frame::Ok(pos) => {
                if let Some(p) = pos {
                    put_varint(dst, *p);
                }
            }
            Frame::PublishAck(a) => {
                dst.put_slice(&a.id.0);
                put_varint(dst, a.position);
                dst.put_u8(a.duplicate as u8);
            }
            Frame::Close(c) => {
                dst.put_u16(c.code.0);
                dst.put_u32(c.reconnect_ms.unwrap_or(u32::MAX));
                put_reason(dst, &c.reason)?;
            }
            Frame::Gap(g) => {
                g.stream.encode(dst)?;
                put_varint(dst, g.requested_after);
                put_varint(dst, g.first_available);
            }
            Frame::Recall(r) => {
                dst.put_slice(&r.id.0);
                r.stream.encode(dst)?;
                put_varint(dst, r.position);
            }
            Frame::Withdraw(w) => {
                put_str8(dst, "room", &w.room)?;
                put_str8(dst, "key", &w.key)?;
            }
            Frame::Unknown { body, .. } => dst.put_slice(body),
        }
        Ok(())
    }

    /// Parses a complete (decompressed, reassembled) body of type `ty` in its version-1 layout.
    pub fn decode_body(ty: u8, body: Bytes) -> Result<Frame, ProtocolError> {
        Frame::decode_body_of(ty, 1, body)
    }

    /// The lowest protocol version defining this frame's layout, which its header carries
    /// (SPEC.md §9): 2 for a transient PUBLISH, an AUTH_OK with an epoch, RECALL and
    /// WITHDRAW; 1 for everything else.
    pub fn layout_version(&self) -> u16 {
        match self {
            Frame::Publish(p) if p.transient => 2,
            Frame::AuthOk(a) if a.epoch != 0 => 2,
            Frame::Recall(_) | Frame::Withdraw(_) => 2,
            _ => 1,
        }
    }

    /// Parses a complete body of type `ty` sent with header Version `version`.
    pub fn decode_body_of(ty: u8, version: u16, body: Bytes) -> Result<Frame, ProtocolError> {
        use types::*;
        let mut r = Reader::new(Frame::type_name(ty), body);
        let frame = match ty {
            HELLO => {
                let min_version = r.u16("min_version")?;
                let max_version = r.u16("max_version")?;
                Frame::Hello(Hello {
                    min_version,
                    max_version,
                    token: r.strv(MAX_TOKEN_LEN, "token")?,
                    device: r.str8("device")?,
                    resume: read_positions(&mut r)?,
                    options: HelloOptions::decode(&mut r, max_version)?,
                })
            }
            AUTH_OK => Frame::AuthOk(AuthOk {
                version: r.u16("version")?,
                conn_id: r.varint("conn_id")?,
                user: r.str8("user")?,
                heartbeat_ms: r.varint("heartbeat_ms")?,
                max_frame_len: r.varint("max_frame_len")?,
                max_message_len: r.varint("max_message_len")?,
                // The version-2 layout ends with the epoch.
                epoch: if version >= 2 { r.varint("epoch")? } else { 0 },
            }),
            AUTH_ERROR => Frame::AuthError(read_error(&mut r)?),
            ERROR => Frame::Error(read_error(&mut r)?),
            PING => Frame::Ping,
            PONG => Frame::Pong,
            PUSH => {
                let id = read_id(&mut r)?;
                Frame::Push(Push {
                    id,
                    stream: Stream::decode(&mut r)?,
                    position: r.varint("position")?,
                    timestamp_ms: r.varint("timestamp_ms")?,
                    kind: r.str8("kind")?,
                    format: PayloadFormat(r.u8("format")?),
                    payload: r.rest(),
                })
            }
            ACK => Frame::Ack(read_positions(&mut r)?),
            JOIN => {
                let room = r.str8("room")?;
                let resume_after = match r.u8("resume flag")? {
                    0 => None,
                    1 => Some(r.varint("resume_after")?),
                    _ => return Err(r.err("resume flag must be 0 or 1")),
                };
                Frame::Join(Join { room, resume_after })
            }
            LEAVE => Frame::Leave(r.str8("room")?),
            PUBLISH => {
                let room = r.str8("room")?;
                let key = r.str8("key")?;
                let kind = r.str8("kind")?;
                let format = PayloadFormat(r.u8("format")?);
                // The version-2 layout has a flags byte before the payload.
                let transient = version >= 2 && {
                    let f = r.u8("publish flags")?;
                    if f & !body::PUBLISH_TRANSIENT != 0 {
                        return Err(r.err("unknown publish flag"));
                    }
                    f & body::PUBLISH_TRANSIENT != 0
                };
                Frame::Publish(Publish {
                    room,
                    key,
                    kind,
                    format,
                    payload: r.rest(),
                    transient,
                })
            }
            OK => Frame::Ok(if r.remaining() == 0 {
                None
            } else {
                Some(r.varint("position")?)
            }),
            PUBLISH_ACK => Frame::PublishAck(PublishAck {
                id: read_id(&mut r)?,
                position: r.varint("position")?,
                duplicate: match r.u8("duplicate")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.err("duplicate must be 0 or 1")),
                },
            }),
            CLOSE => {
                let code = ErrorCode(r.u16("code")?);
                let reconnect = r.u32("reconnect_ms")?;
                Frame::Close(Close {
                    code,
                    reconnect_ms: (reconnect != u32::MAX).then_some(reconnect),
                    reason: read_reason(&mut r)?,
                })
            }
            GAP => Frame::Gap(Gap {
                stream: Stream::decode(&mut r)?,
                requested_after: r.varint("requested_after")?,
                first_available: r.varint("first_available")?,
            }),
            // Frame types of version 2 exist only with its header Version.
            RECALL if version >= 2 => Frame::Recall(Recall {
                id: read_id(&mut r)?,
                stream: Stream::decode(&mut r)?,
                position: r.varint("position")?,
            }),
            WITHDRAW if version >= 2 => Frame::Withdraw(Withdraw {
                room: r.str8("room")?,
                key: r.str8("key")?,
            }),
            _ => Frame::Unknown { ty, body: r.rest() },
        };
        r.finish()?;
        Ok(frame)
    }
}

fn read_id(r: &mut Reader) -> Result<MessageId, ProtocolError> {
    let b = r.take(16, "message id")?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&b);
    Ok(MessageId(id))
}

fn put_reason(dst: &mut BytesMut, reason: &str) -> Result<(), ProtocolError> {
    if reason.len() > MAX_REASON_LEN {
        return Err(ProtocolError::FieldTooLong {
            field: "reason",
            len: reason.len(),
            max: MAX_REASON_LEN,
        });
    }
    dst.put_slice(reason.as_bytes());
    Ok(())
}

fn read_reason(r: &mut Reader) -> Result<String, ProtocolError> {
    let n = r.remaining();
    if n > MAX_REASON_LEN {
        return Err(r.err("reason longer than 1024 bytes"));
    }
    r.utf8(n, "reason")
}

fn read_error(r: &mut Reader) -> Result<ErrorBody, ProtocolError> {
    Ok(ErrorBody {
        code: ErrorCode(r.u16("code")?),
        reason: read_reason(r)?,
    })
}
