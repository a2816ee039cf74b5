//! Arbitrary fragment sequences never panic and never buffer more than the message limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_protocol::fragment::{Reassembler, ReassemblyLimits};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_message_len: 1024,
        max_partial: 4,
        timeout_ms: 1000,
    };
    let mut r = Reassembler::default();
    // Each record: seq(1) type(1) flags(1) index(1) count(1) len(1) then len bytes.
    let mut rest = data;
    let mut now = 0u64;
    while rest.len() >= 6 {
        let (h, tail) = rest.split_at(6);
        let len = usize::from(h[5]).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        now += u64::from(h[0] & 0x0f) * 100;
        let result = r.push(
            &limits,
            u32::from(h[0] >> 4),
            h[1],
            h[2],
            u16::from(h[3]),
            u16::from(h[4]),
            chunk,
            now,
        );
        if result.is_err() {
            return;
        }
        assert!(r.buffered() <= limits.max_partial * limits.max_message_len);
        assert!(r.in_progress() <= limits.max_partial);
    }
});
