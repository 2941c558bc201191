//! An NVMe controller in memory, on a thread of its own, for testing the
//! driver without hardware: its registers are a [`Mmio`] window, its
//! queues live in the driver's DMA buffers (bus address = address), and it
//! executes admin and NVM commands against a RAM disk — with faults on
//! demand: statuses for the next commands of an opcode, a stalled command,
//! completions posted in reverse order, a fatal controller (CSTS.CFS) and
//! registers that read all ones (a vanished device).

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cmd::{admin, nvm, Cqe, Sqe, Status};
use super::dma::PAGE;
use super::regs::{off, Mmio};

const REG_WORDS: usize = (off::DOORBELLS + 2 * 65 * 4) / 4;

/// Faults the fake injects.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next `count` commands with this opcode on I/O queues fail with
    /// this status (without being executed).
    pub fail: Vec<(u8, Status, u32)>,
    /// The next command with this opcode on an I/O queue is held this long
    /// before it runs.
    pub stall: Option<(u8, Duration)>,
    /// Post each batch of completions in reverse order.
    pub reorder: bool,
    /// Set CSTS.CFS after this many more I/O commands.
    pub fatal_after: Option<u64>,
    /// Answer every Abort "not aborted" (a command only a reset clears).
    pub ignore_abort: bool,
}

struct Shared {
    regs: Vec<AtomicU32>,
    stop: AtomicBool,
    gone: AtomicBool,
    faults: Mutex<Faults>,
    disk: Mutex<Vec<u8>>,
    block_shift: u8,
    commands: AtomicU64,
}

/// The fake's register window (clone it into the driver).
#[derive(Clone)]
pub struct FakeMmio(Arc<Shared>);

impl Mmio for FakeMmio {
    fn read32(&self, off: usize) -> u32 {
        if self.0.gone.load(Ordering::Acquire) {
            return u32::MAX;
        }
        self.0.regs[off / 4].load(Ordering::Acquire)
    }

    fn write32(&self, off: usize, v: u32) {
        self.0.regs[off / 4].store(v, Ordering::Release);
    }
}

/// A running fake controller.
pub struct FakeNvme {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Sq {
    base: u64,
    entries: u16,
    head: u16,
    cqid: u16,
}

struct Cq {
    base: u64,
    entries: u16,
    tail: u16,
    phase: bool,
}

struct Held {
    at: Instant,
    sqid: u16,
    sqe: Sqe,
}

impl FakeNvme {
    /// A controller with one namespace of `blocks` blocks of `1 <<
    /// block_shift` bytes.
    pub fn start(blocks: u64, block_shift: u8) -> FakeNvme {
        let regs: Vec<AtomicU32> = (0..REG_WORDS).map(|_| AtomicU32::new(0)).collect();
        // CAP: MQES 1023, CQR, TO 1 s, DSTRD 0, CSS NVM, MPSMIN 4 KiB.
        let cap: u64 = 1023 | (1 << 16) | (2 << 24) | (1 << 37);
        regs[0].store(cap as u32, Ordering::Relaxed);
        regs[1].store((cap >> 32) as u32, Ordering::Relaxed);
        regs[off::VS / 4].store(0x0001_0400, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            regs,
            stop: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            faults: Mutex::new(Faults::default()),
            disk: Mutex::new(vec![0; (blocks << block_shift) as usize]),
            block_shift,
            commands: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-nvme".into())
            .spawn(move || run(&s))
            .expect("spawn the fake controller");
        FakeNvme {
            shared,
            thread: Some(thread),
        }
    }

    /// Its register window.
    pub fn mmio(&self) -> FakeMmio {
        FakeMmio(self.shared.clone())
    }

    /// Changes its faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        if let Ok(mut g) = self.shared.faults.lock() {
            f(&mut g);
        }
    }

    /// Makes every register read all ones (or not).
    pub fn set_gone(&self, gone: bool) {
        self.shared.gone.store(gone, Ordering::Release);
    }

    /// I/O commands it executed.
    pub fn commands(&self) -> u64 {
        self.shared.commands.load(Ordering::Relaxed)
    }

    /// A copy of the disk's bytes at `at`.
    pub fn disk(&self, at: usize, len: usize) -> Vec<u8> {
        self.shared
            .disk
            .lock()
            .map(|d| d[at..at + len].to_vec())
            .unwrap_or_default()
    }
}

impl Drop for FakeNvme {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reg(s: &Shared, off: usize) -> u32 {
    s.regs[off / 4].load(Ordering::Acquire)
}

fn set_reg(s: &Shared, off: usize, v: u32) {
    s.regs[off / 4].store(v, Ordering::Release);
}

/// The bytes at bus address `iova`.
///
/// # Safety
/// `iova` must be the address of `len` bytes of a live buffer the driver
/// handed to the controller (its DMA buffers, alive while the command or
/// queue that names them is).
unsafe fn mem<'a>(iova: u64, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(iova as *mut u8, len) }
}

/// The (address, length) pieces of a transfer's PRPs.
fn segments(sqe: &Sqe, len: usize) -> Vec<(u64, usize)> {
    let (p1, p2) = sqe.prps();
    let first = (PAGE - p1 as usize % PAGE).min(len);
    let mut out = vec![(p1, first)];
    let mut left = len - first;
    if left == 0 {
        return out;
    }
    if left <= PAGE {
        out.push((p2, left));
        return out;
    }
    let mut i = 0;
    while left > 0 {
        let mut e = [0u8; 8];
        // SAFETY: PRP2 is the command's list page (the driver's DMA memory).
        e.copy_from_slice(unsafe { &mem(p2 + (i * 8) as u64, 8)[..] });
        let n = left.min(PAGE);
        out.push((u64::from_le_bytes(e), n));
        left -= n;
        i += 1;
    }
    out
}

fn run(s: &Shared) {
    let mut enabled = false;
    let mut sqs: HashMap<u16, Sq> = HashMap::new();
    let mut cqs: HashMap<u16, Cq> = HashMap::new();
    let mut held: Vec<Held> = Vec::new();
    let mut backlog: Vec<(u16, Cqe)> = Vec::new();
    while !s.stop.load(Ordering::Acquire) {
        let cc = reg(s, off::CC);
        if cc & 1 != 0 && !enabled {
            let aqa = reg(s, off::AQA);
            let asq = u64::from(reg(s, off::ASQ)) | (u64::from(reg(s, off::ASQ + 4)) << 32);
            let acq = u64::from(reg(s, off::ACQ)) | (u64::from(reg(s, off::ACQ + 4)) << 32);
            sqs.insert(
                0,
                Sq {
                    base: asq,
                    entries: (aqa & 0xFFF) as u16 + 1,
                    head: 0,
                    cqid: 0,
                },
            );
            cqs.insert(
                0,
                Cq {
                    base: acq,
                    entries: ((aqa >> 16) & 0xFFF) as u16 + 1,
                    tail: 0,
                    phase: true,
                },
            );
            for w in &s.regs[off::DOORBELLS / 4..] {
                w.store(0, Ordering::Release);
            }
            enabled = true;
            set_reg(s, off::CSTS, 1);
        } else if cc & 1 == 0 && enabled {
            // Reset: queues gone, fatal status cleared.
            enabled = false;
            sqs.clear();
            cqs.clear();
            held.clear();
            backlog.clear();
            set_reg(s, off::CSTS, 0);
        } else if cc & 1 == 0 {
            set_reg(s, off::CSTS, reg(s, off::CSTS) & !1);
        }
        if (cc >> 14) & 3 != 0 {
            set_reg(s, off::CSTS, reg(s, off::CSTS) | (2 << 2));
        }
        if !enabled || reg(s, off::CSTS) & 2 != 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let mut batch: Vec<(u16, Cqe)> = Vec::new();
        let mut qids: Vec<u16> = sqs.keys().copied().collect();
        qids.sort_unstable();
        for qid in qids {
            let tail = reg(s, off::DOORBELLS + 8 * usize::from(qid)) as u16;
            while let Some(q) = sqs.get_mut(&qid) {
                if q.head == tail || tail >= q.entries {
                    break;
                }
                let mut e = [0u8; 64];
                // SAFETY: the SQ ring the driver registered, entry `head`.
                e.copy_from_slice(unsafe { mem(q.base + u64::from(q.head) * 64, 64) });
                fence(Ordering::Acquire);
                q.head = (q.head + 1) % q.entries;
                let (cqid, sqhd) = (q.cqid, q.head);
                let sqe = Sqe(e);
                if qid == 0 {
                    let c = admin_cmd(s, &sqe, &mut sqs, &mut cqs, &mut held, sqhd);
                    batch.push((0, c));
                    continue;
                }
                if let Some(c) = io_cmd(s, qid, &sqe, sqhd, &mut held) {
                    batch.push((cqid, c));
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            if held[i].at <= now {
                let h = held.swap_remove(i);
                let (cqid, sqhd) = sqs.get(&h.sqid).map(|q| (q.cqid, q.head)).unwrap_or((0, 0));
                batch.push((cqid, execute(s, h.sqid, &h.sqe, sqhd)));
            } else {
                i += 1;
            }
        }
        let reorder = s.faults.lock().map(|f| f.reorder).unwrap_or(false);
        if reorder {
            batch.reverse();
        }
        // Each entry carries the SQ head when it is posted (monotonic in
        // posting order, whatever order commands finish in).
        for (_, c) in batch.iter_mut() {
            if let Some(q) = sqs.get(&c.sqid) {
                c.sqhd = q.head;
            }
        }
        backlog.extend(batch);
        let idle = backlog.is_empty();
        backlog.retain(|(cqid, c)| !post(s, &mut cqs, *cqid, c));
        if idle {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// Posts `c` on CQ `cqid`; false when the CQ is full (try again later).
fn post(s: &Shared, cqs: &mut HashMap<u16, Cq>, cqid: u16, c: &Cqe) -> bool {
    let Some(q) = cqs.get_mut(&cqid) else {
        return true;
    };
    let head = reg(s, off::DOORBELLS + 8 * usize::from(cqid) + 4) as u16;
    if (q.tail + 1) % q.entries == head {
        return false;
    }
    let mut c = *c;
    c.phase = q.phase;
    let b = c.bytes();
    // SAFETY: the CQ ring the driver registered, entry `tail`.
    let slot = unsafe { mem(q.base + u64::from(q.tail) * 16, 16) };
    slot[..14].copy_from_slice(&b[..14]);
    // The phase (in the last word) goes last.
    fence(Ordering::Release);
    // SAFETY: as above.
    unsafe { (slot.as_mut_ptr().add(14) as *mut [u8; 2]).write_volatile([b[14], b[15]]) };
    q.tail += 1;
    if q.tail == q.entries {
        q.tail = 0;
        q.phase = !q.phase;
    }
    true
}

fn cqe(sqid: u16, sqhd: u16, cid: u16, status: Status, dw0: u32) -> Cqe {
    Cqe {
        dw0,
        dw1: 0,
        sqhd,
        sqid,
        cid,
        phase: false,
        status,
    }
}

const OK: Status = Status::OK;

fn admin_cmd(
    s: &Shared,
    sqe: &Sqe,
    sqs: &mut HashMap<u16, Sq>,
    cqs: &mut HashMap<u16, Cq>,
    held: &mut Vec<Held>,
    sqhd: u16,
) -> Cqe {
    let cid = sqe.cid();
    let r = |st, dw0| cqe(0, sqhd, cid, st, dw0);
    match sqe.opcode() {
        admin::IDENTIFY => {
            let (p1, _) = sqe.prps();
            // SAFETY: the driver's identify page.
            let b = unsafe { mem(p1, 4096) };
            b.fill(0);
            match sqe.cdw(10) & 0xFF {
                1 => {
                    b[4..12].copy_from_slice(b"FAKE0001");
                    b[24..39].copy_from_slice(b"Flint fake NVMe");
                    b[77] = 5; // MDTS: 128 KiB
                    b[520] = 1 << 3; // ONCS: Write Zeroes
                    b[525] = 1; // VWC
                }
                0 => {
                    let blocks =
                        s.disk.lock().map(|d| d.len()).unwrap_or(0) as u64 >> s.block_shift;
                    b[0..8].copy_from_slice(&blocks.to_le_bytes());
                    b[8..16].copy_from_slice(&blocks.to_le_bytes());
                    b[130] = s.block_shift;
                }
                _ => return r(Status::INVALID_FIELD, 0),
            }
            r(OK, 0)
        }
        admin::SET_FEATURES if sqe.cdw(10) & 0xFF == 0x07 => {
            let want = sqe.cdw(11) & 0xFFFF;
            let n = want.min(3);
            r(OK, n | (n << 16))
        }
        admin::CREATE_CQ => {
            let qid = (sqe.cdw(10) & 0xFFFF) as u16;
            cqs.insert(
                qid,
                Cq {
                    base: sqe.prps().0,
                    entries: (sqe.cdw(10) >> 16) as u16 + 1,
                    tail: 0,
                    phase: true,
                },
            );
            r(OK, 0)
        }
        admin::CREATE_SQ => {
            let qid = (sqe.cdw(10) & 0xFFFF) as u16;
            let cqid = (sqe.cdw(11) >> 16) as u16;
            if !cqs.contains_key(&cqid) {
                return r(Status::CQ_INVALID, 0);
            }
            sqs.insert(
                qid,
                Sq {
                    base: sqe.prps().0,
                    entries: (sqe.cdw(10) >> 16) as u16 + 1,
                    head: 0,
                    cqid,
                },
            );
            r(OK, 0)
        }
        admin::ABORT => {
            let (sqid, acid) = ((sqe.cdw(10) & 0xFFFF) as u16, (sqe.cdw(10) >> 16) as u16);
            let ignore = s.faults.lock().map(|f| f.ignore_abort).unwrap_or(false);
            if let Some(i) = held
                .iter()
                .position(|h| !ignore && h.sqid == sqid && h.sqe.cid() == acid)
            {
                // Complete the aborted command now, as aborted.
                let h = held.swap_remove(i);
                let cqid = sqs.get(&sqid).map(|q| q.cqid).unwrap_or(0);
                let st = Status::ABORTED;
                let _ = post(s, cqs, cqid, &cqe(sqid, 0, h.sqe.cid(), st, 0));
                return r(OK, 0);
            }
            r(OK, 1)
        }
        _ => r(Status::INVALID_OPCODE, 0),
    }
}

fn io_cmd(s: &Shared, sqid: u16, sqe: &Sqe, sqhd: u16, held: &mut Vec<Held>) -> Option<Cqe> {
    if let Ok(mut f) = s.faults.lock() {
        if let Some(n) = f.fatal_after.as_mut() {
            if *n == 0 {
                set_reg(s, off::CSTS, reg(s, off::CSTS) | 2);
                return None;
            }
            *n -= 1;
        }
        if let Some(e) = f.fail.iter_mut().find(|e| e.0 == sqe.opcode() && e.2 > 0) {
            e.2 -= 1;
            return Some(cqe(sqid, sqhd, sqe.cid(), e.1, 0));
        }
        if let Some((op, d)) = f.stall {
            if op == sqe.opcode() {
                f.stall = None;
                held.push(Held {
                    at: Instant::now() + d,
                    sqid,
                    sqe: *sqe,
                });
                return None;
            }
        }
    }
    Some(execute(s, sqid, sqe, sqhd))
}

fn execute(s: &Shared, sqid: u16, sqe: &Sqe, sqhd: u16) -> Cqe {
    let cid = sqe.cid();
    let r = |st| cqe(sqid, sqhd, cid, st, 0);
    s.commands.fetch_add(1, Ordering::Relaxed);
    let lba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
    let blocks = u64::from(sqe.cdw(12) & 0xFFFF) + 1;
    let Ok(mut disk) = s.disk.lock() else {
        return r(Status::INTERNAL);
    };
    let at = (lba << s.block_shift) as usize;
    let len = (blocks << s.block_shift) as usize;
    let in_range = at + len <= disk.len();
    match sqe.opcode() {
        nvm::FLUSH => r(OK),
        nvm::READ | nvm::WRITE | nvm::WRITE_ZEROES if !in_range => r(Status::LBA_RANGE),
        nvm::WRITE_ZEROES => {
            disk[at..at + len].fill(0);
            r(OK)
        }
        nvm::READ | nvm::WRITE => {
            let mut pos = at;
            for (iova, n) in segments(sqe, len) {
                // SAFETY: the command's data buffer, alive while it is
                // outstanding (the driver's contract).
                let m = unsafe { mem(iova, n) };
                if sqe.opcode() == nvm::READ {
                    m.copy_from_slice(&disk[pos..pos + n]);
                } else {
                    disk[pos..pos + n].copy_from_slice(m);
                }
                pos += n;
            }
            r(OK)
        }
        _ => r(Status::INVALID_OPCODE),
    }
}
