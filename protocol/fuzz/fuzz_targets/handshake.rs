//! The server's handshake input path without sockets: the first byte picks the transport (raw
//! TCP, WebSocket binary, WebSocket JSON) and the chunk size; the rest is what the client sent.
//! The inbound decoder must yield packets or a typed error, never panic, never buffer beyond
//! its limits; the first packet then gets the server's verdict (HELLO, version, token).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use push_protocol::hello::admit;
use push_protocol::ws::inbound::{Inbound, ReadState};
use push_protocol::ws::Transport;
use push_protocol::{EncodeOptions, FrameCodec, Limits};

const MAX_WS: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let transport = match mode % 3 {
        0 => Transport::Tcp,
        1 => Transport::WsBinary,
        _ => Transport::WsJson,
    };
    let chunk = usize::from(mode / 3).max(1);
    let limits = Limits {
        max_frame_len: 4096,
        max_message_len: 16 * 1024,
        max_decompressed_len: 16 * 1024,
        ..Limits::default()
    };
    let mut st = ReadState::new(FrameCodec::new(limits, EncodeOptions::default()));
    let mut first = true;
    for piece in rest.chunks(chunk) {
        st.raw.extend_from_slice(piece);
        loop {
            match st.next(transport, MAX_WS) {
                Ok(Some(Inbound::Packet(p))) => {
                    if first {
                        first = false;
                        let _ = admit(p, b"fuzz-secret-0123456789", 1_000_000);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Only the bytes of one incomplete frame or message may wait.
        assert!(st.raw.len() <= 16 + 4096 + MAX_WS + 14 + 64, "raw buffer {}", st.raw.len());
    }
});
