//! Benchmark support: the representative message set and the two encodings being compared.

use bytes::Bytes;
use push_protocol::{
    encode_to_bytes, EncodeOptions, Frame, Level, MessageId, Notice, Packet, PayloadFormat, Push,
    Stream,
};

/// One message of the comparison set, in the phase-1 model: type, title, content, level.
pub struct Sample {
    /// Row label.
    pub name: &'static str,
    /// Phase-1 `type`, our `kind`.
    pub kind: &'static str,
    /// Notice title.
    pub title: String,
    /// Notice content.
    pub content: String,
    /// Notice level.
    pub level: Level,
}

/// Deterministic pseudo-random generator so the set is identical on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn device_report(target: usize) -> String {
    let mut rng = Lcg(7);
    let mut s = String::new();
    let mut i = 0;
    while s.len() < target {
        let v = 180 + rng.next() % 400;
        s.push_str(&format!(
            "sensor t{i}: {}.{} C status {}; ",
            v / 10,
            v % 10,
            if v > 500 { "high" } else { "ok" }
        ));
        i += 1;
    }
    s.truncate(target);
    s
}

fn event_log(target: usize) -> String {
    let mut rng = Lcg(11);
    let events = [
        "login",
        "logout",
        "alarm cleared",
        "firmware check",
        "door opened",
    ];
    let mut s = String::new();
    let mut t = 1_763_800_000u64;
    while s.len() < target {
        t += rng.next() % 90;
        let ev = events[(rng.next() % events.len() as u64) as usize];
        s.push_str(&format!("{t} device-{} {ev}\n", rng.next() % 64));
    }
    s.truncate(target);
    s
}

/// Random printable text, which zstd cannot shrink much: the honest worst case.
pub fn incompressible(target: usize) -> String {
    let mut rng = Lcg(3);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..target)
        .map(|_| ALPHABET[(rng.next() % 64) as usize] as char)
        .collect()
}

/// The representative set from the protocol issue.
pub fn sample_set() -> Vec<Sample> {
    vec![
        Sample {
            name: "short alarm",
            kind: "alarm",
            title: "Device 42 alarm".into(),
            content: "Temperature above threshold: 81.5 C on sensor t3".into(),
            level: Level::Critical,
        },
        Sample {
            name: "password changed",
            kind: "password_changed",
            title: "Password changed".into(),
            content: "Your password was changed. Please log in again.".into(),
            level: Level::Warning,
        },
        Sample {
            name: "1 KiB device report",
            kind: "device_report",
            title: "Hourly report for device 42".into(),
            content: device_report(1024),
            level: Level::Info,
        },
        Sample {
            name: "16 KiB payload",
            kind: "event_log",
            title: "Event log".into(),
            content: event_log(16 * 1024),
            level: Level::Info,
        },
    ]
}

/// A v4 UUID-looking id string as the phase-1 format carries it.
const JSON_ID: &str = "6f1c2a4e-8b3d-4f5a-9c7e-1d2b3a4c5e6f";
/// A realistic millisecond timestamp.
const TIMESTAMP_MS: u64 = 1_763_800_000_123;

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The phase-1 JSON text for a sample.
pub fn phase1_json(s: &Sample) -> String {
    format!(
        r#"{{"type":"{}","id":"{}","timestamp":{},"data":{{"title":"{}","content":"{}","level":"{}"}}}}"#,
        s.kind,
        JSON_ID,
        TIMESTAMP_MS,
        json_escape(&s.title),
        json_escape(&s.content),
        s.level.as_str()
    )
}

/// Bytes of a server-to-client WebSocket text frame (unmasked, RFC 6455) carrying `payload_len`.
pub fn websocket_frame_len(payload_len: usize) -> usize {
    let header = match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    header + payload_len
}

/// The PUSH frame carrying the same information to the user's own stream.
pub fn push_packet(s: &Sample) -> Packet {
    let notice = Notice {
        level: s.level,
        title: s.title.clone(),
        content: s.content.clone(),
    };
    Packet::new(
        1234,
        Frame::Push(Push {
            id: MessageId(*b"\x6f\x1c\x2a\x4e\x8b\x3d\x4f\x5a\x9c\x7e\x1d\x2b\x3a\x4c\x5e\x6f"),
            stream: Stream::User,
            position: 1234,
            timestamp_ms: TIMESTAMP_MS,
            kind: s.kind.into(),
            format: PayloadFormat::NOTICE,
            payload: notice.encode().expect("sample fits"),
        }),
    )
}

/// Wire bytes of the binary encoding with the given options.
pub fn binary_len(s: &Sample, opts: &EncodeOptions) -> usize {
    encode_to_bytes(&push_packet(s), opts)
        .expect("sample encodes")
        .len()
}

/// A payload of `n` bytes of mildly compressible text, for codec throughput benches.
pub fn text_payload(n: usize) -> Bytes {
    Bytes::from(device_report(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_is_at_least_30_percent_smaller_on_the_set() {
        let opts = EncodeOptions::default();
        let (mut json, mut bin) = (0usize, 0usize);
        for s in sample_set() {
            let j = websocket_frame_len(phase1_json(&s).len());
            let b = binary_len(&s, &opts);
            assert!(b < j, "{}: {b} >= {j}", s.name);
            json += j;
            bin += b;
        }
        let saving = 1.0 - bin as f64 / json as f64;
        assert!(saving >= 0.30, "saving {saving:.3} below the notes' 30%");
    }

    #[test]
    fn websocket_header_sizes_follow_rfc6455() {
        assert_eq!(websocket_frame_len(125), 127);
        assert_eq!(websocket_frame_len(126), 130);
        assert_eq!(websocket_frame_len(65536), 65546);
    }
}
