//! A node's membership: its registration under a lease of its own, the
//! fence that stops it acknowledging before that lease can expire, and its
//! view of the map (releasing the shards it hands off).
//!
//! The fence: a keep-alive is timed from when it was *sent*, so the
//! node's deadline `sent + TTL - margin` falls before etcd's expiry
//! (`received + TTL`), with `margin` covering clock-rate drift. A node
//! that cannot renew (partitioned, paused past its lease, etcd down) stops
//! acknowledging at its deadline; only after it registers again *and* reads
//! the map afresh does it serve again — by then any map that moved its
//! shards (which the coordinator writes only while the node's key is
//! absent) is the one it reads.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use super::keys::{Keys, Release};
use super::kv::{Kv, KvError};
use super::map::{ClusterMap, NodeId, NodeRecord};

/// Milliseconds on this process's monotonic clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The fence the data path reads: acknowledge only before `until`.
#[derive(Debug, Default)]
pub struct Fence {
    until: AtomicU64,
    epoch: AtomicU64,
    refused: AtomicU64,
}

impl Fence {
    /// A closed fence (nothing may be acknowledged until it opens).
    pub fn new() -> Fence {
        Fence::default()
    }

    /// Whether a write may be acknowledged now; counts refusals.
    pub fn may_ack(&self) -> bool {
        let ok = now_ms() < self.until.load(Ordering::Acquire);
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The map epoch the node serves at (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Writes refused because the fence was closed.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Milliseconds the fence stays open from now (0: closed).
    pub fn open_for_ms(&self) -> u64 {
        self.until.load(Ordering::Acquire).saturating_sub(now_ms())
    }

    /// Sets the deadline and epoch (the member's agent does).
    pub fn set(&self, until: u64, epoch: u64) {
        self.until.store(until, Ordering::Release);
        self.epoch.store(epoch, Ordering::Release);
    }
}

/// A node's membership state machine, stepped by [`Member::tick`].
#[derive(Debug, Clone)]
pub struct Member {
    keys: Keys,
    record: NodeRecord,
    ttl_s: i64,
    lease: Option<i64>,
    ttl_ms: u64,
    renewed: u64,
    registered: bool,
    /// The map was read after the current registration.
    fresh: bool,
    map: Option<ClusterMap>,
    map_revision: i64,
    released: BTreeSet<(u32, u64)>,
    /// Shards still open here (a bucket being closed): not released yet.
    holding: BTreeSet<u32>,
}

impl Member {
    /// A node of cluster `keys` that registers `record` under leases of
    /// `ttl_s` seconds.
    pub fn new(keys: Keys, record: NodeRecord, ttl_s: i64) -> Member {
        assert!(ttl_s >= 1, "a lease lasts at least a second");
        Member {
            keys,
            record,
            ttl_s,
            lease: None,
            ttl_ms: 0,
            renewed: 0,
            registered: false,
            fresh: false,
            map: None,
            map_revision: 0,
            released: BTreeSet::new(),
            holding: BTreeSet::new(),
        }
    }

    /// Shards the node still has open: a handoff's release waits until
    /// they are closed.
    pub fn set_holding(&mut self, shards: BTreeSet<u32>) {
        self.holding = shards;
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.record.id
    }

    /// The lease, while the node holds one.
    pub fn lease(&self) -> Option<i64> {
        self.lease.filter(|_| self.registered)
    }

    /// The map the node last read.
    pub fn map(&self) -> Option<&ClusterMap> {
        self.map.as_ref()
    }

    /// The margin kept before the lease's expiry: a tenth of the TTL
    /// (covers 10% clock-rate drift), at least 100 ms.
    fn margin_ms(&self) -> u64 {
        (self.ttl_ms / 10).max(100)
    }

    /// The local time until which the node may acknowledge (0: not now).
    pub fn deadline(&self) -> u64 {
        if self.lease.is_none() || !self.registered || !self.fresh {
            return 0;
        }
        (self.renewed + self.ttl_ms).saturating_sub(self.margin_ms())
    }

    /// Whether the node may acknowledge writes at local time `now`.
    pub fn may_ack(&self, now: u64) -> bool {
        now < self.deadline()
    }

    /// The epoch at which the node serves `shard` at local time `now`,
    /// if it does.
    pub fn serves(&self, shard: u32, now: u64) -> Option<u64> {
        let map = self.map.as_ref()?;
        (self.may_ack(now) && map.serves(self.record.id, shard)).then_some(map.epoch)
    }

    /// Forgets the lease (it expired or the node is stopping).
    fn lose_lease(&mut self) {
        self.lease = None;
        self.registered = false;
        self.fresh = false;
    }

    /// One step at local time `now` (taken before any call it makes):
    /// obtain or renew the lease, register, read the map, release the
    /// shards being handed off.
    pub fn tick(&mut self, kv: &mut dyn Kv, now: u64) -> Result<(), KvError> {
        match self.lease {
            None => {
                let (id, ttl) = kv.grant(self.ttl_s)?;
                self.lease = Some(id);
                self.ttl_ms = ttl.max(1) as u64 * 1000;
                self.renewed = now;
            }
            Some(id) if now >= self.renewed + self.ttl_ms / 3 => match kv.keep_alive(id) {
                Ok(ttl) => {
                    self.ttl_ms = ttl.max(1) as u64 * 1000;
                    self.renewed = now;
                }
                Err(KvError::LeaseGone) => {
                    self.lose_lease();
                    return Err(KvError::LeaseGone);
                }
                Err(e) => return Err(e),
            },
            Some(_) => {}
        }
        let lease = self.lease.expect("a lease");
        if !self.registered {
            let rec = serde_json::to_vec(&self.record).expect("a record serializes");
            match kv.put(&self.keys.node(self.record.id), &rec, lease) {
                Ok(_) => self.registered = true,
                Err(KvError::LeaseGone) => {
                    self.lose_lease();
                    return Err(KvError::LeaseGone);
                }
                Err(e) => return Err(e),
            }
        }
        let r = kv.range(&self.keys.map(), false)?;
        match r.kvs.first() {
            Some(item) if item.mod_revision != self.map_revision => {
                if let Ok(m) = serde_json::from_slice::<ClusterMap>(&item.value) {
                    if self.map.as_ref().is_none_or(|old| m.epoch >= old.epoch) {
                        self.map = Some(m);
                    }
                    self.map_revision = item.mod_revision;
                }
            }
            _ => {}
        }
        self.fresh = true;
        self.release(kv, lease)
    }

    /// Publishes a release for each shard of ours in a handoff: we no
    /// longer serve it under this map.
    fn release(&mut self, kv: &mut dyn Kv, lease: i64) -> Result<(), KvError> {
        let Some(map) = &self.map else {
            return Ok(());
        };
        let epoch = map.epoch;
        let due: Vec<u32> = map
            .shards
            .iter()
            .enumerate()
            .filter(|(_, p)| p.node == self.record.id && p.moving_to.is_some())
            .map(|(s, _)| s as u32)
            .filter(|s| !self.released.contains(&(*s, epoch)) && !self.holding.contains(s))
            .collect();
        for s in due {
            let r = Release {
                node: self.record.id,
                epoch,
            };
            let v = serde_json::to_vec(&r).expect("a release serializes");
            kv.put(&self.keys.release(s), &v, lease)?;
            self.released.insert((s, epoch));
        }
        self.released.retain(|(_, e)| *e >= epoch);
        Ok(())
    }

    /// Ends the membership: revokes the lease (the node's key and any
    /// lock it held go at once, so its shards fail over without waiting
    /// for the TTL).
    pub fn leave(&mut self, kv: &mut dyn Kv) -> Result<(), KvError> {
        if let Some(id) = self.lease {
            self.lose_lease();
            kv.revoke(id)?;
        }
        Ok(())
    }
}
