//! The allocator's own figures in `/metrics` (issue 18): the server binary, whose global
//! allocator is jemalloc, exports allocated, active, resident, mapped, retained, metadata, dirty
//! and muzzy bytes, so operators can tell a leak (allocated grows) from allocator caching (resident
//! grows alone). A server embedded without an allocator source exports none rather than zeros.

mod common;

use common::process::{free_addrs, spawn, wait_up};
use common::*;

/// The value of the sample `name` (no labels) in a `/metrics` text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_the_allocator_figures() {
    let (tcp, http_addr) = free_addrs();
    let dir = data_dir();
    let mut server = spawn(tcp, http_addr, &dir, "sled", "");
    wait_up(http_addr).await;
    let (status, text) = http(http_addr, "GET", "/metrics", None, "").await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(status, 200, "{text}");
    let figure = |name: &str| {
        sample(&text, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    let allocated = figure("push_memory_allocated_bytes");
    let active = figure("push_memory_active_bytes");
    let resident = figure("push_memory_resident_bytes");
    let mapped = figure("push_memory_mapped_bytes");
    figure("push_memory_retained_bytes");
    assert!(figure("push_memory_metadata_bytes") > 0);
    // Freed pages the allocator holds are part of what it has resident.
    let dirty = figure("push_memory_dirty_bytes");
    figure("push_memory_muzzy_bytes");
    assert!(dirty <= resident, "{dirty} {resident}");
    // jemalloc's own order: live bytes fit in active pages, which are mapped and resident.
    assert!(allocated > 0 && allocated <= active, "{allocated} {active}");
    assert!(
        active <= mapped && active <= resident,
        "{active} {mapped} {resident}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_without_a_source_exports_none() {
    let server = start(config()).await;
    let (status, text) = http(server.http_addr, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    assert!(!text.contains("push_memory_"), "{text}");
}
