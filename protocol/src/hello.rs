//! The server's decision on a session's first frame (SPEC.md §4, §5.1, §9): it must be HELLO,
//! share a version, and carry a valid token. Pure, so the fuzzers drive the handshake's whole
//! input path (transport decoding, then this) without sockets.

use crate::token::{self, Claims, TokenError};
use crate::{ErrorCode, Frame, Hello, Packet, MAX_VERSION, MIN_VERSION};

/// An accepted HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The HELLO's Sequence, echoed by AUTH_OK.
    pub seq: u32,
    /// The HELLO itself (device, resume positions).
    pub hello: Hello,
    /// Negotiated protocol version.
    pub version: u16,
    /// The token's claims.
    pub claims: Claims,
}

/// Why a first frame was refused: the AUTH_ERROR to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Sequence to echo.
    pub seq: u32,
    /// Wire code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

/// Negotiates the highest version both sides speak.
pub fn negotiate(hello: &Hello) -> Option<u16> {
    let hi = hello.max_version.min(MAX_VERSION);
    let lo = hello.min_version.max(MIN_VERSION);
    (lo <= hi).then_some(hi)
}

/// Checks a session's first frame against the HS256 token secret at time `now_secs`.
pub fn admit(packet: Packet, secret: &[u8], now_secs: u64) -> Result<Admitted, Refusal> {
    admit_with(packet, |t| token::verify(secret, t, now_secs))
}

/// Checks a session's first frame, verifying its token with `verify`.
pub fn admit_with(
    packet: Packet,
    verify: impl FnOnce(&str) -> Result<Claims, TokenError>,
) -> Result<Admitted, Refusal> {
    let seq = packet.seq;
    let refuse = |code, reason| Refusal { seq, code, reason };
    let Frame::Hello(hello) = packet.frame else {
        let reason = format!(
            "first frame must be HELLO, got {}",
            Frame::type_name(packet.frame.type_id())
        );
        return Err(refuse(ErrorCode::AUTH_REQUIRED, reason));
    };
    let Some(version) = negotiate(&hello) else {
        let reason = format!(
            "client speaks {}..={}, server {}..={}",
            hello.min_version, hello.max_version, MIN_VERSION, MAX_VERSION
        );
        return Err(refuse(ErrorCode::NO_COMMON_VERSION, reason));
    };
    let claims = verify(&hello.token).map_err(|e| refuse(e.code(), e.public_reason()))?;
    Ok(Admitted {
        seq,
        hello,
        version,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16, token: &str) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            token: token.into(),
            device: String::new(),
            resume: vec![],
            options: Default::default(),
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(&hello(1, 1, "")), Some(1));
        assert_eq!(negotiate(&hello(1, 2, "")), Some(2));
        assert_eq!(negotiate(&hello(1, 9, "")), Some(2));
        assert_eq!(negotiate(&hello(2, 9, "")), Some(2));
        assert_eq!(negotiate(&hello(3, 9, "")), None);
        assert_eq!(negotiate(&hello(0, 0, "")), None);
    }

    #[test]
    fn first_frames_are_judged() {
        let secret = b"hello-test-secret-0123456789";
        let good = token::mint(
            secret,
            &Claims {
                sub: "ann".into(),
                exp: 2_000,
                device: None,
                rooms: Vec::new(),
            },
        );
        let ok = admit(
            Packet::new(4, Frame::Hello(hello(1, 3, &good))),
            secret,
            1_000,
        )
        .unwrap();
        assert_eq!((ok.seq, ok.version, ok.claims.sub.as_str()), (4, 2, "ann"));
        let code = |p: Packet, now| admit(p, secret, now).unwrap_err().code;
        assert_eq!(
            code(Packet::new(1, Frame::Pong), 0),
            ErrorCode::AUTH_REQUIRED
        );
        assert_eq!(
            code(Packet::new(1, Frame::Hello(hello(5, 6, &good))), 0),
            ErrorCode::NO_COMMON_VERSION
        );
        assert_eq!(
            code(Packet::new(1, Frame::Hello(hello(1, 1, &good))), 3_000),
            ErrorCode::TOKEN_EXPIRED
        );
        assert_eq!(
            code(Packet::new(1, Frame::Hello(hello(1, 1, "x.y.z"))), 0),
            ErrorCode::TOKEN_INVALID
        );
    }
}
