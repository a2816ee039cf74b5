//! The NOTICE payload format: the phase-1 message's title, content and level (SPEC.md §5.6).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::wire::{put_bytesv, varint_len, Reader};

/// Severity of a notice, as in the phase-1 JSON `level` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Informational.
    Info = 0,
    /// Needs attention.
    Warning = 1,
    /// Something failed.
    Error = 2,
    /// Act now.
    Critical = 3,
}

impl Level {
    /// The lower-case name used by the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }

    /// Parses the JSON API's name.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "info" => Level::Info,
            "warning" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Option<Level> {
        Some(match v {
            0 => Level::Info,
            1 => Level::Warning,
            2 => Level::Error,
            3 => Level::Critical,
            _ => return None,
        })
    }
}

/// A structured notification: what the phase-1 JSON carried in `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Severity.
    pub level: Level,
    /// Short title.
    pub title: String,
    /// Body text.
    pub content: String,
}

/// Longest title a notice may carry.
pub const MAX_TITLE_LEN: usize = 1024;

impl Notice {
    /// Encodes the notice as a payload of format NOTICE.
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        let mut b = BytesMut::with_capacity(
            1 + varint_len(self.title.len() as u64) + self.title.len() + self.content.len(),
        );
        b.put_u8(self.level as u8);
        put_bytesv(&mut b, "title", self.title.as_bytes(), MAX_TITLE_LEN)?;
        b.put_slice(self.content.as_bytes());
        Ok(b.freeze())
    }

    /// Decodes a NOTICE payload.
    pub fn decode(payload: Bytes) -> Result<Notice, ProtocolError> {
        let mut r = Reader::new("NOTICE", payload);
        let level = Level::from_u8(r.u8("level")?).ok_or(ProtocolError::Malformed {
            frame: "NOTICE",
            reason: "unknown level",
        })?;
        let title = r.strv(MAX_TITLE_LEN, "title")?;
        let n = r.remaining();
        let content = r.utf8(n, "content")?;
        Ok(Notice {
            level,
            title,
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_round_trips() {
        let n = Notice {
            level: Level::Critical,
            title: "Device 42 alarm".into(),
            content: "Temperature 81 °C".into(),
        };
        assert_eq!(Notice::decode(n.encode().unwrap()).unwrap(), n);
        assert!(Notice::decode(Bytes::from_static(&[9, 0])).is_err());
        assert!(Notice::decode(Bytes::new()).is_err());
    }
}
