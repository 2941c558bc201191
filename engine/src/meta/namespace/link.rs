//! Hard links: `link` gives an inode another name.
//!
//! Refusals: ENOENT (no such inode or parent), EPERM (a directory),
//! EEXIST (the name is taken), ENOTDIR (the parent is not a directory),
//! EMLINK (the inode has `LINK_MAX` links), ENAMETOOLONG, EINVAL (a bad
//! name).

use super::*;

impl Namespace<'_> {
    /// Adds entry `name` in `dir` for inode `ino`.
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Attr> {
        check_name(name)?;
        let mut a = self.getattr(ino)?;
        if a.kind == Kind::Dir {
            return Err(NsError::NotPermitted);
        }
        if self.entry(dir, name)?.is_some() {
            return Err(NsError::Exists);
        }
        if a.nlink >= LINK_MAX {
            return Err(NsError::TooManyLinks);
        }
        let mut d = self.dir(dir)?;
        if d.quota != a.quota {
            return Err(NsError::QuotaBoundary);
        }
        self.add_entry(&mut d, name, ino, a.kind)?;
        d.mtime = ctx.now;
        d.ctime = ctx.now;
        self.put_attr(&d)?;
        a.nlink += 1;
        a.ctime = ctx.now;
        self.put_attr(&a)?;
        Ok(a)
    }
}
