//! Directory quotas through the engine: setting, changing and unsetting
//! them (definitions on shard 0), the scan that tags a quota's subtree
//! shard by shard, listing with use, and the soft limit's grace.
//!
//! A scan walks the quota's directory tree from its root: on each
//! directory's shard it tags the directory and its entries that shard
//! holds, in one step with listing them, so a file created meanwhile
//! takes the new tag from its directory and one renamed meanwhile is
//! refused at the boundary (`EXDEV`, directories' tags differ). A
//! directory that is another quota's root is not entered: that quota is
//! nested in this one from then on. Scans are idempotent, so one a crash
//! cut short is run again from the top ([`Engine::quota_pending`]).

use std::sync::atomic::Ordering;

use super::*;
use crate::meta::namespace::{Kind, NsError};
use crate::meta::quota::{Quota, QuotaId, QuotaState, MAX_QUOTA_DEPTH};

/// Entries one scan step lists.
const SCAN_STEP: usize = 1024;

/// A quota as `flint fs quota list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaInfo {
    /// The definition.
    pub quota: Quota,
    /// Logical bytes under it (nested quotas' included).
    pub used: u64,
    /// Entries its scan has tagged (while counting or removing).
    pub scanned: u64,
    /// Writes it refused since the engine opened.
    pub refused: u64,
    /// Whether use is above the soft limit with the grace still running.
    pub in_grace: bool,
}

/// A change of a soft limit's state, for events and alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaEvent {
    /// Use went above the soft limit: the grace starts.
    SoftExceeded(Quota, u64),
    /// The grace ran out with use still above the soft limit: writes that
    /// grow files under it now fail.
    GraceExpired(Quota, u64),
    /// Use is back at or below the soft limit.
    BelowSoft(Quota, u64),
    /// Writes were refused with `EDQUOT` since the last tick (how many).
    Refused(Quota, u64, u64),
}

impl Engine {
    /// Sets a quota on directory `path` of `fs` (or changes the limits of
    /// the one there). A new quota counts its directory's contents before
    /// it is enforced: run [`Engine::quota_scan`] (the appliance does, in
    /// the background). `hard`/`soft` 0: no such limit.
    pub fn quota_set(
        &self,
        fs: FsId,
        path: &str,
        hard: u64,
        soft: u64,
        grace: u64,
    ) -> Result<Quota> {
        if hard == 0 && soft == 0 {
            return Err(StoreError::Invalid {
                reason: "a quota needs a hard or a soft limit".into(),
            });
        }
        if hard != 0 && soft > hard {
            return Err(StoreError::Invalid {
                reason: format!("soft limit {soft} is above the hard limit {hard}"),
            });
        }
        let dir = self.resolve(fs, path)?;
        if dir.kind != Kind::Dir {
            return Err(StoreError::Ns(NsError::NotDir));
        }
        self.writable(dir.ino)?;
        let quotas = self.quotas.quotas();
        if let Some(mut q) = quotas.iter().find(|q| q.dir == dir.ino).cloned() {
            if q.state == QuotaState::Removing {
                return Err(StoreError::Invalid {
                    reason: format!("the quota on {path} is being removed; set it again once gone"),
                });
            }
            (q.hard, q.soft, q.grace) = (hard, soft, grace);
            if soft == 0 {
                q.over_since = 0;
            }
            self.call_shard(0, {
                let q = q.clone();
                move |s| s.quota_put(q)
            })?;
            self.sync()?;
            return Ok(q);
        }
        // Nested in the quota the directory lies under now.
        let parent = dir.quota;
        let mut depth = 1;
        let mut up = parent;
        while up != 0 {
            depth += 1;
            up = quotas.iter().find(|q| q.id == up).map_or(0, |q| q.parent);
        }
        if depth > MAX_QUOTA_DEPTH {
            return Err(StoreError::Invalid {
                reason: format!(
                    "{path} is under {} quotas already; quotas nest at most {MAX_QUOTA_DEPTH} deep",
                    depth - 1
                ),
            });
        }
        let q = Quota {
            id: quotas.iter().map(|q| q.id).max().unwrap_or(0) + 1,
            fs,
            dir: dir.ino,
            path: normal_path(path),
            parent,
            hard,
            soft,
            grace,
            over_since: 0,
            state: QuotaState::Counting,
        };
        self.call_shard(0, {
            let q = q.clone();
            move |s| s.quota_put(q)
        })?;
        self.sync()?;
        Ok(q)
    }

    /// Unsets the quota on directory `path` of `fs`: its files go back to
    /// the quota it was nested in once [`Engine::quota_scan`] has run.
    pub fn quota_unset(&self, fs: FsId, path: &str) -> Result<Quota> {
        let dir = self.resolve(fs, path)?;
        let mut q = self
            .quotas
            .quotas()
            .into_iter()
            .find(|q| q.dir == dir.ino && q.fs == fs)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("a quota on {path}"),
            })?;
        q.state = QuotaState::Removing;
        self.call_shard(0, {
            let q = q.clone();
            move |s| s.quota_put(q)
        })?;
        self.sync()?;
        Ok(q)
    }

    /// Quotas whose scan has not finished (a crash, or not run yet).
    pub fn quota_pending(&self) -> Vec<QuotaId> {
        self.quotas
            .quotas()
            .into_iter()
            .filter(|q| q.state != QuotaState::Enforcing)
            .map(|q| q.id)
            .collect()
    }

    /// Tags every inode under quota `id`'s directory (counting it) or
    /// gives them back to its parent (removing it); then enforces it, or
    /// drops it. Idempotent.
    pub fn quota_scan(&self, id: QuotaId) -> Result<()> {
        let Some(q) = self.quotas.get(id) else {
            return Ok(());
        };
        let to = match q.state {
            QuotaState::Enforcing => return Ok(()),
            QuotaState::Counting => q.id,
            QuotaState::Removing => q.parent,
        };
        let progress = self.quotas.scan_progress(id);
        progress.store(0, Ordering::Relaxed);
        let mut stack = vec![q.dir];
        while let Some(dir) = stack.pop() {
            let mut cookie = 0;
            loop {
                if self.quotas.scans_stopped() {
                    // Run again from the top at the next open.
                    return Ok(());
                }
                let step = {
                    let _shared = self.names_shared();
                    self.on_ino(dir, move |s| s.quota_tag_dir(dir, to, cookie, SCAN_STEP))
                };
                let (left, next) = match step {
                    Ok(r) => r,
                    // Removed while the scan ran: nothing left to tag.
                    Err(StoreError::Ns(NsError::NotFound | NsError::NotDir)) => break,
                    Err(e) => return Err(e),
                };
                progress.fetch_add(SCAN_STEP.min(left.len().max(1)) as u64, Ordering::Relaxed);
                for e in left {
                    if e.kind != Kind::Dir {
                        let _shared = self.names_shared();
                        self.on_ino(e.ino, move |s| s.quota_tag(e.ino, to))?;
                        continue;
                    }
                    match self.quotas.quotas().into_iter().find(|x| x.dir == e.ino) {
                        // Another quota's root: nested in `to` from now on.
                        Some(mut inner) if inner.id != id => {
                            if inner.parent != to {
                                inner.parent = to;
                                self.call_shard(0, move |s| s.quota_put(inner))?;
                            }
                        }
                        _ => stack.push(e.ino),
                    }
                }
                match next {
                    Some(c) => cookie = c,
                    None => break,
                }
            }
        }
        // Every tag durable on every shard before the quota's new state is
        // (shard 0's journal does not wait for the others').
        self.sync()?;
        match q.state {
            QuotaState::Removing => {
                // Quotas nested in it are nested in its parent now.
                for mut inner in self.quotas.quotas().into_iter().filter(|x| x.parent == id) {
                    inner.parent = q.parent;
                    self.call_shard(0, move |s| s.quota_put(inner))?;
                }
                self.call_shard(0, move |s| s.quota_drop(id))?;
            }
            _ => {
                let mut done = q;
                done.state = QuotaState::Enforcing;
                self.call_shard(0, move |s| s.quota_put(done))?;
            }
        }
        self.sync()
    }

    /// Stops running quota scans between steps (they run again from the
    /// top after the next open: [`Engine::quota_pending`]).
    pub fn quota_stop_scans(&self) {
        self.quotas.stop_scans();
    }

    /// Every quota (of `fs`, or all), with its use.
    pub fn quota_list(&self, fs: Option<FsId>) -> Vec<QuotaInfo> {
        let now = crate::store::now_nanos();
        self.quotas
            .quotas()
            .into_iter()
            .filter(|q| fs.is_none_or(|f| q.fs == f))
            .map(|q| {
                let used = self.quotas.used(q.id);
                QuotaInfo {
                    used,
                    scanned: self.quotas.scanned(q.id),
                    refused: self.quotas.refused(q.id),
                    in_grace: q.soft != 0 && used > q.soft && !q.grace_over(now),
                    quota: q,
                }
            })
            .collect()
    }

    /// The innermost quota inode `ino` lies under, with its use: what `df`
    /// in a quota'd directory shows.
    pub fn quota_of(&self, ino: Ino) -> Result<Option<(Quota, u64)>> {
        let (_, live) = crate::meta::snap::split_ino(ino);
        let tag = self.attr(live)?.quota;
        Ok(self.quotas.get(tag).map(|q| {
            let used = self.quotas.used(q.id);
            (q, used)
        }))
    }

    /// Checks every quota at `now`: starts or ends soft limits' grace
    /// periods (kept on shard 0, so restarts keep them) and returns what
    /// changed since the last tick, refusals included. The appliance ticks
    /// once a second; without ticks a soft limit never turns hard.
    pub fn quota_tick(&self, now: i64) -> Result<Vec<QuotaEvent>> {
        let mut events = Vec::new();
        for mut q in self.quotas.quotas() {
            if q.state != QuotaState::Enforcing {
                continue;
            }
            let used = self.quotas.used(q.id);
            let refused = self.quotas.take_new_refusals(q.id);
            if refused > 0 {
                events.push(QuotaEvent::Refused(q.clone(), used, refused));
            }
            if q.soft == 0 {
                continue;
            }
            if used > q.soft {
                if q.over_since == 0 {
                    q.over_since = now;
                    events.push(QuotaEvent::SoftExceeded(q.clone(), used));
                    self.call_shard(0, move |s| s.quota_put(q))?;
                } else if q.grace_over(now) && self.quotas.first_grace_report(q.id) {
                    events.push(QuotaEvent::GraceExpired(q, used));
                }
            } else if q.over_since != 0 {
                q.over_since = 0;
                self.quotas.clear_grace_report(q.id);
                events.push(QuotaEvent::BelowSoft(q.clone(), used));
                self.call_shard(0, move |s| s.quota_put(q))?;
            }
        }
        if !events.is_empty() {
            self.sync()?;
        }
        Ok(events)
    }

    /// Marks file system `fs`'s quotas to be counted again (a restore put
    /// back files whose tags it dropped).
    pub(super) fn recount_quotas(&self, fs: FsId) -> Result<()> {
        for mut q in self.quotas.quotas().into_iter().filter(|q| q.fs == fs) {
            if q.state == QuotaState::Enforcing {
                q.state = QuotaState::Counting;
                self.call_shard(0, move |s| s.quota_put(q))?;
            }
        }
        Ok(())
    }
}

/// `path` as a quota shows it: rooted, single slashes, no trailing one.
fn normal_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
