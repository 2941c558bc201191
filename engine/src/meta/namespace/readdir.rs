//! Listing a directory in pages: `readdir` resumes after a cookie (the
//! sequence number of the last entry returned), so a directory of any size
//! streams without re-reading what was listed, and an entry present for
//! the whole listing is returned exactly once. `.` and `..` are the
//! caller's to add (their inodes are the directory and its `parent`).

use super::*;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode.
    pub ino: Ino,
    /// Kind.
    pub kind: Kind,
    /// Pass it back to continue after this entry.
    pub cookie: u64,
}

impl Namespace<'_> {
    /// Up to `max` entries of `dir` after `cookie` (0: from the start).
    pub fn readdir(&mut self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>> {
        self.dir(dir)?;
        let from = seq_key(dir, cookie.saturating_add(1));
        let mut out = Vec::new();
        let mut bad = false;
        self.pager
            .scan(&mut *self.io, &*self.tree, &from, &mut |k, v| {
                if k[..9] != from[..9] || out.len() >= max {
                    return false;
                }
                match Entry::decode(&v[..17.min(v.len())]) {
                    Some(e) => out.push(DirEntry {
                        name: v[17..].to_vec(),
                        ino: e.ino,
                        kind: e.kind,
                        cookie: e.seq,
                    }),
                    None => bad = true,
                }
                !bad
            })?;
        if bad {
            return Err(NsError::Tree(TreeError::Corrupt {
                page: 0,
                what: "directory entry",
            }));
        }
        Ok(out)
    }
}
