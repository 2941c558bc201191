//! The write-ahead log. A write is acknowledged once it is durable, but its
//! blocks sit in the file system's open stripe until the stripe fills. A
//! commit journals the open stripe's bytes the journal does not hold yet
//! ([`Record::OpenData`]) ahead of the records that map them, so those
//! records may go at once, and many writes share one journal write. A
//! sealed stripe is durable by itself, so the log only ever holds open
//! stripes' bytes; a checkpoint (which starts the journal over) seals the
//! open stripes first. Recovery gathers the logged bytes and seals again
//! every stripe that never got its stripe record and that blocks still
//! refer to.

use super::*;

/// How much of a writer's open stripe the journal holds: every byte of
/// stripe `stripe`'s chunks before `chunk`, and `used` bytes of `chunk`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Logged {
    stripe: u64,
    chunk: usize,
    used: u32,
}

/// The logged bytes of stripes replay found open: stripe id → (file
/// system, `(chunk, offset, bytes)` pieces).
pub(super) type OpenStripes = BTreeMap<u64, (FsId, Vec<(u16, u32, Vec<u8>)>)>;

impl Store {
    /// The open stripes' bytes the journal does not hold yet, as records,
    /// with the cursors to keep once they are journaled
    /// ([`Store::logged`]).
    pub(super) fn open_data(&self) -> (Vec<Record>, Vec<(FsId, Logged)>) {
        let mut recs = Vec::new();
        let mut cursors = Vec::new();
        for (&fs, w) in &self.writers {
            let p = &w.pipeline;
            if !p.has_open_data() {
                continue;
            }
            let stripe = p.open_stripe();
            let (chunk, used) = p.fill();
            let from = if w.logged.stripe == stripe {
                w.logged
            } else {
                Logged {
                    stripe,
                    chunk: 0,
                    used: 0,
                }
            };
            debug_assert!(from.chunk <= chunk, "the log ran ahead of its stripe");
            for (c, &hi) in used.iter().enumerate().take(chunk + 1).skip(from.chunk) {
                let lo = if c == from.chunk { from.used } else { 0 };
                if hi > lo {
                    recs.push(Record::OpenData {
                        fs,
                        stripe,
                        chunk: c as u16,
                        offset: lo,
                        bytes: p.open_range(c, lo, hi).to_vec(),
                    });
                }
            }
            cursors.push((
                fs,
                Logged {
                    stripe,
                    chunk,
                    used: used[chunk],
                },
            ));
        }
        (recs, cursors)
    }

    /// Keeps the cursors of bytes now journaled.
    pub(super) fn logged(&mut self, cursors: Vec<(FsId, Logged)>) {
        for (fs, l) in cursors {
            if let Some(w) = self.writers.get_mut(&fs) {
                w.logged = l;
            }
        }
    }

    /// During recovery, once the free slots are known: seals again, from
    /// their logged bytes, the stripes that were open at the crash, never
    /// got a stripe record, and that blocks refer to. Each is written like
    /// any sealed stripe (parity, checksums, fresh slots) and its stripe
    /// record applied; the recovery's checkpoint makes it durable.
    pub(super) fn restore_open(&mut self, open: OpenStripes) -> Result<()> {
        if open.is_empty() {
            return Ok(());
        }
        let refs = self.with_meta(|m, io| m.stripe_refs(io))?;
        for (id, (fs, pieces)) in open {
            let Some(f) = self.meta.fss.get(&fs) else {
                continue;
            };
            let width = usize::from(f.k) + usize::from(f.m);
            if !refs.contains_key(&id) || self.with_meta(|m, io| m.has_stripe(io, id))? {
                continue;
            }
            let views: Vec<(u16, u32, &[u8])> =
                pieces.iter().map(|(c, o, b)| (*c, *o, &b[..])).collect();
            self.writer(fs)?
                .pipeline
                .restore(id, &views)
                .map_err(|e| StoreError::Invalid {
                    reason: format!("stripe {id} cannot be restored from the journal: {e}"),
                })?;
            let slots = self.reserve_restored(width)?;
            self.writer(fs)?.reserved = Some(slots);
            self.seal_open()?;
            tracing::info!(
                shard = self.layout.shard,
                stripe = id,
                bytes = pieces.iter().map(|p| p.2.len()).sum::<usize>(),
                "open stripe sealed from the journal"
            );
        }
        Ok(())
    }
}
