//! The data protocol's wire format, version 2 (described for implementers
//! in `PROTOCOL.md` beside this file).
//!
//! Every frame is one datagram: a 48-byte header, then up to
//! `max_frame - 48` bytes of one message. A message larger than one frame
//! is split into packets of equal size (the last may be shorter) that share
//! a request id. Parsing never trusts a length: every field is checked, and
//! a frame that fails any check is an [`FrameError`] the receiver counts and
//! drops.

use crate::codec::{DecodeError, Reader, Writer};

/// "FLNT", little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FLNT");
/// Wire format version.
pub const VERSION: u8 = 2;
/// Header bytes.
pub const HEADER: usize = 48;
/// Largest message (a request or response, all its packets together).
pub const MAX_MESSAGE: usize = (16 << 20) + 4096;
/// Largest single read or write a request may carry.
pub const MAX_IO: usize = 16 << 20;
/// Default frame size: a jumbo Ethernet frame's UDP payload.
pub const DEFAULT_FRAME: usize = 8_972;
/// Smallest frame a peer may ask for.
pub const MIN_FRAME: usize = 512;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client: opens a session for an organization.
    Hello = 1,
    /// Server: a nonce to prove the key against, and the session id.
    Challenge = 2,
    /// Client: the proof.
    Auth = 3,
    /// Server: the session is open (with the server's own proof).
    Welcome = 4,
    /// Client: a request message (or one packet of it).
    Request = 5,
    /// Server: a response message (or one packet of it).
    Response = 6,
    /// Server: the session or request is refused.
    Reject = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Auth,
            4 => Kind::Welcome,
            5 => Kind::Request,
            6 => Kind::Response,
            7 => Kind::Reject,
            _ => return None,
        })
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: Kind,
    /// Session id (0 in a Hello).
    pub session: u64,
    /// Request id (the message's, shared by its packets).
    pub request: u64,
    /// Client: every request below this id has its response (the server
    /// may forget them). Server: unused (0).
    pub ack: u64,
    /// This packet's index in its message.
    pub pkt: u16,
    /// Packets in the message.
    pub pkts: u16,
    /// The whole message's length.
    pub msg_len: u32,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header.
    Truncated,
    /// Not a Flint frame.
    Magic,
    /// Another version of the protocol.
    Version,
    /// Unknown frame kind.
    Kind,
    /// A length or packet field that does not add up.
    Length,
    /// The checksum does not match (damaged in flight).
    Checksum,
}

impl FrameError {
    /// A short name, for counters.
    pub fn name(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::Magic => "magic",
            FrameError::Version => "version",
            FrameError::Kind => "kind",
            FrameError::Length => "length",
            FrameError::Checksum => "checksum",
        }
    }
}

fn check(frame: &[u8]) -> u32 {
    check_parts(frame, &[])
}

/// The checksum of a frame lying in two parts (`head`, at least the
/// header, then `tail`), with its checksum field (44..48) taken as zero.
fn check_parts(head: &[u8], tail: &[u8]) -> u32 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&head[..44]);
    h.update(&[0; 4]);
    h.update(&head[HEADER..]);
    h.update(tail);
    h.digest() as u32
}

/// The 48 header bytes of a packet carrying `len` payload bytes, checksum
/// field zero.
fn header_bytes(h: &Header, len: usize) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4] = VERSION;
    b[5] = h.kind as u8;
    b[8..16].copy_from_slice(&h.session.to_le_bytes());
    b[16..24].copy_from_slice(&h.request.to_le_bytes());
    b[24..32].copy_from_slice(&h.ack.to_le_bytes());
    b[32..34].copy_from_slice(&h.pkt.to_le_bytes());
    b[34..36].copy_from_slice(&h.pkts.to_le_bytes());
    b[36..40].copy_from_slice(&(len as u32).to_le_bytes());
    b[40..44].copy_from_slice(&h.msg_len.to_le_bytes());
    b
}

/// Encodes one packet: `payload` is bytes `[off, off + payload.len())` of a
/// `msg_len`-byte message.
pub fn encode(h: &Header, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&header_bytes(h, payload.len()));
    out.extend_from_slice(payload);
    let c = check(out);
    out[44..48].copy_from_slice(&c.to_le_bytes());
}

/// Rewrites a frame's checksum to match its bytes (for tools and fuzzers
/// that edit frames; a sender never needs it).
pub fn reseal(frame: &mut [u8]) {
    if frame.len() >= HEADER {
        let c = check(frame);
        frame[44..48].copy_from_slice(&c.to_le_bytes());
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses a frame: its header, and its payload with the payload's offset in
/// the message.
pub fn decode(frame: &[u8]) -> Result<(Header, usize, &[u8]), FrameError> {
    if frame.len() < HEADER {
        return Err(FrameError::Truncated);
    }
    if le32(frame, 0) != MAGIC {
        return Err(FrameError::Magic);
    }
    if frame[4] != VERSION {
        return Err(FrameError::Version);
    }
    let kind = Kind::from_u8(frame[5]).ok_or(FrameError::Kind)?;
    let h = Header {
        kind,
        session: le64(frame, 8),
        request: le64(frame, 16),
        ack: le64(frame, 24),
        pkt: le16(frame, 32),
        pkts: le16(frame, 34),
        msg_len: le32(frame, 40),
    };
    let len = le32(frame, 36) as usize;
    let msg_len = h.msg_len as usize;
    let pkts = usize::from(h.pkts);
    let pkt = usize::from(h.pkt);
    if len != frame.len() - HEADER || pkts == 0 || pkt >= pkts || msg_len > MAX_MESSAGE {
        return Err(FrameError::Length);
    }
    // Packets but the last carry equal shares; the last the rest.
    let off = if pkt + 1 < pkts {
        pkt * len
    } else {
        msg_len.checked_sub(len).ok_or(FrameError::Length)?
    };
    let whole = if pkts == 1 {
        len == msg_len
    } else if pkt + 1 < pkts {
        len > 0 && (pkts - 1) * len < msg_len && msg_len <= pkts * len
    } else {
        len <= msg_len
    };
    if !whole || off + len > msg_len {
        return Err(FrameError::Length);
    }
    if le32(frame, 44) != check(frame) {
        return Err(FrameError::Checksum);
    }
    Ok((h, off, &frame[HEADER..]))
}

/// The kind and session of a frame that belongs to a session (Auth,
/// Request), read from its header without checking the rest: to route a
/// frame to the core owning its session, which then checks all of it.
pub fn peek_session(frame: &[u8]) -> Option<(Kind, u64)> {
    if frame.len() < HEADER || le32(frame, 0) != MAGIC || frame[4] != VERSION {
        return None;
    }
    match Kind::from_u8(frame[5])? {
        k @ (Kind::Auth | Kind::Request) => Some((k, le64(frame, 8))),
        _ => None,
    }
}

/// Splits a message into packets of at most `max_frame` bytes each and
/// hands each encoded frame to `send`.
#[allow(clippy::too_many_arguments)]
pub fn packets(
    kind: Kind,
    session: u64,
    request: u64,
    ack: u64,
    msg: &[u8],
    max_frame: usize,
    buf: &mut Vec<u8>,
    send: impl FnMut(&[u8]),
) {
    packets_from(kind, session, request, ack, msg, max_frame, 0, buf, send)
}

/// Like [`packets`], starting at packet `start` and wrapping around: a
/// retransmission starts elsewhere each time, so loss that recurs at the
/// same position of every burst cannot starve one packet forever.
#[allow(clippy::too_many_arguments)]
pub fn packets_from(
    kind: Kind,
    session: u64,
    request: u64,
    ack: u64,
    msg: &[u8],
    max_frame: usize,
    start: usize,
    buf: &mut Vec<u8>,
    mut send: impl FnMut(&[u8]),
) {
    let env = Envelope {
        kind,
        session,
        request,
        ack,
    };
    gather(&env, &[], msg, max_frame, start, |head, body| {
        buf.clear();
        buf.extend_from_slice(head);
        buf.extend_from_slice(&msg[body]);
        send(buf);
    });
}

/// Whom a message is for and what it is: the header fields its packets
/// share.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    /// What the message is.
    pub kind: Kind,
    /// Session id.
    pub session: u64,
    /// Request id.
    pub request: u64,
    /// Acknowledgement floor (clients; 0 from servers).
    pub ack: u64,
}

/// Splits the message `prefix ++ body` into packets of at most `max_frame`
/// bytes, starting at packet `start` and wrapping around, without copying
/// the body: each packet is handed to `send` as its `head` (the sealed
/// header and the bytes of `prefix` it carries, a few bytes at most) and
/// the range of `body` that follows them on the wire. A port that can
/// transmit from `body` where it lies sends the packet with no copy.
pub fn gather(
    env: &Envelope,
    prefix: &[u8],
    body: &[u8],
    max_frame: usize,
    start: usize,
    mut send: impl FnMut(&[u8], std::ops::Range<usize>),
) {
    let total = prefix.len() + body.len();
    let per = max_frame.saturating_sub(HEADER).max(1);
    let pkts = total.div_ceil(per).max(1);
    let p = prefix.len();
    let mut head = Vec::with_capacity(HEADER + p.min(per));
    for n in 0..pkts {
        let i = (n + start) % pkts;
        let (a, b) = ((i * per).min(total), ((i + 1) * per).min(total));
        let h = Header {
            kind: env.kind,
            session: env.session,
            request: env.request,
            ack: env.ack,
            pkt: i as u16,
            pkts: pkts as u16,
            msg_len: total as u32,
        };
        let range = a.max(p) - p..b.max(p) - p;
        head.clear();
        head.extend_from_slice(&header_bytes(&h, b - a));
        head.extend_from_slice(&prefix[a.min(p)..b.min(p)]);
        let c = check_parts(&head, &body[range.clone()]);
        head[44..48].copy_from_slice(&c.to_le_bytes());
        send(&head, range);
    }
}

/// A message being reassembled from its packets.
#[derive(Debug)]
pub struct Partial {
    /// The message bytes so far.
    pub buf: Vec<u8>,
    got: Vec<bool>,
    missing: usize,
}

impl Partial {
    /// An empty message of `h.msg_len` bytes in `h.pkts` packets.
    pub fn new(h: &Header) -> Partial {
        Partial {
            buf: vec![0; h.msg_len as usize],
            got: vec![false; usize::from(h.pkts)],
            missing: usize::from(h.pkts),
        }
    }

    /// Adds a packet; returns whether the message is complete. A packet
    /// that does not fit this message (another length or packet count) is
    /// refused.
    pub fn add(&mut self, h: &Header, off: usize, payload: &[u8]) -> Result<bool, FrameError> {
        let pkt = usize::from(h.pkt);
        if h.msg_len as usize != self.buf.len() || usize::from(h.pkts) != self.got.len() {
            return Err(FrameError::Length);
        }
        if !self.got[pkt] {
            self.buf[off..off + payload.len()].copy_from_slice(payload);
            self.got[pkt] = true;
            self.missing -= 1;
        }
        Ok(self.missing == 0)
    }
}

/// Longest file system name or path component on the wire.
pub const MAX_NAME: usize = 255;
/// Longest path (or symlink target) on the wire.
pub const MAX_PATH: usize = 4095;
/// Longest extended attribute value.
pub const MAX_XATTR: usize = crate::meta::btree::MAX_VALUE;

/// A request's operation code: the first byte of every request message
/// (PROTOCOL.md, "Requests").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// [`Request::Open`].
    Open = 1,
    /// [`Request::Read`].
    Read = 2,
    /// [`Request::Write`].
    Write = 3,
    /// [`Request::Sync`].
    Sync = 4,
    /// [`Request::Stat`].
    Stat = 5,
    /// [`Request::List`].
    List = 6,
    /// [`Request::Unlink`].
    Unlink = 7,
    /// [`Request::Truncate`].
    Truncate = 8,
    /// [`Request::Ping`].
    Ping = 9,
    /// [`Request::Mkdir`].
    Mkdir = 10,
    /// [`Request::Rmdir`].
    Rmdir = 11,
    /// [`Request::Rename`].
    Rename = 12,
    /// [`Request::StatPath`].
    StatPath = 13,
    /// [`Request::Link`].
    Link = 14,
    /// [`Request::Symlink`].
    Symlink = 15,
    /// [`Request::Readlink`].
    Readlink = 16,
    /// [`Request::SetXattr`].
    SetXattr = 17,
    /// [`Request::GetXattr`].
    GetXattr = 18,
    /// [`Request::ListXattr`].
    ListXattr = 19,
    /// [`Request::RemoveXattr`].
    RemoveXattr = 20,
    /// [`Request::Ns`].
    Ns = 21,
    /// [`Request::Slice`].
    Slice = 22,
}

impl Op {
    /// Every operation, in code order.
    pub const ALL: [Op; 22] = [
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Sync,
        Op::Stat,
        Op::List,
        Op::Unlink,
        Op::Truncate,
        Op::Ping,
        Op::Mkdir,
        Op::Rmdir,
        Op::Rename,
        Op::StatPath,
        Op::Link,
        Op::Symlink,
        Op::Readlink,
        Op::SetXattr,
        Op::GetXattr,
        Op::ListXattr,
        Op::RemoveXattr,
        Op::Ns,
        Op::Slice,
    ];

    /// The operation a code names, if any.
    pub fn from_u8(code: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u8 == code)
    }
}

/// A request message. Paths are `/`-separated and relative to the file
/// system's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Opens (optionally creating) a regular file.
    Open {
        /// Create it if missing.
        create: bool,
        /// File system name.
        fs: String,
        /// Path.
        path: String,
    },
    /// Reads `len` bytes at `offset`.
    Read {
        /// File.
        ino: u64,
        /// Offset.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// Writes `data` at `offset`.
    Write {
        /// File.
        ino: u64,
        /// Offset.
        offset: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Makes every acknowledged write durable.
    Sync,
    /// An open file's attributes.
    Stat {
        /// File.
        ino: u64,
    },
    /// A page of a directory's entries after `cookie` (0: from the start).
    List {
        /// File system name.
        fs: String,
        /// The directory.
        path: String,
        /// The last entry's cookie of the previous page.
        cookie: u64,
        /// Most entries to return.
        max: u32,
    },
    /// Removes a name (not a directory); the file goes with its last name.
    Unlink {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
    },
    /// Sets a file's size.
    Truncate {
        /// File.
        ino: u64,
        /// New size.
        size: u64,
    },
    /// Answered by the server's receive side at once, with the payload
    /// echoed: the protocol and transport alone (a small RPC).
    Ping {
        /// Echoed bytes.
        payload: Vec<u8>,
    },
    /// Creates a directory.
    Mkdir {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
        /// Permission bits.
        perm: u32,
    },
    /// Removes an empty directory.
    Rmdir {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
    },
    /// Renames `from` to `to`.
    Rename {
        /// File system name.
        fs: String,
        /// Source path.
        from: String,
        /// Target path.
        to: String,
        /// Bit 0: no-replace; bit 1: exchange.
        flags: u8,
    },
    /// The attributes of the inode at a path (a symlink itself).
    StatPath {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
    },
    /// A hard link: `to` names the inode `from` names.
    Link {
        /// File system name.
        fs: String,
        /// Existing path.
        from: String,
        /// New path.
        to: String,
    },
    /// A symbolic link at `path` to `target`.
    Symlink {
        /// File system name.
        fs: String,
        /// What it points to.
        target: String,
        /// Path of the link.
        path: String,
    },
    /// A symbolic link's target.
    Readlink {
        /// File system name.
        fs: String,
        /// Path of the link.
        path: String,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
        /// Its value (at most [`MAX_XATTR`] bytes).
        value: Vec<u8>,
        /// 0 create or replace, 1 create only, 2 replace only.
        mode: u8,
    },
    /// An extended attribute's value.
    GetXattr {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
    },
    /// The names of an inode's extended attributes.
    ListXattr {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// File system name.
        fs: String,
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
    },
    /// A namespace call addressed by inode ([`super::ns`]).
    Ns(super::ns::NsRequest),
    /// Block I/O on a slice of this node's storage, from a peer node
    /// ([`super::slice`]).
    Slice(super::slice::SliceRequest),
}

impl Request {
    /// The request's operation.
    pub fn op(&self) -> Op {
        match self {
            Request::Open { .. } => Op::Open,
            Request::Read { .. } => Op::Read,
            Request::Write { .. } => Op::Write,
            Request::Sync => Op::Sync,
            Request::Stat { .. } => Op::Stat,
            Request::List { .. } => Op::List,
            Request::Unlink { .. } => Op::Unlink,
            Request::Truncate { .. } => Op::Truncate,
            Request::Ping { .. } => Op::Ping,
            Request::Mkdir { .. } => Op::Mkdir,
            Request::Rmdir { .. } => Op::Rmdir,
            Request::Rename { .. } => Op::Rename,
            Request::StatPath { .. } => Op::StatPath,
            Request::Link { .. } => Op::Link,
            Request::Symlink { .. } => Op::Symlink,
            Request::Readlink { .. } => Op::Readlink,
            Request::SetXattr { .. } => Op::SetXattr,
            Request::GetXattr { .. } => Op::GetXattr,
            Request::ListXattr { .. } => Op::ListXattr,
            Request::RemoveXattr { .. } => Op::RemoveXattr,
            Request::Ns(_) => Op::Ns,
            Request::Slice(_) => Op::Slice,
        }
    }

    /// The file system a path request names.
    pub fn fs_name(&self) -> Option<&str> {
        match self {
            Request::Open { fs, .. }
            | Request::List { fs, .. }
            | Request::Unlink { fs, .. }
            | Request::Mkdir { fs, .. }
            | Request::Rmdir { fs, .. }
            | Request::Rename { fs, .. }
            | Request::StatPath { fs, .. }
            | Request::Link { fs, .. }
            | Request::Symlink { fs, .. }
            | Request::Readlink { fs, .. }
            | Request::SetXattr { fs, .. }
            | Request::GetXattr { fs, .. }
            | Request::ListXattr { fs, .. }
            | Request::RemoveXattr { fs, .. } => Some(fs),
            Request::Ns(r) => Some(&r.fs),
            _ => None,
        }
    }

    /// Encodes the request.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.op() as u8);
        match self {
            Request::Open { create, fs, path } => {
                w.u8(u8::from(*create)).str(fs).str(path);
            }
            Request::Read { ino, offset, len } => {
                w.u64(*ino).u64(*offset).u32(*len);
            }
            Request::Write { ino, offset, data } => {
                w.u64(*ino).u64(*offset);
                w.buf.extend_from_slice(data);
            }
            Request::Sync => {}
            Request::Stat { ino } => {
                w.u64(*ino);
            }
            Request::List {
                fs,
                path,
                cookie,
                max,
            } => {
                w.str(fs).str(path).u64(*cookie).u32(*max);
            }
            Request::Unlink { fs, path }
            | Request::Rmdir { fs, path }
            | Request::StatPath { fs, path }
            | Request::Readlink { fs, path }
            | Request::ListXattr { fs, path } => {
                w.str(fs).str(path);
            }
            Request::SetXattr {
                fs,
                path,
                name,
                value,
                mode,
            } => {
                w.str(fs).str(path).str(name).bytes(value).u8(*mode);
            }
            Request::GetXattr { fs, path, name } | Request::RemoveXattr { fs, path, name } => {
                w.str(fs).str(path).str(name);
            }
            Request::Truncate { ino, size } => {
                w.u64(*ino).u64(*size);
            }
            Request::Ping { payload } => {
                w.buf.extend_from_slice(payload);
            }
            Request::Mkdir { fs, path, perm } => {
                w.str(fs).str(path).u32(*perm);
            }
            Request::Rename {
                fs,
                from,
                to,
                flags,
            } => {
                w.str(fs).str(from).str(to).u8(*flags);
            }
            Request::Link { fs, from, to } => {
                w.str(fs).str(from).str(to);
            }
            Request::Symlink { fs, target, path } => {
                w.str(fs).str(target).str(path);
            }
            Request::Ns(r) => r.encode(w),
            Request::Slice(r) => r.encode(w),
        }
    }

    /// Decodes a request message.
    pub fn decode(msg: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(msg);
        let op = Op::from_u8(r.u8("op")?).ok_or(DecodeError { what: "op" })?;
        let fs = |r: &mut Reader<'_>| r.str(MAX_NAME, "file system name");
        let path = |r: &mut Reader<'_>| r.str(MAX_PATH, "path");
        let req = match op {
            Op::Open => Request::Open {
                create: r.u8("create")? != 0,
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::Read => {
                let ino = r.u64("ino")?;
                let offset = r.u64("offset")?;
                let len = r.u32("length")?;
                if len as usize > MAX_IO {
                    return Err(DecodeError {
                        what: "read length",
                    });
                }
                Request::Read { ino, offset, len }
            }
            Op::Write => {
                let ino = r.u64("ino")?;
                let offset = r.u64("offset")?;
                let n = r.remaining();
                let data = r.take(n, "data")?.to_vec();
                Request::Write { ino, offset, data }
            }
            Op::Sync => Request::Sync,
            Op::Stat => Request::Stat { ino: r.u64("ino")? },
            Op::List => Request::List {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
                cookie: r.u64("cookie")?,
                max: r.u32("max entries")?,
            },
            Op::Unlink => Request::Unlink {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::Truncate => Request::Truncate {
                ino: r.u64("ino")?,
                size: r.u64("size")?,
            },
            Op::Ping => {
                let n = r.remaining();
                Request::Ping {
                    payload: r.take(n, "payload")?.to_vec(),
                }
            }
            Op::Mkdir => Request::Mkdir {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
                perm: r.u32("perm")?,
            },
            Op::Rmdir => Request::Rmdir {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::Rename => Request::Rename {
                fs: fs(&mut r)?,
                from: path(&mut r)?,
                to: path(&mut r)?,
                flags: match r.u8("rename flags")? {
                    f @ 0..=2 => f,
                    _ => {
                        return Err(DecodeError {
                            what: "rename flags",
                        })
                    }
                },
            },
            Op::StatPath => Request::StatPath {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::Link => Request::Link {
                fs: fs(&mut r)?,
                from: path(&mut r)?,
                to: path(&mut r)?,
            },
            Op::Symlink => Request::Symlink {
                fs: fs(&mut r)?,
                target: path(&mut r)?,
                path: path(&mut r)?,
            },
            Op::Readlink => Request::Readlink {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::SetXattr => Request::SetXattr {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
                name: r.str(MAX_NAME, "xattr name")?,
                value: r.bytes(MAX_XATTR, "xattr value")?.to_vec(),
                mode: match r.u8("xattr mode")? {
                    m @ 0..=2 => m,
                    _ => return Err(DecodeError { what: "xattr mode" }),
                },
            },
            Op::GetXattr => Request::GetXattr {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
                name: r.str(MAX_NAME, "xattr name")?,
            },
            Op::ListXattr => Request::ListXattr {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
            },
            Op::RemoveXattr => Request::RemoveXattr {
                fs: fs(&mut r)?,
                path: path(&mut r)?,
                name: r.str(MAX_NAME, "xattr name")?,
            },
            Op::Ns => Request::Ns(super::ns::NsRequest::decode(&mut r)?),
            Op::Slice => Request::Slice(super::slice::SliceRequest::decode(&mut r)?),
        };
        if r.remaining() != 0 {
            return Err(DecodeError {
                what: "request length",
            });
        }
        Ok(req)
    }
}

/// An inode's attributes on the wire (`stat`), with its name and cookie
/// when listed from a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Logical blocks stored.
    pub blocks: u64,
    /// Kind and permission bits (`st_mode`).
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access (ns since the epoch).
    pub atime: i64,
    /// Last modification.
    pub mtime: i64,
    /// Last change of the inode.
    pub ctime: i64,
    /// Where a listing resumes after this entry (0 outside listings).
    pub cookie: u64,
    /// Name (in a listing; empty otherwise).
    pub name: String,
}

impl FileStat {
    /// Encodes it.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.ino).u64(self.size).u64(self.blocks);
        w.u32(self.mode).u32(self.nlink).u32(self.uid).u32(self.gid);
        w.u64(self.atime as u64)
            .u64(self.mtime as u64)
            .u64(self.ctime as u64);
        w.u64(self.cookie).str(&self.name);
    }

    /// Decodes one.
    pub fn decode(r: &mut Reader<'_>) -> Result<FileStat, DecodeError> {
        Ok(FileStat {
            ino: r.u64("ino")?,
            size: r.u64("size")?,
            blocks: r.u64("blocks")?,
            mode: r.u32("mode")?,
            nlink: r.u32("nlink")?,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            atime: r.u64("atime")? as i64,
            mtime: r.u64("mtime")? as i64,
            ctime: r.u64("ctime")? as i64,
            cookie: r.u64("cookie")?,
            name: r.str(MAX_NAME, "file name")?,
        })
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// A response: a status (0, or a negated errno) and the body.
pub fn encode_response(status: i32, body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(body);
}

/// Splits a response message into status and body.
pub fn decode_response(msg: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    if msg.len() < 4 {
        return Err(DecodeError { what: "status" });
    }
    Ok((
        i32::from_le_bytes(msg[..4].try_into().expect("4 bytes")),
        &msg[4..],
    ))
}

/// The handshake messages.
pub mod hello {
    use super::*;

    /// Client's opening: organization, nonce, largest frame it takes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Hello {
        /// Organization name.
        pub org: String,
        /// Client nonce.
        pub nonce: [u8; 16],
        /// Largest frame the client receives.
        pub max_frame: u32,
    }

    impl Hello {
        /// Encodes it.
        pub fn encode(&self) -> Vec<u8> {
            let mut w = Writer::default();
            w.str(&self.org);
            w.buf.extend_from_slice(&self.nonce);
            w.u32(self.max_frame);
            w.buf
        }

        /// Decodes it.
        pub fn decode(msg: &[u8]) -> Result<Hello, DecodeError> {
            let mut r = Reader::new(msg);
            let org = r.str(MAX_NAME, "organization")?;
            let nonce = r.take(16, "nonce")?.try_into().expect("16 bytes");
            let max_frame = r.u32("max frame")?;
            if r.remaining() != 0 {
                return Err(DecodeError {
                    what: "hello length",
                });
            }
            Ok(Hello {
                org,
                nonce,
                max_frame,
            })
        }
    }

    /// The proof a client sends: HMAC over both nonces and the session.
    pub fn client_proof(
        key: &[u8],
        org: &str,
        client: &[u8; 16],
        server: &[u8; 16],
        session: u64,
    ) -> [u8; 32] {
        crate::net::auth::hmac(
            key,
            &[
                b"flint-auth-v1",
                org.as_bytes(),
                client,
                server,
                &session.to_le_bytes(),
            ],
        )
    }

    /// The proof the server answers with (so the client knows it holds the
    /// key too).
    pub fn server_proof(
        key: &[u8],
        client: &[u8; 16],
        server: &[u8; 16],
        session: u64,
    ) -> [u8; 32] {
        crate::net::auth::hmac(
            key,
            &[b"flint-welcome-v1", client, server, &session.to_le_bytes()],
        )
    }

    /// The server's welcome: its proof and the session's terms.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Welcome {
        /// The server's proof.
        pub proof: [u8; 32],
        /// Requests the client may have in flight.
        pub credits: u16,
        /// Largest frame the server receives.
        pub max_frame: u32,
        /// Idle milliseconds after which the session expires.
        pub idle_ms: u32,
    }

    impl Welcome {
        /// Encodes it.
        pub fn encode(&self) -> Vec<u8> {
            let mut w = Writer::default();
            w.buf.extend_from_slice(&self.proof);
            w.u16(self.credits).u32(self.max_frame).u32(self.idle_ms);
            w.buf
        }

        /// Decodes it.
        pub fn decode(msg: &[u8]) -> Result<Welcome, DecodeError> {
            let mut r = Reader::new(msg);
            let proof = r.take(32, "proof")?.try_into().expect("32 bytes");
            let w = Welcome {
                proof,
                credits: r.u16("credits")?,
                max_frame: r.u32("max frame")?,
                idle_ms: r.u32("idle timeout")?,
            };
            if r.remaining() != 0 {
                return Err(DecodeError {
                    what: "welcome length",
                });
            }
            Ok(w)
        }
    }

    /// A refusal: a code (negated errno) and a message.
    pub fn reject(code: i32, why: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(code as u32).str(why);
        w.buf
    }

    /// Decodes a refusal.
    pub fn decode_reject(msg: &[u8]) -> Result<(i32, String), DecodeError> {
        let mut r = Reader::new(msg);
        Ok((r.u32("code")? as i32, r.str(4096, "reason")?))
    }
}

/// One request of every operation, in code order (for tests and fuzzing).
#[doc(hidden)]
pub fn sample_requests() -> Vec<Request> {
    let fs = || "data".to_string();
    let path = || "dir/sub/file".to_string();
    vec![
        Request::Open {
            create: true,
            fs: fs(),
            path: path(),
        },
        Request::Read {
            ino: 7,
            offset: 4096,
            len: 4096,
        },
        Request::Write {
            ino: 7,
            offset: 1,
            data: vec![9; 300],
        },
        Request::Sync,
        Request::Stat { ino: 7 },
        Request::List {
            fs: fs(),
            path: "dir".into(),
            cookie: 3,
            max: 100,
        },
        Request::Unlink {
            fs: fs(),
            path: path(),
        },
        Request::Truncate { ino: 7, size: 100 },
        Request::Ping {
            payload: vec![1; 16],
        },
        Request::Mkdir {
            fs: fs(),
            path: "dir".into(),
            perm: 0o755,
        },
        Request::Rmdir {
            fs: fs(),
            path: "dir".into(),
        },
        Request::Rename {
            fs: fs(),
            from: path(),
            to: "dir/other".into(),
            flags: 1,
        },
        Request::StatPath {
            fs: fs(),
            path: path(),
        },
        Request::Link {
            fs: fs(),
            from: path(),
            to: "dir/hard".into(),
        },
        Request::Symlink {
            fs: fs(),
            target: "../file".into(),
            path: "dir/soft".into(),
        },
        Request::Readlink {
            fs: fs(),
            path: "dir/soft".into(),
        },
        Request::SetXattr {
            fs: fs(),
            path: path(),
            name: "user.label".into(),
            value: b"cat".to_vec(),
            mode: 1,
        },
        Request::GetXattr {
            fs: fs(),
            path: path(),
            name: "user.label".into(),
        },
        Request::ListXattr {
            fs: fs(),
            path: path(),
        },
        Request::RemoveXattr {
            fs: fs(),
            path: path(),
            name: "user.label".into(),
        },
        Request::Ns(super::ns::NsRequest {
            fs: fs(),
            uid: 1000,
            gid: 100,
            call: super::ns::NsCall::Lookup {
                dir: 7,
                name: b"file".to_vec(),
            },
        }),
        Request::Slice(super::slice::SliceRequest {
            epoch: 3,
            slice: "s1-d0-g0".into(),
            call: super::slice::SliceCall::Write {
                lba: 8,
                data: vec![9; 4096],
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_code_is_the_first_byte_of_its_request() {
        let reqs = sample_requests();
        assert_eq!(reqs.len(), Op::ALL.len());
        for (req, op) in reqs.iter().zip(Op::ALL) {
            assert_eq!(req.op(), op);
            assert_eq!(Op::from_u8(op as u8), Some(op));
            let mut w = Writer::default();
            req.encode(&mut w);
            assert_eq!(w.buf[0], op as u8);
            assert_eq!(&Request::decode(&w.buf).unwrap(), req);
        }
        for code in [0u8, 23, 0xff] {
            assert_eq!(Op::from_u8(code), None);
            assert!(Request::decode(&[code]).is_err());
        }
    }

    #[test]
    fn gathered_packets_are_the_packets_of_the_whole_message() {
        // A prefix and a body sent where they lie make exactly the frames
        // of the concatenated message, whichever packet the prefix ends in
        // and wherever sending starts.
        for (plen, blen, frame) in [
            (4, 0, 512),
            (4, 10_000, 512),
            (4, 463, 512),
            (0, 3, 64),
            (100, 1000, 60),
        ] {
            let prefix: Vec<u8> = (0..plen).map(|i| i as u8 ^ 0x5a).collect();
            let body: Vec<u8> = (0..blen).map(|i| (i * 7) as u8).collect();
            let whole = [prefix.clone(), body.clone()].concat();
            for start in [0, 1, 5] {
                let mut want = Vec::new();
                let mut buf = Vec::new();
                packets_from(
                    Kind::Response,
                    3,
                    4,
                    0,
                    &whole,
                    frame,
                    start,
                    &mut buf,
                    |f| want.push(f.to_vec()),
                );
                let mut got = Vec::new();
                let env = Envelope {
                    kind: Kind::Response,
                    session: 3,
                    request: 4,
                    ack: 0,
                };
                gather(&env, &prefix, &body, frame, start, |head, r| {
                    got.push([head, &body[r]].concat());
                });
                assert_eq!(
                    got, want,
                    "prefix {plen} body {blen} frame {frame} start {start}"
                );
                for f in &got {
                    decode(f).unwrap();
                }
            }
        }
    }

    fn roundtrip(msg: &[u8], frame: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        packets(Kind::Request, 7, 9, 3, msg, frame, &mut buf, |f| {
            frames.push(f.to_vec())
        });
        // Deliver out of order, with a duplicate.
        frames.reverse();
        frames.push(frames[0].clone());
        let mut p: Option<Partial> = None;
        let mut done = false;
        for f in &frames {
            let (h, off, payload) = decode(f).unwrap();
            assert_eq!((h.session, h.request, h.ack), (7, 9, 3));
            assert!(f.len() <= frame.max(HEADER + 1));
            let part = p.get_or_insert_with(|| Partial::new(&h));
            done = part.add(&h, off, payload).unwrap();
        }
        assert!(done);
        p.unwrap().buf
    }

    #[test]
    fn messages_split_and_reassemble_at_any_size() {
        for len in [0usize, 1, 100, 463, 464, 465, 5000, 100_000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for frame in [512, 1500, DEFAULT_FRAME] {
                assert_eq!(roundtrip(&msg, frame), msg, "len {len} frame {frame}");
            }
        }
    }

    #[test]
    fn requests_round_trip() {
        let reqs = sample_requests();
        for r in reqs {
            let mut w = Writer::default();
            r.encode(&mut w);
            assert_eq!(Request::decode(&w.buf).unwrap(), r);
            for cut in 0..w.buf.len() {
                // A cut write or ping is a shorter valid one past its fixed
                // fields (17 bytes and 1).
                let fixed = match r {
                    Request::Write { .. } => 17,
                    Request::Ping { .. } => 1,
                    _ => usize::MAX,
                };
                if cut < fixed {
                    assert!(Request::decode(&w.buf[..cut]).is_err(), "{r:?} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn damaged_frames_are_refused_with_a_reason() {
        let mut buf = Vec::new();
        let mut f = Vec::new();
        packets(Kind::Request, 1, 2, 0, b"hello", 512, &mut buf, |x| {
            f = x.to_vec()
        });
        assert!(decode(&f).is_ok());
        assert_eq!(decode(&f[..10]).unwrap_err(), FrameError::Truncated);
        let mut bad = f.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad).unwrap_err(), FrameError::Magic);
        let mut bad = f.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad).unwrap_err(), FrameError::Version);
        let mut bad = f.clone();
        bad[5] = 99;
        assert_eq!(decode(&bad).unwrap_err(), FrameError::Kind);
        let mut bad = f.clone();
        bad.push(0);
        assert_eq!(decode(&bad).unwrap_err(), FrameError::Length);
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        assert_eq!(decode(&bad).unwrap_err(), FrameError::Checksum);
        // Every byte flipped somewhere: an error or a frame, never a panic.
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut bad = f.clone();
                bad[i] ^= 1 << bit;
                let _ = decode(&bad);
            }
        }
    }
}
