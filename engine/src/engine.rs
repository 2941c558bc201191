//! The engine on its reactors: one [`Store`] per shard, each owned by the
//! reactor the [`ShardMap`] assigns it to, reached from any thread by
//! sending it work.
//!
//! File systems exist on every shard under the same id. A file system's
//! directories spread over the shards (`names.rs`; operations that change
//! two shards run as intents, `span.rs`); a file's home is its
//! directory's shard, and its inode number carries that shard, so requests
//! go straight to the owner reactor as messages. The
//! home holds the inode (size, times) and the file's first 1 MiB range;
//! range r lives on the r-th shard after it, so one large file spreads over
//! every core and its pieces are written and read in parallel. `sync`, listings and space
//! figures go to every shard.
//!
//! Dedup is engine-wide: in a file system that reduces data, every block is
//! kept in the shared pool of the shard that owns its fingerprint
//! ([`ShardMap::shard_of_fp`]), which deduplicates it against everything it
//! stores; the block maps of the file's range shards refer to it by (owner,
//! key). A write puts blocks on their owners, then maps them on the range
//! shards; a map record is journaled only after its owners journaled the
//! blocks, so `sync` runs rounds until every shard's records are durable.
//! References a durable record dropped are then told to their owners, and
//! opening the engine recounts every shared block's references from all
//! block maps (which reclaims whatever a crash left unreferenced).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::park::Waker;
use flint_dataplane::poller::{poller_fn, PollStatus};
use flint_dataplane::reactor::{Core, Pending, ReactorConfig, ReactorSet};

use crate::control::{ShardMap, RANGE_BYTES};
use crate::meta::group::Group;
use crate::meta::BlockRef;
use crate::meta::{FsId, FsMeta, Ino};
use crate::pipeline::fingerprint::{Fingerprinter, Xxh3};
use crate::store::{
    Journaled, RemoteRead, SharedDrop, SpaceStats, Stat, Store, StoreConfig, StoreError, BLOCK,
};

mod clone;
mod durable;
mod names;
mod order;
mod quota;
mod snap;
mod span;

pub use names::root_ctx;
pub use quota::{QuotaEvent, QuotaInfo};
pub use snap::SnapInfo;

/// Engine errors: the store's, or the reactor's.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Free-space share under which the timer collects garbage.
const GC_BELOW: f64 = 0.25;
/// Stripes one timer tick may collect.
const GC_STEP: usize = 4;

/// The shards a reactor owns.
#[derive(Default)]
struct Shards(HashMap<u32, Store>);

/// Which reactor owns each shard, readable from reactors (the map's
/// owners, kept current by [`Engine::move_shard`]).
struct Routes(Vec<AtomicUsize>);

impl Routes {
    fn of(map: &ShardMap) -> Arc<Routes> {
        Arc::new(Routes(
            (0..map.shards())
                .map(|s| AtomicUsize::new(map.owner(s)))
                .collect(),
        ))
    }

    fn owner(&self, shard: u32) -> usize {
        self.0
            .get(shard as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }
}

/// A record's wait: (owner shard, shared-block records it must have
/// journaled).
type Need = (u32, u64);

/// Sync rounds after which records still waiting mean a shard cannot make
/// its blocks durable.
const MAX_SYNC_ROUNDS: usize = 64;

/// A running engine.
pub struct Engine {
    set: ReactorSet,
    map: ShardMap,
    devices: Vec<Option<Arc<dyn BlockDevice>>>,
    routes: Arc<Routes>,
    /// Every shard's journal progress, with more than one shard.
    peers: Option<Arc<Journaled>>,
    /// Bytes of metadata page cache each shard opens with.
    meta_cache: usize,
    /// Namespace changes on one shard share it; an operation spanning
    /// shards holds it alone from its plan to its last durable step.
    names: std::sync::RwLock<()>,
    /// Namespace operations that spanned shards (intents run) since start.
    spanned: std::sync::atomic::AtomicU64,
    /// Per-block order of writes assembled from several shards.
    blocks: order::BlockLocks,
    /// File systems that acknowledge before durable.
    write_back: durable::WriteBack,
    /// Directory quotas: definitions and every shard's counts.
    quotas: Arc<crate::store::QuotaBook>,
}

/// Delivers dropped shared-block references to their owner's store, on
/// whichever reactor it is now (forwarding if it moved).
fn deliver_drops(
    core: &mut Core,
    routes: Arc<Routes>,
    owner: u32,
    drops: Vec<(FsId, u128)>,
    hops: u32,
) {
    if let Some(store) = shards_of(core).0.get_mut(&owner) {
        if let Err(e) = store.drop_shared(&drops) {
            // The references stay counted: the space leaks until the next
            // open recounts them, nothing is lost.
            tracing::error!(shard = owner, error = %e, "dropping shared-block references failed");
        }
        return;
    }
    let to = routes.owner(owner);
    if hops > 4 || to == core.index() {
        // The owner is not open anywhere: the references stay counted until
        // the next open recounts them (space leaks, nothing is lost).
        tracing::warn!(
            shard = owner,
            count = drops.len(),
            "dropped shared references undeliverable"
        );
        return;
    }
    let _ = core.send(to, move |core| {
        deliver_drops(core, routes, owner, drops, hops + 1)
    });
}

/// What an asynchronous read calls when it completes.
type ReadDone = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

/// An asynchronous read on its way through the reactors.
struct AsyncRead {
    done: Option<ReadDone>,
    size: Option<u64>,
    piece: Option<(Vec<u8>, Vec<RemoteRead>)>,
    out: Vec<u8>,
    fills: usize,
}

/// Runs `f` on this reactor's store of `shard`.
fn with_shard<R>(
    core: &mut Core,
    shard: u32,
    f: impl FnOnce(&mut Store) -> Result<R>,
) -> Result<R> {
    match shards_of(core).0.get_mut(&shard) {
        Some(s) => f(s),
        None => Err(StoreError::Moved { shard }),
    }
}

/// What [`Engine::replace_device`] did.
#[derive(Debug, Clone, Copy)]
pub struct Replaced {
    /// The slot the device took.
    pub index: usize,
    /// Chunks rebuilt onto it.
    pub chunks: u64,
}

/// Completes an asynchronous read once (later calls do nothing).
fn finish_read(st: &std::sync::Mutex<AsyncRead>, r: Result<Vec<u8>>) {
    let done = st.lock().ok().and_then(|mut g| g.done.take());
    if let Some(done) = done {
        done(r);
    }
}

/// Once the size and the bytes are in: fetches shared blocks from their
/// owners, or completes.
fn continue_read(
    core: &mut Core,
    st: &Arc<std::sync::Mutex<AsyncRead>>,
    routes: &Arc<Routes>,
    offset: u64,
    want: u64,
) {
    let remote = {
        let Ok(mut g) = st.lock() else { return };
        let (Some(size), true) = (g.size, g.piece.is_some()) else {
            return;
        };
        let (bytes, remote) = g.piece.take().expect("checked above");
        let n = size.min(want).saturating_sub(offset) as usize;
        g.out = bytes;
        g.out.truncate(n);
        let remote: Vec<RemoteRead> = remote
            .into_iter()
            .filter(|r| r.at < n)
            .map(|r| RemoteRead {
                len: r.len.min(n - r.at),
                ..r
            })
            .collect();
        let mut per: HashMap<(u32, FsId), Vec<RemoteRead>> = HashMap::new();
        for r in remote {
            per.entry((r.owner, r.fs)).or_default().push(r);
        }
        g.fills = per.len();
        per
    };
    if remote.is_empty() {
        let out = st
            .lock()
            .map(|mut g| std::mem::take(&mut g.out))
            .unwrap_or_default();
        finish_read(st, Ok(out));
        return;
    }
    for ((owner, fs), reads) in remote {
        let st2 = st.clone();
        let sent = core.send(routes.owner(owner), move |core| {
            let keys: Vec<u128> = reads.iter().map(|r| r.key).collect();
            match with_shard(core, owner, |s| s.read_shared(fs, &keys)) {
                Ok(blocks) => {
                    let out = {
                        let Ok(mut g) = st2.lock() else { return };
                        for (r, b) in reads.iter().zip(blocks.chunks(BLOCK)) {
                            g.out[r.at..r.at + r.len].copy_from_slice(&b[r.skip..r.skip + r.len]);
                        }
                        g.fills -= 1;
                        (g.fills == 0).then(|| std::mem::take(&mut g.out))
                    };
                    if let Some(out) = out {
                        finish_read(&st2, Ok(out));
                    }
                }
                Err(e) => finish_read(&st2, Err(e)),
            }
        });
        if let Err(e) = sent {
            finish_read(st, Err(e.into()));
        }
    }
}

/// Groups dropped references by owner shard.
fn by_owner(drops: Vec<SharedDrop>) -> HashMap<u32, Vec<(FsId, u128)>> {
    let mut out: HashMap<u32, Vec<(FsId, u128)>> = HashMap::new();
    for (owner, fs, key) in drops {
        out.entry(owner).or_default().push((fs, key));
    }
    out
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
            routes: Routes::of(&map),
            set,
            map,
            devices: Vec::new(),
            peers: None,
            quotas: crate::store::QuotaBook::new(1),
            meta_cache: crate::store::META_CACHE_MIB << 20,
            names: std::sync::RwLock::new(()),
            spanned: std::sync::atomic::AtomicU64::new(0),
            blocks: order::BlockLocks::new(),
            write_back: durable::WriteBack::default(),
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

    /// Sets the bytes of metadata page cache each shard opens with (the
    /// metadata's memory beyond the open files; default
    /// [`crate::store::META_CACHE_MIB`] MiB). Takes effect at the next open.
    pub fn set_meta_cache(&mut self, bytes: usize) {
        self.meta_cache = bytes;
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
        let cache = self.meta_cache;
        let shards = self.set.call(0, move |core| -> Result<u32> {
            let store = Store::open_shard(core, &devs, 0, cache)?;
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
                let store = Store::open_shard(core, &devs, shard, cache)?;
                shards_of(core).0.insert(shard, store);
                Ok(())
            })?);
        }
        for p in pending {
            p.wait()??;
        }
        self.routes = Routes::of(&self.map);
        let book = crate::store::QuotaBook::new(shards);
        self.quotas = book.clone();
        self.broadcast(move |s| {
            s.set_quotas(book.clone());
            Ok(())
        })?;
        if shards > 1 {
            let peers = Journaled::new(shards);
            self.peers = Some(peers.clone());
            self.broadcast(move |s| {
                s.set_peers(peers.clone());
                Ok(())
            })?;
            // File systems whose deletion a crash cut short.
            self.drop_deleted_fs()?;
            // Clones a crash cut short, before their pool entries could be
            // dropped for want of the maps naming them.
            self.finish_clones()?;
            // Shared pools exist only where data is reduced; their counts
            // come from every shard's maps.
            if self.broadcast(|s| Ok(s.shares_blocks()))?.contains(&true) {
                self.recount_shared()?;
            }
            // Pieces of files live on several shards, which recovered on
            // their own: cut every piece back to its file's size (asking
            // the homes of files with pieces only).
            let mut by_home: HashMap<u32, Vec<Ino>> = HashMap::new();
            for (ino, _) in self.broadcast(|s| s.part_sizes())?.into_iter().flatten() {
                by_home
                    .entry(self.map.shard_of_ino(ino))
                    .or_default()
                    .push(ino);
            }
            let mut homes: HashMap<Ino, u64> = HashMap::new();
            for (shard, mut inos) in by_home {
                inos.sort_unstable();
                inos.dedup();
                let sizes = self.call_shard(shard, move |s| {
                    let sizes = s.home_sizes(&inos)?;
                    Ok(inos.into_iter().zip(sizes).collect::<Vec<_>>())
                })?;
                homes.extend(sizes.into_iter().filter_map(|(i, s)| Some((i, s?))));
            }
            let homes = Arc::new(homes);
            // Shared blocks straddling those cuts get their tails zeroed
            // first (a crash in between repeats it).
            let h = homes.clone();
            let tails = self.broadcast(move |s| s.shared_tails(&h))?;
            for (ino, size) in tails.into_iter().flatten() {
                self.zero_tail(ino, size)?;
            }
            self.broadcast(move |s| s.reconcile_parts(&homes))?;
            self.sync()?;
            // Namespace operations spanning shards that a crash cut short.
            self.finish_intents()?;
            // And snapshots, and a restore.
            self.finish_snapshots()?;
            self.finish_restore()?;
        } else {
            self.finish_clones()?;
        }
        self.drop_clone_snapshots()?;
        if let Some(period) = seal_every {
            for reactor in 0..self.set.len().min(shards as usize) {
                let routes = self.routes.clone();
                self.set.call(reactor, move |core| {
                    let mut drops = Vec::new();
                    core.add_periodic(period, move |core| {
                        for store in shards_of(core).0.values_mut() {
                            if store.free_fraction() < GC_BELOW {
                                if let Err(e) = store.gc(GC_STEP) {
                                    tracing::warn!(error = %e, "background garbage collection failed");
                                }
                            }
                            // Changes of write-back file systems become
                            // durable within a period (open stripes stay
                            // open: their bytes go to the log).
                            if store.awaits_commit() {
                                if let Err(e) = store.commit() {
                                    tracing::error!(error = %e, "periodic commit failed");
                                }
                            }
                            drops.extend(store.take_drops());
                        }
                        for (owner, d) in by_owner(std::mem::take(&mut drops)) {
                            deliver_drops(core, routes.clone(), owner, d, 0);
                        }
                    });
                })?;
            }
        }
        self.load_write_back()
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
        // Nothing may wait on the moving shard's journal, which restarts.
        self.sync()?;
        let refs = self.set.call(from, move |core| -> Result<_> {
            let shards = shards_of(core);
            let Some(mut store) = shards.0.remove(&shard) else {
                return Err(StoreError::NotFound {
                    what: format!("shard {shard}"),
                });
            };
            let r = store.sync().and_then(|()| store.checkpoint());
            match r {
                Ok(()) => Ok((store.shared_refs(), store.take_drops())),
                Err(e) => {
                    shards.0.insert(shard, store);
                    Err(e)
                }
            }
        })??;
        let (counts, drops) = refs;
        let devs = self.devices.clone();
        let cache = self.meta_cache;
        let peers = self.peers.clone();
        let book = self.quotas.clone();
        self.set.call(reactor, move |core| -> Result<()> {
            let mut store = Store::open_shard(core, &devs, shard, cache)?;
            store.set_quotas(book);
            if let Some(p) = peers {
                store.set_peers(p);
                store.set_shared_refs(counts)?;
            }
            shards_of(core).0.insert(shard, store);
            Ok(())
        })??;
        self.map = self.map.with_owner(shard, reactor);
        if let Some(a) = self.routes.0.get(shard as usize) {
            a.store(reactor, Ordering::Release);
        }
        self.deliver(drops)?;
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
                None => Err(StoreError::NotOpen { shard }),
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
                None => Err(StoreError::NotOpen { shard }),
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

    /// Installs `f` as a poller on `reactor`, for a device the reactor
    /// polls (a NIC queue): called every loop iteration, it says whether it
    /// did work, or returns `None` when finished (it is then dropped). An
    /// adaptive reactor that parks is woken when `fd` (the device's
    /// descriptor, if it has one: a socket) becomes readable, or else every
    /// `wake` to poll it (a NIC raises no interrupt). `f` must keep `fd`
    /// open until it is dropped.
    pub fn reactor_poller(
        &self,
        reactor: usize,
        wake: Duration,
        fd: Option<std::os::fd::RawFd>,
        mut f: impl FnMut() -> Option<bool> + Send + 'static,
    ) -> Result<()> {
        self.set.call(reactor, move |core| -> Result<()> {
            // Watch first: a reactor that cannot watch the descriptor gets
            // no poller it would never wake for.
            if let Some(fd) = fd {
                core.core_ring()?.borrow_mut().watch(fd)?;
            }
            let timer = Arc::new(std::sync::Mutex::new(None));
            let t = timer.clone();
            core.add_poller(poller_fn("nic", move |core| match f() {
                Some(work) => PollStatus::from_work(work),
                None => {
                    if let Some(id) = t.lock().ok().and_then(|mut g| g.take()) {
                        core.cancel_timer(id);
                    }
                    // Before the poller (and the descriptor it holds) is
                    // dropped.
                    if let (Some(fd), Ok(ring)) = (fd, core.core_ring()) {
                        ring.borrow_mut().unwatch(fd);
                    }
                    PollStatus::Done
                }
            }));
            if fd.is_some() {
                return Ok(());
            }
            let id = core.add_periodic(wake, |_| {});
            if let Ok(mut g) = timer.lock() {
                *g = Some(id);
            };
            Ok(())
        })??;
        Ok(())
    }

    /// Reactors (cores) the engine runs.
    pub fn reactor_count(&self) -> usize {
        self.set.len()
    }

    /// Runs `f` on `reactor`'s thread, as a task among its others (from
    /// any thread; an error when its inbox is full or it has stopped).
    pub fn on_reactor(&self, reactor: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.set.send(reactor, move |_| f())?;
        Ok(())
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

    /// Creates a file system on every shard under one id, durably.
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
        // Acknowledged means durable: the file system and its root survive
        // a crash from here on.
        self.sync()?;
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

    /// Every device: health and errors as the worst shard sees them,
    /// capacity and free space summed over shards.
    pub fn devices(&self) -> Result<Vec<crate::store::DeviceReport>> {
        let per = self.broadcast(|s| Ok(s.device_report()))?;
        let mut out = per.first().cloned().unwrap_or_default();
        for shard in per.iter().skip(1) {
            for (o, d) in out.iter_mut().zip(shard) {
                o.healthy &= d.healthy;
                o.errors += d.errors;
                o.capacity += d.capacity;
                o.free += d.free;
            }
        }
        Ok(out)
    }

    /// Replaces a missing device with `name`, a blank device the engine was
    /// opened with (one that holds another engine's superblock needs
    /// `force`). It takes the slot of its place in the list the engine was
    /// opened with when that slot is missing, else the lowest missing slot:
    /// every shard zeroes its metadata areas on it and rebuilds the chunks
    /// it kept in that slot from the survivors (each shard's reactor is busy meanwhile); then it
    /// joins as a healthy member of every shard and its superblock is
    /// written last. A crash before that leaves it blank and the engine
    /// degraded, as before; running the command again starts over.
    pub fn replace_device(&self, name: &str, force: bool) -> Result<Replaced> {
        let dev = self
            .devices
            .iter()
            .flatten()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: format!("device {name} among those the engine was opened with"),
            })?;
        let report = self.devices()?;
        if let Some(r) = report.iter().find(|r| r.present && r.name == name) {
            return Err(StoreError::Invalid {
                reason: format!("device {name} is already member {} of the engine", r.index),
            });
        }
        // The slot of the device's place in the list the engine was opened
        // with, when that slot is missing; else the lowest missing slot.
        let at = self
            .devices
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.name() == name))
            .filter(|p| report.get(*p).is_some_and(|r| !r.present));
        let index = at
            .or_else(|| report.iter().find(|r| !r.present).map(|r| r.index))
            .ok_or_else(|| StoreError::Invalid {
                reason: "no device is missing: nothing to replace".into(),
            })?;
        let sb = self.call(|s| Ok(s.superblock().clone()))?;
        let d = dev.clone();
        let found = self
            .set
            .run_on(self.map.owner(0), move |core| Store::probe(core, &d))?
            .wait()??;
        match found {
            Some(other) if other.engine_uuid == sb.engine_uuid => {
                return Err(StoreError::Invalid {
                    reason: format!(
                        "device {name} holds this engine's superblock for slot {}: \
                         open the engine with it instead of replacing",
                        other.device_index
                    ),
                })
            }
            Some(_) if !force => {
                return Err(StoreError::AlreadyFormatted {
                    device: name.into(),
                })
            }
            _ => {}
        }
        let g = dev.geometry();
        if g.block_size != sb.block_size || g.blocks < sb.blocks {
            return Err(StoreError::Invalid {
                reason: format!(
                    "device {name} has {} blocks of {} bytes; the engine's devices have {} of {}",
                    g.blocks, g.block_size, sb.blocks, sb.block_size
                ),
            });
        }
        // Every shard rebuilds its chunks of the slot onto the device.
        let mut pending = Vec::new();
        for shard in 0..self.map.shards() {
            let (d, n) = (dev.clone(), name.to_string());
            pending.push(self.set.run_on(self.map.owner(shard), move |core| {
                let qp = d.queue_pair(core, &flint_dataplane::bdev::QpairOptions { depth: 64 })?;
                with_shard(core, shard, |s| s.adopt_rebuild(index, &n, qp))
            })?);
        }
        let rebuilt = match Self::join(pending) {
            Ok(n) => n.into_iter().sum(),
            Err(e) => {
                let _ = self.broadcast(|s| {
                    s.adopt_abort();
                    Ok(())
                });
                return Err(e);
            }
        };
        // Joins, with everything written so far durable first (so the
        // checkpoints that put each shard's state on it can be taken).
        self.sync()?;
        self.broadcast(move |s| s.adopt_join(index))?;
        let member = crate::format::Superblock {
            device_uuid: crate::store::new_uuid(),
            device_index: index as u32,
            ..sb
        };
        let d = dev.clone();
        self.set
            .run_on(self.map.owner(0), move |core| {
                Store::write_superblock(core, &d, &member)
            })?
            .wait()??;
        tracing::info!(device = name, index, rebuilt, "device replaced");
        Ok(Replaced {
            index,
            chunks: rebuilt,
        })
    }

    /// Repair counters summed over shards.
    pub fn repairs(&self) -> Result<crate::store::RepairStats> {
        let per = self.broadcast(|s| Ok(s.repairs()))?;
        let mut t = crate::store::RepairStats::default();
        for r in per {
            t.degraded_reads += r.degraded_reads;
            t.healed_sectors += r.healed_sectors;
        }
        Ok(t)
    }

    /// Scrubs every shard (in parallel); `done` is told after each.
    pub fn scrub(&self, mut done: impl FnMut(u32)) -> Result<crate::store::ScrubReport> {
        let tasks = (0..self.map.shards())
            .map(|s| self.shard_task(s, |st| st.scrub()))
            .collect::<Result<Vec<_>>>()?;
        let mut t = crate::store::ScrubReport::default();
        for (i, p) in tasks.into_iter().enumerate() {
            let r = p.wait()??;
            t.stripes += r.stripes;
            t.repaired_sectors += r.repaired_sectors;
            t.relocated_chunks += r.relocated_chunks;
            t.unprotected_chunks += r.unprotected_chunks;
            t.unrecoverable += r.unrecoverable;
            done(i as u32 + 1);
        }
        Ok(t)
    }

    /// Marks device slots `which` as retiring on every shard (and the
    /// others not): they stay members, but no new chunk goes to them and
    /// [`Engine::evacuate`] moves their chunks off (a node leaving).
    pub fn set_retiring(&self, which: std::collections::BTreeSet<usize>) -> Result<()> {
        let which = Arc::new(which);
        self.broadcast(move |s| {
            s.set_retiring(&which);
            Ok(())
        })?;
        Ok(())
    }

    /// One evacuation step on every shard: the chunks and metadata page
    /// chunks of lost (missing, failed or retiring) devices, up to `max_stripes`
    /// stripes per shard and the most damaged first (with `urgent_only`,
    /// only stripes left with no redundancy), rebuilt onto healthy devices
    /// outside their stripe and made durable. Each shard's reactor is busy
    /// for one step; the caller paces the steps so foreground I/O keeps its
    /// rate. Returns what the step did and what is left, summed.
    pub fn evacuate(
        &self,
        max_stripes: usize,
        urgent_only: bool,
    ) -> Result<crate::store::Evacuation> {
        let per = self.broadcast(move |s| s.evacuate(max_stripes, urgent_only))?;
        let mut t = crate::store::Evacuation::default();
        for r in per {
            t.relocated_chunks += r.relocated_chunks;
            t.relocated_pages += r.relocated_pages;
            t.remaining_stripes += r.remaining_stripes;
            t.unprotected_stripes += r.unprotected_stripes;
            t.remaining_pages += r.remaining_pages;
            t.stuck_chunks += r.stuck_chunks;
            t.unreadable_stripes += r.unreadable_stripes;
            t.unreadable_pages += r.unreadable_pages;
        }
        Ok(t)
    }

    /// Reactor counters, per reactor.
    pub fn reactor_stats(&self) -> Vec<flint_dataplane::stats::CoreStatsSnapshot> {
        self.set.stats()
    }

    /// Organizations (kept by shard 0).
    pub fn orgs(&self) -> Result<Vec<crate::meta::Org>> {
        self.call(|s| Ok(s.orgs()))
    }

    /// Creates an organization with a fresh key, durably.
    pub fn org_create(&self, name: &str) -> Result<crate::meta::Org> {
        let name = name.to_string();
        self.call(move |s| {
            let o = s.org_create(&name)?;
            s.sync()?;
            Ok(o)
        })
    }

    /// Creates an organization with a given key, durably (a key several
    /// engines share: the cluster's organization).
    pub fn org_create_keyed(&self, name: &str, key: [u8; 32]) -> Result<crate::meta::Org> {
        let name = name.to_string();
        self.call(move |s| {
            let o = s.org_create_keyed(&name, key)?;
            s.sync()?;
            Ok(o)
        })
    }

    /// Creates a filesystem group of organization `org` (0: the engine's
    /// own file systems), durably.
    pub fn group_create(&self, name: &str, org: crate::meta::OrgId) -> Result<Group> {
        let name = name.to_string();
        self.call(move |s| {
            let g = s.group_create(&name, org)?;
            s.sync()?;
            Ok(g)
        })
    }

    /// Deletes an empty filesystem group, durably.
    pub fn group_delete(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |s| {
            let g = s
                .groups()
                .into_iter()
                .find(|g| g.name == name)
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("filesystem group {name}"),
                })?;
            s.group_delete(g.id)?;
            s.sync()
        })
    }

    /// Filesystem groups.
    pub fn groups(&self) -> Result<Vec<Group>> {
        self.call(|s| Ok(s.groups()))
    }

    /// Puts a file system in a group (`None`: in none), durably.
    pub fn fs_set_group(&self, fs: FsId, group: Option<&str>) -> Result<()> {
        let group = group.map(str::to_string);
        self.call(move |s| {
            let id = match &group {
                None => 0,
                Some(n) => {
                    s.groups()
                        .into_iter()
                        .find(|g| &g.name == n)
                        .ok_or_else(|| StoreError::NotFound {
                            what: format!("filesystem group {n}"),
                        })?
                        .id
                }
            };
            s.fs_set_group(fs, id)?;
            s.sync()
        })
    }

    /// The group a file system is in.
    pub fn fs_group(&self, fs: FsId) -> Result<Option<Group>> {
        self.call(move |s| {
            Ok(s.fs_group(fs)
                .and_then(|g| s.groups().into_iter().find(|x| x.id == g)))
        })
    }

    /// The organization owning a file system.
    pub fn fs_owner(&self, fs: FsId) -> Result<Option<crate::meta::OrgId>> {
        self.call(move |s| Ok(s.fs_owner(fs)))
    }

    /// Gives a file system to an organization, durably.
    pub fn fs_set_owner(&self, fs: FsId, org: crate::meta::OrgId) -> Result<()> {
        self.call(move |s| {
            s.fs_set_owner(fs, org)?;
            s.sync()
        })
    }

    /// Deletes a file system and every file in it, on every shard, durably.
    /// Shard 0 first: a file system is what shard 0's catalog says, so one
    /// a crash cut short is gone, and opening the engine drops what other
    /// shards still hold of it ([`Engine::drop_deleted_fs`]).
    pub fn fs_delete(&self, fs: FsId) -> Result<()> {
        let _alone = self.names_alone();
        self.call(move |s| {
            s.fs_delete(fs)?;
            s.sync()
        })?;
        self.broadcast(move |s| match s.fs_delete(fs) {
            Err(StoreError::NotFound { .. }) => Ok(()),
            r => r,
        })?;
        self.sync()
    }

    /// Drops from every shard the file systems shard 0 no longer holds (a
    /// deletion a crash cut short).
    fn drop_deleted_fs(&self) -> Result<()> {
        let known: Vec<FsId> = self
            .call(|s| Ok(s.fs_list()))?
            .iter()
            .map(|(f, _)| f.id)
            .collect();
        let known = Arc::new(known);
        let dropped = self.broadcast(move |s| {
            let gone: Vec<FsId> = s
                .fs_list()
                .iter()
                .map(|(f, _)| f.id)
                .filter(|id| !known.contains(id))
                .collect();
            for &fs in &gone {
                s.fs_delete(fs)?;
            }
            Ok(gone)
        })?;
        for fs in dropped.into_iter().flatten() {
            tracing::warn!(
                fs,
                "dropped what a shard held of a file system whose deletion a crash cut short"
            );
        }
        Ok(())
    }

    /// Sets a file system's capacity, on every shard, durably.
    pub fn fs_resize(&self, fs: FsId, capacity: u64) -> Result<()> {
        self.broadcast(move |s| s.fs_resize(fs, capacity))?;
        self.sync()
    }

    /// A file system by name.
    pub fn fs_by_name(&self, name: &str) -> Result<Option<FsId>> {
        let name = name.to_string();
        self.call(move |s| Ok(s.fs_by_name(&name)))
    }

    /// Writes `data` at `offset` of a file. Pieces in ranges of other
    /// shards are written there, in parallel; the home shard then records
    /// the new size.
    pub fn write(&self, ino: Ino, offset: u64, data: Vec<u8>) -> Result<()> {
        self.writable(ino)?;
        let home = self.map.shard_of_ino(ino);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| StoreError::Invalid {
                reason: "offset + length overflows".into(),
            })?;
        let pieces = self.pieces(ino, offset, data.len() as u64);
        if self.map.shards() == 1 {
            return self.durably(home, ino, move |s| s.write(ino, offset, &data));
        }
        // Writes assembled from several shards are ordered per block from
        // reading the size on (`order.rs`).
        let b = BLOCK as u64;
        let held = self
            .blocks
            .lock(ino, offset / b, end.saturating_sub(1).max(offset) / b);
        let (fs, size, reduction) = self.call_shard(home, move |s| s.check_extend(ino, end))?;
        if reduction {
            self.write_shared(ino, fs, size, offset, &data)?;
            drop(held);
            return self.settle(fs);
        }
        drop(held);
        if pieces.iter().all(|p| p.0 == home) {
            return self.durably(home, ino, move |s| s.write(ino, offset, &data));
        }
        let data = Arc::new(data);
        let tasks = pieces
            .into_iter()
            .map(|(shard, off, len)| {
                let data = data.clone();
                self.shard_task(shard, move |s| {
                    let at = (off - offset) as usize;
                    s.write_part(ino, fs, off, &data[at..at + len as usize])?;
                    s.receipt(ino)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut receipts = Self::join(tasks)?;
        receipts.push(self.call_shard(home, move |s| {
            s.extend(ino, end)?;
            s.receipt(ino)
        })?);
        self.redeem(receipts)
    }

    /// Reads up to `len` bytes at `offset` of a file, from every shard that
    /// holds a piece of it, in parallel.
    pub fn read(&self, ino: Ino, offset: u64, len: usize) -> Result<Vec<u8>> {
        let home = self.map.shard_of_ino(ino);
        if self.map.shards() == 1 {
            return self.call_shard(home, move |s| {
                s.viewing(ino, |s, ino| s.read(ino, offset, len))
            });
        }
        // A read within one range travels by itself ([`Engine::read_async`]:
        // size and bytes at once); a larger one learns the size first, so it
        // never fans out past the end.
        let want = offset.saturating_add(len as u64);
        if len > 0 && offset / RANGE_BYTES == (want - 1) / RANGE_BYTES {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.read_async(ino, offset, len, move |r| {
                let _ = tx.send(r);
            });
            return rx.recv().map_err(|_| StoreError::Stopping)?;
        }
        let size = self.stat(ino)?.size;
        let end = size.min(want);
        if offset >= end {
            return Ok(Vec::new());
        }
        let tasks = self
            .pieces(ino, offset, end - offset)
            .into_iter()
            .map(|(shard, off, len)| {
                self.shard_task(shard, move |s| {
                    s.viewing(ino, |s, ino| s.read_part_mapped(ino, off, len as usize))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let pieces = Self::join(tasks)?;
        let n = (end - offset) as usize;
        let mut out = Vec::with_capacity(n);
        let mut remote = Vec::new();
        for (bytes, rem) in pieces {
            let base = out.len();
            remote.extend(rem.into_iter().map(|r| RemoteRead {
                at: r.at + base,
                ..r
            }));
            out.extend_from_slice(&bytes);
        }
        // Nothing past the file's end (a piece reads its own extent).
        out.truncate(n);
        remote.retain(|r| r.at < n);
        for r in &mut remote {
            r.len = r.len.min(n - r.at);
        }
        self.fill_remote(&mut out, remote)?;
        Ok(out)
    }

    /// Reads like [`Engine::read`] without blocking the caller: the read
    /// travels as tasks from reactor to reactor (the home for the size and
    /// the range shard for the bytes at once, then the owners of shared
    /// blocks) and `done` runs on the reactor that finishes it. Reads that
    /// span ranges are refused (`Invalid`): use [`Engine::read`].
    pub fn read_async(
        &self,
        ino: Ino,
        offset: u64,
        len: usize,
        done: impl FnOnce(Result<Vec<u8>>) + Send + 'static,
    ) {
        let home = self.map.shard_of_ino(ino);
        let state = Arc::new(std::sync::Mutex::new(AsyncRead {
            done: Some(Box::new(done)),
            size: None,
            piece: None,
            out: Vec::new(),
            fills: 0,
        }));
        let want = offset.saturating_add(len as u64);
        if len == 0 || offset / RANGE_BYTES != (want - 1) / RANGE_BYTES {
            finish_read(
                &state,
                Err(StoreError::Invalid {
                    reason: "an asynchronous read must lie within one 1 MiB range".into(),
                }),
            );
            return;
        }
        let routes = self.routes.clone();
        if self.map.shards() == 1 {
            let st = state.clone();
            let sent = self.set.send(self.map.owner(home), move |core| {
                let r = with_shard(core, home, |s| {
                    s.viewing(ino, |s, ino| s.read(ino, offset, len))
                });
                finish_read(&st, r);
            });
            if let Err(e) = sent {
                finish_read(&state, Err(e.into()));
            }
            return;
        }
        let range = self.map.shard_of_range(ino, offset / RANGE_BYTES);
        let (st, r2) = (state.clone(), routes.clone());
        let a = self.set.send(self.map.owner(home), move |core| {
            match with_shard(core, home, |s| s.viewing(ino, |s, ino| s.stat(ino))) {
                Ok(stat) => {
                    if let Ok(mut g) = st.lock() {
                        g.size = Some(stat.size);
                    }
                    continue_read(core, &st, &r2, offset, want);
                }
                Err(e) => finish_read(&st, Err(e)),
            }
        });
        let (st, r2) = (state.clone(), routes);
        let b = self.set.send(self.map.owner(range), move |core| {
            match with_shard(core, range, |s| {
                s.viewing(ino, |s, ino| s.read_part_mapped(ino, offset, len))
            }) {
                Ok(p) => {
                    if let Ok(mut g) = st.lock() {
                        g.piece = Some(p);
                    }
                    continue_read(core, &st, &r2, offset, want);
                }
                Err(e) => finish_read(&st, Err(e)),
            }
        });
        if let Err(e) = a.and(b) {
            finish_read(&state, Err(e.into()));
        }
    }

    /// Copies blocks kept in shared pools into a read's output, fetching
    /// them from their owners in parallel.
    fn fill_remote(&self, out: &mut [u8], remote: Vec<RemoteRead>) -> Result<()> {
        let mut per: HashMap<(u32, FsId), Vec<RemoteRead>> = HashMap::new();
        for r in remote {
            per.entry((r.owner, r.fs)).or_default().push(r);
        }
        let mut tasks = Vec::new();
        let mut wanted = Vec::new();
        for ((owner, fs), reads) in per {
            let keys: Vec<u128> = reads.iter().map(|r| r.key).collect();
            tasks.push(self.shard_task(owner, move |s| s.read_shared(fs, &keys))?);
            wanted.push(reads);
        }
        for (blocks, reads) in Self::join(tasks)?.into_iter().zip(wanted) {
            for (r, b) in reads.iter().zip(blocks.chunks(BLOCK)) {
                out[r.at..r.at + r.len].copy_from_slice(&b[r.skip..r.skip + r.len]);
            }
        }
        Ok(())
    }

    /// Writes into a file system that reduces data, on several shards:
    /// whole blocks (edges read first) go to the shared pools of their
    /// fingerprints' owners, then the range shards map them.
    fn write_shared(&self, ino: Ino, fs: FsId, size: u64, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        let b = BLOCK as u64;
        let first = offset / b * b;
        let last = end.div_ceil(b) * b;
        let mut buf = vec![0u8; (last - first) as usize];
        if offset > first && first < size {
            let old = self.read(ino, first, BLOCK)?;
            buf[..old.len()].copy_from_slice(&old);
        }
        if end < last && last - b < size && (last - b > first || offset == first) {
            let old = self.read(ino, last - b, BLOCK)?;
            let at = buf.len() - BLOCK;
            buf[at..at + old.len()].copy_from_slice(&old);
        }
        buf[(offset - first) as usize..(end - first) as usize].copy_from_slice(data);
        self.put_blocks(ino, fs, first, &buf, end)
    }

    /// Puts whole blocks starting at `start` of a file into the shared
    /// pools and maps them on the file's range shards; the file then has at
    /// least `size` bytes.
    fn put_blocks(&self, ino: Ino, fs: FsId, start: u64, buf: &[u8], size: u64) -> Result<()> {
        let home = self.map.shard_of_ino(ino);
        let (refs, needs) = self.put_owners(fs, buf)?;
        // Phase 2: the range shards map them (journaled once the owners
        // have journaled the blocks).
        let mut per_range: HashMap<u32, (Vec<(u64, BlockRef)>, u64)> = HashMap::new();
        for (i, r) in refs.into_iter().enumerate() {
            let pos = start + (i * BLOCK) as u64;
            let shard = self.map.shard_of_range(ino, pos / RANGE_BYTES);
            let e = per_range.entry(shard).or_default();
            e.0.push((pos / BLOCK as u64, r));
            e.1 = e.1.max(size.min(pos + BLOCK as u64));
        }
        let home_mapped = per_range.contains_key(&home);
        let needs = Arc::new(needs);
        let tasks = per_range
            .into_iter()
            .map(|(shard, (blocks, piece_end))| {
                let needs = needs.clone();
                let sz = if shard == home { size } else { piece_end };
                self.shard_task(shard, move |s| s.map_shared(ino, fs, sz, blocks, &needs))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::join(tasks)?;
        if !home_mapped {
            self.call_shard(home, move |s| s.extend(ino, size))?;
        }
        Ok(())
    }

    /// Phase 1 of a shared write: every block to the shared pool of its
    /// fingerprint's owner. Returns each block's reference and, per owner,
    /// the record a map of them must wait for.
    fn put_owners(&self, fs: FsId, buf: &[u8]) -> Result<(Vec<BlockRef>, Vec<Need>)> {
        let shards = self.map.shards() as usize;
        // Phase 1: every block to the owner of its fingerprint.
        let mut per_owner: Vec<(Vec<usize>, Vec<u8>)> = vec![(Vec::new(), Vec::new()); shards];
        for (i, block) in buf.chunks(BLOCK).enumerate() {
            let owner = self.map.shard_of_fp(Xxh3.fingerprint(block)) as usize;
            per_owner[owner].0.push(i);
            per_owner[owner].1.extend_from_slice(block);
        }
        let mut tasks = Vec::new();
        let mut owners = Vec::new();
        for (owner, (idxs, bytes)) in per_owner.into_iter().enumerate() {
            if idxs.is_empty() {
                continue;
            }
            tasks.push(self.shard_task(owner as u32, move |s| s.put_shared(fs, &bytes))?);
            owners.push((owner as u32, idxs));
        }
        let mut refs = vec![BlockRef::remote(0, 0); buf.len() / BLOCK];
        let mut needs = Vec::new();
        for ((keys, need), (owner, idxs)) in Self::join(tasks)?.into_iter().zip(owners) {
            for (i, key) in idxs.into_iter().zip(keys) {
                refs[i] = BlockRef::remote(owner, key);
            }
            needs.push((owner, need));
        }
        Ok((refs, needs))
    }

    /// Zeroes the bytes past `size` (the file's size) of the block
    /// straddling it, rewriting the block, so a later extension of the file
    /// reads zeros there.
    fn zero_tail(&self, ino: Ino, size: u64) -> Result<()> {
        let b = BLOCK as u64;
        let bstart = size / b * b;
        if size == bstart {
            return Ok(());
        }
        let home = self.map.shard_of_ino(ino);
        let _held = self.blocks.lock(ino, bstart / b, bstart / b);
        let (fs, _, _) = self.call_shard(home, move |s| s.check_extend(ino, 0))?;
        let mut block = self.read(ino, bstart, (size - bstart) as usize)?;
        block.resize(BLOCK, 0);
        self.put_blocks(ino, fs, bstart, &block, size)
    }

    /// Recounts the references to every shard's shared blocks from all
    /// block maps (on open): blocks nothing refers to leave the pools.
    fn recount_shared(&self) -> Result<()> {
        let mut per: Vec<HashMap<(FsId, u128), u64>> =
            vec![HashMap::new(); self.map.shards() as usize];
        for refs in self.broadcast(|s| s.remote_refs())? {
            for ((owner, fs, key), n) in refs {
                if let Some(m) = per.get_mut(owner as usize) {
                    *m.entry((fs, key)).or_default() += n;
                }
            }
        }
        let tasks = per
            .into_iter()
            .enumerate()
            .map(|(shard, refs)| self.shard_task(shard as u32, move |s| s.set_shared_refs(refs)))
            .collect::<Result<Vec<_>>>()?;
        let missing: u64 = Self::join(tasks)?.into_iter().sum();
        if missing > 0 {
            tracing::error!(
                missing,
                "block maps refer to shared blocks their owners lack"
            );
        }
        Ok(())
    }

    /// Tells owners about dropped references to their shared blocks.
    fn deliver(&self, drops: Vec<SharedDrop>) -> Result<()> {
        let tasks = by_owner(drops)
            .into_iter()
            .map(|(owner, d)| self.shard_task(owner, move |s| s.drop_shared(&d)))
            .collect::<Result<Vec<_>>>()?;
        Self::join(tasks).map(|_| ())
    }

    /// Sets a file's size, on its home shard and every shard holding a
    /// piece of it.
    pub fn truncate(&self, ino: Ino, size: u64) -> Result<()> {
        self.writable(ino)?;
        let home = self.map.shard_of_ino(ino);
        let b = BLOCK as u64;
        if self.map.shards() > 1 && !size.is_multiple_of(b) {
            let (fs, cur, reduction) = self.call_shard(home, move |s| s.check_extend(ino, 0))?;
            if reduction && size < cur {
                // The block straddling the new end keeps only the bytes
                // before it: rewritten here (shards cannot rewrite shared
                // blocks) and mapped in the same journal as the cut, so a
                // crash leaves the file either whole or cut.
                let bstart = size / b * b;
                let mut block = self.read(ino, bstart, (size - bstart) as usize)?;
                block.resize(BLOCK, 0);
                let (refs, needs) = self.put_owners(fs, &block)?;
                let at = vec![(bstart / b, refs[0])];
                let range = self.map.shard_of_range(ino, bstart / RANGE_BYTES);
                self.call_shard(range, move |s| {
                    s.map_shared(ino, fs, 0, at, &needs)?;
                    s.truncate(ino, size)
                })?;
            }
        }
        if self.map.shards() == 1 {
            return self.durably(home, ino, move |s| s.truncate(ino, size));
        }
        let fs = self.call_shard(home, move |s| {
            s.truncate(ino, size)?;
            s.fs_of_file(ino)
        })?;
        self.broadcast(move |s| s.truncate_part(ino, size))?;
        self.settle(fs)
    }

    /// Makes everything written so far durable, on every shard: with
    /// shared blocks, in rounds until no record written before the call
    /// waits for another shard's journal; then tells owners about the
    /// references those records dropped.
    pub fn sync(&self) -> Result<()> {
        if self.map.shards() == 1 {
            return self.broadcast(|s| s.sync()).map(|_| ());
        }
        self.commit_every(true)?;
        let drops = self.broadcast(|s| Ok(s.take_drops()))?.concat();
        self.deliver(drops)
    }

    /// Space figures summed over the shards.
    pub fn space(&self) -> Result<SpaceStats> {
        let parts = self.broadcast(|s| s.space())?;
        Ok(SpaceStats::sum(&parts))
    }

    /// Syncs and checkpoints every shard, then stops the reactors.
    pub fn close(self) -> Result<()> {
        let r = self.sync().and_then(|()| {
            self.broadcast(|s| {
                s.sync()?;
                s.checkpoint()
            })
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
