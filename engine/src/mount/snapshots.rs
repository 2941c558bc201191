//! The mount's `.snapshots` directory: at the root, never listed by
//! `readdir` but reachable by name (`cd .snapshots`), holding one directory
//! per snapshot of the file system — its root, read through the snapshot
//! (every change refused with EROFS). A file restores by copying it out.
//! A writable snapshot's entry is its own file system's root (`FS@NAME`),
//! where changes work.
//!
//! `.snapshots` itself is the mount's: its inode is the snapshot tag with
//! no snapshot (no engine inode has it), its attributes the root's, made
//! read-only; its entries come from the appliance on each listing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo, Request};

use super::fs::FlintFs;
use crate::meta::snap::{is_view, split_ino};
use crate::net::ns::{self, NsAttr, NsCall, NsEntry};

/// The name at the root.
pub const SNAPSHOTS: &[u8] = b".snapshots";

/// The inode of `.snapshots` (the snapshot bit with no snapshot id).
pub const SNAPDIR: u64 = 1 << 63;

/// The bit every file system's root inode has ([`crate::meta::root_ino`]).
const ROOT_BIT: u64 = 1 << 62;

impl FlintFs {
    /// The attributes of `.snapshots`: the root's, read-only.
    pub(super) fn snapdir_attr(&self, req: &Request) -> Result<NsAttr, Errno> {
        let root = self.live_attr(req, self.root_ino())?;
        Ok(NsAttr {
            ino: SNAPDIR,
            mode: libc::S_IFDIR | 0o555,
            nlink: 2,
            size: 0,
            blocks: 0,
            parent: root.ino,
            ..root
        })
    }

    /// The snapshots, as directory entries with their roots' attributes.
    pub(super) fn snapshot_entries(&self, req: &Request) -> Result<Vec<NsEntry>, Errno> {
        let body = self.ns_call(req, NsCall::Snapshots)?;
        ns::decode_entries(&body).map_err(|_| Errno::EPROTO)
    }

    /// A lookup the snapshots answer: `.snapshots` at the root, a snapshot
    /// in it, `..` of either. `None`: an ordinary lookup.
    pub(super) fn snapshot_lookup(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
    ) -> Option<Result<NsAttr, Errno>> {
        let name = name.as_bytes();
        if parent == self.root_ino() && name == SNAPSHOTS {
            return Some(self.snapdir_attr(req));
        }
        if parent == SNAPDIR {
            return Some(match name {
                b"." => self.snapdir_attr(req),
                b".." => self.live_attr(req, self.root_ino()),
                _ => self.snapshot_entries(req).and_then(|es| {
                    es.into_iter()
                        .find(|e| e.name == name)
                        .and_then(|e| e.attr)
                        .ok_or(Errno::ENOENT)
                }),
            });
        }
        // `..` of a snapshot's root is `.snapshots`; so is that of a
        // writable snapshot's (another file system's root).
        let other_root = parent & ROOT_BIT != 0 && parent != self.root_ino() && !is_view(parent);
        if name == b".."
            && (is_view(parent) && split_ino(parent).1 == self.root_ino() || other_root)
        {
            return Some(self.snapdir_attr(req));
        }
        None
    }

    /// Refuses to make `.snapshots` at the root, or anything in it.
    pub(super) fn refuse_in_snapshots(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let p = self.eng(parent);
        if p == SNAPDIR || is_view(p) {
            return Err(Errno::EROFS);
        }
        if p == self.root_ino() && name.as_bytes() == SNAPSHOTS {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }
}

impl FlintFs {
    /// The entries of `.snapshots` after directory offset `offset` (`.`
    /// and `..` are 1 and 2; snapshot i is i + 3).
    pub(super) fn snapshot_listing(
        &self,
        req: &Request,
        offset: u64,
    ) -> Result<Vec<(u64, NsEntry)>, Errno> {
        Ok(self
            .snapshot_entries(req)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 3, e))
            .filter(|(off, _)| *off > offset)
            .collect())
    }
}
