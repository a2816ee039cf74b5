//! Key layout of the single ordered keyspace.
//!
//! | key | value |
//! |---|---|
//! | `r` `len:u8` `stream` `position:u64be` | a [`super::Record`] |
//! | `m` `stream` | a [`super::Meta`]: tail, acked and first retained position |
//! | `i` `idempotency key` | accepted time and the (id, stream, position) list |
//! | `e` | the epoch of every stream in the store (u64 big-endian) |
//!
//! Streams are named by [`StreamKey::name`] (`user:<id>`, `room:<id>`, `broadcast`). The
//! length byte keeps one stream's records contiguous and ordered by position even when one
//! name prefixes another.

use crate::stream::StreamKey;

/// Prefix of message records.
pub(super) const RECORD_PREFIX: u8 = b'r';
/// Prefix of stream metadata.
pub const META_PREFIX: u8 = b'm';
/// Prefix of idempotency entries.
pub const IDEM_PREFIX: u8 = b'i';
/// Key of the store's epoch (a big-endian u64).
pub(super) const EPOCH_KEY: &[u8] = b"e";

fn stream_prefix(stream: &StreamKey) -> Vec<u8> {
    let len = stream.name_len();
    let mut k = Vec::with_capacity(2 + len + 8);
    k.push(RECORD_PREFIX);
    k.push(len.min(255) as u8);
    stream.write_name(&mut k);
    // Names are at most 255 bytes (user ids and room names are validated shorter).
    k.truncate(2 + len.min(255));
    k
}

/// Key of the record at `position` in `stream`.
pub fn record_key(stream: &StreamKey, position: u64) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// Key range `[from, to)` covering positions `first..=last` of `stream`.
pub fn record_range(stream: &StreamKey, first: u64, last: u64) -> (Vec<u8>, Vec<u8>) {
    let from = record_key(stream, first);
    let to = match last.checked_add(1) {
        Some(end) => record_key(stream, end),
        None => {
            let mut k = stream_prefix(stream);
            k.extend_from_slice(&[0xff; 9]);
            k
        }
    };
    (from, to)
}

/// Position encoded at the end of a record key.
pub fn position_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Key of a stream's metadata.
pub fn meta_key(stream: &StreamKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + stream.name_len());
    k.push(META_PREFIX);
    stream.write_name(&mut k);
    k
}

/// Key of an idempotency entry.
pub fn idem_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(IDEM_PREFIX);
    k.extend_from_slice(key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sort_by_stream_then_position() {
        let (ua, uab) = (StreamKey::user("a"), StreamKey::user("ab"));
        let a = record_key(&ua, 2);
        let b = record_key(&ua, 10);
        let c = record_key(&uab, 1);
        assert!(a < b);
        assert!(b < c, "length byte separates user:a from user:ab");
        assert_eq!(position_of(&b), Some(10));
        let (from, to) = record_range(&ua, 2, 10);
        assert!(from <= a && b < to && c >= to);
    }
}
