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
    /// no hugepages are reserved or no hugetlbfs is mounted.
    pub eal_args: Vec<String>,
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

/// Whether DPDK can use hugepages: some reserved and a hugetlbfs mounted.
fn hugepages_usable() -> bool {
    let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    reserved && mounted
}

/// Initialises DPDK's EAL, once per process. A second call is an error
/// (DPDK cannot be initialised twice).
pub fn eal_init(args: &[String]) -> io::Result<()> {
    if EAL.get().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the DPDK EAL is already initialised in this process (one DPDK port set per process)",
        ));
    }
    let mut argv: Vec<String> = vec!["flint".into()];
    argv.extend(args.iter().cloned());
    if !hugepages_usable() && !args.iter().any(|a| a == "--no-huge") {
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
    // SAFETY: argv points to argc valid NUL-terminated strings that outlive
    // the call (EAL may permute the pointer array, which we own).
    let r = unsafe { sys::rte_eal_init(ptrs.len() as i32, ptrs.as_mut_ptr()) };
    if r < 0 {
        let e = err("DPDK EAL initialisation failed");
        let hint = if unsafe { sys::flint_rte_errno() } == libc::EACCES {
            " (run as root, or give the process the capabilities DPDK needs)"
        } else {
            ""
        };
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
        eal_init(&cfg.eal_args)?;
        Self::open_port(cfg)
    }

    /// Opens `cfg.port` on an initialised EAL.
    pub fn open_port(cfg: DpdkConfig) -> io::Result<DpdkPort> {
        // SAFETY: plain DPDK calls on an initialised EAL with valid
        // pointers to stack structs; each result is checked.
        unsafe {
            let avail = sys::rte_eth_dev_count_avail();
            if cfg.port >= avail {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no DPDK port {} ({avail} available): check the --vdev or PCI allow-list",
                        cfg.port
                    ),
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
            loop {
                let mut link: sys::rte_eth_link = std::mem::zeroed();
                let _ = sys::rte_eth_link_get_nowait(cfg.port, &mut link);
                if link.link_status() == 1 {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(2) {
                    tracing::warn!(port = cfg.port, "link still down after 2 s; serving anyway");
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

    /// One [`Port`] per queue pair, for the reactor that polls it.
    pub fn queues(self: &std::sync::Arc<Self>) -> Vec<DpdkQueue> {
        (0..self.queues.len())
            .map(|q| DpdkQueue {
                port: self.clone(),
                q,
            })
            .collect()
    }

    /// Sends one Ethernet frame built by `fill` (given the frame to write)
    /// on queue `q`.
    fn transmit(
        &self,
        q: usize,
        len: usize,
        offload_ip_csum: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> io::Result<()> {
        let queue = &self.queues[q];
        let _g = queue
            .tx
            .lock()
            .map_err(|_| io::Error::other("tx lock poisoned"))?;
        // SAFETY: the pool is live; the mbuf is ours until tx_burst takes
        // it (or we free it); `append` gives `len` writable bytes.
        unsafe {
            let m = sys::flint_pktmbuf_alloc(queue.pool);
            if m.is_null() {
                self.stats.tx_full.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "mbuf pool empty"));
            }
            let p = sys::flint_pktmbuf_append(m, len as u16);
            if p.is_null() {
                sys::flint_pktmbuf_free(m);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "frame larger than an mbuf",
                ));
            }
            fill(std::slice::from_raw_parts_mut(p.cast::<u8>(), len));
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
        Ok(())
    }

    fn arp(&self, q: usize, op: u16, dst_mac: [u8; 6], dst_ip: Ipv4Addr) -> io::Result<()> {
        let (mac, ip) = (self.mac, self.cfg.ip);
        self.transmit(q, ETH + 28, false, |f| {
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
    /// UDP datagram for us is copied into `buf`.
    /// `hw_csum`: what the NIC found of the IPv4 checksum (1 good, -1 bad,
    /// 0 not checked: checked here).
    fn handle(
        &self,
        q: usize,
        f: &[u8],
        hw_csum: i32,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
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
                let payload = &udp[UDP..ulen];
                if payload.len() > buf.len() {
                    return None;
                }
                if let Ok(mut t) = self.arp.lock() {
                    t.insert(src, src_mac);
                }
                buf[..payload.len()].copy_from_slice(payload);
                Some((payload.len(), SocketAddr::V4(SocketAddrV4::new(src, sport))))
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
    fn send_on(&self, q: usize, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        let SocketAddr::V4(to) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the DPDK port speaks IPv4",
            ));
        };
        if frame.len() > self.max_frame() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes exceeds the MTU's {}",
                    frame.len(),
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
        self.transmit(q, HDRS + frame.len(), offload, |f| {
            f[..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&mac);
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let total = (IP + UDP + frame.len()) as u16;
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
            u[4..6].copy_from_slice(&((UDP + frame.len()) as u16).to_be_bytes());
            u[6..8].copy_from_slice(&[0, 0]);
            f[HDRS..].copy_from_slice(frame);
        })
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
            {
                let mut rx = self.queues[q]
                    .rx
                    .lock()
                    .map_err(|_| io::Error::other("rx lock poisoned"))?;
                if rx.at == rx.n {
                    // SAFETY: the burst array holds 32 slots; rx_burst
                    // fills at most that many with mbufs we then own.
                    rx.n = usize::from(unsafe {
                        sys::flint_rx_burst(self.cfg.port, q as u16, rx.burst.as_mut_ptr(), 32)
                    });
                    rx.at = 0;
                }
                while rx.at < rx.n {
                    let m = rx.burst[rx.at];
                    rx.at += 1;
                    // SAFETY: `m` is a received mbuf we own; single-segment
                    // data is mtod..+data_len; freed right after.
                    let got = unsafe {
                        let got = if sys::flint_pktmbuf_nb_segs(m) == 1 {
                            let p = sys::flint_pktmbuf_mtod(m).cast::<u8>();
                            let len = usize::from(sys::flint_pktmbuf_data_len(m));
                            self.handle(
                                q,
                                std::slice::from_raw_parts(p, len),
                                if self.rx_csum {
                                    sys::flint_mbuf_rx_ip_cksum(m)
                                } else {
                                    0
                                },
                                buf,
                            )
                        } else {
                            None
                        };
                        sys::flint_pktmbuf_free(m);
                        got
                    };
                    match got {
                        Some(x) => {
                            self.stats.rx.fetch_add(1, Ordering::Relaxed);
                            return Ok(Some(x));
                        }
                        None => {
                            self.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
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

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.cfg.ip, self.cfg.udp_port))
    }
}

/// The port as one [`Port`]: its first queue pair.
impl Port for DpdkPort {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send_on(0, frame, to)
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        self.recv_on(0, buf, timeout)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr())
    }
}

/// One queue pair of a [`DpdkPort`], for the reactor that polls it.
pub struct DpdkQueue {
    port: std::sync::Arc<DpdkPort>,
    q: usize,
}

impl DpdkQueue {
    /// The queue's index.
    pub fn index(&self) -> usize {
        self.q
    }
}

impl Port for DpdkQueue {
    fn send(&self, frame: &[u8], to: SocketAddr) -> io::Result<()> {
        self.port.send_on(self.q, frame, to)
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
    use super::ip_checksum;

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
