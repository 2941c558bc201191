//! The `null` backend: every command completes at once and moves no data.
//! It measures what the reactor and queue-pair framework cost per I/O.

use super::{
    geometry_check, BlockDevice, Completion, DoneQueue, Geometry, IoCmd, QpairOptions, QueuePair,
};
use crate::error::{IoError, Result};
use crate::reactor::Core;

/// A device that completes everything immediately.
pub struct NullDevice {
    name: String,
    geometry: Geometry,
}

impl NullDevice {
    /// A null device of `bytes` capacity.
    pub fn new(name: &str, block_size: u32, bytes: u64) -> Result<Self> {
        let blocks = geometry_check(name, block_size, bytes)?;
        Ok(NullDevice {
            name: name.into(),
            geometry: Geometry {
                block_size,
                blocks,
                max_transfer: 1 << 20,
                max_queue_depth: 4096,
                buf_align: 1,
            },
        })
    }
}

impl BlockDevice for NullDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "null"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn queue_pair(&self, _core: &mut Core, opts: &QpairOptions) -> Result<Box<dyn QueuePair>> {
        Ok(Box::new(NullQpair {
            geometry: self.geometry,
            done: DoneQueue::new(opts.depth.min(self.geometry.max_queue_depth)),
        }))
    }
}

struct NullQpair {
    geometry: Geometry,
    done: DoneQueue,
}

impl QueuePair for NullQpair {
    #[inline]
    unsafe fn submit(&mut self, cmd: &IoCmd) -> Result<(), IoError> {
        if self.done.is_full() {
            return Err(IoError::QueueFull);
        }
        cmd.validate(&self.geometry)?;
        self.done.push(Completion {
            tag: cmd.tag,
            result: Ok(cmd.bytes(&self.geometry) as u32),
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
