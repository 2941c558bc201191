//! The cluster's layout in etcd, and reading all of it at one revision.
//!
//! ```text
//! /flint/<cluster>/config          {"shards": N}          flint cluster create
//! /flint/<cluster>/members/<id>    "active"|"maint"|"remove"   flint cluster add|maint|remove
//! /flint/<cluster>/nodes/<id>      NodeRecord, under the node's lease
//! /flint/<cluster>/coordinator     the coordinator's id, under its lease
//! /flint/<cluster>/map             ClusterMap, written by the coordinator only
//! /flint/<cluster>/release/<shard> {"node", "epoch"}, under the releasing node's lease
//! /flint/<cluster>/buckets/<shard> {"node", "addr", "epoch"}, under the serving node's lease
//! /flint/<cluster>/bucket-state/<shard> {"gens", "stale", "evacuated"}: each slot's slice
//!                                  generation, the slots that missed writes (kept out until
//!                                  rebuilt), the slots its data was rebuilt without
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kv::{KeyValue, Kv, KvError};
use super::map::{ClusterMap, Inputs, Membership, NodeId, NodeRecord};

/// The cluster's config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDoc {
    /// Shards (buckets) of the cluster.
    pub shards: u32,
    /// Data chunks of a bucket's stripes (0: the cluster hosts no buckets).
    #[serde(default)]
    pub k: u8,
    /// Parity chunks of a bucket's stripes.
    #[serde(default)]
    pub m: u8,
}

/// A node's release of a shard it was handing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The node that stopped serving the shard.
    pub node: NodeId,
    /// The epoch of the map it saw the handoff in.
    pub epoch: u64,
}

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of cluster `name`.
    pub fn new(name: &str) -> Keys {
        Keys {
            prefix: format!("/flint/{name}/"),
        }
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    /// The prefix of every key of the cluster.
    pub fn root(&self) -> Vec<u8> {
        self.prefix.clone().into_bytes()
    }

    /// The config document.
    pub fn config(&self) -> Vec<u8> {
        self.key("config")
    }

    /// A member's intended state.
    pub fn member(&self, id: NodeId) -> Vec<u8> {
        self.key(&format!("members/{id}"))
    }

    /// A node's registration.
    pub fn node(&self, id: NodeId) -> Vec<u8> {
        self.key(&format!("nodes/{id}"))
    }

    /// The coordinator's lock.
    pub fn coordinator(&self) -> Vec<u8> {
        self.key("coordinator")
    }

    /// The map.
    pub fn map(&self) -> Vec<u8> {
        self.key("map")
    }

    /// Where a bucket is served.
    pub fn bucket(&self, shard: u32) -> Vec<u8> {
        self.key(&format!("buckets/{shard}"))
    }

    /// A bucket's slots: slice generations and stale slots.
    pub fn bucket_state(&self, shard: u32) -> Vec<u8> {
        self.key(&format!("bucket-state/{shard}"))
    }

    /// The release of a shard.
    pub fn release(&self, shard: u32) -> Vec<u8> {
        self.key(&format!("release/{shard}"))
    }
}

/// Everything under the cluster's prefix, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The revision it was read at.
    pub revision: i64,
    /// The config document (`None`: the cluster was not created).
    pub config: Option<ClusterDoc>,
    /// Members.
    pub members: BTreeMap<NodeId, Membership>,
    /// Registered nodes with the create revision of their key.
    pub nodes: BTreeMap<NodeId, (NodeRecord, i64)>,
    /// The coordinator's lock key.
    pub coordinator: Option<KeyValue>,
    /// The map and its key's mod revision (0: no map yet).
    pub map: Option<ClusterMap>,
    /// The map key's mod revision.
    pub map_revision: i64,
    /// Releases by shard.
    pub releases: BTreeMap<u32, Release>,
    /// Buckets' stale slots (slices that missed writes) not rebuilt yet,
    /// vacated slots aside.
    pub stale_slots: usize,
    /// Each bucket's stale slots.
    pub stale: BTreeMap<u32, std::collections::BTreeSet<usize>>,
    /// Each bucket's slots whose data has been rebuilt onto its others.
    pub evacuated: BTreeMap<u32, std::collections::BTreeSet<usize>>,
    /// Keys under the prefix that are not the cluster's (a bad value):
    /// reported, never acted on.
    pub unreadable: Vec<String>,
}

impl State {
    /// Reads the whole cluster in one range (one revision).
    pub fn read(kv: &mut dyn Kv, keys: &Keys) -> Result<State, KvError> {
        let range = kv.range(&keys.root(), true)?;
        let mut st = State {
            revision: range.revision,
            ..State::default()
        };
        let plen = keys.prefix.len();
        for item in range.kvs {
            let name = String::from_utf8_lossy(&item.key[plen.min(item.key.len())..]).to_string();
            let ok = st.take(&name, &item);
            if !ok {
                st.unreadable.push(name);
            }
        }
        // A vacated slot (its node left) has nothing to rebuild onto.
        st.stale_slots = st
            .stale
            .iter()
            .map(|(s, slots)| {
                let group = st
                    .map
                    .as_ref()
                    .and_then(|m| m.shards.get(*s as usize))
                    .map(|p| p.group.as_slice())
                    .unwrap_or_default();
                slots
                    .iter()
                    .filter(|slot| group.get(**slot) != Some(&super::map::VACANT))
                    .count()
            })
            .sum();
        Ok(st)
    }

    fn take(&mut self, name: &str, item: &KeyValue) -> bool {
        let id = |rest: &str| rest.parse::<u32>().ok();
        if name == "config" {
            self.config = serde_json::from_slice(&item.value).ok();
            return self.config.is_some();
        }
        if name == "coordinator" {
            self.coordinator = Some(item.clone());
            return true;
        }
        if name == "map" {
            self.map = serde_json::from_slice(&item.value).ok();
            self.map_revision = item.mod_revision;
            return self.map.is_some();
        }
        if let Some(n) = name.strip_prefix("members/").and_then(id) {
            let Ok(m) = serde_json::from_slice(&item.value) else {
                return false;
            };
            self.members.insert(n, m);
            return true;
        }
        if let Some(n) = name.strip_prefix("nodes/").and_then(id) {
            let Ok(r) = serde_json::from_slice::<NodeRecord>(&item.value) else {
                return false;
            };
            if r.id != n {
                return false;
            }
            self.nodes.insert(n, (r, item.create_revision));
            return true;
        }
        if name.strip_prefix("buckets/").and_then(id).is_some() {
            return true;
        }
        if let Some(shard) = name.strip_prefix("bucket-state/").and_then(id) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&item.value) else {
                return false;
            };
            let slots = |k: &str| -> std::collections::BTreeSet<usize> {
                v[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as usize)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (stale, evacuated) = (slots("stale"), slots("evacuated"));
            if !stale.is_empty() {
                self.stale.insert(shard, stale);
            }
            if !evacuated.is_empty() {
                self.evacuated.insert(shard, evacuated);
            }
            return true;
        }
        if let Some(s) = name.strip_prefix("release/").and_then(id) {
            let Ok(r) = serde_json::from_slice(&item.value) else {
                return false;
            };
            self.releases.insert(s, r);
            return true;
        }
        false
    }

    /// What the map rule needs.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            shards: self.config.map_or(0, |c| c.shards),
            buckets: self.config.is_some_and(|c| c.k > 0),
            members: self.members.clone(),
            alive: self.nodes.clone(),
            released: self
                .releases
                .iter()
                .map(|(s, r)| ((*s, r.node), r.epoch))
                .collect(),
            evacuated: self.evacuated.clone(),
        }
    }
}
