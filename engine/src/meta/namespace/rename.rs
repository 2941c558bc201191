//! `rename`: plain, no-replace and exchange, atomic within the tree.
//!
//! Refusals: ENOENT (no source; exchange without a target), EEXIST
//! (no-replace onto an existing name), ENOTDIR (a directory onto a
//! non-directory, or a parent that is not a directory), EISDIR (a
//! non-directory onto a directory), ENOTEMPTY (onto a directory with
//! entries), EINVAL (a directory moved under itself, `.`/`..`, both flags,
//! a bad target name). Renaming an entry onto another name of the same
//! inode succeeds and changes nothing, as POSIX asks.

use super::*;

/// `rename`'s flags (`renameat2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`: fail if the target exists.
    pub noreplace: bool,
    /// `RENAME_EXCHANGE`: swap the two entries.
    pub exchange: bool,
}

impl Namespace<'_> {
    /// Renames `from_dir`/`from` to `to_dir`/`to`. Returns what happened to
    /// an inode whose entry the rename replaced.
    pub fn rename(
        &mut self,
        from_dir: Ino,
        from: &[u8],
        to_dir: Ino,
        to: &[u8],
        flags: RenameFlags,
        ctx: Ctx,
    ) -> Result<Option<Removed>> {
        if flags.noreplace && flags.exchange {
            return Err(NsError::Invalid(
                "RENAME_NOREPLACE and RENAME_EXCHANGE together",
            ));
        }
        if from == b"." || from == b".." {
            return Err(NsError::Invalid("rename of `.` or `..`"));
        }
        check_name(to)?;
        let src = self.entry(from_dir, from)?.ok_or(NsError::NotFound)?;
        let dst = self.entry(to_dir, to)?;
        if from_dir == to_dir && from == to {
            return Ok(None);
        }
        if from_dir != to_dir && self.dir(from_dir)?.quota != self.dir(to_dir)?.quota {
            return Err(NsError::QuotaBoundary);
        }
        if flags.exchange {
            let dst = dst.ok_or(NsError::NotFound)?;
            self.exchange(from_dir, from, src, to_dir, to, dst, ctx)?;
            return Ok(None);
        }
        // Every inode the rename changes is read before anything changes
        // (one another shard holds refuses the whole rename).
        let mut a = self.getattr(src.ino)?;
        if src.kind == Kind::Dir && from_dir != to_dir {
            self.check_not_under(src.ino, to_dir)?;
        }
        let mut replaced = None;
        if let Some(d) = dst {
            if flags.noreplace {
                return Err(NsError::Exists);
            }
            if d.ino == src.ino {
                return Ok(None);
            }
            match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                (true, false) => return Err(NsError::NotDir),
                (false, true) => return Err(NsError::IsDir),
                (true, true) if !self.is_empty_dir(d.ino)? => return Err(NsError::NotEmpty),
                _ => {}
            }
            let a = self.getattr(d.ino)?;
            self.remove_entry(to_dir, to, &d)?;
            let last = self.drop_link(a, ctx.now)?;
            if d.kind == Kind::Dir {
                self.touch_dir(to_dir, -1, ctx.now)?;
            }
            replaced = Some(Removed { ino: d.ino, last });
        }
        self.remove_entry(from_dir, from, &src)?;
        let mut d = self.dir(to_dir)?;
        self.add_entry(&mut d, to, src.ino, src.kind)?;
        self.put_attr(&d)?;
        let moved_dir = src.kind == Kind::Dir && from_dir != to_dir;
        if moved_dir {
            self.touch_dir(from_dir, -1, ctx.now)?;
            self.touch_dir(to_dir, 1, ctx.now)?;
        } else {
            self.touch_dir(from_dir, 0, ctx.now)?;
            self.touch_dir(to_dir, 0, ctx.now)?;
        }
        if src.kind == Kind::Dir {
            a.parent = to_dir;
        }
        a.ctime = ctx.now;
        self.put_attr(&a)?;
        Ok(replaced)
    }

    /// Refuses to move directory `dir` into `target` when `target` is
    /// `dir` or lies under it (the move would cut the subtree off in a
    /// loop).
    fn check_not_under(&mut self, dir: Ino, target: Ino) -> Result<()> {
        let mut at = target;
        loop {
            if at == dir {
                return Err(NsError::Invalid("a directory cannot move under itself"));
            }
            let a = self.getattr(at)?;
            if a.is_root() {
                return Ok(());
            }
            debug_assert_ne!(a.parent, 0, "a directory has a parent");
            at = a.parent;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        a_dir: Ino,
        a_name: &[u8],
        a: Entry,
        b_dir: Ino,
        b_name: &[u8],
        b: Entry,
        ctx: Ctx,
    ) -> Result<()> {
        if a.ino == b.ino {
            return Ok(());
        }
        let attrs = [self.getattr(a.ino)?, self.getattr(b.ino)?];
        if a_dir != b_dir {
            if a.kind == Kind::Dir {
                self.check_not_under(a.ino, b_dir)?;
            }
            if b.kind == Kind::Dir {
                self.check_not_under(b.ino, a_dir)?;
            }
        }
        // Each entry keeps its place (sequence) and takes the other's inode.
        for (dir, name, at, to) in [(a_dir, a_name, a, b), (b_dir, b_name, b, a)] {
            let e = Entry {
                seq: at.seq,
                ino: to.ino,
                kind: to.kind,
            };
            self.pager.insert(
                &mut *self.io,
                &mut *self.tree,
                &name_key(dir, name),
                &e.encode(),
            )?;
            let mut by_seq = e.encode().to_vec();
            by_seq.extend_from_slice(name);
            self.pager.insert(
                &mut *self.io,
                &mut *self.tree,
                &seq_key(dir, at.seq),
                &by_seq,
            )?;
        }
        let dirs = i32::from(a.kind == Kind::Dir) - i32::from(b.kind == Kind::Dir);
        if a_dir != b_dir {
            self.touch_dir(a_dir, -dirs, ctx.now)?;
            self.touch_dir(b_dir, dirs, ctx.now)?;
        } else {
            self.touch_dir(a_dir, 0, ctx.now)?;
        }
        for (mut x, parent) in attrs.into_iter().zip([b_dir, a_dir]) {
            if x.kind == Kind::Dir {
                x.parent = parent;
            }
            x.ctime = ctx.now;
            self.put_attr(&x)?;
        }
        Ok(())
    }
}
