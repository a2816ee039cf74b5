//! The allocator's own figures: what the server has allocated against what the allocator
//! holds from the operating system, so an operator can tell a leak (allocated grows) from
//! caching or fragmentation in the allocator (resident grows while allocated stays flat). The
//! binary installs the source (jemalloc is its global allocator); a library user without one
//! exports nothing rather than misleading zeros.

use std::sync::OnceLock;

/// One reading of the allocator, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in pages that hold live allocations (allocated plus their fragmentation).
    pub active: u64,
    /// Bytes the allocator holds in physical memory (its share of RSS).
    pub resident: u64,
    /// Bytes in extents mapped for allocations.
    pub mapped: u64,
    /// Bytes kept mapped but returned to the OS (virtual only).
    pub retained: u64,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: u64,
    /// Bytes in freed pages not yet returned to the OS (jemalloc's dirty pages: resident, and
    /// reused before new pages are touched; purged after `dirty_decay_ms`).
    pub dirty: u64,
    /// Bytes in pages given back lazily (MADV_FREE: the kernel takes them only under memory
    /// pressure, so they may still count in RSS).
    pub muzzy: u64,
}

static SOURCE: OnceLock<fn() -> Option<AllocatorStats>> = OnceLock::new();

/// Installs the function that reads the global allocator's figures (once per process).
pub fn set_source(read: fn() -> Option<AllocatorStats>) {
    let _ = SOURCE.set(read);
}

/// The allocator's figures now, when a source is installed and answers.
pub fn read() -> Option<AllocatorStats> {
    SOURCE.get().and_then(|read| read())
}
