//! Message ids: 48-bit Unix milliseconds, 16 random bits per process, 64-bit counter.
//!
//! Time-ordered like UUIDv7 so ids sort roughly by acceptance; the random node bits and a
//! randomly seeded counter keep two processes (or a restart within one millisecond) apart.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use push_protocol::MessageId;

pub use crate::clock::unix_ms;

/// A process-wide random 64-bit value (std's hasher keys are randomly seeded).
pub fn random_u64() -> u64 {
    RandomState::new().hash_one(unix_ms())
}

/// Generates unique message ids.
#[derive(Debug)]
pub struct IdGen {
    node: u16,
    counter: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        let r = random_u64();
        IdGen {
            node: (r >> 48) as u16,
            counter: AtomicU64::new(r & 0xffff_ffff_ffff),
        }
    }
}

impl IdGen {
    /// The next id.
    pub fn next(&self) -> MessageId {
        let ms = unix_ms();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6..8].copy_from_slice(&self.node.to_be_bytes());
        b[8..].copy_from_slice(&n.to_be_bytes());
        MessageId(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let g = IdGen::default();
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| g.next()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
