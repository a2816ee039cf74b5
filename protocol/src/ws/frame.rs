//! RFC 6455 framing, server side: parse masked client frames, write unmasked server frames.
//!
//! Pure functions over byte buffers, so the session's event loop stays the only place that
//! touches the socket and the fuzz/unit tests drive this directly.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// WebSocket opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close handshake.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// WebSocket close codes the server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message of a type this connection does not accept (text vs binary).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message whose content is invalid (bad UTF-8, bad JSON, a cut protocol frame).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy of the server was violated (authentication, limits, the push protocol).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message larger than the server accepts.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit an internal error or is overloaded.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The WebSocket close code for a push-protocol code (SPEC.md §12.4): 4000 + the code (RFC 6455
/// leaves 4000-4999 to applications) so browsers, which see only the close event, learn why;
/// 1001 for a server shutting down.
pub fn close_code_for(code: crate::ErrorCode) -> u16 {
    if code == crate::ErrorCode::SHUTTING_DOWN {
        close_code::GOING_AWAY
    } else {
        4000u16.saturating_add(code.0)
    }
}

/// Longest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why the peer's WebSocket input was rejected; carries the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket close {code}: {reason}")]
pub struct WsError {
    /// Close code (RFC 6455 §7.4).
    pub code: u16,
    /// Human-readable reason (sent truncated to fit a control frame).
    pub reason: String,
}

impl WsError {
    /// An error with this close code.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        WsError {
            code,
            reason: reason.into(),
        }
    }

    fn protocol(reason: impl Into<String>) -> Self {
        WsError::new(close_code::PROTOCOL_ERROR, reason)
    }
}

/// One complete frame from the client, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A data frame (text, binary or continuation); `opcode` says which.
    Data {
        /// Opcode of the frame (TEXT, BINARY or CONTINUATION).
        opcode: u8,
        /// Last frame of the message.
        fin: bool,
        /// Unmasked payload.
        payload: Bytes,
    },
    /// PING with its payload (answered with a PONG carrying the same bytes).
    Ping(Bytes),
    /// PONG with its payload.
    Pong(Bytes),
    /// CLOSE with the peer's code (if any) and reason.
    Close(Option<u16>, String),
}

/// Takes one complete client frame off the front of `raw`; `Ok(None)` when more bytes are
/// needed. A data frame longer than `max_payload` is refused from its header alone, so a
/// hostile length never makes the server buffer it.
pub fn parse(raw: &mut BytesMut, max_payload: usize) -> Result<Option<WsFrame>, WsError> {
    parse_frame(raw, max_payload, true)
}

/// The client side of [`parse`]: takes one complete (unmasked) server frame off `raw`.
pub fn parse_from_server(
    raw: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<WsFrame>, WsError> {
    parse_frame(raw, max_payload, false)
}

/// Parses one frame; `masked` says which side sent it (clients mask, servers do not).
fn parse_frame(
    raw: &mut BytesMut,
    max_payload: usize,
    masked: bool,
) -> Result<Option<WsFrame>, WsError> {
    if raw.len() < 2 {
        return Ok(None);
    }
    let b0 = raw[0];
    let b1 = raw[1];
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(WsError::protocol(
            "reserved bits set without a negotiated extension",
        ));
    }
    let op = b0 & 0x0F;
    let control = op & 0x08 != 0;
    match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {}
        _ => return Err(WsError::protocol(format!("unknown opcode {op:#x}"))),
    }
    if (b1 & 0x80 != 0) != masked {
        let reason = if masked {
            "client frames must be masked"
        } else {
            "server frames must not be masked"
        };
        return Err(WsError::protocol(reason));
    }
    let (len, at) = match b1 & 0x7F {
        126 => {
            if raw.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([raw[2], raw[3]])), 4)
        }
        127 => {
            if raw.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if control {
        if !fin {
            return Err(WsError::protocol("control frames must not be fragmented"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::protocol(
                "control frame payload longer than 125 bytes",
            ));
        }
    } else if len > max_payload as u64 {
        return Err(WsError::new(
            close_code::TOO_BIG,
            format!("frame of {len} bytes exceeds the limit of {max_payload}"),
        ));
    }
    let header = at + if masked { 4 } else { 0 };
    let total = header + len as usize;
    if raw.len() < total {
        // Nothing is reserved for the announced length: the buffer grows only with bytes that
        // actually arrive, so headers announcing large frames cost nothing by themselves.
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask[..header - at].copy_from_slice(&raw[at..header]);
    raw.advance(header);
    let mut payload = raw.split_to(len as usize);
    if masked {
        unmask(&mut payload, mask);
    }
    let payload = payload.freeze();
    Ok(Some(match op {
        opcode::PING => WsFrame::Ping(payload),
        opcode::PONG => WsFrame::Pong(payload),
        opcode::CLOSE => parse_close(&payload)?,
        _ => WsFrame::Data {
            opcode: op,
            fin,
            payload,
        },
    }))
}

fn parse_close(payload: &[u8]) -> Result<WsFrame, WsError> {
    match payload.len() {
        0 => Ok(WsFrame::Close(None, String::new())),
        1 => Err(WsError::protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| {
                WsError::new(close_code::INVALID_PAYLOAD, "close reason is not UTF-8")
            })?;
            Ok(WsFrame::Close(Some(code), reason.to_string()))
        }
    }
}

/// XORs `data` with the 4-byte masking key (RFC 6455 §5.3).
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends an unmasked server frame header for a final frame of `len` bytes.
pub fn put_header(dst: &mut BytesMut, op: u8, len: usize) {
    dst.put_u8(0x80 | op);
    if len < 126 {
        dst.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        dst.put_u8(126);
        dst.put_u16(len as u16);
    } else {
        dst.put_u8(127);
        dst.put_u64(len as u64);
    }
}

/// A complete unmasked server frame.
pub fn encode(op: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut b, op, payload.len());
    b.put_slice(payload);
    b.freeze()
}

/// A CLOSE frame; the reason is cut at a character boundary to fit 123 bytes.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    encode(opcode::CLOSE, &p)
}

/// Builds a masked client frame, as browsers send them (tests and tools).
pub fn encode_masked(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(first_byte);
    let len = payload.len();
    if len < 126 {
        b.put_u8(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        b.put_u8(0x80 | 126);
        b.put_u16(len as u16);
    } else {
        b.put_u8(0x80 | 127);
        b.put_u64(len as u64);
    }
    b.put_slice(&mask);
    let mut p = payload.to_vec();
    unmask(&mut p, mask);
    b.put_slice(&p);
    b.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn parse_all(bytes: &[u8]) -> Result<Option<WsFrame>, WsError> {
        parse(&mut BytesMut::from(bytes), 1 << 20)
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            parse_all(&wire).unwrap(),
            Some(WsFrame::Data {
                opcode: opcode::TEXT,
                fin: true,
                payload: Bytes::from_static(b"Hello"),
            })
        );
        assert_eq!(encode_masked(0x81, b"Hello", MASK), wire);
    }

    #[test]
    fn partial_input_waits_at_every_cut() {
        let payload = vec![7u8; 300];
        let wire = encode_masked(0x82, &payload, MASK);
        for cut in 0..wire.len() {
            let mut raw = BytesMut::from(&wire[..cut]);
            assert_eq!(parse(&mut raw, 1 << 20).unwrap(), None, "cut {cut}");
        }
        let mut raw = BytesMut::from(&wire[..]);
        let f = parse(&mut raw, 1 << 20).unwrap().unwrap();
        assert!(matches!(f, WsFrame::Data { payload: p, .. } if p.len() == 300));
        assert!(raw.is_empty());
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(&encode(opcode::BINARY, &[1, 2])[..], &[0x82, 2, 1, 2]);
        assert_eq!(
            &encode(opcode::BINARY, &[0; 126])[..4],
            &[0x82, 126, 0, 126]
        );
        assert_eq!(
            &encode(opcode::BINARY, &vec![0; 70_000])[..10],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    #[test]
    fn hostile_frames_get_their_close_codes() {
        let unmasked = [0x82, 0x01, 0x00];
        assert_eq!(
            parse_all(&unmasked).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        let rsv = encode_masked(0xC2, b"x", MASK);
        assert_eq!(
            parse_all(&rsv).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        let unknown_op = encode_masked(0x83, b"x", MASK);
        assert_eq!(
            parse_all(&unknown_op).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        let fragmented_ping = encode_masked(0x09, b"x", MASK);
        assert_eq!(
            parse_all(&fragmented_ping).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        let long_ping = encode_masked(0x89, &[0; 126], MASK);
        assert_eq!(
            parse_all(&long_ping).unwrap_err().code,
            close_code::PROTOCOL_ERROR
        );
        // A huge announced length is refused from the header, before any payload arrives.
        let mut huge = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(
            parse(&mut huge, 1 << 20).unwrap_err().code,
            close_code::TOO_BIG
        );
        assert!(huge.capacity() < 1 << 20);
        // A large frame within the limit allocates nothing ahead of its bytes.
        let mut big = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0, 0x0F, 0, 0, 1, 2, 3, 4][..]);
        assert_eq!(parse(&mut big, 1 << 20).unwrap(), None);
        assert!(big.capacity() < 4096, "{}", big.capacity());
    }

    #[test]
    fn control_frames() {
        let ping = encode_masked(0x89, b"hi", MASK);
        assert_eq!(
            parse_all(&ping).unwrap(),
            Some(WsFrame::Ping(Bytes::from_static(b"hi")))
        );
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        let close = encode_masked(0x88, &close, MASK);
        assert_eq!(
            parse_all(&close).unwrap(),
            Some(WsFrame::Close(Some(1000), "bye".into()))
        );
        let reason = "é".repeat(100);
        let c = encode_close(1008, &reason);
        assert!(c.len() <= 2 + MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }

    #[test]
    fn clients_read_what_the_server_writes() {
        for len in [0, 5, 126, 70_000] {
            let payload = vec![3u8; len];
            let mut raw = BytesMut::from(&encode(opcode::BINARY, &payload)[..]);
            let f = parse_from_server(&mut raw, 1 << 20).unwrap().unwrap();
            assert_eq!(
                f,
                WsFrame::Data {
                    opcode: opcode::BINARY,
                    fin: true,
                    payload: payload.into(),
                }
            );
            assert!(raw.is_empty());
        }
        let mut close = BytesMut::from(&encode_close(4304, "slow")[..]);
        assert_eq!(
            parse_from_server(&mut close, 1024).unwrap(),
            Some(WsFrame::Close(Some(4304), "slow".into()))
        );
        // A masked frame is a client's, not the server's.
        let masked = encode_masked(0x82, b"x", MASK);
        let e = parse_from_server(&mut BytesMut::from(&masked[..]), 1024).unwrap_err();
        assert_eq!(e.code, close_code::PROTOCOL_ERROR);
    }

    #[test]
    fn protocol_codes_map_to_application_close_codes() {
        assert_eq!(close_code_for(crate::ErrorCode::SLOW_CONSUMER), 4304);
        assert_eq!(close_code_for(crate::ErrorCode::TOKEN_INVALID), 4202);
        assert_eq!(
            close_code_for(crate::ErrorCode::SHUTTING_DOWN),
            close_code::GOING_AWAY
        );
    }

    #[test]
    fn unmask_is_an_involution_at_every_length() {
        for n in 0..20 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut d = data.clone();
            unmask(&mut d, MASK);
            unmask(&mut d, MASK);
            assert_eq!(d, data);
        }
    }
}
