//! What the store reports about itself: file attributes, space and
//! reduction figures, devices, repair counters, and the reports of scrub
//! and garbage collection.

use std::collections::HashSet;

use super::*;

/// Where a block lives: its address, the (device, slot) of each chunk of its
/// stripe, and the device layout.
pub type BlockLocation = (BlockAddr, Vec<(u16, u64)>, Layout);

/// An inode's attributes, as `stat` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Inode number.
    pub ino: Ino,
    /// File system.
    pub fs: FsId,
    /// The entry's name when listed from a directory (empty otherwise).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical blocks stored on the inode's home shard (holes excluded).
    pub blocks: u64,
    /// Kind and permission bits (`st_mode`).
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of a device node.
    pub rdev: u32,
    /// Last access, in nanoseconds since the epoch.
    pub atime: i64,
    /// Last change of the contents.
    pub mtime: i64,
    /// Last change of the inode.
    pub ctime: i64,
    /// Generation: with the number, names this inode and no later one.
    pub generation: u64,
    /// A directory's parent (its `..`; the root's is itself); 0 for others.
    pub parent: Ino,
}

impl Stat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
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
    /// Of `physical`, the bytes of chunk slots holding metadata pages
    /// (every copy).
    pub metadata: u64,
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
    /// Block references only snapshots hold (dropped by the live file
    /// systems since): what deleting every snapshot would release.
    pub snapshot_refs: u64,
}

impl SpaceStats {
    /// Sums shards' figures, deriving the ratios from the summed counts.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a SpaceStats>) -> SpaceStats {
        let mut t = SpaceStats::default();
        for p in parts {
            t.logical += p.logical;
            t.physical += p.physical;
            t.capacity += p.capacity;
            t.metadata += p.metadata;
            t.block_refs += p.block_refs;
            t.stored_blocks += p.stored_blocks;
            t.stored_bytes += p.stored_bytes;
            t.snapshot_refs += p.snapshot_refs;
        }
        t.with_ratios()
    }

    pub(super) fn with_ratios(mut self) -> SpaceStats {
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

impl Store {
    /// Space and reduction figures.
    pub fn space(&mut self) -> Result<SpaceStats> {
        let cs = self.layout.chunk_blocks * 4096;
        let mut used_slots = 0u64;
        for id in self.with_meta(|m, io| m.stripe_ids(io))? {
            used_slots += self.stripe(id)?.chunks.len() as u64;
        }
        let meta_slots = self.space.slots().count() as u64;
        let mut distinct: HashSet<BlockAddr> = HashSet::new();
        let mut refs = 0u64;
        let mut stored = 0u64;
        let mut dead = 0u64;
        self.with_meta(|m, io| {
            m.all_blocks(io, &mut |_, _, b| {
                refs += 1;
                if b.owner().is_none() && distinct.insert(b.addr) {
                    stored += u64::from(b.addr.stored_len);
                }
                true
            })?;
            m.shared_blocks(io, &mut |_, _, b| {
                if distinct.insert(b.addr) {
                    stored += u64::from(b.addr.stored_len);
                }
                true
            })?;
            m.all_dead_blocks(io, &mut |_, _, b| {
                dead += 1;
                if b.owner().is_none() && distinct.insert(b.addr) {
                    stored += u64::from(b.addr.stored_len);
                }
            })
        })?;
        let logical = self.meta.fss.keys().map(|&fs| self.meta.fs_used(fs)).sum();
        Ok(SpaceStats {
            logical,
            physical: (used_slots + meta_slots) * cs,
            capacity: self.layout.owned_slots() * self.devs.len() as u64 * cs,
            metadata: meta_slots * cs,
            dedup_ratio: 1.0,
            compression_ratio: 1.0,
            block_refs: refs,
            stored_blocks: distinct.len() as u64,
            stored_bytes: stored,
            snapshot_refs: dead,
        }
        .with_ratios())
    }

    /// Share of chunk slots free, 0.0 to 1.0.
    pub fn free_fraction(&self) -> f64 {
        let total = self.layout.owned_slots() * self.devs.len() as u64;
        let free = self.slots.free_total();
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
                free: self.slots.free_on(i) as u64 * cs,
            })
            .collect()
    }

    /// Where a file's block lives (for tests and tools): its address, the
    /// (device, slot) of each chunk of its stripe, and the device layout.
    pub fn block_location(&mut self, ino: Ino, idx: u64) -> Option<BlockLocation> {
        let b = self.with_meta(|m, io| m.block(io, ino, idx)).ok()??;
        let s = self.with_meta(|m, io| m.stripe(io, b.addr.stripe)).ok()??;
        Some((b.addr, s.chunks.clone(), self.layout))
    }
}
