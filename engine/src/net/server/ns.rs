//! Runs namespace calls addressed by inode ([`crate::net::ns`]) for a
//! session: every inode a call names must be a file of the session's
//! organization (checked once per inode and remembered, like an opened
//! file), and what a call returns or creates becomes the session's to name.
//!
//! The caller's uid and gid own what it creates; permission checks are the
//! kernel client's (`default_permissions`), as with NFS's AUTH_SYS: the
//! session's key vouches for the organization, not for a user.

use super::*;
use crate::meta::namespace::{Ctx as Caller, SetAttr};
use crate::net::ns::{self, NsAttr, NsCall, NsEntry, NsRequest, NsStatFs};
use crate::store::Stat;

/// A store attribute record as namespace calls return it.
fn attr_of(st: &Stat) -> NsAttr {
    NsAttr {
        ino: st.ino,
        generation: st.generation,
        size: st.size,
        blocks: st.blocks,
        mode: st.mode,
        nlink: st.nlink,
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev,
        atime: st.atime,
        mtime: st.mtime,
        ctime: st.ctime,
        parent: st.parent,
    }
}

/// Remembers `ino` as one the session may name (it came from a call the
/// session was allowed).
fn grant(ctx: &Ctx, ino: Ino) {
    if let Ok(mut f) = ctx.files.lock() {
        f.insert(ino);
    }
}

/// Runs one namespace call on file system `fs` (already checked as the
/// session's organization's).
pub(super) fn run(s: &Shared, ctx: &Ctx, fs: FsId, req: NsRequest) -> Outcome {
    let op = req.call.name();
    for ino in req.call.inodes() {
        if let Err(code) = allowed(s, ctx, ino) {
            return ("denied", 0, code, Vec::new());
        }
    }
    let who = Caller {
        uid: req.uid,
        gid: req.gid,
        now: crate::store::now_nanos(),
    };
    match call(&s.engine, ctx, fs, who, req.call) {
        Ok(body) => (op, 0, 0, body),
        Err(e) => err(op, &e),
    }
}

fn call(
    e: &Engine,
    ctx: &Ctx,
    fs: FsId,
    who: Caller,
    call: NsCall,
) -> crate::engine::Result<Vec<u8>> {
    let attr_body = |st: Stat| {
        grant(ctx, st.ino);
        attr_of(&st).body()
    };
    Ok(match call {
        NsCall::Root => attr_body(e.stat(e.root_of(fs))?),
        NsCall::Lookup { dir, name } => match &name[..] {
            b"." => attr_body(e.stat(dir)?),
            b".." => {
                let d = e.stat(dir)?;
                attr_body(e.stat(if d.parent == 0 { dir } else { d.parent })?)
            }
            _ => attr_body(e.lookup_at(dir, &name)?),
        },
        NsCall::GetAttr { ino } => attr_body(e.stat(ino)?),
        NsCall::SetAttr { ino, set } => {
            let set = SetAttr {
                perm: set.perm,
                uid: set.uid,
                gid: set.gid,
                size: set.size,
                atime: set.atime,
                mtime: set.mtime,
            };
            attr_body(e.setattr(ino, set, who)?)
        }
        NsCall::Make {
            dir,
            name,
            mode,
            rdev,
            target,
        } => attr_body(e.make(dir, &name, mode, rdev, &target, who)?),
        NsCall::Unlink { dir, name } => {
            e.unlink_at(dir, &name, who)?;
            Vec::new()
        }
        NsCall::Rmdir { dir, name } => {
            e.rmdir_at(dir, &name, who)?;
            Vec::new()
        }
        NsCall::Rename {
            from_dir,
            from,
            to_dir,
            to,
            flags,
        } => {
            e.rename_at(from_dir, &from, to_dir, &to, rename_flags(flags), who)?;
            Vec::new()
        }
        NsCall::Link { ino, dir, name } => attr_body(e.link_at(ino, dir, &name, who)?),
        NsCall::Readlink { ino } => e.readlink(ino)?,
        NsCall::ReadDir {
            dir,
            cookie,
            max,
            plus,
        } => {
            let page = e.readdir(dir, cookie, max.min(ns::MAX_ENTRIES) as usize)?;
            let mut out = Vec::with_capacity(page.len());
            for d in page {
                grant(ctx, d.ino);
                let attr = if plus {
                    // An entry removed since the page was read is left out.
                    match e.stat(d.ino) {
                        Ok(st) => Some(attr_of(&st)),
                        Err(StoreError::Ns(crate::meta::namespace::NsError::NotFound)) => continue,
                        Err(er) => return Err(er),
                    }
                } else {
                    None
                };
                out.push(NsEntry {
                    name: d.name,
                    ino: d.ino,
                    kind: d.kind.mode_bits(),
                    cookie: d.cookie,
                    attr,
                });
            }
            ns::encode_entries(&out)
        }
        NsCall::SetXattr {
            ino,
            name,
            value,
            mode,
        } => {
            e.setxattr(ino, &name, &value, xattr_mode(mode), who)?;
            Vec::new()
        }
        NsCall::GetXattr { ino, name } => e.getxattr(ino, &name)?,
        NsCall::ListXattr { ino } => names_body(e.listxattr(ino)?),
        NsCall::RemoveXattr { ino, name } => {
            e.removexattr(ino, &name, who)?;
            Vec::new()
        }
        NsCall::StatFs => fs_statfs(e, fs)?.body(),
        NsCall::StatFsAt { ino } => match e.quota_of(ino)? {
            Some((q, used)) => NsStatFs {
                capacity: if q.hard != 0 { q.hard } else { q.soft },
                used,
            }
            .body(),
            None => fs_statfs(e, fs)?.body(),
        },
        NsCall::Fsync { ino } => {
            e.fsync(ino)?;
            Vec::new()
        }
        NsCall::Snapshots => {
            let mut out = Vec::new();
            for snap in e.snapshot_list(Some(fs))? {
                let st = e.stat(snap.root)?;
                grant(ctx, st.ino);
                out.push(NsEntry {
                    name: snap.name.into_bytes(),
                    ino: st.ino,
                    kind: crate::meta::namespace::Kind::Dir.mode_bits(),
                    cookie: u64::from(snap.id),
                    attr: Some(attr_of(&st)),
                });
            }
            // Writable snapshots: their file systems' roots (changes work).
            for c in e.snapshot_clones(fs)? {
                let st = e.stat(e.root_of(c.fs))?;
                grant(ctx, st.ino);
                out.push(NsEntry {
                    name: c.name.into_bytes(),
                    ino: st.ino,
                    kind: crate::meta::namespace::Kind::Dir.mode_bits(),
                    cookie: u64::from(c.fs) << 32,
                    attr: Some(attr_of(&st)),
                });
            }
            ns::encode_entries(&out)
        }
    })
}

/// A file system's capacity and use.
fn fs_statfs(e: &crate::engine::Engine, fs: crate::meta::FsId) -> Result<NsStatFs, StoreError> {
    let (meta, used) = e
        .fs_list()?
        .into_iter()
        .find(|(m, _)| m.id == fs)
        .ok_or(StoreError::Ns(crate::meta::namespace::NsError::NotFound))?;
    Ok(NsStatFs {
        capacity: meta.capacity,
        used,
    })
}
