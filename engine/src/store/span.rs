//! This shard's part in namespace work that spans shards: walking a path
//! as far as this shard holds it, reserving an inode number for a
//! directory homed here, applying the steps of an operation spanning
//! shards, and keeping the intents this shard coordinates until they are
//! done (see [`crate::meta::namespace`]'s `span.rs`).

use super::*;
use crate::meta::namespace::{Attr, DirEntry, Kind, NsError};
use crate::meta::{NsOp, NsRecord};

/// A path resolution in progress: where it stands, the directory it came
/// through (a relative symlink target resolves from there) and the
/// components left, the next one last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The inode reached.
    pub at: Ino,
    /// The directory whose entry named `at`.
    pub via: Ino,
    /// Components still to resolve, as a stack (the next one last).
    pub todo: Vec<Vec<u8>>,
    /// Symlinks followed so far.
    pub links: usize,
}

impl Walk {
    /// A walk of `comps` (in path order) from directory `start`.
    pub fn from(start: Ino, mut comps: Vec<Vec<u8>>) -> Walk {
        comps.reverse();
        Walk {
            at: start,
            via: start,
            todo: comps,
            links: 0,
        }
    }
}

impl Store {
    /// Walks `w` as far as this shard holds the inodes it meets: the inode
    /// at its end, or the walk to go on with on the shard holding the
    /// inode it stopped at. Symlinks before the last component are
    /// followed (at most [`MAX_SYMLINKS`]).
    pub fn walk_on(&mut self, fs: FsId, mut w: Walk) -> Result<std::result::Result<Attr, Walk>> {
        self.fs(fs)?;
        loop {
            let a = match self.getattr(w.at) {
                Ok(a) => a,
                Err(StoreError::Ns(NsError::Remote(_))) => return Ok(Err(w)),
                Err(e) => return Err(e),
            };
            if a.kind == Kind::Symlink && !w.todo.is_empty() {
                w.links += 1;
                if w.links > MAX_SYMLINKS {
                    return Err(StoreError::Ns(NsError::Loop));
                }
                let target = self.readlink(a.ino)?;
                w.todo.extend(components(&target).into_iter().rev());
                w.at = if target.first() == Some(&b'/') {
                    self.root_of(fs)
                } else {
                    w.via
                };
                continue;
            }
            let Some(c) = w.todo.pop() else {
                return Ok(Ok(a));
            };
            if a.kind != Kind::Dir {
                return Err(StoreError::Ns(NsError::NotDir));
            }
            w.via = a.ino;
            w.at = match c.as_slice() {
                b"." => a.ino,
                b".." => a.parent,
                name => {
                    self.entry_of(a.ino, name)?
                        .ok_or(StoreError::Ns(NsError::NotFound))?
                        .0
                }
            };
        }
    }

    /// The inode entry `name` of `dir` names and its kind (another shard
    /// may hold the inode).
    pub fn entry_of(&mut self, dir: Ino, name: &[u8]) -> Result<Option<(Ino, Kind)>> {
        self.ns_read(|ns| ns.entry_of(dir, name))
    }

    /// Whether directory `dir` has no entries.
    pub fn is_empty_dir(&mut self, dir: Ino) -> Result<bool> {
        self.ns_read(|ns| ns.is_empty(dir))
    }

    /// Takes a fresh inode number (carrying this shard) and generation for
    /// an inode another shard's operation will make here: later creates
    /// here never take them.
    pub fn reserve_ino(&mut self) -> (Ino, u64) {
        let (ino, generation) = self.fresh_ino();
        self.meta.next_ino = ino;
        self.meta.next_gen = generation + 1;
        (ino, generation)
    }

    /// Applies one step of an operation spanning shards (journaled like
    /// any namespace change); returns a regular file whose last link it
    /// took (its pieces on other shards are to be dropped).
    pub fn span_step(&mut self, rec: NsRecord) -> Result<Option<Ino>> {
        debug_assert!(rec.op.is_step(), "{:?} is not a step", rec.op);
        let fs = rec.fs;
        Ok(self.ns_record(fs, rec.ctx(), rec.op)?.gone)
    }

    /// Records an operation spanning shards that this shard coordinates:
    /// its steps, kept until [`Store::end_intent`]. Returns its number.
    pub fn begin_intent(&mut self, fs: FsId, steps: Vec<(u32, NsRecord)>) -> Result<u64> {
        let id = self
            .intents()?
            .iter()
            .filter_map(|r| match r.op {
                NsOp::Intent { id, .. } => Some(id + 1),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        let ctx = now_ctx();
        self.ns_record(fs, ctx, NsOp::Intent { id, steps })?;
        Ok(id)
    }

    /// Marks intent `id` done: every step of it is durable.
    pub fn end_intent(&mut self, fs: FsId, id: u64) -> Result<()> {
        self.ns_record(fs, now_ctx(), NsOp::IntentDone { id })?;
        Ok(())
    }

    /// The intents this shard coordinates that are not done.
    pub fn intents(&mut self) -> Result<Vec<NsRecord>> {
        self.with_meta(|m, io| m.intents(io))
    }

    /// Up to `max` entries of directory `dir` after `cookie`, each with its
    /// attributes when this shard holds its inode.
    pub fn readdir_plus(
        &mut self,
        dir: Ino,
        cookie: u64,
        max: usize,
    ) -> Result<Vec<(DirEntry, Option<Stat>)>> {
        let page = self.readdir(dir, cookie, max)?;
        let mut out = Vec::with_capacity(page.len());
        for e in page {
            let st = match self.getattr(e.ino) {
                Ok(a) => Some(self.stat_of(a)?),
                Err(StoreError::Ns(NsError::Remote(_))) => None,
                Err(e) => return Err(e),
            };
            out.push((e, st));
        }
        Ok(out)
    }

    /// The attributes of inodes held here (`None` for one that is gone).
    pub fn stats(&mut self, inos: &[Ino]) -> Result<Vec<Option<Stat>>> {
        inos.iter()
            .map(|&ino| match self.getattr(ino) {
                Ok(a) => self.stat_of(a).map(Some),
                Err(StoreError::Ns(NsError::NotFound)) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// What this shard's namespace holds, for a check across shards.
    pub fn ns_facts(&mut self) -> Result<crate::meta::namespace::Facts> {
        self.ns_read(|ns| ns.facts())
    }
}

/// Root, now: the credentials of records the engine makes itself.
fn now_ctx() -> crate::meta::namespace::Ctx {
    crate::meta::namespace::Ctx {
        uid: 0,
        gid: 0,
        now: now_nanos(),
    }
}
