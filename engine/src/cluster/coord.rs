//! The coordinator: the one node that writes the map.
//!
//! Any node may take the role: it claims the lock key (create-if-absent,
//! under its own lease, so the role passes on when it dies). Each step
//! reads the whole cluster at one revision, computes the next map
//! ([`super::map::next`]) and writes it in one transaction that holds only
//! if, at commit, the lock is still the one it claimed, the map is the one
//! it read, and every node key it relied on is as it read it — a node it
//! saw as down is still absent (so a node that came back in between is
//! never robbed of its shards), a node it saw alive is the same
//! registration. Releases of completed handoffs are deleted with it.

use super::keys::{Keys, State};
use super::kv::{Compare, Kv, KvError, Op, Target, Txn};
use super::map::{self, ClusterMap, NodeId, NodeState};

/// A node's coordinator role, stepped by [`Coordinator::tick`].
#[derive(Debug, Clone)]
pub struct Coordinator {
    keys: Keys,
    id: NodeId,
    lock: Option<i64>,
    commits: u64,
    conflicts: u64,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Another node coordinates (its id, if readable).
    Follower(Option<NodeId>),
    /// The cluster was not created yet.
    NoCluster,
    /// Coordinating; the map needs no change.
    Settled,
    /// Wrote this map.
    Wrote(ClusterMap),
    /// The transaction's compares failed (something changed meanwhile):
    /// the next step reads again.
    Conflict,
}

impl Coordinator {
    /// Node `id`'s coordinator role in cluster `keys`.
    pub fn new(keys: Keys, id: NodeId) -> Coordinator {
        Coordinator {
            keys,
            id,
            lock: None,
            commits: 0,
            conflicts: 0,
        }
    }

    /// Whether this node held the lock at its last step.
    pub fn is_leader(&self) -> bool {
        self.lock.is_some()
    }

    /// Maps written, and transactions whose compares failed.
    pub fn counters(&self) -> (u64, u64) {
        (self.commits, self.conflicts)
    }

    /// Drops the role (the lease that held the lock is gone).
    pub fn demote(&mut self) {
        self.lock = None;
    }

    /// One step, holding `lease` (the node's lease).
    pub fn tick(&mut self, kv: &mut dyn Kv, lease: i64) -> Result<Step, KvError> {
        // A follower reads the lock only; the coordinator reads it all.
        let lock = kv.range(&self.keys.coordinator(), false)?;
        if let Some(c) = lock.kvs.first() {
            if c.lease != lease || c.value != self.id.to_string().as_bytes() {
                self.lock = None;
                let holder = std::str::from_utf8(&c.value)
                    .ok()
                    .and_then(|v| v.parse().ok());
                return Ok(Step::Follower(holder));
            }
        }
        let mut st = State::read(kv, &self.keys)?;
        if !self.holds(&st, lease) {
            self.lock = None;
            if st.coordinator.is_some() {
                let holder = st
                    .coordinator
                    .as_ref()
                    .and_then(|c| std::str::from_utf8(&c.value).ok()?.parse().ok());
                return Ok(Step::Follower(holder));
            }
            let key = self.keys.coordinator();
            let claim = Txn {
                compare: vec![Compare {
                    key: key.clone(),
                    target: Target::Create(0),
                }],
                success: vec![Op::Put {
                    key,
                    value: self.id.to_string().into_bytes(),
                    lease,
                }],
                failure: vec![],
            };
            if !kv.txn(&claim)?.succeeded {
                return Ok(Step::Follower(None));
            }
            st = State::read(kv, &self.keys)?;
            if !self.holds(&st, lease) {
                return Ok(Step::Follower(None));
            }
        }
        let lock = self.lock.expect("held");
        if st.config.is_none() {
            return Ok(Step::NoCluster);
        }
        let Some(next) = map::next(st.map.as_ref(), &st.inputs()) else {
            return Ok(Step::Settled);
        };
        let mut compare = vec![
            Compare {
                key: self.keys.coordinator(),
                target: Target::Create(lock),
            },
            Compare {
                key: self.keys.map(),
                target: Target::Mod(st.map_revision),
            },
        ];
        for (id, n) in &next.nodes {
            let seen = st.nodes.get(id).map_or(0, |(_, rev)| *rev);
            debug_assert!(n.state != NodeState::Down || seen == 0);
            compare.push(Compare {
                key: self.keys.node(*id),
                target: Target::Create(seen),
            });
        }
        let mut success = vec![Op::Put {
            key: self.keys.map(),
            value: serde_json::to_vec(&next).expect("a map serializes"),
            lease: 0,
        }];
        for (s, r) in &st.releases {
            let done = next
                .shards
                .get(*s as usize)
                .is_none_or(|p| p.node != r.node || p.moving_to.is_none());
            if done {
                success.push(Op::Delete {
                    key: self.keys.release(*s),
                });
            }
        }
        let txn = Txn {
            compare,
            success,
            failure: vec![],
        };
        if kv.txn(&txn)?.succeeded {
            self.commits += 1;
            Ok(Step::Wrote(next))
        } else {
            self.conflicts += 1;
            Ok(Step::Conflict)
        }
    }

    fn holds(&mut self, st: &State, lease: i64) -> bool {
        match &st.coordinator {
            Some(c) if c.lease == lease && c.value == self.id.to_string().as_bytes() => {
                self.lock = Some(c.create_revision);
                true
            }
            _ => false,
        }
    }
}
