//! Snapshots: a file system's state frozen at one moment, kept by the
//! copy-on-write tree at no cost until the live file system diverges.
//!
//! A snapshot is taken at a checkpoint on every shard at once (the engine
//! holds namespace changes off meanwhile): each shard records the root of
//! its tree as it stood, and from then on nothing that root reaches is
//! freed. Two dead lists keep that promise exactly (ZFS-style):
//!
//! - **Pages.** A page the live tree retires that was born at or before
//!   the shard's newest snapshot is still named by it: it goes to the dead
//!   list of that snapshot (`D` epoch addr) instead of back to the page
//!   space. Deleting a snapshot frees its dead pages born after the
//!   snapshot before it, and hands the others to that one.
//! - **Blocks.** A block reference the live file system drops (overwrite,
//!   truncate, unlink) that its newest snapshot holds unchanged stays
//!   counted and goes to that snapshot's dead list (`d` fs id ino block).
//!   A snapshot's *reclaimable* blocks are those of its dead list that the
//!   snapshot before it does not hold: exactly what deleting it alone
//!   frees.
//!
//! A snapshot is reached by inode numbers tagged with its id
//! ([`view_ino`]): the same files as the live ones, read through the
//! snapshot's roots, never changed (`EROFS`).

use crate::codec::{DecodeError, Reader, Writer};

use super::btree::PagePtr;
use super::{FsId, Ino, MAX_NAME};

/// A snapshot id, unique in the engine (1 ..= [`MAX_SNAPSHOTS`]).
pub type SnapId = u32;

/// Most snapshots an engine holds at once (ids are reused once deleted).
pub const MAX_SNAPSHOTS: u32 = (1 << 14) - 1;

const VIEW: u64 = 1 << 63;
const SHIFT: u32 = 48;
const MASK: u64 = (MAX_SNAPSHOTS as u64) << SHIFT;

/// Inode `ino` as seen in snapshot `id`.
pub fn view_ino(id: SnapId, ino: Ino) -> Ino {
    debug_assert!((1..=MAX_SNAPSHOTS).contains(&id));
    debug_assert_eq!(ino & (VIEW | MASK), 0, "inode {ino:#x} has snapshot bits");
    VIEW | (u64::from(id) << SHIFT) | ino
}

/// The snapshot an inode number is seen in (none: the live file system),
/// and the live inode number.
pub fn split_ino(ino: Ino) -> (Option<SnapId>, Ino) {
    if ino & VIEW == 0 {
        return (None, ino);
    }
    (
        Some(((ino & MASK) >> SHIFT) as SnapId),
        ino & !(VIEW | MASK),
    )
}

/// Whether an inode number is one of a snapshot.
pub fn is_view(ino: Ino) -> bool {
    ino & VIEW != 0
}

/// Whether an inode number leaves room for snapshot tags (every number a
/// shard hands out must).
pub fn taggable(ino: Ino) -> bool {
    ino & (VIEW | MASK) == 0
}

/// One snapshot as a shard keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    /// Id (engine-wide).
    pub id: SnapId,
    /// The file system it is of.
    pub fs: FsId,
    /// Name (unique in its file system).
    pub name: String,
    /// When it was taken (ns since the epoch).
    pub created: i64,
    /// The tree's newest page birth when it was taken: pages born up to it
    /// may be named by it.
    pub epoch: u64,
    /// The shard's tree root it keeps.
    pub root: Option<PagePtr>,
    /// Entries of that tree.
    pub entries: u64,
    /// The shard's next stripe id when it was taken: stripes below it may
    /// hold its blocks in place (garbage collection leaves them).
    pub mark: u64,
    /// Logical bytes of the file system's files on this shard then.
    pub bytes: u64,
    /// Blocks only it holds: what deleting it frees (see the module).
    pub reclaim: u64,
}

impl Snap {
    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.id).u32(self.fs).str(&self.name);
        w.u64(self.created as u64).u64(self.epoch);
        match self.root {
            Some(p) => w.u8(1).u64(p.addr).u64(p.birth),
            None => w.u8(0),
        };
        w.u64(self.entries)
            .u64(self.mark)
            .u64(self.bytes)
            .u64(self.reclaim);
    }

    /// Reads one.
    pub fn decode(r: &mut Reader<'_>) -> Result<Snap, DecodeError> {
        let id = r.u32("snapshot id")?;
        if !(1..=MAX_SNAPSHOTS).contains(&id) {
            return Err(DecodeError {
                what: "snapshot id",
            });
        }
        Ok(Snap {
            id,
            fs: r.u32("snapshot fs")?,
            name: r.str(MAX_NAME, "snapshot name")?,
            created: r.u64("snapshot time")? as i64,
            epoch: r.u64("snapshot epoch")?,
            root: match r.u8("snapshot root flag")? {
                0 => None,
                1 => Some(PagePtr {
                    addr: r.u64("snapshot root")?,
                    birth: r.u64("snapshot root birth")?,
                }),
                _ => {
                    return Err(DecodeError {
                        what: "snapshot root flag",
                    })
                }
            },
            entries: r.u64("snapshot entries")?,
            mark: r.u64("snapshot mark")?,
            bytes: r.u64("snapshot bytes")?,
            reclaim: r.u64("snapshot reclaim")?,
        })
    }
}

/// A writable snapshot: a file system of its own (`FS@NAME`) whose files
/// began as a read-only snapshot's, sharing their blocks until either side
/// changes them. Kept by shard 0; `done` once every shard holds its part
/// (opening the engine finishes a clone a crash cut short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneInfo {
    /// The clone's file system.
    pub fs: FsId,
    /// The file system it was taken of.
    pub origin: FsId,
    /// Its name among the origin's snapshots.
    pub name: String,
    /// When it was taken (ns since the epoch).
    pub created: i64,
    /// The read-only snapshot it is copied from while being made.
    pub snap: SnapId,
    /// Per shard, what is added to the snapshot's inode numbers to name
    /// the clone's (a multiple of 256, so the shard byte stays).
    pub deltas: Vec<u64>,
    /// Whether every shard holds its part.
    pub done: bool,
}

impl CloneInfo {
    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.fs).u32(self.origin).str(&self.name);
        w.u64(self.created as u64)
            .u32(self.snap)
            .u32(self.deltas.len() as u32);
        for d in &self.deltas {
            w.u64(*d);
        }
        w.u8(u8::from(self.done));
    }

    /// Reads one.
    pub fn decode(r: &mut Reader<'_>) -> Result<CloneInfo, DecodeError> {
        let fs = r.u32("clone fs")?;
        let origin = r.u32("clone origin")?;
        let name = r.str(MAX_NAME, "clone name")?;
        let created = r.u64("clone time")? as i64;
        let snap = r.u32("clone snapshot")?;
        let n = r.count(8, "clone shards")?;
        let deltas = (0..n)
            .map(|_| r.u64("clone delta"))
            .collect::<Result<Vec<_>, _>>()?;
        if deltas.iter().any(|d| d % 256 != 0) {
            return Err(DecodeError {
                what: "clone delta",
            });
        }
        Ok(CloneInfo {
            fs,
            origin,
            name,
            created,
            snap,
            deltas,
            done: r.u8("clone done")? != 0,
        })
    }

    /// The clone's number for inode `ino` of the origin (in an engine of
    /// `deltas.len()` shards).
    pub fn map(&self, ino: Ino) -> Ino {
        let shards = self.deltas.len().max(1) as u32;
        if ino == crate::meta::root_ino(self.origin, shards) {
            return crate::meta::root_ino(self.fs, shards);
        }
        let shard = crate::meta::namespace::shard_of_ino(ino, shards) as usize;
        ino + self.deltas.get(shard).copied().unwrap_or(0)
    }
}

/// Key of a page on the dead list of the snapshot of epoch `epoch`.
pub(super) fn dead_page_key(epoch: u64, addr: u64) -> [u8; 17] {
    let mut k = [b'D'; 17];
    k[1..9].copy_from_slice(&epoch.to_be_bytes());
    k[9..].copy_from_slice(&addr.to_be_bytes());
    k
}

/// Key of a block reference on the dead list of snapshot `id` of `fs`.
pub(super) fn dead_block_key(fs: FsId, id: SnapId, ino: Ino, idx: u64) -> [u8; 25] {
    let mut k = [b'd'; 25];
    k[1..5].copy_from_slice(&fs.to_be_bytes());
    k[5..9].copy_from_slice(&id.to_be_bytes());
    k[9..17].copy_from_slice(&ino.to_be_bytes());
    k[17..].copy_from_slice(&idx.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_inodes_round_trip_and_keep_the_shard_byte() {
        for ino in [0x105u64, (1 << 62) | (3 << 8) | 1, (1 << 47) - 1] {
            for id in [1, 77, MAX_SNAPSHOTS] {
                let v = view_ino(id, ino);
                assert!(is_view(v));
                assert_eq!(v & 0xff, ino & 0xff);
                assert_eq!(split_ino(v), (Some(id), ino));
            }
            assert_eq!(split_ino(ino), (None, ino));
        }
    }
}
