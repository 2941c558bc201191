//! The appliance's config file: the dataplane's `[reactor]`, `[memory]` and
//! `[[device]]` tables, plus `[engine]`, `[server]`, `[[org]]` and
//! `[[filesystem]]`. Every key is documented in `configs/*.toml`; an
//! unknown key or a bad value is an error that names the key and the fix.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use flint_dataplane::bdev::{Backend, DeviceSpec};
use flint_dataplane::config::ByteSize;
use flint_dataplane::node::MemoryConfig;
use flint_dataplane::reactor::ReactorConfig;
use serde::Deserialize;

/// A config error: the key, what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (dotted path) or table.
    pub key: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `[engine]`: format-time geometry and run-time behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Shards (0: one per reactor).
    #[serde(default)]
    pub shards: u32,
    /// Chunk size of a stripe (format time).
    #[serde(default = "default_chunk")]
    pub chunk_size: ByteSize,
    /// Journal blocks per device (format time).
    #[serde(default = "default_journal")]
    pub journal_blocks: u64,
    /// Checkpoint blocks per device (format time).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_blocks: u64,
    /// Open stripes are sealed and made durable at least this often.
    #[serde(default = "default_seal")]
    pub seal_ms: u64,
    /// Metadata page cache of each shard, in MiB: the metadata's memory
    /// beyond the open files, whatever the number of files.
    #[serde(default = "default_meta_cache")]
    pub meta_cache_mib: u64,
}

fn default_chunk() -> ByteSize {
    ByteSize(128 << 10)
}
fn default_journal() -> u64 {
    8192
}
fn default_checkpoint() -> u64 {
    8192
}
fn default_seal() -> u64 {
    20
}
fn default_meta_cache() -> u64 {
    crate::store::META_CACHE_MIB as u64
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            shards: 0,
            chunk_size: default_chunk(),
            journal_blocks: default_journal(),
            checkpoint_blocks: default_checkpoint(),
            seal_ms: default_seal(),
            meta_cache_mib: default_meta_cache(),
        }
    }
}

/// `[server]`: where clients and the CLI reach the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Data protocol address (UDP).
    #[serde(default = "default_data")]
    pub data_addr: String,
    /// Management API address (HTTP).
    #[serde(default = "default_mgmt")]
    pub mgmt_addr: String,
    /// Management API token (required off loopback).
    #[serde(default)]
    pub token: Option<String>,
    /// Requests a session may have in flight.
    #[serde(default = "default_credits")]
    pub credits: u16,
    /// Largest frame (bytes).
    #[serde(default = "default_frame")]
    pub max_frame: usize,
    /// Threads running requests.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Seconds after which an idle session expires.
    #[serde(default = "default_idle")]
    pub idle_s: u64,
    /// `udp` (kernel sockets) or `dpdk` (NIC rings, see `[dpdk]`).
    #[serde(default)]
    pub transport: Transport,
}

/// How the data protocol reaches the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Kernel UDP sockets.
    #[default]
    Udp,
    /// DPDK: the NIC's rings, polled from user space.
    Dpdk,
}

/// `[dpdk]`: the EAL and the port, when `server.transport = "dpdk"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// Virtual devices (`net_memif0,role=server,socket=...`,
    /// `net_af_packet0,iface=eth1`).
    #[serde(default)]
    pub vdevs: Vec<String>,
    /// PCI devices to use (the allow-list); empty: no PCI scan.
    #[serde(default)]
    pub allow: Vec<String>,
    /// EAL file prefix (several DPDK processes on one machine need their
    /// own).
    #[serde(default)]
    pub file_prefix: Option<String>,
    /// Keep no shared files (one process, no secondaries).
    #[serde(default)]
    pub in_memory: bool,
    /// `va` or `pa`.
    #[serde(default = "default_iova")]
    pub iova: String,
    /// Ethdev port id.
    #[serde(default)]
    pub port: u16,
    /// This node's IPv4 address on the port's link.
    pub ip: std::net::Ipv4Addr,
    /// Link MTU (1500, or 9000 for jumbo frames).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Queue pairs, each polled by one reactor (0: one per reactor, or as
    /// many as the device has).
    #[serde(default)]
    pub queues: u16,
    /// Serve on kernel UDP instead when DPDK cannot start (off: a DPDK
    /// failure stops the node).
    #[serde(default)]
    pub fallback_to_udp: bool,
    /// Send answers from where they lie (external-buffer mbufs) where the
    /// PMD allows; false: copy every frame into an mbuf.
    #[serde(default = "yes")]
    pub zero_copy: bool,
    /// Hugepages: `auto` (use them when reserved and mounted, else run
    /// DPDK on ordinary memory), `require` (refuse to start without), or
    /// `off`.
    #[serde(default = "default_hugepages")]
    pub hugepages: String,
    /// More EAL arguments, passed as they are.
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_hugepages() -> String {
    "auto".into()
}
fn default_iova() -> String {
    "va".into()
}
fn default_mtu() -> u16 {
    1500
}

impl DpdkSection {
    /// The EAL arguments these settings mean.
    pub fn eal(&self, cores: &[usize]) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = cores.first() {
            a.extend(["-l".to_string(), c.to_string()]);
        }
        if self.allow.is_empty() {
            a.push("--no-pci".into());
        }
        for d in &self.allow {
            a.extend(["-a".to_string(), d.clone()]);
        }
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        if let Some(p) = &self.file_prefix {
            a.push(format!("--file-prefix={p}"));
        }
        if self.in_memory {
            a.push("--in-memory".into());
        }
        a.push(format!("--iova-mode={}", self.iova));
        a.extend(self.eal_args.iter().cloned());
        a
    }
}

fn default_data() -> String {
    "127.0.0.1:7400".into()
}
fn default_mgmt() -> String {
    "127.0.0.1:7480".into()
}
fn default_credits() -> u16 {
    64
}
fn default_frame() -> usize {
    crate::net::wire::DEFAULT_FRAME
}
fn default_workers() -> usize {
    16
}
fn default_idle() -> u64 {
    60
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            data_addr: default_data(),
            mgmt_addr: default_mgmt(),
            token: None,
            credits: default_credits(),
            max_frame: default_frame(),
            workers: default_workers(),
            idle_s: default_idle(),
            transport: Transport::Udp,
        }
    }
}

/// `[[org]]`: an organization created at first start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSection {
    /// Name.
    pub name: String,
    /// File its key is written to when it is created (mode 0600).
    pub key_file: PathBuf,
}

/// `[[filesystem]]`: a file system created at first start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSection {
    /// Name.
    pub name: String,
    /// Data chunks per stripe.
    pub k: u8,
    /// Parity chunks per stripe.
    pub m: u8,
    /// Dedup and compression.
    #[serde(default = "yes")]
    pub reduction: bool,
    /// Capacity in logical bytes.
    pub capacity: ByteSize,
    /// The organization that owns it.
    pub org: String,
    /// Acknowledge changes before they are durable (like NFS `async`):
    /// durable at the next fsync, sync or seal tick. Off by default.
    #[serde(default)]
    pub write_back: bool,
}

fn yes() -> bool {
    true
}

/// A whole appliance config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Reactors.
    #[serde(default)]
    pub reactor: ReactorConfig,
    /// DMA memory.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Devices, in order.
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceSpec>,
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineSection,
    /// Server settings.
    #[serde(default)]
    pub server: ServerSection,
    /// DPDK settings (with `server.transport = "dpdk"`).
    #[serde(default)]
    pub dpdk: Option<DpdkSection>,
    /// Organizations to create.
    #[serde(default, rename = "org")]
    pub orgs: Vec<OrgSection>,
    /// File systems to create.
    #[serde(default, rename = "filesystem")]
    pub filesystems: Vec<FsSection>,
    /// The NVMe/TCP target (absent: none).
    #[serde(default)]
    pub nvmf: Option<crate::nvmf::NvmfConfig>,
    /// Membership of a cluster kept in etcd (absent: a single node).
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| bad(key, format!("`{v}` is not an address like 127.0.0.1:7400")))
}

impl ApplianceConfig {
    /// Parses and checks TOML text; relative device paths resolve against
    /// `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut cfg: ApplianceConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| text[s].lines().next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            let msg = e.message().replace('\n', " ");
            bad(
                if at.is_empty() {
                    "file".to_string()
                } else {
                    at
                },
                format!("{msg} (see configs/dev.toml for every key)"),
            )
        })?;
        for d in &mut cfg.devices {
            if let Some(p) = &d.path {
                if p.is_relative() {
                    d.path = Some(base.join(p));
                }
            }
        }
        for o in &mut cfg.orgs {
            if o.key_file.is_relative() {
                o.key_file = base.join(&o.key_file);
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(path.display().to_string(), format!("cannot read it: {e}")))?;
        let base = path
            .parent()
            .map(|p| p.join(".."))
            .unwrap_or_else(|| PathBuf::from("."));
        // Paths are relative to the directory the config's directory sits
        // in (the repository root for configs/*.toml).
        Self::from_toml(&text, &base)
    }

    /// The data address.
    pub fn data_addr(&self) -> Result<SocketAddr, ConfigError> {
        addr("server.data_addr", &self.server.data_addr)
    }

    /// The management address.
    pub fn mgmt_addr(&self) -> Result<SocketAddr, ConfigError> {
        addr("server.mgmt_addr", &self.server.mgmt_addr)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.devices.is_empty() {
            return Err(bad(
                "device",
                "no [[device]] tables; add one per NVMe namespace or file",
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for d in &self.devices {
            let key = format!("device.{}", d.name);
            if names.contains(&d.name.as_str()) {
                return Err(bad(format!("{key}.name"), "two devices have this name"));
            }
            names.push(&d.name);
            if d.backend == Backend::Uring {
                let Some(p) = &d.path else {
                    return Err(bad(format!("{key}.path"), "required for a uring device"));
                };
                if !p.exists() && d.size.is_none() {
                    return Err(bad(
                        format!("{key}.path"),
                        format!(
                            "{} does not exist; fix the path, or give a size to create a file",
                            p.display()
                        ),
                    ));
                }
            }
        }
        if self.server.transport == Transport::Dpdk {
            let Some(d) = &self.dpdk else {
                return Err(bad(
                    "dpdk",
                    "server.transport = \"dpdk\" needs a [dpdk] table (vdevs or allow, ip)",
                ));
            };
            if d.vdevs.is_empty() && d.allow.is_empty() {
                return Err(bad(
                    "dpdk.vdevs",
                    "name a vdev or a PCI device in dpdk.allow",
                ));
            }
            if d.iova != "va" && d.iova != "pa" {
                return Err(bad(
                    "dpdk.iova",
                    format!("`{}` is neither va nor pa", d.iova),
                ));
            }
            if !(576..=9216).contains(&d.mtu) {
                return Err(bad("dpdk.mtu", "between 576 and 9216"));
            }
            if !["auto", "require", "off"].contains(&d.hugepages.as_str()) {
                return Err(bad(
                    "dpdk.hugepages",
                    format!("`{}` is none of auto, require, off", d.hugepages),
                ));
            }
        }
        if self.engine.shards > 255 {
            return Err(bad("engine.shards", "at most 255"));
        }
        if !self.engine.chunk_size.0.is_multiple_of(4096) || self.engine.chunk_size.0 == 0 {
            return Err(bad(
                "engine.chunk_size",
                "must be a positive multiple of 4KiB",
            ));
        }
        let data = self.data_addr()?;
        let mgmt = self.mgmt_addr()?;
        if data.port() != 0 && data == mgmt {
            return Err(bad("server.mgmt_addr", "must differ from server.data_addr"));
        }
        if !mgmt.ip().is_loopback() && self.server.token.as_deref().unwrap_or("").is_empty() {
            return Err(bad(
                "server.token",
                format!("required when the management API listens off loopback ({mgmt})"),
            ));
        }
        if self.server.max_frame < crate::net::wire::MIN_FRAME
            || self.server.max_frame > flint_dataplane::nic::MAX_FRAME
        {
            return Err(bad(
                "server.max_frame",
                format!(
                    "{} is out of range ({}..={})",
                    self.server.max_frame,
                    crate::net::wire::MIN_FRAME,
                    flint_dataplane::nic::MAX_FRAME
                ),
            ));
        }
        if let Some(n) = &self.nvmf {
            n.check().map_err(|(k, r)| bad(k, r))?;
        }
        if let Some(c) = &self.cluster {
            c.check().map_err(|(k, r)| bad(k, r))?;
        }
        for f in &self.filesystems {
            let key = format!("filesystem.{}", f.name);
            if f.k == 0 || f.m == 0 {
                return Err(bad(key, "k and m must each be at least 1"));
            }
            let w = usize::from(f.k) + usize::from(f.m);
            if w > self.devices.len() {
                return Err(bad(
                    key,
                    format!(
                        "k+m = {w} needs {w} devices (one chunk per device), the config has {}; \
                         lower k or m, or add devices",
                        self.devices.len()
                    ),
                ));
            }
            if !self.orgs.iter().any(|o| o.name == f.org) {
                return Err(bad(
                    format!("{key}.org"),
                    format!("no [[org]] named `{}`; declare it", f.org),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<ApplianceConfig, ConfigError> {
        let text = format!(
            "[[device]]\nname = \"a\"\nbackend = \"memory\"\nsize = \"64MiB\"\n\
             [[device]]\nname = \"b\"\nbackend = \"memory\"\nsize = \"64MiB\"\n\
             [[device]]\nname = \"c\"\nbackend = \"memory\"\nsize = \"64MiB\"\n{extra}"
        );
        ApplianceConfig::from_toml(&text, Path::new("."))
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == "embedded.toml") {
                ApplianceConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        assert!(parse("").is_ok());
        let e = parse("[server]\ndata_adr = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("data_adr"), "{e}");
        let e = parse("[server]\ndata_addr = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "server.data_addr");
        let e = parse("[[org]]\nname=\"o\"\nkey_file=\"k\"\n[[filesystem]]\nname=\"f\"\nk=3\nm=2\ncapacity=\"1GiB\"\norg=\"o\"\n").unwrap_err();
        assert!(e.reason.contains("k+m = 5 needs 5 devices"), "{e}");
        let e = parse("[[filesystem]]\nname=\"f\"\nk=2\nm=1\ncapacity=\"1GiB\"\norg=\"o\"\n")
            .unwrap_err();
        assert_eq!(e.key, "filesystem.f.org");
        let e = parse("[server]\nmgmt_addr = \"0.0.0.0:7480\"\n").unwrap_err();
        assert_eq!(e.key, "server.token");
        let e = parse("[engine]\nchunk_size = \"1000\"\n").unwrap_err();
        assert_eq!(e.key, "engine.chunk_size");
        let e = ApplianceConfig::from_toml(
            "[[device]]\nname=\"n\"\nbackend=\"uring\"\npath=\"/nonexistent/flint0\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.key, "device.n.path");
        assert!(e.reason.contains("does not exist"), "{e}");
        let ns = "[[nvmf.subsystem.namespace]]\nfilesystem=\"f\"\nfile=\"v\"\nsize=\"1GiB\"\n";
        let e = parse(&format!(
            "[nvmf]\n[[nvmf.subsystem]]\nnqn=\"nqn.x:y\"\n{ns}"
        ))
        .unwrap_err();
        assert_eq!(e.key, "nvmf.subsystem.nqn.x:y.hosts");
        let e = parse(&format!(
            "[nvmf]\n[[nvmf.subsystem]]\nnqn=\"x\"\nallow_any_host=true\n{ns}"
        ))
        .unwrap_err();
        assert!(e.reason.contains("nqn."), "{e}");
        let e = parse(&format!(
            "[nvmf]\n[[nvmf.subsystem]]\nnqn=\"nqn.x:y\"\nallow_any_host=true\n{ns}block_size=1024\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "nvmf.subsystem.nqn.x:y.namespace.1.block_size");
        let e = parse("[nvmf]\nlisten=\"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "nvmf.listen");
        let e = parse("[nvmf]\nlisen=\"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = parse("[reactor]\npoll_mode = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
