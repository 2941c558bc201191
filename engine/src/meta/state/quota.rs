//! A shard's side of directory quotas: each quota's count of the bytes of
//! the files (and symlink targets) this shard holds under it, kept by the same changes that
//! keep the file system's usage, and the move of an inode (and its bytes)
//! from one quota to another.

use super::*;

impl Meta {
    /// Adds `delta` bytes to quota `id`'s count (0: no quota).
    pub(super) fn charge_quota(&mut self, id: QuotaId, delta: i64) {
        if id == 0 || delta == 0 {
            return;
        }
        let u = self.quota_used.entry(id).or_default();
        debug_assert!(
            delta >= 0 || *u >= delta.unsigned_abs(),
            "quota {id}: {u} bytes, {delta} change"
        );
        *u = u.saturating_add_signed(delta);
        if *u == 0 {
            self.quota_used.remove(&id);
        }
        self.quota_changed.insert(id);
    }

    /// Moves inode `ino` (if this shard holds it) to quota `to`, with its
    /// bytes if it is a regular file.
    pub(super) fn quota_tag(&mut self, io: &mut dyn PageIo, ino: Ino, to: QuotaId) -> Result<()> {
        let Some(mut a) = self.attr(io, ino)? else {
            return Ok(());
        };
        if a.quota == to {
            return Ok(());
        }
        if matches!(a.kind, Kind::File | Kind::Symlink) {
            self.charge_quota(a.quota, -(a.size as i64));
            self.charge_quota(to, a.size as i64);
        }
        a.quota = to;
        self.pager
            .insert(io, &mut self.tree, &inode_key(ino), &a.encode())?;
        Ok(())
    }

    /// This shard's count of quota `id`'s bytes.
    pub fn quota_used(&self, id: QuotaId) -> u64 {
        self.quota_used.get(&id).copied().unwrap_or(0)
    }

    /// Every quota this shard counts bytes for, with its count.
    pub fn quota_counts(&self) -> impl Iterator<Item = (QuotaId, u64)> + '_ {
        self.quota_used.iter().map(|(&q, &b)| (q, b))
    }

    /// The quotas whose counts changed since the last call, with their
    /// counts now.
    pub fn take_quota_changes(&mut self) -> Vec<(QuotaId, u64)> {
        let ids = std::mem::take(&mut self.quota_changed);
        ids.into_iter().map(|q| (q, self.quota_used(q))).collect()
    }
}
