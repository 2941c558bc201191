//! The cluster: membership, the shard map and fencing, kept in etcd.
//!
//! Under a cluster prefix (`/flint/<name>/`) etcd holds the cluster's
//! config document, its members (what the CLI made them), each node's
//! registration under a lease of its own, the coordinator's lock (under
//! its holder's lease), the map (one versioned document with an epoch)
//! and the releases of shards being handed off ([`keys`]). Any node can be
//! the coordinator; a map change is one transaction guarded by the
//! coordinator's lock, the map's revision and the leases it relied on. A
//! node stops acknowledging writes before its lease can expire
//! ([`member::Fence`]). No data-path traffic goes through etcd.
//!
//! - [`kv`]: the etcd operations as a trait, and an in-process model of
//!   etcd for the simulation;
//! - [`etcd`]: the client of a real etcd (its v3 JSON gateway);
//! - [`map`]: the map and the pure rule for the next one;
//! - [`member`]: a node's registration, lease and fence, and its view of
//!   the map (releasing shards it hands off);
//! - [`coord`]: the coordinator;
//! - [`agent`]: both on a thread against etcd, for `flint serve`;
//! - [`config`]: the `[cluster]` table;
//! - [`slices`], [`remote`]: a node's slices of the buckets, served to and
//!   used by other nodes over the data protocol;
//! - [`buckets`]: the buckets a node owns, each an engine on its group's
//!   slices;
//! - [`rebuild`]: a bucket's lost slots rebuilt onto its survivors.

pub mod agent;
pub mod buckets;
pub mod config;
pub mod coord;
pub mod etcd;
pub mod keys;
pub mod kv;
pub mod map;
pub mod member;
pub mod rebuild;
pub mod remote;
#[cfg(test)]
mod sim;
pub mod slices;

pub use config::ClusterConfig;
pub use map::{ClusterMap, NodeId};
