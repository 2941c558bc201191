//! The AVX-512 + GFNI kernel.
//!
//! Multiplying bytes by a constant `c` in GF(2^8) is linear over GF(2), so
//! it is an 8x8 bit matrix; `vgf2p8affineqb` applies such a matrix to 64
//! bytes at once. For each output row we accumulate `affine(input_i, A_ri)`
//! over the inputs with XOR, 64 bytes per step, four output rows per pass
//! over the inputs so each input is loaded once per four parities.

use super::gf::{mul, Matrix};
use super::{reference, EcKernel, Prepared};

/// The AVX-512 + GFNI kernel.
pub struct Gfni;

/// Whether this CPU can run the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The `vgf2p8affineqb` matrix for multiplication by `c` (Intel SDM,
/// GF2P8AFFINEQB: result bit i = parity(A.byte[7 - i] & x)).
pub fn affine_matrix(c: u8) -> u64 {
    let mut q = 0u64;
    for i in 0..8 {
        let mut row = 0u8;
        for j in 0..8 {
            if (mul(c, 1 << j) >> i) & 1 != 0 {
                row |= 1 << j;
            }
        }
        q |= u64::from(row) << (8 * (7 - i));
    }
    q
}

struct Applied {
    matrix: Matrix,
    /// Affine matrices, row-major like `matrix`.
    affine: Vec<u64>,
}

impl EcKernel for Gfni {
    fn name(&self) -> &'static str {
        "gfni-avx512"
    }

    fn prepare(&self, matrix: &Matrix) -> Box<dyn Prepared> {
        Box::new(Applied {
            matrix: matrix.clone(),
            affine: matrix.data.iter().map(|&c| affine_matrix(c)).collect(),
        })
    }
}

impl Prepared for Applied {
    fn apply(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        let len = outputs.first().map_or(0, |o| o.len());
        let vec_len = len - len % 64;
        #[cfg(target_arch = "x86_64")]
        if vec_len > 0 && supported() {
            let k = self.matrix.cols;
            for (g, group) in outputs.chunks_mut(4).enumerate() {
                let rows = &self.affine[g * 4 * k..(g * 4 + group.len()) * k];
                // SAFETY: the CPU supports AVX-512F/BW and GFNI (checked), and
                // every slice holds at least `vec_len` bytes (callers pass
                // equal lengths; vec_len <= len).
                unsafe { apply_avx512(rows, k, inputs, group, vec_len) };
            }
            reference::apply(&self.matrix, inputs, outputs, vec_len);
            return;
        }
        reference::apply(&self.matrix, inputs, outputs, 0);
    }
}

/// Applies up to four rows of affine matrices to the first `len` bytes
/// (a multiple of 64).
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and GFNI; every input and
/// output must hold at least `len` bytes; `rows.len() == outputs.len() * k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn apply_avx512(
    rows: &[u64],
    k: usize,
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
    len: usize,
) {
    use std::arch::x86_64::*;
    let r = outputs.len();
    let mut off = 0;
    while off < len {
        let mut acc = [_mm512_setzero_si512(); 4];
        for (i, input) in inputs.iter().enumerate() {
            // SAFETY: off + 64 <= len <= input.len().
            let x = unsafe { _mm512_loadu_si512(input.as_ptr().add(off).cast()) };
            for (j, a) in acc.iter_mut().enumerate().take(r) {
                let m = _mm512_set1_epi64(rows[j * k + i] as i64);
                *a = _mm512_xor_si512(*a, _mm512_gf2p8affine_epi64_epi8::<0>(x, m));
            }
        }
        for (j, out) in outputs.iter_mut().enumerate() {
            // SAFETY: off + 64 <= len <= out.len().
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(off).cast(), acc[j]) };
        }
        off += 64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_matrix_multiplies() {
        // Check the bit-matrix against field multiplication on every byte,
        // evaluating the affine transform in software.
        for c in [0u8, 1, 2, 3, 0x1d, 0x80, 0xff] {
            let q = affine_matrix(c);
            for x in 0..=255u8 {
                let mut y = 0u8;
                for i in 0..8 {
                    let row = (q >> (8 * (7 - i))) as u8;
                    y |= (((row & x).count_ones() & 1) as u8) << i;
                }
                assert_eq!(y, mul(c, x), "c={c} x={x}");
            }
        }
    }
}
