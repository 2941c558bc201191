//! The DPDK port: the data protocol's frames in Ethernet/IPv4/UDP on a
//! DPDK ethdev — a NIC, or here the virtual devices `net_memif` (shared
//! memory between processes) and `net_af_packet` (a kernel interface) —
//! polled from user space. Frames are exactly the kernel UDP port's, so a
//! kernel-UDP client talks to a DPDK server and the reverse.
//!
//! One rx/tx queue pair per reactor (each with its own mbuf pool), spread
//! by RSS when the device has several; [`DpdkPort::queues`] hands out one
//! [`Port`] per queue for its reactor to poll. A device with a single queue
//! gets one, and the receiving side hands work to other cores in software.
//! Sends from any thread take the queue's transmit lock (DPDK queues are
//! single-threaded).
//! ARP: requests for our address are answered and every peer's address is
//! learned from its frames; a frame to an unknown peer sends an ARP request
//! and is dropped (the protocol retransmits). IPv4 and UDP checksums are
//! written in software (the virtual PMDs here offer no offload); UDP's is
//! left zero, as IPv4 allows. Frames larger than one mbuf segment are
//! dropped and counted.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dpdk_sys as sys;

use super::Port;

/// Settings of a DPDK port.
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// EAL arguments (`--vdev`, `--no-pci`/`-a`, `--file-prefix` or
    /// `--in-memory`, `--iova-mode`...). `--no-huge -m 512` is added when
    /// hugepages are not to be used (see `hugepages`).
    pub eal_args: Vec<String>,
    /// Whether DPDK's memory comes from hugepages.
    pub hugepages: Hugepages,
    /// Ethdev port id.
    pub port: u16,
    /// Our IPv4 address on the link.
    pub ip: Ipv4Addr,
    /// Our UDP port.
    pub udp_port: u16,
    /// Link MTU (1500; 9000 for jumbo frames).
    pub mtu: u16,
    /// Queue pairs (receive and transmit) asked for, one per reactor that
    /// polls; 0: as many as the device has, up to 64.
    pub queues: u16,
    /// Transmit answers from where they lie (external-buffer mbufs) where
    /// the PMD allows: it sends chained mbufs and does no DMA of its own
    /// (a software PMD). Off: every frame is copied into an mbuf.
    pub zero_copy: bool,
    /// How long opening waits for the link to come up (a memif peer may
    /// still be connecting); it serves anyway after, and frames sent
    /// before are lost and retransmitted.
    pub link_wait: Duration,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            eal_args: Vec::new(),
            port: 0,
            ip: Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 7400,
            mtu: 9000,
            queues: 1,
            zero_copy: true,
            link_wait: Duration::from_secs(2),
            hugepages: Hugepages::Auto,
        }
    }
}

fn err(what: &str) -> io::Error {
    // SAFETY: reads DPDK's thread-local errno and its static message.
    let (code, msg) = unsafe {
        let code = sys::flint_rte_errno();
        (
            code,
            CStr::from_ptr(sys::rte_strerror(code))
                .to_string_lossy()
                .into_owned(),
        )
    };
    io::Error::other(format!("{what}: {msg} (rte_errno {code})"))
}

static EAL: OnceLock<()> = OnceLock::new();

/// A thread's registration with DPDK (an lcore id, which gives it the
/// mempools' per-core caches: mbufs allocated and freed without touching
/// the shared ring), given back when the thread ends.
struct Registered(bool);

impl Drop for Registered {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: this thread registered itself (below) and is ending.
            unsafe { sys::rte_thread_unregister() };
        }
    }
}

thread_local! {
    static REGISTERED: std::cell::OnceCell<Registered> = const { std::cell::OnceCell::new() };
}

/// Registers the calling thread with DPDK once (reactors, workers and
/// clients that touch a queue). Without a free lcore id it works on,
/// uncached.
fn register_thread() {
    REGISTERED.with(|r| {
        r.get_or_init(|| {
            // SAFETY: called after EAL init (a port exists), once per
            // thread; failure leaves the thread unregistered, which DPDK
            // allows.
            Registered(unsafe { sys::rte_thread_register() } == 0)
        });
    });
}

/// Where DPDK's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hugepages {
    /// Hugepages when some are free and a hugetlbfs mount is writable;
    /// ordinary memory (`--no-huge -m 512`) otherwise.
    Auto,
    /// Hugepages or a clear error saying what is missing.
    Require,
    /// Ordinary memory.
    Off,
}

/// What the machine offers DPDK in hugepages.
#[derive(Debug, Clone)]
struct HugeFacts {
    /// Default-size hugepages reserved and free.
    reserved: u64,
    free: u64,
    /// The first hugetlbfs mount, and whether this process may create
    /// files in it.
    mount: Option<(String, bool)>,
}

impl HugeFacts {
    fn read() -> HugeFacts {
        let num = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mount = std::fs::read_to_string("/proc/mounts")
            .ok()
            .and_then(|m| {
                m.lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .find(|f| f.get(2) == Some(&"hugetlbfs"))
                    .and_then(|f| f.get(1).map(|d| d.to_string()))
            })
            .map(|d| {
                let c = CString::new(d.as_str()).unwrap_or_default();
                // SAFETY: access(2) on a NUL-terminated path.
                let w = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
                (d, w)
            });
        HugeFacts {
            reserved: num("/proc/sys/vm/nr_hugepages").max(field("HugePages_Total:")),
            free: field("HugePages_Free:"),
            mount,
        }
    }

    /// Whether to use hugepages under `policy`, or why it cannot start.
    fn decide(&self, policy: Hugepages) -> Result<bool, String> {
        let missing = if self.reserved == 0 {
            Some(
                "no hugepages are reserved (/proc/sys/vm/nr_hugepages is 0): \
                 echo 512 > /proc/sys/vm/nr_hugepages"
                    .to_string(),
            )
        } else if self.free == 0 {
            Some(format!(
                "all {} reserved hugepages are in use: reserve more or stop what holds them",
                self.reserved
            ))
        } else {
            match &self.mount {
                None => Some(
                    "no hugetlbfs is mounted: mount -t hugetlbfs nodev /dev/hugepages".to_string(),
                ),
                Some((dir, false)) => Some(format!(
                    "no permission: this process (uid {}) cannot create files in the \
                     hugetlbfs mount {dir}: run as root, or mount it with uid=/gid= for this user",
                    // SAFETY: geteuid(2) cannot fail.
                    unsafe { libc::geteuid() }
                )),
                Some((_, true)) => None,
            }
        };
        match (policy, missing) {
            (Hugepages::Off, _) => Ok(false),
            (Hugepages::Auto, m) => Ok(m.is_none()),
            (Hugepages::Require, None) => Ok(true),
            (Hugepages::Require, Some(why)) => Err(format!(
                "DPDK needs hugepages (dpdk.hugepages = \"require\"): {why}; \
                 or set dpdk.hugepages = \"auto\" to run on ordinary memory"
            )),
        }
    }
}

/// Capabilities DPDK's devices need, by bit number (capabilities(7)).
const DPDK_CAPS: &[(u32, &str)] = &[
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (14, "CAP_IPC_LOCK"),
    (21, "CAP_SYS_ADMIN"),
];

/// When this process lacks privileges DPDK's devices need (raw sockets
/// for af_packet, VFIO, locked memory), says which and what to do.
fn privileges_missing() -> Option<String> {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        })
        .unwrap_or(0);
    let lacking: Vec<&str> = DPDK_CAPS
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, n)| *n)
        .collect();
    if lacking.is_empty() {
        return None;
    }
    Some(format!(
        "no permission: this process (uid {}) lacks {}, which DPDK's devices need; \
         run flint as root or grant them (setcap {}+ep)",
        // SAFETY: geteuid(2) cannot fail.
        unsafe { libc::geteuid() },
        lacking.join(", "),
        lacking
            .iter()
            .map(|c| c.to_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    ))
}

/// Initialises DPDK's EAL, once per process, its memory from hugepages
/// as `hugepages` says. A second call is an error (DPDK cannot be
/// initialised twice).
pub fn eal_init(args: &[String], hugepages: Hugepages) -> io::Result<()> {
    if EAL.get().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the DPDK EAL is already initialised in this process (one DPDK port set per process)",
        ));
    }
    let huge = HugeFacts::read()
        .decide(hugepages)
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let mut argv: Vec<String> = vec!["flint".into()];
    argv.extend(args.iter().cloned());
    if !huge && !args.iter().any(|a| a == "--no-huge") {
        argv.extend(["--no-huge".into(), "-m".into(), "512".into()]);
    }
    if !args
        .iter()
        .any(|a| a.starts_with("--telemetry") || a == "--no-telemetry")
    {
        argv.push("--no-telemetry".into());
    }
    if !args.iter().any(|a| a.starts_with("--log-level")) {
        argv.push("--log-level=lib.eal:error".into());
    }
    let c: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_str()).map_err(|_| io::Error::other("EAL argument with a NUL byte"))
        })
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*mut libc::c_char> =
        c.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    // The EAL pins the calling thread to its main lcore; Flint's reactors
    // place themselves, so the caller's CPU set is put back after.
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid cpu_set_t of the size passed, for this thread.
    let saved = unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) == 0
    };
    // SAFETY: argv points to argc valid NUL-terminated strings that outlive
    // the call (EAL may permute the pointer array, which we own).
    let r = unsafe { sys::rte_eal_init(ptrs.len() as i32, ptrs.as_mut_ptr()) };
    if saved {
        // SAFETY: the set read above, for this thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) };
    }
    if r < 0 {
        let e = err("DPDK EAL initialisation failed");
        let hint = privileges_missing()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        return Err(io::Error::other(format!(
            "{e}{hint}; EAL arguments: {}",
            argv[1..].join(" ")
        )));
    }
    let _ = EAL.set(());
    Ok(())
}

const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;
const HDRS: usize = ETH + IP + UDP;

/// Counters of a DPDK port.
#[derive(Debug, Default)]
pub struct DpdkStats {
    /// Frames received for us.
    pub rx: AtomicU64,
    /// Frames sent.
    pub tx: AtomicU64,
    /// Frames dropped: not for us, malformed, multi-segment.
    pub rx_dropped: AtomicU64,
    /// Sends dropped: no MAC for the peer yet (an ARP request went out).
    pub arp_misses: AtomicU64,
    /// Sends dropped: the transmit queue was full.
    pub tx_full: AtomicU64,
    /// Frames whose payload was sent from where it lay (an external
    /// buffer chained after the headers), not copied.
    pub tx_zero_copy: AtomicU64,
    /// Payload bytes sent that way.
    pub tx_zero_copy_bytes: AtomicU64,
    /// Frames lent to the receiver where they lay in their mbuf.
    pub rx_in_place: AtomicU64,
}

/// Payloads shorter than this are copied (an external buffer costs an
/// allocation and a second mbuf, more than copying a few hundred bytes).
const ZERO_COPY_MIN: usize = 512;

/// What follows a frame's headers: nothing, or a range of a shared buffer
/// (sent from where it lies when the port can).
#[derive(Clone, Copy)]
enum Tail<'a> {
    None,
    Shared(&'a std::sync::Arc<Vec<u8>>, &'a std::ops::Range<usize>),
}

impl Tail<'_> {
    fn len(&self) -> usize {
        match self {
            Tail::None => 0,
            Tail::Shared(_, r) => r.len(),
        }
    }
}

/// Software PMDs: they copy frames themselves and do no DMA, so they may
/// transmit from any memory (a NIC needs it mapped for DMA first).
const SOFTWARE_PMDS: &[&str] = &[
    "net_memif",
    "net_af_packet",
    "net_ring",
    "net_tap",
    "net_pcap",
    "net_null",
];

/// Releases the reference an external buffer held (DPDK calls it when the
/// last mbuf using the buffer is freed, from whichever thread frees it).
extern "C" fn release_shared(owner: *mut libc::c_void) {
    // SAFETY: `owner` is the reference `transmit` leaked with
    // Arc::into_raw for this buffer; DPDK calls this once per attach.
    drop(unsafe { std::sync::Arc::from_raw(owner.cast_const().cast::<Vec<u8>>()) });
}

struct Rx {
    burst: [*mut sys::rte_mbuf; 32],
    n: usize,
    at: usize,
}

/// One queue pair with its own mbuf pool.
struct Queue {
    pool: *mut sys::rte_mempool,
    rx: Mutex<Rx>,
    tx: Mutex<()>,
}

/// A DPDK ethdev port carrying the protocol's frames.
pub struct DpdkPort {
    cfg: DpdkConfig,
    mac: [u8; 6],
    queues: Vec<Queue>,
    /// The NIC fills in IPv4 header checksums on transmit.
    tx_csum: bool,
    /// The NIC checks IPv4 header checksums on receive.
    rx_csum: bool,
    /// Payloads are transmitted from where they lie.
    zero_copy: bool,
    arp: Mutex<HashMap<Ipv4Addr, [u8; 6]>>,
    ip_id: AtomicU64,
    /// Counters.
    pub stats: DpdkStats,
}

// SAFETY: the mbuf pointers in `rx` and the pool are only touched under the
// rx/tx locks (DPDK queues are single-threaded; the mempool is
// multi-thread safe), so the port may move between and be shared by
// threads.
unsafe impl Send for DpdkPort {}
// SAFETY: as above.
unsafe impl Sync for DpdkPort {}

impl DpdkPort {
    /// Initialises the EAL with `cfg.eal_args` and opens `cfg.port`.
    pub fn open(cfg: DpdkConfig) -> io::Result<DpdkPort> {
        eal_init(&cfg.eal_args, cfg.hugepages)?;
        Self::open_port(cfg)
    }

    /// Opens `cfg.port` on an initialised EAL.
    pub fn open_port(cfg: DpdkConfig) -> io::Result<DpdkPort> {
        // SAFETY: plain DPDK calls on an initialised EAL with valid
        // pointers to stack structs; each result is checked.
        unsafe {
            let avail = sys::rte_eth_dev_count_avail();
            if cfg.port >= avail {
                // A device that failed to probe for want of privileges
                // leaves no port: say so rather than blame the list.
                let why = privileges_missing()
                    .unwrap_or_else(|| "check the --vdev or PCI allow-list".into());
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no DPDK port {} ({avail} available): {why}", cfg.port),
                ));
            }
            let mut info: sys::rte_eth_dev_info = std::mem::zeroed();
            if sys::rte_eth_dev_info_get(cfg.port, &mut info) != 0 {
                return Err(err("rte_eth_dev_info_get"));
            }
            let most = info.max_rx_queues.min(info.max_tx_queues).max(1);
            let n = if cfg.queues == 0 {
                most.min(64)
            } else {
                cfg.queues
            };
            if n > most {
                return Err(io::Error::other(format!(
                    "DPDK port {} has {} receive and {} transmit queues, {} asked for: \
                     ask for fewer queues or use a NIC with more",
                    cfg.port, info.max_rx_queues, info.max_tx_queues, n
                )));
            }
            // A whole frame in one segment, with slack for PMDs whose
            // receive slots carry a header of their own (af_packet's).
            let data = (usize::from(cfg.mtu) + ETH + 4 + 1024).next_multiple_of(1024);
            let room = (data + sys::RTE_PKTMBUF_HEADROOM as usize)
                .max(sys::RTE_MBUF_DEFAULT_BUF_SIZE as usize) as u16;
            // An mbuf pool per queue (per core: no sharing on the data path).
            let mut pools: Vec<*mut sys::rte_mempool> = Vec::new();
            let free_all = |pools: &[*mut sys::rte_mempool]| {
                for &p in pools {
                    sys::rte_mempool_free(p);
                }
            };
            for q in 0..n {
                let name = CString::new(format!("flint-mbufs-{}-{q}", cfg.port)).expect("no NUL");
                let pool = sys::rte_pktmbuf_pool_create(
                    name.as_ptr(),
                    2047,
                    128,
                    0,
                    room,
                    sys::rte_socket_id() as i32,
                );
                if pool.is_null() {
                    let e = err("cannot create an mbuf pool (memory: -m, or hugepages)");
                    free_all(&pools);
                    return Err(e);
                }
                pools.push(pool);
            }
            let mut conf: sys::rte_eth_conf = std::mem::zeroed();
            conf.rxmode.mtu = u32::from(cfg.mtu);
            // Checksum offload when the PMD offers it (software otherwise).
            let csum = sys::flint_offload_ipv4_cksum();
            let tx_csum = info.tx_offload_capa & csum != 0;
            let rx_csum = info.rx_offload_capa & csum != 0;
            if tx_csum {
                conf.txmode.offloads |= csum;
            }
            if rx_csum {
                conf.rxmode.offloads |= csum;
            }
            // Zero-copy transmission: chained mbufs, the payload's an
            // external buffer.
            let driver = if info.driver_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.driver_name)
                    .to_string_lossy()
                    .into_owned()
            };
            let multi = sys::flint_offload_multi_segs();
            let zero_copy = cfg.zero_copy
                && info.tx_offload_capa & multi != 0
                && SOFTWARE_PMDS.contains(&driver.as_str());
            if zero_copy {
                conf.txmode.offloads |= multi;
            } else if cfg.zero_copy {
                tracing::info!(
                    port = cfg.port,
                    driver,
                    multi_segs = info.tx_offload_capa & multi != 0,
                    "frames are copied into mbufs: zero-copy needs a PMD that sends chained \
                     mbufs and DMA-mapped answer buffers (software PMDs only here)"
                );
            }
            if n > 1 {
                // Spread flows over the queues by hash (RSS).
                conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = info.flow_type_rss_offloads;
            }
            if sys::rte_eth_dev_configure(cfg.port, n, n, &conf) != 0 {
                // Some PMDs refuse the MTU in configure; try the default.
                conf.rxmode.mtu = 0;
                if sys::rte_eth_dev_configure(cfg.port, n, n, &conf) != 0 {
                    let e = err("rte_eth_dev_configure");
                    free_all(&pools);
                    return Err(e);
                }
            }
            let socket = sys::rte_socket_id();
            for q in 0..n {
                let pool = pools[usize::from(q)];
                if sys::rte_eth_rx_queue_setup(cfg.port, q, 1024, socket, std::ptr::null(), pool)
                    != 0
                    || sys::rte_eth_tx_queue_setup(cfg.port, q, 1024, socket, std::ptr::null()) != 0
                {
                    let e = err("setting up a queue pair");
                    free_all(&pools);
                    return Err(e);
                }
            }
            if sys::rte_eth_dev_set_mtu(cfg.port, cfg.mtu) != 0 {
                tracing::warn!(
                    port = cfg.port,
                    mtu = cfg.mtu,
                    "the PMD refused the MTU; frames above its own are dropped"
                );
            }
            if sys::rte_eth_dev_start(cfg.port) != 0 {
                let e = err("rte_eth_dev_start");
                free_all(&pools);
                return Err(e);
            }
            let _ = sys::rte_eth_promiscuous_enable(cfg.port);
            // Wait (briefly) for the link: a memif peer may still be
            // connecting. Frames sent before are lost and retransmitted.
            let t0 = Instant::now();
            let wait = cfg.link_wait;
            loop {
                let mut link: sys::rte_eth_link = std::mem::zeroed();
                let _ = sys::rte_eth_link_get_nowait(cfg.port, &mut link);
                if link.link_status() == 1 {
                    break;
                }
                if t0.elapsed() >= wait {
                    if !wait.is_zero() {
                        tracing::warn!(port = cfg.port, ?wait, "link still down; serving anyway");
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut mac: sys::rte_ether_addr = std::mem::zeroed();
            if sys::rte_eth_macaddr_get(cfg.port, &mut mac) != 0 {
                return Err(err("rte_eth_macaddr_get"));
            }
            tracing::info!(
                port = cfg.port,
                ip = %cfg.ip,
                mtu = cfg.mtu,
                queues = n,
                tx_csum,
                rx_csum,
                zero_copy,
                driver,
                "DPDK port up"
            );
            Ok(DpdkPort {
                mac: mac.addr_bytes,
                queues: pools
                    .into_iter()
                    .map(|pool| Queue {
                        pool,
                        rx: Mutex::new(Rx {
                            burst: [std::ptr::null_mut(); 32],
                            n: 0,
                            at: 0,
                        }),
                        tx: Mutex::new(()),
                    })
                    .collect(),
                tx_csum,
                rx_csum,
                zero_copy,
                arp: Mutex::new(HashMap::new()),
                ip_id: AtomicU64::new(1),
                stats: DpdkStats::default(),
                cfg,
            })
        }
    }

    /// Largest protocol frame this port carries (the MTU less IPv4 and UDP
    /// headers).
    pub fn max_frame(&self) -> usize {
        usize::from(self.cfg.mtu) - IP - UDP
    }

    /// Our MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Queue pairs.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The port as one [`Port`]: its first queue pair (a port with one
    /// queue, or one used by one thread).
    pub fn first_queue(self) -> DpdkQueue {
        DpdkQueue {
            port: std::sync::Arc::new(self),
            q: 0,
        }
    }

    /// One [`Port`] per queue pair, for the reactor that polls it.
    pub fn queues(self: &std::sync::Arc<Self>) -> Vec<DpdkQueue> {
        (0..self.queues.len())
            .map(|q| DpdkQueue {
                port: self.clone(),
                q,
            })
            .collect()
    }

    /// Whether payloads are transmitted from where they lie.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Sends one Ethernet frame on queue `q`: `len` bytes built by `fill`
    /// (given them to write), then `tail` — chained as an external buffer
    /// when the port sends from where payloads lie and the tail is worth
    /// it, copied after the rest otherwise.
    fn transmit(
        &self,
        q: usize,
        len: usize,
        offload_ip_csum: bool,
        tail: Tail<'_>,
        fill: impl FnOnce(&mut [u8]),
    ) -> io::Result<()> {
        let queue = &self.queues[q];
        let chained = match tail {
            Tail::Shared(_, r) => self.zero_copy && r.len() >= ZERO_COPY_MIN,
            Tail::None => false,
        };
        let copied = if chained { 0 } else { tail.len() };
        register_thread();
        let _g = queue
            .tx
            .lock()
            .map_err(|_| io::Error::other("tx lock poisoned"))?;
        // SAFETY: the pool is live; the mbufs are ours until tx_burst takes
        // them (or we free them); `append` gives `len + copied` writable
        // bytes. An external buffer holds a reference to its Arc (leaked
        // with into_raw, kept in the mbuf's own room) until DPDK frees it,
        // so the bytes stay alive and unchanged (the Arc's Vec is never
        // written while shared) for as long as the NIC may read them.
        unsafe {
            let m = sys::flint_pktmbuf_alloc(queue.pool);
            if m.is_null() {
                self.stats.tx_full.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "mbuf pool empty"));
            }
            let p = sys::flint_pktmbuf_append(m, (len + copied) as u16);
            if p.is_null() {
                sys::flint_pktmbuf_free(m);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "frame larger than an mbuf",
                ));
            }
            let frame = std::slice::from_raw_parts_mut(p.cast::<u8>(), len + copied);
            fill(&mut frame[..len]);
            if let Tail::Shared(body, r) = tail {
                if chained {
                    let ext = sys::flint_pktmbuf_alloc(queue.pool);
                    if ext.is_null() {
                        sys::flint_pktmbuf_free(m);
                        self.stats.tx_full.fetch_add(1, Ordering::Relaxed);
                        return Err(io::Error::new(io::ErrorKind::WouldBlock, "mbuf pool empty"));
                    }
                    let at = body.as_ptr().add(r.start) as *mut libc::c_void;
                    let owner = std::sync::Arc::into_raw(body.clone())
                        .cast_mut()
                        .cast::<libc::c_void>();
                    if sys::flint_pktmbuf_attach_ext(
                        ext,
                        at,
                        sys::flint_virt2iova(at),
                        r.len() as u16,
                        Some(release_shared),
                        owner,
                    ) != 0
                    {
                        release_shared(owner);
                        sys::flint_pktmbuf_free(ext);
                        sys::flint_pktmbuf_free(m);
                        return Err(io::Error::other("cannot attach an external buffer"));
                    }
                    if sys::flint_pktmbuf_chain(m, ext) != 0 {
                        sys::flint_pktmbuf_free(ext);
                        sys::flint_pktmbuf_free(m);
                        return Err(io::Error::other("cannot chain an mbuf"));
                    }
                } else {
                    frame[len..].copy_from_slice(&body[r.clone()]);
                }
            }
            if offload_ip_csum {
                sys::flint_mbuf_tx_ipv4_cksum(m, ETH as u16, IP as u16);
            }
            let mut one = [m];
            if sys::flint_tx_burst(self.cfg.port, q as u16, one.as_mut_ptr(), 1) == 0 {
                sys::flint_pktmbuf_free(m);
                self.stats.tx_full.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "transmit queue full",
                ));
            }
        }
        self.stats.tx.fetch_add(1, Ordering::Relaxed);
        if chained {
            self.stats.tx_zero_copy.fetch_add(1, Ordering::Relaxed);
            self.stats
                .tx_zero_copy_bytes
                .fetch_add(tail.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn arp(&self, q: usize, op: u16, dst_mac: [u8; 6], dst_ip: Ipv4Addr) -> io::Result<()> {
        let (mac, ip) = (self.mac, self.cfg.ip);
        self.transmit(q, ETH + 28, false, Tail::None, |f| {
            f[..6].copy_from_slice(if op == 1 { &[0xff; 6] } else { &dst_mac });
            f[6..12].copy_from_slice(&mac);
            f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
            let a = &mut f[ETH..];
            a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
            a[8..14].copy_from_slice(&mac);
            a[14..18].copy_from_slice(&ip.octets());
            a[18..24].copy_from_slice(if op == 1 { &[0; 6] } else { &dst_mac });
            a[24..28].copy_from_slice(&dst_ip.octets());
        })
    }

    /// Handles one received Ethernet frame: ARP is answered or learned; a
    /// UDP datagram for us gives where its payload lies in `f`, and its
    /// sender.
    /// `hw_csum`: what the NIC found of the IPv4 checksum (1 good, -1 bad,
    /// 0 not checked: checked here).
    fn handle(
        &self,
        q: usize,
        f: &[u8],
        hw_csum: i32,
    ) -> Option<(std::ops::Range<usize>, SocketAddr)> {
        if f.len() < ETH {
            return None;
        }
        let src_mac: [u8; 6] = f[6..12].try_into().ok()?;
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 if f.len() >= ETH + 28 => {
                let a = &f[ETH..];
                let sender = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
                let target = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
                if let Ok(mut t) = self.arp.lock() {
                    t.insert(sender, a[8..14].try_into().ok()?);
                }
                if a[7] == 1 && target == self.cfg.ip {
                    let _ = self.arp(q, 2, a[8..14].try_into().ok()?, sender);
                }
                None
            }
            0x0800 if f.len() >= HDRS => {
                let ip = &f[ETH..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if ip[0] >> 4 != 4 || ihl < IP || ip[9] != 17 || f.len() < ETH + ihl + UDP {
                    return None;
                }
                let csum_ok = match hw_csum {
                    1 => true,
                    -1 => false,
                    _ => ip_checksum(&ip[..ihl]) == 0,
                };
                if !csum_ok {
                    return None;
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                if dst != self.cfg.ip || total < ihl + UDP || ETH + total > f.len() {
                    return None;
                }
                // Fragments are not reassembled.
                if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                    return None;
                }
                let udp = &ip[ihl..total];
                let dport = u16::from_be_bytes([udp[2], udp[3]]);
                let sport = u16::from_be_bytes([udp[0], udp[1]]);
                let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
                if dport != self.cfg.udp_port || ulen < UDP || ulen > udp.len() {
                    return None;
                }
                if let Ok(mut t) = self.arp.lock() {
                    if t.get(&src) != Some(&src_mac) {
                        t.insert(src, src_mac);
                    }
                }
                let at = ETH + ihl + UDP;
                Some((
                    at..at + ulen - UDP,
                    SocketAddr::V4(SocketAddrV4::new(src, sport)),
                ))
            }
            _ => None,
        }
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl DpdkPort {
    /// Sends `frame` then `tail` as one datagram to `to` on queue `q`.
    fn send_on(&self, q: usize, frame: &[u8], tail: Tail<'_>, to: SocketAddr) -> io::Result<()> {
        let SocketAddr::V4(to) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the DPDK port speaks IPv4",
            ));
        };
        let size = frame.len() + tail.len();
        if size > self.max_frame() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {size} bytes exceeds the MTU's {}",
                    self.max_frame()
                ),
            ));
        }
        let dst_mac = self.arp.lock().ok().and_then(|t| t.get(to.ip()).copied());
        let Some(dst_mac) = dst_mac else {
            self.stats.arp_misses.fetch_add(1, Ordering::Relaxed);
            self.arp(q, 1, [0; 6], *to.ip())?;
            return Ok(());
        };
        let (mac, ip, sport) = (self.mac, self.cfg.ip, self.cfg.udp_port);
        let id = self.ip_id.fetch_add(1, Ordering::Relaxed) as u16;
        let offload = self.tx_csum;
        self.transmit(q, HDRS + frame.len(), offload, tail, |f| {
            f[..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&mac);
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let total = (IP + UDP + size) as u16;
            let h = &mut f[ETH..ETH + IP];
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            h[8] = 64;
            h[9] = 17;
            h[10..12].copy_from_slice(&[0, 0]);
            h[12..16].copy_from_slice(&ip.octets());
            h[16..20].copy_from_slice(&to.ip().octets());
            if !offload {
                let c = ip_checksum(h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let u = &mut f[ETH + IP..HDRS];
            u[0..2].copy_from_slice(&sport.to_be_bytes());
            u[2..4].copy_from_slice(&to.port().to_be_bytes());
            u[4..6].copy_from_slice(&((UDP + size) as u16).to_be_bytes());
            u[6..8].copy_from_slice(&[0, 0]);
            f[HDRS..].copy_from_slice(frame);
        })
    }

    /// Receives frames on queue `q`: each UDP payload for us is lent to
    /// `f` where it lies in its mbuf, until `f` says stop (false), `max`
    /// were handed on, or nothing more has arrived. Returns how many.
    fn poll_on(
        &self,
        q: usize,
        max: usize,
        f: &mut dyn FnMut(&[u8], SocketAddr) -> bool,
    ) -> io::Result<usize> {
        register_thread();
        let mut rx = self.queues[q]
            .rx
            .lock()
            .map_err(|_| io::Error::other("rx lock poisoned"))?;
        let mut n = 0;
        while n < max {
            if rx.at == rx.n {
                // SAFETY: the burst array holds 32 slots; rx_burst fills at
                // most that many with mbufs we then own.
                rx.n = usize::from(unsafe {
                    sys::flint_rx_burst(self.cfg.port, q as u16, rx.burst.as_mut_ptr(), 32)
                });
                rx.at = 0;
                if rx.n == 0 {
                    break;
                }
            }
            let m = rx.burst[rx.at];
            rx.at += 1;
            // SAFETY: `m` is a received mbuf we own; single-segment data is
            // mtod..+data_len, lent to `f` and freed only after it returns.
            let more = unsafe {
                let mut more = true;
                if sys::flint_pktmbuf_nb_segs(m) == 1 {
                    let p = sys::flint_pktmbuf_mtod(m).cast::<u8>();
                    let len = usize::from(sys::flint_pktmbuf_data_len(m));
                    let frame = std::slice::from_raw_parts(p, len);
                    let hw = if self.rx_csum {
                        sys::flint_mbuf_rx_ip_cksum(m)
                    } else {
                        0
                    };
                    match self.handle(q, frame, hw) {
                        Some((r, from)) => {
                            self.stats.rx.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                            more = f(&frame[r], from);
                        }
                        None => {
                            self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else {
                    self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                sys::flint_pktmbuf_free(m);
                more
            };
            if !more {
                break;
            }
        }
        Ok(n)
    }

    fn recv_on(
        &self,
        q: usize,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut idle = 0u32;
        loop {
            let mut got = None;
            self.poll_on(q, 1, &mut |payload, from| {
                // Larger than the caller's buffer: dropped (the caller asked
                // for frames of at most its size).
                if payload.len() <= buf.len() {
                    buf[..payload.len()].copy_from_slice(payload);
                    got = Some((payload.len(), from));
                }
                false
            })?;
            if got.is_some() {
                return Ok(got);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            // Poll; when idle, give the CPU away between polls, and after
            // a while sleep briefly (adaptive: these machines have two
            // cores shared with everything else).
            idle += 1;
            if idle < 64 {
                std::hint::spin_loop();
            } else if idle < 4096 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn recv_burst_on(
        &self,
        q: usize,
        max: usize,
        f: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> io::Result<usize> {
        let n = self.poll_on(q, max, &mut |payload, from| {
            f(payload, from);
            true
        })?;
        self.stats
            .rx_in_place
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.cfg.ip, self.cfg.udp_port))
    }
}

/// One queue pair of a [`DpdkPort`], for the reactor that polls it.
#[derive(Clone)]
pub struct DpdkQueue {
    port: std::sync::Arc<DpdkPort>,
    q: usize,
}

impl DpdkQueue {
    /// The queue's index.
    pub fn index(&self) -> usize {
        self.q
    }

    /// The port it belongs to.
    pub fn port(&self) -> &std::sync::Arc<DpdkPort> {
        &self.port
    }
}

impl Port for DpdkQueue {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        self.port.send_on(self.q, frame, Tail::None, to)
    }

    fn send_parts(
        &self,
        head: &[u8],
        body: &std::sync::Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
        to: SocketAddr,
    ) -> io::Result<()> {
        self.port
            .send_on(self.q, head, Tail::Shared(body, &range), to)
    }

    fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[u8], SocketAddr)) -> io::Result<usize> {
        self.port.recv_burst_on(self.q, max, f)
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.port.recv_on(self.q, buf, timeout)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.port.addr())
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: the port was started by open_port; queued mbufs go back
        // to the pool first.
        unsafe {
            for queue in &self.queues {
                if let Ok(rx) = queue.rx.lock() {
                    for &m in &rx.burst[rx.at..rx.n] {
                        sys::flint_pktmbuf_free(m);
                    }
                }
            }
            sys::rte_eth_dev_stop(self.cfg.port);
            sys::rte_eth_dev_close(self.cfg.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ip_checksum, HugeFacts, Hugepages};

    #[test]
    fn hugepage_policies_say_what_is_missing() {
        let ok = HugeFacts {
            reserved: 512,
            free: 500,
            mount: Some(("/dev/hugepages".into(), true)),
        };
        assert_eq!(ok.decide(Hugepages::Auto), Ok(true));
        assert_eq!(ok.decide(Hugepages::Require), Ok(true));
        assert_eq!(ok.decide(Hugepages::Off), Ok(false));
        let cases = [
            (
                HugeFacts {
                    reserved: 0,
                    free: 0,
                    ..ok.clone()
                },
                "nr_hugepages is 0",
            ),
            (
                HugeFacts {
                    free: 0,
                    ..ok.clone()
                },
                "all 512 reserved hugepages are in use",
            ),
            (
                HugeFacts {
                    mount: None,
                    ..ok.clone()
                },
                "no hugetlbfs is mounted",
            ),
            (
                HugeFacts {
                    mount: Some(("/mnt/h".into(), false)),
                    ..ok.clone()
                },
                "no permission",
            ),
        ];
        for (facts, why) in cases {
            assert_eq!(facts.decide(Hugepages::Auto), Ok(false));
            let e = facts.decide(Hugepages::Require).unwrap_err();
            assert!(e.contains(why) && e.contains("dpdk.hugepages"), "{e}");
        }
    }

    #[test]
    fn ipv4_header_checksums_verify_to_zero() {
        // A header from RFC 1071's worked example style: fill, checksum,
        // then the whole header sums to zero; one flipped bit does not.
        let mut h = [
            0x45u8, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0,
            0xc7,
        ];
        let c = ip_checksum(&h);
        assert_eq!(c, 0xb861);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ip_checksum(&h), 0);
        h[3] ^= 1;
        assert_ne!(ip_checksum(&h), 0);
    }
}
