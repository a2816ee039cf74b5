//! The bodies frames carry (SPEC.md §5): ids, streams and positions, and one struct per
//! frame type with fields.

use bytes::{BufMut, Bytes, BytesMut};

use super::MAX_POSITIONS;
use crate::error::{ErrorCode, ProtocolError};
use crate::wire::{put_str8, put_varint, Reader};

/// A 128-bit message id (UUID-compatible), unique per accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Which stream a message belongs to, as seen by the receiving connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// The authenticated user's own stream.
    User,
    /// A room (group) by name.
    Room(String),
    /// The broadcast stream every connection receives.
    Broadcast,
}

impl Stream {
    pub(super) fn encode(&self, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            Stream::User => dst.put_u8(0),
            Stream::Room(name) => {
                dst.put_u8(1);
                put_str8(dst, "room", name)?;
            }
            Stream::Broadcast => dst.put_u8(2),
        }
        Ok(())
    }

    pub(super) fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        match r.u8("stream kind")? {
            0 => Ok(Stream::User),
            1 => Ok(Stream::Room(r.str8("room name")?)),
            2 => Ok(Stream::Broadcast),
            _ => Err(r.err("unknown stream kind")),
        }
    }
}

/// A position in a stream: the last one processed (resume, ack) or one assigned (push).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPos {
    /// The stream.
    pub stream: Stream,
    /// Position within it; positions start at 1, 0 means "none yet".
    pub position: u64,
}

pub(super) fn put_positions(dst: &mut BytesMut, list: &[StreamPos]) -> Result<(), ProtocolError> {
    if list.len() > MAX_POSITIONS {
        return Err(ProtocolError::FieldTooLong {
            field: "positions",
            len: list.len(),
            max: MAX_POSITIONS,
        });
    }
    put_varint(dst, list.len() as u64);
    for p in list {
        p.stream.encode(dst)?;
        put_varint(dst, p.position);
    }
    Ok(())
}

pub(super) fn read_positions(r: &mut Reader) -> Result<Vec<StreamPos>, ProtocolError> {
    let n = r.varint("position count")?;
    if n > MAX_POSITIONS as u64 {
        return Err(r.err("more than 256 positions"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let stream = Stream::decode(r)?;
        let position = r.varint("position")?;
        out.push(StreamPos { stream, position });
    }
    Ok(out)
}

/// HELLO: the client's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// Access token (a JWT for this server).
    pub token: String,
    /// Device label; empty when the client has none.
    pub device: String,
    /// Last processed position per stream, for replay.
    pub resume: Vec<StreamPos>,
    /// What the client asks of the server's frames (version 2; the default asks nothing and
    /// is not sent, so the bytes stay those of version 1).
    pub options: HelloOptions,
}

/// The version-2 options block a client may append to HELLO (SPEC.md §5.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HelloOptions {
    /// Largest wire frame (Length) the client accepts; 0 = no limit of its own. The server
    /// fragments to it.
    pub max_frame_len: u32,
    /// The client cannot inflate zstd: no server frame is compressed.
    pub no_zstd: bool,
    /// Every server frame from AUTH_OK on carries a crc32 trailer.
    pub checksum: bool,
    /// The connection's own room PUBLISHes are not pushed back to it.
    pub no_echo: bool,
    /// The epoch the client's resume positions belong to (from its last AUTH_OK); 0 = none
    /// known. From another epoch, they are answered by GAPs and not applied.
    pub epoch: u64,
}

impl HelloOptions {
    /// Smallest non-zero `max_frame_len` a client may ask for.
    pub const MIN_FRAME_LEN: u32 = 256;
    const NO_ZSTD: u8 = 1;
    const CHECKSUM: u8 = 2;
    const NO_ECHO: u8 = 4;

    /// True when the block asks for nothing (and is therefore not sent).
    pub fn is_default(&self) -> bool {
        *self == HelloOptions::default()
    }

    pub(super) fn encode(&self, dst: &mut BytesMut) {
        put_varint(dst, u64::from(self.max_frame_len));
        let mut flags = 0;
        for (on, bit) in [
            (self.no_zstd, Self::NO_ZSTD),
            (self.checksum, Self::CHECKSUM),
            (self.no_echo, Self::NO_ECHO),
        ] {
            if on {
                flags |= bit;
            }
        }
        dst.put_u8(flags);
        put_varint(dst, self.epoch);
    }

    /// Reads the block after HELLO's resume list, when there is one. Only a client that
    /// speaks version 2 may send it; in version 1 such bytes are trailing garbage.
    pub(super) fn decode(r: &mut Reader, max_version: u16) -> Result<Self, ProtocolError> {
        if r.remaining() == 0 {
            return Ok(HelloOptions::default());
        }
        if max_version < 2 {
            return Err(r.err("options after the resume list need max_version 2 or more"));
        }
        let max_frame_len = r.varint("max_frame_len")?;
        let max_frame_len = match u32::try_from(max_frame_len) {
            Ok(0) => 0,
            Ok(n) if n >= Self::MIN_FRAME_LEN => n,
            _ => return Err(r.err("max_frame_len must be 0 or 256..=4294967295")),
        };
        let flags = r.u8("option flags")?;
        if flags & !(Self::NO_ZSTD | Self::CHECKSUM | Self::NO_ECHO) != 0 {
            return Err(r.err("unknown option flag"));
        }
        Ok(HelloOptions {
            max_frame_len,
            no_zstd: flags & Self::NO_ZSTD != 0,
            checksum: flags & Self::CHECKSUM != 0,
            no_echo: flags & Self::NO_ECHO != 0,
            epoch: r.varint("epoch")?,
        })
    }
}

/// AUTH_OK: the server accepted the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    /// Negotiated protocol version.
    pub version: u16,
    /// Server-assigned connection id, for logs and support.
    pub conn_id: u64,
    /// Authenticated user id.
    pub user: String,
    /// Interval between server PINGs.
    pub heartbeat_ms: u64,
    /// Largest Length the server accepts.
    pub max_frame_len: u64,
    /// Largest reassembled (and decompressed) body the server accepts.
    pub max_message_len: u64,
    /// Version 2: the epoch of the server's streams (SPEC.md §5.2), sent with the version-2
    /// layout; 0 = not sent (a version-1 session).
    pub epoch: u64,
}

/// Body format of a PUSH or PUBLISH payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadFormat(pub u8);

impl PayloadFormat {
    /// Application bytes the server does not interpret.
    pub const OPAQUE: PayloadFormat = PayloadFormat(0);
    /// A [`crate::Notice`]: level, title, content.
    pub const NOTICE: PayloadFormat = PayloadFormat(1);
}

/// PUSH: a message delivered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Message id; the same message always carries the same id.
    pub id: MessageId,
    /// Stream the message belongs to.
    pub stream: Stream,
    /// Position in that stream.
    pub position: u64,
    /// Server acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application-defined kind ("alarm", "password_changed", ...).
    pub kind: String,
    /// How to read `payload`.
    pub format: PayloadFormat,
    /// Message content.
    pub payload: Bytes,
}

/// PUBLISH flag bits of the version-2 layout.
pub(super) const PUBLISH_TRANSIENT: u8 = 1;

/// JOIN: subscribe this connection to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// Room name.
    pub room: String,
    /// Replay everything after this position, if retained; `None` = live only.
    pub resume_after: Option<u64>,
}

/// PUBLISH: an upstream message from the client to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Target room.
    pub room: String,
    /// Idempotency key chosen by the client; empty = none.
    pub key: String,
    /// Application-defined kind.
    pub kind: String,
    /// How to read `payload`.
    pub format: PayloadFormat,
    /// Message content.
    pub payload: Bytes,
    /// Version 2: not stored, no position, delivered at most once to members connected now
    /// (SPEC.md §5.8). Sent with the version-2 layout (a flags byte after `format`).
    pub transient: bool,
}

/// PUBLISH_ACK: the server accepted an upstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// Id assigned to the message.
    pub id: MessageId,
    /// Its position in the room stream.
    pub position: u64,
    /// True when the key had been accepted before and this is the original's id.
    pub duplicate: bool,
}

/// ERROR and AUTH_ERROR bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Error code (SPEC.md §10).
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

/// CLOSE: the sender ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Why (SPEC.md §10; 0 = normal).
    pub code: ErrorCode,
    /// Reconnect after this many ms; `None` = do not reconnect.
    pub reconnect_ms: Option<u32>,
    /// Human-readable reason.
    pub reason: String,
}

/// RECALL (version 2): the publisher withdrew a message; a client that has it drops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recall {
    /// The withdrawn message's id.
    pub id: MessageId,
    /// Its stream.
    pub stream: Stream,
    /// Its position (it stays taken: positions are not reused).
    pub position: u64,
}

/// WITHDRAW (version 2): a client withdraws the message it published to `room` with `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdraw {
    /// The room it was published to.
    pub room: String,
    /// The PUBLISH's idempotency key.
    pub key: String,
}

/// GAP: part of a stream the client asked for is no longer retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The stream.
    pub stream: Stream,
    /// Position the client asked to resume after.
    pub requested_after: u64,
    /// First position still available; replay starts there.
    pub first_available: u64,
}
