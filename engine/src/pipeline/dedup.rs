//! The dedup index: fingerprint -> where the block lives, with a reference
//! count.
//!
//! Keys are (organization, fingerprint): dedup never crosses organizations,
//! so one tenant can neither learn of nor reach another's blocks through a
//! fingerprint. The engine also compares bytes on every hit before sharing
//! a block (verify-on-hit), so even a crafted xxh3 collision inside one
//! organization cannot make a file read another file's data.
//!
//! The index is one per engine, partitioned by fingerprint across reactors
//! ([`partition`]): each core owns its slice outright and lookups for
//! fingerprints it does not own travel as messages, like every other
//! cross-core operation.

use std::collections::BTreeMap;

use super::fingerprint::Fingerprint;
use super::BlockAddr;

/// An organization (tenant) id.
pub type OrgId = u32;

/// What the index knows of a stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    /// Where the block is stored.
    pub location: BlockAddr,
    /// How many logical blocks refer to it.
    pub refs: u32,
}

/// The reactor that owns a fingerprint's slice of the index.
pub fn partition(fp: Fingerprint, reactors: usize) -> usize {
    ((fp >> 64) as u64 % reactors.max(1) as u64) as usize
}

/// A dedup index.
pub trait DedupIndex: Send {
    /// The implementation's name.
    fn name(&self) -> &'static str;
    /// The entry for a block, if stored.
    fn get(&self, org: OrgId, fp: Fingerprint) -> Option<DedupEntry>;
    /// Records a newly stored block with one reference; false if present.
    fn insert(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool;
    /// Adds a reference; the new count, or `None` if absent.
    fn add_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32>;
    /// Drops a reference; the count left (the entry goes at 0), or `None`
    /// if absent.
    fn drop_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32>;
    /// Moves a block (garbage collection relocated it); false if absent.
    fn relocate(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool;
    /// Hints that `get`/`insert` for this key come soon (a cache prefetch);
    /// a no-op where it does not help.
    fn prefetch(&self, _org: OrgId, _fp: Fingerprint) {}
    /// Entries stored.
    fn len(&self) -> usize;
    /// Whether the index is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reference: an ordered map.
#[derive(Default)]
pub struct BTreeIndex {
    map: BTreeMap<(OrgId, Fingerprint), DedupEntry>,
}

impl DedupIndex for BTreeIndex {
    fn name(&self) -> &'static str {
        "btree (reference)"
    }

    fn get(&self, org: OrgId, fp: Fingerprint) -> Option<DedupEntry> {
        self.map.get(&(org, fp)).copied()
    }

    fn insert(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool {
        if self.map.contains_key(&(org, fp)) {
            return false;
        }
        self.map.insert((org, fp), DedupEntry { location, refs: 1 });
        true
    }

    fn add_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32> {
        let e = self.map.get_mut(&(org, fp))?;
        e.refs += 1;
        Some(e.refs)
    }

    fn drop_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32> {
        let e = self.map.get_mut(&(org, fp))?;
        e.refs -= 1;
        let left = e.refs;
        if left == 0 {
            self.map.remove(&(org, fp));
        }
        Some(left)
    }

    fn relocate(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool {
        match self.map.get_mut(&(org, fp)) {
            Some(e) => {
                e.location = location;
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Clone, Copy)]
struct Slot {
    org: OrgId,
    fp: Fingerprint,
    entry: DedupEntry,
}

/// The fast index: open addressing with linear probing, the fingerprint's
/// own bits as the hash, backward-shift deletion (no tombstones), grown at
/// 70% load.
pub struct HashIndex {
    slots: Vec<Option<Slot>>,
    mask: usize,
    len: usize,
}

impl HashIndex {
    /// An index sized for `capacity` entries before it first grows.
    pub fn with_capacity(capacity: usize) -> Self {
        let n = (capacity * 10 / 7 + 1).next_power_of_two().max(16);
        HashIndex {
            slots: vec![None; n],
            mask: n - 1,
            len: 0,
        }
    }

    #[inline]
    fn home(&self, org: OrgId, fp: Fingerprint) -> usize {
        ((fp as u64) ^ u64::from(org).wrapping_mul(0x9e37_79b9_7f4a_7c15)) as usize & self.mask
    }

    #[inline]
    fn find(&self, org: OrgId, fp: Fingerprint) -> Option<usize> {
        let mut i = self.home(org, fp);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(s) if s.fp == fp && s.org == org => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        let n = old.len() * 2;
        self.slots = vec![None; n];
        self.mask = n - 1;
        for s in old.into_iter().flatten() {
            let mut i = self.home(s.org, s.fp);
            while self.slots[i].is_some() {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = Some(s);
        }
    }
}

impl Default for HashIndex {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl DedupIndex for HashIndex {
    fn name(&self) -> &'static str {
        "open-addressing"
    }

    #[inline]
    fn prefetch(&self, org: OrgId, fp: Fingerprint) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.slots.as_ptr().wrapping_add(self.home(org, fp));
            // SAFETY: PREFETCHT0 is a hint that never faults, whatever the
            // address; `p` points into the slot table anyway.
            #[allow(unused_unsafe)]
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
            };
        }
    }

    #[inline]
    fn get(&self, org: OrgId, fp: Fingerprint) -> Option<DedupEntry> {
        self.find(org, fp)
            .and_then(|i| self.slots[i].map(|s| s.entry))
    }

    fn insert(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool {
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        // One pass: a match means present; the first hole is where it goes.
        let mut i = self.home(org, fp);
        while let Some(s) = &self.slots[i] {
            if s.fp == fp && s.org == org {
                return false;
            }
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Some(Slot {
            org,
            fp,
            entry: DedupEntry { location, refs: 1 },
        });
        self.len += 1;
        true
    }

    fn add_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32> {
        let i = self.find(org, fp)?;
        let s = self.slots[i].as_mut()?;
        s.entry.refs += 1;
        Some(s.entry.refs)
    }

    fn drop_ref(&mut self, org: OrgId, fp: Fingerprint) -> Option<u32> {
        let mut i = self.find(org, fp)?;
        let s = self.slots[i].as_mut()?;
        s.entry.refs -= 1;
        let left = s.entry.refs;
        if left > 0 {
            return Some(left);
        }
        // Backward-shift deletion: pull later members of the probe run into
        // the hole so lookups never stop early.
        self.slots[i] = None;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let Some(s) = self.slots[j] else { break };
            let home = self.home(s.org, s.fp);
            // Move s into the hole at i if its home is not in (i, j].
            let in_range = if i <= j {
                home > i && home <= j
            } else {
                home > i || home <= j
            };
            if !in_range {
                self.slots[i] = Some(s);
                self.slots[j] = None;
                i = j;
            }
        }
        Some(0)
    }

    fn relocate(&mut self, org: OrgId, fp: Fingerprint, location: BlockAddr) -> bool {
        match self.find(org, fp).and_then(|i| self.slots[i].as_mut()) {
            Some(s) => {
                s.entry.location = location;
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u64) -> BlockAddr {
        BlockAddr {
            stripe: n,
            chunk: (n % 7) as u16,
            offset: (n % 4096) as u32,
            stored_len: 4096,
            compressed: n.is_multiple_of(2),
        }
    }

    #[test]
    fn fast_index_matches_the_reference_under_random_operations() {
        let mut fast = HashIndex::with_capacity(8);
        let mut reference = BTreeIndex::default();
        let mut x = 0x1234_5678u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200_000u64 {
            let r = next();
            // Few distinct keys, some sharing low bits, two organizations.
            let fp = u128::from(r % 300) | (u128::from(r % 7) << 64);
            let org = (r >> 40) as u32 % 2;
            match (r >> 50) % 5 {
                0 | 1 => assert_eq!(
                    fast.insert(org, fp, addr(step)),
                    reference.insert(org, fp, addr(step))
                ),
                2 => assert_eq!(fast.add_ref(org, fp), reference.add_ref(org, fp)),
                3 => assert_eq!(fast.drop_ref(org, fp), reference.drop_ref(org, fp)),
                _ => assert_eq!(
                    fast.relocate(org, fp, addr(!step)),
                    reference.relocate(org, fp, addr(!step))
                ),
            }
            assert_eq!(fast.get(org, fp), reference.get(org, fp));
            assert_eq!(fast.len(), reference.len());
        }
        for (&(org, fp), e) in &reference.map {
            assert_eq!(fast.get(org, fp), Some(*e));
        }
    }

    #[test]
    fn organizations_never_share_entries() {
        let mut idx = HashIndex::default();
        assert!(idx.insert(1, 42, addr(100)));
        assert_eq!(idx.get(2, 42), None, "org 2 cannot see org 1's block");
        assert!(idx.insert(2, 42, addr(200)));
        assert_eq!(idx.get(1, 42).unwrap().location, addr(100));
        assert_eq!(idx.get(2, 42).unwrap().location, addr(200));
    }

    #[test]
    fn partitions_cover_every_reactor() {
        let mut hit = [false; 4];
        for i in 0..1000u128 {
            hit[partition(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835), 4)] = true;
        }
        assert!(hit.iter().all(|&h| h));
    }
}
