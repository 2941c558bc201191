//! A seeded, deterministic simulation of the cluster's control plane: an
//! in-process etcd ([`Model`]), nodes running the real [`Member`] and
//! [`Coordinator`] on clocks that drift, and faults — kills and restarts,
//! partitions from etcd, pauses past the lease (SIGSTOP), etcd outages,
//! answers lost after the request was applied, members added, removed and
//! put in maintenance. Every step, each node tries to acknowledge writes to
//! random shards, and the checker holds it to the cluster's promises:
//!
//! - a node acknowledges only while etcd still holds its lease;
//! - a shard's acknowledgements never interleave between nodes: a new
//!   owner's acks carry a later epoch than every earlier owner's;
//! - the map's epoch grows by one per change, and every map is valid;
//! - a killed node's shards are on survivors within TTL + 1 s;
//! - once faults end, the map settles: every shard served by exactly one
//!   live node, balanced to within one shard.
//!
//! `FLINT_SIM_SEEDS` sets the number of seeds (default 1000) and
//! `FLINT_SIM_SEED` replays one.

use std::collections::BTreeMap;

use super::coord::Coordinator;
use super::keys::{ClusterDoc, Keys};
use super::kv::{Kv, KvError, Model, Range, Txn, TxnResult};
use super::map::{ClusterMap, Membership, NodeId, NodeRecord, NodeState};
use super::member::Member;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// etcd as one node reaches it: down while partitioned or in an outage;
/// sometimes the answer is lost after the request was applied.
struct Link<'a> {
    model: &'a mut Model,
    up: bool,
    /// Decides, call by call, whether the answer is lost.
    loss: Rng,
    loss_per_mille: u64,
}

impl Link<'_> {
    fn gate<T>(&mut self, f: impl FnOnce(&mut Model) -> Result<T, KvError>) -> Result<T, KvError> {
        if !self.up {
            return Err(KvError::Unavailable("partitioned".into()));
        }
        let r = f(self.model);
        if self.loss.chance(self.loss_per_mille) {
            return Err(KvError::Unavailable("answer lost".into()));
        }
        r
    }
}

impl Kv for Link<'_> {
    fn range(&mut self, key: &[u8], prefix: bool) -> Result<Range, KvError> {
        self.gate(|m| m.range(key, prefix))
    }
    fn txn(&mut self, txn: &Txn) -> Result<TxnResult, KvError> {
        self.gate(|m| m.txn(txn))
    }
    fn grant(&mut self, ttl_s: i64) -> Result<(i64, i64), KvError> {
        self.gate(|m| m.grant(ttl_s))
    }
    fn keep_alive(&mut self, lease: i64) -> Result<i64, KvError> {
        self.gate(|m| m.keep_alive(lease))
    }
    fn revoke(&mut self, lease: i64) -> Result<(), KvError> {
        self.gate(|m| m.revoke(lease))
    }
}

struct Node {
    member: Member,
    coord: Coordinator,
    alive: bool,
    /// Clock rate in millionths (drift up to ±1%) and offset.
    rate_ppm: u64,
    offset: u64,
    partitioned_until: u64,
    paused_until: u64,
    restart_at: u64,
    next_tick: u64,
}

impl Node {
    fn local(&self, t: u64) -> u64 {
        self.offset + t * self.rate_ppm / 1_000_000
    }
}

struct Sim {
    rng: Rng,
    seed: u64,
    model: Model,
    keys: Keys,
    nodes: BTreeMap<NodeId, Node>,
    ttl_s: i64,
    tick_ms: u64,
    outage_until: u64,
    /// Per shard: the last acknowledging node and the highest epoch of
    /// its run of acks.
    last_ack: Vec<Option<(NodeId, u64)>>,
    acks: u64,
    refused: u64,
    map_epoch: u64,
    map_revision: i64,
    map: Option<ClusterMap>,
    seen_revision: i64,
}

fn record(id: NodeId) -> NodeRecord {
    NodeRecord {
        id,
        data_addr: format!("10.0.0.{id}:7400"),
        mgmt_addr: format!("10.0.0.{id}:7480"),
        cores: 2,
        devices: 4,
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let ttl_s = 2 + rng.below(4) as i64;
        let shards = 8 + rng.below(25) as u32;
        let nodes = 3 + rng.below(4) as u32;
        let keys = Keys::new("sim");
        let mut model = Model::new();
        let doc = serde_json::to_vec(&ClusterDoc { shards, k: 0, m: 0 }).unwrap();
        model.put(&keys.config(), &doc, 0).unwrap();
        let mut sim = Sim {
            rng,
            seed,
            model,
            keys,
            nodes: BTreeMap::new(),
            ttl_s,
            tick_ms: (ttl_s as u64 * 1000 / 6).min(200),
            outage_until: 0,
            last_ack: vec![None; shards as usize],
            acks: 0,
            refused: 0,
            map_epoch: 0,
            map_revision: 0,
            map: None,
            seen_revision: 0,
        };
        // One more node than the members: it joins later.
        for id in 1..=nodes + 1 {
            if id <= nodes {
                sim.set_member(id, Some(Membership::Active));
            }
            let node = sim.fresh_node(id, 0);
            sim.nodes.insert(id, node);
        }
        sim
    }

    fn fresh_node(&mut self, id: NodeId, t: u64) -> Node {
        Node {
            member: Member::new(self.keys.clone(), record(id), self.ttl_s),
            coord: Coordinator::new(self.keys.clone(), id),
            alive: true,
            rate_ppm: 990_000 + self.rng.below(20_001),
            offset: self.rng.below(1 << 30),
            partitioned_until: 0,
            paused_until: 0,
            restart_at: 0,
            next_tick: t + self.rng.below(self.tick_ms),
        }
    }

    fn set_member(&mut self, id: NodeId, m: Option<Membership>) {
        let key = self.keys.member(id);
        match m {
            Some(m) => {
                self.model
                    .put(&key, &serde_json::to_vec(&m).unwrap(), 0)
                    .unwrap();
            }
            None => {
                let del = Txn {
                    success: vec![super::kv::Op::Delete { key }],
                    ..Txn::default()
                };
                self.model.txn(&del).unwrap();
            }
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what} (replay: FLINT_SIM_SEED={})",
            self.seed, self.seed
        )
    }

    /// The map in the model, checked against the previous one.
    fn check_map(&mut self) -> Option<ClusterMap> {
        let r = self.model.range(&self.keys.map(), false).unwrap();
        let item = r.kvs.first()?;
        if item.mod_revision != self.map_revision {
            let map: ClusterMap = serde_json::from_slice(&item.value).unwrap();
            if map.epoch != self.map_epoch + 1 {
                self.fail(format!("epoch {} followed {}", map.epoch, self.map_epoch));
            }
            if let Err(e) = map.check() {
                self.fail(format!("an invalid map at epoch {}: {e}", map.epoch));
            }
            self.map_epoch = map.epoch;
            self.map_revision = item.mod_revision;
            self.map = Some(map);
        }
        self.map.clone()
    }

    fn faults(&mut self, t: u64) {
        let ttl = self.ttl_s as u64 * 1000;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        match self.rng.below(2000) {
            0..=3 => {
                let n = self.nodes.get_mut(&id).unwrap();
                if n.alive {
                    n.alive = false;
                    n.restart_at = t + ttl / 2 + self.rng.below(3 * ttl);
                }
            }
            4..=7 => {
                let until = t + 500 + self.rng.below(3 * ttl);
                self.nodes.get_mut(&id).unwrap().partitioned_until = until;
            }
            8..=10 => {
                let until = t + ttl + self.rng.below(2 * ttl);
                self.nodes.get_mut(&id).unwrap().paused_until = until;
            }
            11 => self.outage_until = t + self.rng.below(2 * ttl),
            12 => {
                let m = match self.rng.below(4) {
                    0 => Some(Membership::Maint),
                    1 => Some(Membership::Remove),
                    2 => None,
                    _ => Some(Membership::Active),
                };
                self.set_member(id, m);
            }
            13 => {
                // A clean stop: the lease is revoked.
                let up = t >= self.outage_until;
                let n = self.nodes.get_mut(&id).unwrap();
                if n.alive && up && t >= n.partitioned_until && t >= n.paused_until {
                    let mut link = Link {
                        model: &mut self.model,
                        up: true,
                        loss: Rng(0),
                        loss_per_mille: 0,
                    };
                    let _ = n.member.leave(&mut link);
                    n.alive = false;
                    n.restart_at = t + self.rng.below(ttl);
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self, id: NodeId, t: u64) {
        let loss = Rng(self.rng.next());
        let n = self.nodes.get_mut(&id).unwrap();
        if !n.alive || t < n.paused_until || t < n.next_tick {
            return;
        }
        n.next_tick = t + self.tick_ms;
        let now = n.local(t);
        let mut link = Link {
            model: &mut self.model,
            up: t >= self.outage_until && t >= n.partitioned_until,
            loss,
            loss_per_mille: 30,
        };
        match n.member.tick(&mut link, now) {
            Ok(()) => {}
            Err(KvError::LeaseGone) => n.coord.demote(),
            Err(_) => {}
        }
        if let Some(lease) = n.member.lease() {
            let _ = n.coord.tick(&mut link, lease);
        }
    }

    fn try_ack(&mut self, id: NodeId, t: u64) {
        let shard = self.rng.below(self.last_ack.len() as u64) as u32;
        let n = &self.nodes[&id];
        if !n.alive || t < n.paused_until {
            return;
        }
        let Some(epoch) = n.member.serves(shard, n.local(t)) else {
            let owns = n.member.map().is_some_and(|m| m.serves(id, shard));
            self.refused += u64::from(owns);
            return;
        };
        let lease = n.member.lease().expect("serving needs a lease");
        match self.model.lease_expiry(lease) {
            Some(exp) if exp > t => {}
            _ => self.fail(format!(
                "node {id} acknowledged shard {shard} at {t} ms after its lease expired"
            )),
        }
        match self.last_ack[shard as usize] {
            Some((prev, e)) if prev != id && epoch <= e => self.fail(format!(
                "node {id} acknowledged shard {shard} at epoch {epoch} after node {prev} at {e}"
            )),
            Some((prev, e)) if prev == id => {
                self.last_ack[shard as usize] = Some((id, e.max(epoch)));
            }
            _ => self.last_ack[shard as usize] = Some((id, epoch)),
        }
        self.acks += 1;
    }

    fn step(&mut self, t: u64, faults: bool) {
        self.model.set_now(t);
        if faults {
            self.faults(t);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let n = &self.nodes[&id];
            if !n.alive && t >= n.restart_at {
                let fresh = self.fresh_node(id, t);
                self.nodes.insert(id, fresh);
            }
            let ack_first = self.rng.chance(500);
            if ack_first {
                self.try_ack(id, t);
            }
            self.tick(id, t);
            self.try_ack(id, t);
        }
        if self.model.revision() != self.seen_revision {
            self.seen_revision = self.model.revision();
            self.check_map();
        }
    }

    fn run_until(&mut self, t: &mut u64, end: u64, faults: bool) {
        while *t < end {
            *t += 10 + self.rng.below(40);
            self.step(*t, faults);
        }
    }

    fn heal(&mut self, t: u64) {
        self.outage_until = 0;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.set_member(id, Some(Membership::Active));
            let n = self.nodes.get_mut(&id).unwrap();
            n.partitioned_until = 0;
            n.paused_until = 0;
            if !n.alive {
                n.restart_at = t;
            }
        }
    }

    fn check_settled(&mut self, t: u64) {
        let map = self
            .check_map()
            .unwrap_or_else(|| self.fail("no map after healing".into()));
        let load = map.load();
        for (s, p) in map.shards.iter().enumerate() {
            if p.moving_to.is_some() || map.nodes[&p.node].state != NodeState::Active {
                self.fail(format!("shard {s} unsettled at epoch {}: {p:?}", map.epoch));
            }
            let serving: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.member.serves(s as u32, n.local(t)).is_some())
                .map(|(id, _)| *id)
                .collect();
            if serving != vec![p.node] {
                self.fail(format!("shard {s} served by {serving:?}, owner {}", p.node));
            }
        }
        let (lo, hi) = (load.values().min().unwrap(), load.values().max().unwrap());
        if hi - lo > 1 {
            self.fail(format!("unbalanced after healing: {load:?}"));
        }
    }

    /// Kills the owner of shard 0 with all else healthy; its shards must
    /// be on survivors within TTL + 1 s.
    fn check_failover(&mut self, t: &mut u64) {
        let map = self.check_map().expect("a settled map");
        let victim = map.shards[0].node;
        self.nodes.get_mut(&victim).unwrap().alive = false;
        self.nodes.get_mut(&victim).unwrap().restart_at = u64::MAX;
        let killed = *t;
        let limit = killed + self.ttl_s as u64 * 1000 + 1000;
        while *t < limit {
            *t += 10 + self.rng.below(40);
            self.step(*t, false);
            if self
                .map
                .as_ref()
                .is_some_and(|m| m.owned(victim).next().is_none())
            {
                return;
            }
        }
        self.fail(format!(
            "node {victim}'s shards still on it {} ms after its kill",
            *t - killed
        ));
    }
}

fn run(seed: u64) -> (u64, u64, u64) {
    let mut sim = Sim::new(seed);
    let mut t = 0;
    sim.run_until(&mut t, 30_000, true);
    sim.heal(t);
    let settle = t + 8 * sim.ttl_s as u64 * 1000;
    sim.run_until(&mut t, settle, false);
    sim.check_settled(t);
    sim.check_failover(&mut t);
    (sim.acks, sim.refused, sim.map_epoch)
}

#[test]
fn a_thousand_seeds_keep_every_promise() {
    if let Ok(seed) = std::env::var("FLINT_SIM_SEED") {
        let seed = seed.parse().expect("FLINT_SIM_SEED is a number");
        let (acks, refused, epochs) = run(seed);
        eprintln!("seed {seed}: {acks} acks, {refused} refused, {epochs} epochs");
        return;
    }
    let seeds: u64 = std::env::var("FLINT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let (mut acks, mut refused, mut epochs) = (0, 0, 0);
    for seed in 0..seeds {
        let (a, r, e) = run(seed);
        acks += a;
        refused += r;
        epochs += e;
    }
    eprintln!("{seeds} seeds: {acks} acks, {refused} refused, {epochs} map epochs");
    assert!(acks > seeds * 100 && refused > 0 && epochs > seeds * 2);
}

#[test]
fn a_seed_replays_exactly() {
    assert_eq!(run(42), run(42));
}
