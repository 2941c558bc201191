//! Checkpoints: the metadata pages changed since the last one are written
//! to new places, then the root — the catalog, the tree's root and the page
//! space's table — to the spare checkpoint slot on every healthy device,
//! after which the journal restarts and the superseded pages are free. A
//! checkpoint costs what changed, not what exists.

use super::*;

/// Dirty tree nodes that trigger a checkpoint at the next sync (bounds the
/// memory changed metadata takes between checkpoints).
pub(super) const DIRTY_LIMIT: usize = 8192;

/// A checkpoint's payload: the metadata root, then the page space's table.
pub(super) fn root_payload(meta: &Meta, space: &PageSpace) -> Vec<u8> {
    let mut w = Writer {
        buf: meta.encode_root(),
    };
    space.encode(&mut w);
    w.buf
}

impl Store {
    /// Bytes a checkpoint can hold.
    pub(super) fn meta_room(&self) -> u64 {
        (self.layout.checkpoint_blocks * u64::from(self.layout.block_size)).saturating_sub(4096)
    }

    /// Refuses to take more data when the root record (which grows with the
    /// page space's table, a few bytes per 128 KiB of metadata) nears the
    /// checkpoint area: a clean no-space error while there is still room.
    pub(super) fn check_meta_room(&self) -> Result<()> {
        let per_chunk = 1 + 10 * self.space.copies() as u64 + self.space.pages_per_chunk() / 8 + 8;
        let need = 4096 + self.space.chunk_count() as u64 * per_chunk;
        if need > self.meta_room() / 10 * 8 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "the metadata page table of shard {} ({need} bytes) nears its checkpoint \
                     area ({} bytes); delete files, or format with larger checkpoints",
                    self.layout.shard,
                    self.meta_room()
                ),
            });
        }
        Ok(())
    }

    /// Writes a checkpoint, then restarts the journal. Refused while
    /// records wait for other shards (the state in memory includes them):
    /// sync every shard first.
    pub fn checkpoint(&mut self) -> Result<()> {
        if !self.waits.is_empty() {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shard {} has records waiting for other shards' journals; \
                     sync the engine before a checkpoint",
                    self.layout.shard
                ),
            });
        }
        self.write_checkpoint()
    }

    pub(super) fn write_checkpoint(&mut self) -> Result<()> {
        // The journal starts over, and with it the log of open stripes'
        // bytes: they are sealed first (written and applied, so the
        // checkpoint holds them).
        self.seal_open()?;
        debug_assert!(
            self.writers.values().all(|w| !w.pipeline.has_open_data()),
            "a checkpoint over an open stripe would lose its logged bytes"
        );
        let bs = self.layout.block_size as usize;
        // The changed pages, durable before the root that names them.
        // Pages a snapshot still names go to its dead list instead of back
        // to the space, which changes the tree again: commit until nothing
        // more is kept (the second round only copies the dead list's path).
        let freed = self.meta.take_freed_pages();
        self.space.retire(&freed);
        for round in 0.. {
            let retired = self.with_meta(|m, io| m.commit(io))?;
            let n = retired.len();
            let free = self.with_meta(|m, io| m.keep_retired(io, retired))?;
            self.space.retire(&free);
            if free.len() == n {
                break;
            }
            debug_assert!(round < 8, "dead-list commits do not converge");
        }
        self.flush_devices()?;
        let payload = root_payload(&self.meta, &self.space);
        // A checkpoint takes a sequence number of its own, so no two
        // checkpoints ever share one: recovery must never be able to pick an
        // older state of equal number (whose freed slots were reused since).
        let seq = self.seq + 1;
        let rec = format::encode_record(CHECKPOINT_MAGIC, seq, &payload, bs);
        if rec.len() as u64 > self.layout.checkpoint_blocks * bs as u64 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "the metadata root ({} bytes) outgrew the checkpoint area; format with \
                     larger checkpoints",
                    payload.len()
                ),
            });
        }
        let mut buf = Scratch::new(rec.len())?;
        buf.0.as_mut_slice()[..rec.len()].copy_from_slice(&rec);
        let slot = self.ckpt_slot ^ 1;
        let lba = self.layout.checkpoint_lba(slot);
        self.write_everywhere(lba, &buf, rec.len() / bs, "checkpoint write")?;
        self.seq = seq;
        self.ckpt_slot = slot;
        self.head = 0;
        // The new root is durable: what the old one alone named is free.
        let back = self.space.durable();
        self.slots.unreserve(back);
        Ok(())
    }
}
