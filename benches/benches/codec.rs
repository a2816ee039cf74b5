//! Encode and decode throughput of the frame codec (`cargo bench -p push-benches --bench codec`).

use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use push_benches::text_payload;
use push_protocol::*;
use tokio_util::codec::Decoder;

fn packet(size: usize) -> Packet {
    Packet::new(
        1,
        Frame::Push(Push {
            id: MessageId([7; 16]),
            stream: Stream::Room("lobby".into()),
            position: 123_456,
            timestamp_ms: 1_763_800_000_000,
            kind: "report".into(),
            format: PayloadFormat::OPAQUE,
            payload: text_payload(size),
        }),
    )
}

fn variants() -> Vec<(&'static str, EncodeOptions)> {
    let plain = EncodeOptions {
        compress_min: usize::MAX,
        ..EncodeOptions::default()
    };
    vec![
        ("plain", plain),
        (
            "zstd",
            EncodeOptions {
                compress_min: 0,
                ..plain
            },
        ),
        (
            "crc32",
            EncodeOptions {
                checksum: true,
                ..plain
            },
        ),
        (
            "zstd+crc32",
            EncodeOptions {
                compress_min: 0,
                checksum: true,
                ..plain
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for size in [64usize, 1024, 64 * 1024] {
        let p = packet(size);
        let mut enc = c.benchmark_group(format!("encode/{size}B"));
        enc.throughput(Throughput::Bytes(size as u64));
        for (name, opts) in variants() {
            enc.bench_with_input(BenchmarkId::from_parameter(name), &opts, |b, opts| {
                let mut buf = BytesMut::with_capacity(2 * size + 256);
                b.iter(|| {
                    buf.clear();
                    encode_packet(&p, opts, &mut buf).unwrap();
                });
            });
        }
        enc.finish();
        let mut dec = c.benchmark_group(format!("decode/{size}B"));
        dec.throughput(Throughput::Bytes(size as u64));
        for (name, opts) in variants() {
            let wire = encode_to_bytes(&p, &opts).unwrap();
            dec.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
                let mut codec = FrameCodec::default();
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    codec.decode(&mut buf).unwrap().unwrap()
                });
            });
        }
        dec.finish();
    }
}

// criterion's macros define undocumented items.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
    }
}
criterion_main!(group::benches);
