//! Directory quotas on the store: the engine-wide book every shard's
//! counts meet in (so a write on one shard is checked against a quota's
//! use on all of them), the check a growing file passes, and the records
//! that define quotas (shard 0) and move inodes between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::meta::namespace::DirEntry;
use crate::meta::quota::{Quota, QuotaId};

/// Every shard's quota counts and the quotas' definitions, shared by the
/// engine's stores. A shard publishes a count each time a change moves
/// it, so a quota's use is exact the moment the change is applied.
#[derive(Debug)]
pub struct QuotaBook {
    defs: RwLock<BTreeMap<QuotaId, Quota>>,
    /// Per shard: bytes of the files it holds under each quota (innermost).
    counts: Vec<Mutex<HashMap<QuotaId, u64>>>,
    /// Writes refused per quota since the engine opened.
    refused: Mutex<BTreeMap<QuotaId, u64>>,
    /// Refusals already reported per quota, and the quotas whose expired
    /// grace was reported.
    reported: Mutex<(BTreeMap<QuotaId, u64>, BTreeSet<QuotaId>)>,
    /// Entries tagged by the scan of a quota being counted or removed.
    scanned: Mutex<BTreeMap<QuotaId, Arc<AtomicU64>>>,
    /// Scans stop between steps (the engine is closing).
    stop: std::sync::atomic::AtomicBool,
}

impl QuotaBook {
    /// An empty book for `shards` shards.
    pub fn new(shards: u32) -> Arc<QuotaBook> {
        Arc::new(QuotaBook {
            defs: RwLock::new(BTreeMap::new()),
            counts: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            refused: Mutex::default(),
            reported: Mutex::default(),
            scanned: Mutex::default(),
            stop: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn defs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<QuotaId, Quota>> {
        self.defs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the definitions (shard 0's, after each change).
    pub fn set_defs(&self, defs: BTreeMap<QuotaId, Quota>) {
        *self.defs.write().unwrap_or_else(|e| e.into_inner()) = defs;
    }

    /// Every quota's definition.
    pub fn quotas(&self) -> Vec<Quota> {
        self.defs().values().cloned().collect()
    }

    /// Quota `id`'s definition.
    pub fn get(&self, id: QuotaId) -> Option<Quota> {
        self.defs().get(&id).cloned()
    }

    fn publish(&self, shard: u32, changes: &[(QuotaId, u64)]) {
        let Some(m) = self.counts.get(shard as usize) else {
            return;
        };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        for &(q, b) in changes {
            if b == 0 {
                m.remove(&q);
            } else {
                m.insert(q, b);
            }
        }
    }

    fn own(&self, id: QuotaId) -> u64 {
        self.counts
            .iter()
            .map(|m| {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                m.get(&id).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Logical bytes under quota `id`: its own files' and those of every
    /// quota nested in it.
    pub fn used(&self, id: QuotaId) -> u64 {
        let defs = self.defs();
        Self::used_in(&defs, id, |q| self.own(q))
    }

    fn used_in(defs: &BTreeMap<QuotaId, Quota>, id: QuotaId, own: impl Fn(QuotaId) -> u64) -> u64 {
        let mut total = own(id);
        let mut stack: Vec<QuotaId> = vec![id];
        while let Some(p) = stack.pop() {
            for q in defs.values().filter(|q| q.parent == p && q.id != p) {
                total += own(q.id);
                stack.push(q.id);
            }
        }
        total
    }

    /// The quota (`tag` or one it is nested in) that growing a file under
    /// `tag` by `grow` bytes at `now` would pass, with its use.
    pub fn refusing(&self, tag: QuotaId, grow: u64, now: i64) -> Option<(Quota, u64)> {
        let defs = self.defs();
        let mut id = tag;
        for _ in 0..=crate::meta::quota::MAX_QUOTA_DEPTH {
            let q = defs.get(&id)?;
            let used = Self::used_in(&defs, id, |q| self.own(q));
            if q.refuses(used, grow, now) {
                return Some((q.clone(), used));
            }
            if q.parent == 0 {
                return None;
            }
            id = q.parent;
        }
        None
    }

    fn count_refusal(&self, id: QuotaId) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
    }

    /// Writes quota `id` refused since the engine opened.
    pub fn refused(&self, id: QuotaId) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Refusals of quota `id` not reported yet (and now reported).
    pub fn take_new_refusals(&self, id: QuotaId) -> u64 {
        let now = self.refused(id);
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let seen = r.0.insert(id, now).unwrap_or(0);
        now.saturating_sub(seen)
    }

    /// Whether quota `id`'s expired grace is reported for the first time.
    pub fn first_grace_report(&self, id: QuotaId) -> bool {
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        r.1.insert(id)
    }

    /// Forgets that quota `id`'s expired grace was reported.
    pub fn clear_grace_report(&self, id: QuotaId) {
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        r.1.remove(&id);
    }

    /// The counter of entries a scan of quota `id` has tagged.
    pub fn scan_progress(&self, id: QuotaId) -> Arc<AtomicU64> {
        self.scanned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Asks running scans to stop between steps.
    pub fn stop_scans(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether scans are to stop.
    pub fn scans_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Entries the scan of quota `id` has tagged so far.
    pub fn scanned(&self, id: QuotaId) -> u64 {
        self.scanned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

impl Store {
    /// Gives this store the engine's quota book and publishes its counts
    /// (the engine does, on open); shard 0 also gives it the definitions.
    pub fn set_quotas(&mut self, book: Arc<QuotaBook>) {
        let all: Vec<(QuotaId, u64)> = self.meta.quota_counts().collect();
        self.meta.take_quota_changes();
        book.publish(self.layout.shard, &all);
        if self.layout.shard == 0 {
            book.set_defs(self.meta.quotas.clone());
        }
        self.quotas = Some(book);
    }

    /// Publishes the quota counts the last change moved.
    pub(super) fn publish_quotas(&mut self) {
        let changes = self.meta.take_quota_changes();
        if changes.is_empty() {
            return;
        }
        if let Some(b) = &self.quotas {
            b.publish(self.layout.shard, &changes);
        }
    }

    /// Refuses growing a file under quota `tag` by `grow` bytes past a
    /// limit of that quota or one it is nested in.
    pub(super) fn check_quota(&self, tag: QuotaId, grow: u64) -> Result<()> {
        if tag == 0 || grow == 0 {
            return Ok(());
        }
        let Some(book) = &self.quotas else {
            return Ok(());
        };
        let now = now_nanos();
        let Some((q, used)) = book.refusing(tag, grow, now) else {
            return Ok(());
        };
        book.count_refusal(q.id);
        let limit = if q.hard != 0 && used.saturating_add(grow) > q.hard {
            format!("its hard limit of {} bytes", q.hard)
        } else {
            format!(
                "its soft limit of {} bytes, whose grace has run out",
                q.soft
            )
        };
        Err(StoreError::Quota {
            what: format!(
                "directory quota on {} holds {used} bytes and {grow} more would pass {limit}; \
                 delete files under it or raise the quota",
                q.path
            ),
        })
    }

    /// Shard 0: records a quota's definition (new or changed).
    pub fn quota_put(&mut self, q: Quota) -> Result<()> {
        self.expect_shard0("quotas")?;
        self.record(Record::QuotaSet(q))?;
        self.share_quota_defs();
        Ok(())
    }

    /// Shard 0: drops a quota's definition.
    pub fn quota_drop(&mut self, id: QuotaId) -> Result<()> {
        self.expect_shard0("quotas")?;
        self.record(Record::QuotaUnset { id })?;
        self.share_quota_defs();
        Ok(())
    }

    /// Shard 0: every quota's definition.
    pub fn quota_defs(&self) -> Vec<Quota> {
        self.meta.quotas.values().cloned().collect()
    }

    pub(super) fn share_quota_defs(&self) {
        if let Some(b) = &self.quotas {
            b.set_defs(self.meta.quotas.clone());
        }
    }

    fn expect_shard0(&self, what: &str) -> Result<()> {
        if self.layout.shard != 0 {
            return Err(StoreError::Invalid {
                reason: format!(
                    "{what} are kept by shard 0, not shard {}",
                    self.layout.shard
                ),
            });
        }
        Ok(())
    }

    /// Moves inode `ino` (if this shard holds it) to quota `to`.
    pub fn quota_tag(&mut self, ino: Ino, to: QuotaId) -> Result<()> {
        match self.getattr(ino) {
            Ok(a) if a.quota != to => {
                self.record(Record::QuotaTag { ino, quota: to })?;
                Ok(())
            }
            Ok(_) | Err(StoreError::Ns(crate::meta::namespace::NsError::NotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One step of a quota scan in directory `dir` (on its shard): tags
    /// `dir` (first step only) and up to `max` of its entries after
    /// `cookie` with quota `to`, those this shard holds at once. Returns
    /// the entries left to the engine (directories, and inodes of other
    /// shards) and the cookie to go on from (`None`: the directory is
    /// done).
    pub fn quota_tag_dir(
        &mut self,
        dir: Ino,
        to: QuotaId,
        cookie: u64,
        max: usize,
    ) -> Result<(Vec<DirEntry>, Option<u64>)> {
        if cookie == 0 {
            self.quota_tag(dir, to)?;
        }
        let entries = self.readdir(dir, cookie, max)?;
        let next = (entries.len() >= max).then(|| entries.last().map_or(cookie, |e| e.cookie));
        let mut left = Vec::new();
        for e in entries {
            if e.kind != crate::meta::namespace::Kind::Dir
                && crate::meta::namespace::shard_of_ino(e.ino, self.layout.shards.max(1))
                    == self.layout.shard
            {
                self.quota_tag(e.ino, to)?;
            } else {
                left.push(e);
            }
        }
        Ok((left, next))
    }
}
