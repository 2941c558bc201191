//! The engine on its reactors: one [`Store`] per shard, each owned by the
//! reactor the [`ShardMap`] assigns it to, reached from any thread by
//! sending it work.
//!
//! File systems exist on every shard under the same id. A file's home is the
//! shard its name hashes to, and its inode number carries that shard, so
//! requests go straight to the owner reactor as messages. The home holds the
//! name and the size and the file's first 1 MiB range; range r lives on the
//! r-th shard after it, so one large file spreads over every core and its
//! pieces are written and read in parallel. `sync`, listings and space
//! figures go to every shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::park::Waker;
use flint_dataplane::poller::{poller_fn, PollStatus};
use flint_dataplane::reactor::{Core, Pending, ReactorConfig, ReactorSet};

use crate::control::{ShardMap, RANGE_BYTES};
use crate::meta::{FsId, FsMeta, Ino};
use crate::store::{SpaceStats, Stat, Store, StoreConfig, StoreError};

/// Engine errors: the store's, or the reactor's.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Free-space share under which the timer collects garbage.
const GC_BELOW: f64 = 0.25;
/// Stripes one timer tick may collect.
const GC_STEP: usize = 4;

/// The shards a reactor owns.
#[derive(Default)]
struct Shards(HashMap<u32, Store>);

/// A running engine.
pub struct Engine {
    set: ReactorSet,
    map: ShardMap,
    devices: Vec<Option<Arc<dyn BlockDevice>>>,
}

fn shards_of(core: &mut Core) -> &mut Shards {
    if core.local::<Shards>().is_none() {
        core.set_local(Shards::default());
    }
    core.local::<Shards>().expect("set above")
}

impl Engine {
    /// Starts the reactors (no store yet).
    pub fn start(reactor: &ReactorConfig) -> Result<Engine> {
        let set = ReactorSet::start(reactor)?;
        let map = ShardMap::new(1, set.len());
        Ok(Engine {
            set,
            map,
            devices: Vec::new(),
        })
    }

    /// Formats devices as a new engine.
    pub fn format(
        &self,
        devices: Vec<Arc<dyn BlockDevice>>,
        cfg: StoreConfig,
        force: bool,
    ) -> Result<()> {
        self.set
            .call(0, move |core| Store::format(core, &devices, cfg, force))?
    }

    /// Opens (and recovers) every shard of the engine on `devices`;
    /// `None` = missing.
    pub fn open(&mut self, devices: Vec<Option<Arc<dyn BlockDevice>>>) -> Result<()> {
        self.open_with(devices, None)
    }

    /// Opens the engine and, with `seal_every`, seals open stripes and
    /// commits their metadata on that period (group commit), so data is
    /// durable within one period even without an fsync. The same timer
    /// runs one step of garbage collection when free space falls below a
    /// quarter, so space comes back without stalling foreground I/O.
    pub fn open_with(
        &mut self,
        devices: Vec<Option<Arc<dyn BlockDevice>>>,
        seal_every: Option<Duration>,
    ) -> Result<()> {
        self.devices = devices.clone();
        // Shard 0 tells how many shards the engine was formatted with.
        let devs = devices.clone();
        let shards = self.set.call(0, move |core| -> Result<u32> {
            let store = Store::open_shard(core, &devs, 0)?;
            let n = store.shards();
            shards_of(core).0.insert(0, store);
            Ok(n)
        })??;
        self.map = ShardMap::new(shards, self.set.len());
        let mut pending = Vec::new();
        for shard in 1..shards {
            let devs = devices.clone();
            let owner = self.map.owner(shard);
            pending.push(self.set.run_on(owner, move |core| -> Result<()> {
                let store = Store::open_shard(core, &devs, shard)?;
                shards_of(core).0.insert(shard, store);
                Ok(())
            })?);
        }
        for p in pending {
            p.wait()??;
        }
        if shards > 1 {
            // Pieces of files live on several shards, which recovered on
            // their own: cut every piece back to its file's size.
            let homes: HashMap<Ino, u64> = self
                .broadcast(|s| Ok(s.home_sizes()))?
                .into_iter()
                .flatten()
                .collect();
            let homes = Arc::new(homes);
            self.broadcast(move |s| s.reconcile_parts(&homes))?;
        }
        if let Some(period) = seal_every {
            for reactor in 0..self.set.len().min(shards as usize) {
                self.set.call(reactor, move |core| {
                    core.add_periodic(period, |core| {
                        for store in shards_of(core).0.values_mut() {
                            if store.free_fraction() < GC_BELOW {
                                if let Err(e) = store.gc(GC_STEP) {
                                    tracing::warn!(error = %e, "background garbage collection failed");
                                }
                            }
                            if store.has_unsynced() {
                                if let Err(e) = store.sync() {
                                    tracing::error!(error = %e, "periodic seal failed");
                                }
                            }
                        }
                    });
                })?;
            }
        }
        Ok(())
    }

    /// The shard map in force.
    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Moves `shard` to `reactor` (rebalancing, or draining a core): the
    /// shard is made durable on its owner and dropped there, recovered from
    /// the devices on the new reactor, and the map is published with the
    /// next epoch. Exclusive access means no request is routed by the old
    /// map meanwhile.
    pub fn move_shard(&mut self, shard: u32, reactor: usize) -> Result<()> {
        if shard >= self.map.shards() || reactor >= self.set.len() {
            return Err(StoreError::Invalid {
                reason: format!(
                    "cannot move shard {shard} to reactor {reactor}: the engine has {} shards \
                     and {} reactors",
                    self.map.shards(),
                    self.set.len()
                ),
            });
        }
        let from = self.map.owner(shard);
        if from == reactor {
            return Ok(());
        }
        self.set.call(from, move |core| -> Result<()> {
            let shards = shards_of(core);
            let Some(mut store) = shards.0.remove(&shard) else {
                return Err(StoreError::NotFound {
                    what: format!("shard {shard}"),
                });
            };
            let r = store.sync().and_then(|()| store.checkpoint());
            if r.is_err() {
                shards.0.insert(shard, store);
            }
            r
        })??;
        let devs = self.devices.clone();
        self.set.call(reactor, move |core| -> Result<()> {
            let store = Store::open_shard(core, &devs, shard)?;
            shards_of(core).0.insert(shard, store);
            Ok(())
        })??;
        self.map = self.map.with_owner(shard, reactor);
        tracing::info!(
            shard,
            from,
            to = reactor,
            epoch = self.map.epoch(),
            "shard moved"
        );
        Ok(())
    }

    /// Runs `f` on the store of `shard`, on its owner reactor.
    pub fn call_shard<R: Send + 'static>(
        &self,
        shard: u32,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.set.call(self.map.owner(shard), move |core| {
            match shards_of(core).0.get_mut(&shard) {
                Some(store) => f(store),
                None => Err(StoreError::NotFound {
                    what: format!("shard {shard} (open the engine first)"),
                }),
            }
        })?
    }

    /// Sends `f` to the store of `shard` without waiting; the result comes
    /// back through the returned handle (asynchronous callers poll it).
    pub fn shard_task<R: Send + 'static>(
        &self,
        shard: u32,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<Pending<Result<R>>> {
        Ok(self.set.run_on(self.map.owner(shard), move |core| {
            match shards_of(core).0.get_mut(&shard) {
                Some(store) => f(store),
                None => Err(StoreError::NotFound {
                    what: format!("shard {shard} (open the engine first)"),
                }),
            }
        })?)
    }

    /// Installs `f` as a poller on the reactor that owns `shard`: every loop
    /// iteration it gets the shard's store and says whether it did work.
    /// This is how an embedding client feeds a shard through its own
    /// lock-free rings, with no allocation or channel per operation. Returns
    /// the reactor's waker, to call after publishing work.
    pub fn shard_poller(
        &self,
        shard: u32,
        mut f: impl FnMut(&mut Store) -> bool + Send + 'static,
    ) -> Result<Waker> {
        let owner = self.map.owner(shard);
        self.set.call(owner, move |core| {
            core.add_poller(poller_fn("shard-client", move |core| {
                match shards_of(core).0.get_mut(&shard) {
                    Some(store) => PollStatus::from_work(f(store)),
                    None => PollStatus::Idle,
                }
            }));
        })?;
        Ok(self.set.wakers()[owner].clone())
    }

    /// Waits for tasks; the first error wins, results in order otherwise.
    fn join<R>(pending: Vec<Pending<Result<R>>>) -> Result<Vec<R>> {
        let mut out = Vec::with_capacity(pending.len());
        let mut first_err = None;
        for p in pending {
            match p.wait()? {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Splits `[offset, offset + len)` of a file at range boundaries:
    /// (shard, offset, length) per piece.
    fn pieces(&self, ino: Ino, offset: u64, len: u64) -> Vec<(u32, u64, u64)> {
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let range = pos / RANGE_BYTES;
            let hi = end.min((range + 1) * RANGE_BYTES);
            out.push((self.map.shard_of_range(ino, range), pos, hi - pos));
            pos = hi;
        }
        out
    }

    /// Runs `f` on shard 0's store (the whole engine when it has one shard).
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.call_shard(0, f)
    }

    /// Runs `f` on every shard at once; results by shard.
    pub fn broadcast<R: Send + 'static>(
        &self,
        f: impl Fn(&mut Store) -> Result<R> + Send + Sync + Clone + 'static,
    ) -> Result<Vec<R>> {
        let pending = (0..self.map.shards())
            .map(|shard| self.shard_task(shard, f.clone()))
            .collect::<Result<Vec<_>>>()?;
        Self::join(pending)
    }

    /// Creates a file system on every shard under one id.
    pub fn fs_create(
        &self,
        name: &str,
        k: u8,
        m: u8,
        reduction: bool,
        capacity: u64,
    ) -> Result<FsId> {
        let id = self
            .broadcast(|s| Ok(s.next_fs_id()))?
            .into_iter()
            .max()
            .unwrap_or(0);
        let name = name.to_string();
        self.broadcast(move |s| s.fs_create_as(id, &name, k, m, reduction, capacity))?;
        Ok(id)
    }

    /// File systems (from shard 0; every shard holds the same ones), with
    /// the bytes their files hold across all shards.
    pub fn fs_list(&self) -> Result<Vec<(FsMeta, u64)>> {
        let per_shard = self.broadcast(|s| Ok(s.fs_list()))?;
        let mut out: Vec<(FsMeta, u64)> = per_shard.first().cloned().unwrap_or_default();
        for (fs, used) in out.iter_mut() {
            *used = per_shard
                .iter()
                .flatten()
                .filter(|(f, _)| f.id == fs.id)
                .map(|(_, u)| u)
                .sum();
        }
        Ok(out)
    }

    /// A file system by name.
    pub fn fs_by_name(&self, name: &str) -> Result<Option<FsId>> {
        let name = name.to_string();
        self.call(move |s| Ok(s.fs_by_name(&name)))
    }

    /// Creates a file on the shard its name maps to.
    pub fn create(&self, fs: FsId, name: &str) -> Result<Ino> {
        let shard = self.map.shard_of_name(fs, name);
        let name = name.to_string();
        self.call_shard(shard, move |s| s.create(fs, &name))
    }

    /// A file by name.
    pub fn lookup(&self, fs: FsId, name: &str) -> Result<Option<Ino>> {
        let shard = self.map.shard_of_name(fs, name);
        let name = name.to_string();
        self.call_shard(shard, move |s| Ok(s.lookup(fs, &name)))
    }

    /// Writes `data` at `offset` of a file. Pieces in ranges of other
    /// shards are written there, in parallel; the home shard then records
    /// the new size.
    pub fn write(&self, ino: Ino, offset: u64, data: Vec<u8>) -> Result<()> {
        let home = self.map.shard_of_ino(ino);
        let end = offset + data.len() as u64;
        let pieces = self.pieces(ino, offset, data.len() as u64);
        if pieces.iter().all(|p| p.0 == home) {
            return self.call_shard(home, move |s| s.write(ino, offset, &data));
        }
        let fs = self.call_shard(home, move |s| s.check_extend(ino, end))?;
        let data = Arc::new(data);
        let tasks = pieces
            .into_iter()
            .map(|(shard, off, len)| {
                let data = data.clone();
                self.shard_task(shard, move |s| {
                    let at = (off - offset) as usize;
                    s.write_part(ino, fs, off, &data[at..at + len as usize])
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::join(tasks)?;
        self.call_shard(home, move |s| s.extend(ino, end))
    }

    /// Reads up to `len` bytes at `offset` of a file, from every shard that
    /// holds a piece of it, in parallel.
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let home = self.map.shard_of_ino(ino);
        let size = self.stat(ino)?.size;
        let end = size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let pieces = self.pieces(ino, offset, end - offset);
        if pieces.iter().all(|p| p.0 == home) {
            return self.call_shard(home, move |s| s.read(ino, offset, (end - offset) as usize));
        }
        let tasks = pieces
            .into_iter()
            .map(|(shard, off, len)| {
                self.shard_task(shard, move |s| s.read_part(ino, off, len as usize))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::join(tasks)?.concat())
    }

    /// Sets a file's size, on its home shard and every shard holding a
    /// piece of it.
    pub fn truncate(&self, ino: Ino, size: u64) -> Result<()> {
        self.call_shard(self.map.shard_of_ino(ino), move |s| s.truncate(ino, size))?;
        if self.map.shards() > 1 {
            self.broadcast(move |s| s.truncate_part(ino, size))?;
        }
        Ok(())
    }

    /// Removes a file, with its pieces on every shard.
    pub fn unlink(&self, ino: Ino) -> Result<()> {
        self.call_shard(self.map.shard_of_ino(ino), move |s| s.unlink(ino))?;
        if self.map.shards() > 1 {
            self.broadcast(move |s| s.unlink_part(ino))?;
        }
        Ok(())
    }

    /// A file's attributes.
    pub fn stat(&self, ino: Ino) -> Result<Stat> {
        self.call_shard(self.map.shard_of_ino(ino), move |s| s.stat(ino))
    }

    /// The files of a file system, from every shard.
    pub fn list(&self, fs: FsId) -> Result<Vec<Stat>> {
        let mut all: Vec<Stat> = self.broadcast(move |s| Ok(s.list(fs)))?.concat();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Makes everything written so far durable, on every shard.
    pub fn sync(&self) -> Result<()> {
        self.broadcast(|s| s.sync()).map(|_| ())
    }

    /// Space figures summed over the shards.
    pub fn space(&self) -> Result<SpaceStats> {
        let parts = self.broadcast(|s| Ok(s.space()))?;
        let mut t = SpaceStats::default();
        let (mut dd, mut cc) = (0.0, 0.0);
        for p in &parts {
            t.logical += p.logical;
            t.physical += p.physical;
            t.capacity += p.capacity;
            dd += p.dedup_ratio * p.logical as f64;
            cc += p.compression_ratio * p.logical as f64;
        }
        let w = (t.logical as f64).max(1.0);
        t.dedup_ratio = if t.logical == 0 { 1.0 } else { dd / w };
        t.compression_ratio = if t.logical == 0 { 1.0 } else { cc / w };
        Ok(t)
    }

    /// Syncs and checkpoints every shard, then stops the reactors.
    pub fn close(self) -> Result<()> {
        let r = self.broadcast(|s| {
            s.sync()?;
            s.checkpoint()
        });
        for reactor in 0..self.set.len() {
            let _ = self
                .set
                .call(reactor, |core| core.set_local(Shards::default()));
        }
        self.set.shutdown();
        r.map(|_| ())
    }
}
