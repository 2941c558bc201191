//! Bringing a controller up and keeping it: a polled state machine (never
//! blocking the reactor) that disables the controller, programs the admin
//! queue, enables it, identifies it and namespace 1, asks for I/O queues
//! and creates them — each wait bounded by CAP.TO or the admin timeout.
//! Afterwards [`Controller::check`] watches for a fatal controller
//! (CSTS.CFS, registers reading all ones) and commands past their
//! deadline (abort first, then a reset that re-creates the queue pairs in
//! place and resubmits every outstanding command).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cmd::{admin, Sqe, Status};
use super::dma::{DmaBuf, DmaMap};
use super::qpair::{Done, QueuePair};
use super::regs::{Cc, Mmio, Regs};

/// Entries of the admin queue.
pub const ADMIN_ENTRIES: u16 = 32;

/// Why a controller cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmeError {
    /// Registers read all ones: the device is gone.
    Gone,
    /// CSTS.CFS: the controller failed.
    Fatal,
    /// A step did not finish in time.
    Timeout {
        /// The step.
        step: &'static str,
    },
    /// An admin command failed.
    Command {
        /// The step.
        step: &'static str,
        /// Its status.
        status: Status,
    },
    /// The controller lacks something the driver needs.
    Unsupported {
        /// What.
        what: String,
    },
    /// DMA memory could not be mapped for the controller.
    Dma {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmeError::Gone => write!(f, "the controller's registers read all ones: the device is gone (removed, or its link is down)"),
            NvmeError::Fatal => write!(f, "the controller reports a fatal error (CSTS.CFS); it needs a reset or replacing"),
            NvmeError::Timeout { step } => write!(f, "the controller did not finish `{step}` in time"),
            NvmeError::Command { step, status } => write!(
                f,
                "`{step}` failed: status type {:#x} code {:#x}",
                status.sct, status.sc
            ),
            NvmeError::Unsupported { what } => write!(f, "the controller does not support {what}"),
            NvmeError::Dma { reason } => write!(f, "cannot map DMA memory: {reason} (hugepages or the IOMMU's limits)"),
        }
    }
}

impl std::error::Error for NvmeError {}

/// What Identify said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Largest transfer in bytes (MDTS; 0: no limit, taken as 1 MiB).
    pub max_transfer: usize,
    /// Logical block size of namespace 1.
    pub block_size: u32,
    /// Blocks of namespace 1.
    pub blocks: u64,
    /// A volatile write cache (Flush matters).
    pub write_cache: bool,
    /// Write Zeroes supported.
    pub write_zeroes: bool,
    /// I/O queues granted.
    pub io_queues: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Disable,
    WaitDisabled,
    Enable,
    WaitReady,
    IdentifyCtrl,
    IdentifyNs,
    SetQueues,
    CreateCq(u16),
    CreateSq(u16),
    Ready,
}

/// A controller: its registers, admin queue and I/O queue pairs.
pub struct Controller<M: Mmio> {
    regs: Regs<M>,
    admin: QueuePair,
    io: Vec<QueuePair>,
    want_queues: u16,
    io_entries: u16,
    step: Step,
    until: Instant,
    waiting: Option<u64>,
    page: DmaBuf,
    info: Info,
    done: Vec<Done>,
    timeout: Duration,
    map: Arc<dyn DmaMap>,
    /// Resets done since start.
    pub resets: u32,
    /// Aborts sent since start.
    pub aborts: u32,
}

const TAG_STEP: u64 = u64::MAX;

impl<M: Mmio> Controller<M> {
    /// Starts bringing up the controller behind `m` with `queues` I/O
    /// queue pairs of `entries` entries each; commands time out after
    /// `timeout`. Call [`Controller::poll_start`] until it is ready.
    pub fn new(
        m: M,
        map: Arc<dyn DmaMap>,
        queues: u16,
        entries: u16,
        timeout: Duration,
    ) -> Result<Self, NvmeError> {
        let dma = |e: std::io::Error| NvmeError::Dma {
            reason: e.to_string(),
        };
        let regs = Regs::new(m);
        if regs.csts().gone() {
            return Err(NvmeError::Gone);
        }
        let cap = regs.cap();
        if !cap.nvm() {
            return Err(NvmeError::Unsupported {
                what: "the NVM command set (CAP.CSS)".into(),
            });
        }
        if cap.min_page() > super::dma::PAGE {
            return Err(NvmeError::Unsupported {
                what: format!("4 KiB pages (CAP.MPSMIN is {} bytes)", cap.min_page()),
            });
        }
        let entries = entries.clamp(2, cap.max_entries().min(4096) as u16);
        Ok(Controller {
            admin: QueuePair::new(0, ADMIN_ENTRIES, timeout, 0, &map).map_err(dma)?,
            io: Vec::new(),
            want_queues: queues.max(1),
            io_entries: entries,
            step: Step::Disable,
            until: Instant::now(),
            waiting: None,
            page: DmaBuf::mapped(4096, &map).map_err(dma)?,
            info: Info::default(),
            done: Vec::new(),
            timeout,
            resets: 0,
            aborts: 0,
            regs,
            map,
        })
    }

    /// What Identify said (complete once ready).
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Whether bring-up finished.
    pub fn ready(&self) -> bool {
        self.step == Step::Ready
    }

    /// The I/O queue pairs.
    pub fn queues(&mut self) -> &mut [QueuePair] {
        &mut self.io
    }

    /// The registers.
    pub fn regs(&self) -> &Regs<M> {
        &self.regs
    }

    /// Rings every I/O queue's submission doorbell (one write per queue
    /// with new entries).
    pub fn ring_all(&mut self) {
        for q in &mut self.io {
            q.ring(&self.regs);
        }
    }

    /// Reaps every I/O queue into `out`; returns how many finished.
    pub fn reap_all(&mut self, out: &mut Vec<Done>) -> usize {
        let mut n = 0;
        for q in &mut self.io {
            n += q.reap(&self.regs, out);
        }
        n
    }

    fn health(&self) -> Result<(), NvmeError> {
        let s = self.regs.csts();
        if s.gone() {
            return Err(NvmeError::Gone);
        }
        if s.fatal() {
            return Err(NvmeError::Fatal);
        }
        Ok(())
    }

    /// Sends an admin command for the current step; its result comes back
    /// through [`Controller::admin_result`].
    fn admin_cmd(&mut self, sqe: Sqe, data: bool) {
        let (iova, len) = if data {
            (self.page.iova(), 4096)
        } else {
            (0, 0)
        };
        let _ = self.admin.submit(sqe, iova, len, TAG_STEP);
        self.admin.ring(&self.regs);
        self.waiting = Some(TAG_STEP);
        self.until = Instant::now() + self.timeout;
    }

    /// The current step's admin result, once it is in.
    fn admin_result(&mut self, step: &'static str) -> Result<Option<u32>, NvmeError> {
        self.done.clear();
        self.admin.reap(&self.regs, &mut self.done);
        if let Some(d) = self.done.iter().find(|d| d.tag == TAG_STEP) {
            self.waiting = None;
            return d
                .result
                .map(Some)
                .map_err(|status| NvmeError::Command { step, status });
        }
        if Instant::now() > self.until {
            return Err(NvmeError::Timeout { step });
        }
        Ok(None)
    }

    /// Advances bring-up by at most one step; `Ok(true)` once ready.
    pub fn poll_start(&mut self) -> Result<bool, NvmeError> {
        self.health().or_else(|e| {
            // CFS while disabling is what a reset clears.
            if e == NvmeError::Fatal && matches!(self.step, Step::Disable | Step::WaitDisabled) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let now = Instant::now();
        match self.step {
            Step::Disable => {
                let cc = self.regs.cc();
                if cc.enable() {
                    self.regs.set_cc(Cc(cc.0 & !1));
                }
                self.until = now + self.regs.cap().timeout();
                self.step = Step::WaitDisabled;
            }
            Step::WaitDisabled => {
                if !self.regs.csts().ready() {
                    self.step = Step::Enable;
                } else if now > self.until {
                    return Err(NvmeError::Timeout { step: "disable" });
                }
            }
            Step::Enable => {
                self.admin.begin_reset();
                self.admin.resume();
                self.regs.set_admin_queues(
                    self.admin.entries(),
                    self.admin.sq_iova(),
                    self.admin.cq_iova(),
                );
                self.regs.set_cc(Cc::enabled());
                self.until = now + self.regs.cap().timeout();
                self.step = Step::WaitReady;
            }
            Step::WaitReady => {
                if self.regs.csts().ready() {
                    self.step = if self.info.block_size == 0 {
                        Step::IdentifyCtrl
                    } else {
                        // A reset: the queues again, the same geometry.
                        Step::SetQueues
                    };
                } else if now > self.until {
                    return Err(NvmeError::Timeout { step: "enable" });
                }
            }
            Step::IdentifyCtrl => {
                if self.waiting.is_none() {
                    let mut s = Sqe::new(admin::IDENTIFY, 0);
                    s.set_cdw(10, 1);
                    self.admin_cmd(s, true);
                } else if self.admin_result("identify controller")?.is_some() {
                    let mut b = vec![0u8; 4096];
                    self.page.read(0, &mut b);
                    let text = |r: std::ops::Range<usize>| {
                        String::from_utf8_lossy(&b[r])
                            .trim_matches(|c| c == ' ' || c == '\0')
                            .to_string()
                    };
                    self.info.serial = text(4..24);
                    self.info.model = text(24..64);
                    let mdts = b[77];
                    self.info.max_transfer = if mdts == 0 {
                        1 << 20
                    } else {
                        (self.regs.cap().min_page() << mdts).min(1 << 20)
                    };
                    let oncs = u16::from_le_bytes([b[520], b[521]]);
                    self.info.write_zeroes = oncs & (1 << 3) != 0;
                    self.info.write_cache = b[525] & 1 != 0;
                    self.step = Step::IdentifyNs;
                }
            }
            Step::IdentifyNs => {
                if self.waiting.is_none() {
                    let s = Sqe::new(admin::IDENTIFY, 1);
                    self.admin_cmd(s, true);
                } else if self.admin_result("identify namespace 1")?.is_some() {
                    let mut b = vec![0u8; 4096];
                    self.page.read(0, &mut b);
                    self.info.blocks = u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8]));
                    let f = usize::from(b[26] & 0xF);
                    let lbads = b[128 + f * 4 + 2];
                    if !(9..=16).contains(&lbads) || self.info.blocks == 0 {
                        return Err(NvmeError::Unsupported {
                            what: format!(
                                "namespace 1 as formatted (blocks {}, block size 2^{lbads})",
                                self.info.blocks
                            ),
                        });
                    }
                    self.info.block_size = 1 << lbads;
                    self.step = Step::SetQueues;
                }
            }
            Step::SetQueues => {
                if self.waiting.is_none() {
                    let n = u32::from(self.want_queues - 1);
                    let mut s = Sqe::new(admin::SET_FEATURES, 0);
                    s.set_cdw(10, 0x07);
                    s.set_cdw(11, n | (n << 16));
                    self.admin_cmd(s, false);
                } else if let Some(dw0) = self.admin_result("set features: number of queues")? {
                    let granted = ((dw0 & 0xFFFF).min(dw0 >> 16) + 1) as u16;
                    self.info.io_queues = granted.min(self.want_queues);
                    if self.io.is_empty() {
                        self.io = (1..=self.info.io_queues)
                            .map(|q| QueuePair::new(q, self.io_entries, self.timeout, 3, &self.map))
                            .collect::<Result<_, _>>()
                            .map_err(|e| NvmeError::Dma {
                                reason: e.to_string(),
                            })?;
                    }
                    self.step = Step::CreateCq(0);
                }
            }
            Step::CreateCq(i) | Step::CreateSq(i) => {
                let sq = matches!(self.step, Step::CreateSq(_));
                if self.waiting.is_none() {
                    let q = &self.io[usize::from(i)];
                    let mut s = Sqe::new(
                        if sq {
                            admin::CREATE_SQ
                        } else {
                            admin::CREATE_CQ
                        },
                        0,
                    );
                    s.set_prps(if sq { q.sq_iova() } else { q.cq_iova() }, 0);
                    s.set_cdw(10, u32::from(q.qid()) | (u32::from(q.entries() - 1) << 16));
                    // Physically contiguous; an SQ names its CQ, a CQ has no
                    // interrupt (polled).
                    s.set_cdw(
                        11,
                        if sq {
                            1 | (u32::from(q.qid()) << 16)
                        } else {
                            1
                        },
                    );
                    let _ = self.admin.submit(s, 0, 0, TAG_STEP);
                    self.admin.ring(&self.regs);
                    self.waiting = Some(TAG_STEP);
                    self.until = now + self.timeout;
                } else if self
                    .admin_result(if sq { "create I/O SQ" } else { "create I/O CQ" })?
                    .is_some()
                {
                    self.step = if !sq {
                        Step::CreateSq(i)
                    } else if usize::from(i) + 1 < self.io.len() {
                        Step::CreateCq(i + 1)
                    } else {
                        // Commands a reset left outstanding go again.
                        for q in &mut self.io {
                            q.resume();
                            q.ring(&self.regs);
                        }
                        Step::Ready
                    };
                }
            }
            Step::Ready => return Ok(true),
        }
        Ok(self.step == Step::Ready)
    }

    /// Watches a ready controller: a fatal or vanished controller is an
    /// error (the device is failed); commands past their deadline get an
    /// Abort, and if still there after another timeout the controller is
    /// reset — its queue pairs made again in place, every outstanding
    /// command resubmitted. Returns whether a reset began (then call
    /// [`Controller::poll_start`] until ready again).
    pub fn check(&mut self) -> Result<bool, NvmeError> {
        if self.step != Step::Ready {
            // A reset under way ([`Controller::reset`]) goes on from here.
            self.poll_start()?;
            return Ok(false);
        }
        self.health()?;
        let now = Instant::now();
        let mut reset = false;
        let mut aborts = Vec::new();
        for q in &self.io {
            for (cid, _) in q.expired(now) {
                aborts.push((q.qid(), cid));
            }
        }
        for (qid, cid) in aborts {
            let q = &mut self.io[usize::from(qid - 1)];
            if q.aborted(cid) {
                reset = true;
                break;
            }
            q.mark_aborted(cid, self.timeout);
            let mut s = Sqe::new(admin::ABORT, 0);
            s.set_cdw(10, u32::from(qid) | (u32::from(cid) << 16));
            let _ = self.admin.submit(s, 0, 0, u64::from(cid));
            self.aborts += 1;
        }
        self.admin.ring(&self.regs);
        self.done.clear();
        self.admin.reap(&self.regs, &mut self.done);
        if reset {
            self.reset();
        }
        Ok(reset)
    }

    /// Resets the controller: its queue pairs are made again in place and
    /// every outstanding command is resubmitted once it is ready (call
    /// [`Controller::poll_start`] until then).
    pub fn reset(&mut self) {
        self.resets += 1;
        for q in &mut self.io {
            q.begin_reset();
        }
        self.waiting = None;
        self.step = Step::Disable;
    }
}
