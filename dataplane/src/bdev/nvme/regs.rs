//! The controller's registers (NVMe base spec 2.0 §3.1) through typed
//! accessors: a [`Mmio`] window (BAR0 of a real controller, or a fake's
//! memory) read and written only by [`Regs`], each register a type with
//! named fields. A register reading all ones means the device is gone
//! (surprise removal, a dead link): callers treat it as fatal.

use std::time::Duration;

/// A register window: 32-bit accesses at byte offsets.
pub trait Mmio: Send + Sync {
    /// Reads the 32-bit register at `off`.
    fn read32(&self, off: usize) -> u32;
    /// Writes the 32-bit register at `off`.
    fn write32(&self, off: usize, v: u32);
}

/// Register offsets.
pub mod off {
    /// Controller Capabilities (64-bit).
    pub const CAP: usize = 0x00;
    /// Version.
    pub const VS: usize = 0x08;
    /// Controller Configuration.
    pub const CC: usize = 0x14;
    /// Controller Status.
    pub const CSTS: usize = 0x1C;
    /// Admin Queue Attributes.
    pub const AQA: usize = 0x24;
    /// Admin Submission Queue base (64-bit).
    pub const ASQ: usize = 0x28;
    /// Admin Completion Queue base (64-bit).
    pub const ACQ: usize = 0x30;
    /// The first doorbell.
    pub const DOORBELLS: usize = 0x1000;
}

/// CAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Most entries a queue may have.
    pub fn max_entries(self) -> u32 {
        (self.0 & 0xFFFF) as u32 + 1
    }

    /// How long the controller may take to change CSTS.RDY (CAP.TO).
    pub fn timeout(self) -> Duration {
        Duration::from_millis(((self.0 >> 24) & 0xFF).max(1) * 500)
    }

    /// Bytes between doorbells (4 << CAP.DSTRD).
    pub fn doorbell_stride(self) -> usize {
        4 << ((self.0 >> 32) & 0xF)
    }

    /// Whether the NVM command set is supported (CAP.CSS bit 0).
    pub fn nvm(self) -> bool {
        (self.0 >> 37) & 1 != 0
    }

    /// Smallest memory page size in bytes (CAP.MPSMIN).
    pub fn min_page(self) -> usize {
        4096 << ((self.0 >> 48) & 0xF)
    }
}

/// CSTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csts(pub u32);

impl Csts {
    /// Ready.
    pub fn ready(self) -> bool {
        self.0 & 1 != 0
    }

    /// Controller Fatal Status.
    pub fn fatal(self) -> bool {
        self.0 & 2 != 0
    }

    /// Shutdown complete (SHST = 10b).
    pub fn shutdown_done(self) -> bool {
        (self.0 >> 2) & 3 == 2
    }

    /// The register read all ones: the device is gone.
    pub fn gone(self) -> bool {
        self.0 == u32::MAX
    }
}

/// CC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cc(pub u32);

impl Cc {
    /// Enabled with the NVM command set, 4 KiB pages, round robin, 64-byte
    /// SQ and 16-byte CQ entries.
    pub fn enabled() -> Cc {
        Cc(1 | (6 << 16) | (4 << 20))
    }

    /// Whether EN is set.
    pub fn enable(self) -> bool {
        self.0 & 1 != 0
    }

    /// This value with a normal shutdown requested.
    pub fn with_shutdown(self) -> Cc {
        Cc((self.0 & !(3 << 14)) | (1 << 14))
    }
}

/// The registers of one controller.
pub struct Regs<M: Mmio> {
    m: M,
    stride: usize,
}

impl<M: Mmio> Regs<M> {
    /// Registers over `m`.
    pub fn new(m: M) -> Regs<M> {
        let mut r = Regs { m, stride: 4 };
        r.stride = r.cap().doorbell_stride();
        r
    }

    fn read64(&self, off: usize) -> u64 {
        u64::from(self.m.read32(off)) | (u64::from(self.m.read32(off + 4)) << 32)
    }

    fn write64(&self, off: usize, v: u64) {
        self.m.write32(off, v as u32);
        self.m.write32(off + 4, (v >> 32) as u32);
    }

    /// CAP.
    pub fn cap(&self) -> Cap {
        Cap(self.read64(off::CAP))
    }

    /// VS.
    pub fn version(&self) -> u32 {
        self.m.read32(off::VS)
    }

    /// CC.
    pub fn cc(&self) -> Cc {
        Cc(self.m.read32(off::CC))
    }

    /// Writes CC.
    pub fn set_cc(&self, cc: Cc) {
        self.m.write32(off::CC, cc.0);
    }

    /// CSTS.
    pub fn csts(&self) -> Csts {
        Csts(self.m.read32(off::CSTS))
    }

    /// The admin queues: sizes (entries) and bus addresses.
    pub fn set_admin_queues(&self, entries: u16, sq: u64, cq: u64) {
        debug_assert!(entries >= 2);
        let n = u32::from(entries - 1);
        self.m.write32(off::AQA, n | (n << 16));
        self.write64(off::ASQ, sq);
        self.write64(off::ACQ, cq);
    }

    /// Rings queue `qid`'s submission doorbell with its new tail.
    pub fn sq_doorbell(&self, qid: u16, tail: u16) {
        self.m.write32(
            off::DOORBELLS + (2 * usize::from(qid)) * self.stride,
            u32::from(tail),
        );
    }

    /// Rings queue `qid`'s completion doorbell with its new head.
    pub fn cq_doorbell(&self, qid: u16, head: u16) {
        self.m.write32(
            off::DOORBELLS + (2 * usize::from(qid) + 1) * self.stride,
            u32::from(head),
        );
    }
}
