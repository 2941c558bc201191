//! NVMe/TCP PDUs (NVMe over TCP transport, TP 8000): the 8-byte common
//! header, what a host sends (ICReq, CapsuleCmd, H2CData, H2CTermReq)
//! parsed and checked, and what the target sends (ICResp, CapsuleResp,
//! C2HData, R2T, C2HTermReq) encoded. Header and data digests are CRC32C,
//! stored little-endian after the header and after the data.
//!
//! Parsing never trusts a length: a PDU is taken from the front of the
//! receive buffer only when all `plen` bytes are there, every field the
//! transport fixes is checked, and a violation is a [`Fatal`] naming the
//! fatal error status and the offset of the offending field — the
//! connection is then ended with a C2HTermReq carrying both.

use std::fmt;

/// Bytes of the common header.
pub const CH_LEN: usize = 8;
/// Bytes of an ICReq/ICResp.
pub const IC_LEN: usize = 128;
/// Header length of a CapsuleCmd: the common header and a 64-byte SQE.
pub const CMD_HLEN: usize = CH_LEN + 64;
/// Header length of a CapsuleResp: the common header and a 16-byte CQE.
pub const RESP_HLEN: usize = CH_LEN + 16;
/// Header length of H2CData, C2HData, R2T and the TermReqs.
pub const DATA_HLEN: usize = 24;
/// Bytes of a digest.
pub const DIGEST_LEN: usize = 4;
/// Most bytes of an offending header a TermReq carries.
pub const TERM_MAX_DATA: usize = 152;

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request (host).
    IcReq = 0x00,
    /// Initialize Connection Response (target).
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2cTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2hTermReq = 0x03,
    /// Command capsule (host).
    CapsuleCmd = 0x04,
    /// Response capsule (target).
    CapsuleResp = 0x05,
    /// Host to Controller data.
    H2cData = 0x06,
    /// Controller to Host data.
    C2hData = 0x07,
    /// Ready to Transfer (target).
    R2t = 0x09,
}

/// Common header flag: a header digest follows the header.
pub const FLAG_HDGST: u8 = 0x01;
/// Common header flag: a data digest follows the data.
pub const FLAG_DDGST: u8 = 0x02;
/// Data PDU flag: the last PDU of a transfer.
pub const FLAG_LAST: u8 = 0x04;

/// Fatal error statuses of a TermReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Fes {
    /// A header field is invalid (FEI: its byte offset).
    InvalidHeader = 0x01,
    /// A PDU arrived that the state of the connection does not allow.
    Sequence = 0x02,
    /// The header digest does not match.
    HeaderDigest = 0x03,
    /// Data offset or length outside the transfer.
    OutOfRange = 0x04,
    /// More data than the transfer (or the PDU limit) allows.
    LimitExceeded = 0x05,
    /// A parameter the target does not support (FEI: its byte offset).
    Unsupported = 0x06,
}

/// A violation that ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The fatal error status.
    pub fes: Fes,
    /// The fatal error information: the offending field's byte offset.
    pub fei: u32,
    /// What was wrong (for the log).
    pub why: &'static str,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?} at byte {})", self.why, self.fes, self.fei)
    }
}

fn fatal(fes: Fes, fei: u32, why: &'static str) -> Fatal {
    Fatal { fes, fei, why }
}

/// The digests a connection carries (negotiated by ICReq/ICResp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    /// CRC32C over every header.
    pub header: bool,
    /// CRC32C over every PDU's data.
    pub data: bool,
}

impl Digests {
    fn bits(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }

    fn hd(self) -> usize {
        if self.header {
            DIGEST_LEN
        } else {
            0
        }
    }
}

/// The common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// PDU type (raw: a host may send any byte).
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Header length.
    pub hlen: u8,
    /// Data offset (0: no data).
    pub pdo: u8,
    /// Whole PDU length, header, digests and data.
    pub plen: u32,
}

impl Header {
    /// Reads the common header from the first 8 bytes of `b`.
    pub fn read(b: &[u8]) -> Header {
        debug_assert!(b.len() >= CH_LEN);
        Header {
            kind: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind, self.flags, self.hlen, self.pdo]);
        out.extend_from_slice(&self.plen.to_le_bytes());
    }
}

/// An ICReq's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// Protocol format version (0).
    pub pfv: u16,
    /// Host PDU data alignment (dwords, 0-based).
    pub hpda: u8,
    /// Digests the host asks for.
    pub digests: Digests,
    /// Most outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
}

/// A PDU from the host, borrowed from the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum HostPdu<'a> {
    /// Initialize Connection Request.
    IcReq(IcReq),
    /// A command capsule: the 64-byte SQE and any in-capsule data.
    Command {
        /// The submission queue entry.
        sqe: &'a [u8; 64],
        /// In-capsule data (empty when none).
        data: &'a [u8],
        /// The data digest did not match (the command fails with a
        /// transient transport error; the connection goes on).
        bad_digest: bool,
    },
    /// Data for a write the target asked for with an R2T.
    Data {
        /// The command's identifier.
        cccid: u16,
        /// The transfer tag the R2T gave.
        ttag: u16,
        /// Offset of these bytes in the command's data.
        offset: u32,
        /// The bytes.
        data: &'a [u8],
        /// The last PDU of the R2T's transfer.
        last: bool,
        /// The data digest did not match.
        bad_digest: bool,
    },
    /// The host ends the connection.
    TermReq {
        /// Its fatal error status.
        fes: u16,
    },
}

/// Limits a target puts on what it receives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most in-capsule data bytes.
    pub in_capsule: usize,
    /// Most data bytes of one H2CData PDU (the ICResp's MAXH2CDATA).
    pub max_h2c: usize,
}

impl Limits {
    /// The largest PDU these limits allow (headers, digests and data).
    pub fn max_pdu(&self) -> usize {
        CMD_HLEN + 2 * DIGEST_LEN + self.in_capsule.max(self.max_h2c) + 256
    }
}

fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Takes one PDU from the front of `buf`: `Ok(None)` until all of it has
/// arrived, else the PDU and the bytes it took. `ic` is whether the
/// connection is initialized (an ICReq first, and only then); `digests`
/// what it negotiated.
pub fn parse<'a>(
    buf: &'a [u8],
    ic: bool,
    digests: Digests,
    limits: &Limits,
) -> Result<Option<(HostPdu<'a>, usize)>, Fatal> {
    if buf.len() < CH_LEN {
        return Ok(None);
    }
    let h = Header::read(buf);
    let plen = h.plen as usize;
    let hlen = usize::from(h.hlen);
    if plen < CH_LEN || plen > limits.max_pdu() {
        return Err(fatal(Fes::InvalidHeader, 4, "PDU length out of range"));
    }
    if hlen < CH_LEN || hlen > plen {
        return Err(fatal(Fes::InvalidHeader, 2, "header length out of range"));
    }
    if buf.len() < plen {
        return Ok(None);
    }
    let pdu = &buf[..plen];
    let kind = h.kind;
    if !ic {
        if kind != PduType::IcReq as u8 {
            return Err(fatal(Fes::Sequence, 0, "the first PDU must be an ICReq"));
        }
        if hlen != IC_LEN || plen != IC_LEN {
            return Err(fatal(Fes::InvalidHeader, 2, "an ICReq is 128 bytes"));
        }
        let pfv = le16(pdu, 8);
        if pfv != 0 {
            return Err(fatal(Fes::Unsupported, 8, "protocol format version not 0"));
        }
        let hpda = pdu[10];
        if hpda > 31 {
            return Err(fatal(Fes::InvalidHeader, 10, "HPDA above 31"));
        }
        let d = pdu[11];
        let req = IcReq {
            pfv,
            hpda,
            digests: Digests {
                header: d & 1 != 0,
                data: d & 2 != 0,
            },
            maxr2t: le32(pdu, 12),
        };
        return Ok(Some((HostPdu::IcReq(req), plen)));
    }
    let want_hlen = match kind {
        k if k == PduType::CapsuleCmd as u8 => CMD_HLEN,
        k if k == PduType::H2cData as u8 || k == PduType::H2cTermReq as u8 => DATA_HLEN,
        k if k == PduType::IcReq as u8 => {
            return Err(fatal(Fes::Sequence, 0, "a second ICReq"));
        }
        _ => return Err(fatal(Fes::InvalidHeader, 0, "not a PDU a host sends")),
    };
    if hlen != want_hlen {
        return Err(fatal(
            Fes::InvalidHeader,
            2,
            "wrong header length for the PDU type",
        ));
    }
    if kind == PduType::H2cTermReq as u8 {
        // Whatever else it says, the connection ends.
        return Ok(Some((HostPdu::TermReq { fes: le16(pdu, 8) }, plen)));
    }
    // The header digest: present exactly when negotiated.
    let hd = digests.hd();
    if (h.flags & FLAG_HDGST != 0) != digests.header {
        return Err(fatal(
            Fes::InvalidHeader,
            1,
            "header digest flag differs from the ICReq",
        ));
    }
    if plen < hlen + hd {
        return Err(fatal(Fes::InvalidHeader, 4, "PDU shorter than its header"));
    }
    if digests.header && le32(pdu, hlen) != crc(&pdu[..hlen]) {
        return Err(fatal(Fes::HeaderDigest, 0, "header digest mismatch"));
    }
    // The data: from PDO to the end, less its digest.
    let (data, bad_digest) = if plen > hlen + hd {
        let pdo = usize::from(h.pdo);
        if pdo < hlen + hd || pdo > plen {
            return Err(fatal(Fes::InvalidHeader, 3, "data offset out of range"));
        }
        let dd = if h.flags & FLAG_DDGST != 0 {
            if !digests.data {
                return Err(fatal(Fes::InvalidHeader, 1, "data digest not negotiated"));
            }
            DIGEST_LEN
        } else if digests.data {
            return Err(fatal(Fes::InvalidHeader, 1, "data digest missing"));
        } else {
            0
        };
        if plen < pdo + dd {
            return Err(fatal(
                Fes::InvalidHeader,
                4,
                "PDU shorter than its data digest",
            ));
        }
        let data = &pdu[pdo..plen - dd];
        let bad = dd != 0 && le32(pdu, plen - dd) != crc(data);
        (data, bad)
    } else {
        if h.pdo != 0 && usize::from(h.pdo) != plen {
            return Err(fatal(Fes::InvalidHeader, 3, "data offset without data"));
        }
        (&pdu[plen..], false)
    };
    if kind == PduType::CapsuleCmd as u8 {
        if data.len() > limits.in_capsule {
            return Err(fatal(Fes::LimitExceeded, 4, "in-capsule data above IOCCSZ"));
        }
        let sqe: &[u8; 64] = pdu[CH_LEN..CMD_HLEN]
            .try_into()
            .map_err(|_| fatal(Fes::InvalidHeader, 8, "short SQE"))?;
        return Ok(Some((
            HostPdu::Command {
                sqe,
                data,
                bad_digest,
            },
            plen,
        )));
    }
    // H2CData.
    let datal = le32(pdu, 16) as usize;
    if datal != data.len() {
        return Err(fatal(
            Fes::InvalidHeader,
            16,
            "DATAL differs from the PDU's data",
        ));
    }
    if datal == 0 {
        return Err(fatal(Fes::InvalidHeader, 16, "H2CData without data"));
    }
    if datal > limits.max_h2c {
        return Err(fatal(Fes::LimitExceeded, 16, "H2CData above MAXH2CDATA"));
    }
    Ok(Some((
        HostPdu::Data {
            cccid: le16(pdu, 8),
            ttag: le16(pdu, 10),
            offset: le32(pdu, 12),
            data,
            last: h.flags & FLAG_LAST != 0,
            bad_digest,
        },
        plen,
    )))
}

/// Appends an ICResp: the digests granted and MAXH2CDATA.
pub fn ic_resp(out: &mut Vec<u8>, digests: Digests, max_h2c: u32) {
    let at = out.len();
    Header {
        kind: PduType::IcResp as u8,
        flags: 0,
        hlen: IC_LEN as u8,
        pdo: 0,
        plen: IC_LEN as u32,
    }
    .write(out);
    out.extend_from_slice(&0u16.to_le_bytes()); // PFV
    out.push(0); // CPDA: data right after the header
    out.push(digests.bits());
    out.extend_from_slice(&max_h2c.to_le_bytes());
    out.resize(at + IC_LEN, 0);
}

fn header_digest(out: &mut Vec<u8>, at: usize, digests: Digests) {
    if digests.header {
        let c = crc(&out[at..]);
        out.extend_from_slice(&c.to_le_bytes());
    }
}

/// Appends a CapsuleResp carrying `cqe`.
pub fn capsule_resp(out: &mut Vec<u8>, cqe: &[u8; 16], digests: Digests) {
    let at = out.len();
    Header {
        kind: PduType::CapsuleResp as u8,
        flags: if digests.header { FLAG_HDGST } else { 0 },
        hlen: RESP_HLEN as u8,
        pdo: 0,
        plen: (RESP_HLEN + digests.hd()) as u32,
    }
    .write(out);
    out.extend_from_slice(cqe);
    header_digest(out, at, digests);
}

/// Appends C2HData PDUs carrying `data` for command `cccid`, at most
/// `max` bytes each, the last flagged; `offset` is where `data` starts in
/// the command's transfer.
pub fn c2h_data(
    out: &mut Vec<u8>,
    cccid: u16,
    offset: u32,
    data: &[u8],
    max: usize,
    digests: Digests,
) {
    debug_assert!(max > 0);
    let pieces = data.len().div_ceil(max).max(1);
    for (i, piece) in data.chunks(max).enumerate() {
        let last = i + 1 == pieces;
        let at = out.len();
        let hd = digests.hd();
        let dd = if digests.data { DIGEST_LEN } else { 0 };
        let pdo = DATA_HLEN + hd;
        let mut flags = if last { FLAG_LAST } else { 0 };
        if digests.header {
            flags |= FLAG_HDGST;
        }
        if digests.data {
            flags |= FLAG_DDGST;
        }
        Header {
            kind: PduType::C2hData as u8,
            flags,
            hlen: DATA_HLEN as u8,
            pdo: pdo as u8,
            plen: (pdo + piece.len() + dd) as u32,
        }
        .write(out);
        out.extend_from_slice(&cccid.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(offset + (i * max) as u32).to_le_bytes());
        out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        header_digest(out, at, digests);
        out.extend_from_slice(piece);
        if digests.data {
            out.extend_from_slice(&crc(piece).to_le_bytes());
        }
    }
}

/// Appends an R2T asking for `len` bytes at `offset` of command `cccid`'s
/// data, under transfer tag `ttag`.
pub fn r2t(out: &mut Vec<u8>, cccid: u16, ttag: u16, offset: u32, len: u32, digests: Digests) {
    let at = out.len();
    Header {
        kind: PduType::R2t as u8,
        flags: if digests.header { FLAG_HDGST } else { 0 },
        hlen: DATA_HLEN as u8,
        pdo: 0,
        plen: (DATA_HLEN + digests.hd()) as u32,
    }
    .write(out);
    out.extend_from_slice(&cccid.to_le_bytes());
    out.extend_from_slice(&ttag.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    header_digest(out, at, digests);
}

/// Appends a C2HTermReq for `f`, carrying up to 152 bytes of the header
/// that caused it. It never carries digests.
pub fn term_req(out: &mut Vec<u8>, f: &Fatal, offending: &[u8]) {
    let data = &offending[..offending.len().min(TERM_MAX_DATA)];
    Header {
        kind: PduType::C2hTermReq as u8,
        flags: 0,
        hlen: DATA_HLEN as u8,
        pdo: if data.is_empty() { 0 } else { DATA_HLEN as u8 },
        plen: (DATA_HLEN + data.len()) as u32,
    }
    .write(out);
    out.extend_from_slice(&(f.fes as u16).to_le_bytes());
    out.extend_from_slice(&f.fei.to_le_bytes());
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        in_capsule: 8192,
        max_h2c: 131072,
    };

    fn icreq(digest: u8) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[0] = 0;
        b[2] = 128;
        b[4] = 128;
        b[11] = digest;
        b
    }

    #[test]
    fn icreq_then_icresp_byte_exact() {
        let b = icreq(3);
        let (pdu, n) = parse(&b, false, Digests::default(), &L).unwrap().unwrap();
        assert_eq!(n, 128);
        assert_eq!(
            pdu,
            HostPdu::IcReq(IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests {
                    header: true,
                    data: true
                },
                maxr2t: 0
            })
        );
        let mut out = Vec::new();
        ic_resp(
            &mut out,
            Digests {
                header: true,
                data: true,
            },
            131072,
        );
        let mut want = vec![0u8; 128];
        want[..16].copy_from_slice(&[1, 0, 128, 0, 128, 0, 0, 0, 0, 0, 0, 3, 0, 0, 2, 0]);
        assert_eq!(out, want);
    }

    #[test]
    fn partial_pdus_wait() {
        let b = icreq(0);
        for cut in 0..128 {
            assert_eq!(parse(&b[..cut], false, Digests::default(), &L), Ok(None));
        }
    }

    #[test]
    fn capsule_resp_and_r2t_byte_exact() {
        let mut cqe = [0u8; 16];
        cqe[12] = 7; // cid
        let mut out = Vec::new();
        capsule_resp(&mut out, &cqe, Digests::default());
        let mut want = vec![5, 0, 24, 0, 24, 0, 0, 0];
        want.extend_from_slice(&cqe);
        assert_eq!(out, want);
        out.clear();
        r2t(&mut out, 7, 3, 0, 65536, Digests::default());
        assert_eq!(
            out,
            [9, 0, 24, 0, 24, 0, 0, 0, 7, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn c2h_data_splits_and_digests() {
        let d = Digests {
            header: true,
            data: true,
        };
        let data: Vec<u8> = (0..10u8).collect();
        let mut out = Vec::new();
        c2h_data(&mut out, 9, 0, &data, 4, d);
        // Three PDUs: 4 + 4 + 2 bytes, each 24 + 4 + n + 4.
        assert_eq!(out.len(), 3 * 32 + 10);
        let h = Header::read(&out);
        assert_eq!((h.kind, h.flags, h.pdo, h.plen), (7, 3, 28, 36));
        assert_eq!(le32(&out, 24), crc(&out[..24]));
        assert_eq!(&out[28..32], &[0, 1, 2, 3]);
        assert_eq!(le32(&out, 32), crc(&[0, 1, 2, 3]));
        let last = &out[72..];
        assert_eq!(Header::read(last).flags, 7);
        assert_eq!(le32(last, 12), 8); // DATAO
        assert_eq!(le32(last, 16), 2); // DATAL
    }

    fn capsule(data: &[u8], d: Digests) -> Vec<u8> {
        let hd = d.hd();
        let dd = if d.data && !data.is_empty() { 4 } else { 0 };
        let mut b = vec![0u8; CMD_HLEN];
        b[0] = 4;
        b[1] = u8::from(d.header) | if dd > 0 { 2 } else { 0 };
        b[2] = 72;
        b[3] = if data.is_empty() { 0 } else { (72 + hd) as u8 };
        let plen = (72 + hd + data.len() + dd) as u32;
        b[4..8].copy_from_slice(&plen.to_le_bytes());
        b[8] = 0x01; // write
        if d.header {
            let c = crc(&b);
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(data);
        if dd > 0 {
            b.extend_from_slice(&crc(data).to_le_bytes());
        }
        b
    }

    #[test]
    fn capsule_with_data_and_digests() {
        let d = Digests {
            header: true,
            data: true,
        };
        let b = capsule(b"hello", d);
        let (pdu, n) = parse(&b, true, d, &L).unwrap().unwrap();
        assert_eq!(n, b.len());
        match pdu {
            HostPdu::Command {
                sqe,
                data,
                bad_digest,
            } => {
                assert_eq!(sqe[0], 1);
                assert_eq!(data, b"hello");
                assert!(!bad_digest);
            }
            other => panic!("{other:?}"),
        }
        // A flipped data byte: the command fails, the connection lives.
        let mut bad = b.clone();
        bad[80] ^= 1;
        match parse(&bad, true, d, &L).unwrap().unwrap().0 {
            HostPdu::Command { bad_digest, .. } => assert!(bad_digest),
            other => panic!("{other:?}"),
        }
        // A flipped header byte: fatal.
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(parse(&bad, true, d, &L).unwrap_err().fes, Fes::HeaderDigest);
    }

    #[test]
    fn sequence_and_type_errors() {
        let b = capsule(b"", Digests::default());
        assert_eq!(
            parse(&b, false, Digests::default(), &L).unwrap_err().fes,
            Fes::Sequence
        );
        assert_eq!(
            parse(&icreq(0), true, Digests::default(), &L)
                .unwrap_err()
                .fes,
            Fes::Sequence
        );
        let mut r = b.clone();
        r[0] = PduType::R2t as u8;
        assert_eq!(
            parse(&r, true, Digests::default(), &L).unwrap_err().fes,
            Fes::InvalidHeader
        );
        let mut huge = b;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse(&huge, true, Digests::default(), &L).unwrap_err().fei,
            4
        );
    }

    #[test]
    fn term_req_layout() {
        let mut out = Vec::new();
        let f = fatal(Fes::InvalidHeader, 2, "x");
        term_req(&mut out, &f, &[0xAA; 200]);
        assert_eq!(out.len(), 24 + 152);
        assert_eq!(&out[..12], &[3, 0, 24, 24, 176, 0, 0, 0, 1, 0, 2, 0]);
    }
}
