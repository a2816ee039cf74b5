//! The fixed 16-byte frame header (SPEC.md §2).

use bytes::BufMut;

use crate::error::ProtocolError;

/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// `PUSH` in ASCII.
pub const MAGIC: u32 = 0x5055_5348;
/// The Version written in frame headers: a frame carries the lowest version that defines its
/// layout (SPEC.md §9), and every frame's layout is version 1's, so one encoding of a message
/// serves sessions of every version.
pub const VERSION: u16 = 1;
/// Lowest protocol version this build speaks.
pub const MIN_VERSION: u16 = 1;
/// Highest protocol version this build speaks (2: client PING, SPEC.md §9.3).
pub const MAX_VERSION: u16 = 2;

/// Flag bits carried in the high byte of the Type field.
pub mod flags {
    /// Body is one zstd frame.
    pub const COMPRESSED: u8 = 0x01;
    /// A crc32 trailer ends the frame.
    pub const CHECKSUM: u8 = 0x02;
    /// A 4-byte fragment header starts the body.
    pub const FRAGMENT: u8 = 0x04;
    /// Every bit this version defines.
    pub const KNOWN: u8 = COMPRESSED | CHECKSUM | FRAGMENT;
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of this frame's encoding.
    pub version: u16,
    /// Flag bits (high byte of Type).
    pub flags: u8,
    /// Frame type (low byte of Type).
    pub ty: u8,
    /// Bytes after the header: fragment header + body + crc trailer.
    pub length: u32,
    /// Sequence number (SPEC.md §6).
    pub seq: u32,
}

impl Header {
    /// Parses and validates the first 16 bytes of `buf` (which must hold at least 16).
    pub fn parse(buf: &[u8]) -> Result<Header, ProtocolError> {
        let b: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(ProtocolError::Malformed {
                frame: "header",
                reason: "fewer than 16 bytes",
            })?;
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
            return Err(ProtocolError::UnsupportedVersion(version));
        }
        let flag_bits = b[6];
        if flag_bits & !flags::KNOWN != 0 {
            return Err(ProtocolError::UnsupportedFlags(flag_bits));
        }
        Ok(Header {
            version,
            flags: flag_bits,
            ty: b[7],
            length: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            seq: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Appends the 16 header bytes.
    pub fn write(&self, dst: &mut impl BufMut) {
        dst.put_u32(MAGIC);
        dst.put_u16(self.version);
        dst.put_u8(self.flags);
        dst.put_u8(self.ty);
        dst.put_u32(self.length);
        dst.put_u32(self.seq);
    }

    /// True when `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            version: 1,
            flags: flags::CHECKSUM | flags::COMPRESSED,
            ty: 6,
            length: 0x0102_0304,
            seq: u32::MAX,
        };
        let mut v = Vec::new();
        h.write(&mut v);
        assert_eq!(v.len(), HEADER_LEN);
        assert_eq!(&v[..4], b"PUSH");
        assert_eq!(Header::parse(&v).unwrap(), h);
    }

    #[test]
    fn header_rejects_bad_fields() {
        let good = [b'P', b'U', b'S', b'H', 0, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(Header::parse(&good).is_ok());
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(
            Header::parse(&bad),
            Err(ProtocolError::BadMagic(_))
        ));
        let mut bad = good;
        bad[5] = 9;
        assert!(matches!(
            Header::parse(&bad),
            Err(ProtocolError::UnsupportedVersion(9))
        ));
        let mut bad = good;
        bad[6] = 0x80;
        assert!(matches!(
            Header::parse(&bad),
            Err(ProtocolError::UnsupportedFlags(0x80))
        ));
        assert!(Header::parse(&good[..15]).is_err());
    }
}
