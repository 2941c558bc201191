//! The control plane (thin): which reactor owns each shard, published with
//! an epoch.
//!
//! A shard is one independent store: its slice of every device's journal,
//! checkpoint slots and chunk slots, and the metadata of the files whose
//! inode numbers carry its id. The map assigns every shard to exactly one
//! reactor, which is the only writer of that shard's metadata; requests for
//! a shard travel to its owner as messages. Moving a shard (rebalancing,
//! failover) publishes a new map with the next epoch.

use crate::meta::{FsId, Ino};

/// Bytes of a file per range; consecutive ranges live on consecutive shards,
/// so one large file spreads over every core.
pub const RANGE_BYTES: u64 = 1 << 20;

/// Shard ownership at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    epoch: u64,
    owners: Vec<usize>,
}

impl ShardMap {
    /// `shards` shards spread round-robin over `reactors` reactors, epoch 1.
    pub fn new(shards: u32, reactors: usize) -> Self {
        ShardMap {
            epoch: 1,
            owners: (0..shards as usize).map(|s| s % reactors.max(1)).collect(),
        }
    }

    /// The map's epoch; every change increments it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The reactor that owns `shard`.
    pub fn owner(&self, shard: u32) -> usize {
        self.owners[shard as usize % self.owners.len()]
    }

    /// A new map with `shard` owned by `reactor`, at the next epoch.
    pub fn with_owner(&self, shard: u32, reactor: usize) -> ShardMap {
        let mut owners = self.owners.clone();
        if let Some(o) = owners.get_mut(shard as usize) {
            *o = reactor;
        }
        ShardMap {
            epoch: self.epoch + 1,
            owners,
        }
    }

    /// The shard that holds a file: inode numbers carry it in their low byte.
    pub fn shard_of_ino(&self, ino: Ino) -> u32 {
        crate::meta::namespace::shard_of_ino(ino, self.shards())
    }

    /// The shard holding range `range` (offsets `range * RANGE_BYTES ..`)
    /// of a file: its home shard for range 0, then the following shards.
    pub fn shard_of_range(&self, ino: Ino, range: u64) -> u32 {
        ((u64::from(self.shard_of_ino(ino)) + range) % u64::from(self.shards())) as u32
    }

    /// The shard whose shared pool keeps blocks of this fingerprint: the
    /// engine-wide dedup index is partitioned over shards by fingerprint.
    pub fn shard_of_fp(&self, fp: u128) -> u32 {
        crate::pipeline::dedup::partition(fp, self.shards() as usize) as u32
    }

    /// The shard a new file of this name is created on (and looked up on).
    pub fn shard_of_name(&self, fs: FsId, name: &str) -> u32 {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), u64::from(fs));
        (h % u64::from(self.shards())) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_name_and_inode_and_moves_with_a_new_epoch() {
        let map = ShardMap::new(4, 2);
        assert_eq!(
            (map.owner(0), map.owner(1), map.owner(2), map.owner(3)),
            (0, 1, 0, 1)
        );
        assert_eq!(map.shard_of_ino(0x1203), 3);
        let mut seen = [false; 4];
        for i in 0..200 {
            seen[map.shard_of_name(1, &format!("file{i}")) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "names spread over every shard");
        assert_eq!(map.shard_of_range(0x1203, 0), 3);
        assert_eq!(map.shard_of_range(0x1203, 1), 0);
        assert_eq!(map.shard_of_range(0x1203, 6), 1);
        let moved = map.with_owner(3, 0);
        assert_eq!(moved.epoch(), 2);
        assert_eq!(moved.owner(3), 0);
        assert_eq!(map.owner(3), 1, "the old map is unchanged");
    }
}
