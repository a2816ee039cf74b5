//! From accept to AUTH_OK: read HELLO within the deadline, negotiate the version, verify the
//! token, register the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use push_protocol::token::{self, TokenError};
use push_protocol::{
    encode_to_bytes, AuthOk, ErrorBody, ErrorCode, Frame, FrameCodec, Hello, Packet, MAX_VERSION,
    MIN_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::context::Ctx;
use crate::delivery::ids::unix_ms;
use crate::hub::Conn;

/// Why a handshake did not produce a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Refused with an AUTH_ERROR frame.
    #[error("refused with {code}: {reason}")]
    Refused {
        /// Wire code sent.
        code: ErrorCode,
        /// Reason sent.
        reason: String,
    },
    /// The peer closed before completing the handshake.
    #[error("peer closed during the handshake")]
    PeerClosed,
    /// Socket error.
    #[error("i/o error during the handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one packet, keeping any extra bytes in `rbuf` for the session.
pub async fn read_packet(
    stream: &TcpStream,
    rbuf: &mut BytesMut,
    codec: &mut FrameCodec,
) -> Result<Packet, HandshakeError> {
    loop {
        match codec.decode(rbuf) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => {
                return Err(HandshakeError::Refused {
                    code: e.code(),
                    reason: e.to_string(),
                })
            }
        }
        stream.readable().await?;
        if rbuf.capacity() == rbuf.len() {
            rbuf.reserve(1024);
        }
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Err(HandshakeError::PeerClosed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Negotiates the highest version both sides speak.
pub fn negotiate(hello: &Hello) -> Option<u16> {
    let hi = hello.max_version.min(MAX_VERSION);
    let lo = hello.min_version.max(MIN_VERSION);
    (lo <= hi).then_some(hi)
}

/// Sends AUTH_ERROR (best effort, bounded by the handshake) and returns the refusal.
pub async fn refuse(
    stream: &mut TcpStream,
    seq: u32,
    code: ErrorCode,
    reason: String,
) -> HandshakeError {
    let frame = Frame::AuthError(ErrorBody {
        code,
        reason: reason.clone(),
    });
    if let Ok(bytes) = encode_to_bytes(&Packet::new(seq, frame), &Default::default()) {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    }
    HandshakeError::Refused { code, reason }
}

/// Runs the handshake; on success the connection is registered in the hub.
pub async fn handshake(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    codec: &mut FrameCodec,
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
) -> Result<Arc<Conn>, HandshakeError> {
    let deadline = ctx.config.handshake_timeout();
    let packet = match tokio::time::timeout(deadline, read_packet(stream, rbuf, codec)).await {
        Err(_) => {
            let reason = format!("no HELLO within {} ms", deadline.as_millis());
            return Err(refuse(stream, 0, ErrorCode::AUTH_TIMEOUT, reason).await);
        }
        Ok(Err(HandshakeError::Refused { code, reason })) => {
            return Err(refuse(stream, 0, code, reason).await)
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(p)) => p,
    };
    let seq = packet.seq;
    let Frame::Hello(hello) = packet.frame else {
        let reason = format!(
            "first frame must be HELLO, got {}",
            Frame::type_name(packet.frame.type_id())
        );
        return Err(refuse(stream, seq, ErrorCode::AUTH_REQUIRED, reason).await);
    };
    let Some(version) = negotiate(&hello) else {
        let reason = format!(
            "client speaks {}..={}, server {}..={}",
            hello.min_version, hello.max_version, MIN_VERSION, MAX_VERSION
        );
        return Err(refuse(stream, seq, ErrorCode::NO_COMMON_VERSION, reason).await);
    };
    let claims = match token::verify(
        ctx.config.jwt_secret.as_bytes(),
        &hello.token,
        unix_ms() / 1000,
    ) {
        Ok(c) => c,
        Err(e) => {
            let code = e.code();
            let reason = match e {
                TokenError::Expired { .. } => "token expired".to_string(),
                other => other.to_string(),
            };
            return Err(refuse(stream, seq, code, reason).await);
        }
    };
    let device = claims
        .device
        .or_else(|| (!hello.device.is_empty()).then(|| hello.device.clone()))
        .map(String::into_boxed_str);
    let conn = Arc::new(Conn::new(
        ctx.next_conn_id(),
        claims.sub.as_str().into(),
        device,
        ctx.hub.now_ms(),
    ));
    if let Err(code) = ctx.delivery.attach(conn.clone(), hello.resume).await {
        let reason = if code == ErrorCode::TOO_MANY_USER_CONNECTIONS {
            format!(
                "user {} already holds {} connections",
                claims.sub, ctx.config.max_connections_per_user
            )
        } else {
            code.description().to_string()
        };
        return Err(refuse(stream, seq, code, reason).await);
    }
    let ok = Frame::AuthOk(AuthOk {
        version,
        conn_id: conn.id,
        user: claims.sub,
        heartbeat_ms: ctx.config.heartbeat_interval_ms,
        max_frame_len: ctx.limits.max_frame_len as u64,
        max_message_len: ctx.limits.max_message_len as u64,
    });
    let bytes = encode_to_bytes(&Packet::new(seq, ok), ctx.delivery.options())
        .map_err(|e| std::io::Error::other(e.to_string()));
    let written = match bytes {
        Ok(b) => stream.write_all(&b).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        ctx.hub.unregister(&conn);
        return Err(e.into());
    }
    tracing::debug!(%peer, conn = conn.id, user = %conn.user, "authenticated");
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            token: String::new(),
            device: String::new(),
            resume: vec![],
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(&hello(1, 1)), Some(1));
        assert_eq!(negotiate(&hello(1, 9)), Some(1));
        assert_eq!(negotiate(&hello(2, 9)), None);
        assert_eq!(negotiate(&hello(0, 0)), None);
    }
}
