//! Applying namespace records to a shard's tree, and the data a removed
//! file leaves behind: the last name of a regular file takes its blocks
//! and its bytes from its file system's usage in the same change.

use super::*;
use crate::meta::namespace::Removed;

/// The key of part `part` of intent `id`.
fn intent_key(id: u64, part: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'T';
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9] = part;
    k
}

impl Meta {
    /// Applies a namespace change. A refusal changes nothing (and the
    /// store journals nothing); what the change did is returned.
    pub fn apply_ns(
        &mut self,
        io: &mut dyn PageIo,
        rec: &NsRecord,
    ) -> std::result::Result<NsDone, NsError> {
        let ctx = rec.ctx();
        let fs = rec.fs;
        let mut done = NsDone::default();
        // The inode a removal may take (its size and blocks go with it).
        let mut victim: Option<Attr> = None;
        let mut ids = Ids::none();
        let removed = match &rec.op {
            NsOp::Root { ino, perm } => {
                done.attr = Some(
                    self.namespace(io, fs, &mut ids)
                        .make_root(*ino, *perm, ctx)?,
                );
                None
            }
            NsOp::Make {
                dir,
                name,
                ino,
                generation,
                mode,
                rdev,
                target,
            } => {
                ids.ino = *ino;
                ids.generation = *generation;
                let mut ns = self.namespace(io, fs, &mut ids);
                let a = match Kind::from_mode(*mode) {
                    Some(Kind::Dir) => ns.mkdir(*dir, name, *mode, ctx)?,
                    Some(Kind::Symlink) => ns.symlink(*dir, name, target, ctx)?,
                    Some(Kind::File) | None => ns.create(*dir, name, *mode, ctx)?,
                    Some(_) => ns.mknod(*dir, name, *mode, *rdev, ctx)?,
                };
                self.next_ino = self.next_ino.max(*ino);
                self.next_gen = self.next_gen.max(generation + 1);
                done.attr = Some(a);
                None
            }
            NsOp::Unlink { dir, name } => {
                let mut ns = self.namespace(io, fs, &mut ids);
                victim = ns.lookup(*dir, name).ok();
                Some(ns.unlink(*dir, name, ctx)?)
            }
            NsOp::Rmdir { dir, name } => {
                Some(self.namespace(io, fs, &mut ids).rmdir(*dir, name, ctx)?)
            }
            NsOp::Rename {
                from_dir,
                from,
                to_dir,
                to,
                flags,
            } => {
                let mut ns = self.namespace(io, fs, &mut ids);
                if !flags.exchange {
                    victim = ns.lookup(*to_dir, to).ok();
                }
                ns.rename(*from_dir, from, *to_dir, to, *flags, ctx)?
            }
            NsOp::Link { ino, dir, name } => {
                done.attr = Some(
                    self.namespace(io, fs, &mut ids)
                        .link(*ino, *dir, name, ctx)?,
                );
                None
            }
            NsOp::SetAttr { ino, set } => {
                if set.size.is_some() {
                    return Err(NsError::Invalid(
                        "a size is set by truncating, which drops the data past it",
                    ));
                }
                done.attr = Some(self.namespace(io, fs, &mut ids).setattr(*ino, *set, ctx)?);
                None
            }
            NsOp::SetXattr {
                ino,
                name,
                value,
                mode,
            } => {
                self.namespace(io, fs, &mut ids)
                    .setxattr(*ino, name, value, *mode, ctx)?;
                None
            }
            NsOp::RemoveXattr { ino, name } => {
                self.namespace(io, fs, &mut ids)
                    .removexattr(*ino, name, ctx)?;
                None
            }
            NsOp::SetEntry {
                dir,
                name,
                to,
                dir_nlink,
            } => {
                self.namespace(io, fs, &mut ids)
                    .set_entry(*dir, name, *to, *dir_nlink, ctx.now)?;
                None
            }
            NsOp::SetLinks { ino, nlink, parent } => {
                victim = self
                    .namespace(io, fs, &mut ids)
                    .set_links(*ino, *nlink, *parent, ctx.now)?;
                victim.map(|a| Removed {
                    ino: a.ino,
                    last: true,
                })
            }
            NsOp::PutInode { attr } => {
                self.namespace(io, fs, &mut ids).put_inode(attr)?;
                self.next_ino = self.next_ino.max(attr.ino);
                self.next_gen = self.next_gen.max(attr.generation + 1);
                done.attr = Some(*attr);
                None
            }
            NsOp::Intent { id, steps } => {
                let mut w = crate::codec::Writer::default();
                super::super::names::encode(
                    &mut w,
                    &NsRecord {
                        op: NsOp::Intent {
                            id: *id,
                            steps: steps.clone(),
                        },
                        ..rec.clone()
                    },
                );
                self.drop_intent(io, *id)?;
                for (part, bytes) in w.buf.chunks(MAX_VALUE).enumerate() {
                    self.pager
                        .insert(io, &mut self.tree, &intent_key(*id, part as u8), bytes)?;
                }
                None
            }
            NsOp::IntentDone { id } => {
                self.drop_intent(io, *id)?;
                None
            }
        };
        debug_assert_eq!(ids.step, 0, "a record creates at most one inode");
        // A symlink's target counts against its quota like a file's bytes.
        if matches!(rec.op, NsOp::Make { .. } | NsOp::PutInode { .. }) {
            if let Some(a) = done.attr.filter(|a| a.kind == Kind::Symlink) {
                self.charge_quota(a.quota, a.size as i64);
            }
        }
        if let (Some(r), Some(a)) = (removed, victim) {
            debug_assert_eq!(r.ino, a.ino);
            if r.last && a.kind == Kind::File {
                self.drop_file_data(io, &a, &mut done.released)?;
                done.gone = Some(a.ino);
            }
            if r.last && a.kind == Kind::Symlink {
                self.charge_quota(a.quota, -(a.size as i64));
            }
        }
        self.count_refs(io, &[], &done.released)?;
        Ok(done)
    }

    /// Removes intent `id`'s record.
    fn drop_intent(&mut self, io: &mut dyn PageIo, id: u64) -> Result<()> {
        let mut p = vec![b'T'];
        p.extend_from_slice(&id.to_be_bytes());
        self.remove_prefix(io, &p)
    }

    /// The intents this shard coordinates that are not done: operations
    /// spanning shards that recovery finishes.
    pub fn intents(&mut self, io: &mut dyn PageIo) -> Result<Vec<NsRecord>> {
        let mut parts: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        self.pager.scan(io, &self.tree, b"T", &mut |k, v| {
            if k.len() != 10 || k[0] != b'T' {
                return false;
            }
            let id = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            parts.entry(id).or_default().extend_from_slice(v);
            true
        })?;
        parts
            .into_values()
            .map(|b| {
                let mut r = crate::codec::Reader::new(&b);
                super::super::names::decode(&mut r).map_err(|e| TreeError::Corrupt {
                    page: 0,
                    what: e.what,
                })
            })
            .collect()
    }

    /// Drops the blocks and the usage of a regular file whose inode is
    /// gone.
    fn drop_file_data(
        &mut self,
        io: &mut dyn PageIo,
        a: &Attr,
        released: &mut Released,
    ) -> Result<()> {
        let u = self.used.entry(a.fs).or_default();
        *u = u.saturating_sub(a.size);
        self.charge_quota(a.quota, -(a.size as i64));
        self.cut_blocks(io, a.fs, a.ino, 0, released)?;
        Ok(())
    }

    /// Removes every key that starts with `prefix`.
    fn remove_prefix(&mut self, io: &mut dyn PageIo, prefix: &[u8]) -> Result<()> {
        for (k, _) in Self::prefixed(&mut self.pager, io, &self.tree, prefix)? {
            self.pager.remove(io, &mut self.tree, &k)?;
        }
        Ok(())
    }

    /// Every key of `tree` (the live one, or a snapshot's) that starts with
    /// `prefix`, with its value, in order.
    pub(super) fn prefixed(
        pager: &mut Pager,
        io: &mut dyn PageIo,
        tree: &Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        pager.scan(io, tree, prefix, &mut |k, v| {
            if !k.starts_with(prefix) {
                return false;
            }
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Removes everything file system `fs` keeps on this shard: every inode
    /// with its entries, symlink target, xattrs and blocks, and every part.
    pub(super) fn drop_fs_files(&mut self, io: &mut dyn PageIo, fs: FsId) -> Result<Released> {
        let (attrs, parts) = Self::fs_contents(&mut self.pager, io, &self.tree, fs)?;
        let mut released = Released::new();
        for a in &attrs {
            if a.kind == Kind::File {
                self.drop_file_data(io, a, &mut released)?;
            }
            if a.kind == Kind::Symlink {
                self.charge_quota(a.quota, -(a.size as i64));
            }
            let ino = a.ino.to_be_bytes();
            for tag in [b'N', b'E', b'L', b'X'] {
                let mut p = vec![tag];
                p.extend_from_slice(&ino);
                self.remove_prefix(io, &p)?;
            }
            self.pager.remove(io, &mut self.tree, &inode_key(a.ino))?;
        }
        for i in parts {
            self.cut_blocks(io, fs, i.ino, 0, &mut released)?;
            self.pager.remove(io, &mut self.tree, &part_key(i.ino))?;
        }
        Ok(released)
    }

    /// The inodes and the parts file system `fs` has in `tree` (the live
    /// one, or a snapshot's).
    pub(super) fn fs_contents(
        pager: &mut Pager,
        io: &mut dyn PageIo,
        tree: &Tree,
        fs: FsId,
    ) -> Result<(Vec<Attr>, Vec<Inode>)> {
        let mut attrs = Vec::new();
        let mut parts = Vec::new();
        let mut bad = None;
        pager.scan(io, tree, b"I", &mut |k, v| {
            if k.len() != 9 || k[0] != b'I' {
                return false;
            }
            match decode_attr(v) {
                Ok(a) => {
                    if a.fs == fs {
                        attrs.push(a);
                    }
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        if bad.is_none() {
            pager.scan(io, tree, b"f", &mut |k, v| {
                if k.len() != 9 || k[0] != b'f' {
                    return false;
                }
                match decode_part(be64(&k[1..]), v) {
                    Ok(i) => {
                        if i.fs == fs {
                            parts.push(i);
                        }
                        true
                    }
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                }
            })?;
        }
        bad.map_or(Ok((attrs, parts)), Err)
    }
}
