//! Encoding and decoding of whole frames: header, compression, fragmentation, checksum.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::compress::{compress, decompress};
use crate::error::ProtocolError;
use crate::fragment::{Reassembler, ReassemblyLimits, FRAGMENT_HEADER_LEN};
use crate::frame::{Frame, Packet};
use crate::header::{flags, Header, HEADER_LEN, MAGIC};

/// Receive-side limits (SPEC.md §9).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest Length accepted in a header.
    pub max_frame_len: u32,
    /// Largest body after reassembly, before decompression.
    pub max_message_len: usize,
    /// Largest body after decompression.
    pub max_decompressed_len: usize,
    /// Most fragmented messages in reassembly at once.
    pub max_partial: usize,
    /// Time allowed between the first and last fragment of a message.
    pub reassembly_timeout_ms: u64,
    /// Reject frames without the CHECKSUM flag.
    pub require_checksum: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: 64 * 1024,
            max_message_len: 1024 * 1024,
            max_decompressed_len: 1024 * 1024,
            max_partial: 4,
            reassembly_timeout_ms: 30_000,
            require_checksum: false,
        }
    }
}

/// Send-side choices (SPEC.md §7, §8).
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Compress bodies of at least this many bytes (`usize::MAX` disables compression).
    pub compress_min: usize,
    /// zstd level.
    pub zstd_level: i32,
    /// Append a crc32 trailer to every frame.
    pub checksum: bool,
    /// Largest Length to emit; longer bodies are fragmented.
    pub max_frame_len: u32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            compress_min: 512,
            zstd_level: 3,
            checksum: false,
            max_frame_len: 64 * 1024,
        }
    }
}

/// Smallest `max_frame_len` an encoder honours: room for a fragment header, a crc and data.
const MIN_ENCODE_FRAME_LEN: u32 = 64;

/// Encodes `packet` and appends its wire bytes (one frame, or several fragments) to `dst`.
pub fn encode_packet(
    packet: &Packet,
    opts: &EncodeOptions,
    dst: &mut BytesMut,
) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.put_bytes(0, HEADER_LEN);
    if let Err(e) = packet.frame.encode_body(dst) {
        dst.truncate(start);
        return Err(e);
    }
    let body_start = start + HEADER_LEN;
    let mut frame_flags = 0u8;
    let body_len = dst.len() - body_start;
    if body_len >= opts.compress_min {
        let packed = compress(&dst[body_start..], opts.zstd_level).inspect_err(|_| {
            dst.truncate(start);
        })?;
        if packed.len() < body_len {
            dst.truncate(body_start);
            dst.extend_from_slice(&packed);
            frame_flags |= flags::COMPRESSED;
        }
    }
    let crc_len = if opts.checksum { 4 } else { 0 };
    let max_len = opts.max_frame_len.max(MIN_ENCODE_FRAME_LEN) as usize;
    let body_len = dst.len() - body_start;
    if body_len + crc_len <= max_len {
        if opts.checksum {
            frame_flags |= flags::CHECKSUM;
        }
        let header = Header {
            version: packet.frame.layout_version(),
            flags: frame_flags,
            ty: packet.frame.type_id(),
            length: (body_len + crc_len) as u32,
            seq: packet.seq,
        };
        header.write(&mut &mut dst[start..body_start]);
        if opts.checksum {
            let crc = crc32fast::hash(&dst[start..]);
            dst.put_u32(crc);
        }
        return Ok(());
    }
    let body = dst.split_off(body_start).freeze();
    dst.truncate(start);
    fragment_into(packet, frame_flags, body, opts, max_len, dst).inspect_err(|_| {
        dst.truncate(start);
    })
}

fn fragment_into(
    packet: &Packet,
    frame_flags: u8,
    body: Bytes,
    opts: &EncodeOptions,
    max_len: usize,
    dst: &mut BytesMut,
) -> Result<(), ProtocolError> {
    let crc_len = if opts.checksum { 4 } else { 0 };
    let chunk_len = max_len - FRAGMENT_HEADER_LEN - crc_len;
    let count = body.len().div_ceil(chunk_len);
    if count > u16::MAX as usize {
        return Err(ProtocolError::MessageTooLarge {
            size: body.len() as u64,
            max: (chunk_len * u16::MAX as usize) as u64,
        });
    }
    let mut frag_flags = frame_flags | flags::FRAGMENT;
    if opts.checksum {
        frag_flags |= flags::CHECKSUM;
    }
    dst.reserve(body.len() + count * (HEADER_LEN + FRAGMENT_HEADER_LEN + crc_len));
    for (index, chunk) in body.chunks(chunk_len).enumerate() {
        let frame_start = dst.len();
        Header {
            version: packet.frame.layout_version(),
            flags: frag_flags,
            ty: packet.frame.type_id(),
            length: (FRAGMENT_HEADER_LEN + chunk.len() + crc_len) as u32,
            seq: packet.seq,
        }
        .write(dst);
        dst.put_u16(index as u16);
        dst.put_u16(count as u16);
        dst.extend_from_slice(chunk);
        if opts.checksum {
            let crc = crc32fast::hash(&dst[frame_start..]);
            dst.put_u32(crc);
        }
    }
    Ok(())
}

/// Encodes `packet` into a standalone `Bytes`, ready to be shared by many connections.
pub fn encode_to_bytes(packet: &Packet, opts: &EncodeOptions) -> Result<Bytes, ProtocolError> {
    let mut b = BytesMut::new();
    encode_packet(packet, opts, &mut b)?;
    Ok(b.freeze())
}

/// Re-encodes complete wire frames with other options: how a server honours one client's
/// HELLO options (no zstd, a smaller frame, checksums; SPEC.md §5.1.2) on frames it encoded
/// once for every connection. `limits` bound the decoding, as for any input.
pub fn reencode(wire: &[u8], limits: Limits, opts: &EncodeOptions) -> Result<Bytes, ProtocolError> {
    let mut codec = FrameCodec::new(limits, *opts);
    let mut src = BytesMut::from(wire);
    let mut out = BytesMut::with_capacity(wire.len() + 64);
    while let Some(packet) = codec.decode(&mut src)? {
        encode_packet(&packet, opts, &mut out)?;
    }
    if !src.is_empty() || codec.partial_messages() > 0 {
        return Err(ProtocolError::Malformed {
            frame: "re-encoded",
            reason: "incomplete frame",
        });
    }
    Ok(out.freeze())
}

/// A `tokio_util` codec for the push protocol.
///
/// Holds no buffers of its own; reassembly state exists only while a fragmented message is open.
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// Receive limits.
    pub limits: Limits,
    /// Send options.
    pub options: EncodeOptions,
    reassembly: Reassembler,
    now_ms: u64,
    /// Sequence of the frame being decoded (0 until its header's magic is read).
    current_seq: u32,
}

impl FrameCodec {
    /// A codec with the given limits and options.
    pub fn new(limits: Limits, options: EncodeOptions) -> Self {
        FrameCodec {
            limits,
            options,
            reassembly: Reassembler::default(),
            now_ms: 0,
            current_seq: 0,
        }
    }

    /// Sets the clock used for reassembly timeouts (ms, any monotonic origin).
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Fails if a fragmented message has been open past the reassembly timeout.
    pub fn check_timeouts(&mut self) -> Result<(), ProtocolError> {
        let limits = self.reassembly_limits();
        let expired = self.reassembly.expire(&limits, self.now_ms);
        if let Err(ProtocolError::ReassemblyTimeout { seq, .. }) = &expired {
            self.current_seq = *seq;
        }
        expired
    }

    /// The Sequence of the frame the last error was about, which the ERROR (or AUTH_ERROR)
    /// reporting it echoes (SPEC.md §6): 0 when the frame's header could not be read (its
    /// first four bytes were not the magic, so nothing after them can be trusted).
    pub fn error_seq(&self) -> u32 {
        self.current_seq
    }

    /// Number of fragmented messages being reassembled.
    pub fn partial_messages(&self) -> usize {
        self.reassembly.in_progress()
    }

    fn reassembly_limits(&self) -> ReassemblyLimits {
        ReassemblyLimits {
            max_message_len: self.limits.max_message_len,
            max_partial: self.limits.max_partial,
            timeout_ms: self.limits.reassembly_timeout_ms,
        }
    }

    /// Decodes one complete wire frame; `None` when it was a non-final fragment.
    fn process(&mut self, header: Header, raw: Bytes) -> Result<Option<Packet>, ProtocolError> {
        let mut body = raw.slice(HEADER_LEN..);
        if header.has(flags::CHECKSUM) {
            if body.len() < 4 {
                return Err(ProtocolError::Malformed {
                    frame: "header",
                    reason: "CHECKSUM flag set but Length below 4",
                });
            }
            let split = raw.len() - 4;
            let expected =
                u32::from_be_bytes([raw[split], raw[split + 1], raw[split + 2], raw[split + 3]]);
            let actual = crc32fast::hash(&raw[..split]);
            if expected != actual {
                return Err(ProtocolError::BadChecksum { expected, actual });
            }
            body.truncate(body.len() - 4);
        } else if self.limits.require_checksum {
            return Err(ProtocolError::ChecksumRequired);
        }
        if header.has(flags::FRAGMENT) {
            if body.len() < FRAGMENT_HEADER_LEN {
                return Err(ProtocolError::BadFragment(
                    "body shorter than the fragment header",
                ));
            }
            let index = body.get_u16();
            let count = body.get_u16();
            let limits = self.reassembly_limits();
            match self.reassembly.push(
                &limits,
                header.seq,
                header.ty,
                header.flags,
                index,
                count,
                &body,
                self.now_ms,
            )? {
                Some(full) => body = full,
                None => return Ok(None),
            }
        }
        if header.has(flags::COMPRESSED) {
            body = decompress(&body, self.limits.max_decompressed_len)?.into();
        } else if body.len() > self.limits.max_decompressed_len {
            return Err(ProtocolError::MessageTooLarge {
                size: body.len() as u64,
                max: self.limits.max_decompressed_len as u64,
            });
        }
        let frame = Frame::decode_body_of(header.ty, header.version, body)?;
        Ok(Some(Packet::new(header.seq, frame)))
    }
}

impl Decoder for FrameCodec {
    type Item = Packet;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, ProtocolError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            // The header layout is frozen (SPEC.md §2): behind the magic, the Sequence can be
            // read even when the version or flags are not understood.
            self.current_seq = if src[..4] == MAGIC.to_be_bytes() {
                u32::from_be_bytes([src[12], src[13], src[14], src[15]])
            } else {
                0
            };
            let header = Header::parse(&src[..HEADER_LEN])?;
            if header.length > self.limits.max_frame_len {
                return Err(ProtocolError::FrameTooLarge {
                    len: header.length as u64,
                    max: self.limits.max_frame_len as u64,
                });
            }
            let total = HEADER_LEN + header.length as usize;
            if src.len() < total {
                // Nothing is reserved for the announced Length: the buffer grows only with bytes
                // that arrive, so a header announcing a large frame followed by silence (or one
                // byte per second) costs the receiver nothing beyond its read buffer.
                return Ok(None);
            }
            let raw = src.split_to(total).freeze();
            if let Some(packet) = self.process(header, raw)? {
                return Ok(Some(packet));
            }
        }
    }
}

impl Encoder<&Packet> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: &Packet, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        encode_packet(item, &self.options, dst)
    }
}

impl Encoder<Packet> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        encode_packet(&item, &self.options, dst)
    }
}

/// Pre-encoded frames (e.g. one broadcast shared by many connections) pass through untouched.
impl Encoder<Bytes> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}
