//! One NVMe/TCP queue (one TCP connection) as a state machine, apart from
//! its socket: bytes in ([`Queue::receive`]), bytes out
//! ([`Queue::output`]), and I/O for the engine out ([`Job`]) and back
//! ([`Queue::complete`]). The first PDU must be an ICReq, the first
//! command a Fabrics Connect; queue 0 is the admin queue of a controller
//! it creates, any other an I/O queue of the controller its Connect names.
//! Writes whose data is not in the capsule are fetched with one R2T each.
//! A malformed PDU ends the connection with a C2HTermReq; a bad command
//! gets an error status and the connection goes on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::identify::{self, IN_CAPSULE, MDTS};
use super::pdu::{self, Digests, Fatal, HostPdu, Limits};
use super::spec::{
    admin, fctype, feature, io, log, prop, read_str, Cqe, Sqe, Status, FABRICS, SGL_IN_CAPSULE,
    SGL_TRANSPORT,
};
use super::subsystem::{Controller, Target, Volume, QUEUE_ENTRIES};
use crate::meta::Ino;

/// Most data bytes of one H2CData PDU the target accepts (MAXH2CDATA),
/// and of one C2HData PDU it sends.
pub const MAX_H2C: usize = 128 << 10;
/// Most bytes one command moves (MDTS pages of 4 KiB).
pub const MAX_TRANSFER: usize = 4096 << MDTS;
/// Asynchronous Event Requests a controller holds (AERL + 1).
const MAX_AERS: usize = 4;

/// What a job asks of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Read `len` bytes at `offset` (zeros past the file's end).
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: usize,
    },
    /// Write `data` at `offset`, durably (unless the file system is
    /// write-back).
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Make the volume's writes durable.
    Flush,
    /// Make every volume's writes durable (Flush of NSID FFFFFFFFh).
    FlushAll,
    /// Zero byte ranges `(offset, len)` (Write Zeroes, Deallocate).
    Zero {
        /// The ranges.
        ranges: Vec<(u64, u64)>,
    },
}

/// A command for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The command's identifier.
    pub cid: u16,
    /// The volume's file.
    pub ino: Ino,
    /// What to do.
    pub io: Io,
}

/// A finished job: its data (reads) or its failure.
#[derive(Debug)]
pub struct Done {
    /// The command's identifier.
    pub cid: u16,
    /// Read bytes (empty for others), or the status to answer.
    pub result: Result<Vec<u8>, Status>,
}

enum Stage {
    /// No ICReq yet.
    Init,
    /// Initialized; the first command must be a Connect.
    Connect,
    /// The admin queue of a controller.
    Admin(Arc<Controller>),
    /// I/O queue `qid` of a controller.
    Io(Arc<Controller>, u16),
}

enum Slot {
    /// Waiting for write data the R2T asked for.
    Transfer {
        ttag: u16,
        job: Job,
        buf: Vec<u8>,
        /// Bytes of `buf` that mean something (DSM: its ranges).
        keep: usize,
        got: usize,
        bad_digest: bool,
    },
    /// At the engine; a read expects this many bytes.
    Running { read: Option<usize> },
    /// A held Asynchronous Event Request.
    Event,
}

/// One queue's state.
pub struct Queue {
    target: Arc<Target>,
    stage: Stage,
    digests: Digests,
    limits: Limits,
    entries: u16,
    sqhd: u16,
    next_ttag: u16,
    slots: HashMap<u16, Slot>,
    out: Vec<u8>,
    closed: Option<String>,
}

impl Queue {
    /// A new queue of `target` (a connection just accepted).
    pub fn new(target: Arc<Target>) -> Queue {
        Queue {
            target,
            stage: Stage::Init,
            digests: Digests::default(),
            limits: Limits {
                in_capsule: IN_CAPSULE,
                max_h2c: MAX_H2C,
            },
            entries: QUEUE_ENTRIES,
            sqhd: 0,
            next_ttag: 0,
            slots: HashMap::new(),
            out: Vec::new(),
            closed: None,
        }
    }

    /// Bytes to send to the host (the caller drains what it sent).
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Why the connection must close once the output is sent, if it must.
    pub fn closed(&self) -> Option<&str> {
        if let Some(c) = &self.closed {
            return Some(c);
        }
        match &self.stage {
            Stage::Admin(c) | Stage::Io(c, _) if c.dead.load(Ordering::Acquire) => {
                Some("controller torn down")
            }
            _ => None,
        }
    }

    /// Commands at the engine or waiting for data.
    pub fn in_flight(&self) -> usize {
        self.slots
            .values()
            .filter(|s| !matches!(s, Slot::Event))
            .count()
    }

    /// The largest receive buffer a PDU needs.
    pub fn max_pdu(&self) -> usize {
        self.limits.max_pdu()
    }

    /// Takes the PDUs complete in `buf`; returns the bytes consumed and
    /// the jobs to run. After a fatal error it consumes everything and the
    /// queue is closed.
    pub fn receive(&mut self, buf: &[u8]) -> (usize, Vec<Job>) {
        let mut at = 0;
        let mut jobs = Vec::new();
        while self.closed.is_none() {
            let ic = !matches!(self.stage, Stage::Init);
            match pdu::parse(&buf[at..], ic, self.digests, &self.limits) {
                Ok(None) => break,
                Ok(Some((p, n))) => {
                    let start = at;
                    at += n;
                    if let Err(f) = self.on_pdu(p, &mut jobs) {
                        self.terminate(&f, &buf[start..start + n]);
                    }
                }
                Err(f) => {
                    let end = buf.len().min(at + pdu::TERM_MAX_DATA);
                    self.terminate(&f, &buf[at..end]);
                }
            }
        }
        if self.closed.is_some() {
            return (buf.len(), jobs);
        }
        (at, jobs)
    }

    fn terminate(&mut self, f: &Fatal, offending: &[u8]) {
        tracing::warn!(error = %f, "NVMe/TCP: malformed PDU from the host; connection ended");
        self.target.stats.terminated.fetch_add(1, Ordering::Relaxed);
        let hlen = offending.get(2).map(|&h| usize::from(h)).unwrap_or(0);
        pdu::term_req(&mut self.out, f, &offending[..hlen.min(offending.len())]);
        self.closed = Some(format!("fatal transport error: {f}"));
    }

    /// The connection ended (the socket closed): the controller of an
    /// admin queue goes with it.
    pub fn shutdown(&mut self) {
        if let Stage::Admin(c) = &self.stage {
            self.target.release(c);
        }
        self.stage = Stage::Connect;
        self.slots.clear();
    }

    fn on_pdu(&mut self, p: HostPdu<'_>, jobs: &mut Vec<Job>) -> Result<(), Fatal> {
        match p {
            HostPdu::IcReq(req) => {
                // Both digests are supported: grant exactly what was asked.
                self.digests = req.digests;
                pdu::ic_resp(&mut self.out, req.digests, MAX_H2C as u32);
                self.stage = Stage::Connect;
                Ok(())
            }
            HostPdu::TermReq { fes } => {
                self.closed = Some(format!("the host ended the connection (FES {fes:#x})"));
                Ok(())
            }
            HostPdu::Command {
                sqe,
                data,
                bad_digest,
            } => {
                let sqe = Sqe(*sqe);
                self.sqhd = (self.sqhd + 1) % self.entries.max(1);
                if self.slots.contains_key(&sqe.cid()) {
                    self.finish(sqe.cid(), Status::CID_CONFLICT, 0);
                } else if bad_digest {
                    self.finish(sqe.cid(), Status::TRANSIENT_TRANSPORT, 0);
                } else {
                    self.on_command(&sqe, data, jobs);
                }
                Ok(())
            }
            HostPdu::Data {
                cccid,
                ttag,
                offset,
                data,
                last,
                bad_digest,
            } => self.on_data(cccid, ttag, offset as usize, data, last, bad_digest, jobs),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        cccid: u16,
        ttag: u16,
        offset: usize,
        data: &[u8],
        last: bool,
        bad: bool,
        jobs: &mut Vec<Job>,
    ) -> Result<(), Fatal> {
        let seq = |why| Fatal {
            fes: pdu::Fes::Sequence,
            fei: 0,
            why,
        };
        let Some(Slot::Transfer {
            ttag: want,
            buf,
            got,
            bad_digest,
            ..
        }) = self.slots.get_mut(&cccid)
        else {
            return Err(seq("H2CData for no transfer"));
        };
        if *want != ttag {
            return Err(Fatal {
                fes: pdu::Fes::InvalidHeader,
                fei: 10,
                why: "H2CData with a transfer tag no R2T gave",
            });
        }
        if offset != *got || offset + data.len() > buf.len() {
            return Err(Fatal {
                fes: pdu::Fes::OutOfRange,
                fei: 12,
                why: "H2CData outside the transfer",
            });
        }
        buf[offset..offset + data.len()].copy_from_slice(data);
        *got += data.len();
        *bad_digest |= bad;
        let complete = *got == buf.len();
        if complete != last {
            return Err(seq("LAST_PDU flag does not match the transfer's end"));
        }
        if complete {
            let Some(Slot::Transfer {
                mut job,
                mut buf,
                keep,
                bad_digest,
                ..
            }) = self.slots.remove(&cccid)
            else {
                return Ok(());
            };
            buf.truncate(keep);
            if bad_digest {
                self.finish(cccid, Status::TRANSIENT_TRANSPORT, 0);
            } else {
                match self.with_data(&mut job, buf) {
                    Ok(()) => self.run(job, jobs),
                    Err(s) => self.finish(cccid, s, 0),
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, job: Job, jobs: &mut Vec<Job>) {
        let read = match &job.io {
            Io::Read { len, .. } => Some(*len),
            _ => None,
        };
        self.slots.insert(job.cid, Slot::Running { read });
        jobs.push(job);
    }

    /// Answers the job `d` finished.
    pub fn complete(&mut self, d: Done) {
        let Some(Slot::Running { read }) = self.slots.remove(&d.cid) else {
            // The connection was reset meanwhile: nobody waits for it.
            return;
        };
        match d.result {
            Ok(mut bytes) => {
                if let Some(len) = read {
                    bytes.resize(len, 0);
                    self.target
                        .stats
                        .read_bytes
                        .fetch_add(len as u64, Ordering::Relaxed);
                    pdu::c2h_data(&mut self.out, d.cid, 0, &bytes, MAX_H2C, self.digests);
                }
                self.finish(d.cid, Status::OK, 0);
            }
            Err(s) => self.finish(d.cid, s, 0),
        }
    }

    fn qid(&self) -> u16 {
        match self.stage {
            Stage::Io(_, q) => q,
            _ => 0,
        }
    }

    fn finish(&mut self, cid: u16, s: Status, dw0: u32) {
        self.finish64(cid, s, u64::from(dw0));
    }

    fn finish64(&mut self, cid: u16, s: Status, value: u64) {
        let stats = &self.target.stats;
        stats.commands.fetch_add(1, Ordering::Relaxed);
        if !s.ok() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        let cqe = Cqe {
            dw0: value as u32,
            dw1: (value >> 32) as u32,
            sqhd: self.sqhd,
            sqid: self.qid(),
            cid,
            // Fabrics carry no phase tag.
            phase: false,
            status: s,
        };
        pdu::capsule_resp(&mut self.out, &cqe.bytes(), self.digests);
    }

    fn send(&mut self, cid: u16, data: &[u8], want: usize) {
        let n = data.len().min(want);
        pdu::c2h_data(&mut self.out, cid, 0, &data[..n], MAX_H2C, self.digests);
        self.finish(cid, Status::OK, 0);
    }

    fn on_command(&mut self, sqe: &Sqe, data: &[u8], jobs: &mut Vec<Job>) {
        let cid = sqe.cid();
        if sqe.opcode() == FABRICS {
            return self.on_fabrics(sqe, data);
        }
        match &self.stage {
            Stage::Init | Stage::Connect => self.finish(cid, Status::SEQUENCE, 0),
            Stage::Admin(c) => {
                let c = c.clone();
                self.target.heard(&c);
                self.on_admin(&c, sqe, data);
            }
            Stage::Io(c, _) => {
                let c = c.clone();
                if !c.enabled() {
                    return self.finish(cid, Status::SEQUENCE, 0);
                }
                match self.on_io(&c, sqe, data, jobs) {
                    Ok(()) => {}
                    Err(s) => self.finish(cid, s, 0),
                }
            }
        }
    }

    fn on_fabrics(&mut self, sqe: &Sqe, data: &[u8]) {
        let cid = sqe.cid();
        match sqe.fctype() {
            fctype::CONNECT => match self.stage {
                Stage::Connect => match self.connect(sqe, data) {
                    Ok(dw0) => self.finish(cid, Status::OK, dw0),
                    Err((s, dw0)) => self.finish(cid, s, dw0),
                },
                _ => self.finish(cid, Status::SEQUENCE, 0),
            },
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let Stage::Admin(c) = &self.stage else {
                    return self.finish(cid, Status::SEQUENCE, 0);
                };
                let c = c.clone();
                self.target.heard(&c);
                let offset = sqe.dword(44);
                if sqe.fctype() == fctype::PROPERTY_SET {
                    if offset != prop::CC {
                        return self.finish(cid, Status::INVALID_FIELD, 0);
                    }
                    c.cc.store(sqe.qword(48) as u32, Ordering::Release);
                    return self.finish(cid, Status::OK, 0);
                }
                let value = match offset {
                    // MQES, CQR, TO 7.5 s, CSS: NVM; MPSMIN = MPSMAX = 4 KiB.
                    prop::CAP => u64::from(QUEUE_ENTRIES - 1) | (1 << 16) | (15 << 24) | (1 << 37),
                    prop::VS => u64::from(identify::VERSION),
                    prop::CC => u64::from(c.cc.load(Ordering::Acquire)),
                    prop::CSTS => u64::from(c.csts()),
                    _ => return self.finish(cid, Status::INVALID_FIELD, 0),
                };
                self.finish64(cid, Status::OK, value);
            }
            _ => self.finish(cid, Status::INVALID_OPCODE, 0),
        }
    }

    /// A Connect: `Ok(dw0)` or the status and its invalid-parameter dw0.
    fn connect(&mut self, sqe: &Sqe, data: &[u8]) -> Result<u32, (Status, u32)> {
        // IATTR 0: the offset is in the SQE; 1: in the data.
        let invalid = |iattr: u32, ipo: u32| (Status::CONNECT_INVALID, iattr | (ipo << 16));
        if sqe.word(40) != 0 {
            return Err((Status::CONNECT_FORMAT, 0));
        }
        if data.len() < 1024 {
            return Err(invalid(0, 24));
        }
        let qid = sqe.word(42);
        let sqsize = sqe.word(44);
        let kato = sqe.dword(48);
        if sqsize == 0 || sqsize >= QUEUE_ENTRIES {
            return Err(invalid(0, 44));
        }
        let want_cntlid = u16::from_le_bytes([data[16], data[17]]);
        let subnqn = read_str(&data[256..512]);
        let host = read_str(&data[512..768]);
        let c = if qid == 0 {
            if want_cntlid != 0xFFFF {
                return Err(invalid(1, 16));
            }
            self.target.admit(&subnqn, &host, kato).map_err(|s| {
                let ipo = if s == Status::CONNECT_HOST { 0 } else { 256 };
                (s, 1 | (ipo << 16))
            })?
        } else {
            let c = self
                .target
                .attach(want_cntlid, &subnqn, &host)
                .map_err(|_| invalid(1, 16))?;
            if u32::from(qid) > c.io_queues.load(Ordering::Acquire) || !c.enabled() {
                return Err(invalid(0, 42));
            }
            c
        };
        tracing::info!(
            cntlid = c.cntlid,
            qid,
            subsystem = %subnqn,
            host = %host,
            "NVMe/TCP queue connected"
        );
        self.entries = sqsize + 1;
        let dw0 = u32::from(c.cntlid);
        self.stage = if qid == 0 {
            Stage::Admin(c)
        } else {
            Stage::Io(c, qid)
        };
        Ok(dw0)
    }

    fn on_admin(&mut self, c: &Controller, sqe: &Sqe, _data: &[u8]) {
        let cid = sqe.cid();
        let t = self.target.clone();
        let sub = c.subsystem.map(|i| &t.subsystems[i]);
        let want = sqe.sgl_len() as usize;
        match sqe.opcode() {
            admin::IDENTIFY => {
                let cns = sqe.cdw(10) & 0xFF;
                let nsid = sqe.nsid();
                let page = match (cns, sub) {
                    (1, _) => identify::controller(&t, c),
                    (0, Some(s)) => match s.namespace(nsid) {
                        Some(v) => identify::namespace(v),
                        None => return self.finish(cid, Status::INVALID_NS, 0),
                    },
                    (2, Some(s)) if nsid < 0xFFFF_FFFE => identify::active_list(s, nsid),
                    (3, Some(s)) => match s.namespace(nsid) {
                        Some(v) => identify::descriptors(v),
                        None => return self.finish(cid, Status::INVALID_NS, 0),
                    },
                    _ => return self.finish(cid, Status::INVALID_FIELD, 0),
                };
                self.send(cid, &page, want);
            }
            admin::GET_LOG_PAGE => {
                let lid = (sqe.cdw(10) & 0xFF) as u8;
                let dwords =
                    ((u64::from(sqe.cdw(11) & 0xFFFF) << 16) | u64::from(sqe.cdw(10) >> 16)) + 1;
                let offset = u64::from(sqe.cdw(12)) | (u64::from(sqe.cdw(13)) << 32);
                let page = match (lid, sub) {
                    (log::DISCOVERY, None) => identify::discovery_log(&t, &c.host),
                    (log::SMART, Some(_)) => identify::smart_log(
                        t.stats.read_bytes.load(Ordering::Relaxed),
                        t.stats.write_bytes.load(Ordering::Relaxed),
                    ),
                    (log::ERROR, _) => vec![0; 64],
                    (log::FIRMWARE, Some(_)) => identify::firmware_log(),
                    _ => return self.finish(cid, Status::INVALID_LOG, 0),
                };
                let len = (dwords * 4).min(MAX_TRANSFER as u64) as usize;
                let mut out = vec![0u8; len];
                if (offset as usize) < page.len() {
                    let from = &page[offset as usize..];
                    let n = from.len().min(len);
                    out[..n].copy_from_slice(&from[..n]);
                }
                self.send(cid, &out, want.max(len).min(len));
            }
            admin::SET_FEATURES => {
                let fid = (sqe.cdw(10) & 0xFF) as u8;
                if sqe.cdw(10) >> 31 != 0 {
                    return self.finish(cid, Status::NOT_SAVEABLE, 0);
                }
                let v = sqe.cdw(11);
                match fid {
                    feature::NUM_QUEUES => {
                        let (sq, cq) = (v & 0xFFFF, v >> 16);
                        if sq == 0xFFFF || cq == 0xFFFF || sub.is_none() {
                            return self.finish(cid, Status::INVALID_FIELD, 0);
                        }
                        let n = (sq.min(cq) + 1).min(t.max_io_queues);
                        c.io_queues.store(n, Ordering::Release);
                        self.finish(cid, Status::OK, (n - 1) | ((n - 1) << 16));
                    }
                    feature::KEEP_ALIVE => {
                        c.kato_ms.store(v, Ordering::Release);
                        self.finish(cid, Status::OK, 0);
                    }
                    feature::ASYNC_EVENT | feature::VOLATILE_WC => self.finish(cid, Status::OK, 0),
                    _ => self.finish(cid, Status::INVALID_FIELD, 0),
                }
            }
            admin::GET_FEATURES => {
                let fid = (sqe.cdw(10) & 0xFF) as u8;
                let v = match fid {
                    feature::NUM_QUEUES => {
                        let n = c.io_queues.load(Ordering::Acquire).max(1) - 1;
                        n | (n << 16)
                    }
                    feature::KEEP_ALIVE => c.kato_ms.load(Ordering::Acquire),
                    feature::ASYNC_EVENT => 0,
                    feature::VOLATILE_WC => {
                        u32::from(sub.is_some_and(|s| s.namespaces.iter().any(|v| v.write_back)))
                    }
                    _ => return self.finish(cid, Status::INVALID_FIELD, 0),
                };
                self.finish(cid, Status::OK, v);
            }
            admin::KEEP_ALIVE => self.finish(cid, Status::OK, 0),
            admin::ASYNC_EVENT => {
                let held = self
                    .slots
                    .values()
                    .filter(|s| matches!(s, Slot::Event))
                    .count();
                if held >= MAX_AERS {
                    // Asynchronous Event Request Limit Exceeded.
                    return self.finish(cid, Status::AER_LIMIT, 0);
                }
                // Held: answered only by an event (none yet) or never.
                self.slots.insert(cid, Slot::Event);
            }
            // Abort: dw0 bit 0 set, "not aborted" (commands run to the end).
            admin::ABORT => self.finish(cid, Status::OK, 1),
            _ => self.finish(cid, Status::INVALID_OPCODE, 0),
        }
    }

    fn on_io(
        &mut self,
        c: &Controller,
        sqe: &Sqe,
        data: &[u8],
        jobs: &mut Vec<Job>,
    ) -> Result<(), Status> {
        let t = self.target.clone();
        let sub = c
            .subsystem
            .map(|i| &t.subsystems[i])
            .ok_or(Status::INVALID_OPCODE)?;
        let cid = sqe.cid();
        if ![io::READ, io::WRITE, io::FLUSH, io::WRITE_ZEROES, io::DSM].contains(&sqe.opcode()) {
            return Err(Status::INVALID_OPCODE);
        }
        if sqe.opcode() == io::FLUSH && sqe.nsid() == 0xFFFF_FFFF {
            let ino = sub
                .namespaces
                .first()
                .map(|v| v.ino)
                .ok_or(Status::INVALID_NS)?;
            self.run(
                Job {
                    cid,
                    ino,
                    io: Io::FlushAll,
                },
                jobs,
            );
            return Ok(());
        }
        let v: &Volume = sub.namespace(sqe.nsid()).ok_or(Status::INVALID_NS)?;
        let range = |slba: u64, nlb: u64| -> Result<(u64, u64), Status> {
            let end = slba.checked_add(nlb).ok_or(Status::LBA_RANGE)?;
            if end > v.blocks() {
                return Err(Status::LBA_RANGE);
            }
            Ok((slba << v.lba_shift, nlb << v.lba_shift))
        };
        let job = |io| Job {
            cid,
            ino: v.ino,
            io,
        };
        match sqe.opcode() {
            io::READ | io::WRITE => {
                let nlb = u64::from(sqe.cdw(12) & 0xFFFF) + 1;
                let (offset, len) = range(sqe.slba(), nlb)?;
                let len = len as usize;
                if len > MAX_TRANSFER {
                    return Err(Status::INVALID_FIELD);
                }
                if sqe.flags() >> 6 == 0 {
                    // PRPs mean nothing over a fabric.
                    return Err(Status::INVALID_FIELD);
                }
                if sqe.sgl_len() as usize != len {
                    return Err(Status::SGL_LENGTH);
                }
                if sqe.opcode() == io::READ {
                    if sqe.sgl_type() != SGL_TRANSPORT {
                        return Err(Status::SGL_TYPE);
                    }
                    self.run(job(Io::Read { offset, len }), jobs);
                    return Ok(());
                }
                t.stats.write_bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.data_then(
                    sqe,
                    data,
                    job(Io::Write {
                        offset,
                        data: Vec::new(),
                    }),
                    len,
                    len,
                    jobs,
                )
            }
            io::FLUSH => {
                self.run(job(Io::Flush), jobs);
                Ok(())
            }
            io::WRITE_ZEROES => {
                let nlb = u64::from(sqe.cdw(12) & 0xFFFF) + 1;
                let (offset, len) = range(sqe.slba(), nlb)?;
                self.run(
                    job(Io::Zero {
                        ranges: vec![(offset, len)],
                    }),
                    jobs,
                );
                Ok(())
            }
            io::DSM => {
                let n = (sqe.cdw(10) & 0xFF) as usize + 1;
                let deallocate = sqe.cdw(11) & 0x4 != 0;
                // The host may send its whole range buffer (up to 256
                // ranges); the first NR + 1 count.
                let len = sqe.sgl_len() as usize;
                if len < n * 16 || len > 4096 {
                    return Err(Status::SGL_LENGTH);
                }
                if !deallocate {
                    // Only attributes (hints): nothing to do.
                    self.finish(cid, Status::OK, 0);
                    return Ok(());
                }
                self.data_then(
                    sqe,
                    data,
                    job(Io::Zero { ranges: Vec::new() }),
                    len,
                    n * 16,
                    jobs,
                )
            }
            _ => Err(Status::INVALID_OPCODE),
        }
    }

    /// Runs `job` once its `len` bytes of data are here — in the capsule
    /// now, or fetched by an R2T — of which the first `keep` count.
    fn data_then(
        &mut self,
        sqe: &Sqe,
        data: &[u8],
        mut job: Job,
        len: usize,
        keep: usize,
        jobs: &mut Vec<Job>,
    ) -> Result<(), Status> {
        debug_assert!(keep <= len);
        match sqe.sgl_type() {
            SGL_IN_CAPSULE => {
                if data.len() != len || sqe.sgl_addr() != 0 {
                    return Err(Status::SGL_LENGTH);
                }
                self.with_data(&mut job, data[..keep].to_vec())?;
                self.run(job, jobs);
                Ok(())
            }
            SGL_TRANSPORT if data.is_empty() => {
                let ttag = self.next_ttag;
                self.next_ttag = self.next_ttag.wrapping_add(1);
                pdu::r2t(&mut self.out, job.cid, ttag, 0, len as u32, self.digests);
                self.slots.insert(
                    job.cid,
                    Slot::Transfer {
                        ttag,
                        job,
                        buf: vec![0; len],
                        keep,
                        got: 0,
                        bad_digest: false,
                    },
                );
                Ok(())
            }
            _ => Err(Status::SGL_TYPE),
        }
    }

    fn with_data(&self, job: &mut Job, bytes: Vec<u8>) -> Result<(), Status> {
        match &mut job.io {
            Io::Write { data, .. } => *data = bytes,
            Io::Zero { ranges } => {
                // DSM ranges: context attributes, length in blocks, SLBA.
                let sub = match &self.stage {
                    Stage::Io(c, _) => c.subsystem.map(|i| &self.target.subsystems[i]),
                    _ => None,
                };
                let v = sub
                    .and_then(|s| s.namespaces.iter().find(|v| v.ino == job.ino))
                    .ok_or(Status::INVALID_NS)?;
                for r in bytes.chunks_exact(16) {
                    let nlb = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
                    let slba = u64::from_le_bytes(r[8..16].try_into().unwrap_or([0; 8]));
                    let end = slba.checked_add(nlb).ok_or(Status::LBA_RANGE)?;
                    if end > v.blocks() {
                        return Err(Status::LBA_RANGE);
                    }
                    if nlb > 0 {
                        ranges.push((slba << v.lba_shift, nlb << v.lba_shift));
                    }
                }
            }
            _ => return Err(Status::INVALID_FIELD),
        }
        Ok(())
    }
}
