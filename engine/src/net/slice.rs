//! Block I/O on a slice of a peer node's storage, node to node: the way a
//! stripe's chunks reach the nodes that hold them. One wire operation
//! ([`super::wire::Op::Slice`]) carries every call: after the op byte come
//! the map epoch the sender holds (a fencing token: a slice that has seen a
//! later epoch refuses the call with `ESTALE`), the slice's name, a call
//! byte and the call's arguments (PROTOCOL.md, "Slices").

use crate::codec::{DecodeError, Reader, Writer};

/// Bytes of a slice block: writes carry whole blocks.
pub const SLICE_BLOCK: usize = 4096;

/// Longest slice name.
pub const MAX_SLICE_NAME: usize = 64;

/// One slice call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceCall {
    /// Opens the slice, creating it with `bytes` when missing; the answer
    /// is its block size (u32) and blocks (u64).
    Open {
        /// Its size when created.
        bytes: u64,
    },
    /// Reads `blocks` blocks at `lba`.
    Read {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
    /// Writes whole blocks at `lba`.
    Write {
        /// First block.
        lba: u64,
        /// The blocks' bytes.
        data: Vec<u8>,
    },
    /// Makes the slice's completed writes durable.
    Flush,
    /// Zeroes `blocks` blocks at `lba`.
    Zero {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
}

/// A slice call with its fencing epoch and slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRequest {
    /// The sender's map epoch.
    pub epoch: u64,
    /// The slice (`[A-Za-z0-9_-]`, at most [`MAX_SLICE_NAME`] bytes).
    pub slice: String,
    /// The call.
    pub call: SliceCall,
}

impl SliceRequest {
    /// Encodes the request after its op byte.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.epoch).str(&self.slice);
        match &self.call {
            SliceCall::Open { bytes } => {
                w.u8(1).u64(*bytes);
            }
            SliceCall::Read { lba, blocks } => {
                w.u8(2).u64(*lba).u32(*blocks);
            }
            SliceCall::Write { lba, data } => {
                w.u8(3).u64(*lba);
                w.buf.extend_from_slice(data);
            }
            SliceCall::Flush => {
                w.u8(4);
            }
            SliceCall::Zero { lba, blocks } => {
                w.u8(5).u64(*lba).u32(*blocks);
            }
        }
    }

    /// Decodes the request after its op byte.
    pub fn decode(r: &mut Reader<'_>) -> Result<SliceRequest, DecodeError> {
        let epoch = r.u64("epoch")?;
        let slice = r.str(MAX_SLICE_NAME, "slice name")?;
        if slice.is_empty()
            || !slice
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DecodeError { what: "slice name" });
        }
        let call = match r.u8("slice call")? {
            1 => SliceCall::Open {
                bytes: r.u64("bytes")?,
            },
            2 => SliceCall::Read {
                lba: r.u64("lba")?,
                blocks: r.u32("blocks")?,
            },
            3 => {
                let lba = r.u64("lba")?;
                let n = r.remaining();
                // Whole 4 KiB blocks, at least one.
                if n == 0 || !n.is_multiple_of(SLICE_BLOCK) {
                    return Err(DecodeError {
                        what: "slice write length",
                    });
                }
                SliceCall::Write {
                    lba,
                    data: r.take(n, "data")?.to_vec(),
                }
            }
            4 => SliceCall::Flush,
            5 => SliceCall::Zero {
                lba: r.u64("lba")?,
                blocks: r.u32("blocks")?,
            },
            _ => return Err(DecodeError { what: "slice call" }),
        };
        Ok(SliceRequest { epoch, slice, call })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_and_bad_names_are_refused() {
        for call in [
            SliceCall::Open { bytes: 1 << 30 },
            SliceCall::Read { lba: 7, blocks: 32 },
            SliceCall::Write {
                lba: 9,
                data: vec![5; 4096],
            },
            SliceCall::Flush,
            SliceCall::Zero { lba: 1, blocks: 2 },
        ] {
            let req = SliceRequest {
                epoch: 42,
                slice: "bucket-3".into(),
                call,
            };
            let mut w = Writer::default();
            req.encode(&mut w);
            let mut r = Reader::new(&w.buf);
            assert_eq!(SliceRequest::decode(&mut r).unwrap(), req);
            assert_eq!(r.remaining(), 0);
        }
        for bad in ["", "../etc", "a/b", "a b"] {
            let mut w = Writer::default();
            w.u64(1).str(bad).u8(4);
            assert!(
                SliceRequest::decode(&mut Reader::new(&w.buf)).is_err(),
                "{bad}"
            );
        }
    }
}
