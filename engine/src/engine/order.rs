//! Per-block ordering of writes that the engine assembles from several
//! shards. A write into a file system that reduces data, with several
//! shards, reads the blocks it covers only in part, merges its bytes in,
//! puts the blocks into the shared pools and then maps them: without an
//! order, two such writes to one block at once would each merge into the
//! copy from before the other and one would lose the other's bytes.
//!
//! Every such write (and every rewrite of a block's tail by a truncate)
//! holds the locks of the blocks it covers from reading the file's size to
//! mapping the blocks, so writes to one block apply one after the other
//! and each byte ends up from one of them; writes to other blocks go on in
//! parallel. The locks are striped by (file, block) and taken in stripe
//! order, so writes covering several blocks never deadlock. (Writes that
//! one store applies whole, on its reactor, are ordered by that reactor.)

use std::sync::{Mutex, MutexGuard};

use crate::meta::Ino;

/// Lock stripes (a power of two).
const STRIPES: usize = 4096;

/// The striped block locks.
pub(super) struct BlockLocks {
    stripes: Vec<Mutex<()>>,
}

/// The locks of one write's blocks, released on drop.
pub(super) struct Held<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl BlockLocks {
    pub(super) fn new() -> BlockLocks {
        BlockLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn stripe(ino: Ino, block: u64) -> usize {
        let h = (ino ^ block.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 52) as usize % STRIPES
    }

    /// Locks blocks `first..=last` of file `ino` (until the guard drops).
    pub(super) fn lock(&self, ino: Ino, first: u64, last: u64) -> Held<'_> {
        debug_assert!(first <= last);
        let mut ids: Vec<usize> = if last - first >= STRIPES as u64 {
            (0..STRIPES).collect()
        } else {
            (first..=last).map(|b| Self::stripe(ino, b)).collect()
        };
        ids.sort_unstable();
        ids.dedup();
        Held {
            _guards: ids
                .into_iter()
                .map(|i| self.stripes[i].lock().unwrap_or_else(|e| e.into_inner()))
                .collect(),
        }
    }
}
