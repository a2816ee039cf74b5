//! Property tests: any frame round-trips under any options; any bytes in any chunking never panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use push_protocol::*;
use tokio_util::codec::Decoder;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 _:.é漢-]{{0,{max}}}"))
        .unwrap()
        .prop_filter("fits", move |s| s.len() <= max)
}

fn stream() -> impl Strategy<Value = Stream> {
    prop_oneof![
        Just(Stream::User),
        Just(Stream::Broadcast),
        text(60).prop_map(Stream::Room),
    ]
}

fn positions() -> impl Strategy<Value = Vec<StreamPos>> {
    proptest::collection::vec(
        (stream(), any::<u64>()).prop_map(|(stream, position)| StreamPos { stream, position }),
        0..8,
    )
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from),
        // Compressible and large enough to need fragments under small frame limits.
        (1usize..20_000, any::<u8>()).prop_map(|(n, b)| Bytes::from(vec![b; n])),
    ]
}

fn error_body() -> impl Strategy<Value = ErrorBody> {
    (any::<u16>(), text(200)).prop_map(|(c, reason)| ErrorBody {
        code: ErrorCode(c),
        reason,
    })
}

fn hello_options() -> impl Strategy<Value = HelloOptions> {
    (
        prop_oneof![Just(0u32), HelloOptions::MIN_FRAME_LEN..],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(max_frame_len, no_zstd, checksum, no_echo, epoch)| HelloOptions {
                max_frame_len,
                no_zstd,
                checksum,
                no_echo,
                epoch,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            text(300),
            text(40),
            positions(),
            hello_options()
        )
            .prop_map(
                |(min_version, max_version, token, device, resume, options)| Frame::Hello(Hello {
                    min_version,
                    max_version,
                    token,
                    device,
                    resume,
                    // The options block exists only for clients that speak version 2.
                    options: if max_version >= 2 {
                        options
                    } else {
                        HelloOptions::default()
                    },
                })
            ),
        (
            any::<u16>(),
            any::<u64>(),
            text(50),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(version, conn_id, user, heartbeat_ms, max_frame_len, max_message_len, epoch)| {
                    Frame::AuthOk(AuthOk {
                        version,
                        conn_id,
                        user,
                        heartbeat_ms,
                        max_frame_len,
                        max_message_len,
                        epoch,
                    })
                }
            ),
        error_body().prop_map(Frame::AuthError),
        error_body().prop_map(Frame::Error),
        Just(Frame::Ping),
        Just(Frame::Pong),
        (
            any::<[u8; 16]>(),
            stream(),
            any::<u64>(),
            any::<u64>(),
            text(30),
            any::<u8>(),
            payload()
        )
            .prop_map(|(id, stream, position, timestamp_ms, kind, f, payload)| {
                Frame::Push(Push {
                    id: MessageId(id),
                    stream,
                    position,
                    timestamp_ms,
                    kind,
                    format: PayloadFormat(f),
                    payload,
                })
            }),
        positions().prop_map(Frame::Ack),
        (text(60), proptest::option::of(any::<u64>()))
            .prop_map(|(room, resume_after)| Frame::Join(Join { room, resume_after })),
        text(60).prop_map(Frame::Leave),
        (
            text(60),
            text(60),
            text(30),
            any::<u8>(),
            payload(),
            any::<bool>()
        )
            .prop_map(
                |(room, key, kind, f, payload, transient)| Frame::Publish(Publish {
                    room,
                    key,
                    kind,
                    format: PayloadFormat(f),
                    payload,
                    transient,
                })
            ),
        proptest::option::of(any::<u64>()).prop_map(Frame::Ok),
        (any::<[u8; 16]>(), any::<u64>(), any::<bool>()).prop_map(|(id, position, duplicate)| {
            Frame::PublishAck(PublishAck {
                id: MessageId(id),
                position,
                duplicate,
            })
        }),
        (
            any::<u16>(),
            proptest::option::of(0u32..u32::MAX),
            text(200)
        )
            .prop_map(|(c, reconnect_ms, reason)| Frame::Close(Close {
                code: ErrorCode(c),
                reconnect_ms,
                reason
            })),
        (stream(), any::<u64>(), any::<u64>()).prop_map(
            |(stream, requested_after, first_available)| {
                Frame::Gap(Gap {
                    stream,
                    requested_after,
                    first_available,
                })
            }
        ),
        (any::<[u8; 16]>(), stream(), any::<u64>()).prop_map(|(id, stream, position)| {
            Frame::Recall(Recall {
                id: MessageId(id),
                stream,
                position,
            })
        }),
        (text(60), text(60)).prop_map(|(room, key)| Frame::Withdraw(Withdraw { room, key })),
        (
            0x10u8..=0xff,
            proptest::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(ty, body)| Frame::Unknown {
                ty,
                body: body.into()
            }),
    ]
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    (
        prop_oneof![Just(usize::MAX), 0usize..2048],
        any::<bool>(),
        prop_oneof![Just(64u32 * 1024), 64u32..4096],
    )
        .prop_map(|(compress_min, checksum, max_frame_len)| EncodeOptions {
            compress_min,
            zstd_level: 1,
            checksum,
            max_frame_len,
        })
}

fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(p) = codec.decode(buf).expect("valid stream decodes") {
        out.push(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn frames_round_trip(frames in proptest::collection::vec((any::<u32>(), frame()), 1..5),
                         opts in options(),
                         chunk in 1usize..5000) {
        let mut wire = BytesMut::new();
        for (seq, f) in &frames {
            encode_packet(&Packet::new(*seq, f.clone()), &opts, &mut wire).unwrap();
        }
        let mut codec = FrameCodec::new(
            Limits { require_checksum: opts.checksum, ..Limits::default() },
            opts,
        );
        // Feed in chunks so partial headers and bodies are exercised.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(codec.partial_messages(), 0);
        let want: Vec<Packet> = frames.into_iter().map(|(s, f)| Packet::new(s, f)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn any_bytes_any_chunking_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                           chunk in 1usize..64,
                                           with_magic in any::<bool>()) {
        let mut input = data;
        if with_magic && input.len() >= 8 {
            // Give the decoder a valid-looking prefix so it gets past the magic check.
            let prefix = [b'P', b'U', b'S', b'H', 0, 1, input[6] & 0x07, input[7]];
            input[..8].copy_from_slice(&prefix);
        }
        let mut codec = FrameCodec::new(Limits { max_frame_len: 2048, ..Limits::default() }, EncodeOptions::default());
        let mut buf = BytesMut::new();
        'outer: for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => { let _ = e.code(); break 'outer; }
                }
            }
            prop_assert!(buf.capacity() <= 16 + 2048 + 4096 + 64, "buffer grew to {}", buf.capacity());
        }
    }

    #[test]
    fn corrupted_checksummed_frames_are_rejected(f in frame(), flip in any::<usize>(), bit in 0u8..8) {
        let opts = EncodeOptions { checksum: true, compress_min: usize::MAX, ..EncodeOptions::default() };
        let mut wire = BytesMut::new();
        encode_packet(&Packet::new(7, f), &opts, &mut wire).unwrap();
        // Flip one bit after the magic/version/flags so the header still parses.
        let i = 8 + flip % (wire.len() - 8);
        wire[i] ^= 1 << bit;
        let mut codec = FrameCodec::new(Limits { require_checksum: true, ..Limits::default() }, opts);
        let mut buf = wire;
        let r = codec.decode(&mut buf);
        // A flipped Length may just make the frame look incomplete; anything decoded is an error.
        prop_assert!(!matches!(r, Ok(Some(_))));
    }
}

/// A header announcing a large frame, then silence (slowloris): the decoder reserves nothing
/// for the announced Length.
#[test]
fn an_announced_length_allocates_nothing_ahead_of_its_bytes() {
    let mut codec = FrameCodec::new(Limits::default(), EncodeOptions::default());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"PUSH\x00\x01\x00\x06\x00\x00\xf0\x00\x00\x00\x00\x01");
    buf.extend_from_slice(&[0u8; 10]);
    let before = buf.capacity();
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(
        buf.capacity(),
        before,
        "61,440 bytes announced, none reserved"
    );
}

/// The options block of HELLO (SPEC.md §5.1.2): absent when it asks nothing (version-1 bytes),
/// only for a client that speaks version 2, with known flags and a usable frame size.
#[test]
fn hello_options_are_checked() {
    let hello = |max_version, options| {
        let h = Frame::Hello(Hello {
            min_version: 1,
            max_version,
            token: "t".into(),
            device: String::new(),
            resume: vec![],
            options,
        });
        let mut body = BytesMut::new();
        h.encode_body(&mut body).unwrap();
        body
    };
    let plain = hello(2, HelloOptions::default());
    let v1 = hello(1, HelloOptions::default());
    assert_eq!(plain[4..], v1[4..], "asking nothing sends nothing");
    let asking = HelloOptions {
        max_frame_len: 300,
        no_zstd: false,
        checksum: true,
        no_echo: true,
        epoch: 0,
    };
    let body = hello(2, asking);
    assert_eq!(
        body.len(),
        plain.len() + 4,
        "varint 300, the flags, varint epoch 0"
    );
    let decoded = Frame::decode_body(types::HELLO, body.clone().freeze()).unwrap();
    assert!(matches!(decoded, Frame::Hello(ref h) if h.options == asking));

    let refused = |body: BytesMut| {
        Frame::decode_body(types::HELLO, body.freeze())
            .unwrap_err()
            .code()
    };
    // Version 1 has no options: the bytes are trailing garbage.
    let mut b = hello(2, asking);
    b[2..4].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(refused(b), ErrorCode::MALFORMED_BODY);
    // An unknown flag, and a frame too small to fragment into.
    let mut b = body.clone();
    let flags = b.len() - 2;
    b[flags] |= 0x80;
    assert_eq!(refused(b), ErrorCode::MALFORMED_BODY);
    let mut b = plain.clone();
    b.extend_from_slice(&[100, 0, 0]);
    assert_eq!(refused(b), ErrorCode::MALFORMED_BODY);
}
