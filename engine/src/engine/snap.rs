//! Snapshots across the shards: one is taken on every shard under one id
//! while namespace changes are held off, so it is the state of one moment
//! (crash-consistent: a write in flight may be in it in part, as after a
//! crash; everything acknowledged before the call is in it). A snapshot on
//! only some shards is one whose creation or deletion a crash cut short:
//! opening the engine deletes it (it was never acknowledged, or its
//! deletion was under way).
//!
//! Reads reach a snapshot by inode numbers tagged with its id
//! ([`view_ino`]); every change to such an inode is refused with EROFS.

use super::*;
use crate::meta::snap::{is_view, split_ino, view_ino, Snap, SnapId, MAX_SNAPSHOTS};
use crate::store::now_nanos;

/// A snapshot as the engine reports it (summed over the shards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Id (engine-wide).
    pub id: SnapId,
    /// File system.
    pub fs: FsId,
    /// Name.
    pub name: String,
    /// When it was taken (ns since the epoch).
    pub created: i64,
    /// Logical bytes of the file system's files when it was taken.
    pub bytes: u64,
    /// Bytes only it holds: what deleting it frees.
    pub reclaimable: u64,
    /// Inode number of its root directory.
    pub root: Ino,
}

impl Engine {
    /// Refuses a change to an inode of a snapshot.
    pub(super) fn writable(&self, ino: Ino) -> Result<()> {
        match split_ino(ino) {
            (None, _) => Ok(()),
            (Some(id), _) => Err(StoreError::ReadOnly {
                what: format!(
                    "inode {ino:#x} is in snapshot {id}; snapshots are read-only (copy files \
                     out of .snapshots to restore them)"
                ),
            }),
        }
    }

    /// Runs `f` on the shard holding inode `ino` (of the live file system
    /// or of a snapshot), with the live number; the inode numbers of its
    /// result are the caller's to tag back ([`retag`]).
    pub(super) fn on_view<R: Send + 'static>(
        &self,
        ino: Ino,
        f: impl FnOnce(&mut Store, Ino) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.call_shard(self.map.shard_of_ino(ino), move |s| s.viewing(ino, f))
    }

    /// Takes a snapshot of file system `fs` named `name`, on every shard,
    /// durably.
    pub fn snapshot_create(&self, fs: FsId, name: &str) -> Result<SnapInfo> {
        let _alone = self.names_alone();
        let held: Vec<Snap> = self.call(|s| Ok(s.snapshots()))?;
        if held.iter().any(|s| s.fs == fs && s.name == name) {
            return Err(StoreError::Exists {
                what: format!("snapshot {name}"),
            });
        }
        let id = (1..=MAX_SNAPSHOTS)
            .find(|id| held.iter().all(|s| s.id != *id))
            .ok_or_else(|| StoreError::NoSpace {
                what: format!(
                    "the engine holds {MAX_SNAPSHOTS} snapshots, its most; delete some first"
                ),
            })?;
        let created = now_nanos();
        let name = name.to_string();
        for shard in 0..self.map.shards() {
            let n = name.clone();
            // A shard takes it at a checkpoint, which waits for no other
            // shard's journal: sync first (again if writes came meanwhile).
            let mut tries = 0;
            loop {
                self.sync()?;
                let n = n.clone();
                match self.call_shard(shard, move |s| s.snapshot_create(id, fs, &n, created)) {
                    Ok(_) => break,
                    Err(StoreError::Invalid { .. }) if tries < 16 => tries += 1,
                    Err(e) => {
                        // Undo it where it was taken.
                        let _ = self.broadcast(move |s| match s.snapshot_delete(id) {
                            Err(StoreError::NotFound { .. }) => Ok(()),
                            r => r,
                        });
                        let _ = self.sync();
                        return Err(e);
                    }
                }
            }
        }
        self.sync()?;
        self.snapshot_info(id)
    }

    /// Deletes snapshot `name` of `fs` on every shard, durably: what only
    /// it held is free.
    pub fn snapshot_delete(&self, fs: FsId, name: &str) -> Result<()> {
        let _alone = self.names_alone();
        let id = self.snapshot_id(fs, name)?;
        self.broadcast(move |s| match s.snapshot_delete(id) {
            Err(StoreError::NotFound { .. }) => Ok(()),
            r => r,
        })?;
        self.sync()
    }

    /// Takes file system `fs` back to snapshot `name`, on every shard,
    /// durably; with `keep`, its state before is kept as a new snapshot of
    /// that name first. Files open meanwhile see the snapshot's contents
    /// (stop writers first: a write racing the restore may land on either
    /// side of it).
    pub fn snapshot_restore(&self, fs: FsId, name: &str, keep: Option<&str>) -> Result<()> {
        let id = self.snapshot_id(fs, name)?;
        if let Some(k) = keep {
            self.snapshot_create(fs, k)?;
        }
        {
            let _alone = self.names_alone();
            self.sync()?;
            self.call_shard(0, move |s| s.restore_mark(Some(id)))?;
            self.sync()?;
            self.restore_everywhere(id, fs)?;
        }
        // The restored files are in no quota until counted again.
        for q in self.quota_pending() {
            self.quota_scan(q)?;
        }
        Ok(())
    }

    /// Every shard's part of a restore, then the shared blocks' counts
    /// (the restored maps refer to blocks anew), then the end mark.
    fn restore_everywhere(&self, id: SnapId, fs: FsId) -> Result<()> {
        self.broadcast(move |s| s.snapshot_restore(id))?;
        self.sync()?;
        if self.broadcast(|s| Ok(s.shares_blocks()))?.contains(&true) {
            self.recount_shared()?;
        }
        self.recount_quotas(fs)?;
        self.call_shard(0, |s| s.restore_mark(None))?;
        self.sync()
    }

    /// Finishes a restore a crash cut short (shard 0 marks one under way).
    pub(super) fn finish_restore(&self) -> Result<()> {
        match self.call_shard(0, |s| Ok(s.restoring()))? {
            Some(id) => {
                tracing::warn!(snapshot = id, "finishing a restore a crash cut short");
                let fs = self
                    .snapshot_list(None)?
                    .into_iter()
                    .find(|s| s.id == id)
                    .map(|s| s.fs);
                match fs {
                    Some(fs) => self.restore_everywhere(id, fs),
                    None => self.call_shard(0, |s| s.restore_mark(None)),
                }
            }
            None => Ok(()),
        }
    }

    /// The id of snapshot `name` of `fs`.
    pub fn snapshot_id(&self, fs: FsId, name: &str) -> Result<SnapId> {
        let name = name.to_string();
        self.call(move |s| {
            s.snapshots()
                .into_iter()
                .find(|x| x.fs == fs && x.name == name)
                .map(|x| x.id)
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("snapshot {name}"),
                })
        })
    }

    /// The snapshots of `fs` (every file system's when `None`), oldest
    /// first, with their sizes and reclaimable bytes summed over shards.
    pub fn snapshot_list(&self, fs: Option<FsId>) -> Result<Vec<SnapInfo>> {
        let per = self.broadcast(|s| Ok(s.snapshots()))?;
        let mut out: Vec<SnapInfo> = per
            .first()
            .into_iter()
            .flatten()
            .filter(|s| fs.is_none_or(|f| f == s.fs))
            .map(|s| SnapInfo {
                id: s.id,
                fs: s.fs,
                name: s.name.clone(),
                created: s.created,
                bytes: 0,
                reclaimable: 0,
                root: view_ino(s.id, self.root_of(s.fs)),
            })
            .collect();
        for info in &mut out {
            for s in per.iter().flatten().filter(|s| s.id == info.id) {
                info.bytes += s.bytes;
                info.reclaimable += s.reclaim * BLOCK as u64;
            }
        }
        out.sort_by_key(|s| (s.created, s.id));
        Ok(out)
    }

    fn snapshot_info(&self, id: SnapId) -> Result<SnapInfo> {
        self.snapshot_list(None)?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("snapshot id {id}"),
            })
    }

    /// Deletes snapshots that only some shards hold (a creation or deletion
    /// a crash cut short).
    pub(super) fn finish_snapshots(&self) -> Result<()> {
        let per = self.broadcast(|s| Ok(s.snapshots()))?;
        let mut seen: HashMap<SnapId, usize> = HashMap::new();
        for s in per.iter().flatten() {
            *seen.entry(s.id).or_default() += 1;
        }
        let partial: Vec<SnapId> = seen
            .into_iter()
            .filter(|&(_, n)| n < per.len())
            .map(|(id, _)| id)
            .collect();
        if partial.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            ?partial,
            "deleting snapshots a crash left on some shards only"
        );
        for id in partial {
            self.broadcast(move |s| match s.snapshot_delete(id) {
                Err(StoreError::NotFound { .. }) => Ok(()),
                r => r,
            })?;
        }
        self.sync()
    }
}

/// Inode number `ino` tagged like `like` (the snapshot it was asked in).
pub(super) fn retag(like: Ino, ino: Ino) -> Ino {
    match split_ino(like) {
        (Some(id), _) if !is_view(ino) => view_ino(id, ino),
        _ => ino,
    }
}

/// A stat tagged like `like`.
pub(super) fn retag_stat(like: Ino, mut st: Stat) -> Stat {
    st.ino = retag(like, st.ino);
    st.parent = retag(like, st.parent);
    st
}
