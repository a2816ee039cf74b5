//! Any bytes, cut into chunks by the first input byte, must decode to frames or a typed error,
//! never panic, and never grow the buffer beyond the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use push_protocol::{EncodeOptions, FrameCodec, Limits};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let limits = Limits {
        max_frame_len: 4096,
        max_message_len: 16 * 1024,
        max_decompressed_len: 16 * 1024,
        ..Limits::default()
    };
    let mut codec = FrameCodec::new(limits, EncodeOptions::default());
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(packet)) => {
                    // Whatever decodes must re-encode.
                    let _ = push_protocol::encode_to_bytes(&packet, &EncodeOptions::default());
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.code();
                    return;
                }
            }
        }
        assert!(
            buf.capacity() <= 16 + 4096 + 4096,
            "buffer grew to {}",
            buf.capacity()
        );
    }
});
