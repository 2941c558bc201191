//! Acknowledged means durable. A change is answered once the shards it
//! touched have committed it: its records, and the open stripes' bytes they
//! map, are in the journal on every healthy device (`store/wal.rs`). Every
//! request that arrived while a commit ran is taken by the next one, so a
//! commit costs one journal write and flush for all of them (group commit):
//! the caller asks its shard to commit up to its own record, and finds it
//! already done when a commit for another caller took it. A file system in
//! `write_back` mode is answered before that (like NFS `async`); its
//! changes are durable at the next commit: an fsync, a sync, the seal tick.

use std::collections::HashSet;

use super::{Engine, Result, MAX_SYNC_ROUNDS};
use crate::meta::{FsId, Ino};
use crate::store::{Receipt, Store, StoreError};

/// The file systems that acknowledge before durable.
#[derive(Default)]
pub(super) struct WriteBack(std::sync::RwLock<HashSet<FsId>>);

impl WriteBack {
    /// Whether `fs` acknowledges before durable.
    pub(super) fn has(&self, fs: FsId) -> bool {
        self.0.read().map(|s| s.contains(&fs)).unwrap_or(false)
    }

    /// Records `fs`'s mode.
    pub(super) fn set(&self, fs: FsId, on: bool) {
        if let Ok(mut s) = self.0.write() {
            if on {
                s.insert(fs);
            } else {
                s.remove(&fs);
            }
        }
    }
}

impl Engine {
    /// Runs `f` on `shard`, then commits what it changed there unless the
    /// file system of `ino` (an inode `f` leaves on that shard, or its
    /// directory) is in write-back mode.
    pub(super) fn durably<R: Send + 'static>(
        &self,
        shard: u32,
        ino: Ino,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (r, receipt) = self.call_shard(shard, move |s| {
            let r = f(s)?;
            Ok((r, s.receipt(ino)?))
        })?;
        self.redeem([receipt])?;
        Ok(r)
    }

    /// Waits until the shards named by `receipts` have committed up to
    /// them.
    pub(super) fn redeem(&self, receipts: impl IntoIterator<Item = Receipt>) -> Result<()> {
        let targets: Vec<(u32, u64)> = receipts.into_iter().flatten().collect();
        if targets.is_empty() {
            return Ok(());
        }
        self.commit_targets(targets, false)
    }

    /// Makes what was changed so far in file system `fs` durable on every
    /// shard before an answer, unless `fs` is in write-back mode.
    pub(super) fn settle(&self, fs: FsId) -> Result<()> {
        if self.write_back.has(fs) {
            return Ok(());
        }
        self.commit_all()
    }

    /// Commits every shard: everything changed so far is durable, without
    /// sealing open stripes.
    pub fn commit_all(&self) -> Result<()> {
        self.commit_every(false)
    }

    /// Brings every shard's records so far to the journal; `seal` seals
    /// open stripes too (a sync).
    pub(super) fn commit_every(&self, seal: bool) -> Result<()> {
        let targets = self
            .broadcast(|s| Ok(s.pushed()))?
            .into_iter()
            .enumerate()
            .map(|(shard, t)| (shard as u32, t))
            .collect();
        self.commit_targets(targets, seal)
    }

    /// Makes file `ino`'s changes durable (fsync/fdatasync): commits the
    /// shards that may hold a piece of it.
    pub fn fsync(&self, ino: Ino) -> Result<()> {
        if crate::meta::snap::is_view(ino) {
            // A snapshot changes never: nothing to make durable.
            return Ok(());
        }
        if self.map.shards() == 1 {
            let home = self.map.shard_of_ino(ino);
            let t = self.call_shard(home, |s| Ok(s.pushed()))?;
            return self.commit_targets(vec![(home, t)], false);
        }
        self.commit_all()
    }

    /// Sets whether file system `fs` acknowledges changes before they are
    /// durable, on every shard, durably.
    pub fn fs_set_write_back(&self, fs: FsId, on: bool) -> Result<()> {
        self.broadcast(move |s| s.fs_set_write_back(fs, on))?;
        self.write_back.set(fs, on);
        self.commit_all()
    }

    /// Loads which file systems are in write-back mode (at open).
    pub(super) fn load_write_back(&self) -> Result<()> {
        for (f, _) in self.fs_list()? {
            self.write_back.set(f.id, f.write_back);
        }
        Ok(())
    }

    /// Brings every `(shard, record number)` to the journal, in rounds
    /// while records wait for other shards' journals (their shared blocks):
    /// `seal` seals open stripes first (a sync), otherwise their bytes go
    /// to the log (a commit).
    pub(super) fn commit_targets(&self, mut left: Vec<(u32, u64)>, seal: bool) -> Result<()> {
        for _ in 0..MAX_SYNC_ROUNDS {
            if left.is_empty() {
                return Ok(());
            }
            let tasks = left
                .iter()
                .map(|&(shard, target)| {
                    self.shard_task(shard, move |s| match seal {
                        true => s.sync_to(target),
                        false => s.commit_to(target),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let done = Self::join(tasks)?;
            left = left
                .into_iter()
                .zip(done)
                .filter(|(_, d)| !d)
                .map(|(l, _)| l)
                .collect();
        }
        match left.first() {
            None => Ok(()),
            Some(&(shard, _)) => Err(StoreError::Invalid {
                reason: format!(
                    "shard {shard}'s records still wait for other shards' journals after \
                     {MAX_SYNC_ROUNDS} rounds"
                ),
            }),
        }
    }
}
