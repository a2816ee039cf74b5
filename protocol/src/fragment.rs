//! Reassembly of fragmented messages (SPEC.md §8).
//!
//! Time comes from the caller (`now_ms`), so the reassembler stays deterministic and testable.

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::header::flags;

/// Length of the fragment header at the start of a FRAGMENT frame's body.
pub const FRAGMENT_HEADER_LEN: usize = 4;

/// One message being put back together.
#[derive(Debug)]
struct Partial {
    /// Sequence number shared by all its fragments.
    seq: u32,
    /// Frame type shared by all its fragments.
    ty: u8,
    /// Whether the whole body is compressed; must agree across fragments.
    compressed: bool,
    /// Next fragment index expected.
    next: u16,
    /// Total fragments announced by the first one.
    count: u16,
    /// Body bytes so far.
    buf: BytesMut,
    /// When the first fragment arrived, for the timeout.
    started_ms: u64,
}

/// Limits applied while reassembling.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Largest reassembled body (before decompression).
    pub max_message_len: usize,
    /// Most messages in reassembly at once.
    pub max_partial: usize,
    /// Time allowed from first to last fragment.
    pub timeout_ms: u64,
}

/// Per-connection reassembly state; holds nothing when no message is in flight.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: Vec<Partial>,
}

impl Reassembler {
    /// Number of messages currently being reassembled.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Bytes currently buffered for reassembly.
    pub fn buffered(&self) -> usize {
        self.partials.iter().map(|p| p.buf.len()).sum()
    }

    /// Adds one fragment; returns the whole body once the last fragment arrives.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        limits: &ReassemblyLimits,
        seq: u32,
        ty: u8,
        frame_flags: u8,
        index: u16,
        count: u16,
        chunk: &[u8],
        now_ms: u64,
    ) -> Result<Option<Bytes>, ProtocolError> {
        self.expire(limits, now_ms)?;
        if count < 2 {
            return Err(ProtocolError::BadFragment("fragment count below 2"));
        }
        if index >= count {
            return Err(ProtocolError::BadFragment("fragment index not below count"));
        }
        let compressed = frame_flags & flags::COMPRESSED != 0;
        let slot = match self.partials.iter().position(|p| p.seq == seq) {
            Some(i) => {
                let p = &self.partials[i];
                if p.ty != ty || p.compressed != compressed || p.count != count {
                    return Err(ProtocolError::BadFragment(
                        "type, flags or count differ from the first fragment",
                    ));
                }
                if p.next != index {
                    return Err(ProtocolError::BadFragment("fragment out of order"));
                }
                i
            }
            None => {
                if index != 0 {
                    return Err(ProtocolError::BadFragment(
                        "first fragment seen has a nonzero index",
                    ));
                }
                if self.partials.len() >= limits.max_partial {
                    return Err(ProtocolError::TooManyPartial {
                        max: limits.max_partial,
                    });
                }
                self.partials.push(Partial {
                    seq,
                    ty,
                    compressed,
                    next: 0,
                    count,
                    buf: BytesMut::new(),
                    started_ms: now_ms,
                });
                self.partials.len() - 1
            }
        };
        // One budget for all messages in reassembly together: several half-sent messages must
        // not hold more than one whole message would.
        let size = self.buffered() + chunk.len();
        if size > limits.max_message_len {
            return Err(ProtocolError::MessageTooLarge {
                size: size as u64,
                max: limits.max_message_len as u64,
            });
        }
        let p = &mut self.partials[slot];
        p.buf.extend_from_slice(chunk);
        p.next += 1;
        if p.next == p.count {
            let done = self.partials.swap_remove(slot);
            return Ok(Some(done.buf.freeze()));
        }
        Ok(None)
    }

    /// Fails if any message has been in reassembly longer than the timeout.
    pub fn expire(&mut self, limits: &ReassemblyLimits, now_ms: u64) -> Result<(), ProtocolError> {
        if let Some(p) = self
            .partials
            .iter()
            .find(|p| now_ms.saturating_sub(p.started_ms) > limits.timeout_ms)
        {
            return Err(ProtocolError::ReassemblyTimeout {
                seq: p.seq,
                timeout_ms: limits.timeout_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ReassemblyLimits = ReassemblyLimits {
        max_message_len: 10,
        max_partial: 2,
        timeout_ms: 100,
    };

    #[test]
    fn interleaved_messages_reassemble() {
        let mut r = Reassembler::default();
        assert!(r.push(&L, 1, 6, 0, 0, 2, b"ab", 0).unwrap().is_none());
        assert!(r.push(&L, 2, 6, 0, 0, 2, b"xy", 0).unwrap().is_none());
        assert_eq!(
            r.push(&L, 1, 6, 0, 1, 2, b"cd", 0).unwrap().unwrap(),
            "abcd"
        );
        assert_eq!(r.push(&L, 2, 6, 0, 1, 2, b"z", 0).unwrap().unwrap(), "xyz");
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn limits_are_enforced() {
        let mut r = Reassembler::default();
        r.push(&L, 1, 6, 0, 0, 3, b"a", 0).unwrap();
        r.push(&L, 2, 6, 0, 0, 3, b"a", 0).unwrap();
        assert!(matches!(
            r.push(&L, 3, 6, 0, 0, 3, b"a", 0),
            Err(ProtocolError::TooManyPartial { .. })
        ));
        assert!(matches!(
            r.push(&L, 1, 6, 0, 1, 3, b"0123456789", 0),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            r.push(&L, 2, 6, 0, 2, 3, b"a", 0),
            Err(ProtocolError::BadFragment(_))
        ));
        assert!(matches!(
            r.expire(&L, 101),
            Err(ProtocolError::ReassemblyTimeout { .. })
        ));
    }

    #[test]
    fn messages_in_reassembly_share_one_byte_budget() {
        let mut r = Reassembler::default();
        r.push(&L, 1, 6, 0, 0, 3, b"012345", 0).unwrap();
        // 6 + 5 > 10, although each message alone would fit.
        assert!(matches!(
            r.push(&L, 2, 6, 0, 0, 3, b"abcde", 0),
            Err(ProtocolError::MessageTooLarge { size: 11, max: 10 })
        ));
        assert_eq!(r.buffered(), 6);
    }

    #[test]
    fn inconsistent_fragments_are_rejected() {
        let mut r = Reassembler::default();
        assert!(r.push(&L, 1, 6, 0, 1, 2, b"a", 0).is_err());
        assert!(r.push(&L, 1, 6, 0, 0, 1, b"a", 0).is_err());
        r.push(&L, 1, 6, 0, 0, 2, b"a", 0).unwrap();
        assert!(r.push(&L, 1, 7, 0, 1, 2, b"a", 0).is_err());
    }
}
