//! The namespace's invariants, checked over one shard's tree or the trees
//! of every shard together (an entry may name an inode another shard
//! holds): every entry names a live inode of its kind, both indexes of
//! every directory agree, link counts match the entries, every directory's
//! parent holds it, every directory reaches a root, and no inode is an
//! orphan.

use std::collections::HashMap;

use super::*;

/// What one tree holds of namespaces, as the check needs it.
#[derive(Debug, Default)]
pub struct Facts {
    /// Inodes: number, kind, links, parent, whether a root.
    inodes: Vec<(Ino, Kind, u32, Ino, bool)>,
    /// Entries: directory, name, inode, kind.
    names: Vec<(Ino, Vec<u8>, Ino, Kind)>,
    /// What is wrong within the tree alone.
    bad: Vec<String>,
}

impl Namespace<'_> {
    /// What this tree holds (see [`check`]).
    pub fn facts(&mut self) -> Result<Facts> {
        let mut f = Facts::default();
        let mut names: Vec<(Ino, u64, Vec<u8>)> = Vec::new();
        let mut seqs: Vec<(Ino, u64, Vec<u8>)> = Vec::new();
        let mut failed = false;
        self.pager
            .scan(&mut *self.io, &*self.tree, &[], &mut |k, v| {
                let dir = || u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
                match k[0] {
                    b'I' => match Attr::decode(v) {
                        Some(a) => f
                            .inodes
                            .push((a.ino, a.kind, a.nlink, a.parent, a.is_root())),
                        None => failed = true,
                    },
                    b'N' => match Entry::decode(v) {
                        Some(e) => {
                            names.push((dir(), e.seq, k[9..].to_vec()));
                            f.names.push((dir(), k[9..].to_vec(), e.ino, e.kind));
                        }
                        None => failed = true,
                    },
                    b'E' => seqs.push((
                        dir(),
                        u64::from_be_bytes(k[9..17].try_into().expect("8 bytes")),
                        v[17..].to_vec(),
                    )),
                    _ => {}
                }
                true
            })?;
        if failed {
            f.bad.push("an undecodable inode or entry".to_string());
        }
        names.sort();
        seqs.sort();
        if names != seqs {
            f.bad.push("the name and sequence indexes disagree".into());
        }
        Ok(f)
    }

    /// Checks this tree alone (one shard holds every inode); returns what
    /// is wrong.
    pub fn fsck(&mut self) -> Result<Vec<String>> {
        Ok(check(&[self.facts()?]))
    }
}

/// Checks the namespaces the trees of `all` hold together; returns what is
/// wrong.
pub fn check(all: &[Facts]) -> Vec<String> {
    let mut bad: Vec<String> = all.iter().flat_map(|f| f.bad.iter().cloned()).collect();
    let inodes: HashMap<Ino, (Kind, u32, Ino, bool)> = all
        .iter()
        .flat_map(|f| f.inodes.iter())
        .map(|&(ino, kind, nlink, parent, root)| (ino, (kind, nlink, parent, root)))
        .collect();
    let mut links: HashMap<Ino, u32> = HashMap::new();
    for (dir, name, ino, kind) in all.iter().flat_map(|f| f.names.iter()) {
        let name = String::from_utf8_lossy(name);
        match inodes.get(ino) {
            None => bad.push(format!("entry {dir}/{name} names missing inode {ino}")),
            Some(&(k, ..)) if k != *kind => {
                bad.push(format!("entry {dir}/{name}: kind differs from inode's"))
            }
            Some(&(Kind::Dir, _, parent, _)) if parent != *dir => bad.push(format!(
                "directory {ino} is in {dir} but its parent is {parent}"
            )),
            Some(_) => {}
        }
        *links.entry(*ino).or_default() += 1;
        if *kind == Kind::Dir {
            *links.entry(*dir).or_default() += 1;
        }
    }
    for (&ino, &(kind, nlink, _, root)) in &inodes {
        let want =
            links.get(&ino).copied().unwrap_or(0) + u32::from(kind == Kind::Dir) + u32::from(root);
        if nlink != want {
            bad.push(format!("inode {ino} has nlink {nlink}, {want} links"));
        }
        if kind == Kind::Dir {
            let mut at = ino;
            let mut steps = 0;
            while steps <= inodes.len() {
                match inodes.get(&at) {
                    Some(&(_, _, parent, false)) => at = parent,
                    _ => break,
                }
                steps += 1;
            }
            if steps > inodes.len() {
                bad.push(format!("directory {ino} does not reach the root (a loop)"));
            }
        }
        if !root && !links.contains_key(&ino) {
            bad.push(format!("inode {ino} is an orphan"));
        }
    }
    bad
}
