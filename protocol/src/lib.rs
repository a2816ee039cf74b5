//! The push server's wire protocol (SPEC.md is the contract this crate implements).
//!
//! No sockets, clocks or runtimes live here: frames, a `tokio_util` codec and pure helpers, so
//! that property tests and fuzzers drive it directly.
//!
//! Layout:
//! - `header`: the fixed 16-byte header and its flag bits;
//! - `frame`: logical frame types and their body layouts;
//! - `wire`: primitive field encodings (varint, str8, ...);
//! - `codec`: whole-frame encode/decode with compression, fragmentation and checksum;
//! - `compress`, `fragment`: the two transformations, each with its limits;
//! - `hello`: the server's verdict on a session's first frame (HELLO, version, token);
//! - `notice`: the NOTICE payload (title, content, level);
//! - `token`: HS256 JWTs carried in HELLO (verify and mint);
//! - `ws`: the WebSocket transport (RFC 6455 framing, JSON mode, inbound decoding), no I/O;
//! - `error`: wire error codes and the typed codec error.

pub mod codec;
pub mod compress;
pub mod error;
pub mod fragment;
pub mod frame;
pub mod header;
pub mod hello;
pub mod notice;
pub mod token;
pub mod wire;
pub mod ws;

pub use codec::{encode_packet, encode_to_bytes, reencode, EncodeOptions, FrameCodec, Limits};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{
    types, AuthOk, Close, ErrorBody, Frame, Gap, Hello, HelloOptions, Join, MessageId, Packet,
    PayloadFormat, Publish, PublishAck, Push, Recall, Stream, StreamPos, Withdraw,
};
pub use header::{Header, HEADER_LEN, MAGIC, MAX_VERSION, MIN_VERSION, VERSION};
pub use notice::{Level, Notice};
