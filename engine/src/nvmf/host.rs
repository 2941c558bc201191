//! A small NVMe/TCP host (initiator) over a blocking socket: what the
//! tests and `flint-bench nvmf` drive the target with, speaking the same
//! PDUs as the Linux initiator. Commands may be pipelined: [`Host::submit`]
//! sends one, [`Host::reap`] returns the next completion, answering the
//! target's R2Ts with the write's data meanwhile.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::pdu::{self, Digests, Header, PduType, DATA_HLEN, DIGEST_LEN, FLAG_DDGST, FLAG_HDGST};
use super::spec::{
    admin, fctype, io as nvm, prop, Cqe, Sqe, FABRICS, SGL_IN_CAPSULE, SGL_TRANSPORT,
};

/// A completion as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Command identifier.
    pub cid: u16,
    /// The status field (without the phase bit): 0 is success.
    pub status: u16,
    /// Dwords 0 and 1.
    pub value: u64,
    /// Data the target sent (reads, Identify, logs).
    pub data: Vec<u8>,
}

impl Completion {
    /// Status code type and code.
    pub fn sct_sc(&self) -> (u8, u8) {
        (((self.status >> 8) & 7) as u8, (self.status & 0xFF) as u8)
    }
}

/// One queue of a host: a TCP connection to a target.
pub struct Host {
    stream: TcpStream,
    digests: Digests,
    next_cid: u16,
    /// Write data waiting for an R2T, by cid.
    writes: HashMap<u16, Vec<u8>>,
    reads: HashMap<u16, Vec<u8>>,
    /// The controller (after Connect).
    pub cntlid: u16,
    /// MAXH2CDATA the target granted.
    pub max_h2c: usize,
    /// In-capsule data the host sends at most (0: always R2T).
    pub in_capsule: usize,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Host {
    /// Opens a connection and exchanges ICReq/ICResp.
    pub fn open(addr: SocketAddr, digests: Digests) -> io::Result<Host> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut h = Host {
            stream,
            digests,
            next_cid: 1,
            writes: HashMap::new(),
            reads: HashMap::new(),
            cntlid: 0,
            max_h2c: 0,
            in_capsule: 8192,
        };
        let mut req = vec![0u8; 128];
        req[2] = 128;
        req[4] = 128;
        req[11] = u8::from(digests.header) | (u8::from(digests.data) << 1);
        h.stream.write_all(&req)?;
        let resp = h.read_pdu()?;
        if resp[0] != PduType::IcResp as u8 || resp.len() != 128 {
            return Err(bad(format!(
                "expected an ICResp, got PDU type {:#x}",
                resp[0]
            )));
        }
        if resp[11] != req[11] {
            return Err(bad("the target granted other digests than asked"));
        }
        h.max_h2c = u32::from_le_bytes(resp[12..16].try_into().unwrap_or([0; 4])) as usize;
        Ok(h)
    }

    /// Opens a connection and connects queue `qid` of subsystem `subnqn`
    /// as `hostnqn` (`cntlid` 0xFFFF for an admin queue); returns the
    /// Connect's completion (the cntlid in its value on success).
    pub fn connect(
        addr: SocketAddr,
        digests: Digests,
        subnqn: &str,
        hostnqn: &str,
        qid: u16,
        cntlid: u16,
        kato_ms: u32,
    ) -> io::Result<(Host, Completion)> {
        let mut h = Host::open(addr, digests)?;
        let mut s = Sqe::new(FABRICS, 0);
        s.0[4] = fctype::CONNECT;
        s.0[42..44].copy_from_slice(&qid.to_le_bytes());
        s.0[44..46].copy_from_slice(&31u16.to_le_bytes());
        s.set_dword(48, kato_ms);
        let mut data = vec![0u8; 1024];
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        data[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
        let c = h.run(s, Some(data), 0)?;
        if c.status == 0 {
            h.cntlid = c.value as u16;
        }
        Ok((h, c))
    }

    /// Sends raw bytes (for malformed-PDU tests).
    pub fn send_raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.stream.write_all(b)
    }

    /// Closes the sending side (the target sees the end of the stream).
    pub fn finish_sending(&mut self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Reads one whole PDU.
    pub fn read_pdu(&mut self) -> io::Result<Vec<u8>> {
        let mut ch = [0u8; 8];
        self.stream.read_exact(&mut ch)?;
        let h = Header::read(&ch);
        if (h.plen as usize) < 8 || h.plen > 16 << 20 {
            return Err(bad("PDU length out of range"));
        }
        let mut b = ch.to_vec();
        b.resize(h.plen as usize, 0);
        self.stream.read_exact(&mut b[8..])?;
        Ok(b)
    }

    /// Sends command `s` (its cid assigned and returned), with `write`
    /// data (in the capsule when small enough, else on R2T) or expecting
    /// `read_len` bytes back.
    pub fn submit(
        &mut self,
        mut s: Sqe,
        write: Option<Vec<u8>>,
        read_len: usize,
    ) -> io::Result<u16> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        s.0[2..4].copy_from_slice(&cid.to_le_bytes());
        s.0[1] |= 0x40; // PSDT: SGL
        let mut inline: &[u8] = &[];
        let held;
        match write {
            Some(d) if d.len() <= self.in_capsule => {
                s.set_dword(32, d.len() as u32);
                s.0[39] = SGL_IN_CAPSULE;
                held = d;
                inline = &held;
            }
            Some(d) => {
                s.set_dword(32, d.len() as u32);
                s.0[39] = SGL_TRANSPORT;
                self.writes.insert(cid, d);
            }
            None => {
                s.set_dword(32, read_len as u32);
                s.0[39] = SGL_TRANSPORT;
                self.reads.insert(cid, Vec::with_capacity(read_len));
            }
        }
        let d = self.digests;
        let hd = if d.header { DIGEST_LEN } else { 0 };
        let dd = if d.data && !inline.is_empty() {
            DIGEST_LEN
        } else {
            0
        };
        let mut b = Vec::with_capacity(72 + hd + inline.len() + dd);
        b.extend_from_slice(&[
            PduType::CapsuleCmd as u8,
            (if d.header { FLAG_HDGST } else { 0 }) | (if dd > 0 { FLAG_DDGST } else { 0 }),
            72,
            if inline.is_empty() {
                0
            } else {
                (72 + hd) as u8
            },
        ]);
        b.extend_from_slice(&((72 + hd + inline.len() + dd) as u32).to_le_bytes());
        b.extend_from_slice(&s.0);
        if d.header {
            let c = crc32c::crc32c(&b);
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(inline);
        if dd > 0 {
            b.extend_from_slice(&crc32c::crc32c(inline).to_le_bytes());
        }
        self.stream.write_all(&b)?;
        Ok(cid)
    }

    /// The next completion; R2Ts and data PDUs are handled on the way.
    pub fn reap(&mut self) -> io::Result<Completion> {
        loop {
            let p = self.read_pdu()?;
            let hd = if self.digests.header { DIGEST_LEN } else { 0 };
            match p[0] {
                t if t == PduType::CapsuleResp as u8 => {
                    let b: &[u8; 16] = p
                        .get(8..24)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| bad("short CapsuleResp"))?;
                    let c = Cqe::read(b);
                    let (cid, v) = (c.cid, u64::from(c.dw0) | (u64::from(c.dw1) << 32));
                    let status = c.status.field(false) >> 1;
                    self.writes.remove(&cid);
                    let data = self.reads.remove(&cid).unwrap_or_default();
                    return Ok(Completion {
                        cid,
                        status,
                        value: v,
                        data,
                    });
                }
                t if t == PduType::C2hData as u8 => {
                    let cid = u16::from_le_bytes([p[8], p[9]]);
                    let off = u32::from_le_bytes(p[12..16].try_into().unwrap_or([0; 4])) as usize;
                    let len = u32::from_le_bytes(p[16..20].try_into().unwrap_or([0; 4])) as usize;
                    let pdo = usize::from(p[3]);
                    let data = &p[pdo..pdo + len];
                    if self.digests.data {
                        let got = u32::from_le_bytes(
                            p[pdo + len..pdo + len + 4].try_into().unwrap_or([0; 4]),
                        );
                        if got != crc32c::crc32c(data) {
                            return Err(bad("C2HData data digest mismatch"));
                        }
                    }
                    let buf = self
                        .reads
                        .get_mut(&cid)
                        .ok_or_else(|| bad("C2HData for no read"))?;
                    if buf.len() != off {
                        return Err(bad("C2HData out of order"));
                    }
                    buf.extend_from_slice(data);
                }
                t if t == PduType::R2t as u8 => {
                    let cid = u16::from_le_bytes([p[8], p[9]]);
                    let ttag = u16::from_le_bytes([p[10], p[11]]);
                    let off = u32::from_le_bytes(p[12..16].try_into().unwrap_or([0; 4])) as usize;
                    let len = u32::from_le_bytes(p[16..20].try_into().unwrap_or([0; 4])) as usize;
                    let data = self
                        .writes
                        .remove(&cid)
                        .ok_or_else(|| bad("R2T for no write"))?;
                    self.h2c(cid, ttag, &data[off..off + len], off)?;
                }
                t if t == PduType::C2hTermReq as u8 => {
                    let fes = u16::from_le_bytes([p[8], p[9]]);
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("the target ended the connection (FES {fes:#x})"),
                    ));
                }
                t => return Err(bad(format!("unexpected PDU type {t:#x} (hd {hd})"))),
            }
        }
    }

    fn h2c(&mut self, cid: u16, ttag: u16, data: &[u8], base: usize) -> io::Result<()> {
        let d = self.digests;
        let max = self.max_h2c.max(4096);
        let n = data.len().div_ceil(max);
        for (i, piece) in data.chunks(max).enumerate() {
            let hd = if d.header { DIGEST_LEN } else { 0 };
            let dd = if d.data { DIGEST_LEN } else { 0 };
            let mut flags = if i + 1 == n { pdu::FLAG_LAST } else { 0 };
            flags |= if d.header { FLAG_HDGST } else { 0 } | if d.data { FLAG_DDGST } else { 0 };
            let mut b = vec![
                PduType::H2cData as u8,
                flags,
                DATA_HLEN as u8,
                (DATA_HLEN + hd) as u8,
            ];
            b.extend_from_slice(&((DATA_HLEN + hd + piece.len() + dd) as u32).to_le_bytes());
            b.extend_from_slice(&cid.to_le_bytes());
            b.extend_from_slice(&ttag.to_le_bytes());
            b.extend_from_slice(&((base + i * max) as u32).to_le_bytes());
            b.extend_from_slice(&(piece.len() as u32).to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            if d.header {
                let c = crc32c::crc32c(&b);
                b.extend_from_slice(&c.to_le_bytes());
            }
            b.extend_from_slice(piece);
            if d.data {
                b.extend_from_slice(&crc32c::crc32c(piece).to_le_bytes());
            }
            self.stream.write_all(&b)?;
        }
        Ok(())
    }

    /// Submits one command and waits for it.
    pub fn run(
        &mut self,
        s: Sqe,
        write: Option<Vec<u8>>,
        read_len: usize,
    ) -> io::Result<Completion> {
        let cid = self.submit(s, write, read_len)?;
        let c = self.reap()?;
        if c.cid != cid {
            return Err(bad("completion for another command"));
        }
        Ok(c)
    }

    /// Property Get.
    pub fn prop_get(&mut self, offset: u32, eight: bool) -> io::Result<Completion> {
        let mut s = Sqe::new(FABRICS, 0);
        s.0[4] = fctype::PROPERTY_GET;
        s.0[40] = u8::from(eight);
        s.set_dword(44, offset);
        self.run(s, None, 0)
    }

    /// Property Set (4 bytes).
    pub fn prop_set(&mut self, offset: u32, value: u32) -> io::Result<Completion> {
        let mut s = Sqe::new(FABRICS, 0);
        s.0[4] = fctype::PROPERTY_SET;
        s.set_dword(44, offset);
        s.set_dword(48, value);
        self.run(s, None, 0)
    }

    /// Sets CC.EN and checks CSTS.RDY.
    pub fn enable(&mut self) -> io::Result<()> {
        // IOSQES 6, IOCQES 4, EN.
        self.prop_set(prop::CC, (6 << 16) | (4 << 20) | 1)?;
        let c = self.prop_get(prop::CSTS, false)?;
        if c.value & 1 == 0 {
            return Err(bad("CSTS.RDY not set after CC.EN"));
        }
        Ok(())
    }

    /// Identify with `cns` for `nsid`.
    pub fn identify(&mut self, cns: u8, nsid: u32) -> io::Result<Completion> {
        let mut s = Sqe::new(admin::IDENTIFY, nsid);
        s.set_dword(40, u32::from(cns));
        self.run(s, None, 4096)
    }

    /// Set Features `fid` to `value`.
    pub fn set_feature(&mut self, fid: u8, value: u32) -> io::Result<Completion> {
        let mut s = Sqe::new(admin::SET_FEATURES, 0);
        s.set_dword(40, u32::from(fid));
        s.set_dword(44, value);
        self.run(s, None, 0)
    }

    /// Get Log Page `lid`, `len` bytes from `offset`.
    pub fn log_page(&mut self, lid: u8, len: usize, offset: u64) -> io::Result<Completion> {
        let mut s = Sqe::new(admin::GET_LOG_PAGE, 0xFFFF_FFFF);
        let numd = (len / 4 - 1) as u32;
        s.set_dword(40, u32::from(lid) | ((numd & 0xFFFF) << 16));
        s.set_dword(44, numd >> 16);
        s.set_dword(48, offset as u32);
        s.set_dword(52, (offset >> 32) as u32);
        self.run(s, None, len)
    }

    /// A Read or Write SQE of `nlb` blocks at `slba`.
    pub fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
        Sqe::rw(opcode, nsid, slba, nlb)
    }

    /// Writes `data` at block `slba` (blocks of `1 << shift` bytes).
    pub fn write(
        &mut self,
        nsid: u32,
        slba: u64,
        shift: u8,
        data: Vec<u8>,
    ) -> io::Result<Completion> {
        let nlb = (data.len() >> shift) as u32;
        self.run(Self::rw(nvm::WRITE, nsid, slba, nlb), Some(data), 0)
    }

    /// Reads `nlb` blocks at `slba`.
    pub fn read(&mut self, nsid: u32, slba: u64, shift: u8, nlb: u32) -> io::Result<Completion> {
        self.run(
            Self::rw(nvm::READ, nsid, slba, nlb),
            None,
            (nlb as usize) << shift,
        )
    }
}
