//! Namespace changes as journal records: every directory operation of a
//! file system is one [`NsRecord`] that carries all it needs (the caller's
//! credentials, the time, the new inode's number), so applying it live and
//! replaying it after a crash make the same tree.
//!
//! [`Meta::apply_ns`](super::Meta::apply_ns) runs the operation on the
//! shard's tree through [`Namespace`](super::namespace::Namespace); a
//! refusal (EEXIST, ENOTEMPTY...) leaves the tree as it was and nothing is
//! journaled.

use crate::codec::{DecodeError, Reader, Writer};

use super::namespace::{
    Attr, Ctx, Kind, Nanos, RenameFlags, SetAttr, XattrMode, NAME_MAX, PATH_MAX,
};
use super::{FsId, Ino};

/// Longest extended attribute value a record carries.
const XATTR_VALUE_MAX: usize = super::btree::MAX_VALUE;

/// One namespace change: who made it, when, in which file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRecord {
    /// The file system.
    pub fs: FsId,
    /// The caller's user id (owner of what it creates).
    pub uid: u32,
    /// The caller's group id.
    pub gid: u32,
    /// When, in nanoseconds since the epoch.
    pub now: Nanos,
    /// What.
    pub op: NsOp,
}

impl NsRecord {
    /// The caller and time as the namespace takes them.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            uid: self.uid,
            gid: self.gid,
            now: self.now,
        }
    }
}

/// A namespace operation with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsOp {
    /// The file system's root directory.
    Root {
        /// Its inode number.
        ino: Ino,
        /// Permission bits.
        perm: u32,
    },
    /// A new inode named `name` in `dir`: a file, directory, symlink (with
    /// `target`) or special file, by `mode`'s kind bits.
    Make {
        /// Parent directory.
        dir: Ino,
        /// Name.
        name: Vec<u8>,
        /// The new inode's number.
        ino: Ino,
        /// Its generation.
        generation: u64,
        /// Kind and permission bits.
        mode: u32,
        /// Device number of a device node.
        rdev: u32,
        /// A symlink's target (empty otherwise).
        target: Vec<u8>,
    },
    /// Removes a non-directory entry.
    Unlink {
        /// Parent directory.
        dir: Ino,
        /// Name.
        name: Vec<u8>,
    },
    /// Removes an empty directory.
    Rmdir {
        /// Parent directory.
        dir: Ino,
        /// Name.
        name: Vec<u8>,
    },
    /// Renames an entry.
    Rename {
        /// Source directory.
        from_dir: Ino,
        /// Source name.
        from: Vec<u8>,
        /// Target directory.
        to_dir: Ino,
        /// Target name.
        to: Vec<u8>,
        /// No-replace and exchange.
        flags: RenameFlags,
    },
    /// A new name for an inode.
    Link {
        /// The inode.
        ino: Ino,
        /// Directory of the new name.
        dir: Ino,
        /// The new name.
        name: Vec<u8>,
    },
    /// Changes attributes other than the size (a size change is the
    /// store's `Truncate`, which drops the data past it).
    SetAttr {
        /// The inode.
        ino: Ino,
        /// What changes.
        set: SetAttr,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// The inode.
        ino: Ino,
        /// Its name.
        name: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
        /// Create, replace or either.
        mode: XattrMode,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// The inode.
        ino: Ino,
        /// Its name.
        name: Vec<u8>,
    },
    /// A step of an operation spanning shards, on the shard of `dir`:
    /// entry `name` names `to` (or is gone) and `dir` has `dir_nlink`
    /// links. Absolute, so applying it again changes nothing.
    SetEntry {
        /// The directory.
        dir: Ino,
        /// The entry's name.
        name: Vec<u8>,
        /// The inode it names and its kind; `None` removes it.
        to: Option<(Ino, Kind)>,
        /// The directory's link count after.
        dir_nlink: u32,
    },
    /// A step of an operation spanning shards, on the shard of `ino`: it
    /// has `nlink` links (0 removes it, with a regular file's data) and, a
    /// directory, parent `parent`. Absolute; nothing if it is gone.
    SetLinks {
        /// The inode.
        ino: Ino,
        /// Its link count after.
        nlink: u32,
        /// A directory's new parent.
        parent: Option<Ino>,
    },
    /// A step of an operation spanning shards: a new inode (a directory
    /// whose entry is on another shard), unless it exists.
    PutInode {
        /// The inode.
        attr: Attr,
    },
    /// An operation spanning shards as the steps each shard applies, kept
    /// in the coordinator's tree until [`NsOp::IntentDone`]: recovery
    /// applies the steps of every intent it finds again.
    Intent {
        /// Its number on the coordinating shard.
        id: u64,
        /// The steps: a shard and a record of the three kinds above.
        steps: Vec<(u32, NsRecord)>,
    },
    /// Every step of intent `id` is durable.
    IntentDone {
        /// The intent.
        id: u64,
    },
}

impl NsOp {
    /// Whether this is a step of an operation spanning shards (the only
    /// records an intent holds).
    pub fn is_step(&self) -> bool {
        matches!(
            self,
            NsOp::SetEntry { .. } | NsOp::SetLinks { .. } | NsOp::PutInode { .. }
        )
    }
}

fn opt_u32(w: &mut Writer, v: Option<u32>) {
    match v {
        Some(x) => w.u8(1).u32(x),
        None => w.u8(0),
    };
}

fn opt_u64(w: &mut Writer, v: Option<u64>) {
    match v {
        Some(x) => w.u8(1).u64(x),
        None => w.u8(0),
    };
}

fn read_opt_u32(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u32>, DecodeError> {
    Ok(match r.u8(what)? {
        0 => None,
        1 => Some(r.u32(what)?),
        _ => return Err(DecodeError { what }),
    })
}

fn read_opt_u64(r: &mut Reader<'_>, what: &'static str) -> Result<Option<u64>, DecodeError> {
    Ok(match r.u8(what)? {
        0 => None,
        1 => Some(r.u64(what)?),
        _ => return Err(DecodeError { what }),
    })
}

fn name(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    Ok(r.bytes(NAME_MAX, what)?.to_vec())
}

/// Appends a namespace record's encoding (without the record kind).
pub(super) fn encode(w: &mut Writer, rec: &NsRecord) {
    w.u32(rec.fs).u32(rec.uid).u32(rec.gid).u64(rec.now as u64);
    match &rec.op {
        NsOp::Root { ino, perm } => {
            w.u8(1).u64(*ino).u32(*perm);
        }
        NsOp::Make {
            dir,
            name,
            ino,
            generation,
            mode,
            rdev,
            target,
        } => {
            w.u8(2).u64(*dir).bytes(name).u64(*ino).u64(*generation);
            w.u32(*mode).u32(*rdev).bytes(target);
        }
        NsOp::Unlink { dir, name } => {
            w.u8(3).u64(*dir).bytes(name);
        }
        NsOp::Rmdir { dir, name } => {
            w.u8(4).u64(*dir).bytes(name);
        }
        NsOp::Rename {
            from_dir,
            from,
            to_dir,
            to,
            flags,
        } => {
            w.u8(5).u64(*from_dir).bytes(from).u64(*to_dir).bytes(to);
            w.u8(u8::from(flags.noreplace) | u8::from(flags.exchange) << 1);
        }
        NsOp::Link { ino, dir, name } => {
            w.u8(6).u64(*ino).u64(*dir).bytes(name);
        }
        NsOp::SetAttr { ino, set } => {
            w.u8(7).u64(*ino);
            opt_u32(w, set.perm);
            opt_u32(w, set.uid);
            opt_u32(w, set.gid);
            opt_u64(w, set.size);
            opt_u64(w, set.atime.map(|t| t as u64));
            opt_u64(w, set.mtime.map(|t| t as u64));
        }
        NsOp::SetXattr {
            ino,
            name,
            value,
            mode,
        } => {
            let m = match mode {
                XattrMode::Any => 0,
                XattrMode::Create => 1,
                XattrMode::Replace => 2,
            };
            w.u8(8).u64(*ino).bytes(name).bytes(value).u8(m);
        }
        NsOp::RemoveXattr { ino, name } => {
            w.u8(9).u64(*ino).bytes(name);
        }
        NsOp::SetEntry {
            dir,
            name,
            to,
            dir_nlink,
        } => {
            w.u8(10).u64(*dir).bytes(name);
            match to {
                Some((ino, kind)) => w.u8(*kind as u8).u64(*ino),
                None => w.u8(0),
            };
            w.u32(*dir_nlink);
        }
        NsOp::SetLinks { ino, nlink, parent } => {
            w.u8(11).u64(*ino).u32(*nlink);
            opt_u64(w, *parent);
        }
        NsOp::PutInode { attr } => {
            w.u8(12).bytes(&attr.encode());
        }
        NsOp::Intent { id, steps } => {
            w.u8(13).u64(*id).u32(steps.len() as u32);
            for (shard, rec) in steps {
                debug_assert!(rec.op.is_step(), "an intent holds steps only");
                w.u32(*shard);
                encode(w, rec);
            }
        }
        NsOp::IntentDone { id } => {
            w.u8(14).u64(*id);
        }
    }
}

/// Most steps one intent holds.
const MAX_STEPS: u32 = 16;

/// Reads a namespace record (after its record kind).
pub(super) fn decode(r: &mut Reader<'_>) -> Result<NsRecord, DecodeError> {
    let fs = r.u32("fs id")?;
    let uid = r.u32("uid")?;
    let gid = r.u32("gid")?;
    let now = r.u64("time")? as i64;
    let op = match r.u8("namespace op")? {
        1 => NsOp::Root {
            ino: r.u64("ino")?,
            perm: r.u32("perm")?,
        },
        2 => NsOp::Make {
            dir: r.u64("dir")?,
            name: name(r, "name")?,
            ino: r.u64("ino")?,
            generation: r.u64("generation")?,
            mode: r.u32("mode")?,
            rdev: r.u32("rdev")?,
            target: r.bytes(PATH_MAX, "symlink target")?.to_vec(),
        },
        3 => NsOp::Unlink {
            dir: r.u64("dir")?,
            name: name(r, "name")?,
        },
        4 => NsOp::Rmdir {
            dir: r.u64("dir")?,
            name: name(r, "name")?,
        },
        5 => {
            let from_dir = r.u64("dir")?;
            let from = name(r, "name")?;
            let to_dir = r.u64("dir")?;
            let to = name(r, "name")?;
            let f = r.u8("rename flags")?;
            if f > 3 {
                return Err(DecodeError {
                    what: "rename flags",
                });
            }
            NsOp::Rename {
                from_dir,
                from,
                to_dir,
                to,
                flags: RenameFlags {
                    noreplace: f & 1 != 0,
                    exchange: f & 2 != 0,
                },
            }
        }
        6 => NsOp::Link {
            ino: r.u64("ino")?,
            dir: r.u64("dir")?,
            name: name(r, "name")?,
        },
        7 => NsOp::SetAttr {
            ino: r.u64("ino")?,
            set: SetAttr {
                perm: read_opt_u32(r, "perm")?,
                uid: read_opt_u32(r, "uid")?,
                gid: read_opt_u32(r, "gid")?,
                size: read_opt_u64(r, "size")?,
                atime: read_opt_u64(r, "atime")?.map(|t| t as i64),
                mtime: read_opt_u64(r, "mtime")?.map(|t| t as i64),
            },
        },
        8 => NsOp::SetXattr {
            ino: r.u64("ino")?,
            name: name(r, "xattr name")?,
            value: r.bytes(XATTR_VALUE_MAX, "xattr value")?.to_vec(),
            mode: match r.u8("xattr mode")? {
                0 => XattrMode::Any,
                1 => XattrMode::Create,
                2 => XattrMode::Replace,
                _ => return Err(DecodeError { what: "xattr mode" }),
            },
        },
        9 => NsOp::RemoveXattr {
            ino: r.u64("ino")?,
            name: name(r, "xattr name")?,
        },
        10 => {
            let dir = r.u64("dir")?;
            let name = name(r, "name")?;
            let to = match r.u8("entry kind")? {
                0 => None,
                k => Some((
                    r.u64("ino")?,
                    Kind::from_u8(k).ok_or(DecodeError { what: "entry kind" })?,
                )),
            };
            NsOp::SetEntry {
                dir,
                name,
                to,
                dir_nlink: r.u32("link count")?,
            }
        }
        11 => NsOp::SetLinks {
            ino: r.u64("ino")?,
            nlink: r.u32("link count")?,
            parent: read_opt_u64(r, "parent")?,
        },
        12 => NsOp::PutInode {
            attr: Attr::decode(r.bytes(256, "inode")?).ok_or(DecodeError { what: "inode" })?,
        },
        13 => {
            let id = r.u64("intent")?;
            let n = r.u32("intent steps")?;
            if n > MAX_STEPS {
                return Err(DecodeError {
                    what: "intent steps",
                });
            }
            let mut steps = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let shard = r.u32("shard")?;
                let rec = decode(r)?;
                if !rec.op.is_step() {
                    return Err(DecodeError {
                        what: "intent step",
                    });
                }
                steps.push((shard, rec));
            }
            NsOp::Intent { id, steps }
        }
        14 => NsOp::IntentDone {
            id: r.u64("intent")?,
        },
        _ => {
            return Err(DecodeError {
                what: "namespace op",
            })
        }
    };
    Ok(NsRecord {
        fs,
        uid,
        gid,
        now,
        op,
    })
}
