//! The engine's metadata: file systems, files and their block maps, and the
//! stripe table — and the journal records that change them.
//!
//! Every change is a [`Record`]; [`Meta::apply`] is the only way state
//! changes, both live and when recovery replays the journal, so the two can
//! never disagree. The whole state encodes into a checkpoint.

pub mod btree;
pub mod group;
mod names;
pub mod namespace;
pub mod quota;
pub mod snap;
mod state;

pub use names::{NsOp, NsRecord};
pub use state::{root_ino, Inode, Meta, NsDone};

use crate::codec::{DecodeError, Reader, Writer};
use crate::pipeline::BlockAddr;

/// A file system id.
pub type FsId = u32;
/// A file (inode) number.
pub type Ino = u64;

/// Longest file or file system name.
pub const MAX_NAME: usize = 255;

/// A file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsMeta {
    /// Id.
    pub id: FsId,
    /// Name.
    pub name: String,
    /// Data chunks per stripe.
    pub k: u8,
    /// Parity chunks per stripe.
    pub m: u8,
    /// Dedup and compression on.
    pub reduction: bool,
    /// Capacity limit in logical bytes.
    pub capacity: u64,
    /// Writes and changes are acknowledged before they are durable (like
    /// NFS `async`); durable at the next commit, seal tick or fsync. Off by
    /// default: an acknowledged change is durable.
    pub write_back: bool,
}

/// Where one logical block of a file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The stored block.
    pub addr: BlockAddr,
    /// Its fingerprint (0 when the file system does not deduplicate); for a
    /// remote reference, the key of the block in its owner's shared pool.
    pub fp: u128,
}

/// The stripe id that marks a remote reference (a block kept in another
/// shard's shared pool; stripe ids never reach it).
const REMOTE: u64 = u64::MAX;

impl BlockRef {
    /// A reference to the block under `key` in the shared pool of shard
    /// `owner`.
    pub fn remote(owner: u32, key: u128) -> BlockRef {
        BlockRef {
            addr: BlockAddr {
                stripe: REMOTE,
                chunk: owner as u16,
                offset: 0,
                stored_len: 0,
                compressed: false,
            },
            fp: key,
        }
    }

    /// The shard whose shared pool holds this block, for a remote
    /// reference.
    #[inline]
    pub fn owner(&self) -> Option<u32> {
        (self.addr.stripe == REMOTE).then_some(u32::from(self.addr.chunk))
    }
}

/// A block in a shard's shared pool: content-addressed storage that block
/// maps on every shard refer to by (owner shard, key), so the engine keeps
/// one copy of a block whichever shard's file range holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    /// Where it is stored.
    pub addr: BlockAddr,
    /// Its fingerprint when the dedup index holds it (its key then), else 0.
    pub fp: u128,
}

/// A stripe: k data + m parity chunks on distinct devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeMeta {
    /// Stripe id.
    pub id: u64,
    /// The file system whose data it holds.
    pub fs: FsId,
    /// Data chunks.
    pub k: u8,
    /// Parity chunks.
    pub m: u8,
    /// (device index, chunk slot) of each chunk, data first.
    pub chunks: Vec<(u16, u64)>,
    /// Checksum of every 4 KiB sector of every chunk, chunk-major.
    pub sums: Vec<u64>,
}

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A file system was created.
    FsCreate(FsMeta),
    /// A file system's capacity changed.
    FsResize {
        /// The file system.
        fs: FsId,
        /// New capacity.
        capacity: u64,
    },
    /// This shard took a part of a file homed on another shard (its
    /// ranges here).
    PartCreate {
        /// Inode number.
        ino: Ino,
        /// File system.
        fs: FsId,
    },
    /// A part's file is gone: its blocks here are free.
    PartDrop {
        /// Inode number.
        ino: Ino,
    },
    /// A namespace change (directories, names, attributes).
    Ns(NsRecord),
    /// A stripe was written.
    Stripe(StripeMeta),
    /// Blocks of a file now live at new addresses; the file has `size` bytes.
    Extents {
        /// Inode number.
        ino: Ino,
        /// New size.
        size: u64,
        /// (logical block, where it lives).
        blocks: Vec<(u64, BlockRef)>,
        /// The write's time, the file's new mtime and ctime (0: a move of
        /// blocks that leaves the times alone).
        mtime: namespace::Nanos,
    },
    /// A stripe no longer holds live data; its chunk slots are free.
    StripeFree {
        /// Stripe id.
        id: u64,
    },
    /// A file was truncated (or extended with a hole) to `size` bytes.
    Truncate {
        /// Inode number.
        ino: Ino,
        /// New size.
        size: u64,
        /// The file's new mtime and ctime (0: unchanged).
        mtime: namespace::Nanos,
    },
    /// A block entered this shard's shared pool, or moved within it.
    SharedPut {
        /// File system (dedup domain).
        fs: FsId,
        /// Key other shards' block maps name it by.
        key: u128,
        /// The block.
        block: Shared,
    },
    /// No block map refers to a shared block any more.
    SharedDrop {
        /// File system.
        fs: FsId,
        /// Its key.
        key: u128,
    },
    /// An organization was created (kept by shard 0).
    OrgCreate(Org),
    /// A file system was given to an organization (kept by shard 0).
    FsOwner {
        /// File system.
        fs: FsId,
        /// Organization.
        org: OrgId,
    },
    /// A file system was deleted (its files first, by their own records).
    FsDelete {
        /// File system.
        fs: FsId,
    },
    /// A file system's acknowledgement mode changed.
    FsMode {
        /// File system.
        fs: FsId,
        /// Acknowledge before durable ([`FsMeta::write_back`]).
        write_back: bool,
    },
    /// A snapshot was taken on this shard (at a checkpoint, whose tree
    /// root it keeps).
    SnapCreate(snap::Snap),
    /// A snapshot was deleted: what only it held is free.
    SnapDelete {
        /// Its id.
        id: snap::SnapId,
    },
    /// This shard's part of its file system went back to a snapshot: the
    /// live files are dropped and the snapshot's copied in.
    SnapRestore {
        /// The snapshot.
        id: snap::SnapId,
    },
    /// A restore across the shards began (`Some`) or ended (`None`): kept
    /// by shard 0, so that opening the engine finishes one a crash cut
    /// short.
    RestoreMark {
        /// The snapshot being restored.
        id: Option<snap::SnapId>,
    },
    /// A filesystem group was created (kept by shard 0).
    GroupCreate(group::Group),
    /// A filesystem group was deleted (kept by shard 0).
    GroupDelete {
        /// Its id.
        id: group::GroupId,
    },
    /// A file system joined a group (0: left its group; kept by shard 0).
    FsGroup {
        /// File system.
        fs: FsId,
        /// The group.
        group: group::GroupId,
    },
    /// A directory quota was set or changed (kept by shard 0).
    QuotaSet(quota::Quota),
    /// A directory quota is gone (kept by shard 0).
    QuotaUnset {
        /// Its id.
        id: quota::QuotaId,
    },
    /// An inode moved to another quota (with its bytes, for a regular
    /// file), on the shard holding it.
    QuotaTag {
        /// Inode number.
        ino: Ino,
        /// The quota it now counts against (0: none).
        quota: quota::QuotaId,
    },
    /// This shard's count of a quota's bytes (only in a checkpoint's
    /// catalog).
    QuotaUsage {
        /// The quota.
        id: quota::QuotaId,
        /// Bytes of the files this shard holds under it.
        bytes: u64,
    },
    /// A writable snapshot is being made (`done` false) or is made (kept by
    /// shard 0).
    CloneMark(snap::CloneInfo),
    /// This shard's part of a writable snapshot: the clone's file system
    /// and a copy, under its own inode numbers, of what the read-only
    /// snapshot holds of the origin here (blocks shared, counted anew).
    SnapClone {
        /// The clone's file system.
        fs: FsMeta,
        /// How the clone was made.
        clone: snap::CloneInfo,
    },
    /// Stored bytes of a stripe still open (the write-ahead log): blocks
    /// acknowledged before their stripe is sealed. Replay gathers them and,
    /// for a stripe that never got its [`Record::Stripe`], seals it again
    /// from them. Changes nothing in the tree.
    OpenData {
        /// File system (whose pipeline the stripe belongs to).
        fs: FsId,
        /// The open stripe's id.
        stripe: u64,
        /// Data chunk.
        chunk: u16,
        /// Byte offset in the chunk.
        offset: u32,
        /// The stored bytes.
        bytes: Vec<u8>,
    },
}

/// An organization id.
pub type OrgId = u32;

/// An organization: a tenant whose sessions authenticate with its key and
/// reach only its file systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Id (from 1).
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// The secret its clients prove they hold.
    pub key: [u8; 32],
}

/// What applying a record released: blocks no longer referenced by the
/// file, for dedup reference counting and space accounting.
pub type Released = Vec<(FsId, BlockRef)>;

impl Shared {
    /// The block as a reference (what it holds in the stripe and index).
    pub fn as_ref(&self) -> BlockRef {
        BlockRef {
            addr: self.addr,
            fp: self.fp,
        }
    }
}

pub(crate) fn encode_addr(w: &mut Writer, a: &BlockAddr) {
    w.u64(a.stripe)
        .u16(a.chunk)
        .u32(a.offset)
        .u32(a.stored_len)
        .u8(u8::from(a.compressed));
}

pub(crate) fn decode_addr(r: &mut Reader<'_>) -> Result<BlockAddr, DecodeError> {
    Ok(BlockAddr {
        stripe: r.u64("stripe")?,
        chunk: r.u16("chunk")?,
        offset: r.u32("offset")?,
        stored_len: r.u32("stored length")?,
        compressed: match r.u8("compressed flag")? {
            0 => false,
            1 => true,
            _ => {
                return Err(DecodeError {
                    what: "compressed flag",
                })
            }
        },
    })
}

/// Appends one record's encoding.
pub fn encode_record(w: &mut Writer, rec: &Record) {
    match rec {
        Record::FsCreate(f) => {
            w.u8(1)
                .u32(f.id)
                .str(&f.name)
                .u8(f.k)
                .u8(f.m)
                .u8(u8::from(f.reduction) | (u8::from(f.write_back) << 1))
                .u64(f.capacity);
        }
        Record::FsResize { fs, capacity } => {
            w.u8(2).u32(*fs).u64(*capacity);
        }
        Record::PartCreate { ino, fs } => {
            w.u8(3).u64(*ino).u32(*fs);
        }
        Record::PartDrop { ino } => {
            w.u8(4).u64(*ino);
        }
        Record::Ns(n) => {
            w.u8(14);
            names::encode(w, n);
        }
        Record::Stripe(s) => {
            w.u8(5).u64(s.id).u32(s.fs).u8(s.k).u8(s.m);
            w.u32(s.chunks.len() as u32);
            for (d, slot) in &s.chunks {
                w.u16(*d).u64(*slot);
            }
            w.u32(s.sums.len() as u32);
            for x in &s.sums {
                w.u64(*x);
            }
        }
        Record::Extents {
            ino,
            size,
            blocks,
            mtime,
        } => {
            w.u8(6).u64(*ino).u64(*size).u64(*mtime as u64);
            w.u32(blocks.len() as u32);
            for (idx, b) in blocks {
                w.u64(*idx);
                encode_addr(w, &b.addr);
                w.u128(b.fp);
            }
        }
        Record::Truncate { ino, size, mtime } => {
            w.u8(7).u64(*ino).u64(*size).u64(*mtime as u64);
        }
        Record::StripeFree { id } => {
            w.u8(8).u64(*id);
        }
        Record::SharedPut { fs, key, block } => {
            w.u8(9).u32(*fs).u128(*key);
            encode_addr(w, &block.addr);
            w.u128(block.fp);
        }
        Record::SharedDrop { fs, key } => {
            w.u8(10).u32(*fs).u128(*key);
        }
        Record::OrgCreate(o) => {
            w.u8(11).u32(o.id).str(&o.name);
            w.buf.extend_from_slice(&o.key);
        }
        Record::FsOwner { fs, org } => {
            w.u8(12).u32(*fs).u32(*org);
        }
        Record::FsDelete { fs } => {
            w.u8(13).u32(*fs);
        }
        Record::FsMode { fs, write_back } => {
            w.u8(16).u32(*fs).u8(u8::from(*write_back));
        }
        Record::SnapCreate(snap) => {
            w.u8(17);
            snap.encode(w);
        }
        Record::SnapDelete { id } => {
            w.u8(18).u32(*id);
        }
        Record::SnapRestore { id } => {
            w.u8(19).u32(*id);
        }
        Record::RestoreMark { id } => {
            w.u8(20).u32(id.unwrap_or(0));
        }
        Record::GroupCreate(g) => {
            w.u8(21);
            g.encode(w);
        }
        Record::GroupDelete { id } => {
            w.u8(22).u32(*id);
        }
        Record::FsGroup { fs, group } => {
            w.u8(23).u32(*fs).u32(*group);
        }
        Record::QuotaSet(q) => {
            w.u8(24);
            q.encode(w);
        }
        Record::QuotaUnset { id } => {
            w.u8(25).u32(*id);
        }
        Record::QuotaTag { ino, quota } => {
            w.u8(26).u64(*ino).u32(*quota);
        }
        Record::QuotaUsage { id, bytes } => {
            w.u8(27).u32(*id).u64(*bytes);
        }
        Record::CloneMark(c) => {
            w.u8(28);
            c.encode(w);
        }
        Record::SnapClone { fs, clone } => {
            w.u8(29);
            encode_record(w, &Record::FsCreate(fs.clone()));
            clone.encode(w);
        }
        Record::OpenData {
            fs,
            stripe,
            chunk,
            offset,
            bytes,
        } => {
            w.u8(15).u32(*fs).u64(*stripe).u16(*chunk).u32(*offset);
            w.u32(bytes.len() as u32);
            w.buf.extend_from_slice(bytes);
        }
    }
}

/// Reads one record.
pub fn decode_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    Ok(match r.u8("record kind")? {
        1 => {
            let (id, name) = (r.u32("fs id")?, r.str(MAX_NAME, "fs name")?);
            let (k, m) = (r.u8("k")?, r.u8("m")?);
            let flags = r.u8("fs flags")?;
            if flags > 3 {
                return Err(DecodeError { what: "fs flags" });
            }
            Record::FsCreate(FsMeta {
                id,
                name,
                k,
                m,
                reduction: flags & 1 != 0,
                capacity: r.u64("capacity")?,
                write_back: flags & 2 != 0,
            })
        }
        2 => Record::FsResize {
            fs: r.u32("fs id")?,
            capacity: r.u64("capacity")?,
        },
        3 => Record::PartCreate {
            ino: r.u64("ino")?,
            fs: r.u32("fs id")?,
        },
        4 => Record::PartDrop { ino: r.u64("ino")? },
        14 => Record::Ns(names::decode(r)?),
        5 => {
            let id = r.u64("stripe id")?;
            let fs = r.u32("fs id")?;
            let k = r.u8("k")?;
            let m = r.u8("m")?;
            let n = r.count(10, "chunk count")?;
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                chunks.push((r.u16("device")?, r.u64("slot")?));
            }
            let n = r.count(8, "checksum count")?;
            let mut sums = Vec::with_capacity(n);
            for _ in 0..n {
                sums.push(r.u64("checksum")?);
            }
            if chunks.len() != usize::from(k) + usize::from(m) {
                return Err(DecodeError {
                    what: "stripe width",
                });
            }
            Record::Stripe(StripeMeta {
                id,
                fs,
                k,
                m,
                chunks,
                sums,
            })
        }
        6 => {
            let ino = r.u64("ino")?;
            let size = r.u64("size")?;
            let mtime = r.u64("mtime")? as i64;
            let n = r.count(8 + 19 + 16, "extent count")?;
            let mut blocks = Vec::with_capacity(n);
            for _ in 0..n {
                let idx = r.u64("block index")?;
                let addr = decode_addr(r)?;
                blocks.push((
                    idx,
                    BlockRef {
                        addr,
                        fp: r.u128("fingerprint")?,
                    },
                ));
            }
            Record::Extents {
                ino,
                size,
                blocks,
                mtime,
            }
        }
        7 => Record::Truncate {
            ino: r.u64("ino")?,
            size: r.u64("size")?,
            mtime: r.u64("mtime")? as i64,
        },
        8 => Record::StripeFree {
            id: r.u64("stripe id")?,
        },
        9 => Record::SharedPut {
            fs: r.u32("fs id")?,
            key: r.u128("shared key")?,
            block: Shared {
                addr: decode_addr(r)?,
                fp: r.u128("fingerprint")?,
            },
        },
        10 => Record::SharedDrop {
            fs: r.u32("fs id")?,
            key: r.u128("shared key")?,
        },
        11 => Record::OrgCreate(Org {
            id: r.u32("org id")?,
            name: r.str(MAX_NAME, "org name")?,
            key: r.take(32, "org key")?.try_into().expect("32 bytes"),
        }),
        12 => Record::FsOwner {
            fs: r.u32("fs id")?,
            org: r.u32("org id")?,
        },
        13 => Record::FsDelete {
            fs: r.u32("fs id")?,
        },
        16 => Record::FsMode {
            fs: r.u32("fs id")?,
            write_back: r.u8("write-back flag")? != 0,
        },
        17 => Record::SnapCreate(snap::Snap::decode(r)?),
        18 => Record::SnapDelete {
            id: r.u32("snapshot id")?,
        },
        19 => Record::SnapRestore {
            id: r.u32("snapshot id")?,
        },
        20 => Record::RestoreMark {
            id: Some(r.u32("snapshot id")?).filter(|&id| id != 0),
        },
        21 => Record::GroupCreate(group::Group::decode(r)?),
        22 => Record::GroupDelete {
            id: r.u32("group id")?,
        },
        23 => Record::FsGroup {
            fs: r.u32("fs id")?,
            group: r.u32("group id")?,
        },
        24 => Record::QuotaSet(quota::Quota::decode(r)?),
        25 => Record::QuotaUnset {
            id: r.u32("quota id")?,
        },
        26 => Record::QuotaTag {
            ino: r.u64("ino")?,
            quota: r.u32("quota id")?,
        },
        27 => Record::QuotaUsage {
            id: r.u32("quota id")?,
            bytes: r.u64("quota bytes")?,
        },
        28 => Record::CloneMark(snap::CloneInfo::decode(r)?),
        29 => {
            let Record::FsCreate(fs) = decode_record(r)? else {
                return Err(DecodeError { what: "clone fs" });
            };
            Record::SnapClone {
                fs,
                clone: snap::CloneInfo::decode(r)?,
            }
        }
        15 => {
            let fs = r.u32("fs id")?;
            let stripe = r.u64("stripe id")?;
            let chunk = r.u16("chunk")?;
            let offset = r.u32("chunk offset")?;
            let len = r.u32("open data length")? as usize;
            Record::OpenData {
                fs,
                stripe,
                chunk,
                offset,
                bytes: r.take(len, "open data")?.to_vec(),
            }
        }
        _ => {
            return Err(DecodeError {
                what: "record kind",
            })
        }
    })
}

/// Encodes a batch of records (one journal entry's payload).
pub fn encode_batch(recs: &[Record]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(recs.len() as u32);
    for r in recs {
        encode_record(&mut w, r);
    }
    w.buf
}

/// Decodes a journal entry's payload.
pub fn decode_batch(buf: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut r = Reader::new(buf);
    let n = r.count(1, "batch length")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(decode_record(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(DecodeError {
            what: "batch length",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: u64) -> BlockRef {
        BlockRef {
            addr: BlockAddr {
                stripe: s,
                chunk: 1,
                offset: 4096,
                stored_len: 1000,
                compressed: true,
            },
            fp: u128::from(s) << 70 | 5,
        }
    }

    const ROOT: Ino = 1 << 62;
    const F: Ino = 0x100;

    fn ns(op: NsOp) -> Record {
        Record::Ns(NsRecord {
            fs: 0,
            uid: 1000,
            gid: 100,
            now: 1_700_000_000_000_000_000,
            op,
        })
    }

    fn make(dir: Ino, name: &str, ino: Ino, mode: u32, target: &str) -> Record {
        ns(NsOp::Make {
            dir,
            name: name.into(),
            ino,
            generation: ino,
            mode,
            rdev: 0,
            target: target.into(),
        })
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::FsCreate(FsMeta {
                id: 0,
                name: "scratch".into(),
                k: 4,
                m: 2,
                reduction: true,
                capacity: 1 << 30,
                write_back: true,
            }),
            Record::FsMode {
                fs: 0,
                write_back: false,
            },
            Record::OpenData {
                fs: 0,
                stripe: 7,
                chunk: 2,
                offset: 4096,
                bytes: vec![9; 100],
            },
            ns(NsOp::Root {
                ino: ROOT,
                perm: 0o755,
            }),
            make(ROOT, "a.bin", F, libc::S_IFREG | 0o644, ""),
            make(ROOT, "d", 0x200, libc::S_IFDIR | 0o750, ""),
            make(0x200, "s", 0x300, libc::S_IFLNK | 0o777, "../a.bin"),
            ns(NsOp::Link {
                ino: F,
                dir: 0x200,
                name: "hard".into(),
            }),
            ns(NsOp::Rename {
                from_dir: 0x200,
                from: "s".into(),
                to_dir: ROOT,
                to: "s2".into(),
                flags: namespace::RenameFlags::default(),
            }),
            ns(NsOp::SetAttr {
                ino: 0x200,
                set: namespace::SetAttr {
                    perm: Some(0o700),
                    mtime: Some(5),
                    ..Default::default()
                },
            }),
            ns(NsOp::SetXattr {
                ino: F,
                name: "user.k".into(),
                value: vec![1, 2, 3],
                mode: namespace::XattrMode::Create,
            }),
            ns(NsOp::RemoveXattr {
                ino: F,
                name: "user.k".into(),
            }),
            ns(NsOp::Unlink {
                dir: 0x200,
                name: "hard".into(),
            }),
            make(ROOT, "gone", 0x400, libc::S_IFDIR | 0o755, ""),
            ns(NsOp::Rmdir {
                dir: ROOT,
                name: "gone".into(),
            }),
            Record::Stripe(StripeMeta {
                id: 3,
                fs: 0,
                k: 4,
                m: 2,
                chunks: (0..6).map(|d| (d, 10 + u64::from(d))).collect(),
                sums: (0..6 * 32).collect(),
            }),
            Record::Extents {
                ino: F,
                size: 9000,
                blocks: vec![(0, addr(3)), (2, addr(3))],
                mtime: 7,
            },
            Record::FsResize {
                fs: 0,
                capacity: 2 << 30,
            },
            Record::Extents {
                ino: F,
                size: 9000,
                blocks: vec![(0, addr(4))],
                mtime: 0,
            },
            Record::Truncate {
                ino: F,
                size: 4096,
                mtime: 8,
            },
            Record::PartCreate { ino: 0x501, fs: 0 },
            Record::PartDrop { ino: 0x501 },
            Record::StripeFree { id: 9 },
            Record::SharedPut {
                fs: 0,
                key: 77,
                block: Shared {
                    addr: addr(3).addr,
                    fp: 77,
                },
            },
            Record::SharedPut {
                fs: 0,
                key: 78,
                block: Shared {
                    addr: addr(3).addr,
                    fp: 0,
                },
            },
            Record::SharedDrop { fs: 0, key: 78 },
            Record::OrgCreate(Org {
                id: 1,
                name: "acme".into(),
                key: [7; 32],
            }),
            Record::FsOwner { fs: 0, org: 1 },
            Record::GroupCreate(group::Group {
                id: 2,
                name: "training".into(),
                org: 1,
            }),
            Record::FsGroup { fs: 0, group: 2 },
            Record::GroupCreate(group::Group {
                id: 3,
                name: "gone".into(),
                org: 0,
            }),
            Record::GroupDelete { id: 3 },
            Record::QuotaSet(quota::Quota {
                id: 4,
                fs: 0,
                dir: ROOT,
                path: "/".into(),
                parent: 0,
                hard: 1 << 30,
                soft: 1 << 29,
                grace: 60,
                over_since: 5,
                state: quota::QuotaState::Enforcing,
            }),
            Record::QuotaTag { ino: F, quota: 4 },
            Record::Extents {
                ino: F,
                size: 4096,
                blocks: vec![(5, BlockRef::remote(3, 99))],
                mtime: 0,
            },
        ]
    }

    #[test]
    fn records_round_trip_and_apply() {
        let recs = sample();
        let batch = encode_batch(&recs);
        assert_eq!(decode_batch(&batch).unwrap(), recs);
        let mut io = btree::MemPages::new();
        let mut m = Meta::new(1 << 20);
        let mut released = Vec::new();
        for r in &recs {
            released.extend(m.apply(&mut io, r).unwrap());
        }
        // Overwrite of block 0 released addr(3); truncate released block 2;
        // dropping shared key 78 released its block.
        let shared78 = BlockRef {
            addr: addr(3).addr,
            fp: 0,
        };
        assert_eq!(released, vec![(0, addr(3)), (0, addr(3)), (0, shared78)]);
        let lookup = |m: &mut Meta, io: &mut btree::MemPages, dir: Ino, name: &str| {
            let mut ids = namespace::Ids::none();
            m.namespace(io, 0, &mut ids).lookup(dir, name.as_bytes())
        };
        let check = |m: &mut Meta, io: &mut btree::MemPages| {
            let ino = m.file(io, F).unwrap().unwrap();
            assert_eq!((ino.size, ino.part), (4096, false));
            let a = m.attr(io, F).unwrap().unwrap();
            assert_eq!(
                (a.mtime, a.ctime, a.nlink),
                (8, 8, 1),
                "the truncate's time"
            );
            assert_eq!(a.blocks, 2, "blocks 0 and 5 stored (2 was cut)");
            assert_eq!(m.attr(io, 0x200).unwrap().unwrap().perm, 0o700);
            assert_eq!(m.file(io, 0x501).unwrap(), None, "the part was dropped");
            let blocks = m.blocks_in(io, F, 0, u64::MAX).unwrap();
            assert_eq!(blocks.len(), 2);
            assert_eq!(m.block(io, F, 5).unwrap().unwrap().owner(), Some(3));
            assert_eq!(m.block(io, F, 0).unwrap().unwrap(), addr(4));
            assert_eq!(lookup(m, io, ROOT, "a.bin").unwrap().ino, F);
            assert_eq!(lookup(m, io, ROOT, "s2").unwrap().ino, 0x300);
            assert!(lookup(m, io, ROOT, "gone").is_err());
            assert_eq!(m.shared_len(), 1);
            // Stripe 3: shared block 77; stripe 4: block 0 (block 5 is
            // another shard's).
            let refs = m.stripe_refs(io).unwrap();
            assert_eq!(refs, std::collections::HashMap::from([(3, 1), (4, 1)]));
            assert_eq!(m.stripe(io, 3).unwrap().unwrap().sums.len(), 6 * 32);
            assert_eq!(m.fss[&0].capacity, 2 << 30);
            assert_eq!(m.fs_used(0), 4096);
            assert_eq!(m.quota_used(4), 4096, "the file's bytes follow its tag");
            assert_eq!(m.attr(io, F).unwrap().unwrap().quota, 4);
            assert_eq!(m.quotas[&4].grace, 60);
            assert_eq!(m.fs_group.get(&0), Some(&2));
            assert!(!m.groups.contains_key(&3));
            assert_eq!((m.next_fs, m.next_ino, m.next_stripe), (1, 0x400, 4));
        };
        check(&mut m, &mut io);
        // Committed and reopened from the root record alone.
        for p in m.commit(&mut io).unwrap() {
            io.free(p.addr);
        }
        let root = m.encode_root();
        let mut back = Meta::decode_root(&mut Reader::new(&root), 1 << 20).unwrap();
        check(&mut back, &mut io);
        assert_eq!(back.encode_root(), root);
        let gone = back
            .apply(
                &mut io,
                &ns(NsOp::Unlink {
                    dir: ROOT,
                    name: "a.bin".into(),
                }),
            )
            .unwrap();
        assert_eq!(
            gone.len(),
            2,
            "the last name released both blocks (local and remote)"
        );
        assert_eq!(back.file(&mut io, F).unwrap(), None);
        assert!(lookup(&mut back, &mut io, ROOT, "a.bin").is_err());
        assert_eq!(back.fs_used(0), 0);
        back.apply(&mut io, &Record::SharedDrop { fs: 0, key: 77 })
            .unwrap();
        assert!(
            back.stripe_refs(&mut io).unwrap().is_empty(),
            "nothing refers to a stripe any more"
        );
        back.apply(&mut io, &Record::StripeFree { id: 3 }).unwrap();
        for (dir, name) in [(ROOT, "s2"), (ROOT, "d")] {
            let op = if name == "d" {
                NsOp::Rmdir {
                    dir,
                    name: name.into(),
                }
            } else {
                NsOp::Unlink {
                    dir,
                    name: name.into(),
                }
            };
            back.apply(&mut io, &ns(op)).unwrap();
        }
        let names = {
            let mut ids = namespace::Ids::none();
            back.namespace(&mut io, 0, &mut ids).fsck().unwrap()
        };
        assert!(names.is_empty(), "{names:?}");
        // The root alone is left (its inode and nothing else).
        assert_eq!(back.entries(), 1);
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let batch = encode_batch(&sample());
        for cut in 0..batch.len() {
            assert!(decode_batch(&batch[..cut]).is_err(), "cut {cut}");
        }
        let mut x = 1u64;
        for _ in 0..2000 {
            let mut bad = batch.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = x as usize % bad.len();
                bad[i] = (x >> 32) as u8;
            }
            let _ = decode_batch(&bad);
            let _ = Meta::decode_root(&mut Reader::new(&bad), 0);
        }
    }
}
