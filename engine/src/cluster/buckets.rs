//! The buckets a node serves: each shard of a cluster with buckets is an
//! engine of its own whose devices are its slices on every node of its
//! group (one chunk of a stripe per node), served by the node the map
//! gives it to on a data-protocol port of its own, published in etcd under
//! `buckets/<shard>` with the node's lease.
//!
//! The host opens a bucket when the map gives it to this node — with the
//! slices it can reach, so a bucket whose node died opens degraded and
//! recovers its journal as after a crash — and closes it (checkpointed)
//! before the node releases it in a handoff. Every slice call carries the
//! map epoch the bucket was opened at, so once a newer owner has opened the
//! bucket its predecessor can write nothing more to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use flint_dataplane::bdev::BlockDevice;
use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::reactor::ReactorConfig;
use serde_json::json;

use super::agent::ClusterView;
use super::etcd::Etcd;
use super::keys::{ClusterDoc, Keys};
use super::kv::{Kv, Op, Txn};
use super::map::{ClusterMap, Membership, NodeId};
use super::rebuild::{Rebuild, RebuildPolicy};
use super::remote::{RemoteDevice, RemoteSpec};
use crate::engine::Engine;
use crate::net::auth::Key;
use crate::net::server::{Server, ServerConfig};
use crate::store::{StoreConfig, StoreError};

/// The organization of node-to-node sessions.
pub const CLUSTER_ORG: &str = "_cluster";
/// The organization and file system every bucket has.
pub const BUCKET_FS: &str = "default";

/// What the host needs to know.
#[derive(Clone)]
pub struct HostConfig {
    /// This node.
    pub node: NodeId,
    /// The cluster's keys in etcd.
    pub keys: Keys,
    /// etcd members.
    pub etcd: Vec<String>,
    /// The cluster's key.
    pub key: Key,
    /// Each slice's size.
    pub slice_size: u64,
    /// The address buckets' ports bind to.
    pub ip: IpAddr,
    /// How lost slots are rebuilt onto the survivors.
    pub rebuild: RebuildPolicy,
}

struct Bucket {
    engine: Arc<Engine>,
    server: Server,
    epoch: Arc<AtomicU64>,
    /// Slots with a blank slice of the next generation, to rebuild onto.
    resync: Vec<(usize, String)>,
    opened: std::time::Instant,
    /// The rebuild of lost slots onto the other slots.
    rebuild: Rebuild,
    /// The group it was opened on.
    group: Vec<NodeId>,
    /// Slots being emptied because their node leaves.
    retiring: BTreeSet<usize>,
}

/// A bucket's slots as etcd keeps them (no lease: it outlives owners).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketState {
    /// Each slot's slice generation (a rebuilt slot's slice is a new one).
    #[serde(default)]
    pub gens: Vec<u32>,
    /// Slots whose slice missed writes: kept out of every open until
    /// rebuilt.
    #[serde(default)]
    pub stale: BTreeSet<usize>,
    /// Stale slots the bucket's data has been rebuilt without: every
    /// stripe has its k+m chunks on the other slots, so they do not count
    /// against the m slots a bucket may open without.
    #[serde(default)]
    pub evacuated: BTreeSet<usize>,
}

impl BucketState {
    fn gen(&self, slot: usize) -> u32 {
        self.gens.get(slot).copied().unwrap_or(0)
    }
}

/// Reads a bucket's state and its key's mod revision (0: none yet).
fn read_state(etcd: &mut Etcd, keys: &Keys, shard: u32) -> Result<(BucketState, i64), String> {
    let r = etcd
        .range(&keys.bucket_state(shard), false)
        .map_err(|e| e.to_string())?;
    match r.kvs.first() {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map(|st| (st, kv.mod_revision))
            .map_err(|e| format!("bucket {shard}: unreadable state: {e}")),
        None => Ok((BucketState::default(), 0)),
    }
}

/// Writes a bucket's state if nobody changed it since `rev`.
fn write_state(
    etcd: &mut Etcd,
    keys: &Keys,
    shard: u32,
    st: &BucketState,
    rev: i64,
) -> Result<i64, String> {
    let key = keys.bucket_state(shard);
    let txn = Txn {
        compare: vec![super::kv::Compare {
            key: key.clone(),
            target: super::kv::Target::Mod(rev),
        }],
        success: vec![Op::Put {
            key,
            value: serde_json::to_vec(st).expect("state serializes"),
            lease: 0,
        }],
        failure: vec![],
    };
    let r = etcd.txn(&txn).map_err(|e| e.to_string())?;
    if !r.succeeded {
        return Err(format!("bucket {shard}: its state changed meanwhile"));
    }
    Ok(r.revision)
}

/// The running host.
pub struct BucketHost {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The slice of `shard`'s slot `slot`, generation `gen`.
pub fn slice_name(shard: u32, slot: usize, gen: u32) -> String {
    format!("s{shard}-d{slot}-g{gen}")
}

/// Which bucket holds file `name` of the cluster's file system.
pub fn bucket_of(name: &str, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(name.as_bytes()) % u64::from(shards.max(1))) as u32
}

impl BucketHost {
    /// Starts the host's thread: it follows `view`'s map.
    pub fn start(cfg: HostConfig, view: Arc<ClusterView>) -> std::io::Result<BucketHost> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flint-buckets".into())
            .spawn(move || run(&cfg, &view, &s))?;
        Ok(BucketHost {
            stop,
            thread: Some(thread),
        })
    }

    /// Closes every bucket (checkpointed) and stops.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BucketHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(cfg: &HostConfig, view: &ClusterView, stop: &AtomicBool) {
    let mut etcd = Etcd::new(&cfg.etcd, Duration::from_secs(1));
    let mut open: BTreeMap<u32, Bucket> = BTreeMap::new();
    let mut doc: Option<ClusterDoc> = None;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if doc.is_none() {
            doc = etcd.range(&cfg.keys.config(), false).ok().and_then(|r| {
                r.kvs
                    .first()
                    .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            });
        }
        let (Some(d), Some(map)) = (doc, view.map()) else {
            continue;
        };
        if d.k == 0 {
            continue;
        }
        let serving = view.fence.open_for_ms() > 0;
        // Close what is no longer ours (a handoff, or the fence closed).
        let gone: Vec<u32> = open
            .keys()
            .copied()
            .filter(|s| !serving || !map.serves(cfg.node, *s))
            .collect();
        for s in gone {
            if let Some(b) = open.remove(&s) {
                close(&mut etcd, cfg, s, b);
            }
        }
        if let Ok(mut h) = view.holding.lock() {
            *h = open.keys().copied().collect::<BTreeSet<u32>>();
        }
        if !serving {
            continue;
        }
        let mut reopen = Vec::new();
        for (s, b) in open.iter_mut() {
            b.epoch.fetch_max(map.epoch, Ordering::AcqRel);
            match look_after(&mut etcd, cfg, &map, *s, b) {
                Ok(true) => reopen.push(*s),
                Ok(false) => {}
                Err(e) => tracing::warn!("bucket {s}: {e}"),
            }
        }
        // A bucket with a stale slot whose node is back is opened again,
        // with a blank slice there to rebuild onto.
        for s in reopen {
            if let Some(b) = open.remove(&s) {
                tracing::info!("bucket {s}: reopening to rebuild a stale slot");
                close(&mut etcd, cfg, s, b);
            }
        }
        for s in 0..map.shards.len() as u32 {
            if open.contains_key(&s) {
                continue;
            }
            if !map.serves(cfg.node, s) {
                continue;
            }
            match open_bucket(cfg, &mut etcd, &map, s, &d, view) {
                Ok(b) => {
                    let addr = b.server.addr();
                    let v = json!({"node": cfg.node, "addr": addr.to_string(), "epoch": map.epoch});
                    let lease = view.lease();
                    let put = Txn {
                        success: vec![Op::Put {
                            key: cfg.keys.bucket(s),
                            value: v.to_string().into_bytes(),
                            lease,
                        }],
                        ..Txn::default()
                    };
                    match etcd.txn(&put) {
                        Ok(_) => {
                            tracing::info!(
                                "bucket {s}: serving on udp://{addr} at epoch {}",
                                map.epoch
                            );
                            open.insert(s, b);
                        }
                        Err(e) => {
                            tracing::warn!("bucket {s}: cannot publish its address: {e}");
                            close(&mut etcd, cfg, s, b);
                        }
                    }
                }
                Err(e) => tracing::warn!("bucket {s}: cannot open it yet: {e}"),
            }
        }
        if let Ok(mut h) = view.holding.lock() {
            *h = open.keys().copied().collect::<BTreeSet<u32>>();
        }
        if let Ok(mut h) = view.buckets.lock() {
            *h = open
                .iter()
                .map(|(s, b)| (*s, b.rebuild.health(b.epoch.load(Ordering::Acquire))))
                .collect();
        }
    }
    if let Ok(mut h) = view.buckets.lock() {
        h.clear();
    }
    for (s, b) in std::mem::take(&mut open) {
        close(&mut etcd, cfg, s, b);
    }
    if let Ok(mut h) = view.holding.lock() {
        h.clear();
    }
}

/// Closes a bucket (checkpointed). Its slots whose slice failed are
/// recorded stale first, so the next owner never opens with a slice that
/// missed writes.
fn close(etcd: &mut Etcd, cfg: &HostConfig, shard: u32, b: Bucket) {
    b.server.stop();
    if let Err(e) = b.engine.sync() {
        tracing::warn!("bucket {shard}: sync before closing: {e}");
    }
    if let Err(e) = record_failed(etcd, cfg, shard, &b.engine) {
        tracing::error!(
            "bucket {shard}: closing without knowing which slices missed writes ({e}); \
             the next owner may open with a stale slice"
        );
    }
    match Arc::try_unwrap(b.engine) {
        Ok(e) => {
            if let Err(e) = e.close() {
                tracing::warn!("bucket {shard}: closing: {e}");
            }
        }
        Err(_) => tracing::warn!("bucket {shard}: still in use at close"),
    }
    tracing::info!("bucket {shard}: closed");
}

/// The slots whose slice failed (present, not healthy).
fn failed_slots(engine: &Engine) -> Result<BTreeSet<usize>, String> {
    Ok(engine
        .devices()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|d| d.present && !d.healthy)
        .map(|d| d.index)
        .collect())
}

/// Records the slots whose slice failed while serving as stale (true when
/// it had to).
fn record_failed(
    etcd: &mut Etcd,
    cfg: &HostConfig,
    shard: u32,
    engine: &Engine,
) -> Result<bool, String> {
    let failed = failed_slots(engine)?;
    let (mut st, rev) = read_state(etcd, &cfg.keys, shard)?;
    if failed.is_subset(&st.stale) {
        return Ok(false);
    }
    st.stale.extend(failed.iter().copied());
    write_state(etcd, &cfg.keys, shard, &st, rev)?;
    tracing::warn!("bucket {shard}: slots {failed:?} failed; kept out until rebuilt");
    Ok(true)
}

/// Marks slots whose device failed while serving as stale, and rebuilds
/// stale slots onto the blank slices opened for them; true when a stale
/// slot's node is back and the bucket must be opened again to rebuild it.
fn look_after(
    etcd: &mut Etcd,
    cfg: &HostConfig,
    map: &ClusterMap,
    shard: u32,
    b: &mut Bucket,
) -> Result<bool, String> {
    // Its group changed (a leaving node's slot vacated, or a vacant slot
    // given to a node): opened again on the new group's slices.
    if map.shards[shard as usize].group != b.group {
        tracing::info!(
            "bucket {shard}: its group is now {:?} (was {:?}); reopening",
            map.shards[shard as usize].group,
            b.group
        );
        return Ok(true);
    }
    if record_failed(etcd, cfg, shard, &b.engine)? {
        return Ok(false);
    }
    let devs = b.engine.devices().map_err(|e| e.to_string())?;
    let (st, rev) = read_state(etcd, &cfg.keys, shard)?;
    let Some((slot, name)) = b.resync.pop() else {
        let group = &map.shards[shard as usize].group;
        rebuild_lost(etcd, cfg, map, shard, b, &devs, (st, rev))?;
        let (st, _) = read_state(etcd, &cfg.keys, shard)?;
        let back = st.stale.iter().any(|slot| {
            group
                .get(*slot)
                .and_then(|n| map.nodes.get(n))
                .is_some_and(|n| n.state != super::map::NodeState::Down)
        });
        // Not more often than every few seconds (the node may be back in
        // the map before its slices answer).
        return Ok(back && b.opened.elapsed() > Duration::from_secs(3));
    };
    let t0 = std::time::Instant::now();
    let done = b
        .engine
        .replace_device(&name, false)
        .map_err(|e| format!("rebuilding slot {slot} onto {name}: {e}"))?;
    let (mut st, rev) = read_state(etcd, &cfg.keys, shard)?;
    let width = st.gens.len().max(slot + 1);
    st.gens.resize(width, 0);
    st.gens[slot] += 1;
    st.stale.remove(&slot);
    st.evacuated.remove(&slot);
    write_state(etcd, &cfg.keys, shard, &st, rev)?;
    tracing::info!(
        "bucket {shard}: slot {slot} rebuilt onto {name}: {} chunks in {:.1} s",
        done.chunks,
        t0.elapsed().as_secs_f64()
    );
    Ok(false)
}

/// Paces the rebuild of the bucket's lost slots — slices missing or
/// failed whose node is down (a live node's slot is rebuilt in place, from
/// a new slice there) — onto the other slots, and records the slots it
/// finished without.
fn rebuild_lost(
    etcd: &mut Etcd,
    cfg: &HostConfig,
    map: &ClusterMap,
    shard: u32,
    b: &mut Bucket,
    devs: &[crate::store::DeviceReport],
    (st, rev): (BucketState, i64),
) -> Result<(), String> {
    let group = &map.shards[shard as usize].group;
    let down = |slot: usize| {
        group
            .get(slot)
            .and_then(|n| map.nodes.get(n))
            .is_none_or(|n| n.state == super::map::NodeState::Down)
    };
    // A draining node's slots are emptied while it still serves them.
    let leaving: BTreeSet<usize> = group
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            map.nodes
                .get(n)
                .is_some_and(|x| x.state == super::map::NodeState::Draining)
        })
        .map(|(slot, _)| slot)
        .collect();
    if leaving != b.retiring {
        b.engine
            .set_retiring(leaving.clone())
            .map_err(|e| e.to_string())?;
        if !leaving.is_empty() {
            tracing::info!("bucket {shard}: emptying slots {leaving:?} (their node leaves)");
        }
        b.retiring = leaving.clone();
    }
    let lost: BTreeSet<usize> = devs
        .iter()
        .filter(|d| (!d.present || !d.healthy) && down(d.index))
        .map(|d| d.index)
        .chain(leaving.iter().copied())
        .collect();
    // Planned maintenance of every lost slot's node: nothing is rebuilt.
    let mut maintenance = !lost.is_empty();
    for slot in &lost {
        let Some(n) = group.get(*slot) else {
            maintenance = false;
            break;
        };
        let r = etcd
            .range(&cfg.keys.member(*n), false)
            .map_err(|e| e.to_string())?;
        let m: Option<Membership> = r
            .kvs
            .first()
            .and_then(|kv| serde_json::from_slice(&kv.value).ok());
        if m != Some(Membership::Maint) {
            maintenance = false;
            break;
        }
    }
    if b.rebuild.tick(&b.engine, &lost, maintenance)? && !lost.is_subset(&st.evacuated) {
        let mut st = st;
        st.evacuated.extend(lost.iter().copied());
        write_state(etcd, &cfg.keys, shard, &st, rev)?;
        let h = b.rebuild.health(0);
        tracing::info!(
            "bucket {shard}: rebuilt without slots {lost:?}: {} chunks in {:.1} s ({:.1} s of \
             steps); every stripe has its k+m chunks again",
            h.relocated_chunks,
            h.lost_for_s,
            h.busy_s
        );
    }
    Ok(())
}

fn open_bucket(
    cfg: &HostConfig,
    etcd: &mut Etcd,
    map: &ClusterMap,
    shard: u32,
    doc: &ClusterDoc,
    view: &ClusterView,
) -> Result<Bucket, String> {
    let group = &map.shards[shard as usize].group;
    if group.is_empty() {
        return Err("the map gives it no group".into());
    }
    let (st, rev) = read_state(etcd, &cfg.keys, shard)?;
    let epoch = Arc::new(AtomicU64::new(map.epoch));
    let remote = |slot: usize, n: NodeId, gen: u32| -> Option<Arc<dyn BlockDevice>> {
        let up = map
            .nodes
            .get(&n)
            .is_some_and(|x| x.state != super::map::NodeState::Down);
        let addr: SocketAddr = map.nodes.get(&n)?.data_addr.parse().ok()?;
        if !up {
            return None;
        }
        let spec = RemoteSpec {
            name: format!("node{n}-g{gen}"),
            peer: addr,
            slice: slice_name(shard, slot, gen),
            bytes: cfg.slice_size,
            org: CLUSTER_ORG.into(),
            key: cfg.key,
            epoch: epoch.clone(),
            timeout: Duration::from_millis(500),
        };
        match RemoteDevice::open(spec) {
            Ok(d) => Some(Arc::new(d) as Arc<dyn BlockDevice>),
            Err(e) => {
                tracing::warn!("bucket {shard}: slot {slot} on node {n} unreachable: {e}");
                None
            }
        }
    };
    // A stale slot gets a blank slice of the next generation when its node
    // is up: the engine sees it as missing, and it is rebuilt onto.
    let mut resync = Vec::new();
    let devs: Vec<Option<Arc<dyn BlockDevice>>> = group
        .iter()
        .enumerate()
        .map(|(slot, n)| {
            if st.stale.contains(&slot) {
                let d = remote(slot, *n, st.gen(slot) + 1);
                if let Some(d) = &d {
                    resync.push((slot, d.name().to_string()));
                }
                d
            } else {
                remote(slot, *n, st.gen(slot))
            }
        })
        .collect();
    // Stripes tolerate m lost chunks: with more slots unusable (out of
    // reach, or stale and blank to rebuild onto) the bucket could serve
    // holes. It opens only if its stripes say otherwise (every one still
    // has k chunks on the slices it has), and waits if not.
    let unusable = devs
        .iter()
        .enumerate()
        .filter(|(slot, d)| d.is_none() && !st.evacuated.contains(slot))
        .count()
        + resync
            .iter()
            .filter(|(slot, _)| !st.evacuated.contains(slot))
            .count();
    let over = (unusable > usize::from(doc.m)).then(|| {
        format!(
            "{unusable} of its {} slots are out of reach or being rebuilt; its stripes \
             tolerate {}",
            group.len(),
            doc.m
        )
    });
    if over.is_some() && rev == 0 {
        return Err(format!(
            "{}: waiting for their nodes",
            over.unwrap_or_default()
        ));
    }
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let mut engine = Engine::start(&ReactorConfig {
        cores: vec![cpus[shard as usize % cpus.len()]],
        pin: false,
        ..ReactorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let seal = Some(Duration::from_millis(20));
    let fresh = rev == 0 && st.stale.is_empty();
    match engine.open_with(devs.clone(), seal) {
        Ok(()) => {}
        Err(e) if fresh && is_blank(&e) && devs.iter().all(Option::is_some) => {
            let all: Vec<Arc<dyn BlockDevice>> = devs.iter().flatten().cloned().collect();
            let sc = StoreConfig {
                shards: 1,
                ..StoreConfig::default()
            };
            engine
                .format(all, sc, false)
                .map_err(|e| format!("format: {e}"))?;
            engine
                .open_with(devs.clone(), seal)
                .map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
    }
    if let Some(why) = over {
        let r = engine.evacuate(0, false).map_err(|e| e.to_string())?;
        if r.unreadable_stripes > 0 || r.unreadable_pages > 0 {
            let _ = engine.close();
            return Err(format!(
                "{why}, and {} stripes and {} metadata page chunks have too few chunks on \
                 the others: waiting for their nodes",
                r.unreadable_stripes, r.unreadable_pages
            ));
        }
        tracing::warn!(
            "bucket {shard}: {why}, but every stripe has k chunks on the others: opening"
        );
    }
    // Slots this open runs without miss every write from here on: stale,
    // recorded before anything is acknowledged.
    // (And slices that failed while it opened.)
    let failed = failed_slots(&engine)?;
    let missing: BTreeSet<usize> = devs
        .iter()
        .enumerate()
        .filter(|(slot, d)| (d.is_none() || failed.contains(slot)) && !st.stale.contains(slot))
        .map(|(slot, _)| slot)
        .collect();
    let mut st = st;
    if st.gens.len() < group.len() {
        st.gens.resize(group.len(), 0);
    }
    if !missing.is_empty() || rev == 0 {
        st.stale.extend(missing.iter().copied());
        if let Err(e) = write_state(etcd, &cfg.keys, shard, &st, rev) {
            let _ = engine.close();
            return Err(e);
        }
        if !missing.is_empty() {
            tracing::warn!(
                "bucket {shard}: serving without slots {missing:?} (stale until rebuilt)"
            );
        }
    }
    provision(&engine, cfg, doc).map_err(|e| e.to_string())?;
    let engine = Arc::new(engine);
    let port = UdpPort::bind(SocketAddr::new(cfg.ip, 0)).map_err(|e| e.to_string())?;
    let server = Server::start_polled(
        engine.clone(),
        vec![(0, Arc::new(port))],
        ServerConfig {
            fence: Some(view.fence_handle()),
            ..ServerConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Bucket {
        engine,
        server,
        epoch,
        resync,
        opened: std::time::Instant::now(),
        rebuild: Rebuild::new(cfg.rebuild),
        group: group.clone(),
        retiring: BTreeSet::new(),
    })
}

fn is_blank(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Format {
            error: crate::format::FormatError::NotFlint,
            ..
        }
    ) || matches!(e, StoreError::Mismatch { reason } if reason.contains("no device with a Flint superblock"))
}

/// The bucket's organization (the cluster's key) and file system.
fn provision(e: &Engine, cfg: &HostConfig, doc: &ClusterDoc) -> Result<(), StoreError> {
    let org = match e.orgs()?.into_iter().find(|o| o.name == BUCKET_FS) {
        Some(o) => o,
        None => e.org_create_keyed(BUCKET_FS, cfg.key)?,
    };
    if e.fs_by_name(BUCKET_FS)?.is_none() {
        let fs = e.fs_create(BUCKET_FS, doc.k, doc.m, true, u64::MAX)?;
        e.fs_set_owner(fs, org.id)?;
    }
    Ok(())
}
