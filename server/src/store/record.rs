//! Stored values: message records, stream metadata, idempotency entries.

use push_protocol::wire::{put_str8, Reader};
use push_protocol::{MessageId, PayloadFormat};

use super::StoreError;

/// Record flag: retries exhausted (the notes' "failed" state).
const FLAG_FAILED: u8 = 1;
/// Record flag: withdrawn by its publisher (its payload is gone).
const FLAG_RECALLED: u8 = 2;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Message id.
    pub id: MessageId,
    /// Acceptance time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Retries exhausted while the user was online.
    pub failed: bool,
    /// Withdrawn by its publisher: never delivered again; the payload is dropped.
    pub recalled: bool,
    /// Deliveries retried.
    pub retries: u8,
    /// Last state change, ms since the Unix epoch.
    pub updated_ms: u64,
    /// Not delivered after this time, ms since the Unix epoch (0 = never expires).
    pub expires_ms: u64,
    /// Application kind.
    pub kind: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// Payload.
    pub payload: bytes::Bytes,
}

impl Record {
    /// True when the message is not to be delivered at `now_ms`: recalled, or expired.
    pub fn gone(&self, now_ms: u64) -> bool {
        self.recalled || self.expired(now_ms)
    }

    /// True when the message has a TTL that ran out before `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && now_ms > self.expires_ms
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = bytes::BytesMut::with_capacity(36 + self.kind.len() + self.payload.len());
        b.extend_from_slice(&self.id.0);
        b.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        let flags =
            (u8::from(self.failed) * FLAG_FAILED) | (u8::from(self.recalled) * FLAG_RECALLED);
        b.extend_from_slice(&[flags, self.retries]);
        b.extend_from_slice(&self.updated_ms.to_be_bytes());
        b.extend_from_slice(&self.expires_ms.to_be_bytes());
        // Kinds are validated to at most 64 bytes before they get here.
        let _ = put_str8(&mut b, "kind", &self.kind);
        b.extend_from_slice(&[self.format.0]);
        b.extend_from_slice(&self.payload);
        b.to_vec()
    }

    /// Decodes a record.
    pub fn decode(v: &[u8]) -> Result<Record, StoreError> {
        let corrupt = |_| StoreError::Corrupt("record");
        let mut r = Reader::new("record", bytes::Bytes::copy_from_slice(v));
        let id_bytes = r.take(16, "id").map_err(corrupt)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&id_bytes);
        let ts = u64::from_be_bytes(
            r.take(8, "ts").map_err(corrupt)?[..]
                .try_into()
                .unwrap_or_default(),
        );
        let flags = r.u8("flags").map_err(corrupt)?;
        let retries = r.u8("retries").map_err(corrupt)?;
        let updated = u64::from_be_bytes(
            r.take(8, "updated").map_err(corrupt)?[..]
                .try_into()
                .unwrap_or_default(),
        );
        let expires = u64::from_be_bytes(
            r.take(8, "expires").map_err(corrupt)?[..]
                .try_into()
                .unwrap_or_default(),
        );
        let kind = r.str8("kind").map_err(corrupt)?;
        let format = PayloadFormat(r.u8("format").map_err(corrupt)?);
        Ok(Record {
            id: MessageId(id),
            timestamp_ms: ts,
            failed: flags & FLAG_FAILED != 0,
            recalled: flags & FLAG_RECALLED != 0,
            retries,
            updated_ms: updated,
            expires_ms: expires,
            kind,
            format,
            payload: r.rest(),
        })
    }
}

/// Per-stream positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Last position assigned (0 = none).
    pub tail: u64,
    /// Last position the user acknowledged (user streams only).
    pub acked: u64,
    /// First position still retained.
    pub first: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            tail: 0,
            acked: 0,
            first: 1,
        }
    }
}

impl Meta {
    /// Encodes as three big-endian u64.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.tail.to_be_bytes());
        v.extend_from_slice(&self.acked.to_be_bytes());
        v.extend_from_slice(&self.first.to_be_bytes());
        v
    }

    /// Decodes.
    pub fn decode(v: &[u8]) -> Result<Meta, StoreError> {
        if v.len() != 24 {
            return Err(StoreError::Corrupt("meta"));
        }
        let u = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().unwrap_or_default());
        Ok(Meta {
            tail: u(0),
            acked: u(8),
            first: u(16),
        })
    }
}

/// What an idempotency key was accepted as: (id, stream, position) per stream.
pub(super) type AcceptedList = Vec<(MessageId, String, u64)>;

/// Encodes an idempotency entry: accepted time, then (id, stream, position) per stream.
pub fn encode_accepted(at_ms: u64, list: &[(MessageId, String, u64)]) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    b.extend_from_slice(&at_ms.to_be_bytes());
    b.extend_from_slice(&(list.len() as u32).to_be_bytes());
    for (id, stream, pos) in list {
        b.extend_from_slice(&id.0);
        let _ = put_str8(&mut b, "stream", stream);
        b.extend_from_slice(&pos.to_be_bytes());
    }
    b.to_vec()
}

/// Decodes an idempotency entry.
pub fn decode_accepted(v: &[u8]) -> Result<(u64, AcceptedList), StoreError> {
    let corrupt = |_| StoreError::Corrupt("idempotency entry");
    let mut r = Reader::new("idem", bytes::Bytes::copy_from_slice(v));
    let at = u64::from_be_bytes(
        r.take(8, "at").map_err(corrupt)?[..]
            .try_into()
            .unwrap_or_default(),
    );
    let n = r.u32("n").map_err(corrupt)?;
    let mut out = Vec::new();
    for _ in 0..n.min(100_000) {
        let idb = r.take(16, "id").map_err(corrupt)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&idb);
        let stream = r.str8("stream").map_err(corrupt)?;
        let pos = u64::from_be_bytes(
            r.take(8, "pos").map_err(corrupt)?[..]
                .try_into()
                .unwrap_or_default(),
        );
        out.push((MessageId(id), stream, pos));
    }
    Ok((at, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let r = Record {
            id: MessageId([3; 16]),
            timestamp_ms: 42,
            failed: true,
            recalled: false,
            retries: 4,
            updated_ms: 43,
            expires_ms: 44,
            kind: "alarm".into(),
            format: PayloadFormat::NOTICE,
            payload: bytes::Bytes::from_static(b"hello"),
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let recalled = Record {
            failed: false,
            recalled: true,
            ..r.clone()
        };
        assert_eq!(Record::decode(&recalled.encode()).unwrap(), recalled);
        assert!(recalled.gone(0) && !r.gone(0));
        assert!(Record::decode(&[1, 2, 3]).is_err());
        let m = Meta {
            tail: 9,
            acked: 5,
            first: 3,
        };
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        let list = vec![(MessageId([1; 16]), "user:a".to_string(), 7)];
        assert_eq!(
            decode_accepted(&encode_accepted(5, &list)).unwrap(),
            (5, list)
        );
    }
}
