//! Erasure coding: k data chunks + m parity chunks, any k of which rebuild
//! the rest.
//!
//! Flint's code is fixed by [`gf::Matrix::cauchy`] (the same matrix ISA-L
//! builds), so the kernels below are interchangeable on the same data:
//!
//! - [`reference`]: byte-at-a-time table arithmetic; obviously correct.
//! - [`gfni`]: AVX-512 + GFNI, 64 bytes per instruction, multiplication by a
//!   constant as an 8x8 bit-matrix affine transform (`vgf2p8affineqb`).
//! - [`isal`] (feature `isal`): Intel ISA-L's `ec_encode_data` through FFI.
//!
//! A kernel only knows how to multiply a matrix by a set of chunks
//! ([`Prepared::apply`]); [`Codec`] turns that into encoding and into
//! reconstruction of any lost chunks from any k survivors.

pub mod gf;
pub mod gfni;
#[cfg(feature = "isal")]
pub mod isal;
pub mod reference;

use std::fmt;
use std::sync::Arc;

use gf::Matrix;

/// Erasure-coding errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EcError {
    /// k or m out of range.
    Geometry {
        /// Data chunks.
        k: usize,
        /// Parity chunks.
        m: usize,
    },
    /// Chunks of different lengths, or the wrong number of them.
    Shape {
        /// What was wrong.
        what: &'static str,
    },
    /// More chunks are missing than parity can rebuild.
    TooManyLost {
        /// Chunks missing.
        lost: usize,
        /// Parity chunks.
        m: usize,
    },
}

impl fmt::Display for EcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EcError::Geometry { k, m } => write!(
                f,
                "erasure code {k}+{m} is not supported: need k >= 1, m >= 1, k + m <= 255"
            ),
            EcError::Shape { what } => write!(f, "erasure coding: {what}"),
            EcError::TooManyLost { lost, m } => write!(
                f,
                "{lost} chunks of the stripe are lost but parity can rebuild only {m}"
            ),
        }
    }
}

impl std::error::Error for EcError {}

/// A way of multiplying a GF(2^8) matrix by chunks of bytes.
pub trait EcKernel: Send + Sync {
    /// The kernel's name, for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Precomputes what applying `matrix` (rows x k) needs.
    fn prepare(&self, matrix: &Matrix) -> Box<dyn Prepared>;
}

/// A matrix ready to apply.
pub trait Prepared: Send + Sync {
    /// `outputs[r] = sum_i matrix[r][i] * inputs[i]`, bytewise. All slices
    /// have the same length; `inputs.len()` is the matrix's columns and
    /// `outputs.len()` its rows (callers check).
    fn apply(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]);
}

/// The fastest kernel this CPU (and build) supports.
pub fn best_kernel() -> Arc<dyn EcKernel> {
    if gfni::supported() {
        return Arc::new(gfni::Gfni);
    }
    #[cfg(feature = "isal")]
    {
        Arc::new(isal::Isal)
    }
    #[cfg(not(feature = "isal"))]
    {
        Arc::new(reference::Reference)
    }
}

/// A k+m code with a chosen kernel.
pub struct Codec {
    k: usize,
    m: usize,
    matrix: Matrix,
    kernel: Arc<dyn EcKernel>,
    encoder: Box<dyn Prepared>,
}

impl Codec {
    /// A k+m code.
    pub fn new(k: usize, m: usize, kernel: Arc<dyn EcKernel>) -> Result<Self, EcError> {
        if k == 0 || m == 0 || k + m > 255 {
            return Err(EcError::Geometry { k, m });
        }
        let matrix = Matrix::cauchy(k, m);
        let parity_rows: Vec<usize> = (k..k + m).collect();
        let encoder = kernel.prepare(&matrix.select(&parity_rows));
        Ok(Codec {
            k,
            m,
            matrix,
            kernel,
            encoder,
        })
    }

    /// Data chunks per stripe.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Parity chunks per stripe.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The kernel in use.
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    fn same_len(chunks: &[&[u8]], outs: &[&mut [u8]]) -> Result<usize, EcError> {
        let len = chunks.first().map_or(0, |c| c.len());
        if chunks.iter().any(|c| c.len() != len) || outs.iter().any(|c| c.len() != len) {
            return Err(EcError::Shape {
                what: "chunks differ in length",
            });
        }
        Ok(len)
    }

    /// Computes the m parity chunks of k data chunks.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), EcError> {
        if data.len() != self.k || parity.len() != self.m {
            return Err(EcError::Shape {
                what: "encode needs k data and m parity chunks",
            });
        }
        Self::same_len(data, parity)?;
        self.encoder.apply(data, parity);
        Ok(())
    }

    /// Rebuilds the chunks listed in `want` (indices 0..k+m; data first)
    /// from the chunks present in `chunks` (length k+m, `None` = lost).
    /// `out[i]` receives chunk `want[i]`.
    pub fn reconstruct(
        &self,
        chunks: &[Option<&[u8]>],
        want: &[usize],
        out: &mut [&mut [u8]],
    ) -> Result<(), EcError> {
        let n = self.k + self.m;
        if chunks.len() != n || want.len() != out.len() || want.iter().any(|&w| w >= n) {
            return Err(EcError::Shape {
                what: "reconstruct needs k+m chunk slots and one output per wanted chunk",
            });
        }
        let present: Vec<usize> = (0..n)
            .filter(|&i| chunks[i].is_some())
            .take(self.k)
            .collect();
        if present.len() < self.k {
            return Err(EcError::TooManyLost {
                lost: n - chunks.iter().filter(|c| c.is_some()).count(),
                m: self.m,
            });
        }
        let inputs: Vec<&[u8]> = present.iter().filter_map(|&i| chunks[i]).collect();
        Self::same_len(&inputs, out)?;
        self.decoder(&present, want)?.apply(&inputs, out);
        Ok(())
    }

    /// The prepared matrix that rebuilds chunks `want` from the k chunks
    /// `present` (in that order), for callers that cache it per loss pattern.
    pub fn decoder(&self, present: &[usize], want: &[usize]) -> Result<Box<dyn Prepared>, EcError> {
        let n = self.k + self.m;
        if present.len() != self.k || present.iter().chain(want).any(|&i| i >= n) {
            return Err(EcError::Shape {
                what: "a decoder needs k present chunks and wanted chunks below k+m",
            });
        }
        let inv = self.matrix.select(present).invert().ok_or(EcError::Shape {
            what: "survivor matrix is singular",
        })?;
        let decode = self.matrix.select(want).mul(&inv);
        Ok(self.kernel.prepare(&decode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(k: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut x = seed | 1;
        (0..k)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    fn kernels() -> Vec<Arc<dyn EcKernel>> {
        let mut v: Vec<Arc<dyn EcKernel>> = vec![Arc::new(reference::Reference)];
        if gfni::supported() {
            v.push(Arc::new(gfni::Gfni));
        } else {
            eprintln!("note: this CPU has no AVX-512/GFNI; the gfni kernel is not tested here");
        }
        #[cfg(feature = "isal")]
        v.push(Arc::new(isal::Isal));
        v
    }

    #[test]
    fn every_kernel_matches_the_reference() {
        for (k, m) in [(3, 1), (4, 2), (7, 2), (8, 2), (7, 4), (10, 6)] {
            for len in [0, 1, 63, 64, 65, 4096, 4096 + 17, 65536] {
                let data = chunks(k, len, (k * 31 + len) as u64);
                let refs: Vec<&[u8]> = data.iter().map(|c| &c[..]).collect();
                let mut want = vec![vec![0u8; len]; m];
                {
                    let mut outs: Vec<&mut [u8]> = want.iter_mut().map(|c| &mut c[..]).collect();
                    Codec::new(k, m, Arc::new(reference::Reference))
                        .unwrap()
                        .encode(&refs, &mut outs)
                        .unwrap();
                }
                for kernel in kernels() {
                    let name = kernel.name();
                    let codec = Codec::new(k, m, kernel).unwrap();
                    let mut got = vec![vec![0xAAu8; len]; m];
                    let mut outs: Vec<&mut [u8]> = got.iter_mut().map(|c| &mut c[..]).collect();
                    codec.encode(&refs, &mut outs).unwrap();
                    assert_eq!(got, want, "{name} {k}+{m} len {len}");
                }
            }
        }
    }

    #[test]
    fn any_m_lost_chunks_are_rebuilt() {
        for kernel in kernels() {
            for (k, m) in [(3, 1), (4, 2), (8, 2), (7, 4)] {
                let codec = Codec::new(k, m, kernel.clone()).unwrap();
                let len = 4096 + 64;
                let data = chunks(k, len, 99);
                let mut all = data.clone();
                all.extend(vec![vec![0u8; len]; m]);
                {
                    let (d, p) = all.split_at_mut(k);
                    let refs: Vec<&[u8]> = d.iter().map(|c| &c[..]).collect();
                    let mut outs: Vec<&mut [u8]> = p.iter_mut().map(|c| &mut c[..]).collect();
                    codec.encode(&refs, &mut outs).unwrap();
                }
                let n = k + m;
                for mask in 1u32..(1 << n) {
                    let lost: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                    if lost.len() > m {
                        continue;
                    }
                    let view: Vec<Option<&[u8]>> = (0..n)
                        .map(|i| (!lost.contains(&i)).then(|| &all[i][..]))
                        .collect();
                    let mut rebuilt = vec![vec![0u8; len]; lost.len()];
                    let mut outs: Vec<&mut [u8]> = rebuilt.iter_mut().map(|c| &mut c[..]).collect();
                    codec.reconstruct(&view, &lost, &mut outs).unwrap();
                    for (j, &i) in lost.iter().enumerate() {
                        assert_eq!(rebuilt[j], all[i], "{} {k}+{m} chunk {i}", kernel.name());
                    }
                }
            }
        }
    }

    #[test]
    fn losing_more_than_m_is_a_clear_error() {
        let codec = Codec::new(4, 2, best_kernel()).unwrap();
        let c = [0u8; 64];
        let view = [Some(&c[..]), None, None, None, Some(&c[..]), Some(&c[..])];
        let mut out = [0u8; 64];
        let err = codec
            .reconstruct(&view, &[1], &mut [&mut out[..]])
            .unwrap_err();
        assert_eq!(err, EcError::TooManyLost { lost: 3, m: 2 });
        assert!(Codec::new(0, 2, best_kernel()).is_err());
        assert!(Codec::new(200, 56, best_kernel()).is_err());
    }
}
