//! What the target tells a host about itself: Identify data (controller,
//! namespace, active namespace list, namespace identification
//! descriptors) and log pages (discovery, SMART, error, firmware).
//! Offsets are the NVMe base specification's (2.0) and the Linux host's
//! `struct nvme_id_ctrl` / `nvme_id_ns`.

use super::spec::{ascii, nqn};
use super::subsystem::{Controller, Subsystem, Target, Volume, DISCOVERY_NQN, QUEUE_ENTRIES};

/// Bytes of an Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;
/// Maximum data transfer, as a power of two of the 4 KiB page: 1 MiB.
pub const MDTS: u8 = 8;
/// Most in-capsule data bytes of a write (IOCCSZ less the SQE).
pub const IN_CAPSULE: usize = 8192;
/// Keep Alive granularity in 100 ms units (KAS).
const KAS: u16 = 1;
/// The NVMe version the target reports (1.4).
pub const VERSION: u32 = 0x0001_0400;
/// Firmware revision.
const FIRMWARE: &str = "flint";

/// Identify Controller for `c`.
pub fn controller(t: &Target, c: &Controller) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let sub: Option<&Subsystem> = c.subsystem.map(|i| &t.subsystems[i]);
    b[0..2].copy_from_slice(&0x1D0Fu16.to_le_bytes()); // VID: none registered; stable
    b[2..4].copy_from_slice(&0x1D0Fu16.to_le_bytes());
    ascii(
        &mut b,
        4,
        20,
        sub.map(|s| s.serial.as_str()).unwrap_or("discovery"),
    );
    ascii(&mut b, 24, 40, "Flint NVMe/TCP volume");
    ascii(&mut b, 64, 8, FIRMWARE);
    b[72] = 6; // RAB
    b[77] = MDTS;
    b[78..80].copy_from_slice(&c.cntlid.to_le_bytes());
    b[80..84].copy_from_slice(&VERSION.to_le_bytes());
    // CNTRLTYPE: 1 I/O controller, 2 discovery controller.
    b[111] = if sub.is_some() { 1 } else { 2 };
    b[258] = 3; // ACL: abort limit, 0-based
    b[259] = 3; // AERL: async events outstanding, 0-based
    b[260] = 0x3; // FRMW: slot 1 read-only, one slot
    b[261] = 0x04; // LPA: extended data for Get Log Page
    b[262] = 0; // ELPE: one error log entry, 0-based
    b[266..268].copy_from_slice(&343u16.to_le_bytes()); // WCTEMP (K)
    b[268..270].copy_from_slice(&373u16.to_le_bytes()); // CCTEMP (K)
    b[320..322].copy_from_slice(&KAS.to_le_bytes());
    b[512] = 0x66; // SQES: 64 bytes
    b[513] = 0x44; // CQES: 16 bytes
    b[514..516].copy_from_slice(&QUEUE_ENTRIES.to_le_bytes()); // MAXCMD
    if let Some(s) = sub {
        let nn = s.namespaces.iter().map(|v| v.nsid).max().unwrap_or(0);
        b[516..520].copy_from_slice(&nn.to_le_bytes());
        // ONCS: Dataset Management (bit 2), Write Zeroes (bit 3).
        b[520..522].copy_from_slice(&0x000Cu16.to_le_bytes());
        // VWC: only when a namespace acknowledges before durable.
        b[525] = u8::from(s.namespaces.iter().any(|v| v.write_back));
        b[540..544].copy_from_slice(&nn.to_le_bytes()); // MNAN
    }
    // SGLS: SGLs supported (bit 0), offsets in data block descriptors for
    // in-capsule data (bit 20).
    b[536..540].copy_from_slice(&0x0010_0001u32.to_le_bytes());
    nqn(
        &mut b,
        768,
        256,
        sub.map(|s| s.nqn.as_str()).unwrap_or(DISCOVERY_NQN),
    );
    // Fabrics: IOCCSZ in 16-byte units (the SQE and the in-capsule data),
    // IORCSZ (the CQE), ICDOFF 0 (data right after the SQE), FCATT 0
    // (dynamic controller model), MSDBD 1.
    let ioccsz = ((64 + IN_CAPSULE) / 16) as u32;
    b[1792..1796].copy_from_slice(&ioccsz.to_le_bytes());
    b[1796..1800].copy_from_slice(&1u32.to_le_bytes());
    b[1803] = 1;
    // Power state 0: 25 W, the only one.
    b[2048..2050].copy_from_slice(&2500u16.to_le_bytes());
    b
}

/// Identify Namespace for `v`.
pub fn namespace(v: &Volume) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let n = v.blocks();
    b[0..8].copy_from_slice(&n.to_le_bytes()); // NSZE
    b[8..16].copy_from_slice(&n.to_le_bytes()); // NCAP
    b[16..24].copy_from_slice(&n.to_le_bytes()); // NUSE
                                                 // NSFEAT bit 2: deallocated blocks are reported (DLFEAT below).
    b[24] = 0;
    b[25] = 0; // NLBAF: one format, 0-based
    b[26] = 0; // FLBAS: format 0
               // DLFEAT: deallocated or zeroed blocks read as zeros; Write Zeroes
               // may deallocate.
    b[33] = 0x09;
    b[104..120].copy_from_slice(&v.uuid); // NGUID
                                          // LBAF0: no metadata, the block size, best performance.
    b[128 + 2] = v.lba_shift;
    b
}

/// The active namespace list: NSIDs above `after`, ascending.
pub fn active_list(s: &Subsystem, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let mut ids: Vec<u32> = s
        .namespaces
        .iter()
        .map(|v| v.nsid)
        .filter(|&n| n > after)
        .collect();
    ids.sort_unstable();
    for (i, id) in ids.iter().take(IDENTIFY_LEN / 4).enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
    }
    b
}

/// The namespace identification descriptors of `v`: its NGUID and UUID.
pub fn descriptors(v: &Volume) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    // NIDT 2 (NGUID), NIDL 16.
    b[0] = 2;
    b[1] = 16;
    b[4..20].copy_from_slice(&v.uuid);
    // NIDT 3 (UUID), NIDL 16: the same bytes as a version-4 style UUID.
    let mut u = v.uuid;
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    b[20] = 3;
    b[21] = 16;
    b[24..40].copy_from_slice(&u);
    b
}

/// The discovery log page: one entry per subsystem `host` is admitted to.
pub fn discovery_log(t: &Target, host: &str) -> Vec<u8> {
    let subs: Vec<&Subsystem> = t
        .subsystems
        .iter()
        .filter(|s| s.any_host || s.hosts.iter().any(|h| h == host))
        .collect();
    let mut b = vec![0u8; 1024 * (1 + subs.len())];
    // GENCTR: the configuration does not change while serving.
    b[0..8].copy_from_slice(&1u64.to_le_bytes());
    b[8..16].copy_from_slice(&(subs.len() as u64).to_le_bytes());
    for (i, s) in subs.iter().enumerate() {
        let e = &mut b[1024 * (i + 1)..1024 * (i + 2)];
        e[0] = 3; // TRTYPE: TCP
        e[1] = if t.addr.is_ipv4() { 1 } else { 2 }; // ADRFAM
        e[2] = 2; // SUBTYPE: NVM subsystem
        e[3] = 0x02; // TREQ: secure channel not required
        e[4..6].copy_from_slice(&1u16.to_le_bytes()); // PORTID
        e[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes()); // CNTLID: dynamic
        e[8..10].copy_from_slice(&32u16.to_le_bytes()); // ASQSZ
        ascii(e, 32, 32, &t.addr.port().to_string());
        e[32 + t.addr.port().to_string().len()..64].fill(0);
        nqn(e, 256, 256, &s.nqn);
        let ip = t.addr.ip().to_string();
        ascii(e, 512, 256, &ip);
        e[512 + ip.len()..768].fill(0);
        // TSAS for TCP: SECTYPE 0 (none).
    }
    b
}

/// The SMART / health log (512 bytes): nothing failing.
pub fn smart_log(read_bytes: u64, write_bytes: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[1..3].copy_from_slice(&313u16.to_le_bytes()); // composite temperature (K)
    b[3] = 100; // available spare
    b[4] = 10; // spare threshold
               // Data units read / written, in thousands of 512-byte units.
    let units = |bytes: u64| (bytes / 512).div_ceil(1000) as u128;
    b[32..48].copy_from_slice(&units(read_bytes).to_le_bytes());
    b[48..64].copy_from_slice(&units(write_bytes).to_le_bytes());
    b
}

/// The firmware slot log (512 bytes): slot 1 active.
pub fn firmware_log() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1;
    ascii(&mut b, 8, 8, FIRMWARE);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::subsystem::Target;

    fn vol() -> Volume {
        Volume {
            nsid: 1,
            name: "vols:/a".into(),
            fs: 1,
            ino: 5,
            bytes: 1 << 30,
            lba_shift: 12,
            uuid: [7; 16],
            write_back: false,
        }
    }

    fn target() -> Target {
        let sub = Subsystem {
            nqn: "nqn.2026-12.io.flint:a".into(),
            serial: "flint-a".into(),
            hosts: vec![],
            any_host: true,
            namespaces: vec![vol()],
        };
        Target::new(vec![sub], "127.0.0.1:4420".parse().unwrap(), 4)
    }

    #[test]
    fn controller_carries_what_linux_requires() {
        let t = target();
        let c = t.admit("nqn.2026-12.io.flint:a", "h", 5000).unwrap();
        let b = controller(&t, &c);
        // The cntlid Connect returned.
        assert_eq!(u16::from_le_bytes([b[78], b[79]]), c.cntlid);
        // KAS nonzero, MDTS nonzero, ICDOFF 0, SGL support bits.
        assert_ne!(u16::from_le_bytes([b[320], b[321]]), 0);
        assert_ne!(b[77], 0);
        assert_eq!(u16::from_le_bytes([b[1800], b[1801]]), 0);
        assert_ne!(b[536] & 0x3, 0);
        assert_eq!(&b[768..790], b"nqn.2026-12.io.flint:a");
        assert_eq!(u32::from_le_bytes(b[516..520].try_into().unwrap()), 1);
    }

    #[test]
    fn namespace_size_and_format() {
        let b = namespace(&vol());
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1 << 18);
        assert_eq!(b[130], 12);
        let l = active_list(&t_sub(), 0);
        assert_eq!(&l[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(active_list(&t_sub(), 1)[0..4], [0; 4]);
    }

    fn t_sub() -> Subsystem {
        target().subsystems[0].clone()
    }

    #[test]
    fn discovery_lists_admitted_subsystems() {
        let t = target();
        let b = discovery_log(&t, "anyone");
        assert_eq!(b.len(), 2048);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 1);
        assert_eq!(b[1024], 3);
        assert_eq!(&b[1024 + 32..1024 + 37], b"4420\0");
        assert_eq!(&b[1024 + 512..1024 + 522], b"127.0.0.1\0");
    }
}
