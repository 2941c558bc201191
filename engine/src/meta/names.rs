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

use super::namespace::{Ctx, Nanos, RenameFlags, SetAttr, XattrMode, NAME_MAX, PATH_MAX};
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
    }
}

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
