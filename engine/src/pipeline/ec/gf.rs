//! Arithmetic in GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1 (0x11d), and
//! the matrices of Flint's erasure code.
//!
//! The code is systematic Reed-Solomon with a Cauchy parity matrix, built
//! exactly as ISA-L's `gf_gen_cauchy1_matrix` builds it (parity row `i`,
//! column `j` = 1 / (i ^ j) for i in k..k+m), so chunks written by any
//! kernel (the reference, our GFNI kernel, ISA-L) are read by any other and
//! every k-subset of rows is invertible.

/// The field polynomial.
pub const POLY: u16 = 0x11d;

const fn tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = tables();
const EXP: [u8; 512] = TABLES.0;
const LOG: [u8; 256] = TABLES.1;

/// `a * b` in the field.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }
}

/// The multiplicative inverse of `a` (`a != 0`); 0 maps to 0.
#[inline]
pub fn inv(a: u8) -> u8 {
    if a == 0 {
        0
    } else {
        EXP[255 - LOG[a as usize] as usize]
    }
}

/// A dense matrix over GF(2^8), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` coefficients.
    pub data: Vec<u8>,
}

impl Matrix {
    /// An all-zero matrix.
    pub fn zero(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0; rows * cols],
        }
    }

    /// Coefficient at (r, c).
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> u8 {
        self.data[r * self.cols + c]
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The encoding matrix of a k+m code: identity on top, Cauchy below.
    pub fn cauchy(k: usize, m: usize) -> Self {
        let mut a = Matrix::zero(k + m, k);
        for i in 0..k {
            a.data[i * k + i] = 1;
        }
        for i in k..k + m {
            for j in 0..k {
                a.data[i * k + j] = inv((i ^ j) as u8);
            }
        }
        a
    }

    /// The rows listed, in order.
    pub fn select(&self, rows: &[usize]) -> Self {
        let mut out = Matrix::zero(rows.len(), self.cols);
        for (i, &r) in rows.iter().enumerate() {
            out.data[i * self.cols..(i + 1) * self.cols].copy_from_slice(self.row(r));
        }
        out
    }

    /// `self * other`.
    pub fn mul(&self, other: &Matrix) -> Matrix {
        let mut out = Matrix::zero(self.rows, other.cols);
        for r in 0..self.rows {
            for c in 0..other.cols {
                let mut acc = 0u8;
                for i in 0..self.cols {
                    acc ^= mul(self.at(r, i), other.at(i, c));
                }
                out.data[r * other.cols + c] = acc;
            }
        }
        out
    }

    /// The inverse of a square matrix, or `None` if it is singular.
    pub fn invert(&self) -> Option<Matrix> {
        let n = self.rows;
        if n != self.cols {
            return None;
        }
        let mut a = self.clone();
        let mut b = Matrix::zero(n, n);
        for i in 0..n {
            b.data[i * n + i] = 1;
        }
        for col in 0..n {
            let pivot = (col..n).find(|&r| a.at(r, col) != 0)?;
            if pivot != col {
                for c in 0..n {
                    a.data.swap(pivot * n + c, col * n + c);
                    b.data.swap(pivot * n + c, col * n + c);
                }
            }
            let p = inv(a.at(col, col));
            for c in 0..n {
                a.data[col * n + c] = mul(a.data[col * n + c], p);
                b.data[col * n + c] = mul(b.data[col * n + c], p);
            }
            for r in 0..n {
                let f = a.at(r, col);
                if r != col && f != 0 {
                    for c in 0..n {
                        a.data[r * n + c] ^= mul(f, a.data[col * n + c]);
                        b.data[r * n + c] ^= mul(f, b.data[col * n + c]);
                    }
                }
            }
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_laws_hold() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
        }
        // Known values for 0x11d: 2 * 0x80 = 0x1d.
        assert_eq!(mul(2, 0x80), 0x1d);
        assert_eq!(mul(0x53, 0xca), mul(0xca, 0x53));
    }

    #[test]
    fn every_k_subset_of_a_cauchy_code_inverts() {
        for (k, m) in [(3, 1), (4, 2), (7, 2), (8, 2), (7, 4)] {
            let a = Matrix::cauchy(k, m);
            // Drop every choice of up to m rows among the first k+m (a sample
            // for the larger codes) and check the survivors invert.
            let n = k + m;
            for mask in 0u32..(1 << n) {
                if mask.count_ones() as usize != k {
                    continue;
                }
                let rows: Vec<usize> = (0..n).filter(|r| mask & (1 << r) != 0).collect();
                let sub = a.select(&rows);
                let inv = sub.invert().expect("Cauchy submatrix is invertible");
                let id = sub.mul(&inv);
                for r in 0..k {
                    for c in 0..k {
                        assert_eq!(id.at(r, c), u8::from(r == c));
                    }
                }
            }
        }
    }
}
