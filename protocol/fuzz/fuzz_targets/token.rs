//! The handshake's token check: any string is accepted or refused with a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use push_protocol::token::verify;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = verify(b"fuzz-secret-0123456789", s, 1_000_000);
    }
});
