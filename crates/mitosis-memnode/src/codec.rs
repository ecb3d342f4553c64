//! Page compression: one page at a time, so that any page can be got back
//! alone. A page that does not shrink is kept as it came.

use std::cell::RefCell;

use mitosis_proto::memnode::Compression;

use crate::StoreError;

/// Bytes of a page.
pub const PAGE: usize = mitosis_proto::PAGE_SIZE as usize;

/// zstd's level: 1, its fastest regular level (pages are compressed while
/// the offloading daemon waits; `mitosis bench memnode` measures it).
pub const ZSTD_LEVEL: i32 = 1;

/// How one stored page is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As put.
    Raw,
    Lz4,
    Zstd,
}

thread_local! {
    // A zstd context per thread: making one per page would cost more than the page.
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Encodes `page` (exactly [`PAGE`] bytes) with `compression`; a page that
/// would not shrink is returned raw.
pub fn encode(compression: Compression, page: &[u8]) -> Result<(Encoding, Vec<u8>), StoreError> {
    debug_assert_eq!(page.len(), PAGE);
    let packed = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(PAGE)];
            let n = lz4_flex::block::compress_into(page, &mut out).map_err(|e| StoreError::Codec(format!("lz4: {e}")))?;
            out.truncate(n);
            Some((Encoding::Lz4, out))
        }
        Compression::Zstd => ZSTD_COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| StoreError::Codec(format!("zstd: {e}")))?);
            }
            let out = c.as_mut().expect("just made").compress(page).map_err(|e| StoreError::Codec(format!("zstd: {e}")))?;
            Ok::<_, StoreError>(Some((Encoding::Zstd, out)))
        })?,
    };
    Ok(match packed {
        Some((enc, out)) if out.len() < PAGE => (enc, out),
        _ => (Encoding::Raw, page.to_vec()),
    })
}

/// Decodes a stored page into `out` (exactly [`PAGE`] bytes); a stored
/// page that does not decode to exactly a page is an error.
pub fn decode(encoding: Encoding, stored: &[u8], out: &mut [u8]) -> Result<(), StoreError> {
    debug_assert_eq!(out.len(), PAGE);
    let n = match encoding {
        Encoding::Raw if stored.len() == PAGE => {
            out.copy_from_slice(stored);
            PAGE
        }
        Encoding::Raw => return Err(StoreError::Codec(format!("raw page of {} bytes", stored.len()))),
        Encoding::Lz4 => lz4_flex::block::decompress_into(stored, out).map_err(|e| StoreError::Codec(format!("lz4: {e}")))?,
        Encoding::Zstd => ZSTD_DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| StoreError::Codec(format!("zstd: {e}")))?);
            }
            d.as_mut().expect("just made").decompress_to_buffer(stored, out).map_err(|e| StoreError::Codec(format!("zstd: {e}")))
        })?,
    };
    if n != PAGE {
        return Err(StoreError::Codec(format!("page decoded to {n} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of several kinds: zeros, text-like, a counter pattern, random.
    pub(crate) fn sample_pages() -> Vec<Vec<u8>> {
        let mut random = vec![0u8; PAGE];
        let mut x = 0x9e3779b97f4a7c15u64;
        for b in random.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let text: Vec<u8> = b"def handler(event): return {'ok': True}\n".iter().copied().cycle().take(PAGE).collect();
        let counter: Vec<u8> = (0..PAGE / 8).flat_map(|i| (i as u64 * 0x10).to_le_bytes()).collect();
        vec![vec![0u8; PAGE], text, counter, random]
    }

    #[test]
    fn every_codec_round_trips_every_kind_of_page() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for page in sample_pages() {
                let (enc, stored) = encode(compression, &page).unwrap();
                assert!(stored.len() <= PAGE);
                let mut out = vec![0xAAu8; PAGE];
                decode(enc, &stored, &mut out).unwrap();
                assert_eq!(out, page, "{compression}");
            }
        }
    }

    #[test]
    fn compression_shrinks_and_incompressible_pages_stay_raw() {
        let pages = sample_pages();
        for compression in [Compression::Lz4, Compression::Zstd] {
            let (enc, stored) = encode(compression, &pages[0]).unwrap();
            assert_ne!(enc, Encoding::Raw);
            assert!(stored.len() < 100, "{compression}: a zero page took {} bytes", stored.len());
            let (enc, stored) = encode(compression, &pages[3]).unwrap();
            assert_eq!((enc, stored.len()), (Encoding::Raw, PAGE), "{compression}: random page");
        }
        assert_eq!(encode(Compression::None, &pages[0]).unwrap().0, Encoding::Raw);
    }

    #[test]
    fn mangled_pages_do_not_decode_to_a_page() {
        let text = &sample_pages()[1];
        for compression in [Compression::Lz4, Compression::Zstd] {
            let (enc, stored) = encode(compression, text).unwrap();
            let mut out = vec![0u8; PAGE];
            assert!(decode(enc, &stored[..stored.len() / 2], &mut out).is_err(), "{compression}: cut short");
        }
        let mut out = vec![0u8; PAGE];
        assert!(decode(Encoding::Raw, &text[..100], &mut out).is_err());
    }
}
