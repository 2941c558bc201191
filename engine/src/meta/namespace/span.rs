//! The steps of operations that span shards. An entry lives on the shard
//! of its directory and names an inode any shard may hold (a directory
//! homed elsewhere, a file renamed or linked into a directory of another
//! shard), so mkdir, rmdir, unlink, link and rename may change two or
//! more trees. The engine plans such an operation with the namespace held
//! still, records the plan as an intent, then applies these steps on each
//! shard.
//!
//! Each step sets a state rather than changing one (this entry names that
//! inode; that inode has so many links), so recovery applies the steps of
//! an unfinished intent again and reaches the same trees whether or not
//! they ran before the crash.

use super::*;

impl Namespace<'_> {
    /// Makes entry `name` of directory `dir` name `to` (or removes it) and
    /// gives `dir` `dir_nlink` links, mtime and ctime `now`. An entry that
    /// already names `to` keeps its place.
    pub fn set_entry(
        &mut self,
        dir: Ino,
        name: &[u8],
        to: Option<(Ino, Kind)>,
        dir_nlink: u32,
        now: Nanos,
    ) -> Result<()> {
        check_name(name)?;
        let mut d = self.dir(dir)?;
        let old = self.entry(dir, name)?;
        let keep =
            matches!((old, to), (Some(e), Some((ino, kind))) if e.ino == ino && e.kind == kind);
        if !keep {
            if let Some(e) = old {
                self.remove_entry(dir, name, &e)?;
            }
            if let Some((ino, kind)) = to {
                self.add_entry(&mut d, name, ino, kind)?;
            }
        }
        d.nlink = dir_nlink;
        d.mtime = now;
        d.ctime = now;
        self.put_attr(&d)
    }

    /// Gives inode `ino` `nlink` links and, a directory, parent `parent`;
    /// with no links left the inode goes (with its symlink target and
    /// extended attributes) and is returned, for its data to go too.
    /// Nothing happens to an inode already gone.
    pub fn set_links(
        &mut self,
        ino: Ino,
        nlink: u32,
        parent: Option<Ino>,
        now: Nanos,
    ) -> Result<Option<Attr>> {
        let mut a = match self.getattr(ino) {
            Ok(a) => a,
            Err(NsError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if nlink == 0 {
            a.nlink = 1;
            let gone = self.drop_link(a, now)?;
            debug_assert!(gone, "the last link takes the inode");
            return Ok(Some(a));
        }
        a.nlink = nlink;
        if let (Kind::Dir, Some(p)) = (a.kind, parent) {
            a.parent = p;
        }
        a.ctime = now;
        self.put_attr(&a)?;
        Ok(None)
    }

    /// Stores inode `a` unless one with its number exists.
    pub fn put_inode(&mut self, a: &Attr) -> Result<()> {
        if !self.home.holds(a.ino) {
            return Err(NsError::Remote(a.ino));
        }
        if self
            .pager
            .get(&mut *self.io, &*self.tree, &inode_key(a.ino))?
            .is_none()
        {
            self.put_attr(a)?;
        }
        Ok(())
    }

    /// The inode entry `name` of `dir` names and its kind, without reading
    /// the inode (another shard may hold it).
    pub fn entry_of(&mut self, dir: Ino, name: &[u8]) -> Result<Option<(Ino, Kind)>> {
        Ok(self.entry(dir, name)?.map(|e| (e.ino, e.kind)))
    }

    /// Whether directory `dir` (held here) has no entries.
    pub fn is_empty(&mut self, dir: Ino) -> Result<bool> {
        self.dir(dir)?;
        self.is_empty_dir(dir)
    }
}
