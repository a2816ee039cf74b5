//! WebSocket transport (SPEC.md §12), without I/O: RFC 6455 framing, the JSON text mode, and
//! the inbound decoder that turns socket bytes of any transport into packets. The server's
//! sessions and the fuzzers drive these directly.
//!
//! - `frame`: RFC 6455 frame parsing and writing;
//! - `json`: the JSON text mode's mapping onto protocol frames;
//! - `inbound`: bytes in, packets (and WebSocket control frames) out, for every transport.

pub mod frame;
pub mod inbound;
pub mod json;

use crate::{encode_to_bytes, EncodeOptions, FrameCodec, Limits, Packet};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Subprotocol of the binary mode.
pub const SUBPROTOCOL_BINARY: &str = "push.v1";
/// Subprotocol of the JSON text mode.
pub const SUBPROTOCOL_JSON: &str = "push.v1.json";

/// How protocol frames travel on a connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Raw TCP: the protocol's frames back to back.
    Tcp,
    /// WebSocket binary messages carrying whole protocol frames.
    WsBinary,
    /// WebSocket text messages in the JSON format.
    WsJson,
}

impl Transport {
    /// True for both WebSocket modes.
    pub fn is_ws(self) -> bool {
        self != Transport::Tcp
    }

    /// Turns protocol wire bytes (one or more whole frames, as queued in an outbox) into the
    /// bytes this transport writes.
    pub fn wrap(self, wire: Bytes, limits: Limits, options: EncodeOptions) -> Bytes {
        match self {
            Transport::Tcp => wire,
            Transport::WsBinary => {
                let mut b = BytesMut::with_capacity(wire.len() + 10);
                frame::put_header(&mut b, frame::opcode::BINARY, wire.len());
                b.put_slice(&wire);
                b.freeze()
            }
            Transport::WsJson => {
                let mut codec = FrameCodec::new(limits, options);
                let mut src = BytesMut::from(&wire[..]);
                let mut out = BytesMut::new();
                loop {
                    match codec.decode(&mut src) {
                        Ok(Some(p)) => put_json(&mut out, &p),
                        Ok(None) => break,
                        Err(e) => {
                            // Frames the server encoded itself always decode; if one does not,
                            // the client is told instead of silently missing it.
                            let text = serde_json::json!({
                                "op": "error",
                                "code": e.code().0,
                                "name": e.code().name(),
                                "reason": format!("server frame could not be transcoded: {e}"),
                            })
                            .to_string();
                            frame::put_header(&mut out, frame::opcode::TEXT, text.len());
                            out.put_slice(text.as_bytes());
                            break;
                        }
                    }
                }
                out.freeze()
            }
        }
    }

    /// The bytes of one packet on this transport (handshake replies, final frames).
    pub fn encode(self, packet: &Packet, options: &EncodeOptions) -> Option<Bytes> {
        match self {
            Transport::WsJson => {
                let mut out = BytesMut::new();
                put_json(&mut out, packet);
                Some(out.freeze())
            }
            _ => {
                let wire = encode_to_bytes(packet, options).ok()?;
                Some(self.wrap(wire, Limits::default(), *options))
            }
        }
    }
}

fn put_json(out: &mut BytesMut, packet: &Packet) {
    let text = json::server_json(packet).to_string();
    frame::put_header(out, frame::opcode::TEXT, text.len());
    out.put_slice(text.as_bytes());
}
