//! Formatting devices into an engine and opening a shard of one: the
//! superblocks, probing a device, and writing a member's superblock last.

use super::*;

/// Per shard, bytes of metadata pages kept in memory.
/// Default bytes (in MiB) of the metadata page cache of each shard.
pub const META_CACHE_MIB: usize = 64;

/// The checkpoint of an empty shard: no file system, an empty tree, no
/// page chunks.
fn empty_root(layout: &Layout, devices: usize) -> Vec<u8> {
    let payload = checkpoint::root_payload(&Meta::new(0), &PageSpace::new(layout, devices));
    format::encode_record(CHECKPOINT_MAGIC, 0, &payload, 4096)
}

impl Store {
    /// Formats `devices` as one engine. Refuses devices that already carry
    /// a Flint superblock unless `force`.
    pub fn format(
        core: &mut Core,
        devices: &[Arc<dyn BlockDevice>],
        cfg: StoreConfig,
        force: bool,
    ) -> Result<()> {
        if devices.is_empty() || devices.len() > u16::MAX as usize {
            return Err(StoreError::Invalid {
                reason: "an engine needs between 1 and 65535 devices".into(),
            });
        }
        let uuid = new_uuid();
        let mut devs = open_qpairs(core, devices)?;
        let scratch = Scratch::new(4096)?;
        for (i, d) in devices.iter().enumerate() {
            let g = d.geometry();
            if g.block_size != 4096 {
                return Err(StoreError::Invalid {
                    reason: format!("device {}: block size must be 4096", d.name()),
                });
            }
            let r = run_io(&mut devs, &[(i, IoCmd::read(0, 1, scratch.0.as_ptr(), 0))]);
            r[0].map_err(io_err(d.name(), "read superblock"))?;
            if !force && Superblock::decode(&scratch.0.as_slice()[..4096]).is_ok() {
                return Err(StoreError::AlreadyFormatted {
                    device: d.name().into(),
                });
            }
            Layout::new(
                g.blocks,
                4096,
                cfg.chunk_size,
                cfg.journal_blocks,
                cfg.checkpoint_blocks,
                cfg.shards,
            )
            .map_err(|error| StoreError::Format {
                device: d.name().into(),
                error,
            })?;
        }
        // An empty checkpoint at sequence 0 in slot A, and zeroed slot B and
        // journal head, so stale records of an earlier format never replay.
        let mut zero = Scratch::new(4096)?;
        zero.0.as_mut_slice().fill(0);
        for (i, d) in devices.iter().enumerate() {
            let g = d.geometry();
            let sb = Superblock {
                engine_uuid: uuid,
                device_uuid: new_uuid(),
                device_index: i as u32,
                device_count: devices.len() as u32,
                block_size: 4096,
                chunk_size: cfg.chunk_size,
                blocks: g.blocks,
                journal_blocks: cfg.journal_blocks,
                checkpoint_blocks: cfg.checkpoint_blocks,
                shards: cfg.shards,
            };
            let layout = sb.layout().map_err(|error| StoreError::Format {
                device: d.name().into(),
                error,
            })?;
            let empty = empty_root(&layout, devices.len());
            let mut ck = Scratch::new(empty.len())?;
            ck.0.as_mut_slice()[..empty.len()].copy_from_slice(&empty);
            let sbb = sb.encode();
            let mut sbuf = Scratch::new(4096)?;
            sbuf.0.as_mut_slice()[..4096].copy_from_slice(&sbb);
            // Every shard: an empty checkpoint in slot A, slot B and the
            // journal head zeroed.
            let mut cmds = Vec::new();
            for shard in 0..cfg.shards {
                let l = layout.for_shard(shard);
                let blocks = (empty.len() / 4096) as u32;
                cmds.push((
                    i,
                    IoCmd::write(l.checkpoint_lba(0), blocks, ck.0.as_ptr(), 0),
                ));
                cmds.push((i, IoCmd::write(l.checkpoint_lba(1), 1, zero.0.as_ptr(), 0)));
                cmds.push((i, IoCmd::write(l.journal_start, 1, zero.0.as_ptr(), 0)));
            }
            cmds.push((i, IoCmd::flush(0)));
            for r in run_io(&mut devs, &cmds) {
                r.map_err(io_err(d.name(), "write metadata"))?;
            }
            // The superblock goes last: a device is an engine member only
            // once everything it points to is in place.
            let r = run_io(
                &mut devs,
                &[
                    (i, IoCmd::write(0, 1, sbuf.0.as_ptr(), 0)),
                    (i, IoCmd::flush(0)),
                ],
            );
            for x in r {
                x.map_err(io_err(d.name(), "write superblock"))?;
            }
        }
        Ok(())
    }

    /// Opens the engine on `devices` (in any order; `None` = missing) and
    /// recovers its state. Missing or unreadable devices are run degraded.
    pub fn open(core: &mut Core, devices: &[Option<Arc<dyn BlockDevice>>]) -> Result<Store> {
        Self::open_shard(core, devices, 0, META_CACHE_MIB << 20)
    }

    /// Opens shard `shard` of the engine on `devices` and recovers it. Each
    /// shard is an independent store over its own slice of the journal, the
    /// checkpoint slots and the chunk slots; it lives on one reactor.
    pub fn open_shard(
        core: &mut Core,
        devices: &[Option<Arc<dyn BlockDevice>>],
        shard: u32,
        meta_cache: usize,
    ) -> Result<Store> {
        let mut found: Vec<(Superblock, Arc<dyn BlockDevice>)> = Vec::new();
        let mut blank: Vec<String> = Vec::new();
        for d in devices.iter().flatten() {
            match Self::probe(core, d) {
                Ok(Some(sb)) => found.push((sb, d.clone())),
                // A blank device (a replacement, or never formatted): the
                // engine runs without it if the others form one.
                Ok(None) => blank.push(d.name().to_string()),
                Err(StoreError::Io { error, .. }) => {
                    tracing::warn!(device = d.name(), error = %error, "device unreadable; running without it");
                }
                Err(e) => return Err(e),
            }
        }
        if !found.is_empty() {
            for name in &blank {
                tracing::warn!(device = %name, "device holds no Flint superblock; running without it (degraded)");
            }
        } else if let Some(name) = blank.first() {
            return Err(StoreError::Format {
                device: name.clone(),
                error: FormatError::NotFlint,
            });
        }
        let Some((first, _)) = found.first().cloned() else {
            return Err(StoreError::Mismatch {
                reason: "no device with a Flint superblock; format the devices first".into(),
            });
        };
        let count = first.device_count as usize;
        let mut slots: Vec<Option<Arc<dyn BlockDevice>>> = vec![None; count];
        for (sb, d) in &found {
            if sb.engine_uuid != first.engine_uuid
                || sb.device_count != first.device_count
                || sb.chunk_size != first.chunk_size
                || sb.journal_blocks != first.journal_blocks
                || sb.checkpoint_blocks != first.checkpoint_blocks
                || sb.blocks != first.blocks
                || sb.shards != first.shards
            {
                return Err(StoreError::Mismatch {
                    reason: format!("device {} belongs to another engine or geometry", d.name()),
                });
            }
            if slots[sb.device_index as usize].replace(d.clone()).is_some() {
                return Err(StoreError::Mismatch {
                    reason: format!("two devices claim index {}", sb.device_index),
                });
            }
        }
        if shard >= first.shards {
            return Err(StoreError::Invalid {
                reason: format!(
                    "shard {shard} does not exist; the engine was formatted with {} shards",
                    first.shards
                ),
            });
        }
        let layout = first
            .layout()
            .map_err(|error| StoreError::Format {
                device: "superblock".into(),
                error,
            })?
            .for_shard(shard);
        let mut devs: Vec<Option<Dev>> = Vec::with_capacity(count);
        for (i, d) in slots.iter().enumerate() {
            match d {
                Some(d) => devs.push(Some(Dev {
                    name: d.name().to_string(),
                    qp: d.queue_pair(core, &QpairOptions { depth: 64 })?,
                    failed: false,
                    errors: 0,
                    retiring: false,
                })),
                None => {
                    tracing::warn!(index = i, "engine device missing; running degraded");
                    devs.push(None);
                }
            }
        }
        let space = PageSpace::new(&layout, count);
        let mut store = Store {
            devs,
            layout,
            uuid: first.engine_uuid,
            meta: Meta::new(0),
            meta_cache,
            writers: HashMap::new(),
            pending: Vec::new(),
            pending_stripes: Vec::new(),
            pending_puts: Vec::new(),
            puts_pushed: 0,
            puts_journaled: 0,
            put_at: HashMap::new(),
            dropping: HashMap::new(),
            slots: Slots::default(),
            space,
            pushed: 0,
            journaled: 0,
            waits: VecDeque::new(),
            drops: Vec::new(),
            ready_drops: Vec::new(),
            shared_refs: HashMap::new(),
            peers: None,
            quotas: None,
            refs: HashMap::new(),
            seq: 0,
            head: 0,
            ckpt_slot: 0,
            rbuf: None,
            dbuf: None,
            cbuf: Vec::new(),
            ahead: HashMap::new(),
            wbuf: None,
            codecs: HashMap::new(),
            decoders: HashMap::new(),
            evac: Default::default(),
            repairs: RepairStats::default(),
            sb: first.clone(),
            joining: None,
        };
        store.recover()?;
        Ok(store)
    }

    /// The superblock on `dev`, or `None` when it holds none (a blank
    /// device).
    pub fn probe(core: &mut Core, dev: &Arc<dyn BlockDevice>) -> Result<Option<Superblock>> {
        let mut one = open_qpairs(core, std::slice::from_ref(dev))?;
        let buf = Scratch::new(4096)?;
        let r = run_io(&mut one, &[(0, IoCmd::read(0, 1, buf.0.as_ptr(), 0))]);
        r[0].map_err(io_err(dev.name(), "read superblock"))?;
        match Superblock::decode(&buf.0.as_slice()[..4096]) {
            Ok(sb) => Ok(Some(sb)),
            Err(FormatError::NotFlint) => Ok(None),
            Err(error) => Err(StoreError::Format {
                device: dev.name().into(),
                error,
            }),
        }
    }

    /// Writes `sb` to block 0 of `dev` and flushes: the last step of making
    /// a device an engine member.
    pub fn write_superblock(
        core: &mut Core,
        dev: &Arc<dyn BlockDevice>,
        sb: &Superblock,
    ) -> Result<()> {
        let mut one = open_qpairs(core, std::slice::from_ref(dev))?;
        let mut buf = Scratch::new(4096)?;
        buf.0.as_mut_slice()[..4096].copy_from_slice(&sb.encode());
        for r in run_io(
            &mut one,
            &[
                (0, IoCmd::write(0, 1, buf.0.as_ptr(), 0)),
                (0, IoCmd::flush(0)),
            ],
        ) {
            r.map_err(io_err(dev.name(), "write superblock"))?;
        }
        Ok(())
    }
}
