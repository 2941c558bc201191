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
//!
//! The store's parts, one concern a file:
//!
//! | file | owns |
//! |---|---|
//! | `open.rs` | formatting, opening a shard, superblocks |
//! | `recover.rs` | checkpoint + journal replay, derived state rebuilt |
//! | `journal.rs` | records queued, ordered across shards, journaled at sync |
//! | `checkpoint.rs` | changed metadata pages, then the root into the spare checkpoint slot |
//! | `pages.rs` | the metadata page space: page chunks in chunk slots, mirrored |
//! | `alloc.rs` | free chunk slots: the reserve → use → free-once-durable lifecycle |
//! | `write.rs` | the pipeline, open stripes, full-stripe writes |
//! | `wal.rs` | the write-ahead log: open stripes' bytes in the journal, restored after a crash |
//! | `read.rs` | verified reads, runs of contiguous blocks |
//! | `repair.rs` | degraded reads and self-heal from parity |
//! | `shared.rs` | this shard's part of the engine-wide dedup pool |
//! | `names.rs` | the namespace: directories, names, links, attributes, paths |
//! | `files.rs`, `parts.rs`, `fs.rs` | files' data, their ranges on other shards, file systems and organizations |
//! | `gc.rs`, `scrub.rs`, `replace.rs` | background and repair work |
//! | `io.rs` | queue-pair I/O, aligned buffers, mirrored metadata writes |
//! | `report.rs`, `fsck.rs`, `error.rs` | figures, invariant checks, errors |

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flint_dataplane::bdev::{BlockDevice, Completion, IoCmd, QpairOptions, QueuePair};
use flint_dataplane::reactor::Core;
use flint_dataplane::{Error as DpError, IoError};

use crate::codec::Writer;
use crate::format::{self, FormatError, Layout, Superblock, CHECKPOINT_MAGIC, JOURNAL_MAGIC};
use crate::meta::btree::{PageIo, TreeError};
use crate::meta::{self, BlockRef, FsId, FsMeta, Ino, Meta, Record, Shared, StripeMeta, MAX_NAME};
use crate::pipeline::checksum::{Checksummer, Xxh3Sum, SEED_CHUNK};
use crate::pipeline::compress::{Compressor, Lz4Probe};
use crate::pipeline::ec::{best_kernel, Codec, EcError, Prepared};
use crate::pipeline::{
    BlockAddr, BlockReader, PipelineConfig, Placed, SealedStripe, Stages, WritePipeline, SECTOR,
};

mod alloc;
mod checkpoint;
mod error;
mod evacuate;
mod files;
mod fs;
mod fsck;
mod gc;
mod io;
mod journal;
mod names;
mod open;
mod pages;
mod parts;
mod quota;
mod read;
mod recover;
mod repair;
mod replace;
mod report;
mod scrub;
mod shared;
mod snap;
mod span;
mod wal;
mod write;

pub use error::{Result, StoreError};
pub use evacuate::Evacuation;
pub(crate) use fs::check_name;
pub use journal::Receipt;
pub use names::{components, now_nanos, MAX_SYMLINKS};
pub use open::META_CACHE_MIB;
pub use quota::QuotaBook;
pub use read::RemoteRead;
pub use report::{
    BlockLocation, DeviceReport, GcReport, RepairStats, ScrubReport, SpaceStats, Stat,
};
pub use shared::{Journaled, SharedDrop};
pub use span::Walk;
use {alloc::Slots, error::*, io::*, pages::*, read::*, repair::*, wal::*, write::*};

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

/// A single-node store on one reactor.
pub struct Store {
    devs: Vec<Option<Dev>>,
    layout: Layout,
    uuid: u128,
    meta: Meta,
    /// Bytes the metadata page cache may hold.
    meta_cache: usize,
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
    /// Free chunk slots, and slots waiting for the records freeing them.
    slots: Slots,
    /// Where the metadata tree's pages live.
    space: PageSpace,
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
    /// Every shard's quota counts and the quotas (set by the engine).
    quotas: Option<Arc<QuotaBook>>,
    /// References to blocks in each stripe.
    refs: HashMap<u64, u64>,
    seq: u64,
    head: u64,
    ckpt_slot: u64,
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
    /// Stored bytes one read fetched ahead, all device commands at once
    /// and verified (`read::prefetch`); emptied when the read ends.
    ahead: HashMap<AheadKey, Vec<u8>>,
    /// Reused aligned buffer a sealed stripe is written from.
    wbuf: Option<Scratch>,
    /// Erasure codecs by (k, m), for rebuilds.
    codecs: HashMap<(u8, u8), Codec>,
    /// Prepared decoders by (k, m, present chunks, wanted chunk).
    decoders: HashMap<DecoderKey, Box<dyn Prepared>>,
    /// Stripes with chunks on lost devices, to evacuate.
    evac: evacuate::EvacQueue,
}

/// The metadata page space bound to a store's devices and allocator
/// (disjoint from its other fields, which a scan's callback may use).
macro_rules! dev_pages {
    ($s:expr) => {
        DevPages {
            devs: &mut $s.devs,
            space: &mut $s.space,
            slots: &mut $s.slots,
            layout: &$s.layout,
        }
    };
}
pub(super) use dev_pages;

impl Store {
    /// Runs `f` on the metadata with the page space it reads and writes
    /// through (the shard's devices and allocator).
    pub(super) fn with_meta<T>(
        &mut self,
        f: impl FnOnce(&mut Meta, &mut dyn PageIo) -> Result<T, TreeError>,
    ) -> Result<T> {
        let r = f(&mut self.meta, &mut dev_pages!(self)).map_err(meta_err);
        self.publish_quotas();
        r
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

impl Store {
    /// The engine's uuid.
    pub fn uuid(&self) -> u128 {
        self.uuid
    }
}
