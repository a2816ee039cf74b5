//! Inbound decoding for every transport: socket bytes in, protocol packets (and WebSocket
//! control frames) out. Exists only while bytes are pending, like the rest of the read state.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::frame::{self as wsf, close_code, opcode, WsError, WsFrame};
use super::{json, Transport};
use crate::{FrameCodec, Packet, ProtocolError};

/// Bytes requested per read; a read buffer is allocated only when the socket is readable.
pub const READ_CHUNK: usize = 4096;

/// What the peer sent.
#[derive(Debug)]
pub enum Inbound {
    /// A protocol frame (binary, or mapped from JSON).
    Packet(Packet),
    /// WebSocket PING: answer with PONG carrying these bytes.
    Ping(Bytes),
    /// WebSocket PONG.
    Pong,
    /// WebSocket CLOSE from the peer.
    Close(Option<u16>, String),
}

/// Why decoding stopped.
#[derive(Debug)]
pub enum InboundError {
    /// The push protocol was broken.
    Protocol(ProtocolError),
    /// The WebSocket protocol (or the JSON mode) was broken.
    Ws(WsError),
}

/// Read buffer and decoders.
pub struct ReadState {
    /// Bytes as read from the socket.
    pub raw: BytesMut,
    /// WebSocket only: protocol bytes or JSON text of the message being received.
    proto: BytesMut,
    /// WebSocket only: opcode of the message in progress.
    msg: Option<u8>,
    /// WebSocket only: payload bytes of the message in progress so far.
    msg_len: usize,
    /// WebSocket only: a message ended; what is left in `proto` must be a whole frame.
    ended: bool,
    /// Protocol frame decoder (compression, fragmentation, checksum, limits).
    pub codec: FrameCodec,
}

impl ReadState {
    /// Empty state with a first read buffer.
    pub fn new(codec: FrameCodec) -> Self {
        ReadState {
            raw: BytesMut::with_capacity(READ_CHUNK),
            proto: BytesMut::new(),
            msg: None,
            msg_len: 0,
            ended: false,
            codec,
        }
    }

    /// True when nothing is pending, so the state can be dropped until the next read.
    pub fn is_idle(&self) -> bool {
        self.raw.is_empty()
            && self.proto.is_empty()
            && self.msg.is_none()
            && self.codec.partial_messages() == 0
    }

    /// The next complete thing the peer sent, if the buffered bytes hold one.
    pub fn next(
        &mut self,
        transport: Transport,
        max_ws_message: usize,
    ) -> Result<Option<Inbound>, InboundError> {
        if transport == Transport::Tcp {
            return self
                .codec
                .decode(&mut self.raw)
                .map(|p| p.map(Inbound::Packet))
                .map_err(InboundError::Protocol);
        }
        loop {
            if transport == Transport::WsBinary {
                match self.codec.decode(&mut self.proto) {
                    Ok(Some(p)) => return Ok(Some(Inbound::Packet(p))),
                    Ok(None) => {}
                    Err(e) => return Err(InboundError::Protocol(e)),
                }
                if self.ended {
                    self.ended = false;
                    if !self.proto.is_empty() {
                        return Err(InboundError::Ws(WsError::new(
                            close_code::INVALID_PAYLOAD,
                            "a WebSocket message ended inside a protocol frame; each message \
                             must carry whole frames",
                        )));
                    }
                    self.proto = BytesMut::new();
                }
            }
            let frame = wsf::parse(&mut self.raw, max_ws_message).map_err(InboundError::Ws)?;
            let Some(frame) = frame else { return Ok(None) };
            let (op, fin, payload) = match frame {
                WsFrame::Data {
                    opcode,
                    fin,
                    payload,
                } => (opcode, fin, payload),
                WsFrame::Ping(p) => return Ok(Some(Inbound::Ping(p))),
                WsFrame::Pong(_) => return Ok(Some(Inbound::Pong)),
                WsFrame::Close(code, reason) => return Ok(Some(Inbound::Close(code, reason))),
            };
            let kind = self.start_or_continue(op, transport)?;
            self.msg_len = self.msg_len.saturating_add(payload.len());
            if self.msg_len > max_ws_message {
                return Err(InboundError::Ws(WsError::new(
                    close_code::TOO_BIG,
                    format!("message longer than the limit of {max_ws_message} bytes"),
                )));
            }
            self.proto.extend_from_slice(&payload);
            if !fin {
                continue;
            }
            self.msg = None;
            self.msg_len = 0;
            if kind == opcode::TEXT {
                let text = std::mem::take(&mut self.proto);
                return json::parse_client(&text)
                    .map(|p| Some(Inbound::Packet(p)))
                    .map_err(|e| {
                        InboundError::Ws(WsError::new(close_code::INVALID_PAYLOAD, e.to_string()))
                    });
            }
            self.ended = true;
        }
    }

    /// Checks a data frame's place in the message sequence; returns the message's opcode.
    fn start_or_continue(&mut self, op: u8, transport: Transport) -> Result<u8, InboundError> {
        let protocol = |r: &str| InboundError::Ws(WsError::new(close_code::PROTOCOL_ERROR, r));
        let kind = match (self.msg, op) {
            (None, opcode::CONTINUATION) => {
                return Err(protocol("continuation frame without a message to continue"))
            }
            (None, k) => k,
            (Some(k), opcode::CONTINUATION) => k,
            (Some(_), _) => {
                return Err(protocol("new message before the previous one was finished"))
            }
        };
        let wanted = if transport == Transport::WsJson {
            opcode::TEXT
        } else {
            opcode::BINARY
        };
        if kind != wanted {
            let reason = if transport == Transport::WsJson {
                "this connection speaks JSON (subprotocol push.v1.json): send text messages"
            } else {
                "this connection speaks the binary protocol (subprotocol push.v1): send binary \
                 messages, or connect with push.v1.json for JSON"
            };
            return Err(InboundError::Ws(WsError::new(
                close_code::UNSUPPORTED_DATA,
                reason,
            )));
        }
        self.msg = Some(kind);
        Ok(kind)
    }
}
