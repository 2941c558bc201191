//! A shard's snapshots: the catalog, reads through a snapshot's tree, and
//! the two dead lists that keep what snapshots name (see
//! [`crate::meta::snap`]).

use super::*;
use crate::meta::snap::{dead_block_key, dead_page_key};

/// A dead-list block entry: (inode, logical block, the reference).
type DeadBlock = (Ino, u64, BlockRef);

impl Meta {
    /// Snapshots, by id.
    pub fn snaps(&self) -> impl Iterator<Item = &Snap> {
        self.snaps.values()
    }

    /// A snapshot.
    pub fn snap(&self, id: SnapId) -> Option<&Snap> {
        self.snaps.get(&id)
    }

    /// The snapshots of file system `fs`, oldest first.
    pub fn snaps_of(&self, fs: FsId) -> impl Iterator<Item = &Snap> {
        let mut v: Vec<&Snap> = self.snaps.values().filter(|s| s.fs == fs).collect();
        v.sort_by_key(|s| s.epoch);
        v.into_iter()
    }

    /// The newest snapshot of `fs` (looked up on every block a live file
    /// drops: no allocation).
    fn latest_of(&self, fs: FsId) -> Option<&Snap> {
        self.snaps
            .values()
            .filter(|s| s.fs == fs)
            .max_by_key(|s| s.epoch)
    }

    /// The stripe id below which garbage collection must leave file system
    /// `fs`'s stripes alone: its snapshots may name their blocks in place.
    pub fn gc_floor(&self, fs: FsId) -> u64 {
        self.snaps_of(fs).map(|s| s.mark).max().unwrap_or(0)
    }

    /// The snapshot of `fs` taken just before `s` (by epoch), and the one
    /// just after.
    fn neighbours(&self, s: &Snap) -> (Option<Snap>, Option<Snap>) {
        let mut prev: Option<&Snap> = None;
        let mut next: Option<&Snap> = None;
        for o in self.snaps.values().filter(|o| o.fs == s.fs && o.id != s.id) {
            if o.epoch < s.epoch && prev.is_none_or(|p| o.epoch > p.epoch) {
                prev = Some(o);
            }
            if o.epoch > s.epoch && next.is_none_or(|n| o.epoch < n.epoch) {
                next = Some(o);
            }
        }
        (prev.cloned(), next.cloned())
    }

    /// The tree snapshot `s` keeps.
    pub(super) fn tree_of(s: &Snap) -> Tree {
        Tree::open(s.root, s.entries)
    }

    /// Sets the snapshot tree reads go through (`None`: the live one);
    /// returns the one set before. While one is set no change applies.
    pub fn set_view(&mut self, id: Option<SnapId>) -> Option<Tree> {
        let tree = id.and_then(|id| self.snaps.get(&id)).map(Self::tree_of);
        std::mem::replace(&mut self.view, tree)
    }

    /// Puts back a view [`Meta::set_view`] returned.
    pub fn restore_view(&mut self, view: Option<Tree>) {
        self.view = view;
    }

    /// Whether snapshot `s`'s tree maps logical block `idx` of `ino` to
    /// exactly `b`.
    fn holds(
        &mut self,
        io: &mut dyn PageIo,
        s: &Snap,
        ino: Ino,
        idx: u64,
        b: &BlockRef,
    ) -> Result<bool> {
        let v = self
            .pager
            .get(io, &Self::tree_of(s), &block_key(ino, idx))?;
        Ok(v.is_some_and(|v| v == encode_block(b)))
    }

    /// A block reference the live file system drops: released, unless the
    /// newest snapshot of `fs` holds it unchanged — then it stays counted
    /// on that snapshot's dead list (and is reclaimable by it alone if the
    /// snapshot before does not hold it too).
    pub(super) fn drop_block(
        &mut self,
        io: &mut dyn PageIo,
        fs: FsId,
        ino: Ino,
        idx: u64,
        b: BlockRef,
        released: &mut Released,
    ) -> Result<()> {
        let Some(latest) = self.latest_of(fs).cloned() else {
            released.push((fs, b));
            return Ok(());
        };
        if !self.holds(io, &latest, ino, idx, &b)? {
            released.push((fs, b));
            return Ok(());
        }
        let key = dead_block_key(fs, latest.id, ino, idx);
        if self.pager.get(io, &self.tree, &key)?.is_some() {
            // The snapshot's own reference is on its list already (this one
            // came back to the same block since, through dedup).
            released.push((fs, b));
            return Ok(());
        }
        self.pager
            .insert(io, &mut self.tree, &key, &encode_block(&b))?;
        let (prev, _) = self.neighbours(&latest);
        let shared = match &prev {
            Some(p) => self.holds(io, p, ino, idx, &b)?,
            None => false,
        };
        if !shared {
            if let Some(s) = self.snaps.get_mut(&latest.id) {
                s.reclaim += 1;
            }
        }
        Ok(())
    }

    /// The block references on snapshot `id`'s dead list.
    fn dead_blocks(&mut self, io: &mut dyn PageIo, fs: FsId, id: SnapId) -> Result<Vec<DeadBlock>> {
        let prefix = dead_block_key(fs, id, 0, 0);
        let mut out = Vec::new();
        let mut bad = None;
        self.pager.scan(io, &self.tree, &prefix[..9], &mut |k, v| {
            if k.len() != 25 || k[..9] != prefix[..9] {
                return false;
            }
            match decode_block(v) {
                Ok(b) => {
                    out.push((be64(&k[9..17]), be64(&k[17..]), b));
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        bad.map_or(Ok(out), Err)
    }

    /// Calls `f` with every block reference on every dead list, as (file
    /// system, inode, reference): they are counted like live ones.
    pub fn all_dead_blocks(
        &mut self,
        io: &mut dyn PageIo,
        f: &mut dyn FnMut(FsId, Ino, BlockRef),
    ) -> Result<()> {
        let mut bad = None;
        self.pager.scan(io, &self.tree, b"d", &mut |k, v| {
            if k.len() != 25 || k[0] != b'd' {
                return false;
            }
            match decode_block(v) {
                Ok(b) => {
                    let fs = u32::from_be_bytes(k[1..5].try_into().expect("4 bytes"));
                    f(fs, be64(&k[9..17]), b);
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// Deletes snapshot `id`: the block references only it held are
    /// released (added to `released`), the rest pass to the snapshot
    /// before it; its dead pages go the same way (freed at the next
    /// checkpoint, [`Meta::take_freed_pages`]).
    pub(super) fn snap_delete(
        &mut self,
        io: &mut dyn PageIo,
        id: SnapId,
        released: &mut Released,
    ) -> Result<()> {
        let Some(s) = self.snaps.get(&id).cloned() else {
            return Ok(());
        };
        let (prev, _) = self.neighbours(&s);
        // Its dead blocks: to the snapshot before if that one holds them,
        // else free.
        for (ino, idx, b) in self.dead_blocks(io, s.fs, id)? {
            self.pager
                .remove(io, &mut self.tree, &dead_block_key(s.fs, id, ino, idx))?;
            let Some(p) = &prev else {
                released.push((s.fs, b));
                continue;
            };
            if !self.holds(io, p, ino, idx, &b)? {
                released.push((s.fs, b));
                continue;
            }
            let key = dead_block_key(s.fs, p.id, ino, idx);
            if self.pager.get(io, &self.tree, &key)?.is_some() {
                // The one before keeps a reference of its own already.
                released.push((s.fs, b));
            } else {
                self.pager
                    .insert(io, &mut self.tree, &key, &encode_block(&b))?;
            }
        }
        // Its dead pages: to the shard's snapshot before it (of any file
        // system) if born by then, else free.
        let before = self
            .snaps
            .values()
            .filter(|o| o.epoch < s.epoch)
            .map(|o| o.epoch)
            .max();
        let mut pages = Vec::new();
        let prefix = dead_page_key(s.epoch, 0);
        self.pager.scan(io, &self.tree, &prefix[..9], &mut |k, v| {
            if k.len() != 17 || k[..9] != prefix[..9] || v.len() != 8 {
                return false;
            }
            pages.push(PagePtr {
                addr: be64(&k[9..]),
                birth: be64(v),
            });
            true
        })?;
        for p in pages {
            self.pager
                .remove(io, &mut self.tree, &dead_page_key(s.epoch, p.addr))?;
            match before {
                Some(e) if p.birth <= e => {
                    self.pager.insert(
                        io,
                        &mut self.tree,
                        &dead_page_key(e, p.addr),
                        &p.birth.to_be_bytes(),
                    )?;
                }
                _ => self.freed_pages.push(p),
            }
        }
        self.snaps.remove(&id);
        // What its neighbours hold alone changed with it: counted again.
        self.recount_reclaim(io, s.fs)
    }

    /// Of the pages a commit retired, keeps on the newest snapshot's dead
    /// list those born by it (it still names them); returns the rest, free
    /// once the new root is durable. Keeping changes the tree: commit again
    /// until nothing is kept.
    pub fn keep_retired(
        &mut self,
        io: &mut dyn PageIo,
        retired: Vec<PagePtr>,
    ) -> Result<Vec<PagePtr>> {
        let Some(newest) = self.snaps.values().map(|s| s.epoch).max() else {
            return Ok(retired);
        };
        let mut free = Vec::with_capacity(retired.len());
        for p in retired {
            if p.birth <= newest {
                self.pager.insert(
                    io,
                    &mut self.tree,
                    &dead_page_key(newest, p.addr),
                    &p.birth.to_be_bytes(),
                )?;
            } else {
                free.push(p);
            }
        }
        Ok(free)
    }

    /// Pages deleted snapshots alone named, to free with the next
    /// checkpoint.
    pub fn take_freed_pages(&mut self) -> Vec<PagePtr> {
        std::mem::take(&mut self.freed_pages)
    }

    /// The newest page birth so far (what a snapshot taken now keeps:
    /// pages born up to it). Only right just after a commit.
    pub fn committed_epoch(&self) -> u64 {
        self.pager.epoch().saturating_sub(1)
    }

    /// The live tree's root and entries (what a snapshot taken now keeps).
    pub fn live_root(&self) -> (Option<PagePtr>, u64) {
        debug_assert!(!self.tree.is_dirty(), "a snapshot of an uncommitted tree");
        (self.tree.root(), self.tree.len())
    }

    /// Every page a snapshot names, for checks: its tree's pages.
    pub fn snap_pages(&mut self, io: &mut dyn PageIo) -> Result<Vec<PagePtr>> {
        let trees: Vec<Tree> = self.snaps.values().map(Self::tree_of).collect();
        let mut out = Vec::new();
        for t in trees {
            out.extend(self.pager.pages_of(io, &t)?);
        }
        Ok(out)
    }
}

/// Key prefixes an inode owns: its entries (as a directory), its entries by
/// sequence, its symlink target, its xattrs and its block map.
pub(super) const INODE_PREFIXES: [u8; 5] = [b'N', b'E', b'L', b'X', b'b'];

impl Meta {
    /// The restore across the shards under way, if any (shard 0).
    pub fn restoring(&self) -> Option<SnapId> {
        self.restoring
    }

    /// Takes this shard's part of snapshot `id`'s file system back to it:
    /// drops the live files (what the snapshots do not hold is released
    /// into `released`) and copies the snapshot's inodes, entries, targets,
    /// xattrs, parts and block maps in. Running it again gives the same
    /// state (a restore a crash cut short is run again).
    pub(super) fn snap_restore(
        &mut self,
        io: &mut dyn PageIo,
        id: SnapId,
        released: &mut Released,
    ) -> Result<()> {
        let Some(s) = self.snaps.get(&id).cloned() else {
            return Ok(());
        };
        let fs = s.fs;
        released.extend(self.drop_fs_files(io, fs)?);
        let snap = Self::tree_of(&s);
        // The snapshot's inodes and parts of the file system.
        let (attrs, parts) = Self::fs_contents(&mut self.pager, io, &snap, fs)?;
        let inos = attrs
            .iter()
            .map(|a| (b'I', a.ino))
            .chain(parts.iter().map(|p| (b'f', p.ino)));
        let mut added = Vec::new();
        for (tag, ino) in inos {
            let mut head = vec![tag];
            head.extend_from_slice(&ino.to_be_bytes());
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            if let Some(v) = self.pager.get(io, &snap, &head)? {
                pairs.push((head.clone(), v));
            }
            for p in INODE_PREFIXES {
                let mut prefix = vec![p];
                prefix.extend_from_slice(&ino.to_be_bytes());
                pairs.extend(Self::prefixed(&mut self.pager, io, &snap, &prefix)?);
            }
            for (k, v) in pairs {
                // Counted anew: the dead lists keep their own references
                // (taking one back would leave an older snapshot's block
                // uncounted once the live file drops it again).
                if k[0] == b'b' {
                    added.push(decode_block(&v)?);
                }
                if k[0] == b'I' {
                    // Out of every quota: the engine counts the file
                    // system's quotas again after a restore (the snapshot's
                    // tags may name quotas since unset).
                    let mut a = decode_attr(&v)?;
                    a.quota = 0;
                    self.pager.insert(io, &mut self.tree, &k, &a.encode())?;
                    continue;
                }
                self.pager.insert(io, &mut self.tree, &k, &v)?;
            }
        }
        self.count_refs(io, &added, &Released::new())?;
        self.used.insert(fs, s.bytes);
        self.recount_reclaim(io, fs)
    }

    /// Counts again what each snapshot of `fs` holds alone: its dead-list
    /// references that neither the snapshot before it nor the live file
    /// (after a restore) holds.
    fn recount_reclaim(&mut self, io: &mut dyn PageIo, fs: FsId) -> Result<()> {
        let snaps: Vec<Snap> = self.snaps_of(fs).cloned().collect();
        for (i, x) in snaps.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| snaps[p].clone());
            let mut alone = 0;
            for (ino, idx, b) in self.dead_blocks(io, fs, x.id)? {
                let mut shared = match &prev {
                    Some(p) => self.holds(io, p, ino, idx, &b)?,
                    None => false,
                };
                if !shared {
                    let v = self.pager.get(io, &self.tree, &block_key(ino, idx))?;
                    shared = v.is_some_and(|v| v == encode_block(&b));
                }
                alone += u64::from(!shared);
            }
            if let Some(s) = self.snaps.get_mut(&x.id) {
                s.reclaim = alone;
            }
        }
        Ok(())
    }
}
