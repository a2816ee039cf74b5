//! From accept to AUTH_OK: read HELLO within the deadline, negotiate the version, verify the
//! token, register the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use push_protocol::{
    hello, AuthOk, EncodeOptions, ErrorBody, ErrorCode, Frame, Hello, HelloOptions, Join, Packet,
    Stream,
};

use super::link::Link;
use crate::context::Ctx;
use crate::delivery::ids::unix_ms;
use crate::hub::Conn;
use push_protocol::ws::frame::{self as wsf, WsError};
use push_protocol::ws::inbound::{Inbound, InboundError, ReadState};
use push_protocol::ws::Transport;

/// Why a handshake did not produce a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Refused with an AUTH_ERROR frame.
    #[error("refused with {code}: {reason}")]
    Refused {
        /// Sequence echoed: the refused frame's (0 when its header was unreadable).
        seq: u32,
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
    /// The WebSocket framing or JSON mode was broken.
    #[error("{0}")]
    Ws(WsError),
    /// The TLS handshake failed or did not finish in time.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Reads one packet, keeping any extra bytes in `st` for the session.
pub(super) async fn read_packet(
    stream: &mut Link,
    st: &mut ReadState,
    transport: Transport,
    max_ws_message: usize,
) -> Result<Packet, HandshakeError> {
    loop {
        match st.next(transport, max_ws_message) {
            Ok(Some(Inbound::Packet(p))) => return Ok(p),
            // Pings before HELLO are not answered: the handshake deadline is short.
            Ok(Some(Inbound::Ping(_) | Inbound::Pong)) => continue,
            Ok(Some(Inbound::Close(..))) => return Err(HandshakeError::PeerClosed),
            Ok(None) => {}
            Err(InboundError::Protocol(e)) => {
                return Err(HandshakeError::Refused {
                    seq: st.codec.error_seq(),
                    code: e.code(),
                    reason: e.to_string(),
                })
            }
            Err(InboundError::Ws(e)) => return Err(HandshakeError::Ws(e)),
        }
        stream.readable().await?;
        if st.raw.capacity() == st.raw.len() {
            st.raw.reserve(1024);
        }
        match stream.try_read_buf(&mut st.raw) {
            Ok(0) => return Err(HandshakeError::PeerClosed),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends AUTH_ERROR (best effort, bounded by the handshake) and returns the refusal. On
/// WebSocket a close frame follows, with code 4000 + the error code.
pub(super) async fn refuse(
    stream: &mut Link,
    transport: Transport,
    seq: u32,
    code: ErrorCode,
    reason: String,
) -> HandshakeError {
    let frame = Frame::AuthError(ErrorBody {
        code,
        reason: reason.clone(),
    });
    if let Some(bytes) = transport.encode(&Packet::new(seq, frame), &Default::default()) {
        let _ = stream.write_all(&bytes).await;
        if transport.is_ws() {
            let close = wsf::encode_close(wsf::close_code_for(code), &reason);
            let _ = stream.write_all(&close).await;
        }
        let _ = stream.shutdown().await;
    }
    HandshakeError::Refused { seq, code, reason }
}

/// Sends a WebSocket close for broken framing during the handshake.
async fn refuse_ws(stream: &mut Link, e: WsError) -> HandshakeError {
    let _ = stream
        .write_all(&wsf::encode_close(e.code, &e.reason))
        .await;
    let _ = stream.shutdown().await;
    HandshakeError::Ws(e)
}

/// An authenticated connection, registered in the hub.
pub(super) struct Handshaken {
    pub(super) conn: Arc<Conn>,
    /// HELLO's Sequence.
    pub(super) seq: u32,
    /// HELLO's room resume entries, to be handled as JOINs with resume (SPEC.md §5.1).
    pub(super) rooms: Vec<Join>,
}

/// Runs the handshake; on success the connection is registered in the hub.
pub(super) async fn handshake(
    stream: &mut Link,
    st: &mut ReadState,
    hello: Option<Hello>,
    transport: Transport,
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
) -> Result<Handshaken, HandshakeError> {
    let deadline = ctx.config.handshake_timeout();
    // One deadline for the TLS handshake and HELLO together.
    let until = tokio::time::Instant::now() + deadline;
    match tokio::time::timeout_at(until, stream.tls_handshake()).await {
        Ok(Ok(())) => {
            if let Some(kind) = stream.tls_handshake_kind() {
                ctx.stats.tls_handshake(kind);
            }
        }
        Ok(Err(e)) => return Err(HandshakeError::Tls(e.to_string())),
        Err(_) => {
            return Err(HandshakeError::Tls(format!(
                "not done within {} ms",
                deadline.as_millis()
            )))
        }
    }
    let max_ws = ctx.config.ws_max_message;
    let packet = match hello {
        Some(h) => Packet::new(0, Frame::Hello(h)),
        None => match tokio::time::timeout_at(until, read_packet(stream, st, transport, max_ws))
            .await
        {
            Err(_) => {
                let reason = format!("no HELLO within {} ms", deadline.as_millis());
                return Err(refuse(stream, transport, 0, ErrorCode::AUTH_TIMEOUT, reason).await);
            }
            Ok(Err(HandshakeError::Refused { seq, code, reason })) => {
                return Err(refuse(stream, transport, seq, code, reason).await)
            }
            Ok(Err(HandshakeError::Ws(e))) => return Err(refuse_ws(stream, e).await),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(p)) => p,
        },
    };
    let now = unix_ms() / 1000;
    let admitted = match hello::admit_with(packet, |t| ctx.tokens.verify(t, now)) {
        Ok(a) => a,
        Err(r) => return Err(refuse(stream, transport, r.seq, r.code, r.reason).await),
    };
    let hello::Admitted {
        seq,
        hello,
        version,
        claims,
    } = admitted;
    let device = claims
        .device
        .or_else(|| (!hello.device.is_empty()).then(|| hello.device.clone()))
        .map(String::into_boxed_str);
    let conn = Arc::new(
        Conn::with_grants(
            ctx.next_conn_id(),
            claims.sub.as_str().into(),
            device,
            claims.rooms,
            ctx.hub.now_ms(),
        )
        .with_version(version)
        .with_transport(usize::from(transport.is_ws()))
        .with_framing(transport)
        .with_client_options(
            client_encoding(ctx.delivery.options(), &hello.options),
            hello.options.no_echo,
        ),
    );
    let epoch = ctx.delivery.epoch();
    let mut resume = hello.resume;
    ctx.delivery
        .restart_positions(&conn, hello.options.epoch, &mut resume);
    let rooms = resume
        .iter()
        .filter_map(|p| match &p.stream {
            Stream::Room(room) => Some(Join {
                room: room.clone(),
                resume_after: Some(p.position),
            }),
            _ => None,
        })
        .collect();
    if let Err(code) = ctx.delivery.attach(conn.clone(), resume).await {
        let reason = if code == ErrorCode::TOO_MANY_USER_CONNECTIONS {
            format!(
                "user {} already holds {} connections",
                claims.sub, ctx.config.max_connections_per_user
            )
        } else {
            code.description().to_string()
        };
        return Err(refuse(stream, transport, seq, code, reason).await);
    }
    let ok = Frame::AuthOk(AuthOk {
        version,
        conn_id: conn.id,
        user: claims.sub,
        heartbeat_ms: ctx.config.heartbeat_interval_ms,
        max_frame_len: ctx.limits.max_frame_len as u64,
        max_message_len: ctx.limits.max_message_len as u64,
        epoch: if version >= 2 { epoch } else { 0 },
    });
    // From AUTH_OK on, frames follow the client's options (checksums, size, no zstd).
    let options = conn.encoding().unwrap_or(ctx.delivery.options());
    let bytes = transport
        .encode(&Packet::new(seq, ok), options)
        .ok_or_else(|| std::io::Error::other("AUTH_OK cannot be encoded"));
    let written = match bytes {
        Ok(b) => stream.write_all(&b).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        ctx.hub.unregister(&conn);
        return Err(e.into());
    }
    tracing::debug!(%peer, conn = conn.id, user = %conn.user, "authenticated");
    Ok(Handshaken { conn, seq, rooms })
}

/// How the server's frames must be re-encoded for a client with these HELLO options
/// (SPEC.md §5.1.2); `None` when the server's own encoding already suits it.
pub(super) fn client_encoding(server: &EncodeOptions, o: &HelloOptions) -> Option<EncodeOptions> {
    let max_frame_len = match o.max_frame_len {
        0 => server.max_frame_len,
        n => n.min(server.max_frame_len),
    };
    if !o.no_zstd && !o.checksum && max_frame_len == server.max_frame_len {
        return None;
    }
    Some(EncodeOptions {
        compress_min: if o.no_zstd {
            usize::MAX
        } else {
            server.compress_min
        },
        checksum: server.checksum || o.checksum,
        max_frame_len,
        ..*server
    })
}
