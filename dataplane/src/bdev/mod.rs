//! Block devices shaped like NVMe namespaces, with a queue pair per reactor.
//!
//! A [`BlockDevice`] is opened once and shared by all reactors; each reactor
//! creates its own [`QueuePair`] on it (SPDK's model: no queue is shared, so
//! no lock is taken). Commands ([`IoCmd`]) are built safely; submitting one is
//! the `unsafe` step because it hands a raw buffer to the device until the
//! command's [`Completion`] is reaped. Submissions are batched: commands
//! queue up and [`QueuePair::flush`] (or the next [`QueuePair::poll`]) rings
//! the doorbell once for all of them.
//!
//! Backends, one file each: [`uring`] (io_uring on a file or block device),
//! [`memory`] (RAM, like SPDK's malloc bdev) and [`null`] (completes at once,
//! to measure the framework's own cost). [`nvme`] is Flint's own userspace
//! NVMe driver in the making: its queue pairs and controller state machine,
//! tested against an in-memory controller and over VFIO on QEMU's emulated
//! NVMe; not yet a backend.

#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod memory;
pub mod null;
pub mod nvme;
pub mod uring;

use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ByteSize;
use crate::error::{Error, IoError, Result};
use crate::mempool::DmaRegion;
use crate::reactor::Core;

/// Shape of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Largest transfer of one command, in bytes.
    pub max_transfer: u32,
    /// Deepest queue a queue pair may have.
    pub max_queue_depth: u32,
    /// Alignment a data buffer must have.
    pub buf_align: usize,
}

impl Geometry {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }
}

/// What a command does (NVMe NVM command set, base spec 2.0 §3 / NVM spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Read blocks into the buffer.
    Read,
    /// Write blocks from the buffer.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Zero blocks (also how Flint trims: deallocated blocks read as zero).
    WriteZeroes,
}

/// One command for a queue pair. Building one is safe; submitting it is not.
#[derive(Debug, Clone, Copy)]
pub struct IoCmd {
    /// The operation.
    pub op: Opcode,
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks.
    pub blocks: u32,
    /// Data buffer of `blocks * block_size` bytes (reads and writes only).
    pub buf: *mut u8,
    /// The caller's tag, returned in the completion.
    pub tag: u64,
}

impl IoCmd {
    /// Reads `blocks` blocks at `lba` into `buf`.
    pub fn read(lba: u64, blocks: u32, buf: *mut u8, tag: u64) -> Self {
        IoCmd {
            op: Opcode::Read,
            lba,
            blocks,
            buf,
            tag,
        }
    }

    /// Writes `blocks` blocks at `lba` from `buf`.
    pub fn write(lba: u64, blocks: u32, buf: *const u8, tag: u64) -> Self {
        IoCmd {
            op: Opcode::Write,
            lba,
            blocks,
            buf: buf.cast_mut(),
            tag,
        }
    }

    /// Makes every completed write durable.
    pub fn flush(tag: u64) -> Self {
        IoCmd {
            op: Opcode::Flush,
            lba: 0,
            blocks: 0,
            buf: std::ptr::null_mut(),
            tag,
        }
    }

    /// Zeroes `blocks` blocks at `lba`.
    pub fn write_zeroes(lba: u64, blocks: u32, tag: u64) -> Self {
        IoCmd {
            op: Opcode::WriteZeroes,
            lba,
            blocks,
            buf: std::ptr::null_mut(),
            tag,
        }
    }

    /// Bytes the command transfers.
    pub fn bytes(&self, geometry: &Geometry) -> u64 {
        u64::from(self.blocks) * u64::from(geometry.block_size)
    }

    /// Checks the command against a device: range, transfer size, buffer
    /// alignment. Every backend runs this before touching anything.
    pub fn validate(&self, g: &Geometry) -> Result<(), IoError> {
        if self.op == Opcode::Flush {
            return Ok(());
        }
        let end = self.lba.checked_add(u64::from(self.blocks));
        if self.blocks == 0 || end.is_none_or(|e| e > g.blocks) {
            return Err(IoError::OutOfRange {
                lba: self.lba,
                blocks: self.blocks,
                capacity: g.blocks,
            });
        }
        if matches!(self.op, Opcode::Read | Opcode::Write) {
            let len = self.bytes(g);
            if len > u64::from(g.max_transfer)
                || self.buf.is_null()
                || !(self.buf as usize).is_multiple_of(g.buf_align)
            {
                return Err(IoError::Misaligned {
                    addr: self.buf as usize,
                    len: len as usize,
                    align: g.buf_align,
                });
            }
        }
        Ok(())
    }
}

/// A finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The tag the command was submitted with.
    pub tag: u64,
    /// Bytes transferred, or the error.
    pub result: Result<u32, IoError>,
}

impl Completion {
    /// A placeholder for completion arrays.
    pub const EMPTY: Completion = Completion {
        tag: 0,
        result: Ok(0),
    };
}

/// Options for a new queue pair.
#[derive(Debug, Clone, Copy)]
pub struct QpairOptions {
    /// Commands in flight at most.
    pub depth: u32,
}

impl Default for QpairOptions {
    fn default() -> Self {
        QpairOptions { depth: 128 }
    }
}

/// One reactor's submission and completion queues on a device.
pub trait QueuePair {
    /// Queues a command. It reaches the device at the next [`QueuePair::flush`]
    /// or [`QueuePair::poll`]. Immediate refusals (full queue, out of range,
    /// misaligned buffer) are returned here and the command is not queued.
    ///
    /// # Safety
    /// For reads and writes, `cmd.buf` must point to `blocks * block_size`
    /// bytes that stay valid, and are neither read (for reads) nor written
    /// by anyone else, until this command's completion has been returned by
    /// [`QueuePair::poll`].
    unsafe fn submit(&mut self, cmd: &IoCmd) -> Result<(), IoError>;

    /// Hands queued commands to the device (one doorbell for the batch).
    /// Queue pairs on the reactor's shared io_uring leave this to the
    /// reactor, which rings once per loop iteration for all its devices.
    fn flush(&mut self);

    /// Flushes, then reaps up to `out.len()` completions into `out`; returns
    /// how many. Never blocks.
    fn poll(&mut self, out: &mut [Completion]) -> usize;

    /// Commands submitted and not yet reaped.
    fn in_flight(&self) -> u32;

    /// The queue depth.
    fn depth(&self) -> u32;

    /// Whether a completion signals the reactor's wake fd. If not (polled
    /// completions), the owner must keep polling while commands are in flight.
    fn wakes_on_completion(&self) -> bool {
        true
    }

    /// Registers a memory region so transfers in it skip per-I/O page pinning
    /// (io_uring fixed buffers); a no-op for backends that do not need it.
    ///
    /// # Safety
    /// The region must outlive this queue pair.
    unsafe fn register_memory(&mut self, _region: &DmaRegion) -> Result<()> {
        Ok(())
    }
}

/// A block device: opened once, shared by every reactor.
pub trait BlockDevice: Send + Sync {
    /// The device's configured name.
    fn name(&self) -> &str;

    /// The backend (`uring`, `memory`, `null`).
    fn kind(&self) -> &'static str;

    /// The device's shape.
    fn geometry(&self) -> Geometry;

    /// Creates a queue pair owned by the reactor `core`. It must be used and
    /// dropped on that reactor only.
    fn queue_pair(&self, core: &mut Core, opts: &QpairOptions) -> Result<Box<dyn QueuePair>>;
}

/// Which backend a device uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// io_uring on a file or block device.
    Uring,
    /// RAM.
    Memory,
    /// Completes at once.
    Null,
}

/// A device as written in a config file (`[[device]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Name used in logs and by the engine.
    pub name: String,
    /// `uring`, `memory` or `null`.
    pub backend: Backend,
    /// File or block device (`uring` only).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Capacity. `memory` and `null`: required. `uring` on a file: the file is
    /// created or extended to this size; on a block device: must not exceed it.
    #[serde(default)]
    pub size: Option<ByteSize>,
    /// Logical block size (default 4096; `uring` at least the device's own).
    #[serde(default)]
    pub block_size: Option<u32>,
    /// `uring`: open with `O_DIRECT` (default true).
    #[serde(default = "default_true")]
    pub direct: bool,
    /// `uring`: use a kernel submission-polling thread.
    #[serde(default)]
    pub sqpoll: bool,
    /// `uring`: poll completions (IOPOLL) when the device has poll queues,
    /// falling back to interrupts when it does not.
    #[serde(default)]
    pub iopoll: bool,
    /// `uring`: submit once per reactor loop iteration for all queued
    /// commands (fewer system calls) instead of as each command is queued.
    #[serde(default)]
    pub batch_submit: bool,
}

fn default_true() -> bool {
    true
}

impl DeviceSpec {
    /// A spec with defaults for `backend`.
    pub fn new(name: &str, backend: Backend) -> Self {
        DeviceSpec {
            name: name.into(),
            backend,
            path: None,
            size: None,
            block_size: None,
            direct: true,
            sqpoll: false,
            iopoll: false,
            batch_submit: false,
        }
    }

    fn require_size(&self) -> Result<u64> {
        self.size.map(|s| s.0).ok_or_else(|| Error::Config {
            key: format!("device.{}.size", self.name),
            reason: "required for this backend; write e.g. size = \"1GiB\"".into(),
        })
    }

    fn block_size(&self) -> Result<u32> {
        let bs = self.block_size.unwrap_or(4096);
        if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
            return Err(Error::Config {
                key: format!("device.{}.block_size", self.name),
                reason: format!("{bs} is not a power of two between 512 and 65536"),
            });
        }
        Ok(bs)
    }
}

/// Opens the device a spec describes.
pub fn open(spec: &DeviceSpec) -> Result<Arc<dyn BlockDevice>> {
    Ok(match spec.backend {
        Backend::Uring => Arc::new(uring::UringDevice::open(spec)?),
        Backend::Memory => Arc::new(memory::MemoryDevice::new(
            &spec.name,
            spec.block_size()?,
            spec.require_size()?,
        )?),
        Backend::Null => Arc::new(null::NullDevice::new(
            &spec.name,
            spec.block_size()?,
            spec.require_size()?,
        )?),
    })
}

/// A fixed-capacity FIFO of completions for backends that finish commands at
/// submission (memory, null): no allocation after creation.
pub(crate) struct DoneQueue {
    slots: Box<[Completion]>,
    head: usize,
    len: usize,
}

impl DoneQueue {
    pub(crate) fn new(depth: u32) -> Self {
        DoneQueue {
            slots: vec![Completion::EMPTY; depth.max(1) as usize].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    #[inline]
    pub(crate) fn push(&mut self, c: Completion) {
        let i = (self.head + self.len) % self.slots.len();
        self.slots[i] = c;
        self.len += 1;
    }

    #[inline]
    pub(crate) fn drain_into(&mut self, out: &mut [Completion]) -> usize {
        let n = self.len.min(out.len());
        for o in out.iter_mut().take(n) {
            *o = self.slots[self.head];
            self.head = (self.head + 1) % self.slots.len();
        }
        self.len -= n;
        n
    }

    pub(crate) fn len(&self) -> u32 {
        self.len as u32
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }
}

fn geometry_check(name: &str, block_size: u32, bytes: u64) -> Result<u64> {
    let blocks = bytes / u64::from(block_size);
    if blocks == 0 {
        return Err(Error::Geometry {
            device: name.into(),
            reason: format!(
                "size {bytes} bytes is smaller than one {block_size}-byte block; give a larger size"
            ),
        });
    }
    Ok(blocks)
}
