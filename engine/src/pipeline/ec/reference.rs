//! The reference kernel: one byte at a time, straight from the definition.

use super::gf::{mul, Matrix};
use super::{EcKernel, Prepared};

/// Table-free, byte-at-a-time matrix application.
pub struct Reference;

struct Applied(Matrix);

impl EcKernel for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn prepare(&self, matrix: &Matrix) -> Box<dyn Prepared> {
        Box::new(Applied(matrix.clone()))
    }
}

impl Prepared for Applied {
    fn apply(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        apply(&self.0, inputs, outputs, 0);
    }
}

/// Applies `m` to bytes `from..` of every chunk (the fast kernels use this
/// for the tail that does not fill a vector).
pub fn apply(m: &Matrix, inputs: &[&[u8]], outputs: &mut [&mut [u8]], from: usize) {
    for (r, out) in outputs.iter_mut().enumerate() {
        let row = m.row(r);
        for b in from..out.len() {
            let mut acc = 0u8;
            for (i, input) in inputs.iter().enumerate() {
                acc ^= mul(row[i], input[b]);
            }
            out[b] = acc;
        }
    }
}
