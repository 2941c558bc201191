//! Changing attributes (`setattr`: mode, owner, size, times) and extended
//! attributes (`setxattr`, `getxattr`, `listxattr`, `removexattr`).
//!
//! Refusals: ENOENT (no such inode), EISDIR (a size for a directory),
//! EINVAL (a size for a symlink or special file), ENODATA (no such
//! attribute, or replace of a missing one), EEXIST (create of an existing
//! one), ENAMETOOLONG (attribute name over 255 bytes), E2BIG (value over
//! 1 KiB).

use super::*;

/// Which attributes to change (`None`: keep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits.
    pub perm: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size (a file's data beyond it is the engine's to drop).
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<Nanos>,
    /// Modification time.
    pub mtime: Option<Nanos>,
}

/// How `setxattr` treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Only create (EEXIST if present).
    Create,
    /// Only replace (ENODATA if missing).
    Replace,
}

impl Namespace<'_> {
    /// Changes the attributes `s` names; ctime becomes `ctx.now` (and
    /// mtime too when the size changes and no mtime is given).
    pub fn setattr(&mut self, ino: Ino, s: SetAttr, ctx: Ctx) -> Result<Attr> {
        let mut a = self.getattr(ino)?;
        if let Some(size) = s.size {
            match a.kind {
                Kind::File => {}
                Kind::Dir => return Err(NsError::IsDir),
                _ => return Err(NsError::Invalid("only regular files have a size to set")),
            }
            if size != a.size && s.mtime.is_none() {
                a.mtime = ctx.now;
            }
            a.size = size;
        }
        if let Some(p) = s.perm {
            a.perm = p & 0o7777;
        }
        if let Some(u) = s.uid {
            a.uid = u;
        }
        if let Some(g) = s.gid {
            a.gid = g;
        }
        if let Some(t) = s.atime {
            a.atime = t;
        }
        if let Some(t) = s.mtime {
            a.mtime = t;
        }
        a.ctime = ctx.now;
        self.put_attr(&a)?;
        Ok(a)
    }

    /// Sets extended attribute `name` of `ino`.
    pub fn setxattr(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        ctx: Ctx,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > MAX_VALUE {
            return Err(NsError::ValueTooLarge);
        }
        let mut a = self.getattr(ino)?;
        let key = xattr_key(ino, name);
        let exists = self.pager.get(&mut *self.io, &*self.tree, &key)?.is_some();
        match (mode, exists) {
            (XattrMode::Create, true) => return Err(NsError::Exists),
            (XattrMode::Replace, false) => return Err(NsError::NoAttr),
            _ => {}
        }
        self.pager
            .insert(&mut *self.io, &mut *self.tree, &key, value)?;
        a.ctime = ctx.now;
        self.put_attr(&a)
    }

    /// Extended attribute `name` of `ino`.
    pub fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        self.getattr(ino)?;
        self.pager
            .get(&mut *self.io, &*self.tree, &xattr_key(ino, name))?
            .ok_or(NsError::NoAttr)
    }

    /// The names of `ino`'s extended attributes, in order.
    pub fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        let from = xattr_key(ino, b"");
        let mut out = Vec::new();
        self.pager
            .scan(&mut *self.io, &*self.tree, &from, &mut |k, _| {
                if k.len() < 9 || k[..9] != from[..9] {
                    return false;
                }
                out.push(k[9..].to_vec());
                true
            })?;
        Ok(out)
    }

    /// Removes extended attribute `name` of `ino`.
    pub fn removexattr(&mut self, ino: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        check_xattr_name(name)?;
        let mut a = self.getattr(ino)?;
        self.pager
            .remove(&mut *self.io, &mut *self.tree, &xattr_key(ino, name))?
            .ok_or(NsError::NoAttr)?;
        a.ctime = ctx.now;
        self.put_attr(&a)
    }
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.len() > XATTR_NAME_MAX {
        return Err(NsError::NameTooLong);
    }
    if name.is_empty() {
        return Err(NsError::Invalid("an extended attribute needs a name"));
    }
    Ok(())
}
