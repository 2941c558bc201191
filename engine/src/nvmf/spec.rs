//! The parts of the NVMe base and fabrics specifications the target
//! speaks: opcodes, the submission queue entry read through typed
//! accessors, the completion queue entry, and status codes.

/// Admin command opcodes.
pub mod admin {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
}

/// NVM command set opcodes.
pub mod io {
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

/// The Fabrics command opcode (its type in byte 4).
pub const FABRICS: u8 = 0x7F;

/// Fabrics command types.
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
}

/// Controller properties (register offsets).
pub mod prop {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version.
    pub const VS: u32 = 0x08;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1C;
}

/// Feature identifiers.
pub mod feature {
    /// Volatile Write Cache.
    pub const VOLATILE_WC: u8 = 0x06;
    /// Number of Queues.
    pub const NUM_QUEUES: u8 = 0x07;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT: u8 = 0x0B;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE: u8 = 0x0F;
}

/// Log page identifiers.
pub mod log {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE: u8 = 0x03;
    /// Discovery.
    pub const DISCOVERY: u8 = 0x70;
}

/// A status: type, code and Do Not Retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Status code type (0 generic, 1 command specific, 2 media).
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
    /// Invalid namespace or format.
    pub const INVALID_NS: Status = Status::generic(0x0B).final_();
    /// Command sequence error (e.g. I/O before the controller is enabled).
    pub const SEQUENCE: Status = Status::generic(0x0C).final_();
    /// SGL descriptor type invalid.
    pub const SGL_TYPE: Status = Status::generic(0x11).final_();
    /// Data SGL length invalid.
    pub const SGL_LENGTH: Status = Status::generic(0x0F).final_();
    /// Transient transport error (a data digest failed): retry.
    pub const TRANSIENT_TRANSPORT: Status = Status::generic(0x22);
    /// LBA out of range.
    pub const LBA_RANGE: Status = Status::generic(0x80).final_();
    /// Capacity exceeded (the file system or quota is full).
    pub const CAPACITY: Status = Status::generic(0x81).final_();
    /// Namespace not ready (the engine is stopping): retry.
    pub const NOT_READY: Status = Status::generic(0x82);
    /// Invalid log page.
    pub const INVALID_LOG: Status = Status::specific(0x09);
    /// Feature identifier not saveable.
    pub const NOT_SAVEABLE: Status = Status::specific(0x0D);
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

    const fn final_(self) -> Status {
        Status { dnr: true, ..self }
    }

    /// The 15-bit status field of a CQE (shifted past the phase bit).
    pub fn field(self) -> u16 {
        (u16::from(self.sc) << 1) | (u16::from(self.sct & 7) << 9) | (u16::from(self.dnr) << 15)
    }

    /// Whether it is success.
    pub fn ok(self) -> bool {
        self.sct == 0 && self.sc == 0
    }
}

/// A submission queue entry, read through typed accessors.
#[derive(Clone, Copy)]
pub struct Sqe(pub [u8; 64]);

impl Sqe {
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap_or([0; 4]))
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap_or([0; 8]))
    }

    /// Opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// Flags: fused bits and PSDT (SGL use) in bits 7:6.
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.u16(2)
    }

    /// Namespace identifier (for a Fabrics command, byte 4 is its type).
    pub fn nsid(&self) -> u32 {
        self.u32(4)
    }

    /// The Fabrics command type.
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        debug_assert!((10..=15).contains(&n));
        self.u32(40 + (n - 10) * 4)
    }

    /// The data SGL descriptor's address.
    pub fn sgl_addr(&self) -> u64 {
        self.u64(24)
    }

    /// The data SGL descriptor's length.
    pub fn sgl_len(&self) -> u32 {
        self.u32(32)
    }

    /// The data SGL descriptor's type (bits 7:4) and subtype (3:0).
    pub fn sgl_type(&self) -> u8 {
        self.0[39]
    }

    /// Starting LBA of an I/O command (CDW10-11).
    pub fn slba(&self) -> u64 {
        self.u64(40)
    }

    /// A byte at `at` (fabrics fields).
    pub fn byte(&self, at: usize) -> u8 {
        self.0[at]
    }

    /// A little-endian u16 at `at` (fabrics fields).
    pub fn word(&self, at: usize) -> u16 {
        self.u16(at)
    }

    /// A little-endian u32 at `at` (fabrics fields).
    pub fn dword(&self, at: usize) -> u32 {
        self.u32(at)
    }

    /// A little-endian u64 at `at` (fabrics fields).
    pub fn qword(&self, at: usize) -> u64 {
        self.u64(at)
    }
}

/// SGL descriptor of data carried in the capsule (data block, offset).
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL descriptor of data moved by the transport (R2T / C2HData).
pub const SGL_TRANSPORT: u8 = 0x5A;

/// A completion queue entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cqe {
    /// Command specific dword 0.
    pub dw0: u32,
    /// Command specific dword 1.
    pub dw1: u32,
    /// Submission queue head.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status field (phase bit 0 is always 0 on fabrics).
    pub status: u16,
}

impl Cqe {
    /// The 16 bytes on the wire.
    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.to_le_bytes());
        b
    }
}

/// Writes `s` into `b` at `at`, padded with spaces to `len` (Identify's
/// ASCII fields).
pub fn ascii(b: &mut [u8], at: usize, len: usize, s: &str) {
    let f = &mut b[at..at + len];
    f.fill(b' ');
    let s = s.as_bytes();
    let n = s.len().min(len);
    f[..n].copy_from_slice(&s[..n]);
}

/// Writes `s` into `b` at `at`, NUL-padded to `len` (NQN fields).
pub fn nqn(b: &mut [u8], at: usize, len: usize, s: &str) {
    let f = &mut b[at..at + len];
    f.fill(0);
    let s = s.as_bytes();
    let n = s.len().min(len - 1);
    f[..n].copy_from_slice(&s[..n]);
}

/// Reads a NUL-terminated string field.
pub fn read_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_layout() {
        assert_eq!(Status::OK.field(), 0);
        // SCT 1, SC 0x82, DNR: as the Linux host decodes it.
        assert_eq!(
            Status::CONNECT_INVALID.field(),
            (0x82 << 1) | (1 << 9) | (1 << 15)
        );
        assert_eq!(Status::READ_ERROR.field(), (0x81 << 1) | (2 << 9));
    }

    #[test]
    fn cqe_bytes() {
        let c = Cqe {
            dw0: 1,
            dw1: 2,
            sqhd: 3,
            sqid: 4,
            cid: 5,
            status: 6,
        };
        assert_eq!(c.bytes(), [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 4, 0, 5, 0, 6, 0]);
    }
}
