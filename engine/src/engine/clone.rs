//! Writable snapshots through the engine: a clone of a file system at one
//! moment, made as a file system of its own (`FS@NAME`) that diverges
//! from then on and is never read-only again (as WEKA's). A read-only
//! snapshot fixes the moment; every shard then copies what it holds of
//! that snapshot under new inode numbers (blocks shared, counted anew);
//! a mark on shard 0 lets opening the engine finish a clone a crash cut
//! short. Making one costs the origin's metadata (not its data).

use super::*;
use crate::meta::snap::CloneInfo;
use crate::meta::FsMeta;
use crate::store::now_nanos;

/// The read-only snapshot a clone is copied from while it is made.
fn temp_name(name: &str) -> String {
    format!(".clone-{name}")
}

impl Engine {
    /// Takes writable snapshot `name` of `fs`: file system `FS@NAME`, with
    /// `fs`'s owner and group, durably. Returns how it was made.
    pub fn snapshot_create_writable(&self, fs: FsId, name: &str) -> Result<CloneInfo> {
        crate::store::check_name(name)?;
        let list = self.fs_list()?;
        let origin = list
            .iter()
            .find(|(f, _)| f.id == fs)
            .map(|(f, _)| f.clone())
            .ok_or_else(|| StoreError::NotFound {
                what: format!("file system {fs}"),
            })?;
        let clone_name = format!("{}@{name}", origin.name);
        crate::store::check_name(&clone_name)?;
        let taken = self.snapshot_list(Some(fs))?.iter().any(|s| s.name == name)
            || self.snapshot_clones(fs)?.iter().any(|c| c.name == name)
            || list.iter().any(|(f, _)| f.name == clone_name);
        if taken {
            return Err(StoreError::Exists {
                what: format!("snapshot {name} (or file system {clone_name})"),
            });
        }
        let snap = self.snapshot_create(fs, &temp_name(name))?;
        let c = {
            let _alone = self.names_alone();
            let deltas = self.broadcast(|s| Ok(s.clone_delta()))?;
            let shards = self.map.shards();
            // Its root on the shard the origin's is on.
            let mut id = self
                .broadcast(|s| Ok(s.next_fs_id()))?
                .into_iter()
                .max()
                .unwrap_or(0);
            while id % shards != fs % shards {
                id += 1;
            }
            let c = CloneInfo {
                fs: id,
                origin: fs,
                name: name.to_string(),
                created: now_nanos(),
                snap: snap.id,
                deltas,
                done: false,
            };
            let meta = FsMeta {
                id,
                name: clone_name,
                write_back: false,
                ..origin
            };
            self.call(move |s| s.clone_mark(c.clone()).map(|()| c))
                .and_then(|c| {
                    self.sync()?;
                    self.make_clone(meta, c)
                })?
        };
        if let Some(org) = self.fs_owner(fs)? {
            self.fs_set_owner(c.fs, org)?;
        }
        if let Some(g) = self.fs_group(fs)? {
            self.fs_set_group(c.fs, Some(&g.name))?;
        }
        self.snapshot_delete(fs, &temp_name(name))?;
        Ok(c)
    }

    /// Every shard's part of clone `c`, then the shared blocks' counts and
    /// the mark that it is done.
    fn make_clone(&self, meta: FsMeta, mut c: CloneInfo) -> Result<CloneInfo> {
        let (m, cc) = (meta.clone(), c.clone());
        self.broadcast(move |s| s.snapshot_clone(m.clone(), cc.clone()))?;
        self.sync()?;
        if self.broadcast(|s| Ok(s.shares_blocks()))?.contains(&true) {
            self.recount_shared()?;
        }
        c.done = true;
        let done = c.clone();
        self.call(move |s| s.clone_mark(done))?;
        self.sync()?;
        self.write_back.set(meta.id, false);
        Ok(c)
    }

    /// Writable snapshots of `fs`.
    pub fn snapshot_clones(&self, fs: FsId) -> Result<Vec<CloneInfo>> {
        Ok(self
            .call(|s| Ok(s.clones()))?
            .into_iter()
            .filter(|c| c.origin == fs)
            .collect())
    }

    /// Finishes clones a crash cut short: before the shared blocks are
    /// recounted at open (a shard that holds the clone's pool entries but
    /// not yet the block maps naming them would drop them).
    pub(super) fn finish_clones(&self) -> Result<()> {
        for c in self.call(|s| Ok(s.clones()))? {
            if c.done {
                continue;
            }
            tracing::warn!(
                clone = c.fs,
                "finishing a writable snapshot a crash cut short"
            );
            let origin = self
                .fs_list()?
                .into_iter()
                .find(|(f, _)| f.id == c.origin)
                .map(|(f, _)| f);
            let Some(origin) = origin else {
                continue;
            };
            let meta = FsMeta {
                id: c.fs,
                name: format!("{}@{}", origin.name, c.name),
                write_back: false,
                ..origin
            };
            let _alone = self.names_alone();
            self.make_clone(meta, c.clone())?;
        }
        Ok(())
    }

    /// Drops the read-only snapshots clones were copied from, once the
    /// snapshots a crash cut short are finished.
    pub(super) fn drop_clone_snapshots(&self) -> Result<()> {
        for s in self.snapshot_list(None)? {
            if s.name.starts_with(".clone-") {
                tracing::info!(snapshot = %s.name, "dropping the snapshot a clone was copied from");
                self.snapshot_delete(s.fs, &s.name)?;
            }
        }
        Ok(())
    }
}
