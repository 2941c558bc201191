//! Creating inodes: files and device nodes (`create`, `mknod`),
//! directories (`mkdir`), symbolic links (`symlink`, read back by
//! `readlink`).
//!
//! Refusals: EEXIST (the name is taken), ENOTDIR (the parent is not a
//! directory), ENOENT (no parent), ENAMETOOLONG (name over 255 bytes,
//! target over 4095), EINVAL (empty name, `/`, NUL, `.`/`..`; a kind
//! `create` does not make), EMLINK (a parent with too many
//! subdirectories).

use super::*;

/// What a new inode of `kind` made in directory `parent` gets of it: in a
/// set-group-ID directory the directory's group, and a subdirectory the
/// set-group-ID bit too (as ext4 and XFS do); elsewhere the caller's group.
/// Returns the permission bits and the group.
pub fn inherit(parent: &Attr, kind: Kind, perm: u32, gid: u32) -> (u32, u32) {
    if parent.perm & libc::S_ISGID == 0 {
        return (perm, gid);
    }
    let perm = if kind == Kind::Dir {
        perm | libc::S_ISGID
    } else {
        perm
    };
    (perm, parent.gid)
}

impl Namespace<'_> {
    /// Creates `name` in `dir` with `mode` (kind and permission bits; a
    /// file, FIFO, socket or device node numbered `rdev`).
    pub fn mknod(&mut self, dir: Ino, name: &[u8], mode: u32, rdev: u32, ctx: Ctx) -> Result<Attr> {
        let kind = Kind::from_mode(mode).unwrap_or(Kind::File);
        if matches!(kind, Kind::Dir | Kind::Symlink) {
            return Err(NsError::Invalid(
                "directories and symlinks have calls of their own",
            ));
        }
        self.make(dir, name, kind, mode & 0o7777, rdev, ctx)
    }

    /// Creates a regular file.
    pub fn create(&mut self, dir: Ino, name: &[u8], perm: u32, ctx: Ctx) -> Result<Attr> {
        self.make(dir, name, Kind::File, perm & 0o7777, 0, ctx)
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, dir: Ino, name: &[u8], perm: u32, ctx: Ctx) -> Result<Attr> {
        self.make(dir, name, Kind::Dir, perm & 0o7777, 0, ctx)
    }

    /// Creates a symbolic link to `target`.
    pub fn symlink(&mut self, dir: Ino, name: &[u8], target: &[u8], ctx: Ctx) -> Result<Attr> {
        if target.len() > PATH_MAX {
            return Err(NsError::NameTooLong);
        }
        if target.is_empty() {
            return Err(NsError::NotFound);
        }
        let mut a = self.make(dir, name, Kind::Symlink, 0o777, 0, ctx)?;
        for (part, bytes) in target.chunks(MAX_VALUE).enumerate() {
            self.pager.insert(
                &mut *self.io,
                &mut *self.tree,
                &link_key(a.ino, part as u8),
                bytes,
            )?;
        }
        a.size = target.len() as u64;
        self.put_attr(&a)?;
        Ok(a)
    }

    /// A symbolic link's target.
    pub fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let a = self.getattr(ino)?;
        if a.kind != Kind::Symlink {
            return Err(NsError::NotSymlink);
        }
        let mut out = Vec::with_capacity(a.size as usize);
        for part in 0..=(PATH_MAX / MAX_VALUE) as u8 {
            match self
                .pager
                .get(&mut *self.io, &*self.tree, &link_key(ino, part))?
            {
                Some(b) => out.extend_from_slice(&b),
                None => break,
            }
        }
        debug_assert_eq!(out.len() as u64, a.size);
        Ok(out)
    }

    fn make(
        &mut self,
        dir: Ino,
        name: &[u8],
        kind: Kind,
        perm: u32,
        rdev: u32,
        ctx: Ctx,
    ) -> Result<Attr> {
        check_name(name)?;
        if self.entry(dir, name)?.is_some() {
            return Err(NsError::Exists);
        }
        let mut d = self.dir(dir)?;
        if kind == Kind::Dir && d.nlink >= LINK_MAX {
            return Err(NsError::TooManyLinks);
        }
        let (ino, generation) = self.new_ino();
        debug_assert_ne!(ino, 0, "a create needs an inode number");
        let (perm, gid) = inherit(&d, kind, perm, ctx.gid);
        let a = Attr {
            ino,
            generation,
            fs: self.fs,
            kind,
            perm,
            uid: ctx.uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            size: 0,
            rdev,
            atime: ctx.now,
            mtime: ctx.now,
            ctime: ctx.now,
            parent: if kind == Kind::Dir { dir } else { 0 },
            next_seq: 1,
            blocks: 0,
            quota: d.quota,
        };
        self.put_attr(&a)?;
        self.add_entry(&mut d, name, ino, kind)?;
        if kind == Kind::Dir {
            d.nlink += 1;
        }
        d.mtime = ctx.now;
        d.ctime = ctx.now;
        self.put_attr(&d)?;
        Ok(a)
    }
}
