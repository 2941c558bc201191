//! The write pipeline: fingerprint -> dedup -> compress -> pack into the
//! open stripe -> erasure code -> checksum.
//!
//! Each stage is a trait with one file per implementation, a fast one and a
//! plain reference one, and tests holding them equal. [`WritePipeline`]
//! chains them for one core: blocks go in, and whenever the open stripe's k
//! data chunks are full (or the caller seals it: fsync, timer) a
//! [`SealedStripe`] of k data + m parity chunks, each with its checksum,
//! comes out for the caller to write — whole, never a parity
//! read-modify-write.

pub mod checksum;
pub mod compress;
pub mod dedup;
pub mod ec;
pub mod fingerprint;

use std::sync::Arc;

use flint_dataplane::mempool::{DmaRegion, HugePages};

use checksum::{Checksummer, SEED_CHUNK};
use compress::Compressor;
use dedup::{DedupIndex, OrgId};
use ec::{Codec, EcError, EcKernel};
use fingerprint::{Fingerprint, Fingerprinter};

/// The unit chunks are checksummed in.
pub const SECTOR: usize = 4096;

/// Where a stored block lives: a byte range inside one data chunk of a stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockAddr {
    /// The stripe.
    pub stripe: u64,
    /// The data chunk within the stripe (0..k).
    pub chunk: u16,
    /// Byte offset within the chunk.
    pub offset: u32,
    /// Bytes stored (compressed length, or the block size).
    pub stored_len: u32,
    /// Whether the stored bytes are LZ4-compressed.
    pub compressed: bool,
}

/// Pipeline settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Data chunks per stripe.
    pub k: usize,
    /// Parity chunks per stripe.
    pub m: usize,
    /// Bytes per chunk (a multiple of 4 KiB).
    pub chunk_size: usize,
    /// Logical block size.
    pub block_size: usize,
    /// Dedup and compression on.
    pub reduction: bool,
}

/// Counters of what the pipeline did.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelineStats {
    /// Logical bytes written.
    pub logical: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Blocks that were duplicates (stored once).
    pub dedup_hits: u64,
    /// Fingerprint matches whose bytes differed (collisions, refused).
    pub collisions: u64,
    /// Blocks stored compressed.
    pub compressed: u64,
    /// Payload bytes packed into data chunks.
    pub packed: u64,
    /// Bytes of data chunks sealed (including unused tails).
    pub data_written: u64,
    /// Bytes of parity chunks sealed.
    pub parity_written: u64,
    /// Stripes sealed.
    pub stripes: u64,
}

/// A sealed stripe: what the caller writes to k+m devices.
pub struct SealedStripe<'a> {
    /// Stripe id.
    pub id: u64,
    /// k data chunks then m parity chunks, `chunk_size` bytes each.
    pub chunks: Vec<&'a [u8]>,
    /// Checksum of every [`SECTOR`]-byte sector of every chunk, chunk-major
    /// (so a 4 KiB read verifies without reading the whole chunk).
    pub checksums: &'a [u64],
    /// Payload bytes used in each data chunk.
    pub used: &'a [u32],
}

/// Reads back a stored block's stored bytes for verify-on-hit.
pub trait BlockReader {
    /// Copies the `addr.stored_len` stored bytes into `out`; false if the
    /// block cannot be read (then the hit is not trusted).
    fn read_stored(&mut self, addr: &BlockAddr, out: &mut [u8]) -> bool;
}

/// What happened to one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A verified duplicate: the block already lives at this address (its
    /// reference count was raised).
    Dup(BlockAddr),
    /// Stored anew at this address, in the open stripe.
    New(BlockAddr),
}

/// The pipeline's stage implementations.
pub struct Stages {
    /// Fingerprinting.
    pub fingerprint: Box<dyn Fingerprinter>,
    /// Compression.
    pub compress: Box<dyn Compressor>,
    /// The dedup index (this core's partition).
    pub index: Box<dyn DedupIndex>,
    /// Erasure-coding kernel.
    pub ec: Arc<dyn EcKernel>,
    /// Checksums.
    pub checksum: Box<dyn Checksummer>,
}

impl Stages {
    /// The fast implementation of every stage.
    pub fn fast() -> Self {
        Self::fast_sized(1024)
    }

    /// The fast stages with a dedup index sized for `blocks` entries up
    /// front (the engine sizes it from capacity, so it does not rehash
    /// under load).
    pub fn fast_sized(blocks: usize) -> Self {
        Stages {
            fingerprint: Box::new(fingerprint::Xxh3),
            compress: Box::new(compress::Lz4Probe),
            index: Box::new(dedup::HashIndex::with_capacity(blocks)),
            ec: ec::best_kernel(),
            checksum: Box::new(checksum::Xxh3Sum),
        }
    }

    /// The reference implementation of every stage.
    pub fn reference() -> Self {
        Stages {
            fingerprint: Box::new(fingerprint::Xxh3Streaming),
            compress: Box::new(compress::Lz4Always),
            index: Box::new(dedup::BTreeIndex::default()),
            ec: Arc::new(ec::reference::Reference),
            checksum: Box::new(checksum::Xxh3SumStreaming),
        }
    }
}

/// One core's write pipeline.
pub struct WritePipeline {
    cfg: PipelineConfig,
    stages: Stages,
    codec: Codec,
    /// k data chunks then m parity chunks, contiguous, 4 KiB-aligned DMA
    /// memory (devices write straight from it).
    region: DmaRegion,
    buf_len: usize,
    used: Vec<u32>,
    checksums: Vec<u64>,
    chunk: usize,
    stripe: u64,
    scratch: Vec<u8>,
    verify: Vec<u8>,
    stats: PipelineStats,
    last_fp: Option<Fingerprint>,
}

impl WritePipeline {
    /// A pipeline whose first stripe id is `first_stripe`.
    pub fn new(cfg: PipelineConfig, stages: Stages, first_stripe: u64) -> Result<Self, EcError> {
        if cfg.chunk_size == 0
            || !cfg.chunk_size.is_multiple_of(4096)
            || cfg.block_size > cfg.chunk_size
        {
            return Err(EcError::Shape {
                what: "chunk size must be a positive multiple of 4 KiB and hold a block",
            });
        }
        let codec = Codec::new(cfg.k, cfg.m, stages.ec.clone())?;
        let buf_len = (cfg.k + cfg.m) * cfg.chunk_size;
        let region = DmaRegion::new(buf_len, HugePages::Auto).map_err(|_| EcError::Shape {
            what: "cannot map memory for the stripe buffer",
        })?;
        Ok(WritePipeline {
            region,
            buf_len,
            used: vec![0; cfg.k],
            checksums: vec![0; (cfg.k + cfg.m) * (cfg.chunk_size / SECTOR)],
            chunk: 0,
            stripe: first_stripe,
            scratch: vec![0; compress::bound(cfg.block_size)],
            verify: vec![0; cfg.block_size],
            stats: PipelineStats::default(),
            last_fp: None,
            cfg,
            stages,
            codec,
        })
    }

    fn buf(&self) -> &[u8] {
        &self.region.as_slice()[..self.buf_len]
    }

    fn buf_mut(&mut self) -> &mut [u8] {
        let len = self.buf_len;
        &mut self.region.as_mut_slice()[..len]
    }

    /// The stripe buffer's memory, to register with queue pairs.
    pub fn region(&self) -> &DmaRegion {
        &self.region
    }

    /// What the pipeline has done so far.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The dedup index.
    pub fn index_mut(&mut self) -> &mut dyn DedupIndex {
        &mut *self.stages.index
    }

    /// The id the open stripe will have when sealed.
    pub fn open_stripe(&self) -> u64 {
        self.stripe
    }

    /// Whether the next block could fill the open stripe and seal it (the
    /// caller then needs room for the stripe after it).
    pub fn may_seal_next(&self) -> bool {
        self.chunk + 1 == self.cfg.k
            && self.used[self.chunk] as usize + self.cfg.block_size > self.cfg.chunk_size
    }

    /// Whether the open stripe holds any block.
    pub fn has_open_data(&self) -> bool {
        self.chunk > 0 || self.used[0] > 0
    }

    /// How far the open stripe is filled: the chunk being packed and the
    /// bytes used in each data chunk (chunks fill in order).
    pub fn fill(&self) -> (usize, &[u32]) {
        (self.chunk, &self.used)
    }

    /// Bytes `[from, to)` of data chunk `chunk` of the open stripe.
    pub fn open_range(&self, chunk: usize, from: u32, to: u32) -> &[u8] {
        debug_assert!(chunk < self.cfg.k && from <= to && to <= self.used[chunk]);
        let start = chunk * self.cfg.chunk_size;
        &self.buf()[start + from as usize..start + to as usize]
    }

    /// Reopens stripe `id` with the stored bytes it held before a crash
    /// (`(chunk, offset, bytes)` pieces from the write-ahead log), for
    /// [`WritePipeline::seal`] to seal as it would have been. The pipeline
    /// must have nothing open; afterwards it opens stripe `id + 1`.
    pub fn restore(&mut self, id: u64, pieces: &[(u16, u32, &[u8])]) -> Result<(), EcError> {
        debug_assert!(!self.has_open_data(), "restoring over an open stripe");
        let cs = self.cfg.chunk_size;
        for &(c, off, bytes) in pieces {
            let (c, off) = (usize::from(c), off as usize);
            if c >= self.cfg.k || off + bytes.len() > cs {
                return Err(EcError::Shape {
                    what: "a logged piece lies outside the stripe's data chunks",
                });
            }
        }
        self.stripe = id;
        self.used.fill(0);
        self.chunk = 0;
        for &(c, off, bytes) in pieces {
            let (c, off) = (usize::from(c), off as usize);
            self.buf_mut()[c * cs + off..c * cs + off + bytes.len()].copy_from_slice(bytes);
            self.used[c] = self.used[c].max((off + bytes.len()) as u32);
            self.chunk = self.chunk.max(c);
        }
        Ok(())
    }

    /// Makes the open stripe's id at least `id` (nothing may be open).
    pub fn skip_to(&mut self, id: u64) {
        debug_assert!(!self.has_open_data(), "renumbering an open stripe");
        self.stripe = self.stripe.max(id);
    }

    /// The stored bytes of a block still in the open stripe.
    pub fn open_bytes(&self, addr: &BlockAddr) -> Option<&[u8]> {
        if addr.stripe != self.stripe || usize::from(addr.chunk) >= self.cfg.k {
            return None;
        }
        let start = usize::from(addr.chunk) * self.cfg.chunk_size + addr.offset as usize;
        self.buf().get(start..start + addr.stored_len as usize)
    }

    /// The fingerprint under which the last written block is indexed
    /// (`None`: not indexed — no reduction, or a collision stored apart).
    pub fn last_fingerprint(&self) -> Option<Fingerprint> {
        self.last_fp
    }

    /// Fingerprints a block (exposed so callers can route by partition).
    pub fn fingerprint(&self, block: &[u8]) -> Fingerprint {
        self.stages.fingerprint.fingerprint(block)
    }

    /// Whether the stored form at `addr` decodes to exactly `block`.
    fn same_bytes(&mut self, addr: &BlockAddr, block: &[u8], reader: &mut dyn BlockReader) -> bool {
        let len = addr.stored_len as usize;
        let mut stored = std::mem::take(&mut self.scratch);
        let ok = match self.open_bytes(addr) {
            Some(b) => {
                stored[..len].copy_from_slice(b);
                true
            }
            None => reader.read_stored(addr, &mut stored[..len]),
        };
        let same = ok
            && if addr.compressed {
                let mut plain = std::mem::take(&mut self.verify);
                let same = self
                    .stages
                    .compress
                    .decompress(&stored[..len], &mut plain[..block.len()])
                    .is_ok()
                    && plain[..block.len()] == *block;
                self.verify = plain;
                same
            } else {
                stored[..len] == *block
            };
        self.scratch = stored;
        same
    }

    /// Runs one block through the pipeline for organization `org`. Sealed
    /// stripes go to `sink`; `reader` fetches stored blocks for
    /// verify-on-hit. A duplicate whose bytes differ (a fingerprint
    /// collision) is stored as a new block and never shared.
    pub fn write_block(
        &mut self,
        org: OrgId,
        block: &[u8],
        reader: &mut dyn BlockReader,
        sink: &mut dyn FnMut(SealedStripe<'_>),
    ) -> Placed {
        let fp = self
            .cfg
            .reduction
            .then(|| self.stages.fingerprint.fingerprint(block));
        self.write_fingerprinted(org, block, fp, reader, sink)
    }

    /// Runs a batch of blocks through the pipeline: fingerprints them all
    /// first and prefetches their dedup index slots, so the index's cache
    /// misses overlap instead of stalling one block at a time. `out`
    /// receives each block's placement and indexed fingerprint.
    pub fn write_blocks(
        &mut self,
        org: OrgId,
        blocks: &[&[u8]],
        reader: &mut dyn BlockReader,
        sink: &mut dyn FnMut(SealedStripe<'_>),
        out: &mut Vec<(Placed, Option<Fingerprint>)>,
    ) {
        let mut fps = [0u128; 16];
        for batch in blocks.chunks(fps.len()) {
            if self.cfg.reduction {
                for (f, b) in fps.iter_mut().zip(batch) {
                    *f = self.stages.fingerprint.fingerprint(b);
                    self.stages.index.prefetch(org, *f);
                }
            }
            for (i, b) in batch.iter().enumerate() {
                let fp = self.cfg.reduction.then_some(fps[i]);
                let placed = self.write_fingerprinted(org, b, fp, reader, sink);
                out.push((placed, self.last_fp));
            }
        }
    }

    fn write_fingerprinted(
        &mut self,
        org: OrgId,
        block: &[u8],
        fingerprint: Option<Fingerprint>,
        reader: &mut dyn BlockReader,
        sink: &mut dyn FnMut(SealedStripe<'_>),
    ) -> Placed {
        self.stats.logical += block.len() as u64;
        self.stats.blocks += 1;
        self.last_fp = None;
        let mut fp = None;
        if let Some(f) = fingerprint {
            fp = Some(f);
            if let Some(e) = self.stages.index.get(org, f) {
                if self.same_bytes(&e.location, block, reader) {
                    self.stages.index.add_ref(org, f);
                    self.stats.dedup_hits += 1;
                    self.last_fp = Some(f);
                    return Placed::Dup(e.location);
                }
                self.stats.collisions += 1;
                fp = None;
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let compressed = if self.cfg.reduction {
            self.stages.compress.compress(block, &mut scratch)
        } else {
            None
        };
        let payload: &[u8] = match compressed {
            Some(n) => &scratch[..n],
            None => block,
        };
        let addr = self.pack(payload, compressed.is_some(), sink);
        if compressed.is_some() {
            self.stats.compressed += 1;
        }
        self.scratch = scratch;
        if let Some(f) = fp {
            self.stages.index.insert(org, f, addr);
            self.last_fp = Some(f);
        }
        Placed::New(addr)
    }

    /// Appends stored bytes to the open stripe, sealing it first if they do
    /// not fit; returns where they landed.
    fn pack(
        &mut self,
        payload: &[u8],
        compressed: bool,
        sink: &mut dyn FnMut(SealedStripe<'_>),
    ) -> BlockAddr {
        if self.used[self.chunk] as usize + payload.len() > self.cfg.chunk_size {
            self.chunk += 1;
            if self.chunk == self.cfg.k {
                self.seal(sink);
            }
        }
        let offset = self.used[self.chunk];
        let start = self.chunk * self.cfg.chunk_size + offset as usize;
        self.buf_mut()[start..start + payload.len()].copy_from_slice(payload);
        self.used[self.chunk] += payload.len() as u32;
        self.stats.packed += payload.len() as u64;
        BlockAddr {
            stripe: self.stripe,
            chunk: self.chunk as u16,
            offset,
            stored_len: payload.len() as u32,
            compressed,
        }
    }

    /// Moves a stored block (already fingerprinted, deduplicated and
    /// compressed) into the open stripe as is: garbage collection's path.
    /// The caller updates every reference and the dedup index.
    pub fn relocate(
        &mut self,
        stored: &[u8],
        compressed: bool,
        sink: &mut dyn FnMut(SealedStripe<'_>),
    ) -> BlockAddr {
        self.pack(stored, compressed, sink)
    }

    /// Seals the open stripe (if it holds anything): zero the unused tails,
    /// compute parity and checksums, hand it to `sink`, open the next one.
    pub fn seal(&mut self, sink: &mut dyn FnMut(SealedStripe<'_>)) {
        if !self.has_open_data() {
            return;
        }
        let (k, m, cs) = (self.cfg.k, self.cfg.m, self.cfg.chunk_size);
        for c in 0..k {
            let used = self.used[c] as usize;
            self.buf_mut()[c * cs + used..(c + 1) * cs].fill(0);
        }
        {
            let len = self.buf_len;
            let (data, parity) = self.region.as_mut_slice()[..len].split_at_mut(k * cs);
            let data: Vec<&[u8]> = data.chunks(cs).collect();
            let mut parity: Vec<&mut [u8]> = parity.chunks_mut(cs).collect();
            // Shapes are fixed at construction, so encoding cannot fail.
            let _ = self.codec.encode(&data, &mut parity);
        }
        let len = self.buf_len;
        for (i, sector) in self.region.as_slice()[..len].chunks(SECTOR).enumerate() {
            self.checksums[i] = self.stages.checksum.checksum(SEED_CHUNK, sector);
        }
        self.stats.stripes += 1;
        self.stats.data_written += (k * cs) as u64;
        self.stats.parity_written += (m * cs) as u64;
        sink(SealedStripe {
            id: self.stripe,
            chunks: self.region.as_slice()[..len].chunks(cs).collect(),
            checksums: &self.checksums,
            used: &self.used,
        });
        self.stripe += 1;
        self.chunk = 0;
        self.used.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Keeps sealed stripes in memory and serves verify-on-hit reads.
    #[derive(Default)]
    struct Store {
        stripes: HashMap<u64, Vec<Vec<u8>>>,
        sums: HashMap<u64, Vec<u64>>,
    }

    impl BlockReader for Store {
        fn read_stored(&mut self, a: &BlockAddr, out: &mut [u8]) -> bool {
            match self.stripes.get(&a.stripe) {
                Some(s) => {
                    let c = &s[usize::from(a.chunk)];
                    out.copy_from_slice(&c[a.offset as usize..a.offset as usize + out.len()]);
                    true
                }
                None => false,
            }
        }
    }

    fn dataset(n: usize) -> Vec<Vec<u8>> {
        let mut x = 77u64;
        (0..n)
            .map(|i| {
                let mut b = vec![0u8; 4096];
                match i % 4 {
                    0 => b.iter_mut().for_each(|v| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *v = x as u8
                    }),
                    1 => b
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v = b"flint "[j % 6]),
                    2 => b.fill((i / 8) as u8), // repeats: duplicates
                    _ => b
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v = (j * i) as u8),
                }
                b
            })
            .collect()
    }

    fn run(stages: Stages, reduction: bool) -> (Store, Vec<Placed>, PipelineStats) {
        let cfg = PipelineConfig {
            k: 4,
            m: 2,
            chunk_size: 64 << 10,
            block_size: 4096,
            reduction,
        };
        let mut p = WritePipeline::new(cfg, stages, 1).unwrap();
        let mut store = Store::default();
        let mut placed = Vec::new();
        let mut sealed: Vec<(u64, Vec<Vec<u8>>, Vec<u64>)> = Vec::new();
        for b in dataset(400) {
            let mut sink = |s: SealedStripe<'_>| {
                sealed.push((
                    s.id,
                    s.chunks.iter().map(|c| c.to_vec()).collect(),
                    s.checksums.to_vec(),
                ))
            };
            placed.push(p.write_block(1, &b, &mut store, &mut sink));
            for (id, chunks, sums) in sealed.drain(..) {
                store.stripes.insert(id, chunks);
                store.sums.insert(id, sums);
            }
        }
        p.seal(&mut |s| {
            store
                .stripes
                .insert(s.id, s.chunks.iter().map(|c| c.to_vec()).collect());
            store.sums.insert(s.id, s.checksums.to_vec());
        });
        (store, placed, p.stats())
    }

    fn read_back(store: &Store, addr: &BlockAddr) -> Vec<u8> {
        let c = &store.stripes[&addr.stripe][usize::from(addr.chunk)];
        let stored = &c[addr.offset as usize..(addr.offset + addr.stored_len) as usize];
        if addr.compressed {
            let mut out = vec![0u8; 4096];
            compress::Lz4Probe.decompress(stored, &mut out).unwrap();
            out
        } else {
            stored.to_vec()
        }
    }

    #[test]
    fn every_block_reads_back_and_fast_equals_reference() {
        for reduction in [true, false] {
            let (fast_store, fast_placed, fast_stats) = run(Stages::fast(), reduction);
            let (ref_store, _, ref_stats) = run(Stages::reference(), reduction);
            for (b, p) in dataset(400).iter().zip(&fast_placed) {
                let (Placed::Dup(a) | Placed::New(a)) = p;
                assert_eq!(&read_back(&fast_store, a), b);
            }
            assert_eq!(fast_stats.dedup_hits, ref_stats.dedup_hits);
            assert_eq!(fast_stats.logical, ref_stats.logical);
            if reduction {
                assert!(fast_stats.dedup_hits > 40, "{fast_stats:?}");
                assert!(fast_stats.compressed > 50, "{fast_stats:?}");
            } else {
                assert_eq!(fast_stats.dedup_hits + fast_stats.compressed, 0);
            }
            // Parity and checksums: every stripe's parity rebuilds lost data
            // and every checksum matches its chunk.
            let codec = Codec::new(4, 2, ec::best_kernel()).unwrap();
            for (id, chunks) in &fast_store.stripes {
                let sectors = chunks.iter().flat_map(|c| c.chunks(SECTOR));
                for (sector, sum) in sectors.zip(&fast_store.sums[id]) {
                    assert_eq!(checksum::Xxh3Sum.checksum(SEED_CHUNK, sector), *sum);
                }
                let view: Vec<Option<&[u8]>> = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i >= 2).then_some(&c[..]))
                    .collect();
                let mut out = vec![vec![0u8; 64 << 10]; 2];
                let mut outs: Vec<&mut [u8]> = out.iter_mut().map(|c| &mut c[..]).collect();
                codec.reconstruct(&view, &[0, 1], &mut outs).unwrap();
                assert_eq!(out[0], chunks[0]);
                assert_eq!(out[1], chunks[1]);
            }
            let _ = ref_store;
        }
    }

    #[test]
    fn batched_writes_place_blocks_exactly_as_single_writes() {
        let cfg = PipelineConfig {
            k: 4,
            m: 2,
            chunk_size: 64 << 10,
            block_size: 4096,
            reduction: true,
        };
        let data = dataset(300);
        let mut one = WritePipeline::new(cfg, Stages::fast(), 0).unwrap();
        let mut many = WritePipeline::new(cfg, Stages::fast(), 0).unwrap();
        let mut store = Store::default();
        let singles: Vec<Placed> = data
            .iter()
            .map(|b| one.write_block(1, b, &mut store, &mut |_| {}))
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|b| &b[..]).collect();
        let mut out = Vec::new();
        many.write_blocks(1, &refs, &mut store, &mut |_| {}, &mut out);
        let batched: Vec<Placed> = out.iter().map(|(p, _)| *p).collect();
        assert_eq!(singles, batched);
        assert_eq!(one.stats().dedup_hits, many.stats().dedup_hits);
    }

    /// A fingerprinter that maps every block to one value, as a crafted
    /// collision would.
    struct Colliding;
    impl Fingerprinter for Colliding {
        fn name(&self) -> &'static str {
            "colliding"
        }
        fn fingerprint(&self, _: &[u8]) -> Fingerprint {
            7
        }
    }

    #[test]
    fn a_fingerprint_collision_never_shares_data() {
        let mut stages = Stages::fast();
        stages.fingerprint = Box::new(Colliding);
        let cfg = PipelineConfig {
            k: 2,
            m: 1,
            chunk_size: 8192,
            block_size: 4096,
            reduction: true,
        };
        let mut p = WritePipeline::new(cfg, stages, 0).unwrap();
        let mut store = Store::default();
        let a = vec![1u8; 4096];
        let b = vec![2u8; 4096];
        let pa = p.write_block(1, &a, &mut store, &mut |_| {});
        let pb = p.write_block(1, &b, &mut store, &mut |_| {});
        let pa2 = p.write_block(1, &a, &mut store, &mut |_| {});
        assert!(matches!(pa, Placed::New(_)));
        assert!(
            matches!(pb, Placed::New(_)),
            "b must not be deduplicated against a"
        );
        assert_eq!(
            pa2,
            Placed::Dup(match pa {
                Placed::New(x) => x,
                Placed::Dup(x) => x,
            })
        );
        assert_eq!(p.stats().collisions, 1);
    }
}
