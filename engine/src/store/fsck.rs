//! The metadata's invariants, checked: every block reference names a
//! stripe that exists, no chunk slot is claimed twice or also free, and
//! every stripe's chunks are on distinct devices.

use super::*;

impl Store {
    /// Checks the metadata's invariants: every block reference names a
    /// stripe that exists, no chunk slot is claimed twice or also free, and
    /// every stripe's chunks are on distinct devices. Returns what is wrong.
    pub fn fsck(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut owner: HashMap<(u16, u64), u64> = HashMap::new();
        for s in self.meta.stripes.values() {
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
        let open = |fs: FsId, a: &BlockAddr| {
            self.writers.get(&fs).is_some_and(|w| {
                w.pipeline.open_stripe() == a.stripe
                    && w.pipeline.has_open_data()
                    && w.pipeline.open_bytes(a).is_some()
            })
        };
        for (&(fs, key), b) in &self.meta.shared {
            if !open(fs, &b.addr) && !self.meta.stripes.contains_key(&b.addr.stripe) {
                bad.push(format!(
                    "shared block {key:#x} refers to missing stripe {}",
                    b.addr.stripe
                ));
            }
        }
        for i in self.meta.inodes.values() {
            for (idx, b) in i.blocks.iter() {
                if let Some(owner) = b.owner() {
                    if owner == self.layout.shard && !self.meta.shared.contains_key(&(i.fs, b.fp)) {
                        bad.push(format!(
                            "file {} block {idx} refers to missing shared block {:#x}",
                            i.ino, b.fp
                        ));
                    }
                    continue;
                }
                let open = self.writers.get(&i.fs).is_some_and(|w| {
                    w.pipeline.open_stripe() == b.addr.stripe
                        && w.pipeline.has_open_data()
                        && w.pipeline.open_bytes(&b.addr).is_some()
                });
                if !open && !self.meta.stripes.contains_key(&b.addr.stripe) {
                    bad.push(format!(
                        "file {} block {idx} refers to missing stripe {}",
                        i.ino, b.addr.stripe
                    ));
                }
            }
        }
        bad
    }
}
