//! Prints the SPEC.md test vectors (run: `cargo run -p push-protocol --example vectors`).
//!
//! SPEC.md holds the output; `tests/spec_vectors.rs` decodes and re-encodes those exact bytes.

use bytes::Bytes;
use push_protocol::*;

fn id(n: u8) -> MessageId {
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = n.wrapping_mul(16).wrapping_add(i as u8);
    }
    MessageId(b)
}

fn main() {
    let plain = EncodeOptions {
        compress_min: usize::MAX,
        ..EncodeOptions::default()
    };
    let notice = Notice {
        level: Level::Critical,
        title: "Device 42 alarm".into(),
        content: "Temperature 81C".into(),
    }
    .encode()
    .unwrap();
    let report: String = (0..16)
        .map(|i| {
            format!(
                "{{\"sensor\":\"t{i}\",\"value\":{},\"unit\":\"C\"}},",
                20 + i
            )
        })
        .collect();
    let cases: Vec<(&str, Packet, EncodeOptions)> = vec![
        (
            "hello",
            Packet::new(
                1,
                Frame::Hello(Hello {
                    min_version: 1,
                    max_version: 1,
                    token: "tok".into(),
                    device: "phone".into(),
                    resume: vec![
                        StreamPos {
                            stream: Stream::User,
                            position: 41,
                        },
                        StreamPos {
                            stream: Stream::Room("lobby".into()),
                            position: 300,
                        },
                    ],
                    options: HelloOptions::default(),
                }),
            ),
            plain,
        ),
        (
            "hello_v2_options",
            Packet::new(
                1,
                Frame::Hello(Hello {
                    min_version: 1,
                    max_version: 2,
                    token: "tok".into(),
                    device: String::new(),
                    resume: vec![],
                    options: HelloOptions {
                        max_frame_len: 4096,
                        no_zstd: true,
                        checksum: true,
                        no_echo: true,
                        epoch: 1_764_000_000,
                    },
                }),
            ),
            plain,
        ),
        (
            "auth_ok",
            Packet::new(
                1,
                Frame::AuthOk(AuthOk {
                    version: 1,
                    conn_id: 7,
                    user: "alice".into(),
                    heartbeat_ms: 30_000,
                    max_frame_len: 65_536,
                    max_message_len: 1_048_576,
                    epoch: 0,
                }),
            ),
            plain,
        ),
        (
            "auth_ok_v2",
            Packet::new(
                1,
                Frame::AuthOk(AuthOk {
                    version: 2,
                    conn_id: 7,
                    user: "alice".into(),
                    heartbeat_ms: 30_000,
                    max_frame_len: 65_536,
                    max_message_len: 1_048_576,
                    epoch: 1_764_000_000,
                }),
            ),
            plain,
        ),
        (
            "auth_error",
            Packet::new(
                1,
                Frame::AuthError(ErrorBody {
                    code: ErrorCode::TOKEN_EXPIRED,
                    reason: "token expired".into(),
                }),
            ),
            plain,
        ),
        ("ping", Packet::new(9, Frame::Ping), plain),
        ("pong", Packet::new(9, Frame::Pong), plain),
        (
            "push_notice",
            Packet::new(
                100,
                Frame::Push(Push {
                    id: id(1),
                    stream: Stream::User,
                    position: 42,
                    timestamp_ms: 1_763_800_000_000,
                    kind: "alarm".into(),
                    format: PayloadFormat::NOTICE,
                    payload: notice,
                }),
            ),
            plain,
        ),
        (
            "push_compressed",
            Packet::new(
                101,
                Frame::Push(Push {
                    id: id(2),
                    stream: Stream::Room("devices".into()),
                    position: 7,
                    timestamp_ms: 1_763_800_000_000,
                    kind: "report".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from(report),
                }),
            ),
            EncodeOptions {
                compress_min: 0,
                ..plain
            },
        ),
        (
            "push_fragmented",
            Packet::new(
                102,
                Frame::Push(Push {
                    id: id(3),
                    stream: Stream::Broadcast,
                    position: 3,
                    timestamp_ms: 1_763_800_000_000,
                    kind: "news".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from_static(
                        b"a message larger than one 64-byte frame, split in fragments",
                    ),
                }),
            ),
            EncodeOptions {
                max_frame_len: 64,
                ..plain
            },
        ),
        (
            "ack_checksummed",
            Packet::new(
                12,
                Frame::Ack(vec![
                    StreamPos {
                        stream: Stream::User,
                        position: 42,
                    },
                    StreamPos {
                        stream: Stream::Broadcast,
                        position: 3,
                    },
                ]),
            ),
            EncodeOptions {
                checksum: true,
                ..plain
            },
        ),
        (
            "join",
            Packet::new(
                13,
                Frame::Join(Join {
                    room: "lobby".into(),
                    resume_after: Some(300),
                }),
            ),
            plain,
        ),
        (
            "leave",
            Packet::new(14, Frame::Leave("lobby".into())),
            plain,
        ),
        (
            "publish",
            Packet::new(
                15,
                Frame::Publish(Publish {
                    room: "lobby".into(),
                    key: "k1".into(),
                    kind: "chat".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from_static(b"hi"),
                    transient: false,
                }),
            ),
            plain,
        ),
        (
            "publish_transient",
            Packet::new(
                16,
                Frame::Publish(Publish {
                    room: "lobby".into(),
                    key: String::new(),
                    kind: "typing".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from_static(b"ann"),
                    transient: true,
                }),
            ),
            plain,
        ),
        (
            "push_transient",
            Packet::new(
                103,
                Frame::Push(Push {
                    id: id(5),
                    stream: Stream::Room("lobby".into()),
                    position: 0,
                    timestamp_ms: 1_763_800_000_000,
                    kind: "typing".into(),
                    format: PayloadFormat::OPAQUE,
                    payload: Bytes::from_static(b"ann"),
                }),
            ),
            plain,
        ),
        ("ok", Packet::new(13, Frame::Ok(Some(301))), plain),
        (
            "publish_ack",
            Packet::new(
                15,
                Frame::PublishAck(PublishAck {
                    id: id(4),
                    position: 302,
                    duplicate: false,
                }),
            ),
            plain,
        ),
        (
            "error",
            Packet::new(
                14,
                Frame::Error(ErrorBody {
                    code: ErrorCode::FORBIDDEN,
                    reason: "not a member".into(),
                }),
            ),
            plain,
        ),
        (
            "close",
            Packet::new(
                0,
                Frame::Close(Close {
                    code: ErrorCode::SHUTTING_DOWN,
                    reconnect_ms: Some(5000),
                    reason: "restart".into(),
                }),
            ),
            plain,
        ),
        (
            "gap",
            Packet::new(
                0,
                Frame::Gap(Gap {
                    stream: Stream::Room("lobby".into()),
                    requested_after: 10,
                    first_available: 250,
                }),
            ),
            plain,
        ),
        (
            "recall",
            Packet::new(
                104,
                Frame::Recall(Recall {
                    id: id(6),
                    stream: Stream::Room("lobby".into()),
                    position: 302,
                }),
            ),
            plain,
        ),
        (
            "withdraw",
            Packet::new(
                17,
                Frame::Withdraw(Withdraw {
                    room: "lobby".into(),
                    key: "k1".into(),
                }),
            ),
            plain,
        ),
    ];
    for (name, packet, opts) in cases {
        let bytes = encode_to_bytes(&packet, &opts).unwrap();
        println!("<!-- vector: {name} -->");
        println!("```hex");
        for frame in split_frames(&bytes) {
            for line in frame.chunks(16) {
                let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                println!("{}", hex.join(" "));
            }
        }
        println!("```");
        println!();
    }
}

/// Splits concatenated wire frames so each starts on its own line in SPEC.md.
fn split_frames(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = b;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let (f, r) = rest.split_at(HEADER_LEN + len);
        out.push(f);
        rest = r;
    }
    out
}
