//! Prints the wire-size comparison table for BENCHMARKS.md.
//!
//! `cargo run --release -p push-benches --bin wire-size`

use push_benches::*;
use push_protocol::EncodeOptions;

fn main() {
    let default = EncodeOptions::default();
    let uncompressed = EncodeOptions {
        compress_min: usize::MAX,
        ..default
    };
    println!("| message | phase-1 JSON over WebSocket | binary, no compression | binary (default: zstd from 512 B) | saving |");
    println!("|---|---:|---:|---:|---:|");
    let (mut tj, mut tu, mut tb) = (0, 0, 0);
    for s in sample_set() {
        let j = websocket_frame_len(phase1_json(&s).len());
        let u = binary_len(&s, &uncompressed);
        let b = binary_len(&s, &default);
        tj += j;
        tu += u;
        tb += b;
        println!(
            "| {} | {j} | {u} | {b} | {:.1}% |",
            s.name,
            100.0 * (1.0 - b as f64 / j as f64)
        );
    }
    println!(
        "| **whole set** | **{tj}** | **{tu}** | **{tb}** | **{:.1}%** |",
        100.0 * (1.0 - tb as f64 / tj as f64)
    );
    let worst = Sample {
        name: "16 KiB random text (outside the set)",
        kind: "blob",
        title: "Random".into(),
        content: incompressible(16 * 1024),
        level: push_protocol::Level::Info,
    };
    let j = websocket_frame_len(phase1_json(&worst).len());
    let b = binary_len(&worst, &default);
    let u = binary_len(&worst, &uncompressed);
    println!(
        "| {} | {j} | {u} | {b} | {:.1}% |",
        worst.name,
        100.0 * (1.0 - b as f64 / j as f64)
    );
}
