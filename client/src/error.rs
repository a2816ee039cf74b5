//! The SDK's typed errors.

use push_protocol::{ErrorCode, ProtocolError};

/// Everything that can go wrong talking to a push server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that break SPEC.md.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server refused the handshake (bad or expired token, limits). Not worth retrying
    /// unchanged when the code is TOKEN_INVALID or TOKEN_EXPIRED.
    #[error("rejected by the server: {code}: {reason}")]
    Rejected {
        /// Wire code.
        code: ErrorCode,
        /// Server's reason.
        reason: String,
    },
    /// The server closed the session.
    #[error("closed by the server: {code}: {reason}")]
    Closed {
        /// Wire code (0 = normal).
        code: ErrorCode,
        /// Server's reason.
        reason: String,
        /// Reconnect hint, None = do not reconnect.
        reconnect_ms: Option<u32>,
    },
    /// The socket closed without a CLOSE frame.
    #[error("connection lost")]
    ConnectionLost,
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The server answered with a frame that makes no sense here.
    #[error("unexpected frame from the server: {0}")]
    Unexpected(&'static str),
    /// The negotiated protocol version has no such feature (the server is older).
    #[error("not in this session's protocol version: {0}")]
    Unsupported(&'static str),
    /// TLS setup or the TLS handshake failed (including a certificate that does not verify).
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered a request with ERROR.
    #[error("request failed: {code}: {reason}")]
    Request {
        /// Wire code.
        code: ErrorCode,
        /// Server's reason.
        reason: String,
    },
}

impl ClientError {
    /// True when retrying with the same token cannot succeed.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ClientError::Rejected { code, .. }
            if *code == ErrorCode::TOKEN_INVALID || *code == ErrorCode::TOKEN_EXPIRED
                || *code == ErrorCode::NO_COMMON_VERSION)
    }
}
