//! zstd body compression with a hard bound on the decompressed size (SPEC.md §7).
//!
//! Contexts are cached per thread: a zstd context weighs over 100 KiB, far too much to keep per
//! connection, and creating one per frame would dominate the cost of small frames.

use std::cell::RefCell;

use crate::error::ProtocolError;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compresses `src` into one zstd frame that declares its content size.
pub fn compress(src: &[u8], level: i32) -> Result<Vec<u8>, ProtocolError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level).map_err(ProtocolError::Io)?;
            *slot = Some((level, c));
        }
        let (_, c) = slot.as_mut().expect("compressor was just created");
        c.compress(src).map_err(ProtocolError::Io)
    })
}

/// Decompresses one zstd frame, refusing before allocating if it declares more than `max` bytes.
pub fn decompress(src: &[u8], max: usize) -> Result<Vec<u8>, ProtocolError> {
    let declared = match zstd::zstd_safe::get_frame_content_size(src) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(ProtocolError::Decompression(
                "zstd frame does not declare its content size".into(),
            ))
        }
        Err(_) => return Err(ProtocolError::Decompression("not a zstd frame".into())),
    };
    if declared > max as u64 {
        return Err(ProtocolError::DecompressedTooLarge {
            size: declared,
            max: max as u64,
        });
    }
    // Capacity is the declared size, so a frame that lies about its size fails with
    // "destination too small" instead of growing the buffer.
    let mut out = Vec::with_capacity(declared as usize);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(ProtocolError::Io)?);
        }
        let d = slot.as_mut().expect("decompressor was just created");
        d.decompress_to_buffer(src, &mut out)
            .map_err(|e| ProtocolError::Decompression(e.to_string()))
    })?;
    if out.len() as u64 != declared {
        return Err(ProtocolError::Decompression(
            "content size differs from the declared size".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_declared_size() {
        let data = b"hello hello hello hello hello hello".repeat(20);
        let c = compress(&data, 3).unwrap();
        assert!(c.len() < data.len());
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        assert!(matches!(
            decompress(&c, data.len() - 1),
            Err(ProtocolError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decompress(b"", 100).is_err());
        assert!(decompress(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0], 100).is_err());
        assert!(decompress(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 100).is_err());
    }
}
