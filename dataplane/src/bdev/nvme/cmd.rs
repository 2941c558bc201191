//! NVMe commands as a controller reads them — the one definition both
//! sides of Flint use (this driver, and the NVMe/TCP target in the engine):
//! opcodes, the 64-byte submission entry built and read through typed
//! accessors, the 16-byte completion entry, and its status as a typed
//! value with the codes either side sends.

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
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
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

    /// Flags: fused bits, and PSDT (SGL use) in bits 7:6.
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Namespace (for a Fabrics command, byte 4 is its type).
    pub fn nsid(&self) -> u32 {
        self.dword(4)
    }

    /// The byte at `at` (Fabrics fields).
    pub fn byte(&self, at: usize) -> u8 {
        self.0[at]
    }

    /// The little-endian u16 at `at` (Fabrics fields).
    pub fn word(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    /// The little-endian u32 at `at` (Fabrics fields).
    pub fn dword(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap_or([0; 4]))
    }

    /// The little-endian u64 at `at` (Fabrics fields).
    pub fn qword(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap_or([0; 8]))
    }

    /// Sets the little-endian u32 at `at` (Fabrics fields, SGLs).
    pub fn set_dword(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// The Fabrics command type.
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// The data SGL descriptor's address.
    pub fn sgl_addr(&self) -> u64 {
        self.qword(24)
    }

    /// The data SGL descriptor's length.
    pub fn sgl_len(&self) -> u32 {
        self.dword(32)
    }

    /// The data SGL descriptor's type (bits 7:4) and subtype (3:0).
    pub fn sgl_type(&self) -> u8 {
        self.0[39]
    }

    /// Starting LBA of an I/O command (CDW10-11).
    pub fn slba(&self) -> u64 {
        self.qword(40)
    }

    /// Data pointers: PRP entries 1 and 2.
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.0[24..32].copy_from_slice(&prp1.to_le_bytes());
        self.0[32..40].copy_from_slice(&prp2.to_le_bytes());
    }

    /// PRP entries 1 and 2.
    pub fn prps(&self) -> (u64, u64) {
        (self.qword(24), self.qword(32))
    }

    /// Sets command dword `n` (10..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        debug_assert!((10..=15).contains(&n));
        self.set_dword(40 + (n - 10) * 4, v);
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        debug_assert!((10..=15).contains(&n));
        self.dword(40 + (n - 10) * 4)
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
    /// Success.
    pub const OK: Status = Status::generic(0x00);
    /// Invalid command opcode.
    pub const INVALID_OPCODE: Status = Status::generic(0x01).final_();
    /// Invalid field in command.
    pub const INVALID_FIELD: Status = Status::generic(0x02).final_();
    /// Command identifier conflict.
    pub const CID_CONFLICT: Status = Status::generic(0x03).final_();
    /// Data transfer error.
    pub const DATA_TRANSFER: Status = Status::generic(0x04);
    /// Internal error.
    pub const INTERNAL: Status = Status::generic(0x06);
    /// Command aborted by request (an Abort).
    pub const ABORTED: Status = Status::generic(0x07);
    /// Invalid namespace or format.
    pub const INVALID_NS: Status = Status::generic(0x0B).final_();
    /// Command sequence error (e.g. I/O before the controller is enabled).
    pub const SEQUENCE: Status = Status::generic(0x0C).final_();
    /// Data SGL length invalid.
    pub const SGL_LENGTH: Status = Status::generic(0x0F).final_();
    /// SGL descriptor type invalid.
    pub const SGL_TYPE: Status = Status::generic(0x11).final_();
    /// Transient transport error (a data digest failed): retry.
    pub const TRANSIENT_TRANSPORT: Status = Status::generic(0x22);
    /// LBA out of range.
    pub const LBA_RANGE: Status = Status::generic(0x80).final_();
    /// Capacity exceeded (the file system or quota is full).
    pub const CAPACITY: Status = Status::generic(0x81).final_();
    /// Namespace not ready (the engine is stopping): retry.
    pub const NOT_READY: Status = Status::generic(0x82);
    /// Completion queue invalid (Create I/O SQ naming no CQ).
    pub const CQ_INVALID: Status = Status::specific(0x00);
    /// Asynchronous Event Request limit exceeded.
    pub const AER_LIMIT: Status = Status::specific(0x05);
    /// Invalid log page.
    pub const INVALID_LOG: Status = Status::specific(0x09);
    /// Feature identifier not saveable.
    pub const NOT_SAVEABLE: Status = Status::specific(0x0D);
    /// Namespace is write protected.
    pub const WRITE_PROTECTED: Status = Status::specific(0x20);
    /// Connect: incompatible format.
    pub const CONNECT_FORMAT: Status = Status::specific(0x80);
    /// Connect: controller busy.
    pub const CONNECT_BUSY: Status = Status::specific(0x81);
    /// Connect: invalid parameters.
    pub const CONNECT_INVALID: Status = Status::specific(0x82);
    /// Connect: invalid host (not allowed).
    pub const CONNECT_HOST: Status = Status::specific(0x84);
    /// Media: write fault.
    pub const WRITE_FAULT: Status = Status::media(0x80);
    /// Media: unrecovered read error.
    pub const READ_ERROR: Status = Status::media(0x81);

    const fn generic(sc: u8) -> Status {
        Status {
            sct: 0,
            sc,
            dnr: false,
        }
    }

    const fn specific(sc: u8) -> Status {
        Status {
            sct: 1,
            sc,
            dnr: true,
        }
    }

    const fn media(sc: u8) -> Status {
        Status {
            sct: 2,
            sc,
            dnr: false,
        }
    }

    /// This status with Do Not Retry set.
    pub const fn final_(self) -> Status {
        Status { dnr: true, ..self }
    }

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
    /// Dword 1 (command specific: a Property Get's upper half).
    pub dw1: u32,
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
            dw1: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
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
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.field(self.phase).to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_layout() {
        assert_eq!(Status::OK.field(false), 0);
        // SCT 1, SC 0x82, DNR: as the Linux host decodes it.
        assert_eq!(
            Status::CONNECT_INVALID.field(false),
            (0x82 << 1) | (1 << 9) | (1 << 15)
        );
        assert_eq!(Status::READ_ERROR.field(true), 1 | (0x81 << 1) | (2 << 9));
        assert_eq!(
            Status::from_field(Status::CONNECT_HOST.field(true)),
            Status::CONNECT_HOST
        );
    }

    #[test]
    fn cqe_bytes_round_trip() {
        let c = Cqe {
            dw0: 1,
            dw1: 2,
            sqhd: 3,
            sqid: 4,
            cid: 5,
            phase: true,
            status: Status::INVALID_FIELD,
        };
        let b = c.bytes();
        assert_eq!(&b[..14], &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 4, 0, 5, 0]);
        assert_eq!(Cqe::read(&b), c);
    }
}
