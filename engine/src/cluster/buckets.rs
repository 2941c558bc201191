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
use super::map::{ClusterMap, NodeId};
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
}

struct Bucket {
    engine: Arc<Engine>,
    server: Server,
    epoch: Arc<AtomicU64>,
}

/// The running host.
pub struct BucketHost {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The slice of `shard`'s slot `slot`.
pub fn slice_name(shard: u32, slot: usize) -> String {
    format!("s{shard}-d{slot}")
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
                close(s, b);
            }
        }
        if let Ok(mut h) = view.holding.lock() {
            *h = open.keys().copied().collect::<BTreeSet<u32>>();
        }
        if !serving {
            continue;
        }
        for s in 0..map.shards.len() as u32 {
            if let Some(b) = open.get(&s) {
                b.epoch.fetch_max(map.epoch, Ordering::AcqRel);
                continue;
            }
            if !map.serves(cfg.node, s) {
                continue;
            }
            match open_bucket(cfg, &map, s, &d, view) {
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
                            close(s, b);
                        }
                    }
                }
                Err(e) => tracing::warn!("bucket {s}: cannot open it yet: {e}"),
            }
        }
        if let Ok(mut h) = view.holding.lock() {
            *h = open.keys().copied().collect::<BTreeSet<u32>>();
        }
    }
    for (s, b) in std::mem::take(&mut open) {
        close(s, b);
    }
    if let Ok(mut h) = view.holding.lock() {
        h.clear();
    }
}

fn close(shard: u32, b: Bucket) {
    b.server.stop();
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

fn open_bucket(
    cfg: &HostConfig,
    map: &ClusterMap,
    shard: u32,
    doc: &ClusterDoc,
    view: &ClusterView,
) -> Result<Bucket, String> {
    let group = &map.shards[shard as usize].group;
    if group.is_empty() {
        return Err("the map gives it no group".into());
    }
    let epoch = Arc::new(AtomicU64::new(map.epoch));
    let devs: Vec<Option<Arc<dyn BlockDevice>>> = group
        .iter()
        .enumerate()
        .map(|(slot, n)| {
            let addr: SocketAddr = map.nodes.get(n)?.data_addr.parse().ok()?;
            let spec = RemoteSpec {
                name: format!("node{n}"),
                peer: addr,
                slice: slice_name(shard, slot),
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
        })
        .collect();
    let cpus = flint_dataplane::placement::allowed_cores().map_err(|e| e.to_string())?;
    let mut engine = Engine::start(&ReactorConfig {
        cores: vec![cpus[shard as usize % cpus.len()]],
        pin: false,
        ..ReactorConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let seal = Some(Duration::from_millis(20));
    match engine.open_with(devs.clone(), seal) {
        Ok(()) => {}
        Err(e) if is_blank(&e) && devs.iter().all(Option::is_some) => {
            let all: Vec<Arc<dyn BlockDevice>> = devs.iter().flatten().cloned().collect();
            let sc = StoreConfig {
                shards: 1,
                ..StoreConfig::default()
            };
            engine
                .format(all, sc, false)
                .map_err(|e| format!("format: {e}"))?;
            engine.open_with(devs, seal).map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
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
