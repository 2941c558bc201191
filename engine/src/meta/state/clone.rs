//! A shard's part of a writable snapshot: the clone's file system and a
//! copy of what the read-only snapshot holds of the origin on this shard,
//! every inode renumbered ([`CloneInfo::map`]) so the clone's files are
//! its own, and every block reference counted anew (the clone shares the
//! blocks until one side changes them, then each side's references go
//! their own way, as after a restore). Running it again changes nothing.

use super::snap::INODE_PREFIXES;
use super::*;
use crate::meta::namespace::shard_of_ino;
use crate::meta::snap::CloneInfo;

impl Meta {
    /// Makes this shard's part of clone `c` (file system `to`).
    pub(super) fn snap_clone(
        &mut self,
        io: &mut dyn PageIo,
        to: &FsMeta,
        c: &CloneInfo,
    ) -> Result<()> {
        if self.fss.contains_key(&to.id) {
            return Ok(());
        }
        let Some(s) = self.snaps.get(&c.snap).cloned() else {
            return Err(corrupt("a clone of a snapshot this shard does not hold"));
        };
        debug_assert_eq!(s.fs, c.origin);
        self.next_fs = self.next_fs.max(to.id + 1);
        self.fss.insert(to.id, to.clone());
        let snap = Self::tree_of(&s);
        let (attrs, parts) = Self::fs_contents(&mut self.pager, io, &snap, s.fs)?;
        let shards = c.deltas.len().max(1) as u32;
        let mut added = Vec::new();
        let mut used = 0;
        let mut inos: Vec<(Ino, Ino)> = Vec::with_capacity(attrs.len() + parts.len());
        for mut a in attrs {
            let old = a.ino;
            a.ino = c.map(old);
            a.fs = to.id;
            a.quota = 0;
            if a.parent != 0 {
                a.parent = c.map(a.parent);
            }
            if a.kind == Kind::File {
                used += a.size;
            }
            self.pager
                .insert(io, &mut self.tree, &inode_key(a.ino), &a.encode())?;
            inos.push((old, a.ino));
        }
        for mut p in parts {
            let old = p.ino;
            p.ino = c.map(old);
            p.fs = to.id;
            self.pager
                .insert(io, &mut self.tree, &part_key(p.ino), &encode_part(&p))?;
            inos.push((old, p.ino));
        }
        for &(old, new) in &inos {
            debug_assert_eq!(shard_of_ino(old, shards), shard_of_ino(new, shards));
            if !crate::meta::snap::taggable(new) {
                return Err(corrupt(
                    "a clone's inode number has no room for snapshot tags",
                ));
            }
            if new & (1 << 62) == 0 {
                self.next_ino = self.next_ino.max(new);
            }
            // Keys naming the inode in bytes 1..9: entries by name and by
            // sequence, symlink targets, xattrs, block maps.
            for tag in INODE_PREFIXES {
                let mut prefix = vec![tag];
                prefix.extend_from_slice(&old.to_be_bytes());
                for (mut k, mut v) in Self::prefixed(&mut self.pager, io, &snap, &prefix)? {
                    k[1..9].copy_from_slice(&new.to_be_bytes());
                    match tag {
                        // An entry names its inode at bytes 8..16.
                        b'N' | b'E' => {
                            if v.len() < 17 {
                                return Err(corrupt("directory entry"));
                            }
                            let child = u64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
                            v[8..16].copy_from_slice(&c.map(child).to_le_bytes());
                        }
                        b'b' => added.push(decode_block(&v)?),
                        _ => {}
                    }
                    self.pager.insert(io, &mut self.tree, &k, &v)?;
                }
            }
        }
        // The origin's shared pool here, under the clone's id (its block
        // maps name pool blocks by file system and key).
        let mut prefix = vec![b'p'];
        prefix.extend_from_slice(&s.fs.to_be_bytes());
        for (mut k, v) in Self::prefixed(&mut self.pager, io, &snap, &prefix)? {
            k[1..5].copy_from_slice(&to.id.to_be_bytes());
            match self.pager.insert(io, &mut self.tree, &k, &v)? {
                None => {
                    added.push(decode_block(&v)?);
                    self.shared_len += 1;
                }
                // Left by an earlier try whose maps a crash undid (the
                // pool keeps entries until their references are dropped):
                // it stands for the same block, counted once.
                Some(old) => {
                    self.pager.insert(io, &mut self.tree, &k, &old)?;
                }
            }
        }
        self.count_refs(io, &added, &Released::new())?;
        self.used.insert(to.id, used);
        Ok(())
    }
}
