//! The target's model: subsystems (an NQN, the hosts it admits, its
//! namespaces), each namespace a Flint volume (a file of a file system),
//! and the controllers hosts create by connecting — one per admin queue,
//! shared by that host's I/O queues, torn down when its keep-alive timer
//! runs out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::spec::Status;
use crate::meta::{FsId, Ino};

/// The well-known NQN of the discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Entries of each queue, the most a host may ask (CAP.MQES + 1).
pub const QUEUE_ENTRIES: u16 = 128;

/// A namespace: a volume of Flint's storage.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Namespace ID (1-based).
    pub nsid: u32,
    /// What it is, for logs and the model number (`fs:/path`).
    pub name: String,
    /// Its file system.
    pub fs: FsId,
    /// The file holding its blocks.
    pub ino: Ino,
    /// Its size in bytes (a multiple of the block size).
    pub bytes: u64,
    /// log2 of its logical block size (9 or 12).
    pub lba_shift: u8,
    /// A stable identity (the same after restarts).
    pub uuid: [u8; 16],
    /// Its file system acknowledges before durable: the namespace then
    /// says it has a volatile write cache, so hosts send Flush.
    pub write_back: bool,
}

impl Volume {
    /// Logical blocks.
    pub fn blocks(&self) -> u64 {
        self.bytes >> self.lba_shift
    }
}

/// A subsystem.
#[derive(Debug, Clone)]
pub struct Subsystem {
    /// Its NQN.
    pub nqn: String,
    /// Serial number (Identify).
    pub serial: String,
    /// Host NQNs admitted (with `any_host` false).
    pub hosts: Vec<String>,
    /// Admit any host.
    pub any_host: bool,
    /// Namespaces, by NSID order.
    pub namespaces: Vec<Volume>,
}

impl Subsystem {
    /// The namespace `nsid`.
    pub fn namespace(&self, nsid: u32) -> Option<&Volume> {
        self.namespaces.iter().find(|v| v.nsid == nsid)
    }

    fn admits(&self, host: &str) -> bool {
        self.any_host || self.hosts.iter().any(|h| h == host)
    }
}

/// A controller: what a host's admin queue created.
#[derive(Debug)]
pub struct Controller {
    /// Its ID (what Connect returned and Identify shows).
    pub cntlid: u16,
    /// Index of its subsystem; `None` for a discovery controller.
    pub subsystem: Option<usize>,
    /// The host's NQN.
    pub host: String,
    /// Keep Alive Timeout in ms (0: none).
    pub kato_ms: AtomicU32,
    /// Milliseconds since the target started when the host was last heard.
    heard_ms: AtomicU64,
    /// Controller Configuration.
    pub cc: AtomicU32,
    /// I/O queues granted (Set Features Number of Queues).
    pub io_queues: AtomicU32,
    /// Torn down: every queue of it closes.
    pub dead: AtomicBool,
}

impl Controller {
    /// Controller Status, from CC: ready when enabled, shutdown complete
    /// when a shutdown was asked for.
    pub fn csts(&self) -> u32 {
        let cc = self.cc.load(Ordering::Acquire);
        let rdy = cc & 1;
        let shst = if (cc >> 14) & 3 != 0 { 2 << 2 } else { 0 };
        rdy | shst
    }

    /// Whether CC.EN is set (I/O allowed).
    pub fn enabled(&self) -> bool {
        self.cc.load(Ordering::Acquire) & 1 != 0 && !self.dead.load(Ordering::Acquire)
    }
}

/// Counters of the target (shown by `/metrics`).
#[derive(Debug, Default)]
pub struct TargetStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections ended by a fatal transport error (a TermReq sent).
    pub terminated: AtomicU64,
    /// Controllers torn down because the keep-alive timer ran out.
    pub kato_expired: AtomicU64,
    /// Connects refused (unknown subsystem, host not admitted, bad values).
    pub refused: AtomicU64,
    /// Commands completed.
    pub commands: AtomicU64,
    /// Commands completed with an error status.
    pub errors: AtomicU64,
    /// Bytes read by hosts.
    pub read_bytes: AtomicU64,
    /// Bytes written by hosts.
    pub write_bytes: AtomicU64,
}

/// The target: its subsystems and live controllers.
#[derive(Debug)]
pub struct Target {
    /// The subsystems it exports.
    pub subsystems: Vec<Subsystem>,
    /// Where it listens (the discovery log's address).
    pub addr: SocketAddr,
    /// Most I/O queues a controller gets.
    pub max_io_queues: u32,
    /// Counters.
    pub stats: TargetStats,
    ctrls: Mutex<HashMap<u16, Arc<Controller>>>,
    next_cntlid: Mutex<u16>,
    start: Instant,
}

impl Target {
    /// A target exporting `subsystems` at `addr`.
    pub fn new(subsystems: Vec<Subsystem>, addr: SocketAddr, max_io_queues: u32) -> Target {
        Target {
            subsystems,
            addr,
            max_io_queues: max_io_queues.max(1),
            stats: TargetStats::default(),
            ctrls: Mutex::new(HashMap::new()),
            next_cntlid: Mutex::new(1),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The subsystem named `nqn`: `Some(None)` for discovery.
    fn find(&self, nqn: &str) -> Option<Option<usize>> {
        if nqn == DISCOVERY_NQN {
            return Some(None);
        }
        self.subsystems.iter().position(|s| s.nqn == nqn).map(Some)
    }

    /// A new controller for `host` on subsystem `nqn` (an admin queue's
    /// Connect), with keep-alive timeout `kato_ms`.
    pub fn admit(&self, nqn: &str, host: &str, kato_ms: u32) -> Result<Arc<Controller>, Status> {
        let Some(sub) = self.find(nqn) else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Status::CONNECT_INVALID);
        };
        if let Some(i) = sub {
            if !self.subsystems[i].admits(host) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Status::CONNECT_HOST);
            }
        }
        let mut ctrls = self.ctrls.lock().map_err(|_| Status::INTERNAL)?;
        let mut next = self.next_cntlid.lock().map_err(|_| Status::INTERNAL)?;
        // IDs 1..=0xFFEF; skip live ones.
        let mut id = *next;
        for _ in 0..0xFFEF {
            if !ctrls.contains_key(&id) {
                break;
            }
            id = if id >= 0xFFEF { 1 } else { id + 1 };
        }
        if ctrls.contains_key(&id) {
            return Err(Status::CONNECT_BUSY);
        }
        *next = if id >= 0xFFEF { 1 } else { id + 1 };
        let c = Arc::new(Controller {
            cntlid: id,
            subsystem: sub,
            host: host.to_string(),
            kato_ms: AtomicU32::new(kato_ms),
            heard_ms: AtomicU64::new(self.now_ms()),
            cc: AtomicU32::new(0),
            io_queues: AtomicU32::new(0),
            dead: AtomicBool::new(false),
        });
        ctrls.insert(id, c.clone());
        Ok(c)
    }

    /// The controller an I/O queue's Connect names, if the same host made
    /// it on the same subsystem.
    pub fn attach(&self, cntlid: u16, nqn: &str, host: &str) -> Result<Arc<Controller>, Status> {
        let sub = self.find(nqn).ok_or(Status::CONNECT_INVALID)?;
        let ctrls = self.ctrls.lock().map_err(|_| Status::INTERNAL)?;
        match ctrls.get(&cntlid) {
            Some(c) if c.subsystem == sub && c.host == host && sub.is_some() => {
                if c.dead.load(Ordering::Acquire) {
                    return Err(Status::CONNECT_INVALID);
                }
                Ok(c.clone())
            }
            _ => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(Status::CONNECT_INVALID)
            }
        }
    }

    /// Notes that `c`'s host was heard (a Keep Alive, any admin command).
    pub fn heard(&self, c: &Controller) {
        c.heard_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Ends controller `c` (its admin queue closed): its I/O queues close.
    pub fn release(&self, c: &Controller) {
        c.dead.store(true, Ordering::Release);
        if let Ok(mut m) = self.ctrls.lock() {
            m.remove(&c.cntlid);
        }
    }

    /// Tears down every controller whose host has been silent longer than
    /// its keep-alive timeout; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let Ok(mut m) = self.ctrls.lock() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, c| {
            let kato = u64::from(c.kato_ms.load(Ordering::Acquire));
            let silent = now.saturating_sub(c.heard_ms.load(Ordering::Acquire));
            let expired = kato > 0 && silent > kato;
            if expired {
                c.dead.store(true, Ordering::Release);
                tracing::warn!(
                    cntlid = c.cntlid,
                    host = %c.host,
                    silent_ms = silent,
                    "NVMe/TCP host silent past its keep-alive timeout; controller torn down"
                );
            }
            !expired
        });
        let gone = before - m.len();
        self.stats
            .kato_expired
            .fetch_add(gone as u64, Ordering::Relaxed);
        gone
    }

    /// Live controllers.
    pub fn controllers(&self) -> usize {
        self.ctrls.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let sub = Subsystem {
            nqn: "nqn.2026-12.io.flint:a".into(),
            serial: "s".into(),
            hosts: vec!["nqn.host:1".into()],
            any_host: false,
            namespaces: vec![],
        };
        Target::new(vec![sub], "127.0.0.1:4420".parse().unwrap(), 4)
    }

    #[test]
    fn hosts_are_admitted_by_nqn() {
        let t = target();
        assert_eq!(
            t.admit("nqn.2026-12.io.flint:a", "nqn.host:2", 0)
                .unwrap_err(),
            Status::CONNECT_HOST
        );
        assert_eq!(
            t.admit("nqn.other", "nqn.host:1", 0).unwrap_err(),
            Status::CONNECT_INVALID
        );
        let c = t.admit("nqn.2026-12.io.flint:a", "nqn.host:1", 0).unwrap();
        // An I/O queue of another host cannot join it.
        assert!(t
            .attach(c.cntlid, "nqn.2026-12.io.flint:a", "nqn.host:x")
            .is_err());
        assert!(t
            .attach(c.cntlid, "nqn.2026-12.io.flint:a", "nqn.host:1")
            .is_ok());
        // Discovery admits anyone, and has no I/O queues.
        let d = t.admit(DISCOVERY_NQN, "nqn.anyone", 0).unwrap();
        assert_ne!(d.cntlid, c.cntlid);
        assert!(t.attach(d.cntlid, DISCOVERY_NQN, "nqn.anyone").is_err());
        t.release(&c);
        assert!(t
            .attach(c.cntlid, "nqn.2026-12.io.flint:a", "nqn.host:1")
            .is_err());
    }

    #[test]
    fn silent_hosts_are_torn_down() {
        let t = target();
        let c = t.admit("nqn.2026-12.io.flint:a", "nqn.host:1", 30).unwrap();
        let none = t.admit("nqn.2026-12.io.flint:a", "nqn.host:1", 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(t.sweep(), 1);
        assert!(c.dead.load(Ordering::Acquire));
        assert!(!none.dead.load(Ordering::Acquire));
    }

    #[test]
    fn csts_follows_cc() {
        let t = target();
        let c = t.admit(DISCOVERY_NQN, "h", 0).unwrap();
        assert_eq!(c.csts(), 0);
        c.cc.store(1, Ordering::Release);
        assert_eq!(c.csts(), 1);
        c.cc.store(1 | (1 << 14), Ordering::Release);
        assert_eq!(c.csts(), 1 | (2 << 2));
    }
}
