//! The cluster map: which node and core own each shard, at an epoch, and
//! the pure rule that turns the cluster's state into the next map.
//!
//! A shard is served by exactly one node: the map's owner, unless the
//! shard is in a handoff (`moving_to`), when nobody serves it. A handoff
//! completes only once the old owner has released the shard (it stopped
//! serving it, and said so in etcd) or has lost its lease (it stopped
//! acknowledging before the lease could expire), so two nodes never serve
//! one shard: every ack for a shard at epoch E comes from E's owner, and
//! the next owner's acks carry a later epoch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A node's id in its cluster (its config's `cluster.node`).
pub type NodeId = u32;

/// What the map says of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Alive and serving.
    Active,
    /// Alive, under planned maintenance: serving; its restart rebuilds
    /// nothing.
    Maint,
    /// Being removed: its shards move off one at a time.
    Draining,
    /// Its lease is gone: its shards have moved to the survivors.
    Down,
}

/// A node of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapNode {
    /// Its state.
    pub state: NodeState,
    /// Its data protocol address.
    pub data_addr: String,
    /// Its reactors.
    pub cores: u16,
    /// Its registration (the create revision of its node key): a new one
    /// each time it registers.
    pub incarnation: i64,
}

/// Where a shard lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The owning node.
    pub node: NodeId,
    /// Its reactor on that node.
    pub core: u16,
    /// A handoff in progress: the next owner (nobody serves meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<(NodeId, u16)>,
    /// The epoch the handoff started at: only a release made at it or
    /// later completes it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub since: u64,
    /// A bucket's devices: the node holding each of its slices, by slot
    /// (every node of the first map when the bucket is made; a leaving
    /// node's slot becomes [`VACANT`] once evacuated, and a vacant slot is
    /// given to an active node outside the group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<NodeId>,
}

impl Placement {
    /// Owned by `node`'s `core` from now on, no handoff pending (its
    /// group stays).
    fn settle_on(&mut self, node: NodeId, core: u16) {
        self.node = node;
        self.core = core;
        self.moving_to = None;
        self.since = 0;
    }
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// Shard ownership across the cluster at one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Every change increments it; requests carry it as a fencing token.
    pub epoch: u64,
    /// The nodes the map knows.
    pub nodes: BTreeMap<NodeId, MapNode>,
    /// Each shard's placement, by shard number.
    pub shards: Vec<Placement>,
}

/// What a member of the cluster is meant to be (set by the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// A full member.
    Active,
    /// A member under planned maintenance.
    Maint,
    /// To be removed once its shards have moved off.
    Remove,
}

/// A registered node as its key in etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// Its data protocol address.
    pub data_addr: String,
    /// Its management API address.
    pub mgmt_addr: String,
    /// Its reactors.
    pub cores: u16,
    /// Its devices.
    pub devices: u32,
}

/// The cluster's state at one revision, as the coordinator reads it.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Shards of the cluster (from its config document).
    pub shards: u32,
    /// Members and what they are meant to be.
    pub members: BTreeMap<NodeId, Membership>,
    /// Registered nodes (lease alive) with their incarnation.
    pub alive: BTreeMap<NodeId, (NodeRecord, i64)>,
    /// Whether shards are buckets (engines on slices of every node).
    pub buckets: bool,
    /// Shards their owner has released: (shard, owner) → the epoch of
    /// the map it released them under.
    pub released: BTreeMap<(u32, NodeId), u64>,
    /// Each bucket's slots whose data has been rebuilt onto its other
    /// slots (a slot of a leaving node, once evacuated, is vacated).
    pub evacuated: BTreeMap<u32, BTreeSet<usize>>,
}

/// A bucket's slot that no node holds (its node left).
pub const VACANT: NodeId = 0;

impl ClusterMap {
    /// Whether `node` serves `shard` under this map.
    pub fn serves(&self, node: NodeId, shard: u32) -> bool {
        self.shards
            .get(shard as usize)
            .is_some_and(|p| p.node == node && p.moving_to.is_none())
    }

    /// The shards `node` owns (serving or handing off).
    pub fn owned(&self, node: NodeId) -> impl Iterator<Item = u32> + '_ {
        self.shards
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.node == node)
            .map(|(s, _)| s as u32)
    }

    /// Shards owned by each node of the map.
    pub fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for p in &self.shards {
            *load.entry(p.moving_to.map_or(p.node, |t| t.0)).or_default() += 1;
        }
        load
    }

    /// Checks the map's invariants; the coordinator never writes a map
    /// that fails them.
    pub fn check(&self) -> Result<(), String> {
        for (s, p) in self.shards.iter().enumerate() {
            let node = self
                .nodes
                .get(&p.node)
                .ok_or_else(|| format!("shard {s} is on node {}, not in the map", p.node))?;
            if p.core >= node.cores.max(1) {
                return Err(format!(
                    "shard {s} is on core {} of node {}",
                    p.core, p.node
                ));
            }
            if let Some((t, c)) = p.moving_to {
                let to = self
                    .nodes
                    .get(&t)
                    .ok_or_else(|| format!("shard {s} moves to node {t}, not in the map"))?;
                if t == p.node || c >= to.cores.max(1) {
                    return Err(format!("shard {s} has a bad handoff to {t}/{c}"));
                }
            }
        }
        Ok(())
    }
}

fn eligible(state: NodeState) -> bool {
    matches!(state, NodeState::Active | NodeState::Maint)
}

/// The least loaded core of `node` under `shards`.
fn core_for(shards: &[Placement], node: NodeId, cores: u16) -> u16 {
    let mut load = vec![0usize; cores.max(1) as usize];
    for p in shards {
        let (n, c) = p.moving_to.unwrap_or((p.node, p.core));
        if n == node && (c as usize) < load.len() {
            load[c as usize] += 1;
        }
    }
    (0..load.len())
        .min_by_key(|&c| load[c])
        .map_or(0, |c| c as u16)
}

/// The next map from `map` (`None` before the first) and the cluster's
/// state, or `None` when nothing needs to change.
///
/// In order: node states follow membership and leases; handoffs complete
/// (the owner released the shard or is down) or are cancelled (the target
/// is down); a down node's shards go to the least loaded eligible node at
/// once; then, with no handoff in flight, one shard starts a handoff — off
/// a draining node, or from the most to the least loaded node when they
/// differ by more than one — so a join or a drain moves only the shards
/// that balance needs, one at a time.
pub fn next(map: Option<&ClusterMap>, inputs: &Inputs) -> Option<ClusterMap> {
    let epoch = map.map_or(1, |old| old.epoch + 1);
    let mut m = match map {
        Some(m) => m.clone(),
        None => first(inputs)?,
    };
    // Node states.
    for (&id, &want) in &inputs.members {
        let Some((rec, inc)) = inputs.alive.get(&id) else {
            if let Some(n) = m.nodes.get_mut(&id) {
                n.state = NodeState::Down;
            }
            continue;
        };
        let state = match want {
            Membership::Active => NodeState::Active,
            Membership::Maint => NodeState::Maint,
            // A removed node that left the map stays out of it.
            Membership::Remove if !m.nodes.contains_key(&id) => continue,
            Membership::Remove => NodeState::Draining,
        };
        m.nodes.insert(
            id,
            MapNode {
                state,
                data_addr: rec.data_addr.clone(),
                cores: rec.cores.max(1),
                incarnation: *inc,
            },
        );
    }
    for n in m.nodes.iter_mut() {
        if !inputs.members.contains_key(n.0) {
            n.1.state = if inputs.alive.contains_key(n.0) {
                NodeState::Draining
            } else {
                NodeState::Down
            };
        }
    }
    let state = |m: &ClusterMap, n: NodeId| m.nodes.get(&n).map_or(NodeState::Down, |x| x.state);

    // Handoffs: complete or cancel.
    for s in 0..m.shards.len() {
        let p = m.shards[s].clone();
        let Some((to, core)) = p.moving_to else {
            continue;
        };
        if state(&m, to) == NodeState::Down {
            m.shards[s].moving_to = None;
            m.shards[s].since = 0;
        } else if inputs
            .released
            .get(&(s as u32, p.node))
            .is_some_and(|&e| e >= p.since)
            || state(&m, p.node) == NodeState::Down
        {
            m.shards[s].settle_on(to, core);
        }
    }

    let eligible_nodes: Vec<NodeId> = m
        .nodes
        .iter()
        .filter(|(_, n)| eligible(n.state))
        .map(|(id, _)| *id)
        .collect();
    if !eligible_nodes.is_empty() {
        // Failover: a down node's shards go at once.
        for s in 0..m.shards.len() {
            let p = &m.shards[s];
            if p.moving_to.is_none() && state(&m, p.node) == NodeState::Down {
                let load = m.load();
                let to = *eligible_nodes
                    .iter()
                    .min_by_key(|n| load[n])
                    .expect("eligible");
                let core = core_for(&m.shards, to, m.nodes[&to].cores);
                m.shards[s].settle_on(to, core);
            }
        }
        // One handoff at a time.
        if m.shards.iter().all(|p| p.moving_to.is_none()) {
            let load = m.load();
            let least = *eligible_nodes
                .iter()
                .min_by_key(|n| load[n])
                .expect("eligible");
            let draining = m
                .shards
                .iter()
                .position(|p| state(&m, p.node) == NodeState::Draining);
            let pick = draining.or_else(|| {
                let most = *eligible_nodes
                    .iter()
                    .max_by_key(|n| load[n])
                    .expect("eligible");
                (load[&most] > load[&least] + 1)
                    .then(|| m.shards.iter().rposition(|p| p.node == most))
                    .flatten()
            });
            if let Some(s) = pick {
                let core = core_for(&m.shards, least, m.nodes[&least].cores);
                m.shards[s].moving_to = Some((least, core));
                m.shards[s].since = epoch;
            }
        }
    }
    if inputs.buckets {
        groups(&mut m, inputs);
    }
    // A removed node leaves the map once it owns nothing.
    let owners: BTreeSet<NodeId> = m
        .shards
        .iter()
        .flat_map(|p| {
            [Some(p.node), p.moving_to.map(|t| t.0)]
                .into_iter()
                .flatten()
                .chain(p.group.iter().copied())
        })
        .collect();
    m.nodes.retain(|id, _| {
        owners.contains(id)
            || inputs
                .members
                .get(id)
                .is_some_and(|w| *w != Membership::Remove)
    });

    if map == Some(&m) {
        return None;
    }
    m.epoch = epoch;
    debug_assert!(m.check().is_ok(), "{:?}", m.check());
    Some(m)
}

/// Bucket groups follow membership: the slot of a draining node whose data
/// the bucket has rebuilt elsewhere is vacated, and a vacant slot goes to
/// the active node outside the group that holds the fewest slots.
fn groups(m: &mut ClusterMap, inputs: &Inputs) {
    let state = |m: &ClusterMap, n: NodeId| m.nodes.get(&n).map_or(NodeState::Down, |x| x.state);
    for s in 0..m.shards.len() {
        let done = inputs.evacuated.get(&(s as u32));
        for slot in 0..m.shards[s].group.len() {
            let n = m.shards[s].group[slot];
            if n != VACANT
                && state(m, n) == NodeState::Draining
                && done.is_some_and(|d| d.contains(&slot))
            {
                m.shards[s].group[slot] = VACANT;
            }
        }
    }
    for s in 0..m.shards.len() {
        for slot in 0..m.shards[s].group.len() {
            if m.shards[s].group[slot] != VACANT {
                continue;
            }
            let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
            for p in &m.shards {
                for n in &p.group {
                    *held.entry(*n).or_default() += 1;
                }
            }
            let group = &m.shards[s].group;
            let pick = m
                .nodes
                .iter()
                .filter(|(id, n)| {
                    n.state == NodeState::Active
                        && inputs.alive.contains_key(id)
                        && !group.contains(id)
                })
                .min_by_key(|(id, _)| (held.get(id).copied().unwrap_or(0), **id))
                .map(|(id, _)| *id);
            if let Some(n) = pick {
                m.shards[s].group[slot] = n;
            }
        }
    }
}

/// The first map: every shard round-robin over the active members alive
/// now (`None` until one is).
fn first(inputs: &Inputs) -> Option<ClusterMap> {
    let live: Vec<(NodeId, &NodeRecord, i64)> = inputs
        .members
        .iter()
        .filter(|(_, w)| **w != Membership::Remove)
        .filter_map(|(id, _)| inputs.alive.get(id).map(|(r, inc)| (*id, r, *inc)))
        .collect();
    if live.is_empty() || inputs.shards == 0 {
        return None;
    }
    // A bucket's group is fixed at its making: wait for every member.
    let members = inputs
        .members
        .values()
        .filter(|w| **w != Membership::Remove)
        .count();
    if inputs.buckets && live.len() < members {
        return None;
    }
    let nodes = live
        .iter()
        .map(|(id, r, inc)| {
            (
                *id,
                MapNode {
                    state: NodeState::Active,
                    data_addr: r.data_addr.clone(),
                    cores: r.cores.max(1),
                    incarnation: *inc,
                },
            )
        })
        .collect();
    let group: Vec<NodeId> = if inputs.buckets {
        live.iter().map(|(id, _, _)| *id).collect()
    } else {
        Vec::new()
    };
    let shards = (0..inputs.shards as usize)
        .map(|s| {
            let (id, r, _) = live[s % live.len()];
            Placement {
                node: id,
                core: ((s / live.len()) % r.cores.max(1) as usize) as u16,
                moving_to: None,
                since: 0,
                group: group.clone(),
            }
        })
        .collect();
    // Epoch 0 here: `next` compares it with no map and makes it 1.
    Some(ClusterMap {
        epoch: 0,
        nodes,
        shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            data_addr: format!("127.0.0.1:{}", 7400 + id),
            mgmt_addr: String::new(),
            cores: 2,
            devices: 4,
        }
    }

    fn inputs(shards: u32, nodes: &[NodeId]) -> Inputs {
        Inputs {
            shards,
            members: nodes.iter().map(|n| (*n, Membership::Active)).collect(),
            alive: nodes
                .iter()
                .map(|n| (*n, (rec(*n), i64::from(*n))))
                .collect(),
            released: BTreeMap::new(),
            buckets: false,
            evacuated: BTreeMap::new(),
        }
    }

    /// Runs `next` until the map settles, the old owners releasing every
    /// handoff at once; returns the map and the number of shard moves.
    fn settle(mut map: ClusterMap, inp: &mut Inputs) -> (ClusterMap, usize) {
        let mut moves = 0;
        for _ in 0..1000 {
            inp.released = map
                .shards
                .iter()
                .enumerate()
                .filter(|(_, p)| p.moving_to.is_some())
                .map(|(s, p)| ((s as u32, p.node), map.epoch))
                .collect();
            match next(Some(&map), inp) {
                Some(n) => {
                    moves += n
                        .shards
                        .iter()
                        .zip(&map.shards)
                        .filter(|(a, b)| a.node != b.node)
                        .count();
                    assert_eq!(n.epoch, map.epoch + 1);
                    n.check().unwrap();
                    map = n;
                }
                None => return (map, moves),
            }
        }
        panic!("the map never settles");
    }

    #[test]
    fn the_first_map_spreads_shards_and_a_join_moves_only_the_ideal_share() {
        let mut inp = inputs(60, &[1, 2, 3]);
        let map = next(None, &inp).unwrap();
        assert_eq!(map.epoch, 1);
        assert_eq!(
            map.load().values().copied().collect::<Vec<_>>(),
            vec![20, 20, 20]
        );
        assert!(next(Some(&map), &inp).is_none(), "a settled map stays");
        // A fourth node joins: 15 shards is the ideal share.
        inp = inputs(60, &[1, 2, 3, 4]);
        let (map, moves) = settle(map, &mut inp);
        assert_eq!(
            map.load().values().copied().collect::<Vec<_>>(),
            vec![15, 15, 15, 15]
        );
        assert!(
            moves <= 15 * 5 / 4,
            "{moves} moves for an ideal share of 15"
        );
        for p in &map.shards {
            assert!(p.core < 2);
        }
    }

    #[test]
    fn buckets_wait_for_every_member_and_keep_their_group_through_failover() {
        let mut inp = inputs(6, &[1, 2, 3, 4]);
        inp.buckets = true;
        inp.alive.remove(&4);
        assert!(
            next(None, &inp).is_none(),
            "a bucket's group needs every member"
        );
        inp.alive.insert(4, (rec(4), 4));
        let map = next(None, &inp).unwrap();
        assert!(map.shards.iter().all(|p| p.group == vec![1, 2, 3, 4]));
        inp.alive.remove(&2);
        let after = next(Some(&map), &inp).unwrap();
        assert!(after
            .shards
            .iter()
            .all(|p| p.group == vec![1, 2, 3, 4] && p.node != 2));
        // Removed, it stays in the map while groups hold its slices.
        inp.members.remove(&2);
        let (done, _) = settle(after, &mut inp);
        assert!(done.nodes.contains_key(&2));
        done.check().unwrap();
    }

    #[test]
    fn a_leaving_node_gives_up_its_slots_once_evacuated_and_a_vacancy_is_filled() {
        let mut inp = inputs(4, &[1, 2, 3, 4]);
        inp.buckets = true;
        let map = next(None, &inp).unwrap();
        inp.members.insert(4, Membership::Remove);
        let (drained, _) = settle(map, &mut inp);
        assert_eq!(drained.owned(4).count(), 0);
        assert!(
            drained.nodes.contains_key(&4),
            "its slots hold data until the buckets evacuate them"
        );
        assert!(drained.shards.iter().all(|p| p.group == vec![1, 2, 3, 4]));
        // Buckets 0-2 have emptied its slot (3): vacated; bucket 3 not yet.
        for s in 0..3 {
            inp.evacuated.insert(s, BTreeSet::from([3]));
        }
        let (part, _) = settle(drained, &mut inp);
        let vacant: Vec<bool> = part.shards.iter().map(|p| p.group[3] == VACANT).collect();
        assert_eq!(vacant, [true, true, true, false]);
        assert!(part.nodes.contains_key(&4));
        inp.evacuated.insert(3, BTreeSet::from([3]));
        let (gone, _) = settle(part, &mut inp);
        assert!(!gone.nodes.contains_key(&4), "it holds nothing: it leaves");
        assert!(gone.shards.iter().all(|p| p.group == vec![1, 2, 3, VACANT]));
        // A node joins (or the same one comes back): it fills the vacancies.
        inp.members.insert(4, Membership::Active);
        inp.members.insert(5, Membership::Active);
        inp.alive.insert(5, (rec(5), 5));
        inp.evacuated.clear();
        let (filled, _) = settle(gone, &mut inp);
        for p in &filled.shards {
            assert_ne!(p.group[3], VACANT);
            assert!(!p.group[..3].contains(&p.group[3]), "{:?}", p.group);
        }
        let on = |n: NodeId| filled.shards.iter().filter(|p| p.group[3] == n).count();
        assert_eq!((on(4), on(5)), (2, 2), "vacancies spread over the joiners");
    }

    #[test]
    fn a_down_node_fails_over_at_once_and_a_drained_node_leaves() {
        let mut inp = inputs(12, &[1, 2, 3]);
        let map = next(None, &inp).unwrap();
        inp.alive.remove(&2);
        let after = next(Some(&map), &inp).unwrap();
        assert_eq!(after.nodes[&2].state, NodeState::Down);
        assert_eq!(
            after.owned(2).count(),
            0,
            "every shard of 2 moved in one epoch"
        );
        assert!(after.shards.iter().all(|p| p.moving_to.is_none()));
        // Removing node 3: its shards hand off one at a time.
        inp.members.insert(3, Membership::Remove);
        let step = next(Some(&after), &inp).unwrap();
        assert_eq!(
            step.shards.iter().filter(|p| p.moving_to.is_some()).count(),
            1
        );
        let moving = step
            .shards
            .iter()
            .position(|p| p.moving_to.is_some())
            .unwrap();
        assert!(!step.serves(3, moving as u32) && !step.serves(1, moving as u32));
        assert!(next(Some(&step), &inp).is_none(), "no release, no progress");
        inp.members.remove(&2);
        let (done, _) = settle(step, &mut inp);
        assert_eq!(done.nodes.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(done.owned(1).count(), 12);
    }
}
