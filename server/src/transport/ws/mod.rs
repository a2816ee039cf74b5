//! The WebSocket shim (SPEC.md §12): `GET /ws` upgrades, then the same session task as TCP
//! runs over RFC 6455 framing. In binary mode (subprotocol `push.v1`) each WebSocket message
//! carries whole protocol frames; in JSON mode (`push.v1.json`) each text message is one
//! frame in the phase-1 JSON format.
//!
//! - `frame`: RFC 6455 frame parsing and writing (pure);
//! - `json`: the JSON text mode's mapping onto protocol frames;
//! - `upgrade`: the HTTP handshake (`/ws` route), origin check and token in the query string.

pub mod frame;
pub mod json;
pub mod upgrade;

use bytes::{BufMut, Bytes, BytesMut};
use push_protocol::{encode_to_bytes, EncodeOptions, FrameCodec, Limits, Packet};
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
                            // Frames the server encoded itself always decode; say so if not.
                            tracing::error!("cannot transcode a queued frame to JSON: {e}");
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
