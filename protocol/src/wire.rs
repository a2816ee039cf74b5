//! Primitive field encodings shared by every body layout (SPEC.md §3).

use bytes::{BufMut, Bytes};

use crate::error::ProtocolError;

/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as unsigned LEB128.
pub fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// Number of bytes `put_varint` writes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends a string with a one-byte length prefix (`str8`).
pub fn put_str8(dst: &mut impl BufMut, field: &'static str, s: &str) -> Result<(), ProtocolError> {
    if s.len() > u8::MAX as usize {
        return Err(ProtocolError::FieldTooLong {
            field,
            len: s.len(),
            max: u8::MAX as usize,
        });
    }
    dst.put_u8(s.len() as u8);
    dst.put_slice(s.as_bytes());
    Ok(())
}

/// Appends bytes with a varint length prefix (`bytesv`), refusing more than `max`.
pub fn put_bytesv(
    dst: &mut impl BufMut,
    field: &'static str,
    b: &[u8],
    max: usize,
) -> Result<(), ProtocolError> {
    if b.len() > max {
        return Err(ProtocolError::FieldTooLong {
            field,
            len: b.len(),
            max,
        });
    }
    put_varint(dst, b.len() as u64);
    dst.put_slice(b);
    Ok(())
}

/// Cursor over a frame body; every read is bounds-checked and names the frame on failure.
pub struct Reader {
    buf: Bytes,
    pos: usize,
    frame: &'static str,
}

impl Reader {
    /// Starts reading `buf`, attributing errors to `frame`.
    pub fn new(frame: &'static str, buf: Bytes) -> Self {
        Reader { buf, pos: 0, frame }
    }

    /// A malformed-body error for this frame.
    pub fn err(&self, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            frame: self.frame,
            reason,
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, ProtocolError> {
        if self.remaining() < n {
            return Err(self.err(what));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.err(what))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads an unsigned LEB128 value; overlong or overflowing encodings are errors.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8(what)?;
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(self.err("varint overflows u64"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(self.err("overlong varint"));
                }
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// Reads a `str8`: one length byte, then UTF-8.
    pub fn str8(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let n = self.u8(what)? as usize;
        self.utf8(n, what)
    }

    /// Reads a `bytesv` of at most `max` bytes.
    pub fn bytesv(&mut self, max: usize, what: &'static str) -> Result<Bytes, ProtocolError> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(self.err(what));
        }
        self.take(n as usize, what)
    }

    /// Reads a varint-prefixed UTF-8 string of at most `max` bytes.
    pub fn strv(&mut self, max: usize, what: &'static str) -> Result<String, ProtocolError> {
        let b = self.bytesv(max, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Reads `n` bytes as UTF-8.
    pub fn utf8(&mut self, n: usize, what: &'static str) -> Result<String, ProtocolError> {
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Takes everything left.
    pub fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// Fails unless the whole body was consumed.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if self.remaining() != 0 {
            return Err(self.err("trailing bytes after the last field"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn varint_round_trips_and_lengths_agree() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "len of {v}");
            let mut r = Reader::new("t", b.freeze());
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn varint_rejects_overlong_and_overflow() {
        let mut r = Reader::new("t", Bytes::from_static(&[0x80, 0x00]));
        assert!(r.varint("v").is_err());
        let mut r = Reader::new("t", Bytes::from_static(&[0xff; 10]));
        assert!(r.varint("v").is_err());
        let mut r = Reader::new("t", Bytes::from_static(&[0xff, 0xff]));
        assert!(r.varint("v").is_err(), "truncated");
    }
}
