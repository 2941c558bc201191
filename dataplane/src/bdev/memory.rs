//! The `memory` backend: a RAM disk, like SPDK's malloc bdev.
//!
//! Commands copy between the caller's buffer and one shared mapping at
//! submission time and complete on the next poll. Concurrent commands from
//! different queue pairs to the same blocks race the way they would on an
//! NVMe namespace: the result is one of the writes, unspecified which; the
//! engine never issues such overlapping I/O.

use std::sync::Arc;

use super::{
    geometry_check, BlockDevice, Completion, DoneQueue, Geometry, IoCmd, Opcode, QpairOptions,
    QueuePair,
};
use crate::error::{IoError, Result};
use crate::mempool::{DmaRegion, HugePages};
use crate::reactor::Core;

/// A RAM-backed device.
pub struct MemoryDevice {
    name: String,
    geometry: Geometry,
    region: Arc<DmaRegion>,
}

impl MemoryDevice {
    /// A zero-filled RAM device of `bytes` capacity.
    pub fn new(name: &str, block_size: u32, bytes: u64) -> Result<Self> {
        let blocks = geometry_check(name, block_size, bytes)?;
        let region = DmaRegion::new((blocks * u64::from(block_size)) as usize, HugePages::Auto)?;
        Ok(MemoryDevice {
            name: name.into(),
            geometry: Geometry {
                block_size,
                blocks,
                max_transfer: 1 << 20,
                max_queue_depth: 4096,
                buf_align: 1,
            },
            region: Arc::new(region),
        })
    }
}

impl BlockDevice for MemoryDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn queue_pair(&self, _core: &mut Core, opts: &QpairOptions) -> Result<Box<dyn QueuePair>> {
        Ok(Box::new(MemoryQpair {
            geometry: self.geometry,
            region: self.region.clone(),
            done: DoneQueue::new(opts.depth.min(self.geometry.max_queue_depth)),
        }))
    }
}

struct MemoryQpair {
    geometry: Geometry,
    region: Arc<DmaRegion>,
    done: DoneQueue,
}

impl QueuePair for MemoryQpair {
    #[inline]
    unsafe fn submit(&mut self, cmd: &IoCmd) -> Result<(), IoError> {
        if self.done.is_full() {
            return Err(IoError::QueueFull);
        }
        cmd.validate(&self.geometry)?;
        let off = (cmd.lba * u64::from(self.geometry.block_size)) as usize;
        let len = cmd.bytes(&self.geometry) as usize;
        // SAFETY: validate() checked lba + blocks <= capacity, so
        // [off, off + len) lies inside the region.
        let dev = unsafe { self.region.as_ptr().add(off) };
        match cmd.op {
            // SAFETY: the caller guarantees `buf` holds `len` bytes it does not
            // touch until completion; the device range is in bounds (above).
            Opcode::Read => unsafe { std::ptr::copy_nonoverlapping(dev, cmd.buf, len) },
            // SAFETY: as for reads, in the other direction.
            Opcode::Write => unsafe { std::ptr::copy_nonoverlapping(cmd.buf, dev, len) },
            // SAFETY: the device range is in bounds (above).
            Opcode::WriteZeroes => unsafe { std::ptr::write_bytes(dev, 0, len) },
            Opcode::Flush => {}
        }
        self.done.push(Completion {
            tag: cmd.tag,
            result: Ok(len as u32),
        });
        Ok(())
    }

    fn flush(&mut self) {}

    #[inline]
    fn poll(&mut self, out: &mut [Completion]) -> usize {
        self.done.drain_into(out)
    }

    fn in_flight(&self) -> u32 {
        self.done.len()
    }

    fn depth(&self) -> u32 {
        self.done.capacity()
    }
}
