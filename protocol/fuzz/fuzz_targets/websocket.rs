//! RFC 6455 frame parsing and the JSON mode on arbitrary bytes: typed errors only, no panics,
//! and a frame longer than the limit is refused from its header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use push_protocol::ws::frame::parse;
use push_protocol::ws::json::parse_client;

fuzz_target!(|data: &[u8]| {
    let _ = parse_client(data);
    let mut raw = BytesMut::from(data);
    while let Ok(Some(_)) = parse(&mut raw, 1024) {}
});
