//! The data protocol's client: a session with a server, many requests in
//! flight, retransmission on timeout, large messages in packets. Used by
//! the `flint` CLI, fio's remote mode and the C ABI.
//!
//! A `Client` belongs to one thread. [`Client::submit`] sends a request and
//! returns at once; [`Client::poll`] receives, retransmits what timed out,
//! and returns finished requests by the tag they were submitted with. The
//! blocking calls ([`Client::read`], [`Client::write`]...) are built on the
//! two. A server that restarted (and so forgot the session) is reconnected
//! to transparently and the requests in flight are sent again.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flint_dataplane::nic::udp::UdpPort;
use flint_dataplane::nic::{Port, MAX_FRAME};

use super::auth::{self, Key};
use super::wire::{self, hello, FileStat, Kind, Partial, Request};
use crate::codec::{Reader, Writer};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Largest frame to ask the server for.
    pub max_frame: usize,
    /// First retransmission timeout (doubles on each retry, up to 1 s).
    pub rto: Duration,
    /// A request unanswered this long fails with `ETIMEDOUT`.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_frame: wire::DEFAULT_FRAME,
            rto: Duration::from_millis(20),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Client errors.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed.
    Io(io::Error),
    /// The server refused (authentication, session): its code and reason.
    Refused {
        /// Negated errno.
        code: i32,
        /// The server's words.
        reason: String,
    },
    /// No answer in time.
    Timeout,
    /// The server's answer made no sense, or it failed to prove it holds
    /// the key.
    Protocol(&'static str),
    /// All credits are in use: poll for completions first.
    Busy,
    /// The request ran and failed: the negated errno.
    Status(i32),
}

impl ClientError {
    /// The negated errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ClientError::Io(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            ClientError::Refused { code, .. } => *code,
            ClientError::Timeout => -libc::ETIMEDOUT,
            ClientError::Protocol(_) => -libc::EPROTO,
            ClientError::Busy => -libc::EAGAIN,
            ClientError::Status(c) => *c,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "network: {e}"),
            ClientError::Refused { reason, .. } => write!(f, "refused by the server: {reason}"),
            ClientError::Timeout => write!(f, "the server did not answer in time"),
            ClientError::Protocol(what) => write!(f, "protocol error: {what}"),
            ClientError::Busy => write!(f, "too many requests in flight"),
            ClientError::Status(c) => write!(f, "{}", io::Error::from_raw_os_error(-c)),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// Client result.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A finished request.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The tag it was submitted with.
    pub tag: u64,
    /// 0, or the negated errno.
    pub status: i32,
    /// The response body.
    pub body: Vec<u8>,
}

/// What the client counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientStats {
    /// Requests sent again after a timeout.
    pub retransmits: u64,
    /// Sessions reopened after the server forgot one.
    pub reconnects: u64,
    /// Frames dropped (malformed, or from elsewhere).
    pub dropped: u64,
}

struct Flight {
    tag: u64,
    /// Times sent.
    tries: usize,
    msg: Vec<u8>,
    first: Instant,
    sent: Instant,
    rto: Duration,
    partial: Option<Partial>,
}

/// A session with a Flint server.
pub struct Client {
    port: Box<dyn Port>,
    server: SocketAddr,
    org: String,
    key: Key,
    cfg: ClientConfig,
    session: u64,
    credits: u16,
    frame: usize,
    next: u64,
    flights: BTreeMap<u64, Flight>,
    done: VecDeque<Completion>,
    rbuf: Vec<u8>,
    sbuf: Vec<u8>,
    stats: ClientStats,
    /// No retransmission is due before this (the earliest deadline when
    /// last computed; new requests only move it earlier).
    next_check: Instant,
    /// Smoothed round trip and its variation.
    srtt: Option<Duration>,
    rttvar: Duration,
}

/// Tags at or above this are the blocking calls' own.
const CALL_TAG: u64 = u64::MAX - 1;

impl Client {
    /// Opens a session with the server at `server` as organization `org`,
    /// proving `key` without sending it.
    pub fn connect(server: SocketAddr, org: &str, key: &Key, cfg: ClientConfig) -> Result<Client> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        Self::connect_via(Box::new(UdpPort::bind(local)?), server, org, key, cfg)
    }

    /// Like [`Client::connect`], over a port of the caller's (another
    /// transport, or a lossy one in tests).
    pub fn connect_via(
        port: Box<dyn Port>,
        server: SocketAddr,
        org: &str,
        key: &Key,
        cfg: ClientConfig,
    ) -> Result<Client> {
        let mut c = Client {
            port,
            server,
            org: org.to_string(),
            key: *key,
            frame: cfg.max_frame.clamp(wire::MIN_FRAME, MAX_FRAME),
            cfg,
            session: 0,
            credits: 1,
            next: 1,
            flights: BTreeMap::new(),
            done: VecDeque::new(),
            rbuf: vec![0; MAX_FRAME],
            sbuf: Vec::new(),
            stats: ClientStats::default(),
            next_check: Instant::now(),
            srtt: None,
            rttvar: Duration::ZERO,
        };
        c.handshake()?;
        Ok(c)
    }

    /// What the client counted.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Requests the server lets this session have in flight.
    pub fn credits(&self) -> u16 {
        self.credits
    }

    /// The session id (the server's name for this session).
    pub fn session_id(&self) -> u64 {
        self.session
    }

    /// The largest frame this session sends and receives (negotiated).
    pub fn max_frame(&self) -> usize {
        self.frame
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    fn send_one(&mut self, kind: Kind, session: u64, msg: &[u8]) -> Result<()> {
        wire::encode(
            &wire::Header {
                kind,
                session,
                request: 0,
                ack: 0,
                pkt: 0,
                pkts: 1,
                msg_len: msg.len() as u32,
            },
            msg,
            &mut self.sbuf,
        );
        match self.port.send(&self.sbuf, self.server) {
            // A full queue (or a link not up yet) is loss: the handshake
            // sends again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r.map_err(ClientError::Io),
        }
    }

    /// Waits for a single-packet frame of `kind` (or a Reject) for
    /// `session` (any session when 0).
    fn wait_for(
        &mut self,
        kind: Kind,
        session: u64,
        until: Instant,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            let Some((n, from)) = self.port.recv(&mut self.rbuf, Some(until - now))? else {
                return Ok(None);
            };
            if from != self.server {
                self.stats.dropped += 1;
                continue;
            }
            let Ok((h, _, payload)) = wire::decode(&self.rbuf[..n]) else {
                self.stats.dropped += 1;
                continue;
            };
            if session != 0 && h.session != session {
                continue;
            }
            if h.kind == Kind::Reject && session == 0 && h.session != 0 {
                // A late refusal of a session the server forgot (the one
                // being replaced), not of this handshake.
                continue;
            }
            if h.kind == Kind::Reject {
                let (code, reason) =
                    hello::decode_reject(payload).map_err(|_| ClientError::Protocol("reject"))?;
                return Err(ClientError::Refused { code, reason });
            }
            if h.kind == kind && h.pkts == 1 {
                return Ok(Some((h.session, payload.to_vec())));
            }
        }
    }

    fn handshake(&mut self) -> Result<()> {
        let nonce: [u8; 16] = auth::random();
        let hi = hello::Hello {
            org: self.org.clone(),
            nonce,
            max_frame: self.frame as u32,
        }
        .encode();
        let deadline = Instant::now() + self.cfg.timeout;
        let mut wait = self.cfg.rto.max(Duration::from_millis(50));
        loop {
            self.send_one(Kind::Hello, 0, &hi)?;
            let until = (Instant::now() + wait).min(deadline);
            if let Some((session, server_nonce)) = self.wait_for(Kind::Challenge, 0, until)? {
                let server_nonce: [u8; 16] = server_nonce
                    .try_into()
                    .map_err(|_| ClientError::Protocol("challenge length"))?;
                let proof =
                    hello::client_proof(&self.key, &self.org, &nonce, &server_nonce, session);
                loop {
                    self.send_one(Kind::Auth, session, &proof)?;
                    let until = (Instant::now() + wait).min(deadline);
                    let welcome = match self.wait_for(Kind::Welcome, session, until) {
                        // The server forgot the session it offered (it
                        // restarted in between): start over.
                        Err(ClientError::Refused { code, .. }) if code == -libc::ESTALE => break,
                        r => r?,
                    };
                    if let Some((_, w)) = welcome {
                        let w = hello::Welcome::decode(&w)
                            .map_err(|_| ClientError::Protocol("welcome"))?;
                        let want = hello::server_proof(&self.key, &nonce, &server_nonce, session);
                        if !auth::same(&want, &w.proof) {
                            return Err(ClientError::Protocol(
                                "the server could not prove it holds the key",
                            ));
                        }
                        self.session = session;
                        self.credits = w.credits.max(1);
                        self.frame = self.frame.min(w.max_frame as usize).max(wire::MIN_FRAME);
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout);
                    }
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout);
            }
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }

    fn floor(&self) -> u64 {
        self.flights.keys().next().copied().unwrap_or(self.next)
    }

    fn transmit(&mut self, id: u64) -> Result<()> {
        let floor = self.floor();
        let Some(f) = self.flights.get(&id) else {
            return Ok(());
        };
        let (port, server, session) = (&self.port, self.server, self.session);
        let mut res = Ok(());
        let start = f.tries * 3;
        wire::packets_from(
            Kind::Request,
            session,
            id,
            floor,
            &f.msg,
            self.frame,
            start,
            &mut self.sbuf,
            |p| {
                if let Err(e) = port.send(p, server) {
                    // A full socket buffer is loss; retransmission recovers it.
                    if e.kind() != io::ErrorKind::WouldBlock {
                        res = Err(e);
                    }
                }
            },
        );
        res.map_err(ClientError::Io)?;
        if let Some(f) = self.flights.get_mut(&id) {
            f.tries += 1;
        }
        Ok(())
    }

    /// The retransmission timeout: smoothed round trip plus four times its
    /// variation (RFC 6298), never below the configured one.
    fn rto(&self) -> Duration {
        match self.srtt {
            Some(srtt) => (srtt + self.rttvar * 4).max(self.cfg.rto),
            None => self.cfg.rto,
        }
    }

    /// Learns from a round trip (Karn: only of requests sent once).
    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Sends a request; its completion comes back from [`Client::poll`]
    /// with `tag`. `Busy` when the session's credits are all in use.
    pub fn submit(&mut self, req: &Request, tag: u64) -> Result<()> {
        if self.next - self.floor() >= u64::from(self.credits) {
            return Err(ClientError::Busy);
        }
        let mut w = Writer::default();
        req.encode(&mut w);
        let id = self.next;
        self.next += 1;
        let now = Instant::now();
        // The first timeout: the measured round trip (or the configured
        // one), plus the time the bytes take at a modest 100 MB/s, so a
        // large message is not sent again while its answer is on the way.
        let bytes = w.buf.len()
            + match req {
                Request::Read { len, .. } => *len as usize,
                _ => 0,
            };
        let rto =
            (self.rto() + Duration::from_micros(bytes as u64 / 100)).min(Duration::from_secs(1));
        self.next_check = self.next_check.min(now + rto);
        self.flights.insert(
            id,
            Flight {
                tag,
                tries: 0,
                msg: w.buf,
                first: now,
                sent: now,
                rto,
                partial: None,
            },
        );
        self.transmit(id)
    }

    /// Receives for up to `timeout` (returning as soon as something
    /// finished), retransmits what timed out, and returns the finished
    /// requests.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Completion>> {
        let until = Instant::now() + timeout;
        loop {
            self.receive_some(until)?;
            self.retransmit()?;
            if !self.done.is_empty() || Instant::now() >= until {
                return Ok(self.done.drain(..).collect());
            }
        }
    }

    fn receive_some(&mut self, until: Instant) -> Result<()> {
        // Wake for the earliest retransmission, or the deadline.
        let wait = self
            .next_check
            .min(until)
            .saturating_duration_since(Instant::now());
        let mut got = self.port.recv(&mut self.rbuf, Some(wait))?;
        while let Some((n, from)) = got {
            self.on_frame(n, from)?;
            // Drain what else is queued without waiting.
            got = self.port.recv(&mut self.rbuf, Some(Duration::ZERO))?;
            if !self.done.is_empty() && got.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, n: usize, from: SocketAddr) -> Result<()> {
        if from != self.server {
            self.stats.dropped += 1;
            return Ok(());
        }
        let Ok((h, off, payload)) = wire::decode(&self.rbuf[..n]) else {
            self.stats.dropped += 1;
            return Ok(());
        };
        if h.session != self.session {
            return Ok(());
        }
        match h.kind {
            Kind::Response => {
                let Some(f) = self.flights.get_mut(&h.request) else {
                    return Ok(());
                };
                if h.pkts == 1 {
                    // One packet: the whole answer, decoded in place.
                    let (tag, once, first) = (f.tag, f.tries == 1, f.first);
                    self.flights.remove(&h.request);
                    let (status, body) = wire::decode_response(payload)
                        .map(|(st, b)| (st, b.to_vec()))
                        .unwrap_or((-libc::EPROTO, Vec::new()));
                    self.done.push_back(Completion { tag, status, body });
                    if once {
                        self.sample(first.elapsed());
                    }
                    return Ok(());
                }
                let part = f.partial.get_or_insert_with(|| Partial::new(&h));
                match part.add(&h, off, payload) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(_) => {
                        f.partial = None;
                        self.stats.dropped += 1;
                        return Ok(());
                    }
                }
                let f = self.flights.remove(&h.request).expect("present above");
                if f.tries == 1 {
                    self.sample(f.first.elapsed());
                }
                let msg = f.partial.map(|p| p.buf).unwrap_or_default();
                match wire::decode_response(&msg) {
                    Ok((status, body)) => self.done.push_back(Completion {
                        tag: f.tag,
                        status,
                        body: body.to_vec(),
                    }),
                    Err(_) => self.done.push_back(Completion {
                        tag: f.tag,
                        status: -libc::EPROTO,
                        body: Vec::new(),
                    }),
                }
            }
            Kind::Reject => {
                let (code, _) =
                    hello::decode_reject(payload).unwrap_or((-libc::EIO, String::new()));
                if code == -libc::ESTALE {
                    // The server forgot the session (it restarted, or the
                    // session idled out): open a new one, send again.
                    self.stats.reconnects += 1;
                    self.handshake()?;
                    let ids: Vec<u64> = self.flights.keys().copied().collect();
                    for id in ids {
                        if let Some(f) = self.flights.get_mut(&id) {
                            f.partial = None;
                            f.sent = Instant::now();
                        }
                        self.transmit(id)?;
                    }
                }
            }
            _ => self.stats.dropped += 1,
        }
        Ok(())
    }

    fn retransmit(&mut self) -> Result<()> {
        let now = Instant::now();
        // Nothing can be due before the earliest deadline seen last time.
        if now < self.next_check {
            return Ok(());
        }
        let due: Vec<u64> = self
            .flights
            .iter()
            .filter(|(_, f)| now >= f.sent + f.rto)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let f = self.flights.get_mut(&id).expect("listed above");
            if now.duration_since(f.first) >= self.cfg.timeout {
                let f = self.flights.remove(&id).expect("listed above");
                self.done.push_back(Completion {
                    tag: f.tag,
                    status: -libc::ETIMEDOUT,
                    body: Vec::new(),
                });
                continue;
            }
            f.sent = now;
            f.rto = (f.rto * 2).min(Duration::from_secs(1));
            self.stats.retransmits += 1;
            self.transmit(id)?;
        }
        self.next_check = self
            .flights
            .values()
            .map(|f| f.sent + f.rto)
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        Ok(())
    }

    /// Sends a request and waits for its answer (other completions are
    /// kept for the next poll).
    pub fn call(&mut self, req: &Request) -> Result<Vec<u8>> {
        loop {
            match self.submit(req, CALL_TAG) {
                Ok(()) => break,
                Err(ClientError::Busy) => {
                    let got = self.poll(Duration::from_millis(10))?;
                    self.done.extend(got);
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            self.receive_some(Instant::now() + Duration::from_millis(50))?;
            self.retransmit()?;
            if let Some(i) = self.done.iter().position(|c| c.tag == CALL_TAG) {
                let c = self.done.remove(i).expect("found above");
                if c.status != 0 {
                    return Err(ClientError::Status(c.status));
                }
                return Ok(c.body);
            }
        }
    }

    /// Opens the regular file at `path` (creating it if asked; its
    /// directory must exist): its inode number and size.
    pub fn open(&mut self, fs: &str, path: &str, create: bool) -> Result<(u64, u64)> {
        let b = self.call(&Request::Open {
            create,
            fs: fs.into(),
            path: path.into(),
        })?;
        let mut r = Reader::new(&b);
        let parse =
            |r: &mut Reader<'_>| -> std::result::Result<(u64, u64), crate::codec::DecodeError> {
                Ok((r.u64("ino")?, r.u64("size")?))
            };
        parse(&mut r).map_err(|_| ClientError::Protocol("open response"))
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn read(&mut self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len > wire::MAX_IO {
            return Err(ClientError::Status(-libc::EINVAL));
        }
        self.call(&Request::Read {
            ino,
            offset,
            len: len as u32,
        })
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() > wire::MAX_IO {
            return Err(ClientError::Status(-libc::EINVAL));
        }
        self.call(&Request::Write {
            ino,
            offset,
            data: data.to_vec(),
        })
        .map(|_| ())
    }

    /// Makes every acknowledged write durable.
    pub fn sync(&mut self) -> Result<()> {
        self.call(&Request::Sync).map(|_| ())
    }

    /// A file's attributes.
    pub fn stat(&mut self, ino: u64) -> Result<FileStat> {
        self.stat_call(Request::Stat { ino })
    }

    /// A page of up to `max` entries of the directory at `path` after
    /// `cookie` (0: from the start; pass the last entry's cookie on).
    pub fn list_page(
        &mut self,
        fs: &str,
        path: &str,
        cookie: u64,
        max: u32,
    ) -> Result<Vec<FileStat>> {
        let b = self.call(&Request::List {
            fs: fs.into(),
            path: path.into(),
            cookie,
            max,
        })?;
        let mut r = Reader::new(&b);
        let n = r
            .count(72, "entry count")
            .map_err(|_| ClientError::Protocol("list response"))?;
        (0..n)
            .map(|_| FileStat::decode(&mut r).map_err(|_| ClientError::Protocol("list response")))
            .collect()
    }

    /// Every entry of the directory at `path`, page by page.
    pub fn list_dir(&mut self, fs: &str, path: &str) -> Result<Vec<FileStat>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let page = self.list_page(fs, path, cookie, 1024)?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            cookie = last.cookie;
            out.extend(page);
        }
    }

    /// The entries of a file system's root directory.
    pub fn list(&mut self, fs: &str) -> Result<Vec<FileStat>> {
        self.list_dir(fs, "")
    }

    /// Removes the name at `path` (not a directory); the file goes with its
    /// last name.
    pub fn unlink(&mut self, fs: &str, path: &str) -> Result<()> {
        self.call(&Request::Unlink {
            fs: fs.into(),
            path: path.into(),
        })
        .map(|_| ())
    }

    /// Creates a directory.
    pub fn mkdir(&mut self, fs: &str, path: &str, perm: u32) -> Result<FileStat> {
        self.stat_call(Request::Mkdir {
            fs: fs.into(),
            path: path.into(),
            perm,
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, fs: &str, path: &str) -> Result<()> {
        self.call(&Request::Rmdir {
            fs: fs.into(),
            path: path.into(),
        })
        .map(|_| ())
    }

    /// Renames `from` to `to`; `flags` bit 0 refuses to replace, bit 1
    /// exchanges the two.
    pub fn rename(&mut self, fs: &str, from: &str, to: &str, flags: u8) -> Result<()> {
        self.call(&Request::Rename {
            fs: fs.into(),
            from: from.into(),
            to: to.into(),
            flags,
        })
        .map(|_| ())
    }

    /// The attributes of the inode at `path` (a symlink itself).
    pub fn stat_path(&mut self, fs: &str, path: &str) -> Result<FileStat> {
        self.stat_call(Request::StatPath {
            fs: fs.into(),
            path: path.into(),
        })
    }

    /// A hard link: `to` names what `from` names.
    pub fn link(&mut self, fs: &str, from: &str, to: &str) -> Result<FileStat> {
        self.stat_call(Request::Link {
            fs: fs.into(),
            from: from.into(),
            to: to.into(),
        })
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&mut self, fs: &str, target: &str, path: &str) -> Result<FileStat> {
        self.stat_call(Request::Symlink {
            fs: fs.into(),
            target: target.into(),
            path: path.into(),
        })
    }

    /// The target of the symbolic link at `path`.
    pub fn readlink(&mut self, fs: &str, path: &str) -> Result<Vec<u8>> {
        self.call(&Request::Readlink {
            fs: fs.into(),
            path: path.into(),
        })
    }

    /// Sets extended attribute `name` of the inode at `path`; `mode` 0
    /// creates or replaces, 1 only creates, 2 only replaces.
    pub fn setxattr(
        &mut self,
        fs: &str,
        path: &str,
        name: &str,
        value: &[u8],
        mode: u8,
    ) -> Result<()> {
        if value.len() > wire::MAX_XATTR {
            return Err(ClientError::Status(-libc::E2BIG));
        }
        self.call(&Request::SetXattr {
            fs: fs.into(),
            path: path.into(),
            name: name.into(),
            value: value.to_vec(),
            mode,
        })
        .map(|_| ())
    }

    /// Extended attribute `name` of the inode at `path`.
    pub fn getxattr(&mut self, fs: &str, path: &str, name: &str) -> Result<Vec<u8>> {
        self.call(&Request::GetXattr {
            fs: fs.into(),
            path: path.into(),
            name: name.into(),
        })
    }

    /// The names of the extended attributes of the inode at `path`.
    pub fn listxattr(&mut self, fs: &str, path: &str) -> Result<Vec<Vec<u8>>> {
        let b = self.call(&Request::ListXattr {
            fs: fs.into(),
            path: path.into(),
        })?;
        let mut r = Reader::new(&b);
        let bad = |_| ClientError::Protocol("listxattr response");
        let n = r.count(4, "xattr count").map_err(bad)?;
        (0..n)
            .map(|_| {
                r.bytes(wire::MAX_NAME, "xattr name")
                    .map(|b| b.to_vec())
                    .map_err(bad)
            })
            .collect()
    }

    /// Removes extended attribute `name` of the inode at `path`.
    pub fn removexattr(&mut self, fs: &str, path: &str, name: &str) -> Result<()> {
        self.call(&Request::RemoveXattr {
            fs: fs.into(),
            path: path.into(),
            name: name.into(),
        })
        .map(|_| ())
    }

    fn stat_call(&mut self, req: Request) -> Result<FileStat> {
        let b = self.call(&req)?;
        FileStat::decode(&mut Reader::new(&b)).map_err(|_| ClientError::Protocol("stat response"))
    }

    /// Sets a file's size.
    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<()> {
        self.call(&Request::Truncate { ino, size }).map(|_| ())
    }
}
