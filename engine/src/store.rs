//! A single-node store: file systems of files on N devices, written as
//! log-structured erasure-coded stripes through the write pipeline, with a
//! mirrored metadata journal, checkpoints and recovery.
//!
//! A `Store` lives on one reactor and owns a queue pair on every device.
//! Writes go through the file system's [`WritePipeline`] into its open
//! stripe; a sealed stripe is written whole (k data + m parity chunks on
//! k+m distinct devices, into chunk slots reserved when the stripe opened, so
//! a full device is a clean error before any data is accepted). [`Store::sync`]
//! seals open stripes, flushes the devices, then appends the pending
//! metadata records to the journal on every device and flushes again: only
//! then is anything acknowledged. Recovery loads the newest valid checkpoint
//! and replays the journal records after it in sequence order, stopping at
//! the first gap (a torn tail), then writes a fresh checkpoint.
//!
//! In an engine with several shards, a file system that reduces data keeps
//! its blocks in shared pools ([`Store::put_shared`]): each shard stores the
//! blocks whose fingerprints it owns, deduplicated against everything it
//! holds, and block maps on every shard refer to them by (owner, key). A
//! record referring to another shard's block is journaled only once that
//! shard has journaled the block's record (records wait in order behind it);
//! new shared blocks' records never wait, so no two shards can wait on each
//! other, and a quarter of the journal is kept for them.
//!
//! Reads verify the checksum of every 4 KiB sector they touch. A sector on a
//! failed device or with a bad checksum is rebuilt from the same sectors of
//! k other chunks and, when its device is healthy, rewritten in place.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flint_dataplane::bdev::{BlockDevice, Completion, IoCmd, QpairOptions, QueuePair};
use flint_dataplane::reactor::Core;
use flint_dataplane::{Error as DpError, IoError};

use crate::codec::Writer;
use crate::format::{self, FormatError, Layout, Superblock, CHECKPOINT_MAGIC, JOURNAL_MAGIC};
use crate::meta::{self, BlockRef, FsId, FsMeta, Ino, Meta, Record, Shared, StripeMeta, MAX_NAME};
use crate::pipeline::checksum::{Checksummer, Xxh3Sum, SEED_CHUNK};
use crate::pipeline::compress::{Compressor, Lz4Probe};
use crate::pipeline::ec::{best_kernel, Codec, EcError, Prepared};
use crate::pipeline::{
    BlockAddr, BlockReader, PipelineConfig, Placed, SealedStripe, Stages, WritePipeline, SECTOR,
};

/// Logical block size of files.
pub const BLOCK: usize = 4096;

/// Largest single device command the store issues.
const MAX_IO: usize = 1 << 20;

/// Store settings fixed at format time.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// Chunk size (multiple of 4 KiB).
    pub chunk_size: u32,
    /// Journal blocks per device.
    pub journal_blocks: u64,
    /// Blocks per checkpoint slot.
    pub checkpoint_blocks: u64,
    /// Shards: independent stores (one per reactor) that divide the
    /// journal, the checkpoint slots and the chunk slots among them.
    pub shards: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunk_size: 128 << 10,
            journal_blocks: 4096,
            checkpoint_blocks: 4096,
            shards: 1,
        }
    }
}

/// Store errors.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A device failed an I/O the store could not work around.
    Io {
        /// Device name.
        device: String,
        /// What was being done.
        op: &'static str,
        /// The error.
        error: IoError,
    },
    /// The dataplane refused (queue pair, memory).
    Dataplane(DpError),
    /// A device's on-disk structures are unusable.
    Format {
        /// Device name.
        device: String,
        /// What is wrong.
        error: FormatError,
    },
    /// A device already holds a Flint engine.
    AlreadyFormatted {
        /// Device name.
        device: String,
    },
    /// The devices do not form one engine.
    Mismatch {
        /// What does not match.
        reason: String,
    },
    /// No space left (devices full, file system at capacity, metadata area).
    NoSpace {
        /// What is full and what to do.
        what: String,
    },
    /// No such file system or file.
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The name is taken.
    Exists {
        /// The name.
        what: String,
    },
    /// A bad argument.
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// Data cannot be read: more chunks of its stripe are lost than parity
    /// can rebuild.
    Unrecoverable {
        /// The stripe.
        stripe: u64,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// The negated errno a C caller or a client sees for this error.
    pub fn errno(&self) -> i32 {
        -match self {
            StoreError::NoSpace { .. } => libc::ENOSPC,
            StoreError::NotFound { .. } => libc::ENOENT,
            StoreError::Exists { .. } | StoreError::AlreadyFormatted { .. } => libc::EEXIST,
            StoreError::Invalid { .. } | StoreError::Mismatch { .. } => libc::EINVAL,
            StoreError::Io { error, .. } => error.errno(),
            _ => libc::EIO,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { device, op, error } => write!(f, "device {device}: {op}: {error}"),
            StoreError::Dataplane(e) => write!(f, "{e}"),
            StoreError::Format { device, error } => write!(f, "device {device}: {error}"),
            StoreError::AlreadyFormatted { device } => write!(
                f,
                "device {device} already holds a Flint engine; pass force to overwrite it"
            ),
            StoreError::Mismatch { reason } => write!(f, "devices do not match: {reason}"),
            StoreError::NoSpace { what } => write!(f, "no space: {what}"),
            StoreError::NotFound { what } => write!(f, "not found: {what}"),
            StoreError::Exists { what } => write!(f, "already exists: {what}"),
            StoreError::Invalid { reason } => write!(f, "{reason}"),
            StoreError::Unrecoverable { stripe, reason } => {
                write!(f, "stripe {stripe} cannot be read: {reason}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<DpError> for StoreError {
    fn from(e: DpError) -> Self {
        StoreError::Dataplane(e)
    }
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a block lives: its address, the (device, slot) of each chunk of its
/// stripe, and the device layout.
pub type BlockLocation = (BlockAddr, Vec<(u16, u64)>, Layout);

/// A file's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: Ino,
    /// File system.
    pub fs: FsId,
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical blocks stored (holes excluded).
    pub blocks: u64,
}

/// Space and reduction figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpaceStats {
    /// Sum of file sizes.
    pub logical: u64,
    /// Chunk slots in use, in bytes (data and parity).
    pub physical: u64,
    /// Chunk slots in all, in bytes.
    pub capacity: u64,
    /// Logical blocks referenced / distinct stored blocks.
    pub dedup_ratio: f64,
    /// Uncompressed bytes of stored blocks / stored bytes.
    pub compression_ratio: f64,
    /// Logical blocks referenced by block maps (the dedup ratio's
    /// numerator, to sum over shards).
    pub block_refs: u64,
    /// Distinct stored blocks (its denominator).
    pub stored_blocks: u64,
    /// Bytes of those blocks once stored (compressed or not).
    pub stored_bytes: u64,
}

impl SpaceStats {
    /// Sums shards' figures, deriving the ratios from the summed counts.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a SpaceStats>) -> SpaceStats {
        let mut t = SpaceStats::default();
        for p in parts {
            t.logical += p.logical;
            t.physical += p.physical;
            t.capacity += p.capacity;
            t.block_refs += p.block_refs;
            t.stored_blocks += p.stored_blocks;
            t.stored_bytes += p.stored_bytes;
        }
        t.with_ratios()
    }

    fn with_ratios(mut self) -> SpaceStats {
        self.dedup_ratio = if self.stored_blocks == 0 {
            1.0
        } else {
            self.block_refs as f64 / self.stored_blocks as f64
        };
        self.compression_ratio = if self.stored_bytes == 0 {
            1.0
        } else {
            (self.stored_blocks * BLOCK as u64) as f64 / self.stored_bytes as f64
        };
        self
    }
}

/// One device as a shard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// Index in the engine.
    pub index: usize,
    /// Name.
    pub name: String,
    /// Opened (not missing).
    pub present: bool,
    /// Present and not failed.
    pub healthy: bool,
    /// I/O errors seen.
    pub errors: u64,
    /// Chunk-slot bytes (this shard's share).
    pub capacity: u64,
    /// Of which free.
    pub free: u64,
}

/// What a scrub found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Stripes checked.
    pub stripes: u64,
    /// Sectors found bad (checksum or unreadable) and rewritten in place.
    pub repaired_sectors: u64,
    /// Chunks rebuilt onto another device because theirs has failed.
    pub relocated_chunks: u64,
    /// Chunks on failed devices with no healthy device left to move them to.
    pub unprotected_chunks: u64,
    /// Stripes that could not be rebuilt.
    pub unrecoverable: u64,
}

/// What a garbage-collection step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Stripes emptied and freed.
    pub stripes: u64,
    /// Stored bytes moved to new stripes.
    pub moved_bytes: u64,
}

/// Counters of the store's repair work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Reads served by rebuilding from parity.
    pub degraded_reads: u64,
    /// Sectors rewritten after a bad checksum (self-heal).
    pub healed_sectors: u64,
}

/// What [`Store::place`] runs on the pipeline: returns the block's address
/// and indexed fingerprint (0 if none).
type PlaceOp<'a> = dyn FnMut(
        &mut WritePipeline,
        &mut dyn BlockReader,
        &mut dyn FnMut(SealedStripe<'_>),
    ) -> (BlockAddr, u128)
    + 'a;

/// (k, m, chunks read, chunk rebuilt): one loss pattern's decoder.
type DecoderKey = (u8, u8, Vec<usize>, usize);

/// One reference to a stored block: (file, logical block, where).
type BlockUse = (Holder, BlockRef);

/// What refers to a stored block: a file's logical block, or a key of the
/// shard's shared pool.
#[derive(Debug, Clone, Copy)]
enum Holder {
    File(Ino, u64),
    Shared(u128),
}

struct Dev {
    name: String,
    qp: Box<dyn QueuePair>,
    failed: bool,
    errors: u64,
}

/// A 4 KiB-aligned buffer for device I/O.
struct Scratch(AlignedBytes);

impl Scratch {
    fn new(len: usize) -> Result<Self> {
        AlignedBytes::new(len)
            .map(Scratch)
            .ok_or_else(|| StoreError::NoSpace {
                what: format!("cannot allocate a {len}-byte I/O buffer"),
            })
    }
}

/// Zeroed heap memory aligned to 4 KiB (what `O_DIRECT` needs).
struct AlignedBytes {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl AlignedBytes {
    fn layout(len: usize) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(len.max(4096).next_multiple_of(4096), 4096).ok()
    }

    fn new(len: usize) -> Option<Self> {
        let layout = Self::layout(len)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        Some(AlignedBytes {
            ptr: std::ptr::NonNull::new(ptr)?,
            len: layout.size(),
        })
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` zero-initialised bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.len) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Per file system write state.
struct FsWriter {
    pipeline: WritePipeline,
    /// Chunk slots reserved for the open stripe.
    reserved: Option<Vec<(u16, u64)>>,
    /// Slots reserved for the stripe after it, taken before a block that
    /// could seal the open one goes in.
    next: Option<Vec<(u16, u64)>>,
}

/// How many shared-block records every shard of an engine has journaled
/// this session, shared by the engine's stores: a record that refers to
/// another shard's shared block waits until that shard has journaled the
/// record that put the block there.
#[derive(Debug)]
pub struct Journaled(Vec<AtomicU64>);

impl Journaled {
    /// A table for `shards` shards, all at zero.
    pub fn new(shards: u32) -> Arc<Journaled> {
        Arc::new(Journaled((0..shards).map(|_| AtomicU64::new(0)).collect()))
    }

    /// Records shard `shard` has journaled.
    pub fn get(&self, shard: u32) -> u64 {
        self.0
            .get(shard as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn set(&self, shard: u32, n: u64) {
        if let Some(a) = self.0.get(shard as usize) {
            a.store(n, Ordering::Release);
        }
    }
}

/// A block a shard's read left to another shard's shared pool: the caller
/// fetches it from `owner` ([`Store::read_shared`]) and copies `len` bytes
/// from `skip` into its output at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRead {
    /// Byte position in the read's output.
    pub at: usize,
    /// Offset within the 4 KiB block.
    pub skip: usize,
    /// Bytes.
    pub len: usize,
    /// The shard whose pool holds the block.
    pub owner: u32,
    /// File system.
    pub fs: FsId,
    /// Its key there.
    pub key: u128,
}

/// A reference to another shard's shared block that a record dropped: the
/// owner is told once the record is durable.
pub type SharedDrop = (u32, FsId, u128);

/// A single-node store on one reactor.
pub struct Store {
    devs: Vec<Option<Dev>>,
    layout: Layout,
    uuid: u128,
    meta: Meta,
    writers: HashMap<FsId, FsWriter>,
    /// Changes not yet in the journal, oldest first.
    pending: Vec<Record>,
    /// Stripe records of sealed stripes not yet journaled.
    pending_stripes: Vec<Record>,
    /// New shared blocks' records not yet journaled: like stripe records
    /// they never wait behind other records, so a shard's shared blocks
    /// always become durable at its next sync (no two shards can wait on
    /// each other).
    pending_puts: Vec<Record>,
    /// Shared-block records pushed / journaled this session.
    puts_pushed: u64,
    puts_journaled: u64,
    /// Unjournaled shared-block records by key: their numbers.
    put_at: HashMap<(FsId, u128), u64>,
    /// Keys whose removal record is queued but not journaled (record
    /// number): a new block never reuses one, since its record would be
    /// journaled ahead of the removal.
    dropping: HashMap<(FsId, u128), u64>,
    /// Free chunk slots per device.
    free: Vec<BTreeSet<u64>>,
    /// Slots to free once the records freeing them (by number) are
    /// durable: (record number, device, slot).
    freeing: Vec<(u64, u16, u64)>,
    /// Records pushed to `pending` this session (the newest one's number).
    pushed: u64,
    /// Records journaled this session.
    journaled: u64,
    /// Records that refer to another shard's shared blocks, oldest first:
    /// (record number, owner shard, owner's record that must be journaled
    /// first). Nothing from the first unmet one on is journaled yet.
    waits: VecDeque<(u64, u32, u64)>,
    /// References to other shards' shared blocks dropped by records, with
    /// the record's number: told to the owner once it is journaled.
    drops: Vec<(u64, SharedDrop)>,
    /// Dropped references whose records are durable, for the engine to
    /// deliver ([`Store::take_drops`]).
    ready_drops: Vec<SharedDrop>,
    /// References to each block of this shard's shared pool from every
    /// shard's block maps (kept in memory; recounted when the engine opens).
    shared_refs: HashMap<(FsId, u128), u64>,
    /// Every shard's journal progress (set by the engine).
    peers: Option<Arc<Journaled>>,
    /// References to blocks in each stripe.
    refs: HashMap<u64, u64>,
    seq: u64,
    head: u64,
    ckpt_slot: u64,
    /// Bytes of the last checkpoint's payload plus the journal entries
    /// since: a bound on what the next checkpoint must hold.
    meta_bytes: u64,
    repairs: RepairStats,
    /// The superblock the engine was opened by (a replacement device gets
    /// the same, with its own index and uuid).
    sb: Superblock,
    /// A replacement device being rebuilt into a missing slot, not yet a
    /// member: (slot, device).
    joining: Option<(usize, Dev)>,
    /// Reused buffer for chunk reads.
    rbuf: Option<Scratch>,
    /// Reused buffer for the surviving chunks of a rebuild.
    dbuf: Option<Scratch>,
    /// Reused buffer for compressed blocks.
    cbuf: Vec<u8>,
    /// Reused aligned buffer a sealed stripe is written from.
    wbuf: Option<Scratch>,
    /// Erasure codecs by (k, m), for rebuilds.
    codecs: HashMap<(u8, u8), Codec>,
    /// Prepared decoders by (k, m, present chunks, wanted chunk).
    decoders: HashMap<DecoderKey, Box<dyn Prepared>>,
}

fn io_err(device: &str, op: &'static str) -> impl FnOnce(IoError) -> StoreError {
    let device = device.to_string();
    move |error| StoreError::Io { device, op, error }
}

/// Runs commands on several queue pairs and waits for all of them.
/// `cmds` are (device index, command); results come back in the same order.
fn run_io(devs: &mut [Option<Dev>], cmds: &[(usize, IoCmd)]) -> Vec<Result<u32, IoError>> {
    let mut results: Vec<Option<Result<u32, IoError>>> = vec![None; cmds.len()];
    let mut waiting = 0;
    for (i, (d, cmd)) in cmds.iter().enumerate() {
        let mut cmd = *cmd;
        cmd.tag = i as u64;
        match devs.get_mut(*d).and_then(|x| x.as_mut()) {
            Some(dev) if !dev.failed => {
                // SAFETY: every buffer named by `cmds` is owned by the caller
                // and outlives this function, which returns only after every
                // submitted command has completed.
                match unsafe { dev.qp.submit(&cmd) } {
                    Ok(()) => waiting += 1,
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            _ => {
                results[i] = Some(Err(IoError::Device {
                    errno: libc::ENODEV,
                }))
            }
        }
    }
    for dev in devs.iter_mut().flatten() {
        dev.qp.flush();
    }
    let mut out = [Completion::EMPTY; 32];
    while waiting > 0 {
        let mut got = 0;
        for dev in devs.iter_mut().flatten() {
            let n = dev.qp.poll(&mut out);
            for c in &out[..n] {
                if let Some(slot) = results.get_mut(c.tag as usize) {
                    *slot = Some(c.result);
                    waiting -= 1;
                }
            }
            got += n;
        }
        if got == 0 {
            std::hint::spin_loop();
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(IoError::Device { errno: libc::EIO })))
        .collect()
}

/// A journal entry's payload: a record count, then the records (the
/// layout [`meta::decode_batch`] reads).
fn batch_payload(count: u32, records: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(count);
    w.buf.extend_from_slice(records);
    w.buf
}

/// Copies a sealed stripe's chunks, contiguous, into `buf`.
fn copy_chunks(s: &SealedStripe<'_>, buf: &mut Scratch) {
    let mut at = 0;
    for c in &s.chunks {
        buf.0.as_mut_slice()[at..at + c.len()].copy_from_slice(c);
        at += c.len();
    }
}

/// Runs one command on one queue pair and waits for it.
fn run_one(dev: &mut Dev, cmd: IoCmd) -> Result<u32, IoError> {
    // SAFETY: the caller's buffer outlives this call, which returns only
    // after the command's completion has been reaped.
    unsafe { dev.qp.submit(&cmd)? };
    dev.qp.flush();
    let mut out = [Completion::EMPTY; 8];
    loop {
        let n = dev.qp.poll(&mut out);
        if let Some(c) = out[..n].iter().find(|c| c.tag == cmd.tag) {
            return c.result;
        }
        if n == 0 {
            std::hint::spin_loop();
        }
    }
}

impl Store {
    /// Formats `devices` as one engine. Refuses devices that already carry
    /// a Flint superblock unless `force`.
    pub fn format(
        core: &mut Core,
        devices: &[Arc<dyn BlockDevice>],
        cfg: StoreConfig,
        force: bool,
    ) -> Result<()> {
        if devices.is_empty() || devices.len() > u16::MAX as usize {
            return Err(StoreError::Invalid {
                reason: "an engine needs between 1 and 65535 devices".into(),
            });
        }
        let uuid = new_uuid();
        let mut devs = open_qpairs(core, devices)?;
        let scratch = Scratch::new(4096)?;
        for (i, d) in devices.iter().enumerate() {
            let g = d.geometry();
            if g.block_size != 4096 {
                return Err(StoreError::Invalid {
                    reason: format!("device {}: block size must be 4096", d.name()),
                });
            }
            let r = run_io(&mut devs, &[(i, IoCmd::read(0, 1, scratch.0.as_ptr(), 0))]);
            r[0].map_err(io_err(d.name(), "read superblock"))?;
            if !force && Superblock::decode(&scratch.0.as_slice()[..4096]).is_ok() {
                return Err(StoreError::AlreadyFormatted {
                    device: d.name().into(),
                });
            }
            Layout::new(
                g.blocks,
                4096,
                cfg.chunk_size,
                cfg.journal_blocks,
                cfg.checkpoint_blocks,
                cfg.shards,
            )
            .map_err(|error| StoreError::Format {
                device: d.name().into(),
                error,
            })?;
        }
        // An empty checkpoint at sequence 0 in slot A, and zeroed slot B and
        // journal head, so stale records of an earlier format never replay.
        let empty = format::encode_record(CHECKPOINT_MAGIC, 0, &Meta::default().encode(), 4096);
        let mut zero = Scratch::new(4096)?;
        zero.0.as_mut_slice().fill(0);
        for (i, d) in devices.iter().enumerate() {
            let g = d.geometry();
            let sb = Superblock {
                engine_uuid: uuid,
                device_uuid: new_uuid(),
                device_index: i as u32,
                device_count: devices.len() as u32,
                block_size: 4096,
                chunk_size: cfg.chunk_size,
                blocks: g.blocks,
                journal_blocks: cfg.journal_blocks,
                checkpoint_blocks: cfg.checkpoint_blocks,
                shards: cfg.shards,
            };
            let layout = sb.layout().map_err(|error| StoreError::Format {
                device: d.name().into(),
                error,
            })?;
            let mut ck = Scratch::new(empty.len())?;
            ck.0.as_mut_slice()[..empty.len()].copy_from_slice(&empty);
            let sbb = sb.encode();
            let mut sbuf = Scratch::new(4096)?;
            sbuf.0.as_mut_slice()[..4096].copy_from_slice(&sbb);
            // Every shard: an empty checkpoint in slot A, slot B and the
            // journal head zeroed.
            let mut cmds = Vec::new();
            for shard in 0..cfg.shards {
                let l = layout.for_shard(shard);
                let blocks = (empty.len() / 4096) as u32;
                cmds.push((
                    i,
                    IoCmd::write(l.checkpoint_lba(0), blocks, ck.0.as_ptr(), 0),
                ));
                cmds.push((i, IoCmd::write(l.checkpoint_lba(1), 1, zero.0.as_ptr(), 0)));
                cmds.push((i, IoCmd::write(l.journal_start, 1, zero.0.as_ptr(), 0)));
            }
            cmds.push((i, IoCmd::flush(0)));
            for r in run_io(&mut devs, &cmds) {
                r.map_err(io_err(d.name(), "write metadata"))?;
            }
            // The superblock goes last: a device is an engine member only
            // once everything it points to is in place.
            let r = run_io(
                &mut devs,
                &[
                    (i, IoCmd::write(0, 1, sbuf.0.as_ptr(), 0)),
                    (i, IoCmd::flush(0)),
                ],
            );
            for x in r {
                x.map_err(io_err(d.name(), "write superblock"))?;
            }
        }
        Ok(())
    }

    /// Opens the engine on `devices` (in any order; `None` = missing) and
    /// recovers its state. Missing or unreadable devices are run degraded.
    pub fn open(core: &mut Core, devices: &[Option<Arc<dyn BlockDevice>>]) -> Result<Store> {
        Self::open_shard(core, devices, 0)
    }

    /// Opens shard `shard` of the engine on `devices` and recovers it. Each
    /// shard is an independent store over its own slice of the journal, the
    /// checkpoint slots and the chunk slots; it lives on one reactor.
    pub fn open_shard(
        core: &mut Core,
        devices: &[Option<Arc<dyn BlockDevice>>],
        shard: u32,
    ) -> Result<Store> {
        let mut found: Vec<(Superblock, Arc<dyn BlockDevice>)> = Vec::new();
        let mut blank: Vec<String> = Vec::new();
        for d in devices.iter().flatten() {
            match Self::probe(core, d) {
                Ok(Some(sb)) => found.push((sb, d.clone())),
                // A blank device (a replacement, or never formatted): the
                // engine runs without it if the others form one.
                Ok(None) => blank.push(d.name().to_string()),
                Err(StoreError::Io { error, .. }) => {
                    tracing::warn!(device = d.name(), error = %error, "device unreadable; running without it");
                }
                Err(e) => return Err(e),
            }
        }
        if !found.is_empty() {
            for name in &blank {
                tracing::warn!(device = %name, "device holds no Flint superblock; running without it (degraded)");
            }
        } else if let Some(name) = blank.first() {
            return Err(StoreError::Format {
                device: name.clone(),
                error: FormatError::NotFlint,
            });
        }
        let Some((first, _)) = found.first().cloned() else {
            return Err(StoreError::Mismatch {
                reason: "no device with a Flint superblock; format the devices first".into(),
            });
        };
        let count = first.device_count as usize;
        let mut slots: Vec<Option<Arc<dyn BlockDevice>>> = vec![None; count];
        for (sb, d) in &found {
            if sb.engine_uuid != first.engine_uuid
                || sb.device_count != first.device_count
                || sb.chunk_size != first.chunk_size
                || sb.journal_blocks != first.journal_blocks
                || sb.checkpoint_blocks != first.checkpoint_blocks
                || sb.blocks != first.blocks
                || sb.shards != first.shards
            {
                return Err(StoreError::Mismatch {
                    reason: format!("device {} belongs to another engine or geometry", d.name()),
                });
            }
            if slots[sb.device_index as usize].replace(d.clone()).is_some() {
                return Err(StoreError::Mismatch {
                    reason: format!("two devices claim index {}", sb.device_index),
                });
            }
        }
        if shard >= first.shards {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shard {shard} does not exist; the engine was formatted with {} shards",
                    first.shards
                ),
            });
        }
        let layout = first
            .layout()
            .map_err(|error| StoreError::Format {
                device: "superblock".into(),
                error,
            })?
            .for_shard(shard);
        let mut devs: Vec<Option<Dev>> = Vec::with_capacity(count);
        for (i, d) in slots.iter().enumerate() {
            match d {
                Some(d) => devs.push(Some(Dev {
                    name: d.name().to_string(),
                    qp: d.queue_pair(core, &QpairOptions { depth: 64 })?,
                    failed: false,
                    errors: 0,
                })),
                None => {
                    tracing::warn!(index = i, "engine device missing; running degraded");
                    devs.push(None);
                }
            }
        }
        let mut store = Store {
            devs,
            layout,
            uuid: first.engine_uuid,
            meta: Meta::default(),
            writers: HashMap::new(),
            pending: Vec::new(),
            pending_stripes: Vec::new(),
            pending_puts: Vec::new(),
            puts_pushed: 0,
            puts_journaled: 0,
            put_at: HashMap::new(),
            dropping: HashMap::new(),
            free: Vec::new(),
            freeing: Vec::new(),
            pushed: 0,
            journaled: 0,
            waits: VecDeque::new(),
            drops: Vec::new(),
            ready_drops: Vec::new(),
            shared_refs: HashMap::new(),
            peers: None,
            refs: HashMap::new(),
            seq: 0,
            head: 0,
            ckpt_slot: 0,
            meta_bytes: 0,
            rbuf: None,
            dbuf: None,
            cbuf: Vec::new(),
            wbuf: None,
            codecs: HashMap::new(),
            decoders: HashMap::new(),
            repairs: RepairStats::default(),
            sb: first.clone(),
            joining: None,
        };
        store.recover()?;
        Ok(store)
    }

    fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| !d.failed))
            .map(|(i, _)| i)
    }

    /// Reads `blocks` blocks at `lba` from every healthy device.
    fn read_all(&mut self, lba: u64, blocks: u64) -> Result<Vec<(usize, Scratch)>> {
        let ids: Vec<usize> = self.healthy().collect();
        let mut bufs = Vec::new();
        for _ in &ids {
            bufs.push(Scratch::new(blocks as usize * 4096)?);
        }
        let mut cmds = Vec::new();
        for (i, &d) in ids.iter().enumerate() {
            let max = self.layout.block_size as u64;
            let per = (1u64 << 20) / max;
            let mut off = 0;
            while off < blocks {
                let n = per.min(blocks - off);
                // SAFETY: `off + n <= blocks` so the pointer stays inside.
                let p = unsafe { bufs[i].0.as_ptr().add((off * max) as usize) };
                cmds.push((d, IoCmd::read(lba + off, n as u32, p, 0)));
                off += n;
            }
        }
        let results = run_io(&mut self.devs, &cmds);
        let mut bad = BTreeSet::new();
        for ((d, _), r) in cmds.iter().zip(&results) {
            if r.is_err() {
                bad.insert(*d);
            }
        }
        for &d in &bad {
            self.mark_failed(d, "metadata read");
        }
        Ok(ids
            .into_iter()
            .zip(bufs)
            .filter(|(d, _)| !bad.contains(d))
            .collect())
    }

    fn mark_failed(&mut self, d: usize, what: &str) {
        if let Some(dev) = self.devs.get_mut(d).and_then(|x| x.as_mut()) {
            dev.errors += 1;
            if !dev.failed {
                tracing::error!(device = %dev.name, op = what, "device failed; running degraded");
                dev.failed = true;
            }
        }
    }

    fn recover(&mut self) -> Result<()> {
        let bs = self.layout.block_size as usize;
        // Newest valid checkpoint on any device.
        let mut best: Option<(u64, u64, Meta)> = None;
        for which in 0..2 {
            let lba = self.layout.checkpoint_lba(which);
            for (_, buf) in self.read_all(lba, self.layout.checkpoint_blocks)? {
                if let Ok((seq, payload)) =
                    format::decode_record(CHECKPOINT_MAGIC, buf.0.as_slice())
                {
                    if best.as_ref().is_none_or(|b| seq > b.0) {
                        if let Ok(m) = Meta::decode(payload) {
                            best = Some((seq, which, m));
                        }
                    }
                }
            }
        }
        let Some((ck_seq, ck_slot, meta)) = best else {
            return Err(StoreError::Format {
                device: "every device".into(),
                error: FormatError::Damaged {
                    what: "metadata checkpoint",
                },
            });
        };
        // Journal records after it, from every device.
        let mut records: HashMap<u64, Vec<Record>> = HashMap::new();
        for (_, buf) in self.read_all(self.layout.journal_start, self.layout.journal_blocks)? {
            let bytes = buf.0.as_slice();
            let mut b = 0usize;
            let end = self.layout.journal_blocks as usize;
            while b < end {
                let at = &bytes[b * bs..end * bs];
                match format::decode_record(JOURNAL_MAGIC, at) {
                    Ok((seq, payload)) => {
                        if seq > ck_seq && !records.contains_key(&seq) {
                            if let Ok(batch) = meta::decode_batch(payload) {
                                records.insert(seq, batch);
                            }
                        }
                        b += format::record_blocks(payload.len(), bs) as usize;
                    }
                    Err(_) => b += 1,
                }
            }
        }
        self.meta = meta;
        let mut seq = ck_seq;
        while let Some(batch) = records.remove(&(seq + 1)) {
            for r in &batch {
                self.meta.apply(r);
            }
            seq += 1;
        }
        if !records.is_empty() {
            tracing::info!(
                ignored = records.len(),
                "journal records after a gap ignored (torn tail)"
            );
        }
        self.seq = seq;
        self.ckpt_slot = ck_slot;
        self.rebuild_derived()?;
        // Start from a clean journal; the checkpoint includes any stripes
        // rebuild_derived found dead, so their slots are free at once.
        self.checkpoint()?;
        self.pending.clear();
        for (_, d, slot) in std::mem::take(&mut self.freeing) {
            self.free[usize::from(d)].insert(slot);
        }
        self.pushed = 0;
        self.journaled = 0;
        self.pending_puts.clear();
        self.puts_pushed = 0;
        self.puts_journaled = 0;
        Ok(())
    }

    /// Rebuilds free slots, stripe reference counts, and per file system
    /// writers with their dedup indexes, from the metadata.
    fn rebuild_derived(&mut self) -> Result<()> {
        let n = self.devs.len();
        let layout = self.layout;
        self.free = (0..n)
            .map(|_| (0..layout.slots).filter(|s| layout.owns(*s)).collect())
            .collect();
        for s in self.meta.stripes.values() {
            for &(d, slot) in &s.chunks {
                if let Some(f) = self.free.get_mut(usize::from(d)) {
                    f.remove(&slot);
                }
            }
        }
        self.refs.clear();
        self.writers.clear();
        let fss: Vec<FsMeta> = self.meta.fss.values().cloned().collect();
        for fs in &fss {
            self.writer(fs.id)?;
        }
        // Every stored block this shard holds: the blocks of its files'
        // maps (not references to other shards' pools) and its shared pool.
        let mut held: Vec<(FsId, Vec<BlockRef>)> = self
            .meta
            .inodes
            .values()
            .map(|i| {
                let local = i.blocks.values().filter(|b| b.owner().is_none());
                (i.fs, local.copied().collect())
            })
            .collect();
        for (&(fs, _), b) in &self.meta.shared {
            held.push((fs, vec![b.as_ref()]));
        }
        for (fs, blocks) in held {
            for b in blocks {
                *self.refs.entry(b.addr.stripe).or_default() += 1;
                if b.fp != 0 {
                    if let Some(w) = self.writers.get_mut(&fs) {
                        let idx = w.pipeline.index_mut();
                        match idx.get(fs, b.fp) {
                            Some(e) if e.location == b.addr => {
                                idx.add_ref(fs, b.fp);
                            }
                            Some(_) => {}
                            None => {
                                idx.insert(fs, b.fp, b.addr);
                            }
                        }
                    }
                }
            }
        }
        // Stripes nothing refers to (their last block died just before a
        // crash, or a sync never finished) are freed now.
        let dead: Vec<u64> = self
            .meta
            .stripes
            .keys()
            .filter(|id| !self.refs.contains_key(id))
            .copied()
            .collect();
        for id in dead {
            self.free_stripe(id);
        }
        Ok(())
    }

    fn writer(&mut self, fs: FsId) -> Result<&mut FsWriter> {
        if !self.writers.contains_key(&fs) {
            let f = self.meta.fss.get(&fs).ok_or_else(|| StoreError::NotFound {
                what: format!("file system {fs}"),
            })?;
            let cfg = PipelineConfig {
                k: usize::from(f.k),
                m: usize::from(f.m),
                chunk_size: self.layout.chunk_blocks as usize * 4096,
                block_size: BLOCK,
                reduction: f.reduction,
            };
            // Stripe ids are unique per shard and file system: shard s,
            // file system f use (s << 56 | f << 40) .. + 2^40.
            let base = (u64::from(self.layout.shard) << 56) | (u64::from(fs) << 40);
            let next = self
                .meta
                .stripes
                .range(base..base + (1 << 40))
                .next_back()
                .map_or(base, |(id, _)| id + 1);
            let pipeline =
                WritePipeline::new(cfg, Stages::fast(), next).map_err(|e| StoreError::Invalid {
                    reason: e.to_string(),
                })?;
            self.writers.insert(
                fs,
                FsWriter {
                    pipeline,
                    reserved: None,
                    next: None,
                },
            );
        }
        Ok(self.writers.get_mut(&fs).expect("inserted above"))
    }

    /// Reserves chunk slots for a stripe of width `w`: on the healthy
    /// devices with the most free slots, then on failed ones if it must.
    fn reserve(&mut self, w: usize) -> Result<Vec<(u16, u64)>> {
        let mut cands: Vec<(usize, usize, bool)> = self
            .devs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let healthy = d.as_ref().is_some_and(|d| !d.failed);
                (i, self.free[i].len(), healthy)
            })
            .filter(|&(_, free, _)| free > 0)
            .collect();
        cands.sort_by_key(|&(i, free, healthy)| (!healthy, std::cmp::Reverse(free), i));
        let healthy = cands.iter().filter(|c| c.2).count();
        if cands.len() < w {
            return Err(StoreError::NoSpace {
                what: format!(
                    "devices are full (a stripe needs free space on {w} devices); \
                     delete files to free space"
                ),
            });
        }
        if healthy == 0 {
            return Err(StoreError::Io {
                device: "all".into(),
                op: "reserve stripe",
                error: IoError::Device { errno: libc::EIO },
            });
        }
        let mut out = Vec::with_capacity(w);
        for &(d, _, _) in cands.iter().take(w) {
            let slot = *self.free[d].iter().next().expect("device has a free slot");
            self.free[d].remove(&slot);
            out.push((d as u16, slot));
        }
        Ok(out)
    }

    fn free_stripe(&mut self, id: u64) {
        let chunks = self
            .meta
            .stripes
            .get(&id)
            .map(|s| s.chunks.clone())
            .unwrap_or_default();
        let rec = Record::StripeFree { id };
        self.meta.apply(&rec);
        let n = self.push(rec);
        self.freeing
            .extend(chunks.into_iter().map(|(d, slot)| (n, d, slot)));
        self.refs.remove(&id);
    }

    /// Queues an applied record for the journal; returns its number.
    fn push(&mut self, rec: Record) -> u64 {
        self.pending.push(rec);
        self.pushed += 1;
        self.pushed
    }

    /// Drops references released by a metadata change (record `n`).
    fn release(&mut self, n: u64, released: meta::Released) {
        for (fs, b) in released {
            if let Some(owner) = b.owner() {
                if owner == self.layout.shard {
                    // Journaled after the record that dropped it, so a
                    // crash between the two only leaks (the open recounts).
                    self.unref_shared(fs, b.fp);
                } else {
                    self.drops.push((n, (owner, fs, b.fp)));
                }
                continue;
            }
            if b.fp != 0 {
                if let Some(w) = self.writers.get_mut(&fs) {
                    let idx = w.pipeline.index_mut();
                    if idx.get(fs, b.fp).is_some_and(|e| e.location == b.addr) {
                        idx.drop_ref(fs, b.fp);
                    }
                }
            }
            if let Some(r) = self.refs.get_mut(&b.addr.stripe) {
                *r -= 1;
                if *r == 0 {
                    self.refs.remove(&b.addr.stripe);
                    let open = self
                        .writers
                        .get(&fs)
                        .is_some_and(|w| w.pipeline.open_stripe() == b.addr.stripe);
                    if !open && self.meta.stripes.contains_key(&b.addr.stripe) {
                        self.free_stripe(b.addr.stripe);
                    }
                }
            }
        }
    }

    fn record(&mut self, rec: Record) -> u64 {
        let released = self.meta.apply(&rec);
        let n = self.push(rec);
        self.release(n, released);
        n
    }

    // ---- file systems -------------------------------------------------

    /// Creates a file system with protection k+m.
    pub fn fs_create(
        &mut self,
        name: &str,
        k: u8,
        m: u8,
        reduction: bool,
        capacity: u64,
    ) -> Result<FsId> {
        check_name(name)?;
        let n = self.devs.len();
        if k == 0 || m == 0 || usize::from(k) + usize::from(m) > n {
            return Err(StoreError::Invalid {
                reason: format!(
                    "protection {k}+{m} needs k >= 1, m >= 1 and k + m <= {n} (the devices of this node)"
                ),
            });
        }
        if self.meta.fss.values().any(|f| f.name == name) {
            return Err(StoreError::Exists {
                what: format!("file system {name}"),
            });
        }
        let id = self.meta.next_fs;
        self.record(Record::FsCreate(FsMeta {
            id,
            name: name.into(),
            k,
            m,
            reduction,
            capacity,
        }));
        self.writer(id)?;
        Ok(id)
    }

    /// Creates a file system with a given id (every shard of an engine
    /// holds the same file systems under the same ids).
    pub fn fs_create_as(
        &mut self,
        id: FsId,
        name: &str,
        k: u8,
        m: u8,
        reduction: bool,
        capacity: u64,
    ) -> Result<FsId> {
        if self.meta.fss.contains_key(&id) {
            return Err(StoreError::Exists {
                what: format!("file system {id}"),
            });
        }
        if self.meta.next_fs > id {
            return Err(StoreError::Invalid {
                reason: format!("file system id {id} is behind this shard's next id"),
            });
        }
        self.meta.next_fs = id;
        self.fs_create(name, k, m, reduction, capacity)
    }

    /// The next free file system id.
    pub fn next_fs_id(&self) -> FsId {
        self.meta.next_fs
    }

    /// This store's shard.
    pub fn shard(&self) -> u32 {
        self.layout.shard
    }

    /// Shards the engine was formatted with.
    pub fn shards(&self) -> u32 {
        self.layout.shards
    }

    /// File systems.
    pub fn fs_list(&self) -> Vec<(FsMeta, u64)> {
        self.meta
            .fss
            .values()
            .map(|f| (f.clone(), self.meta.fs_used(f.id)))
            .collect()
    }

    /// Changes a file system's capacity.
    pub fn fs_resize(&mut self, fs: FsId, capacity: u64) -> Result<()> {
        self.fs(fs)?;
        self.record(Record::FsResize { fs, capacity });
        Ok(())
    }

    fn fs(&self, fs: FsId) -> Result<&FsMeta> {
        self.meta.fss.get(&fs).ok_or_else(|| StoreError::NotFound {
            what: format!("file system {fs}"),
        })
    }

    /// A file system by name.
    pub fn fs_by_name(&self, name: &str) -> Option<FsId> {
        self.meta
            .fss
            .values()
            .find(|f| f.name == name)
            .map(|f| f.id)
    }

    /// Deletes a file system with every file (and part of one) it has on
    /// this shard.
    pub fn fs_delete(&mut self, fs: FsId) -> Result<()> {
        self.fs(fs)?;
        let inos: Vec<Ino> = self
            .meta
            .inodes
            .values()
            .filter(|i| i.fs == fs)
            .map(|i| i.ino)
            .collect();
        for ino in inos {
            self.record(Record::FileUnlink { ino });
        }
        if let Some(w) = self.writers.remove(&fs) {
            for (d, slot) in w.reserved.into_iter().chain(w.next).flatten() {
                self.free[usize::from(d)].insert(slot);
            }
        }
        self.record(Record::FsDelete { fs });
        Ok(())
    }

    /// Creates an organization with a fresh random key (shard 0 keeps
    /// them).
    pub fn org_create(&mut self, name: &str) -> Result<meta::Org> {
        check_name(name)?;
        if self.meta.orgs.values().any(|o| o.name == name) {
            return Err(StoreError::Exists {
                what: format!("organization {name}"),
            });
        }
        let org = meta::Org {
            id: self.meta.orgs.keys().next_back().map_or(1, |k| k + 1),
            name: name.to_string(),
            key: crate::net::auth::random(),
        };
        self.record(Record::OrgCreate(org.clone()));
        Ok(org)
    }

    /// Organizations.
    pub fn orgs(&self) -> Vec<meta::Org> {
        self.meta.orgs.values().cloned().collect()
    }

    /// Gives a file system to an organization.
    pub fn fs_set_owner(&mut self, fs: FsId, org: meta::OrgId) -> Result<()> {
        self.fs(fs)?;
        if !self.meta.orgs.contains_key(&org) {
            return Err(StoreError::NotFound {
                what: format!("organization {org}"),
            });
        }
        self.record(Record::FsOwner { fs, org });
        Ok(())
    }

    /// The organization owning a file system, if any.
    pub fn fs_owner(&self, fs: FsId) -> Option<meta::OrgId> {
        self.meta.fs_owner.get(&fs).copied()
    }

    // ---- files --------------------------------------------------------

    /// Creates an empty file.
    pub fn create(&mut self, fs: FsId, name: &str) -> Result<Ino> {
        check_name(name)?;
        self.fs(fs)?;
        if self.lookup(fs, name).is_some() {
            return Err(StoreError::Exists {
                what: format!("file {name}"),
            });
        }
        // Inode numbers carry their shard in the low byte, so any core can
        // route a request for a file to its owner.
        let ino = (((self.meta.next_ino >> 8) + 1) << 8) | u64::from(self.layout.shard);
        self.record(Record::FileCreate {
            ino,
            fs,
            name: name.into(),
        });
        Ok(ino)
    }

    /// A file by name.
    pub fn lookup(&self, fs: FsId, name: &str) -> Option<Ino> {
        self.meta
            .inodes
            .values()
            .find(|i| i.fs == fs && i.name == name)
            .map(|i| i.ino)
    }

    /// The files of a file system.
    pub fn list(&self, fs: FsId) -> Vec<Stat> {
        self.meta
            .inodes
            .values()
            .filter(|i| i.fs == fs && !i.is_part())
            .map(|i| self.stat_of(i))
            .collect()
    }

    fn stat_of(&self, i: &meta::Inode) -> Stat {
        Stat {
            ino: i.ino,
            fs: i.fs,
            name: i.name.clone(),
            size: i.size,
            blocks: i.blocks.len() as u64,
        }
    }

    /// A file's attributes.
    pub fn stat(&self, ino: Ino) -> Result<Stat> {
        self.meta
            .inodes
            .get(&ino)
            .map(|i| self.stat_of(i))
            .ok_or_else(|| not_found(ino))
    }

    /// Removes a file.
    pub fn unlink(&mut self, ino: Ino) -> Result<()> {
        self.stat(ino)?;
        self.record(Record::FileUnlink { ino });
        Ok(())
    }

    /// Sets a file's size (dropping blocks past it, or leaving a hole).
    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<()> {
        let st = self.stat(ino)?;
        if size > st.size {
            self.check_capacity(st.fs, size - st.size)?;
        }
        // The block straddling the new end keeps only bytes before it.
        if !size.is_multiple_of(BLOCK as u64) && size < st.size {
            let idx = size / BLOCK as u64;
            // (A shared block's tail is the engine's to rewrite.)
            let local = self.meta.inodes[&ino]
                .blocks
                .get(&idx)
                .is_some_and(|b| b.owner().is_none());
            if local {
                let mut block = vec![0u8; BLOCK];
                self.read_block_into(ino, idx, &mut block)?;
                block[(size % BLOCK as u64) as usize..].fill(0);
                let r = self.store_blocks(st.fs, &[(idx, &block[..])])?;
                self.record(Record::Extents {
                    ino,
                    size: st.size,
                    blocks: r,
                });
            }
        }
        self.record(Record::Truncate { ino, size });
        Ok(())
    }

    fn check_capacity(&self, fs: FsId, grow: u64) -> Result<()> {
        let f = self.fs(fs)?;
        let used = self.meta.fs_used(fs);
        if used + grow > f.capacity {
            return Err(StoreError::NoSpace {
                what: format!(
                    "file system {} is at its capacity of {} bytes ({} used); \
                     raise it or delete files",
                    f.name, f.capacity, used
                ),
            });
        }
        Ok(())
    }

    /// Runs blocks through the file system's pipeline; returns their refs.
    fn store_blocks(&mut self, fs: FsId, blocks: &[(u64, &[u8])]) -> Result<Vec<(u64, BlockRef)>> {
        let mut out = Vec::with_capacity(blocks.len());
        for &(idx, data) in blocks {
            let (addr, fp) = self.place(fs, &mut |p, reader, sink| {
                let addr = match p.write_block(fs, data, reader, sink) {
                    Placed::Dup(a) | Placed::New(a) => a,
                };
                (addr, p.last_fingerprint().unwrap_or(0))
            })?;
            *self.refs.entry(addr.stripe).or_default() += 1;
            out.push((idx, BlockRef { addr, fp }));
        }
        Ok(out)
    }

    /// The reused stripe write buffer, large enough for `width` chunks.
    fn stripe_buffer(&mut self, width: usize) -> Result<Scratch> {
        let len = width * self.layout.chunk_blocks as usize * 4096;
        match self.wbuf.take() {
            Some(b) if b.0.len >= len => Ok(b),
            _ => Scratch::new(len),
        }
    }

    /// Puts one block into a file system's open stripe with `op`: reserves
    /// space first (for the open stripe, and for the next one if this block
    /// could seal it, so a full device is an error before anything is
    /// accepted), and writes out a stripe the block sealed.
    fn place(&mut self, fs: FsId, op: &mut PlaceOp<'_>) -> Result<(BlockAddr, u128)> {
        let (k, m) = {
            let f = self.fs(fs)?;
            (usize::from(f.k), usize::from(f.m))
        };
        if self.writer(fs)?.reserved.is_none() {
            let slots = self.reserve(k + m)?;
            self.writer(fs)?.reserved = Some(slots);
        }
        let w = self.writer(fs)?;
        if w.next.is_none() && w.pipeline.may_seal_next() {
            let slots = self.reserve(k + m)?;
            self.writer(fs)?.next = Some(slots);
        }
        let mut w = self.writers.remove(&fs).expect("writer exists");
        let mut wbuf = self.stripe_buffer(k + m)?;
        let mut sealed: Option<(u64, Vec<u64>)> = None;
        let placed = {
            let mut reader = StoreReader { store: self, fs };
            op(&mut w.pipeline, &mut reader, &mut |s: SealedStripe<'_>| {
                copy_chunks(&s, &mut wbuf);
                sealed = Some((s.id, s.checksums.to_vec()));
            })
        };
        let mut res = Ok(placed);
        if let Some((id, sums)) = sealed {
            let slots = w.reserved.take();
            w.reserved = w.next.take();
            if let Err(e) = match slots {
                Some(slots) => self.write_stripe(fs, id, k, m, &wbuf, sums, slots),
                None => Err(StoreError::Invalid {
                    reason: format!("stripe {id} sealed without reserved space"),
                }),
            } {
                res = Err(e);
            }
        }
        self.wbuf = Some(wbuf);
        self.writers.insert(fs, w);
        res
    }

    /// Garbage collection: moves the live blocks out of up to `max_stripes`
    /// sealed stripes that are less than half live into the open stripe,
    /// and frees them. The moves become durable, and the freed slots
    /// reusable, at the next [`Store::sync`]. Runs in small steps so
    /// foreground I/O is never held up for long.
    pub fn gc(&mut self, max_stripes: usize) -> Result<GcReport> {
        let mut rep = GcReport::default();
        let cs = self.layout.chunk_blocks * 4096;
        // Live (distinct) stored bytes and references per sealed stripe.
        let mut live: HashMap<u64, (u64, Vec<BlockUse>)> = HashMap::new();
        let mut seen: std::collections::HashSet<BlockAddr> = std::collections::HashSet::new();
        for i in self.meta.inodes.values() {
            for (idx, b) in i.blocks.iter() {
                if !self.meta.stripes.contains_key(&b.addr.stripe) {
                    continue;
                }
                let e = live.entry(b.addr.stripe).or_default();
                if seen.insert(b.addr) {
                    e.0 += u64::from(b.addr.stored_len);
                }
                e.1.push((Holder::File(i.ino, idx), *b));
            }
        }
        for (&(_, key), sh) in &self.meta.shared {
            let b = sh.as_ref();
            let e = live.entry(b.addr.stripe).or_default();
            if seen.insert(b.addr) {
                e.0 += u64::from(b.addr.stored_len);
            }
            e.1.push((Holder::Shared(key), b));
        }
        let mut cands: Vec<(u64, u64)> = live
            .iter()
            .filter_map(|(&id, (bytes, _))| {
                let s = self.meta.stripes.get(&id)?;
                (*bytes * 2 < u64::from(s.k) * cs).then_some((*bytes, id))
            })
            .collect();
        cands.sort();
        for (_, id) in cands.into_iter().take(max_stripes) {
            let Some((_, refs)) = live.remove(&id) else {
                continue;
            };
            let fs = self.stripe(id)?.fs;
            let mut moved: HashMap<BlockAddr, BlockAddr> = HashMap::new();
            let mut stored = Vec::new();
            for &(_, b) in &refs {
                if moved.contains_key(&b.addr) {
                    continue;
                }
                stored.resize(b.addr.stored_len as usize, 0);
                self.read_stored(fs, &b.addr, &mut stored)?;
                let (new, _) = self.place(fs, &mut |p, _, sink| {
                    (p.relocate(&stored, b.addr.compressed, sink), 0)
                })?;
                if b.fp != 0 {
                    if let Some(w) = self.writers.get_mut(&fs) {
                        let idx = w.pipeline.index_mut();
                        if idx.get(fs, b.fp).is_some_and(|e| e.location == b.addr) {
                            idx.relocate(fs, b.fp, new);
                        }
                    }
                }
                moved.insert(b.addr, new);
                rep.moved_bytes += u64::from(b.addr.stored_len);
            }
            let mut by_ino: BTreeMap<Ino, Vec<(u64, BlockRef)>> = BTreeMap::new();
            let mut shared = Vec::new();
            for (holder, b) in refs {
                let addr = moved[&b.addr];
                *self.refs.entry(addr.stripe).or_default() += 1;
                match holder {
                    Holder::File(ino, idx) => by_ino
                        .entry(ino)
                        .or_default()
                        .push((idx, BlockRef { addr, fp: b.fp })),
                    Holder::Shared(key) => shared.push((key, Shared { addr, fp: b.fp })),
                }
            }
            for (ino, blocks) in by_ino {
                let size = self.meta.inodes.get(&ino).map_or(0, |i| i.size);
                self.record(Record::Extents { ino, size, blocks });
            }
            for (key, block) in shared {
                self.record(Record::SharedPut { fs, key, block });
            }
            rep.stripes += 1;
        }
        Ok(rep)
    }

    /// Writes a sealed stripe's chunks into its reserved slots.
    #[allow(clippy::too_many_arguments)]
    fn write_stripe(
        &mut self,
        fs: FsId,
        id: u64,
        k: usize,
        m: usize,
        buf: &Scratch,
        sums: Vec<u64>,
        slots: Vec<(u16, u64)>,
    ) -> Result<()> {
        let cs = self.layout.chunk_blocks as usize * 4096;
        let cmds: Vec<(usize, IoCmd)> = slots
            .iter()
            .enumerate()
            .map(|(i, &(d, slot))| {
                (
                    usize::from(d),
                    IoCmd::write(
                        self.layout.slot_lba(slot),
                        self.layout.chunk_blocks as u32,
                        buf.0.as_ptr().wrapping_add(i * cs),
                        0,
                    ),
                )
            })
            .collect();
        let results = run_io(&mut self.devs, &cmds);
        let mut ok = 0;
        for ((d, _), r) in cmds.iter().zip(results) {
            match r {
                Ok(_) => ok += 1,
                Err(e) => {
                    tracing::warn!(stripe = id, error = %e, "chunk write failed");
                    self.mark_failed(*d, "chunk write");
                }
            }
        }
        if ok < k {
            for &(d, slot) in &slots {
                self.free[usize::from(d)].insert(slot);
            }
            return Err(StoreError::Unrecoverable {
                stripe: id,
                reason: format!("only {ok} of {} chunks could be written", k + m),
            });
        }
        let rec = Record::Stripe(StripeMeta {
            id,
            fs,
            k: k as u8,
            m: m as u8,
            chunks: slots,
            sums,
        });
        self.meta.apply(&rec);
        self.meta.next_stripe = self.meta.next_stripe.max(id + 1);
        self.pending_stripes.push(rec);
        Ok(())
    }

    /// Writes `data` at `offset` of a file. Durable after [`Store::sync`].
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<()> {
        let st = self.stat(ino)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| StoreError::Invalid {
                reason: "offset + length overflows".into(),
            })?;
        if end > st.size && !self.meta.inodes[&ino].is_part() {
            self.check_capacity(st.fs, end - st.size)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.check_meta_room()?;
        let first = offset / BLOCK as u64;
        let last = (end - 1) / BLOCK as u64;
        let mut blocks: Vec<(u64, Vec<u8>)> = Vec::with_capacity((last - first + 1) as usize);
        for idx in first..=last {
            let bstart = idx * BLOCK as u64;
            let lo = offset.max(bstart);
            let hi = end.min(bstart + BLOCK as u64);
            let mut block = vec![0u8; BLOCK];
            if hi - lo < BLOCK as u64 {
                self.read_block_into(ino, idx, &mut block)?;
            }
            let src = (lo - offset) as usize..(hi - offset) as usize;
            block[(lo - bstart) as usize..(hi - bstart) as usize].copy_from_slice(&data[src]);
            blocks.push((idx, block));
        }
        let views: Vec<(u64, &[u8])> = blocks.iter().map(|(i, b)| (*i, &b[..])).collect();
        let refs = self.store_blocks(st.fs, &views)?;
        self.record(Record::Extents {
            ino,
            size: st.size.max(end),
            blocks: refs,
        });
        Ok(())
    }

    fn size_of(&self, ino: Ino) -> Result<u64> {
        Ok(self
            .meta
            .inodes
            .get(&ino)
            .ok_or_else(|| not_found(ino))?
            .size)
    }

    // ---- parts: this shard's ranges of files homed on other shards -----

    /// Writes a piece of file `ino` (homed on another shard, or here) that
    /// falls in one of this shard's ranges, creating the part on first use.
    /// Capacity is the home shard's to check ([`Store::check_extend`]).
    pub fn write_part(&mut self, ino: Ino, fs: FsId, offset: u64, data: &[u8]) -> Result<()> {
        if !self.meta.inodes.contains_key(&ino) {
            self.fs(fs)?;
            self.record(Record::FileCreate {
                ino,
                fs,
                name: String::new(),
            });
        }
        self.write(ino, offset, data)
    }

    /// Reads `len` bytes of a file's piece from this shard: zeros where it
    /// holds nothing.
    pub fn read_part(&mut self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len];
        if self.meta.inodes.contains_key(&ino) {
            self.read_into(ino, offset, &mut out)?;
        }
        Ok(out)
    }

    /// Reads a file's piece from this shard like [`Store::read_part`],
    /// leaving blocks in other shards' shared pools to the caller.
    pub fn read_part_mapped(
        &mut self,
        ino: Ino,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, Vec<RemoteRead>)> {
        let mut out = vec![0u8; len];
        let mut remote = Vec::new();
        if self.meta.inodes.contains_key(&ino) {
            self.read_mapped(ino, offset, &mut out, &mut remote)?;
        }
        Ok((out, remote))
    }

    /// Drops what this shard holds of a file past `size`.
    pub fn truncate_part(&mut self, ino: Ino, size: u64) -> Result<()> {
        match self.meta.inodes.get(&ino) {
            Some(i) if i.is_part() && i.size > size => self.truncate(ino, size),
            _ => Ok(()),
        }
    }

    /// Drops what this shard holds of a removed file.
    pub fn unlink_part(&mut self, ino: Ino) -> Result<()> {
        match self.meta.inodes.get(&ino) {
            Some(i) if i.is_part() => self.unlink(ino),
            _ => Ok(()),
        }
    }

    /// Sizes of the files whose home is this shard.
    pub fn home_sizes(&self) -> Vec<(Ino, u64)> {
        self.meta
            .inodes
            .values()
            .filter(|i| !i.is_part())
            .map(|i| (i.ino, i.size))
            .collect()
    }

    /// The parts [`Store::reconcile_parts`] will cut inside a shared block:
    /// (file, size) whose block's tail the engine must zero first (this
    /// shard cannot rewrite another shard's block).
    pub fn shared_tails(&self, homes: &HashMap<Ino, u64>) -> Vec<(Ino, u64)> {
        self.meta
            .inodes
            .values()
            .filter(|i| i.is_part())
            .filter_map(|i| {
                let home = *homes.get(&i.ino)?;
                let straddle = i
                    .blocks
                    .get(&(home / BLOCK as u64))
                    .is_some_and(|b| b.owner().is_some());
                (i.size > home && straddle && !home.is_multiple_of(BLOCK as u64))
                    .then_some((i.ino, home))
            })
            .collect()
    }

    /// After a crash: cuts parts back to their file's size on its home
    /// shard and drops parts of files that no longer exist, so nothing
    /// written but never made part of the file can surface later.
    pub fn reconcile_parts(&mut self, homes: &HashMap<Ino, u64>) -> Result<()> {
        let parts: Vec<(Ino, u64)> = self
            .meta
            .inodes
            .values()
            .filter(|i| i.is_part())
            .map(|i| (i.ino, i.size))
            .collect();
        for (ino, size) in parts {
            match homes.get(&ino) {
                None => self.unlink(ino)?,
                Some(&home) if size > home => self.truncate(ino, home)?,
                Some(_) => {}
            }
        }
        self.sync()
    }

    /// On the home shard: checks that growing file `ino` to `end` bytes fits
    /// its file system's capacity; returns its file system, size, and
    /// whether the file system reduces data.
    pub fn check_extend(&self, ino: Ino, end: u64) -> Result<(FsId, u64, bool)> {
        let st = self.stat(ino)?;
        if end > st.size {
            self.check_capacity(st.fs, end - st.size)?;
        }
        Ok((st.fs, st.size, self.fs(st.fs)?.reduction))
    }

    /// On the home shard: records that file `ino` now has at least `end`
    /// bytes (its pieces were written on other shards).
    pub fn extend(&mut self, ino: Ino, end: u64) -> Result<()> {
        let st = self.stat(ino)?;
        if end > st.size {
            self.record(Record::Extents {
                ino,
                size: end,
                blocks: Vec::new(),
            });
        }
        Ok(())
    }

    // ---- the shared pool: this shard's part of the engine-wide dedup ----

    /// Gives this store every shard's journal progress (the engine does, on
    /// open).
    pub fn set_peers(&mut self, peers: Arc<Journaled>) {
        peers.set(self.layout.shard, self.puts_journaled);
        self.peers = Some(peers);
    }

    /// Stores whole 4 KiB blocks in this shard's shared pool, the blocks
    /// whose fingerprints this shard owns: each is deduplicated against
    /// everything the shard stores (verify-on-hit), compressed and packed
    /// like any block, and counts one more reference. Returns each block's
    /// key and how many shared-block records this shard must have journaled
    /// before a record referring to the keys may be journaled anywhere.
    pub fn put_shared(&mut self, fs: FsId, data: &[u8]) -> Result<(Vec<u128>, u64)> {
        if !data.len().is_multiple_of(BLOCK) {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shared blocks must be whole 4 KiB blocks, not {} bytes",
                    data.len()
                ),
            });
        }
        self.fs(fs)?;
        self.check_meta_room()?;
        let mut keys = Vec::with_capacity(data.len() / BLOCK);
        let mut need = 0;
        for block in data.chunks(BLOCK) {
            let (addr, fp) = self.place(fs, &mut |p, reader, sink| {
                let addr = match p.write_block(fs, block, reader, sink) {
                    Placed::Dup(a) | Placed::New(a) => a,
                };
                (addr, p.last_fingerprint().unwrap_or(0))
            })?;
            let entry = (fp != 0)
                .then(|| self.meta.shared.get(&(fs, fp)))
                .flatten()
                .copied();
            let key = match entry {
                Some(e) if e.addr == addr => {
                    // A hit on the pool's own block: the entry already holds
                    // the index reference the pipeline just added.
                    if let Some(w) = self.writers.get_mut(&fs) {
                        w.pipeline.index_mut().drop_ref(fs, fp);
                    }
                    if let Some(&n) = self.put_at.get(&(fs, fp)) {
                        need = need.max(n);
                    }
                    fp
                }
                _ => {
                    let key =
                        if fp != 0 && entry.is_none() && !self.dropping.contains_key(&(fs, fp)) {
                            fp
                        } else {
                            // Not deduplicable under its fingerprint (a verified
                            // collision): a key of its own, from its first
                            // address, which no other block ever has.
                            let mut k = (1u128 << 127)
                                | u128::from(addr.stripe) << 48
                                | u128::from(addr.chunk) << 32
                                | u128::from(addr.offset);
                            while self.meta.shared.contains_key(&(fs, k))
                                || self.dropping.contains_key(&(fs, k))
                            {
                                k = k.wrapping_add(1 << 96);
                            }
                            k
                        };
                    *self.refs.entry(addr.stripe).or_default() += 1;
                    let rec = Record::SharedPut {
                        fs,
                        key,
                        block: Shared { addr, fp },
                    };
                    self.meta.apply(&rec);
                    self.pending_puts.push(rec);
                    self.puts_pushed += 1;
                    self.put_at.insert((fs, key), self.puts_pushed);
                    need = self.puts_pushed;
                    key
                }
            };
            *self.shared_refs.entry((fs, key)).or_default() += 1;
            keys.push(key);
        }
        Ok((keys, need))
    }

    /// Blocks in this shard's shared pool.
    pub fn shared_blocks(&self) -> usize {
        self.meta.shared.len()
    }

    /// Reads shared blocks by key: 4 KiB each, in order.
    ///
    /// Blocks stored back to back in one chunk (as a sequential write
    /// leaves them) are read with one device read per run, not one each.
    pub fn read_shared(&mut self, fs: FsId, keys: &[u128]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; keys.len() * BLOCK];
        let mut blocks: Vec<(usize, Shared)> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            blocks.push((i, self.shared_block(fs, *key)?));
        }
        blocks.sort_by_key(|(_, b)| (b.addr.stripe, b.addr.chunk, b.addr.offset));
        let mut run = 0;
        while run < blocks.len() {
            // The run of blocks contiguous with this one in its chunk.
            let first = blocks[run].1.addr;
            let mut end = run + 1;
            let mut span = u64::from(first.stored_len);
            while end < blocks.len() {
                let a = blocks[end].1.addr;
                if a.stripe != first.stripe
                    || a.chunk != first.chunk
                    || u64::from(a.offset) != u64::from(first.offset) + span
                    || span + u64::from(a.stored_len) > MAX_IO as u64
                {
                    break;
                }
                span += u64::from(a.stored_len);
                end += 1;
            }
            let mut bytes = vec![0u8; span as usize];
            let whole = BlockAddr {
                stored_len: span as u32,
                compressed: false,
                ..first
            };
            // One read for the run; damage it cannot be rebuilt from at once
            // is read block by block.
            if end - run == 1 || self.read_stored(fs, &whole, &mut bytes).is_err() {
                for &(i, b) in &blocks[run..end] {
                    self.read_ref_into(fs, b.as_ref(), &mut out[i * BLOCK..(i + 1) * BLOCK])?;
                }
            } else {
                for &(i, b) in &blocks[run..end] {
                    let at = (b.addr.offset - first.offset) as usize;
                    let stored = &bytes[at..at + b.addr.stored_len as usize];
                    let dst = &mut out[i * BLOCK..(i + 1) * BLOCK];
                    if b.addr.compressed {
                        Lz4Probe.decompress(stored, dst).map_err(|e| {
                            StoreError::Unrecoverable {
                                stripe: b.addr.stripe,
                                reason: e.to_string(),
                            }
                        })?;
                    } else {
                        dst.copy_from_slice(stored);
                    }
                }
            }
            run = end;
        }
        Ok(out)
    }

    fn read_shared_into(&mut self, fs: FsId, key: u128, out: &mut [u8]) -> Result<()> {
        let b = self.shared_block(fs, key)?;
        self.read_ref_into(fs, b.as_ref(), out)
    }

    /// A block of this shard's shared pool by key.
    fn shared_block(&self, fs: FsId, key: u128) -> Result<Shared> {
        self.meta
            .shared
            .get(&(fs, key))
            .copied()
            .ok_or_else(|| StoreError::NotFound {
                what: format!(
                    "shared block {key:#x} of file system {fs} on shard {}",
                    self.layout.shard
                ),
            })
    }

    /// Drops references to shared blocks (their referring records are
    /// durable); a block nothing refers to leaves the pool.
    pub fn drop_shared(&mut self, drops: &[(FsId, u128)]) {
        for &(fs, key) in drops {
            self.unref_shared(fs, key);
        }
    }

    fn unref_shared(&mut self, fs: FsId, key: u128) {
        let left = match self.shared_refs.get_mut(&(fs, key)) {
            Some(n) => {
                *n -= 1;
                *n
            }
            None => 0,
        };
        if left == 0 {
            self.shared_refs.remove(&(fs, key));
            self.drop_entry(fs, key);
        }
    }

    /// Removes a shared block from the pool.
    fn drop_entry(&mut self, fs: FsId, key: u128) {
        if self.meta.shared.contains_key(&(fs, key)) {
            let n = self.record(Record::SharedDrop { fs, key });
            self.dropping.insert((fs, key), n);
        }
    }

    /// Every reference this shard's block maps hold to shared blocks (of
    /// any shard, this one included), by (owner, file system, key).
    pub fn remote_refs(&self) -> HashMap<(u32, FsId, u128), u64> {
        let mut out = HashMap::new();
        for i in self.meta.inodes.values() {
            for b in i.blocks.values() {
                if let Some(owner) = b.owner() {
                    *out.entry((owner, i.fs, b.fp)).or_default() += 1;
                }
            }
        }
        out
    }

    /// Sets the reference counts of this shard's shared blocks from every
    /// shard's block maps (when the engine opens): blocks nothing refers to
    /// (put just before a crash, or dropped by a record whose owner never
    /// heard of it) leave the pool. Returns the references to keys the pool
    /// does not hold (which would be a bug: [`Store::fsck`] reports them).
    pub fn set_shared_refs(&mut self, refs: HashMap<(FsId, u128), u64>) -> u64 {
        let missing = refs
            .keys()
            .filter(|k| !self.meta.shared.contains_key(k))
            .count() as u64;
        let dead: Vec<(FsId, u128)> = self
            .meta
            .shared
            .keys()
            .filter(|k| !refs.contains_key(k))
            .copied()
            .collect();
        self.shared_refs = refs;
        for (fs, key) in dead {
            self.drop_entry(fs, key);
        }
        missing
    }

    /// Records that blocks of file `ino` (a part here when not homed here)
    /// are the given shared blocks, and that the file has at least `size`
    /// bytes. `waits` names, per owner shard, the record it must have
    /// journaled before this record may be ([`Store::put_shared`]).
    pub fn map_shared(
        &mut self,
        ino: Ino,
        fs: FsId,
        size: u64,
        blocks: Vec<(u64, BlockRef)>,
        waits: &[(u32, u64)],
    ) -> Result<()> {
        if !self.meta.inodes.contains_key(&ino) {
            self.fs(fs)?;
            self.record(Record::FileCreate {
                ino,
                fs,
                name: String::new(),
            });
        }
        let size = self.size_of(ino)?.max(size);
        let n = self.record(Record::Extents { ino, size, blocks });
        for &(owner, need) in waits {
            if owner != self.layout.shard {
                self.waits.push_back((n, owner, need));
            }
        }
        Ok(())
    }

    /// Dropped references to other shards' shared blocks whose records are
    /// now durable: the engine delivers them to their owners.
    pub fn take_drops(&mut self) -> Vec<SharedDrop> {
        std::mem::take(&mut self.ready_drops)
    }

    /// Reads like [`Store::read_into`], but leaves blocks kept in other
    /// shards' shared pools to the caller: they are listed in `remote`
    /// (their bytes in `out` untouched).
    pub fn read_mapped(
        &mut self,
        ino: Ino,
        offset: u64,
        out: &mut [u8],
        remote: &mut Vec<RemoteRead>,
    ) -> Result<usize> {
        let size = self.size_of(ino)?;
        if offset >= size || out.is_empty() {
            return Ok(0);
        }
        let end = (offset + out.len() as u64).min(size);
        let fs = self.meta.inodes[&ino].fs;
        let mut block = Vec::new();
        let mut pos = offset;
        // Runs are not tried again before this (one just failed).
        let mut no_runs_until = 0u64;
        while pos < end {
            let idx = pos / BLOCK as u64;
            let bstart = idx * BLOCK as u64;
            let hi = end.min(bstart + BLOCK as u64);
            let at = (pos - offset) as usize;
            // Whole uncompressed blocks stored back to back in one chunk (as
            // a sequential write leaves them): one device read for the run.
            let run = if pos >= no_runs_until {
                self.local_run(ino, idx, pos, end)
            } else {
                0
            };
            if run > 1 {
                let first = self.meta.inodes[&ino]
                    .blocks
                    .get(&idx)
                    .copied()
                    .expect("in the run");
                let whole = BlockAddr {
                    stored_len: (run * BLOCK) as u32,
                    ..first.addr
                };
                if self
                    .read_stored(fs, &whole, &mut out[at..at + run * BLOCK])
                    .is_ok()
                {
                    pos += (run * BLOCK) as u64;
                    continue;
                }
                // Damage the whole run cannot be rebuilt from at once (bad
                // sectors in several chunks): block by block, each sector
                // rebuilt from what survives around it.
                no_runs_until = pos + (run * BLOCK) as u64;
            }
            let dst = &mut out[at..(hi - offset) as usize];
            let b = self.meta.inodes[&ino].blocks.get(&idx).copied();
            match b.and_then(|b| b.owner().map(|o| (o, b.fp))) {
                Some((owner, key)) if owner != self.layout.shard => remote.push(RemoteRead {
                    at,
                    skip: (pos - bstart) as usize,
                    len: dst.len(),
                    owner,
                    fs,
                    key,
                }),
                _ if pos == bstart && hi - bstart == BLOCK as u64 => {
                    self.read_block_into(ino, idx, dst)?;
                }
                _ => {
                    block.resize(BLOCK, 0);
                    self.read_block_into(ino, idx, &mut block)?;
                    dst.copy_from_slice(&block[(pos - bstart) as usize..(hi - bstart) as usize]);
                }
            }
            pos = hi;
        }
        Ok((end - offset) as usize)
    }

    /// How many whole blocks from logical block `idx` (at byte `pos`, before
    /// `end`) are local, uncompressed and stored back to back in one chunk.
    fn local_run(&self, ino: Ino, idx: u64, pos: u64, end: u64) -> usize {
        let b64 = BLOCK as u64;
        if pos != idx * b64 {
            return 0;
        }
        let Some(inode) = self.meta.inodes.get(&ino) else {
            return 0;
        };
        let plain = |b: &BlockRef| {
            b.owner().is_none() && !b.addr.compressed && b.addr.stored_len == BLOCK as u32
        };
        let Some(first) = inode.blocks.get(&idx).filter(|b| plain(b)) else {
            return 0;
        };
        let mut n = 0u64;
        while (idx + n + 1) * b64 <= end && ((n + 1) * b64) as usize <= MAX_IO {
            match inode.blocks.get(&(idx + n)) {
                Some(b)
                    if plain(b)
                        && b.addr.stripe == first.addr.stripe
                        && b.addr.chunk == first.addr.chunk
                        && u64::from(b.addr.offset) == u64::from(first.addr.offset) + n * b64 =>
                {
                    n += 1;
                }
                _ => break,
            }
        }
        n as usize
    }

    /// Reads up to `len` bytes at `offset` (less at the end of the file).
    pub fn read(&mut self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size_of(ino)?;
        let n = size.saturating_sub(offset).min(len as u64) as usize;
        let mut out = vec![0u8; n];
        self.read_into(ino, offset, &mut out)?;
        Ok(out)
    }

    /// Reads into `out` at `offset`; returns the bytes read (fewer at the
    /// end of the file). A 4 KiB-aligned `out` of whole blocks is filled
    /// straight from the device, with no copy.
    pub fn read_into(&mut self, ino: Ino, offset: u64, out: &mut [u8]) -> Result<usize> {
        let mut remote = Vec::new();
        let n = self.read_mapped(ino, offset, out, &mut remote)?;
        match remote.first() {
            None => Ok(n),
            Some(r) => Err(StoreError::Invalid {
                reason: format!(
                    "file {ino} has blocks in shard {}'s shared pool; read it through the engine",
                    r.owner
                ),
            }),
        }
    }

    fn read_block_into(&mut self, ino: Ino, idx: u64, out: &mut [u8]) -> Result<()> {
        let inode = self.meta.inodes.get(&ino).ok_or_else(|| not_found(ino))?;
        let fs = inode.fs;
        let Some(b) = inode.blocks.get(&idx).copied() else {
            out.fill(0);
            return Ok(());
        };
        match b.owner() {
            None => self.read_ref_into(fs, b, out),
            Some(owner) if owner == self.layout.shard => self.read_shared_into(fs, b.fp, out),
            Some(owner) => Err(StoreError::Invalid {
                reason: format!(
                    "block {idx} of file {ino} is in shard {owner}'s shared pool; \
                     read it through the engine"
                ),
            }),
        }
    }

    /// Reads one stored block (decompressed) into `out`.
    fn read_ref_into(&mut self, fs: FsId, b: BlockRef, out: &mut [u8]) -> Result<()> {
        if !b.addr.compressed {
            return self.read_stored(fs, &b.addr, out);
        }
        let mut stored = std::mem::take(&mut self.cbuf);
        stored.resize(b.addr.stored_len as usize, 0);
        let r = self.read_stored(fs, &b.addr, &mut stored).and_then(|()| {
            Lz4Probe
                .decompress(&stored, out)
                .map_err(|e| StoreError::Unrecoverable {
                    stripe: b.addr.stripe,
                    reason: e.to_string(),
                })
        });
        self.cbuf = stored;
        r
    }

    /// Reads a block's stored bytes: from the open stripe in memory, or
    /// from its chunk with checksums verified, rebuilding what is bad.
    fn read_stored(&mut self, fs: FsId, a: &BlockAddr, out: &mut [u8]) -> Result<()> {
        if let Some(w) = self.writers.get(&fs) {
            if let Some(b) = w.pipeline.open_bytes(a) {
                out.copy_from_slice(b);
                return Ok(());
            }
        }
        let s0 = a.offset as usize / SECTOR;
        let s1 = (a.offset as usize + a.stored_len as usize).div_ceil(SECTOR);
        let start = a.offset as usize - s0 * SECTOR;
        let len = a.stored_len as usize;
        // Fast path: one healthy chunk read into the reused buffer, verified
        // in place, copied out once.
        let s = self.stripe(a.stripe)?;
        let c = usize::from(a.chunk);
        let (d, slot) = s.chunks[c];
        let d = usize::from(d);
        if let Some(dev) = self
            .devs
            .get_mut(d)
            .and_then(|x| x.as_mut())
            .filter(|x| !x.failed)
        {
            let n = s1 - s0;
            let per = self.layout.chunk_blocks as usize;
            let verify = |bytes: &[u8]| {
                bytes
                    .chunks(SECTOR)
                    .enumerate()
                    .all(|(i, x)| Xxh3Sum.checksum(SEED_CHUNK, x) == s.sums[c * per + s0 + i])
            };
            let lba = self.layout.slot_lba(slot) + s0 as u64;
            if start == 0 && len == n * SECTOR && (out.as_ptr() as usize).is_multiple_of(4096) {
                let r = run_one(dev, IoCmd::read(lba, n as u32, out.as_mut_ptr(), 0));
                if r.is_ok() && verify(out) {
                    return Ok(());
                }
                if r.is_err() {
                    self.mark_failed(d, "chunk read");
                }
                let sectors = self.read_sectors(a.stripe, c, s0, s1)?;
                out.copy_from_slice(&sectors[..len]);
                return Ok(());
            }
            let buf = match self.rbuf.take() {
                Some(b) if b.0.len >= n * SECTOR => b,
                _ => Scratch::new(n * SECTOR)?,
            };
            let r = run_one(dev, IoCmd::read(lba, n as u32, buf.0.as_ptr(), 0));
            let bytes = &buf.0.as_slice()[..n * SECTOR];
            let good = r.is_ok() && verify(bytes);
            if good {
                out.copy_from_slice(&bytes[start..start + len]);
            }
            self.rbuf = Some(buf);
            if good {
                return Ok(());
            }
            if r.is_err() {
                self.mark_failed(d, "chunk read");
            }
        }
        let sectors = self.read_sectors(a.stripe, c, s0, s1)?;
        out.copy_from_slice(&sectors[start..start + len]);
        Ok(())
    }

    fn stripe(&self, id: u64) -> Result<Arc<StripeMeta>> {
        self.meta
            .stripes
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::Unrecoverable {
                stripe: id,
                reason: "stripe missing from metadata".into(),
            })
    }

    /// Reads sectors `s0..s1` of chunk `c` of a stripe, verified; rebuilds
    /// them from the other chunks if they are lost or bad (and heals them).
    fn read_sectors(&mut self, id: u64, c: usize, s0: usize, s1: usize) -> Result<Vec<u8>> {
        let s = self.stripe(id)?;
        match self.read_verified(&s, c, s0, s1)? {
            Some(buf) => Ok(buf),
            None => {
                self.repairs.degraded_reads += 1;
                let buf = self.rebuild(&s, c, s0, s1)?;
                let (d, slot) = s.chunks[c];
                if self.devs[usize::from(d)]
                    .as_ref()
                    .is_some_and(|x| !x.failed)
                {
                    let mut w = Scratch::new(buf.len())?;
                    w.0.as_mut_slice()[..buf.len()].copy_from_slice(&buf);
                    let lba = self.layout.slot_lba(slot) + s0 as u64;
                    let r = run_io(
                        &mut self.devs,
                        &[(
                            usize::from(d),
                            IoCmd::write(lba, (s1 - s0) as u32, w.0.as_ptr(), 0),
                        )],
                    );
                    match r[0] {
                        Ok(_) => self.repairs.healed_sectors += (s1 - s0) as u64,
                        Err(_) => self.mark_failed(usize::from(d), "heal write"),
                    }
                }
                Ok(buf)
            }
        }
    }

    /// Reads and verifies sectors of one chunk; `None` if unreadable or bad.
    fn read_verified(
        &mut self,
        s: &StripeMeta,
        c: usize,
        s0: usize,
        s1: usize,
    ) -> Result<Option<Vec<u8>>> {
        let n = s1 - s0;
        let mut buf = match self.rbuf.take() {
            Some(b) if b.0.len >= n * SECTOR => b,
            _ => Scratch::new(n * SECTOR)?,
        };
        let good = self.read_chunk_into(s, c, s0, s1, &mut buf.0.as_mut_slice()[..n * SECTOR]);
        let out = good.then(|| buf.0.as_slice()[..n * SECTOR].to_vec());
        self.rbuf = Some(buf);
        Ok(out)
    }

    /// Reads sectors `s0..s1` of chunk `c` into `out` (4 KiB-aligned) and
    /// verifies them; false if the device is gone or a checksum fails.
    fn read_chunk_into(
        &mut self,
        s: &StripeMeta,
        c: usize,
        s0: usize,
        s1: usize,
        out: &mut [u8],
    ) -> bool {
        let (d, slot) = s.chunks[c];
        let d = usize::from(d);
        let Some(dev) = self.devs[d].as_mut().filter(|x| !x.failed) else {
            return false;
        };
        let lba = self.layout.slot_lba(slot) + s0 as u64;
        if run_one(dev, IoCmd::read(lba, (s1 - s0) as u32, out.as_mut_ptr(), 0)).is_err() {
            self.mark_failed(d, "chunk read");
            return false;
        }
        let per = self.layout.chunk_blocks as usize;
        match out
            .chunks(SECTOR)
            .enumerate()
            .find(|(i, sector)| Xxh3Sum.checksum(SEED_CHUNK, sector) != s.sums[c * per + s0 + i])
        {
            Some((i, _)) => {
                tracing::warn!(
                    stripe = s.id,
                    chunk = c,
                    sector = s0 + i,
                    "checksum mismatch"
                );
                false
            }
            None => true,
        }
    }

    /// Rebuilds sectors `s0..s1` of chunk `c` from k verified chunks.
    fn rebuild(&mut self, s: &StripeMeta, c: usize, s0: usize, s1: usize) -> Result<Vec<u8>> {
        let (k, m) = (usize::from(s.k), usize::from(s.m));
        let len = (s1 - s0) * SECTOR;
        // Survivors land side by side in one reused aligned buffer.
        let mut dbuf = match self.dbuf.take() {
            Some(b) if b.0.len >= k * len => b,
            _ => Scratch::new(k * len)?,
        };
        let mut present = Vec::with_capacity(k);
        for i in (0..k + m).filter(|&i| i != c) {
            if present.len() == k {
                break;
            }
            let at = present.len() * len;
            if self.read_chunk_into(s, i, s0, s1, &mut dbuf.0.as_mut_slice()[at..at + len]) {
                present.push(i);
            }
        }
        if present.len() < k {
            self.dbuf = Some(dbuf);
            return Err(StoreError::Unrecoverable {
                stripe: s.id,
                reason: format!(
                    "only {} of the {k} chunks needed are readable",
                    present.len()
                ),
            });
        }
        // Decoders are cached per loss pattern: a device that stays gone
        // costs one matrix inversion, not one per read.
        let key = (s.k, s.m, present.clone(), c);
        if !self.decoders.contains_key(&key) {
            let codec = match self.codecs.entry((s.k, s.m)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Codec::new(k, m, best_kernel()).map_err(ec_err)?)
                }
            };
            let decoder = codec.decoder(&present, &[c]).map_err(ec_err)?;
            self.decoders.insert(key.clone(), decoder);
        }
        let inputs: Vec<&[u8]> = dbuf.0.as_slice()[..k * len].chunks(len).collect();
        let mut out = vec![0u8; len];
        self.decoders[&key].apply(&inputs, &mut [&mut out[..]]);
        self.dbuf = Some(dbuf);
        let per = self.layout.chunk_blocks as usize;
        for (i, sector) in out.chunks(SECTOR).enumerate() {
            if Xxh3Sum.checksum(SEED_CHUNK, sector) != s.sums[c * per + s0 + i] {
                return Err(StoreError::Unrecoverable {
                    stripe: s.id,
                    reason: "rebuilt data fails its checksum".into(),
                });
            }
        }
        Ok(out)
    }

    /// Whether anything written is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        !self.pending.is_empty()
            || !self.pending_stripes.is_empty()
            || !self.pending_puts.is_empty()
            || self.writers.values().any(|w| w.pipeline.has_open_data())
    }

    /// Seals open stripes, makes data and metadata durable. Everything
    /// written before this call survives a crash once it returns.
    pub fn sync(&mut self) -> Result<()> {
        let fss: Vec<FsId> = self.writers.keys().copied().collect();
        for fs in fss {
            let (k, m) = {
                let f = self.fs(fs)?;
                (usize::from(f.k), usize::from(f.m))
            };
            let mut w = self.writers.remove(&fs).expect("listed above");
            let mut wbuf = self.stripe_buffer(k + m)?;
            let mut sealed: Option<(u64, Vec<u64>)> = None;
            w.pipeline.seal(&mut |s: SealedStripe<'_>| {
                copy_chunks(&s, &mut wbuf);
                sealed = Some((s.id, s.checksums.to_vec()));
            });
            let res = match sealed {
                Some((id, sums)) => match w.reserved.take() {
                    Some(slots) => {
                        w.reserved = w.next.take();
                        self.write_stripe(fs, id, k, m, &wbuf, sums, slots)
                    }
                    None => Err(StoreError::Invalid {
                        reason: format!("stripe {id} sealed without reserved space"),
                    }),
                },
                None => Ok(()),
            };
            self.wbuf = Some(wbuf);
            self.writers.insert(fs, w);
            res?;
        }
        // A stripe whose blocks all died while it was open is freed now.
        let dead: Vec<u64> = self
            .pending_stripes
            .iter()
            .filter_map(|r| match r {
                Record::Stripe(s) if !self.refs.contains_key(&s.id) => Some(s.id),
                _ => None,
            })
            .collect();
        for id in dead {
            self.free_stripe(id);
        }
        self.flush_devices()?;
        // Stripe and new shared-block records first, then the records up to
        // the first one whose shared blocks another shard has not journaled
        // yet; the rest wait for a later sync.
        let mut ready = self.ready_records();
        let mut batch = std::mem::take(&mut self.pending_stripes);
        let stripes = batch.len();
        batch.append(&mut self.pending_puts);
        let lanes = batch.len();
        batch.extend(self.pending.drain(..ready));
        let entries = self.journal_entries(&batch);
        let room = self.layout.journal_blocks.saturating_sub(self.head);
        let reserve = self.layout.journal_blocks / 4;
        if batch.is_empty() {
        } else if self.blocks_of(&entries) + reserve <= room {
            self.journal(entries)?;
        } else if self.pending.is_empty() {
            // The journal cannot take it all and nothing waits: a
            // checkpoint of the whole state replaces it. (Writing part of the
            // batch, checkpointing, then the rest would let replay apply
            // older records on top of the newer checkpoint.)
            self.write_checkpoint()?;
        } else {
            // Waiting records forbid a checkpoint (it would hold them): only
            // the stripe and shared-block records go, into the reserve, so
            // the shards waiting for this one are never held up by it.
            let mut fifo = batch.split_off(lanes);
            fifo.append(&mut self.pending);
            self.pending = fifo;
            ready = 0;
            let entries = self.journal_entries(&batch);
            if self.blocks_of(&entries) > room {
                // Even the reserve is full: everything waits for a sync
                // after the waits are met, when a checkpoint can replace the
                // journal.
                self.pending_puts = batch.split_off(stripes);
                self.pending_stripes = batch;
                return Ok(());
            }
            self.journal(entries)?;
        }
        self.journaled += ready as u64;
        self.puts_journaled = self.puts_pushed;
        let done = self.journaled;
        let puts_done = self.puts_journaled;
        self.put_at.retain(|_, n| *n > puts_done);
        self.dropping.retain(|_, n| *n > done);
        if let Some(p) = &self.peers {
            p.set(self.layout.shard, puts_done);
        }
        let mut keep = Vec::new();
        for (n, d, slot) in std::mem::take(&mut self.freeing) {
            if n <= done {
                self.free[usize::from(d)].insert(slot);
            } else {
                keep.push((n, d, slot));
            }
        }
        self.freeing = keep;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.drops)
            .into_iter()
            .partition(|(n, _)| *n <= done);
        self.drops = later;
        self.ready_drops.extend(now.into_iter().map(|(_, d)| d));
        if (self.head * 2 > self.layout.journal_blocks || self.meta_bytes > self.meta_room() / 2)
            && self.pending.is_empty()
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Bytes a checkpoint can hold.
    fn meta_room(&self) -> u64 {
        (self.layout.checkpoint_blocks * u64::from(self.layout.block_size)).saturating_sub(4096)
    }

    /// Refuses to take more data when the metadata could outgrow the
    /// checkpoint area (the next checkpoint, and with it recovery, would
    /// fail): a clean no-space error while there is still room.
    fn check_meta_room(&self) -> Result<()> {
        if self.meta_bytes > self.meta_room() / 10 * 8 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "metadata of shard {} ({} bytes) nears its checkpoint area ({} bytes); \
                     delete files, or format with larger checkpoints",
                    self.layout.shard,
                    self.meta_bytes,
                    self.meta_room()
                ),
            });
        }
        Ok(())
    }

    /// How many of the pending records may be journaled now: those before
    /// the first that refers to a block another shard has not journaled.
    fn ready_records(&mut self) -> usize {
        let base = self.journaled;
        while let Some(&(n, owner, need)) = self.waits.front() {
            let met = self.peers.as_ref().is_some_and(|p| p.get(owner) >= need);
            if !met {
                return (n - base - 1) as usize;
            }
            self.waits.pop_front();
        }
        self.pending.len()
    }

    /// Records queued for the journal this session (the newest one's
    /// number).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Syncs, and says whether every record up to number `target` is now
    /// journaled (false while some wait for other shards' journals).
    pub fn sync_to(&mut self, target: u64) -> Result<bool> {
        self.sync()?;
        Ok(self.journaled >= target)
    }

    /// The reference counts of this shard's shared blocks (to carry them
    /// when the shard moves to another reactor).
    pub fn shared_refs(&self) -> HashMap<(FsId, u128), u64> {
        self.shared_refs.clone()
    }

    fn flush_devices(&mut self) -> Result<()> {
        let ids: Vec<usize> = self.healthy().collect();
        let cmds: Vec<(usize, IoCmd)> = ids.iter().map(|&d| (d, IoCmd::flush(0))).collect();
        for ((d, _), r) in cmds.iter().zip(run_io(&mut self.devs, &cmds)) {
            if r.is_err() {
                self.mark_failed(*d, "flush");
            }
        }
        if self.healthy().count() == 0 {
            return Err(StoreError::Io {
                device: "all".into(),
                op: "flush",
                error: IoError::Device { errno: libc::EIO },
            });
        }
        Ok(())
    }

    /// Appends records to the journal on every healthy device, durably.
    /// Journal blocks the entries take.
    fn blocks_of(&self, entries: &[Vec<u8>]) -> u64 {
        entries
            .iter()
            .map(|p| format::record_blocks(p.len(), self.layout.block_size as usize))
            .sum()
    }

    /// Groups records into journal entries of at most a quarter of the
    /// journal each (stripe records come first, so every prefix of
    /// entries is consistent).
    fn journal_entries(&self, batch: &[Record]) -> Vec<Vec<u8>> {
        let bs = self.layout.block_size as usize;
        let limit = (self.layout.journal_blocks as usize / 4).max(1) * bs;
        // Group the records into entries of at most `limit` bytes (stripe
        // records come first, so every prefix of entries is consistent).
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let (mut body, mut count) = (Writer::default(), 0u32);
        for r in batch {
            let mut one = Writer::default();
            meta::encode_record(&mut one, r);
            if count > 0 && 4 + body.buf.len() + one.buf.len() + 64 > limit {
                entries.push(batch_payload(count, &body.buf));
                body.buf.clear();
                count = 0;
            }
            body.buf.extend_from_slice(&one.buf);
            count += 1;
        }
        if count > 0 {
            entries.push(batch_payload(count, &body.buf));
        }
        entries
    }

    /// Appends records to the journal on every healthy device, durably
    /// (the caller checked that they fit).
    fn journal(&mut self, entries: Vec<Vec<u8>>) -> Result<()> {
        let bs = self.layout.block_size as usize;
        for payload in entries {
            self.meta_bytes += payload.len() as u64;
            let blocks = format::record_blocks(payload.len(), bs);
            self.seq += 1;
            let rec = format::encode_record(JOURNAL_MAGIC, self.seq, &payload, bs);
            let mut buf = Scratch::new(rec.len())?;
            buf.0.as_mut_slice()[..rec.len()].copy_from_slice(&rec);
            let lba = self.layout.journal_start + self.head;
            self.write_everywhere(lba, &buf, rec.len() / bs, "journal write")?;
            self.head += blocks;
        }
        Ok(())
    }

    /// Writes and flushes `blocks` blocks at `lba` on every healthy device;
    /// fails only if no device took it.
    fn write_everywhere(
        &mut self,
        lba: u64,
        buf: &Scratch,
        blocks: usize,
        op: &'static str,
    ) -> Result<()> {
        let ids: Vec<usize> = self.healthy().collect();
        let mut cmds = Vec::new();
        // Commands of at most 1 MiB, the smallest transfer limit a device
        // may have (large checkpoints and journal entries exceed it).
        let per = (MAX_IO / self.layout.block_size as usize).max(1);
        for &d in &ids {
            for start in (0..blocks).step_by(per) {
                let n = per.min(blocks - start);
                let p = buf
                    .0
                    .as_ptr()
                    .wrapping_add(start * self.layout.block_size as usize);
                cmds.push((d, IoCmd::write(lba + start as u64, n as u32, p, 0)));
            }
        }
        let results = run_io(&mut self.devs, &cmds);
        for ((d, _), r) in cmds.iter().zip(results) {
            if r.is_err() {
                self.mark_failed(*d, op);
            }
        }
        self.flush_devices()
    }

    /// Writes the whole state to the spare checkpoint slot, then restarts
    /// the journal. Refused while records wait for other shards (the state
    /// in memory includes them): sync every shard first.
    pub fn checkpoint(&mut self) -> Result<()> {
        if !self.waits.is_empty() {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shard {} has records waiting for other shards' journals; \
                     sync the engine before a checkpoint",
                    self.layout.shard
                ),
            });
        }
        self.write_checkpoint()
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        let bs = self.layout.block_size as usize;
        let payload = self.meta.encode();
        // A checkpoint takes a sequence number of its own, so no two
        // checkpoints ever share one: recovery must never be able to pick an
        // older state of equal number (whose freed slots were reused since).
        let seq = self.seq + 1;
        let rec = format::encode_record(CHECKPOINT_MAGIC, seq, &payload, bs);
        if rec.len() as u64 > self.layout.checkpoint_blocks * bs as u64 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "metadata ({} bytes) outgrew the checkpoint area; format with larger checkpoints",
                    payload.len()
                ),
            });
        }
        let mut buf = Scratch::new(rec.len())?;
        buf.0.as_mut_slice()[..rec.len()].copy_from_slice(&rec);
        let slot = self.ckpt_slot ^ 1;
        let lba = self.layout.checkpoint_lba(slot);
        self.write_everywhere(lba, &buf, rec.len() / bs, "checkpoint write")?;
        self.seq = seq;
        self.ckpt_slot = slot;
        self.head = 0;
        self.meta_bytes = payload.len() as u64;
        Ok(())
    }

    /// Checks every chunk of every stripe, rewrites bad sectors, and rebuilds
    /// chunks of failed devices onto healthy devices not in the stripe.
    pub fn scrub(&mut self) -> Result<ScrubReport> {
        let mut rep = ScrubReport::default();
        let per = self.layout.chunk_blocks as usize;
        let ids: Vec<u64> = self.meta.stripes.keys().copied().collect();
        for id in ids {
            rep.stripes += 1;
            let s = self.stripe(id)?;
            let mut moved = false;
            let mut new = StripeMeta::clone(&s);
            for c in 0..s.chunks.len() {
                let d = usize::from(s.chunks[c].0);
                let healthy = self.devs[d].as_ref().is_some_and(|x| !x.failed);
                if healthy {
                    if self.read_verified(&s, c, 0, per)?.is_none() {
                        let before = self.repairs.healed_sectors;
                        match self.read_sectors(id, c, 0, per) {
                            Ok(_) => rep.repaired_sectors += self.repairs.healed_sectors - before,
                            Err(_) => rep.unrecoverable += 1,
                        }
                    }
                    continue;
                }
                // Move the chunk to a healthy device outside the stripe.
                let target = self
                    .healthy()
                    .filter(|t| !new.chunks.iter().any(|&(x, _)| usize::from(x) == *t))
                    .filter(|t| !self.free[*t].is_empty())
                    .max_by_key(|t| self.free[*t].len());
                let Some(t) = target else {
                    rep.unprotected_chunks += 1;
                    continue;
                };
                let data = match self.rebuild(&s, c, 0, per) {
                    Ok(b) => b,
                    Err(_) => {
                        rep.unrecoverable += 1;
                        continue;
                    }
                };
                let slot = *self.free[t].iter().next().expect("checked non-empty");
                self.free[t].remove(&slot);
                let mut w = Scratch::new(data.len())?;
                w.0.as_mut_slice()[..data.len()].copy_from_slice(&data);
                let r = run_io(
                    &mut self.devs,
                    &[(
                        t,
                        IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0),
                    )],
                );
                if r[0].is_err() {
                    self.mark_failed(t, "scrub write");
                    continue;
                }
                new.chunks[c] = (t as u16, slot);
                rep.relocated_chunks += 1;
                moved = true;
            }
            if moved {
                self.record(Record::Stripe(new));
            }
        }
        self.sync()?;
        Ok(rep)
    }

    /// The superblock on `dev`, or `None` when it holds none (a blank
    /// device).
    pub fn probe(core: &mut Core, dev: &Arc<dyn BlockDevice>) -> Result<Option<Superblock>> {
        let mut one = open_qpairs(core, std::slice::from_ref(dev))?;
        let buf = Scratch::new(4096)?;
        let r = run_io(&mut one, &[(0, IoCmd::read(0, 1, buf.0.as_ptr(), 0))]);
        r[0].map_err(io_err(dev.name(), "read superblock"))?;
        match Superblock::decode(&buf.0.as_slice()[..4096]) {
            Ok(sb) => Ok(Some(sb)),
            Err(FormatError::NotFlint) => Ok(None),
            Err(error) => Err(StoreError::Format {
                device: dev.name().into(),
                error,
            }),
        }
    }

    /// Writes `sb` to block 0 of `dev` and flushes: the last step of making
    /// a device an engine member.
    pub fn write_superblock(
        core: &mut Core,
        dev: &Arc<dyn BlockDevice>,
        sb: &Superblock,
    ) -> Result<()> {
        let mut one = open_qpairs(core, std::slice::from_ref(dev))?;
        let mut buf = Scratch::new(4096)?;
        buf.0.as_mut_slice()[..4096].copy_from_slice(&sb.encode());
        for r in run_io(
            &mut one,
            &[
                (0, IoCmd::write(0, 1, buf.0.as_ptr(), 0)),
                (0, IoCmd::flush(0)),
            ],
        ) {
            r.map_err(io_err(dev.name(), "write superblock"))?;
        }
        Ok(())
    }

    /// The superblock the engine was opened by.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// First step of replacing a missing device: `qp` (a queue pair on the
    /// blank replacement `name`) takes slot `index`. This shard's journal
    /// and checkpoint areas on it are zeroed (records a former owner left
    /// there must never replay), and every chunk this shard keeps in that
    /// slot is rebuilt onto it from the survivors, at the same place. The
    /// device is held aside — nothing is placed on or read from it — until
    /// [`Store::adopt_join`]. Returns the chunks rebuilt. On an error
    /// nothing changed (the device stays out).
    pub fn adopt_rebuild(
        &mut self,
        index: usize,
        name: &str,
        qp: Box<dyn QueuePair>,
    ) -> Result<u64> {
        if self.devs.get(index).is_none_or(|d| d.is_some()) {
            return Err(StoreError::Invalid {
                reason: format!("device slot {index} is not missing"),
            });
        }
        let mut one = [Some(Dev {
            name: name.to_string(),
            qp,
            failed: false,
            errors: 0,
        })];
        // Zero the metadata areas, 1 MiB per command.
        let step = 256u64;
        let mut zero = Scratch::new((step * 4096) as usize)?;
        zero.0.as_mut_slice().fill(0);
        let l = &self.layout;
        let mut cmds = Vec::new();
        for (start, blocks) in [
            (l.journal_start, l.journal_blocks),
            (l.checkpoint_lba(0), l.checkpoint_blocks),
            (l.checkpoint_lba(1), l.checkpoint_blocks),
        ] {
            let mut off = 0;
            while off < blocks {
                let n = step.min(blocks - off);
                cmds.push((0, IoCmd::write(start + off, n as u32, zero.0.as_ptr(), 0)));
                off += n;
            }
        }
        for r in run_io(&mut one, &cmds) {
            r.map_err(io_err(name, "zero metadata"))?;
        }
        // Rebuild the slot's chunks.
        let per = self.layout.chunk_blocks as usize;
        let ids: Vec<u64> = self.meta.stripes.keys().copied().collect();
        let mut rebuilt = 0;
        let mut w = Scratch::new(per * 4096)?;
        for id in ids {
            let s = self.stripe(id)?;
            for c in 0..s.chunks.len() {
                let (d, slot) = s.chunks[c];
                if usize::from(d) != index {
                    continue;
                }
                let data = self
                    .rebuild(&s, c, 0, per)
                    .map_err(|e| StoreError::Invalid {
                        reason: format!(
                            "chunk {c} of stripe {id} cannot be rebuilt ({e}); \
                         bring back the devices that hold its survivors, then retry"
                        ),
                    })?;
                w.0.as_mut_slice()[..data.len()].copy_from_slice(&data);
                let r = run_io(
                    &mut one,
                    &[(
                        0,
                        IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0),
                    )],
                );
                r[0].map_err(io_err(name, "write rebuilt chunk"))?;
                rebuilt += 1;
            }
        }
        for r in run_io(&mut one, &[(0, IoCmd::flush(0))]) {
            r.map_err(io_err(name, "flush"))?;
        }
        let [Some(dev)] = one else {
            unreachable!("the array holds the device")
        };
        self.joining = Some((index, dev));
        Ok(rebuilt)
    }

    /// Second step: the rebuilt replacement joins slot `index` as a
    /// healthy member (new chunks may go to it, reads use it, metadata is
    /// mirrored to it), and a checkpoint puts this shard's state on it now
    /// (when no record waits for other shards; otherwise the next one does).
    pub fn adopt_join(&mut self, index: usize) -> Result<()> {
        match self.joining.take() {
            Some((i, dev)) if i == index && self.devs.get(i).is_some_and(|d| d.is_none()) => {
                self.devs[i] = Some(dev);
            }
            _ => {
                return Err(StoreError::Invalid {
                    reason: format!("no replacement is being rebuilt into device slot {index}"),
                })
            }
        }
        if self.waits.is_empty() {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Gives up a replacement held by [`Store::adopt_rebuild`].
    pub fn adopt_abort(&mut self) {
        self.joining = None;
    }

    /// Space and reduction figures.
    pub fn space(&self) -> SpaceStats {
        let cs = self.layout.chunk_blocks * 4096;
        let used_slots: u64 = self
            .meta
            .stripes
            .values()
            .map(|s| s.chunks.len() as u64)
            .sum();
        let mut distinct: HashMap<BlockAddr, ()> = HashMap::new();
        let mut refs = 0u64;
        let mut stored = 0u64;
        for i in self.meta.inodes.values() {
            for b in i.blocks.values() {
                refs += 1;
                if b.owner().is_none() && distinct.insert(b.addr, ()).is_none() {
                    stored += u64::from(b.addr.stored_len);
                }
            }
        }
        for b in self.meta.shared.values() {
            if distinct.insert(b.addr, ()).is_none() {
                stored += u64::from(b.addr.stored_len);
            }
        }
        SpaceStats {
            logical: self
                .meta
                .inodes
                .values()
                .filter(|i| !i.is_part())
                .map(|i| i.size)
                .sum(),
            physical: used_slots * cs,
            capacity: self.layout.owned_slots() * self.devs.len() as u64 * cs,
            dedup_ratio: 1.0,
            compression_ratio: 1.0,
            block_refs: refs,
            stored_blocks: distinct.len() as u64,
            stored_bytes: stored,
        }
        .with_ratios()
    }

    /// Checks the metadata's invariants: every block reference names a
    /// stripe that exists, no chunk slot is claimed twice or also free, and
    /// every stripe's chunks are on distinct devices. Returns what is wrong.
    pub fn fsck(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut owner: HashMap<(u16, u64), u64> = HashMap::new();
        for s in self.meta.stripes.values() {
            let mut devs: Vec<u16> = s.chunks.iter().map(|c| c.0).collect();
            devs.sort_unstable();
            devs.dedup();
            if devs.len() != s.chunks.len() {
                bad.push(format!("stripe {} has two chunks on one device", s.id));
            }
            for &c in &s.chunks {
                if let Some(other) = owner.insert(c, s.id) {
                    bad.push(format!(
                        "slot {c:?} is claimed by stripes {other} and {}",
                        s.id
                    ));
                }
                if self
                    .free
                    .get(usize::from(c.0))
                    .is_some_and(|f| f.contains(&c.1))
                {
                    bad.push(format!("slot {c:?} of stripe {} is also free", s.id));
                }
            }
        }
        let open = |fs: FsId, a: &BlockAddr| {
            self.writers.get(&fs).is_some_and(|w| {
                w.pipeline.open_stripe() == a.stripe
                    && w.pipeline.has_open_data()
                    && w.pipeline.open_bytes(a).is_some()
            })
        };
        for (&(fs, key), b) in &self.meta.shared {
            if !open(fs, &b.addr) && !self.meta.stripes.contains_key(&b.addr.stripe) {
                bad.push(format!(
                    "shared block {key:#x} refers to missing stripe {}",
                    b.addr.stripe
                ));
            }
        }
        for i in self.meta.inodes.values() {
            for (idx, b) in i.blocks.iter() {
                if let Some(owner) = b.owner() {
                    if owner == self.layout.shard && !self.meta.shared.contains_key(&(i.fs, b.fp)) {
                        bad.push(format!(
                            "file {} block {idx} refers to missing shared block {:#x}",
                            i.ino, b.fp
                        ));
                    }
                    continue;
                }
                let open = self.writers.get(&i.fs).is_some_and(|w| {
                    w.pipeline.open_stripe() == b.addr.stripe
                        && w.pipeline.has_open_data()
                        && w.pipeline.open_bytes(&b.addr).is_some()
                });
                if !open && !self.meta.stripes.contains_key(&b.addr.stripe) {
                    bad.push(format!(
                        "file {} block {idx} refers to missing stripe {}",
                        i.ino, b.addr.stripe
                    ));
                }
            }
        }
        bad
    }

    /// Share of chunk slots free, 0.0 to 1.0.
    pub fn free_fraction(&self) -> f64 {
        let total = self.layout.owned_slots() * self.devs.len() as u64;
        let free: u64 = self.free.iter().map(|f| f.len() as u64).sum();
        if total == 0 {
            0.0
        } else {
            free as f64 / total as f64
        }
    }

    /// Repair counters.
    pub fn repairs(&self) -> RepairStats {
        self.repairs
    }

    /// Devices by index: (name, present and healthy).
    pub fn devices(&self) -> Vec<(String, bool)> {
        self.devs
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Some(d) => (d.name.clone(), !d.failed),
                None => (format!("device {i} (missing)"), false),
            })
            .collect()
    }

    /// Every device as this shard sees it: health, errors, and this
    /// shard's share of its chunk slots (total and free, in bytes).
    pub fn device_report(&self) -> Vec<DeviceReport> {
        let cs = self.layout.chunk_blocks * 4096;
        self.devs
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceReport {
                index: i,
                name: d
                    .as_ref()
                    .map_or_else(|| format!("device {i}"), |d| d.name.clone()),
                present: d.is_some(),
                healthy: d.as_ref().is_some_and(|d| !d.failed),
                errors: d.as_ref().map_or(0, |d| d.errors),
                capacity: self.layout.owned_slots() * cs,
                free: self.free.get(i).map_or(0, |f| f.len() as u64) * cs,
            })
            .collect()
    }

    /// The engine's uuid.
    pub fn uuid(&self) -> u128 {
        self.uuid
    }

    /// Where a file's block lives (for tests and tools): its address, the
    /// (device, slot) of each chunk of its stripe, and the device layout.
    pub fn block_location(&self, ino: Ino, idx: u64) -> Option<BlockLocation> {
        let b = self.meta.inodes.get(&ino)?.blocks.get(&idx)?;
        let s = self.meta.stripes.get(&b.addr.stripe)?;
        Some((b.addr, s.chunks.clone(), self.layout))
    }
}

/// Verify-on-hit reads for the pipeline, from the store.
struct StoreReader<'a> {
    store: &'a mut Store,
    fs: FsId,
}

impl BlockReader for StoreReader<'_> {
    fn read_stored(&mut self, addr: &BlockAddr, out: &mut [u8]) -> bool {
        self.store.read_stored(self.fs, addr, out).is_ok()
    }
}

fn open_qpairs(core: &mut Core, devices: &[Arc<dyn BlockDevice>]) -> Result<Vec<Option<Dev>>> {
    devices
        .iter()
        .map(|d| {
            Ok(Some(Dev {
                name: d.name().to_string(),
                qp: d.queue_pair(core, &QpairOptions { depth: 64 })?,
                failed: false,
                errors: 0,
            }))
        })
        .collect()
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('/') || name.contains('\0') {
        return Err(StoreError::Invalid {
            reason: format!("name `{name}` must be 1 to {MAX_NAME} bytes without '/' or NUL"),
        });
    }
    Ok(())
}

fn not_found(ino: Ino) -> StoreError {
    StoreError::NotFound {
        what: format!("file {ino}"),
    }
}

fn ec_err(e: EcError) -> StoreError {
    StoreError::Invalid {
        reason: e.to_string(),
    }
}

pub(crate) fn new_uuid() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x =
        xxhash_rust::xxh3::xxh3_128_with_seed(&t.to_le_bytes(), u64::from(std::process::id()));
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            x ^= u128::from_le_bytes(buf);
        }
    }
    x
}
