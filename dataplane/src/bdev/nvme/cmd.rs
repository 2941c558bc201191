//! Commands as the controller reads them: the 64-byte submission entry
//! (built, never parsed from raw integers by callers), the 16-byte
//! completion entry, and its status as a typed value.

/// Admin opcodes the driver sends.
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Delete I/O Completion Queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
}

/// NVM opcodes.
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// A submission queue entry under construction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sqe(pub [u8; 64]);

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sqe(opc {:#x} cid {})", self.opcode(), self.cid())
    }
}

impl Sqe {
    /// A command with `opcode` for namespace `nsid`.
    pub fn new(opcode: u8, nsid: u32) -> Sqe {
        let mut b = [0u8; 64];
        b[0] = opcode;
        b[4..8].copy_from_slice(&nsid.to_le_bytes());
        Sqe(b)
    }

    /// Opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        u16::from_le_bytes([self.0[2], self.0[3]])
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.0[2..4].copy_from_slice(&cid.to_le_bytes());
    }

    /// Namespace.
    pub fn nsid(&self) -> u32 {
        u32::from_le_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    /// Data pointers: PRP entries 1 and 2.
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.0[24..32].copy_from_slice(&prp1.to_le_bytes());
        self.0[32..40].copy_from_slice(&prp2.to_le_bytes());
    }

    /// PRP entries 1 and 2.
    pub fn prps(&self) -> (u64, u64) {
        (
            u64::from_le_bytes(self.0[24..32].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(self.0[32..40].try_into().unwrap_or([0; 8])),
        )
    }

    /// Sets command dword `n` (10..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        debug_assert!((10..=15).contains(&n));
        let at = 40 + (n - 10) * 4;
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        let at = 40 + (n - 10) * 4;
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap_or([0; 4]))
    }

    /// A read or write of `blocks` blocks at `lba` (CDW10-12).
    pub fn rw(opcode: u8, nsid: u32, lba: u64, blocks: u32) -> Sqe {
        debug_assert!((1..=1 << 16).contains(&blocks));
        let mut s = Sqe::new(opcode, nsid);
        s.set_cdw(10, lba as u32);
        s.set_cdw(11, (lba >> 32) as u32);
        s.set_cdw(12, blocks - 1);
        s
    }
}

/// A status: type, code, Do Not Retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Status code type.
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// Do not retry.
    pub dnr: bool,
}

impl Status {
    /// From a CQE's status field (bits 15:1 of dword 3's upper half).
    pub fn from_field(f: u16) -> Status {
        Status {
            sc: ((f >> 1) & 0xFF) as u8,
            sct: ((f >> 9) & 7) as u8,
            dnr: f & (1 << 15) != 0,
        }
    }

    /// Success.
    pub fn ok(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The field a controller writes for this status (with phase `p`).
    pub fn field(self, p: bool) -> u16 {
        u16::from(p)
            | (u16::from(self.sc) << 1)
            | (u16::from(self.sct & 7) << 9)
            | (u16::from(self.dnr) << 15)
    }
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// Dword 0 (command specific).
    pub dw0: u32,
    /// Submission queue head.
    pub sqhd: u16,
    /// Submission queue.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Phase tag.
    pub phase: bool,
    /// Status.
    pub status: Status,
}

impl Cqe {
    /// Reads an entry from its 16 bytes.
    pub fn read(b: &[u8; 16]) -> Cqe {
        let f = u16::from_le_bytes([b[14], b[15]]);
        Cqe {
            dw0: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            sqhd: u16::from_le_bytes([b[8], b[9]]),
            sqid: u16::from_le_bytes([b[10], b[11]]),
            cid: u16::from_le_bytes([b[12], b[13]]),
            phase: f & 1 != 0,
            status: Status::from_field(f),
        }
    }

    /// Its 16 bytes (what a controller writes).
    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.field(self.phase).to_le_bytes());
        b
    }
}
