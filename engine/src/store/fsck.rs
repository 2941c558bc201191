//! The metadata's invariants, checked: every block reference names a
//! stripe that exists, no chunk slot is claimed twice (by stripes or
//! metadata pages) or also free, every stripe's chunks are on distinct
//! devices, and the metadata tree is well formed.

use std::collections::HashSet;

use super::*;

impl Store {
    /// Checks the metadata's invariants: every block reference names a
    /// stripe that exists, no chunk slot is claimed twice or also free, and
    /// every stripe's chunks are on distinct devices. Returns what is wrong.
    pub fn fsck(&mut self) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let mut owner: HashMap<(u16, u64), u64> = HashMap::new();
        let ids = self.with_meta(|m, io| m.stripe_ids(io))?;
        let stripes: HashSet<u64> = ids.iter().copied().collect();
        for id in ids {
            let s = self.stripe(id)?;
            let mut devs: Vec<u16> = s.chunks.iter().map(|c| c.0).collect();
            devs.sort_unstable();
            devs.dedup();
            if devs.len() != s.chunks.len() {
                bad.push(format!("stripe {} has two chunks on one device", s.id));
            }
            for &c in &s.chunks {
                if let Some(other) = owner.insert(c, s.id) {
                    bad.push(format!(
                        "slot {c:?} is claimed by stripes {other} and {}",
                        s.id
                    ));
                }
                if self.slots.is_free(c.0, c.1) {
                    bad.push(format!("slot {c:?} of stripe {} is also free", s.id));
                }
            }
        }
        for c in self.space.slots() {
            if let Some(other) = owner.insert(c, u64::MAX) {
                bad.push(format!(
                    "slot {c:?} holds metadata pages and stripe {other}"
                ));
            }
            if self.slots.is_free(c.0, c.1) {
                bad.push(format!("slot {c:?} holds metadata pages and is also free"));
            }
        }
        let writers = &self.writers;
        let open = |fs: FsId, a: &BlockAddr| {
            writers.get(&fs).is_some_and(|w| {
                w.pipeline.open_stripe() == a.stripe
                    && w.pipeline.has_open_data()
                    && w.pipeline.open_bytes(a).is_some()
            })
        };
        let mut io = dev_pages!(self);
        let meta = &mut self.meta;
        let mut keys = HashSet::new();
        // Live references per stripe, recounted from the maps and the pool.
        let mut live: HashMap<u64, u64> = HashMap::new();
        meta.shared_blocks(&mut io, &mut |fs, key, b| {
            keys.insert((fs, key));
            *live.entry(b.addr.stripe).or_default() += 1;
            if !open(fs, &b.addr) && !stripes.contains(&b.addr.stripe) {
                bad.push(format!(
                    "shared block {key:#x} refers to missing stripe {}",
                    b.addr.stripe
                ));
            }
            true
        })
        .map_err(meta_err)?;
        let fs_of = meta.fs_of_files(&mut io).map_err(meta_err)?;
        let shard = self.layout.shard;
        let mut counted: HashMap<Ino, u64> = HashMap::new();
        meta.all_blocks(&mut io, &mut |ino, idx, b| {
            *counted.entry(ino).or_default() += 1;
            let Some(&fs) = fs_of.get(&ino) else {
                bad.push(format!("block {idx} of file {ino}, which does not exist"));
                return true;
            };
            if b.owner().is_none() {
                *live.entry(b.addr.stripe).or_default() += 1;
            }
            if let Some(owner) = b.owner() {
                if owner == shard && !keys.contains(&(fs, b.fp)) {
                    bad.push(format!(
                        "file {ino} block {idx} refers to missing shared block {:#x}",
                        b.fp
                    ));
                }
            } else if !open(fs, &b.addr) && !stripes.contains(&b.addr.stripe) {
                bad.push(format!(
                    "file {ino} block {idx} refers to missing stripe {}",
                    b.addr.stripe
                ));
            }
            true
        })
        .map_err(meta_err)?;
        // Snapshots' dead lists hold references like the maps.
        meta.all_dead_blocks(&mut io, &mut |fs, ino, b| match b.owner() {
            None => {
                *live.entry(b.addr.stripe).or_default() += 1;
                if !stripes.contains(&b.addr.stripe) {
                    bad.push(format!(
                        "a snapshot's block of file {ino} refers to missing stripe {}",
                        b.addr.stripe
                    ));
                }
            }
            Some(owner) if owner == shard && !keys.contains(&(fs, b.fp)) => bad.push(format!(
                "a snapshot's block of file {ino} refers to missing shared block {:#x}",
                b.fp
            )),
            Some(_) => {}
        })
        .map_err(meta_err)?;
        // Each home file's inode counts the blocks its map holds.
        let mut homes = Vec::new();
        meta.files(&mut io, &mut |i| {
            if !i.part {
                homes.push(i.ino);
            }
            true
        })
        .map_err(meta_err)?;
        for ino in homes {
            let kept = meta
                .attr(&mut io, ino)
                .map_err(meta_err)?
                .map_or(0, |a| a.blocks);
            let mapped = counted.get(&ino).copied().unwrap_or(0);
            if kept != mapped {
                bad.push(format!(
                    "file {ino:#x}'s inode counts {kept} blocks, its map holds {mapped}"
                ));
            }
        }
        let kept = meta.stripe_refs(&mut io).map_err(meta_err)?;
        if kept != live {
            let mut ids: Vec<u64> = kept.keys().chain(live.keys()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids.into_iter().filter(|id| kept.get(id) != live.get(id)) {
                bad.push(format!(
                    "stripe {id}: {} references kept, {} in the maps and pool",
                    kept.get(&id).copied().unwrap_or(0),
                    live.get(&id).copied().unwrap_or(0)
                ));
            }
        }
        let snap_pages = meta.snap_pages(&mut io).map_err(meta_err)?;
        bad.extend(meta.check(&mut io).map_err(meta_err)?);
        // Every page a snapshot names is kept.
        for p in snap_pages {
            if !self.space.is_used(p.addr) {
                bad.push(format!("page {} of a snapshot is free", p.addr));
            }
        }
        Ok(bad)
    }
}
