//! Compression: LZ4 per block, kept only when it saves space.
//!
//! The fast path first asks a cheap question — do 512 sampled bytes use
//! most of the byte alphabet? — and sends blocks that look random
//! (encrypted, already compressed) past the compressor, since LZ4 on them
//! costs a microsecond per 4 KiB and saves nothing. The reference always
//! runs LZ4. Both keep a result only if it is smaller than the block by at
//! least [`MIN_SAVING`] bytes.

use std::fmt;

/// Bytes a compressed block must save to be kept compressed.
pub const MIN_SAVING: usize = 256;

/// A block failed to decompress (corrupt or truncated input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecompressError {
    /// Bytes expected.
    pub expected: usize,
}

impl fmt::Display for DecompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compressed block is corrupt (expected {} bytes out)",
            self.expected
        )
    }
}

impl std::error::Error for DecompressError {}

/// Compresses blocks.
pub trait Compressor: Send + Sync {
    /// The implementation's name.
    fn name(&self) -> &'static str;

    /// Compresses `src` into `dst` (at least [`bound`]`(src.len())` bytes).
    /// `Some(n)`: keep the `n` compressed bytes; `None`: store `src` as is.
    fn compress(&self, src: &[u8], dst: &mut [u8]) -> Option<usize>;

    /// Decompresses `src` into `dst`, which must be exactly the original size.
    fn decompress(&self, src: &[u8], dst: &mut [u8]) -> Result<(), DecompressError> {
        match lz4_flex::block::decompress_into(src, dst) {
            Ok(n) if n == dst.len() => Ok(()),
            _ => Err(DecompressError {
                expected: dst.len(),
            }),
        }
    }
}

/// Room the compressor may need for `len` input bytes.
pub fn bound(len: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(len)
}

fn keep(src_len: usize, n: usize) -> Option<usize> {
    (n + MIN_SAVING <= src_len).then_some(n)
}

/// Whether a block looks incompressible: 8 samples of 32 bytes spread over
/// it use more than 128 distinct byte values (256 random bytes use about
/// 162; text and structured data well under 64). About 0.1 us per block.
pub fn looks_incompressible(block: &[u8]) -> bool {
    if block.len() < 1024 {
        return false;
    }
    let mut seen = [false; 256];
    let mut distinct = 0u32;
    let step = (block.len() - 32) / 7;
    for s in 0..8 {
        for &b in &block[s * step..s * step + 32] {
            distinct += u32::from(!seen[b as usize]);
            seen[b as usize] = true;
        }
    }
    distinct > 128
}

/// LZ4 with the incompressibility probe (the fast path).
pub struct Lz4Probe;

impl Compressor for Lz4Probe {
    fn name(&self) -> &'static str {
        "lz4+probe"
    }

    #[inline]
    fn compress(&self, src: &[u8], dst: &mut [u8]) -> Option<usize> {
        if looks_incompressible(src) {
            return None;
        }
        let n = lz4_flex::block::compress_into(src, dst).ok()?;
        keep(src.len(), n)
    }
}

/// Reference: always LZ4.
pub struct Lz4Always;

impl Compressor for Lz4Always {
    fn name(&self) -> &'static str {
        "lz4 (reference)"
    }

    fn compress(&self, src: &[u8], dst: &mut [u8]) -> Option<usize> {
        let n = lz4_flex::block::compress_into(src, dst).ok()?;
        keep(src.len(), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "flint ", "stripe ", "chunk ", "parity ", "reactor ", "the ", "of ",
        ];
        let mut out = Vec::new();
        let mut i = 7usize;
        while out.len() < len {
            i = i.wrapping_mul(2654435761) % 1_000_003;
            out.extend_from_slice(words[i % words.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn probe_skips_random_and_keeps_text() {
        assert!(looks_incompressible(&random(4096, 3)));
        assert!(!looks_incompressible(&text(4096)));
        assert!(!looks_incompressible(&[0u8; 4096]));
    }

    #[test]
    fn fast_and_reference_round_trip_the_same_bytes() {
        let mut dst = vec![0u8; bound(4096)];
        let mut back = vec![0u8; 4096];
        for block in [text(4096), random(4096, 9), vec![7u8; 4096], {
            let mut half = text(4096);
            half[2048..].copy_from_slice(&random(2048, 5));
            half
        }] {
            for c in [&Lz4Probe as &dyn Compressor, &Lz4Always] {
                if let Some(n) = c.compress(&block, &mut dst) {
                    assert!(n + MIN_SAVING <= block.len());
                    c.decompress(&dst[..n], &mut back).unwrap();
                    assert_eq!(back, block, "{}", c.name());
                }
            }
            // The probe may only skip what the reference could not shrink.
            if Lz4Probe.compress(&block, &mut dst).is_none() {
                assert!(Lz4Always.compress(&block, &mut dst).is_none());
            }
        }
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut dst = vec![0u8; bound(4096)];
        let block = text(4096);
        let n = Lz4Probe.compress(&block, &mut dst).unwrap();
        let mut back = vec![0u8; 4096];
        for cut in [0, 1, n / 2, n - 1] {
            assert!(Lz4Probe.decompress(&dst[..cut], &mut back).is_err());
        }
        let mut bad = dst[..n].to_vec();
        bad[0] = 0xff;
        bad[1] = 0xff;
        let _ = Lz4Probe.decompress(&bad, &mut back);
    }
}
