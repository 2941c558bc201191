//! Fingerprints: xxh3-128 of each block, the dedup index's key.

use xxhash_rust::xxh3;

/// A block's fingerprint.
pub type Fingerprint = u128;

/// Computes block fingerprints.
pub trait Fingerprinter: Send + Sync {
    /// The implementation's name.
    fn name(&self) -> &'static str;
    /// The fingerprint of `block`.
    fn fingerprint(&self, block: &[u8]) -> Fingerprint;
}

/// One-shot xxh3-128 (the fast path).
pub struct Xxh3;

impl Fingerprinter for Xxh3 {
    fn name(&self) -> &'static str {
        "xxh3-128"
    }

    #[inline]
    fn fingerprint(&self, block: &[u8]) -> Fingerprint {
        xxh3::xxh3_128(block)
    }
}

/// Reference: the streaming xxh3 hasher fed in uneven pieces, a different
/// code path that must give the same digest.
pub struct Xxh3Streaming;

impl Fingerprinter for Xxh3Streaming {
    fn name(&self) -> &'static str {
        "xxh3-128 (streaming reference)"
    }

    fn fingerprint(&self, block: &[u8]) -> Fingerprint {
        let mut h = xxh3::Xxh3::new();
        for piece in block.chunks(61) {
            h.update(piece);
        }
        h.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_reference_and_golden_vectors() {
        // Golden: xxh3-128 of the empty input (xxHash's published test vector).
        assert_eq!(Xxh3.fingerprint(b""), 0x99aa06d3014798d86001c324468d497f);
        let mut block = vec![0u8; 4096];
        for (i, b) in block.iter_mut().enumerate() {
            *b = (i * 7 + i / 13) as u8;
        }
        for len in [0, 1, 17, 240, 241, 4096] {
            assert_eq!(
                Xxh3.fingerprint(&block[..len]),
                Xxh3Streaming.fingerprint(&block[..len]),
                "len {len}"
            );
        }
        let mut other = block.clone();
        other[4095] ^= 1;
        assert_ne!(Xxh3.fingerprint(&block), Xxh3.fingerprint(&other));
    }
}
