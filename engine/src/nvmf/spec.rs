//! The parts of the NVMe specifications the target speaks: the commands,
//! entries and statuses it shares with Flint's NVMe driver (defined once,
//! in `flint_dataplane::bdev::nvme::cmd`), and what only fabrics have —
//! the Fabrics command, properties, features and log pages it answers, SGL
//! descriptor types, and the ASCII/NQN fields of Identify data.

pub use flint_dataplane::bdev::nvme::cmd::{admin, nvm as io, Cqe, Sqe, Status};

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

/// SGL descriptor of data carried in the capsule (data block, offset).
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL descriptor of data moved by the transport (R2T / C2HData).
pub const SGL_TRANSPORT: u8 = 0x5A;

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
    fn identify_strings() {
        let mut b = [0xAAu8; 12];
        ascii(&mut b, 0, 6, "ab");
        assert_eq!(&b[..6], b"ab    ");
        nqn(&mut b, 6, 6, "nqn.toolong");
        assert_eq!(&b[6..], b"nqn.t\0");
        assert_eq!(read_str(&b[6..]), "nqn.t");
    }
}
