//! This shard's part of snapshots: taking one at a checkpoint, deleting
//! one, and reads through one ([`Store::viewing`]).

use crate::meta::snap::{self, Snap, SnapId, MAX_SNAPSHOTS};

use super::fs::check_name;
use super::*;

impl Store {
    /// Takes snapshot `id` of file system `fs` on this shard: a checkpoint,
    /// whose tree root it keeps, then its record (durable at the next
    /// commit). Refused while records wait for other shards (sync the
    /// engine first).
    pub fn snapshot_create(
        &mut self,
        id: SnapId,
        fs: FsId,
        name: &str,
        created: i64,
    ) -> Result<Snap> {
        self.fs(fs)?;
        check_name(name)?;
        if !(1..=MAX_SNAPSHOTS).contains(&id) {
            return Err(StoreError::NoSpace {
                what: format!(
                    "the engine holds {MAX_SNAPSHOTS} snapshots, its most; delete some first"
                ),
            });
        }
        if let Some(s) = self.meta.snap(id) {
            return Err(StoreError::Exists {
                what: format!("snapshot id {id} ({})", s.name),
            });
        }
        if self.meta.snaps_of(fs).any(|s| s.name == name) {
            return Err(StoreError::Exists {
                what: format!("snapshot {name}"),
            });
        }
        self.checkpoint()?;
        let (root, entries) = self.meta.live_root();
        let s = Snap {
            id,
            fs,
            name: name.to_string(),
            created,
            epoch: self.meta.committed_epoch(),
            root,
            entries,
            mark: self.meta.next_stripe,
            bytes: self.meta.fs_used(fs),
            reclaim: 0,
        };
        self.record(Record::SnapCreate(s.clone()))?;
        Ok(s)
    }

    /// Deletes snapshot `id` on this shard: the blocks only it held are
    /// released with the record, its pages at the next checkpoint.
    pub fn snapshot_delete(&mut self, id: SnapId) -> Result<()> {
        if self.meta.snap(id).is_none() {
            return Err(StoreError::NotFound {
                what: format!("snapshot id {id}"),
            });
        }
        self.record(Record::SnapDelete { id })?;
        Ok(())
    }

    /// Takes this shard's part of snapshot `id`'s file system back to it
    /// (see [`Record::SnapRestore`]). Shared-block counts are the engine's
    /// to recount after every shard has restored.
    pub fn snapshot_restore(&mut self, id: SnapId) -> Result<()> {
        if self.meta.snap(id).is_none() {
            return Err(StoreError::NotFound {
                what: format!("snapshot id {id}"),
            });
        }
        self.record(Record::SnapRestore { id })?;
        // The restored maps' references, counted again from the tree.
        self.refs = self.with_meta(|m, io| m.stripe_refs(io))?;
        Ok(())
    }

    /// Makes this shard's part of a writable snapshot (idempotent).
    pub fn snapshot_clone(&mut self, fs: FsMeta, clone: snap::CloneInfo) -> Result<()> {
        if self.meta.snap(clone.snap).is_none() {
            return Err(StoreError::NotFound {
                what: format!("snapshot id {}", clone.snap),
            });
        }
        let id = fs.id;
        if self.meta.fss.contains_key(&id) {
            return Ok(());
        }
        self.record(Record::SnapClone { fs, clone })?;
        self.writer(id)?;
        // The clone's maps' references, counted again from the tree.
        self.refs = self.with_meta(|m, io| m.stripe_refs(io))?;
        Ok(())
    }

    /// Records a writable snapshot's state, on shard 0.
    pub fn clone_mark(&mut self, clone: snap::CloneInfo) -> Result<()> {
        self.record(Record::CloneMark(clone))?;
        Ok(())
    }

    /// The writable snapshots (shard 0).
    pub fn clones(&self) -> Vec<snap::CloneInfo> {
        self.meta.clones.values().cloned().collect()
    }

    /// What is added to inode numbers of this shard for a clone: past
    /// every number it has handed out, a multiple of 256.
    pub fn clone_delta(&self) -> u64 {
        ((self.meta.next_ino >> 8) + 1) << 8
    }

    /// Marks a restore across the shards as begun (`Some`) or ended
    /// (`None`), on shard 0.
    pub fn restore_mark(&mut self, id: Option<SnapId>) -> Result<()> {
        self.record(Record::RestoreMark { id })?;
        Ok(())
    }

    /// The restore across the shards a crash cut short, if any.
    pub fn restoring(&self) -> Option<SnapId> {
        self.meta.restoring()
    }

    /// This shard's snapshots.
    pub fn snapshots(&self) -> Vec<Snap> {
        self.meta.snaps().cloned().collect()
    }

    /// Runs `f` on the live inode number of `ino`, reading file maps and
    /// the namespace through the snapshot `ino` is seen in (if it is one).
    /// `f` must only read: a change while a snapshot is viewed is refused.
    pub fn viewing<T>(
        &mut self,
        ino: Ino,
        f: impl FnOnce(&mut Store, Ino) -> Result<T>,
    ) -> Result<T> {
        let (id, live) = snap::split_ino(ino);
        let Some(id) = id else {
            return f(self, ino);
        };
        if self.meta.snap(id).is_none() {
            return Err(StoreError::NotFound {
                what: format!("snapshot id {id} (deleted?)"),
            });
        }
        let before = self.meta.set_view(Some(id));
        let r = f(self, live);
        self.meta.restore_view(before);
        r
    }
}
