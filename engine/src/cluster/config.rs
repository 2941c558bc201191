//! `[cluster]` of the appliance's config: the etcd members, the cluster's
//! name, this node's id and its lease. Absent: a single node, its map on
//! its own devices, nothing else to run.

use std::path::PathBuf;

use flint_dataplane::config::ByteSize;
use serde::Deserialize;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd members, `host:port` (the client URLs of `etcd`).
    pub etcd: Vec<String>,
    /// The cluster's name: its keys live under `/flint/<name>/`.
    #[serde(default = "default_name")]
    pub name: String,
    /// This node's id in the cluster (1, 2, ...), unique and stable.
    pub node: u32,
    /// The node's lease in seconds: a node that cannot renew it stops
    /// acknowledging before it expires, and its shards move after it.
    #[serde(default = "default_ttl")]
    pub lease_ttl: u32,
    /// Where this node keeps the slices of the cluster's buckets (each
    /// bucket an engine with a slice on every node). Absent: the node
    /// keeps membership only and hosts no buckets.
    #[serde(default)]
    pub slice_dir: Option<PathBuf>,
    /// Size of each bucket's slice on this node.
    #[serde(default = "default_slice")]
    pub slice_size: ByteSize,
    /// The cluster's key (64 hex digits), the same file on every node:
    /// node-to-node sessions and the buckets' `default` organization use it.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Seconds a bucket's lost slot may come back in before the stripes
    /// that still have redundancy are rebuilt onto the other nodes
    /// (stripes left with none are rebuilt at once).
    #[serde(default = "default_grace")]
    pub rebuild_grace: u32,
    /// The largest share of a bucket reactor's time its rebuild takes, in
    /// percent: foreground I/O keeps the rest.
    #[serde(default = "default_share")]
    pub rebuild_share: u32,
}

fn default_grace() -> u32 {
    10
}

fn default_share() -> u32 {
    25
}

fn default_slice() -> ByteSize {
    ByteSize(1 << 30)
}

fn default_name() -> String {
    "flint".into()
}
fn default_ttl() -> u32 {
    5
}

impl ClusterConfig {
    /// Checks the section; an error is (key, what is wrong and the fix).
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((format!("cluster.{k}"), r));
        if self.etcd.is_empty() {
            return bad(
                "etcd",
                "needs at least one etcd member, like [\"127.0.0.1:2379\"]".into(),
            );
        }
        for e in &self.etcd {
            let hostport = e.trim_start_matches("http://").trim_end_matches('/');
            if hostport
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return bad(
                    "etcd",
                    format!("`{e}` is not host:port, like 127.0.0.1:2379"),
                );
            }
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return bad(
                "name",
                format!("`{}`: use 1-64 of [A-Za-z0-9_-]", self.name),
            );
        }
        if self.node == 0 {
            return bad("node", "node ids start at 1".into());
        }
        if self.slice_dir.is_some() && self.key_file.is_none() {
            return bad(
                "key_file",
                "slice_dir needs the cluster's key_file (the same 64 hex digits on every node)"
                    .into(),
            );
        }
        if self.slice_size.0 < (64 << 20) || !self.slice_size.0.is_multiple_of(4096) {
            return bad(
                "slice_size",
                format!(
                    "{} bytes: at least 64MiB, a multiple of 4KiB",
                    self.slice_size.0
                ),
            );
        }
        if !(1..=60).contains(&self.lease_ttl) {
            return bad(
                "lease_ttl",
                format!("{} s is out of range (1..=60)", self.lease_ttl),
            );
        }
        if !(1..=100).contains(&self.rebuild_share) {
            return bad(
                "rebuild_share",
                format!("{}% is out of range (1..=100)", self.rebuild_share),
            );
        }
        if self.rebuild_grace > 86_400 {
            return bad(
                "rebuild_grace",
                format!("{} s is more than a day", self.rebuild_grace),
            );
        }
        Ok(())
    }

    /// How the node rebuilds its buckets' lost slots.
    pub fn rebuild_policy(&self) -> super::rebuild::RebuildPolicy {
        super::rebuild::RebuildPolicy {
            grace: std::time::Duration::from_secs(u64::from(self.rebuild_grace)),
            share: f64::from(self.rebuild_share) / 100.0,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<(), (String, String)> {
        let c: ClusterConfig = toml::from_str(t).map_err(|e| ("parse".into(), e.to_string()))?;
        c.check()
    }

    #[test]
    fn bad_keys_are_named() {
        assert!(parse("etcd=[\"127.0.0.1:2379\"]\nnode=1\n").is_ok());
        assert_eq!(parse("etcd=[]\nnode=1\n").unwrap_err().0, "cluster.etcd");
        assert_eq!(
            parse("etcd=[\"localhost\"]\nnode=1\n").unwrap_err().0,
            "cluster.etcd"
        );
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=0\n").unwrap_err().0,
            "cluster.node"
        );
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=1\nname=\"a b\"\n")
                .unwrap_err()
                .0,
            "cluster.name"
        );
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=1\nlease_ttl=0\n")
                .unwrap_err()
                .0,
            "cluster.lease_ttl"
        );
        assert!(parse("etcd=[\"a:1\"]\nnode=1\nleas_ttl=3\n").is_err());
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=1\nslice_dir=\"/s\"\n")
                .unwrap_err()
                .0,
            "cluster.key_file"
        );
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=1\nslice_size=\"1MiB\"\n")
                .unwrap_err()
                .0,
            "cluster.slice_size"
        );
        assert_eq!(
            parse("etcd=[\"a:1\"]\nnode=1\nrebuild_share=0\n")
                .unwrap_err()
                .0,
            "cluster.rebuild_share"
        );
    }
}
