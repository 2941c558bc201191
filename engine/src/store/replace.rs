//! Replacing a missing device by a blank one: its metadata areas zeroed,
//! this shard's chunks of the slot rebuilt onto it, then it joins (the
//! engine writes its superblock last).

use super::*;

impl Store {
    /// The superblock the engine was opened by.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// First step of replacing a missing device: `qp` (a queue pair on the
    /// blank replacement `name`) takes slot `index`. This shard's journal
    /// and checkpoint areas on it are zeroed (records a former owner left
    /// there must never replay), and every chunk this shard keeps in that
    /// slot (stripe chunks and metadata page chunks) is rebuilt onto it
    /// from the survivors, at the same place. The
    /// device is held aside — nothing is placed on or read from it — until
    /// [`Store::adopt_join`]. Returns the chunks rebuilt. On an error
    /// nothing changed (the device stays out).
    pub fn adopt_rebuild(
        &mut self,
        index: usize,
        name: &str,
        qp: Box<dyn QueuePair>,
    ) -> Result<u64> {
        if self.devs.get(index).is_none_or(|d| d.is_some()) {
            return Err(StoreError::Invalid {
                reason: format!("device slot {index} is not missing"),
            });
        }
        let mut one = [Some(Dev {
            name: name.to_string(),
            qp,
            failed: false,
            errors: 0,
            retiring: false,
        })];
        // Zero the metadata areas, 1 MiB per command.
        let step = 256u64;
        let mut zero = Scratch::new((step * 4096) as usize)?;
        zero.0.as_mut_slice().fill(0);
        let l = &self.layout;
        let mut cmds = Vec::new();
        for (start, blocks) in [
            (l.journal_start, l.journal_blocks),
            (l.checkpoint_lba(0), l.checkpoint_blocks),
            (l.checkpoint_lba(1), l.checkpoint_blocks),
        ] {
            let mut off = 0;
            while off < blocks {
                let n = step.min(blocks - off);
                cmds.push((0, IoCmd::write(start + off, n as u32, zero.0.as_ptr(), 0)));
                off += n;
            }
        }
        for r in run_io(&mut one, &cmds) {
            r.map_err(io_err(name, "zero metadata"))?;
        }
        // Rebuild the slot's chunks.
        let per = self.layout.chunk_blocks as usize;
        let ids = self.with_meta(|m, io| m.stripe_ids(io))?;
        let mut rebuilt = 0;
        let mut w = Scratch::new(per * 4096)?;
        for id in ids {
            let s = self.stripe(id)?;
            for c in 0..s.chunks.len() {
                let (d, slot) = s.chunks[c];
                if usize::from(d) != index {
                    continue;
                }
                let data = self
                    .rebuild(&s, c, 0, per)
                    .map_err(|e| StoreError::Invalid {
                        reason: format!(
                            "chunk {c} of stripe {id} cannot be rebuilt ({e}); \
                         bring back the devices that hold its survivors, then retry"
                        ),
                    })?;
                w.0.as_mut_slice()[..data.len()].copy_from_slice(&data);
                let r = run_io(
                    &mut one,
                    &[(
                        0,
                        IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0),
                    )],
                );
                r[0].map_err(io_err(name, "write rebuilt chunk"))?;
                rebuilt += 1;
            }
        }
        // And the metadata page chunks with a copy in that slot, copied
        // from a surviving copy.
        for (n, slot) in self.space.chunks_on(index as u16) {
            let from: Vec<(u16, u64)> = self.space.copies_of(n).to_vec();
            let mut copied = false;
            for (d, s) in from.into_iter().filter(|c| usize::from(c.0) != index) {
                let cmd = IoCmd::read(self.layout.slot_lba(s), per as u32, w.0.as_ptr(), 0);
                if run_io(&mut self.devs, &[(usize::from(d), cmd)])[0].is_ok() {
                    copied = true;
                    break;
                }
            }
            if !copied {
                return Err(StoreError::Invalid {
                    reason: format!(
                        "metadata page chunk {n} has no readable copy; bring back the devices \
                         that hold it, then retry"
                    ),
                });
            }
            let cmd = IoCmd::write(self.layout.slot_lba(slot), per as u32, w.0.as_ptr(), 0);
            run_io(&mut one, &[(0, cmd)])[0].map_err(io_err(name, "write metadata pages"))?;
            rebuilt += 1;
        }
        for r in run_io(&mut one, &[(0, IoCmd::flush(0))]) {
            r.map_err(io_err(name, "flush"))?;
        }
        let [Some(dev)] = one else {
            unreachable!("the array holds the device")
        };
        self.joining = Some((index, dev));
        Ok(rebuilt)
    }

    /// Second step: the rebuilt replacement joins slot `index` as a
    /// healthy member (new chunks may go to it, reads use it, metadata is
    /// mirrored to it), and a checkpoint puts this shard's state on it now
    /// (when no record waits for other shards; otherwise the next one does).
    pub fn adopt_join(&mut self, index: usize) -> Result<()> {
        match self.joining.take() {
            Some((i, dev)) if i == index && self.devs.get(i).is_some_and(|d| d.is_none()) => {
                self.devs[i] = Some(dev);
            }
            _ => {
                return Err(StoreError::Invalid {
                    reason: format!("no replacement is being rebuilt into device slot {index}"),
                })
            }
        }
        if self.waits.is_empty() {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Gives up a replacement held by [`Store::adopt_rebuild`].
    pub fn adopt_abort(&mut self) {
        self.joining = None;
    }
}
