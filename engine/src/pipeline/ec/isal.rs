//! The ISA-L kernel (feature `isal`): Intel's `ec_encode_data`, the
//! reference point the erasure-coding targets are set against.

use super::gf::Matrix;
use super::{EcKernel, Prepared};

/// ISA-L's table-driven SIMD kernel.
pub struct Isal;

struct Applied {
    k: usize,
    rows: usize,
    tables: Vec<u8>,
}

impl EcKernel for Isal {
    fn name(&self) -> &'static str {
        "isa-l"
    }

    fn prepare(&self, matrix: &Matrix) -> Box<dyn Prepared> {
        let mut a = matrix.data.clone();
        let mut tables = vec![0u8; 32 * matrix.rows * matrix.cols];
        if !a.is_empty() {
            // SAFETY: `a` holds rows*cols coefficients and `tables` the
            // 32*rows*cols bytes ec_init_tables writes.
            unsafe {
                isal_sys::ec_init_tables(
                    matrix.cols as i32,
                    matrix.rows as i32,
                    a.as_mut_ptr(),
                    tables.as_mut_ptr(),
                )
            };
        }
        Box::new(Applied {
            k: matrix.cols,
            rows: matrix.rows,
            tables,
        })
    }
}

impl Prepared for Applied {
    fn apply(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        let len = outputs.first().map_or(0, |o| o.len());
        if len == 0 || self.rows == 0 {
            return;
        }
        // ISA-L's C signature takes mutable pointers but only reads the
        // sources and the tables.
        let mut src: Vec<*mut u8> = inputs.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let mut dst: Vec<*mut u8> = outputs.iter_mut().map(|d| d.as_mut_ptr()).collect();
        let mut offset = 0usize;
        // ec_encode_data takes an int length; feed huge chunks in pieces.
        while offset < len {
            let n = (len - offset).min(1 << 30);
            let mut s: Vec<*mut u8> = src.iter().map(|p| p.wrapping_add(offset)).collect();
            let mut d: Vec<*mut u8> = dst.iter().map(|p| p.wrapping_add(offset)).collect();
            // SAFETY: every source and destination holds `len` bytes (callers
            // pass equal lengths), so [offset, offset + n) is in bounds; the
            // tables were built for k x rows; sources are only read.
            unsafe {
                isal_sys::ec_encode_data(
                    n as i32,
                    self.k as i32,
                    self.rows as i32,
                    self.tables.as_ptr().cast_mut(),
                    s.as_mut_ptr(),
                    d.as_mut_ptr(),
                )
            };
            offset += n;
        }
        src.clear();
        dst.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::gf::Matrix;

    #[test]
    fn our_matrix_is_isal_s_matrix() {
        for (k, m) in [(4usize, 2usize), (8, 2), (7, 4)] {
            let mut a = vec![0u8; (k + m) * k];
            // SAFETY: `a` holds (k+m)*k bytes as gf_gen_cauchy1_matrix writes.
            unsafe { isal_sys::gf_gen_cauchy1_matrix(a.as_mut_ptr(), (k + m) as i32, k as i32) };
            assert_eq!(a, Matrix::cauchy(k, m).data);
        }
    }
}
