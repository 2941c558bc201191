//! Checkpoints: the whole state written to the spare checkpoint slot on
//! every healthy device, after which the journal restarts.

use super::*;

impl Store {
    /// Bytes a checkpoint can hold.
    pub(super) fn meta_room(&self) -> u64 {
        (self.layout.checkpoint_blocks * u64::from(self.layout.block_size)).saturating_sub(4096)
    }

    /// Refuses to take more data when the metadata could outgrow the
    /// checkpoint area (the next checkpoint, and with it recovery, would
    /// fail): a clean no-space error while there is still room.
    pub(super) fn check_meta_room(&self) -> Result<()> {
        if self.meta_bytes > self.meta_room() / 10 * 8 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "metadata of shard {} ({} bytes) nears its checkpoint area ({} bytes); \
                     delete files, or format with larger checkpoints",
                    self.layout.shard,
                    self.meta_bytes,
                    self.meta_room()
                ),
            });
        }
        Ok(())
    }

    /// Writes the whole state to the spare checkpoint slot, then restarts
    /// the journal. Refused while records wait for other shards (the state
    /// in memory includes them): sync every shard first.
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
        let bs = self.layout.block_size as usize;
        let payload = self.meta.encode();
        // A checkpoint takes a sequence number of its own, so no two
        // checkpoints ever share one: recovery must never be able to pick an
        // older state of equal number (whose freed slots were reused since).
        let seq = self.seq + 1;
        let rec = format::encode_record(CHECKPOINT_MAGIC, seq, &payload, bs);
        if rec.len() as u64 > self.layout.checkpoint_blocks * bs as u64 {
            return Err(StoreError::NoSpace {
                what: format!(
                    "metadata ({} bytes) outgrew the checkpoint area; format with larger checkpoints",
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
        self.meta_bytes = payload.len() as u64;
        Ok(())
    }
}
