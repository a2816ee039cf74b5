//! Error codes (SPEC.md §10) and the codec's typed errors.

use std::fmt;

/// A wire error code, carried by ERROR, AUTH_ERROR and CLOSE frames (SPEC.md §10).
///
/// A newtype rather than an enum so that codes added by newer peers survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $text:expr; )*) => {
        impl ErrorCode {
            $( $(#[$doc])* pub const $name: ErrorCode = ErrorCode($value); )*

            /// Every code defined by this version of SPEC.md, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The SPEC.md name of the code, or `"UNKNOWN"` for codes this build does not know.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $value => stringify!($name), )*
                    _ => "UNKNOWN",
                }
            }

            /// The one-line meaning from SPEC.md's error table.
            pub fn description(self) -> &'static str {
                match self.0 {
                    $( $value => $text, )*
                    _ => "code not known to this peer",
                }
            }
        }
    };
}

codes! {
    /// The first four bytes of a frame were not `PUSH`.
    BAD_MAGIC = 100, "frame does not start with the magic PUSH";
    /// The header's version is outside the versions this peer speaks.
    UNSUPPORTED_VERSION = 101, "header version not supported";
    /// A reserved flag bit was set.
    UNSUPPORTED_FLAGS = 102, "reserved flag bit set";
    /// The header's Length exceeds the receiver's maximum frame length.
    FRAME_TOO_LARGE = 103, "frame length above the receiver's limit";
    /// The crc32 trailer did not match.
    BAD_CHECKSUM = 104, "crc32 trailer does not match";
    /// The receiver requires checksums and the frame had none.
    CHECKSUM_REQUIRED = 105, "receiver requires the CHECKSUM flag";
    /// The body does not follow its frame type's layout.
    MALFORMED_BODY = 106, "body does not match its frame type's layout";
    /// The frame type is not known to the receiver (not fatal).
    UNKNOWN_FRAME_TYPE = 107, "frame type not known to the receiver";
    /// The zstd body could not be decompressed.
    DECOMPRESSION_FAILED = 108, "zstd body could not be decompressed";
    /// The zstd body would inflate beyond the receiver's limit.
    DECOMPRESSED_TOO_LARGE = 109, "decompressed size above the receiver's limit";
    /// A fragment broke the fragmentation rules.
    BAD_FRAGMENT = 110, "fragment out of order, inconsistent or malformed";
    /// A reassembled message exceeds the maximum message size.
    MESSAGE_TOO_LARGE = 111, "reassembled message above the size limit";
    /// Too many messages were being reassembled at once.
    TOO_MANY_PARTIAL = 112, "too many messages in reassembly at once";
    /// A fragmented message did not complete in time.
    REASSEMBLY_TIMEOUT = 113, "fragmented message not completed in time";
    /// A frame arrived that is not allowed in this direction or state.
    UNEXPECTED_FRAME = 114, "frame not allowed in this direction or state";
    /// The first frame was not HELLO.
    AUTH_REQUIRED = 200, "first frame must be HELLO";
    /// HELLO did not arrive before the handshake deadline.
    AUTH_TIMEOUT = 201, "no HELLO before the handshake deadline";
    /// The token is malformed, has a bad signature or bad claims.
    TOKEN_INVALID = 202, "token malformed, badly signed or with bad claims";
    /// The token's `exp` is in the past.
    TOKEN_EXPIRED = 203, "token expired";
    /// Client and server share no protocol version.
    NO_COMMON_VERSION = 204, "no protocol version in common";
    /// The server holds its maximum number of connections.
    TOO_MANY_CONNECTIONS = 300, "server connection limit reached";
    /// This user holds the maximum number of connections.
    TOO_MANY_USER_CONNECTIONS = 301, "per-user connection limit reached";
    /// This connection has joined the maximum number of rooms.
    TOO_MANY_ROOMS = 302, "per-connection room limit reached";
    /// The peer sends faster than it is allowed to.
    RATE_LIMITED = 303, "rate limit exceeded";
    /// The connection's outbound queue overflowed because it reads too slowly.
    SLOW_CONSUMER = 304, "outbound queue full: client reads too slowly";
    /// The request is not permitted (upstream publish disabled, room not joined).
    FORBIDDEN = 400, "request not permitted";
    /// The request is well formed but its values are not acceptable.
    BAD_REQUEST = 401, "request values not acceptable";
    /// An ACK named a position beyond the last position of its stream.
    INVALID_ACK = 402, "ack for a position beyond the stream's last position";
    /// A recall or withdrawal named a message the server does not have.
    NOT_FOUND = 403, "no such message";
    /// The server failed internally.
    INTERNAL = 500, "internal server error";
    /// The server is shutting down.
    SHUTTING_DOWN = 501, "server shutting down";
    /// Durable storage is unavailable; the request was not accepted.
    STORAGE_UNAVAILABLE = 502, "storage unavailable, request not accepted";
    /// The peer stayed silent past the heartbeat timeout.
    HEARTBEAT_TIMEOUT = 503, "no frame received within the heartbeat timeout";
    /// The connection was closed by an operator or the push API.
    KICKED = 504, "disconnected by the server operator";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Everything that can go wrong while encoding or decoding frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Header magic was wrong.
    #[error("bad magic {0:#010x}, expected 0x50555348 (\"PUSH\")")]
    BadMagic(u32),
    /// Header version outside the supported range.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// A reserved flag bit was set.
    #[error("unsupported flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// Length above the configured maximum.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// crc32 mismatch.
    #[error("checksum mismatch: trailer says {expected:#010x}, bytes give {actual:#010x}")]
    BadChecksum {
        /// Value in the trailer.
        expected: u32,
        /// Value computed over the frame.
        actual: u32,
    },
    /// Receiver requires checksums.
    #[error("frame has no checksum but checksums are required")]
    ChecksumRequired,
    /// Body layout violated.
    #[error("malformed {frame} body: {reason}")]
    Malformed {
        /// Frame type name.
        frame: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// zstd failed to decode.
    #[error("decompression failed: {0}")]
    Decompression(String),
    /// zstd body would exceed the decompression limit.
    #[error("decompressed size {size} exceeds the limit of {max} bytes")]
    DecompressedTooLarge {
        /// Declared content size.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// Fragment rules broken.
    #[error("bad fragment: {0}")]
    BadFragment(&'static str),
    /// Reassembled message over the limit (also raised by the encoder).
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size reached so far.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// Too many concurrent reassemblies.
    #[error("more than {max} fragmented messages in reassembly at once")]
    TooManyPartial {
        /// Configured maximum.
        max: usize,
    },
    /// A fragmented message was not completed in time.
    #[error("fragmented message (seq {seq}) not completed within {timeout_ms} ms")]
    ReassemblyTimeout {
        /// Sequence number of the stale message.
        seq: u32,
        /// Configured timeout.
        timeout_ms: u64,
    },
    /// A value cannot be represented in its wire field.
    #[error("field {field} is {len} bytes, the wire allows at most {max}")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Actual length.
        len: usize,
        /// Wire maximum.
        max: usize,
    },
    /// Underlying I/O failure (only when the codec drives a real stream).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtocolError {
    /// The SPEC.md error code a receiver reports for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadMagic(_) => ErrorCode::BAD_MAGIC,
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            ProtocolError::UnsupportedFlags(_) => ErrorCode::UNSUPPORTED_FLAGS,
            ProtocolError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            ProtocolError::BadChecksum { .. } => ErrorCode::BAD_CHECKSUM,
            ProtocolError::ChecksumRequired => ErrorCode::CHECKSUM_REQUIRED,
            ProtocolError::Malformed { .. } | ProtocolError::FieldTooLong { .. } => {
                ErrorCode::MALFORMED_BODY
            }
            ProtocolError::Decompression(_) => ErrorCode::DECOMPRESSION_FAILED,
            ProtocolError::DecompressedTooLarge { .. } => ErrorCode::DECOMPRESSED_TOO_LARGE,
            ProtocolError::BadFragment(_) => ErrorCode::BAD_FRAGMENT,
            ProtocolError::MessageTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            ProtocolError::TooManyPartial { .. } => ErrorCode::TOO_MANY_PARTIAL,
            ProtocolError::ReassemblyTimeout { .. } => ErrorCode::REASSEMBLY_TIMEOUT,
            ProtocolError::Io(_) => ErrorCode::INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_named() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.0), "duplicate code {}", code.0);
            assert_ne!(code.name(), "UNKNOWN");
        }
        assert_eq!(ErrorCode(9999).name(), "UNKNOWN");
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(ProtocolError::BadMagic(0).code(), ErrorCode::BAD_MAGIC);
        assert_eq!(
            ProtocolError::TooManyPartial { max: 1 }.code(),
            ErrorCode::TOO_MANY_PARTIAL
        );
    }
}
