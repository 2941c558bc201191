//! Removing entries: `unlink` (anything but a directory) and `rmdir`.
//!
//! Refusals: ENOENT (no such entry), ENOTDIR (the parent, or rmdir's
//! target, is not a directory), EISDIR (unlink of a directory),
//! ENOTEMPTY (rmdir of a directory with entries), EINVAL (`.`; `..`
//! gives ENOTEMPTY, as Linux does).

use super::*;

/// What removing an entry did to its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The inode the entry named.
    pub ino: Ino,
    /// Whether that was its last link (the inode is gone: free its data).
    pub last: bool,
}

impl Namespace<'_> {
    /// Removes entry `name` from `dir`; it must not name a directory.
    pub fn unlink(&mut self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Removed> {
        if name == b"." || name == b".." {
            return Err(NsError::IsDir);
        }
        let e = self.entry(dir, name)?.ok_or(NsError::NotFound)?;
        if e.kind == Kind::Dir {
            return Err(NsError::IsDir);
        }
        let a = self.getattr(e.ino)?;
        self.remove_entry(dir, name, &e)?;
        let last = self.drop_link(a, ctx.now)?;
        self.touch_dir(dir, 0, ctx.now)?;
        Ok(Removed { ino: e.ino, last })
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Removed> {
        match name {
            b"." => return Err(NsError::Invalid("rmdir of `.`")),
            b".." => return Err(NsError::NotEmpty),
            _ => {}
        }
        let e = self.entry(dir, name)?.ok_or(NsError::NotFound)?;
        if e.kind != Kind::Dir {
            return Err(NsError::NotDir);
        }
        if !self.is_empty_dir(e.ino)? {
            return Err(NsError::NotEmpty);
        }
        let a = self.getattr(e.ino)?;
        self.remove_entry(dir, name, &e)?;
        self.drop_link(a, ctx.now)?;
        self.touch_dir(dir, -1, ctx.now)?;
        Ok(Removed {
            ino: e.ino,
            last: true,
        })
    }

    /// Whether directory `dir` has no entries.
    pub(super) fn is_empty_dir(&mut self, dir: Ino) -> Result<bool> {
        let from = seq_key(dir, 0);
        let mut any = false;
        self.pager
            .scan(&mut *self.io, &*self.tree, &from, &mut |k, _| {
                any = k[..9] == from[..9];
                false
            })?;
        Ok(!any)
    }

    /// Updates a directory after a change of its entries: its link count by
    /// `links` (subdirectories added or removed), mtime and ctime.
    pub(super) fn touch_dir(&mut self, dir: Ino, links: i32, now: Nanos) -> Result<()> {
        let mut d = self.getattr(dir)?;
        d.nlink = d.nlink.saturating_add_signed(links);
        d.mtime = now;
        d.ctime = now;
        self.put_attr(&d)
    }
}
