//! Namespace operations that span shards: a directory homed on another
//! shard than its entry (mkdir, rmdir), an entry naming another shard's
//! inode (unlink, link) and renames between shards, or of directories
//! whose ancestors live elsewhere.
//!
//! Each runs with the namespace held still (no other namespace change runs
//! meanwhile) in two phases:
//!
//! 1. Plan: read what the operation needs from each shard, refuse it with
//!    POSIX's errno as the namespace would, and write down the new state as
//!    steps that set it ([`NsOp::SetEntry`], [`NsOp::SetLinks`],
//!    [`NsOp::PutInode`]). The coordinator (the first step's shard)
//!    journals them as one intent, durably: from then on the operation is
//!    decided.
//! 2. Apply each step on its shard, make them durable, then mark the
//!    intent done, durably, before the namespace moves on.
//!
//! A crash before the intent is durable leaves no step durable (steps are
//! journaled after it); after it, opening the engine applies the steps of
//! every intent not done again. Steps set states rather than change them,
//! so applying one twice is applying it once. Steps run in an order that
//! never leaves an entry naming a missing inode for lookups running
//! meanwhile: inodes are made before their entries and dropped after.

use super::*;
use crate::meta::namespace::{check_name, Attr, Ctx, Kind, NsError, RenameFlags, LINK_MAX};
use crate::meta::{NsOp, NsRecord};

/// Most directories a loop check climbs before it gives up.
const MAX_DEPTH: usize = 1 << 20;

/// What an entry names: an inode and its kind, or nothing.
type Named = Option<(Ino, Kind)>;

fn refuse<R>(e: NsError) -> Result<R> {
    Err(StoreError::Ns(e))
}

/// The steps of one operation spanning shards.
struct Plan {
    fs: FsId,
    ctx: Ctx,
    steps: Vec<(u32, NsOp)>,
}

impl Plan {
    fn new(fs: FsId, ctx: Ctx) -> Plan {
        Plan {
            fs,
            ctx,
            steps: Vec::new(),
        }
    }

    /// A step on `shard`: entry `name` of `dir` names `to`, `dir` has
    /// `dir_nlink` links.
    fn entry(&mut self, shard: u32, dir: Ino, name: &[u8], to: Named, dir_nlink: u32) {
        let name = name.to_vec();
        self.steps.push((
            shard,
            NsOp::SetEntry {
                dir,
                name,
                to,
                dir_nlink,
            },
        ));
    }

    /// A step on `shard`: inode `ino` has `nlink` links (and parent
    /// `parent`, a directory).
    fn links(&mut self, shard: u32, ino: Ino, nlink: u32, parent: Option<Ino>) {
        self.steps
            .push((shard, NsOp::SetLinks { ino, nlink, parent }));
    }

    fn records(&self) -> Vec<(u32, NsRecord)> {
        self.steps
            .iter()
            .map(|(shard, op)| {
                (
                    *shard,
                    NsRecord {
                        fs: self.fs,
                        uid: self.ctx.uid,
                        gid: self.ctx.gid,
                        now: self.ctx.now,
                        op: op.clone(),
                    },
                )
            })
            .collect()
    }
}

impl Engine {
    /// Namespace operations that spanned shards since the engine started.
    pub fn names_spanned(&self) -> u64 {
        self.spanned.load(Ordering::Relaxed)
    }

    /// Runs a plan: the intent, durably (committed on every shard); each
    /// step; the steps, durably;
    /// the intent done, durably. Returns the regular files whose last link
    /// went. A step that fails leaves the intent for the next open to
    /// finish.
    fn run_plan(&self, plan: Plan) -> Result<Vec<Ino>> {
        let steps = plan.records();
        let Some(&(coordinator, _)) = steps.first() else {
            return Ok(Vec::new());
        };
        let fs = plan.fs;
        self.spanned.fetch_add(1, Ordering::Relaxed);
        let intent = steps.clone();
        let id = self.call_shard(coordinator, move |s| s.begin_intent(fs, intent))?;
        self.commit_all()?;
        let gone = self.apply_steps(steps)?;
        self.commit_all()?;
        self.call_shard(coordinator, move |s| s.end_intent(fs, id))?;
        self.commit_all()?;
        Ok(gone)
    }

    /// Applies steps on their shards, in order; returns the regular files
    /// whose last link went.
    fn apply_steps(&self, steps: Vec<(u32, NsRecord)>) -> Result<Vec<Ino>> {
        let mut gone = Vec::new();
        for (shard, rec) in steps {
            gone.extend(self.call_shard(shard, move |s| s.span_step(rec))?);
        }
        Ok(gone)
    }

    /// Finishes the operations spanning shards that a crash cut short:
    /// applies the steps of every intent not done again. Runs at open,
    /// before anything else changes the namespace.
    pub(super) fn finish_intents(&self) -> Result<()> {
        let _alone = self.names_alone();
        let all = self.broadcast(|s| s.intents())?;
        for (coordinator, intents) in all.into_iter().enumerate() {
            for rec in intents {
                let NsOp::Intent { id, steps } = rec.op else {
                    continue;
                };
                let fs = rec.fs;
                tracing::info!(
                    shard = coordinator,
                    intent = id,
                    steps = steps.len(),
                    "finishing a namespace operation spanning shards"
                );
                let mut gone = Vec::new();
                for (shard, step) in steps {
                    match self.call_shard(shard, move |s| s.span_step(step)) {
                        Ok(g) => gone.extend(g),
                        // The directory or file system went since (a file
                        // system deleted before the crash): nothing to set.
                        Err(StoreError::Ns(e)) => {
                            tracing::warn!(shard, error = %e, "a step of an unfinished namespace operation no longer applies");
                        }
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.commit_all()?;
                self.call_shard(coordinator as u32, move |s| s.end_intent(fs, id))?;
                self.commit_all()?;
                self.drop_pieces(gone)?;
            }
        }
        Ok(())
    }

    /// Refuses to move directory `dir` into `target` when `target` is
    /// `dir` or lies under it, climbing parents across shards.
    fn check_not_under(&self, dir: Ino, target: Ino) -> Result<()> {
        let mut at = target;
        for _ in 0..MAX_DEPTH {
            if at == dir {
                return refuse(NsError::Invalid("a directory cannot move under itself"));
            }
            let a = self.attr(at)?;
            if a.is_root() {
                return Ok(());
            }
            at = a.parent;
        }
        Err(StoreError::Invalid {
            reason: format!("directory {target} is more than {MAX_DEPTH} levels deep"),
        })
    }

    /// A directory and what its entry `name` names, from its shard.
    fn dir_entry(&self, dir: Ino, name: &[u8]) -> Result<(Attr, Named)> {
        let name = name.to_vec();
        self.on_ino(dir, move |s| {
            let d = s.getattr(dir)?;
            if d.kind != Kind::Dir {
                return refuse(NsError::NotDir);
            }
            Ok((d, s.entry_of(dir, &name)?))
        })
    }

    /// Whether directory `dir` has no entries, from its shard.
    fn empty_dir(&self, dir: Ino) -> Result<bool> {
        self.on_ino(dir, move |s| s.is_empty_dir(dir))
    }

    /// mkdir of `name` in `dir`, homed on another shard than `dir`'s.
    pub(super) fn span_mkdir(&self, dir: Ino, name: &[u8], mode: u32, ctx: Ctx) -> Result<Stat> {
        let _alone = self.names_alone();
        check_name(name).map_err(StoreError::Ns)?;
        let (d, old) = self.dir_entry(dir, name)?;
        if old.is_some() {
            return refuse(NsError::Exists);
        }
        if d.nlink >= LINK_MAX {
            return refuse(NsError::TooManyLinks);
        }
        let home = self.home_of_dir(dir, name);
        let (ino, generation) = self.call_shard(home, |s| Ok(s.reserve_ino()))?;
        let (perm, gid) = crate::meta::namespace::inherit(&d, Kind::Dir, mode & 0o7777, ctx.gid);
        let attr = Attr {
            ino,
            generation,
            fs: d.fs,
            kind: Kind::Dir,
            perm,
            uid: ctx.uid,
            gid,
            nlink: 2,
            size: 0,
            rdev: 0,
            atime: ctx.now,
            mtime: ctx.now,
            ctime: ctx.now,
            parent: dir,
            next_seq: 1,
            blocks: 0,
            quota: d.quota,
        };
        let mut plan = Plan::new(d.fs, ctx);
        plan.steps.push((home, NsOp::PutInode { attr }));
        plan.entry(
            self.map.shard_of_ino(dir),
            dir,
            name,
            Some((ino, Kind::Dir)),
            d.nlink + 1,
        );
        self.run_plan(plan)?;
        self.stat(ino)
    }

    /// rmdir of `name` in `dir`, a directory homed on another shard.
    pub(super) fn span_rmdir(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        match name {
            b"." => return refuse(NsError::Invalid("rmdir of `.`")),
            b".." => return refuse(NsError::NotEmpty),
            _ => {}
        }
        let _alone = self.names_alone();
        let (d, e) = self.dir_entry(dir, name)?;
        let (ino, kind) = e.ok_or(StoreError::Ns(NsError::NotFound))?;
        if kind != Kind::Dir {
            return refuse(NsError::NotDir);
        }
        if !self.empty_dir(ino)? {
            return refuse(NsError::NotEmpty);
        }
        let mut plan = Plan::new(d.fs, ctx);
        plan.entry(self.map.shard_of_ino(dir), dir, name, None, d.nlink - 1);
        plan.links(self.map.shard_of_ino(ino), ino, 0, None);
        self.run_plan(plan)?;
        Ok(())
    }

    /// unlink of `name` in `dir`, naming another shard's inode.
    pub(super) fn span_unlink(&self, dir: Ino, name: &[u8], ctx: Ctx) -> Result<()> {
        if name == b"." || name == b".." {
            return refuse(NsError::IsDir);
        }
        let alone = self.names_alone();
        let (d, e) = self.dir_entry(dir, name)?;
        let (ino, kind) = e.ok_or(StoreError::Ns(NsError::NotFound))?;
        if kind == Kind::Dir {
            return refuse(NsError::IsDir);
        }
        let a = self.attr(ino)?;
        let mut plan = Plan::new(d.fs, ctx);
        plan.entry(self.map.shard_of_ino(dir), dir, name, None, d.nlink);
        plan.links(
            self.map.shard_of_ino(ino),
            ino,
            a.nlink.saturating_sub(1),
            None,
        );
        let gone = self.run_plan(plan)?;
        drop(alone);
        self.drop_pieces(gone)
    }

    /// link of another shard's inode `ino` as `name` in `dir`.
    pub(super) fn span_link(&self, ino: Ino, dir: Ino, name: &[u8], ctx: Ctx) -> Result<Stat> {
        let _alone = self.names_alone();
        check_name(name).map_err(StoreError::Ns)?;
        let a = self.attr(ino)?;
        if a.kind == Kind::Dir {
            return refuse(NsError::NotPermitted);
        }
        let (d, old) = self.dir_entry(dir, name)?;
        if old.is_some() {
            return refuse(NsError::Exists);
        }
        if d.fs != a.fs {
            return refuse(NsError::CrossDevice);
        }
        if d.quota != a.quota {
            return refuse(NsError::QuotaBoundary);
        }
        if a.nlink >= LINK_MAX {
            return refuse(NsError::TooManyLinks);
        }
        let mut plan = Plan::new(d.fs, ctx);
        plan.links(self.map.shard_of_ino(ino), ino, a.nlink + 1, None);
        plan.entry(
            self.map.shard_of_ino(dir),
            dir,
            name,
            Some((ino, a.kind)),
            d.nlink,
        );
        self.run_plan(plan)?;
        self.stat(ino)
    }

    /// rename of `from_dir`/`from` to `to_dir`/`to` where the directories,
    /// the inodes moved or replaced, or the target's ancestors live on
    /// more than one shard.
    pub(super) fn span_rename(
        &self,
        from_dir: Ino,
        from: &[u8],
        to_dir: Ino,
        to: &[u8],
        flags: RenameFlags,
        ctx: Ctx,
    ) -> Result<()> {
        if flags.noreplace && flags.exchange {
            return refuse(NsError::Invalid(
                "RENAME_NOREPLACE and RENAME_EXCHANGE together",
            ));
        }
        if from == b"." || from == b".." {
            return refuse(NsError::Invalid("rename of `.` or `..`"));
        }
        check_name(to).map_err(StoreError::Ns)?;
        let alone = self.names_alone();
        let (fd, src) = self.dir_entry(from_dir, from)?;
        let (td, dst) = self.dir_entry(to_dir, to)?;
        let (s_ino, s_kind) = src.ok_or(StoreError::Ns(NsError::NotFound))?;
        if from_dir == to_dir && from == to {
            return Ok(());
        }
        if fd.fs != td.fs {
            return refuse(NsError::CrossDevice);
        }
        if fd.quota != td.quota {
            return refuse(NsError::QuotaBoundary);
        }
        let s = self.attr(s_ino)?;
        // Link counts of the two directories after: the base, and the
        // subdirectories each loses or gains.
        let mut nlink: HashMap<Ino, u32> =
            HashMap::from([(from_dir, fd.nlink), (to_dir, td.nlink)]);
        let mut moved = |dir: Ino, by: i32| {
            let n = nlink.get_mut(&dir).expect("one of the two directories");
            *n = n.saturating_add_signed(by);
        };
        let mut plan = Plan::new(fd.fs, ctx);
        let shard = |ino: Ino| self.map.shard_of_ino(ino);
        // (inode, links after, a directory's new parent)
        let mut links: Vec<(Ino, u32, Option<Ino>)> = Vec::new();
        // (directory, name, what the entry names after)
        let mut entries: Vec<(Ino, Vec<u8>, Named)> = Vec::new();
        if flags.exchange {
            let (d_ino, d_kind) = dst.ok_or(StoreError::Ns(NsError::NotFound))?;
            if d_ino == s_ino {
                return Ok(());
            }
            let d = self.attr(d_ino)?;
            if from_dir != to_dir {
                if s_kind == Kind::Dir {
                    self.check_not_under(s_ino, to_dir)?;
                    moved(from_dir, -1);
                    moved(to_dir, 1);
                }
                if d_kind == Kind::Dir {
                    self.check_not_under(d_ino, from_dir)?;
                    moved(to_dir, -1);
                    moved(from_dir, 1);
                }
            }
            entries.push((from_dir, from.to_vec(), Some((d_ino, d_kind))));
            entries.push((to_dir, to.to_vec(), Some((s_ino, s_kind))));
            for (a, parent) in [(s, to_dir), (d, from_dir)] {
                links.push((a.ino, a.nlink, (a.kind == Kind::Dir).then_some(parent)));
            }
        } else {
            if s_kind == Kind::Dir && from_dir != to_dir {
                self.check_not_under(s_ino, to_dir)?;
            }
            if let Some((d_ino, d_kind)) = dst {
                if flags.noreplace {
                    return refuse(NsError::Exists);
                }
                if d_ino == s_ino {
                    return Ok(());
                }
                match (s_kind == Kind::Dir, d_kind == Kind::Dir) {
                    (true, false) => return refuse(NsError::NotDir),
                    (false, true) => return refuse(NsError::IsDir),
                    (true, true) if !self.empty_dir(d_ino)? => return refuse(NsError::NotEmpty),
                    _ => {}
                }
                let d = self.attr(d_ino)?;
                if d_kind == Kind::Dir {
                    moved(to_dir, -1);
                }
                // The replaced inode loses its link after both entries
                // changed.
                links.push((
                    d_ino,
                    if d_kind == Kind::Dir {
                        0
                    } else {
                        d.nlink.saturating_sub(1)
                    },
                    None,
                ));
            }
            if s_kind == Kind::Dir && from_dir != to_dir {
                moved(from_dir, -1);
                moved(to_dir, 1);
            }
            entries.push((to_dir, to.to_vec(), Some((s_ino, s_kind))));
            entries.push((from_dir, from.to_vec(), None));
            links.push((s_ino, s.nlink, (s_kind == Kind::Dir).then_some(to_dir)));
        }
        for (dir, name, to) in entries {
            plan.entry(shard(dir), dir, &name, to, nlink[&dir]);
        }
        for (ino, n, parent) in links {
            plan.links(shard(ino), ino, n, parent);
        }
        let gone = self.run_plan(plan)?;
        drop(alone);
        self.drop_pieces(gone)
    }
}
