//! `[nvmf]` of the appliance's config: where the NVMe/TCP target listens,
//! its subsystems, the hosts each admits and the volumes it exports, and
//! turning them into a [`Target`]'s subsystems at start (creating each
//! volume's file, sized, when it is missing).

use serde::Deserialize;

use super::subsystem::{Subsystem, Volume, DISCOVERY_NQN};
use crate::engine::Engine;
use flint_dataplane::config::ByteSize;

/// `[nvmf]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmfConfig {
    /// TCP address of the target (4420 is NVMe/TCP's port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Threads running writes, flushes and zeroing.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Most I/O queues one controller (host connection) gets.
    #[serde(default = "default_queues")]
    pub max_io_queues: u32,
    /// Subsystems exported.
    #[serde(default, rename = "subsystem")]
    pub subsystems: Vec<SubsystemConfig>,
}

/// `[[nvmf.subsystem]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsystemConfig {
    /// Its NQN (`nqn.YYYY-MM.reverse.domain:name`).
    pub nqn: String,
    /// Host NQNs admitted.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Admit any host (instead of `hosts`).
    #[serde(default)]
    pub allow_any_host: bool,
    /// Namespaces.
    #[serde(rename = "namespace")]
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[[nvmf.subsystem.namespace]]`: a volume, a file of a file system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// The file system holding the volume.
    pub filesystem: String,
    /// The volume's file (created at start when missing).
    pub file: String,
    /// The volume's size.
    pub size: ByteSize,
    /// Logical block size: 512 or 4096.
    #[serde(default = "default_block")]
    pub block_size: u32,
}

fn default_listen() -> String {
    "127.0.0.1:4420".into()
}
fn default_workers() -> usize {
    4
}
fn default_queues() -> u32 {
    8
}
fn default_block() -> u32 {
    4096
}

impl NvmfConfig {
    /// Checks the section; an error is (key, what is wrong and the fix).
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: String, r: String| Err((k, r));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "nvmf.listen".into(),
                format!("`{}` is not an address like 127.0.0.1:4420", self.listen),
            );
        }
        if self.workers == 0 || self.max_io_queues == 0 || self.max_io_queues > 64 {
            return bad(
                "nvmf.workers".into(),
                "workers at least 1, max_io_queues 1..=64".into(),
            );
        }
        let mut nqns: Vec<&str> = Vec::new();
        for s in &self.subsystems {
            let key = format!("nvmf.subsystem.{}", s.nqn);
            if !s.nqn.starts_with("nqn.") || s.nqn.len() > 223 || s.nqn == DISCOVERY_NQN {
                return bad(
                    format!("{key}.nqn"),
                    "an NQN starts with `nqn.`, is at most 223 bytes and is not the discovery NQN"
                        .into(),
                );
            }
            if nqns.contains(&s.nqn.as_str()) {
                return bad(format!("{key}.nqn"), "two subsystems have this NQN".into());
            }
            nqns.push(&s.nqn);
            if s.hosts.is_empty() && !s.allow_any_host {
                return bad(
                    format!("{key}.hosts"),
                    "no host may connect: list host NQNs (see /etc/nvme/hostnqn on the host) \
                     or set allow_any_host = true"
                        .into(),
                );
            }
            if s.namespaces.is_empty() {
                return bad(
                    format!("{key}.namespace"),
                    "a subsystem needs at least one [[nvmf.subsystem.namespace]]".into(),
                );
            }
            for (i, n) in s.namespaces.iter().enumerate() {
                let key = format!("{key}.namespace.{}", i + 1);
                if n.block_size != 512 && n.block_size != 4096 {
                    return bad(format!("{key}.block_size"), "512 or 4096".into());
                }
                if n.size.0 == 0 || !n.size.0.is_multiple_of(u64::from(n.block_size)) {
                    return bad(
                        format!("{key}.size"),
                        format!("a positive multiple of block_size ({})", n.block_size),
                    );
                }
                if n.file.trim_matches('/').is_empty() {
                    return bad(format!("{key}.file"), "name a file, like `vol0`".into());
                }
            }
        }
        Ok(())
    }

    /// The subsystems, their volumes opened (and created) on `engine`.
    pub fn subsystems(&self, engine: &Engine) -> Result<Vec<Subsystem>, String> {
        let fss = engine.fs_list().map_err(|e| format!("nvmf: {e}"))?;
        let mut out = Vec::new();
        for (si, s) in self.subsystems.iter().enumerate() {
            let mut namespaces = Vec::new();
            for (i, n) in s.namespaces.iter().enumerate() {
                let key = format!("nvmf.subsystem.{}.namespace.{}", s.nqn, i + 1);
                let Some((fs, _)) = fss.iter().find(|(f, _)| f.name == n.filesystem) else {
                    return Err(format!(
                        "{key}.filesystem: no file system named `{}`; create it \
                         (flint fs create, or a [[filesystem]] table) or fix the name",
                        n.filesystem
                    ));
                };
                let ino = match engine.lookup(fs.id, &n.file) {
                    Ok(Some(ino)) => ino,
                    Ok(None) => engine
                        .create(fs.id, &n.file)
                        .map_err(|e| format!("{key}.file: cannot create {}: {e}", n.file))?,
                    Err(e) => return Err(format!("{key}.file: {e}")),
                };
                let size = engine
                    .stat(ino)
                    .map_err(|e| format!("{key}.file: {e}"))?
                    .size;
                if size > n.size.0 {
                    return Err(format!(
                        "{key}.size: the file {} holds {size} bytes, more than size ({}); \
                         raise size (a volume never shrinks under its data)",
                        n.file, n.size.0
                    ));
                }
                if size < n.size.0 {
                    engine
                        .truncate(ino, n.size.0)
                        .map_err(|e| format!("{key}.size: cannot size {}: {e}", n.file))?;
                }
                let id = xxhash_rust::xxh3::xxh3_128(
                    format!("{}|{}|{}|{ino}", s.nqn, i + 1, fs.id).as_bytes(),
                );
                namespaces.push(Volume {
                    nsid: (i + 1) as u32,
                    name: format!("{}:/{}", n.filesystem, n.file.trim_start_matches('/')),
                    fs: fs.id,
                    ino,
                    bytes: n.size.0,
                    lba_shift: n.block_size.trailing_zeros() as u8,
                    uuid: id.to_le_bytes(),
                    write_back: fs.write_back,
                });
            }
            out.push(Subsystem {
                nqn: s.nqn.clone(),
                serial: format!("flint{:015}", si + 1),
                hosts: s.hosts.clone(),
                any_host: s.allow_any_host,
                namespaces,
            });
        }
        Ok(out)
    }
}
