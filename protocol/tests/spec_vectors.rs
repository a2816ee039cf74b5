//! Every vector in SPEC.md §11 decodes to one frame and re-encodes to the identical bytes.

use bytes::BytesMut;
use push_protocol::header::flags;
use push_protocol::*;
use tokio_util::codec::Decoder;

fn vectors() -> Vec<(String, Vec<u8>)> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md"))
        .expect("SPEC.md next to the workspace root");
    let mut out = Vec::new();
    let mut lines = spec.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- vector: ")
            .and_then(|s| s.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```hex"),
            "vector {name} must open a hex block"
        );
        let mut bytes = Vec::new();
        for l in lines.by_ref() {
            if l == "```" {
                break;
            }
            for tok in l.split_whitespace() {
                bytes.push(u8::from_str_radix(tok, 16).expect("hex byte"));
            }
        }
        out.push((name.to_string(), bytes));
    }
    out
}

/// Reads the encoder options a vector was produced with from its own first header.
fn options_of(bytes: &[u8]) -> EncodeOptions {
    let h = Header::parse(bytes).unwrap();
    EncodeOptions {
        compress_min: if h.has(flags::COMPRESSED) {
            0
        } else {
            usize::MAX
        },
        zstd_level: 3,
        checksum: h.has(flags::CHECKSUM),
        max_frame_len: if h.has(flags::FRAGMENT) {
            h.length
        } else {
            64 * 1024
        },
    }
}

#[test]
fn spec_has_a_vector_for_every_frame_type_and_flag() {
    let v = vectors();
    let mut types_seen = std::collections::HashSet::new();
    let mut flags_seen = 0u8;
    for (_, bytes) in &v {
        let h = Header::parse(bytes).unwrap();
        types_seen.insert(h.ty);
        flags_seen |= h.flags;
    }
    for ty in 0x01..=0x0F {
        assert!(types_seen.contains(&ty), "no vector for type {ty:#04x}");
    }
    assert_eq!(flags_seen, flags::KNOWN, "vectors must cover every flag");
}

#[test]
fn spec_vectors_decode_and_reencode_exactly() {
    for (name, bytes) in vectors() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&bytes[..]);
        let packet = codec
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: incomplete"));
        assert!(buf.is_empty(), "{name}: bytes left over");
        assert!(!matches!(packet.frame, Frame::Unknown { .. }), "{name}");
        let again = encode_to_bytes(&packet, &options_of(&bytes)).unwrap();
        assert_eq!(&again[..], &bytes[..], "{name}: re-encoding differs");
    }
}

#[test]
fn spec_vectors_decode_fed_one_byte_at_a_time() {
    for (name, bytes) in vectors() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            if let Some(p) = codec.decode(&mut buf).unwrap() {
                assert!(got.is_none(), "{name}: two frames");
                got = Some(p);
            }
        }
        assert!(got.is_some(), "{name}: nothing decoded");
    }
}

#[test]
fn notice_vector_carries_the_documented_notice() {
    let (_, bytes) = vectors()
        .into_iter()
        .find(|(n, _)| n == "push_notice")
        .unwrap();
    let p = FrameCodec::default()
        .decode(&mut BytesMut::from(&bytes[..]))
        .unwrap()
        .unwrap();
    let Frame::Push(push) = p.frame else {
        panic!("not a push")
    };
    assert_eq!(push.format, PayloadFormat::NOTICE);
    let n = Notice::decode(push.payload).unwrap();
    assert_eq!(n.level, Level::Critical);
    assert_eq!(n.title, "Device 42 alarm");
}
