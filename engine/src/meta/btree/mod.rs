//! Copy-on-write B+trees of pages on the devices: the persistent structure
//! the engine's metadata lives in.
//!
//! A [`Tree`] maps byte-string keys (ordered as bytes, so keys are built
//! from big-endian fields) to byte-string values. Its nodes are 4 KiB
//! pages ([`page`]) written through a [`PageIo`] — on the engine, pages
//! in chunk slots of the shard's own devices, through the same queue pairs
//! as everything else. A [`Pager`] serves several trees of one shard: it
//! holds the nodes changed since the last commit (dirty, in memory), a
//! bounded cache of clean nodes, and the generation (birth epoch) new
//! pages are written with.
//!
//! Changing a tree never writes over a page: the path from the root to the
//! changed leaf is copied into memory (top-down copy-on-write), and
//! [`Pager::commit`] writes the changed nodes to fresh pages, children
//! before parents, ending with a new root. The superseded pages are
//! *retired*: the caller frees them once the new root is durable (until
//! then the old root is what a crash recovers to, and it still needs
//! them). A commit therefore costs the pages that changed, not the size
//! of the tree; opening a tree costs reading its root pointer.
//!
//! Every page carries its own address and birth, and each parent records
//! its children's births, so a misdirected, lost or stale page is an error
//! on read, never data. Births also prepare snapshots: a page born after a
//! snapshot belongs to the live tree alone, which is what makes freeing
//! under snapshots exact (ZFS-style dead lists).

mod cache;
pub mod page;
mod tree;

use std::collections::{HashMap, HashSet};
use std::fmt;

pub use page::intact;
pub use page::PagePtr;
pub use tree::{Pager, PagerStats, Tree};

/// Bytes of a page.
pub const PAGE: usize = 4096;
/// Longest key.
pub const MAX_KEY: usize = 256;
/// Longest value.
pub const MAX_VALUE: usize = 1024;

/// A page's address in the page space of its [`PageIo`] (never 0).
pub type PageAddr = u64;

// Any node over a page must split into two that fit: the largest leaf
// entry is less than half a page's room.
const _: () = assert!(2 * (4 + MAX_KEY + MAX_VALUE) < PAGE - page::HEADER);

/// Why a tree operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeError {
    /// The page could not be read or written on any copy.
    Io {
        /// The page.
        page: PageAddr,
        /// The errno of the last failure.
        errno: i32,
    },
    /// A page failed its checks (checksum, address, generation, layout).
    Corrupt {
        /// The page.
        page: PageAddr,
        /// Which check.
        what: &'static str,
    },
    /// No space is left for new pages.
    NoSpace,
    /// A key or value is longer than a tree takes.
    TooLarge {
        /// Key bytes.
        key: usize,
        /// Value bytes.
        value: usize,
    },
}

impl TreeError {
    /// The negated errno a caller sees.
    pub fn errno(&self) -> i32 {
        -match self {
            TreeError::Io { errno, .. } => *errno,
            TreeError::Corrupt { .. } => libc::EIO,
            TreeError::NoSpace => libc::ENOSPC,
            TreeError::TooLarge { .. } => libc::ENAMETOOLONG,
        }
    }
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::Io { page, errno } => {
                write!(
                    f,
                    "metadata page {page}: I/O error (errno {errno}) on every copy"
                )
            }
            TreeError::Corrupt { page, what } => write!(
                f,
                "metadata page {page} is damaged ({what}) on every copy; run a scrub, \
                 or restore from a backup"
            ),
            TreeError::NoSpace => write!(f, "no space for metadata pages; free space"),
            TreeError::TooLarge { key, value } => write!(
                f,
                "metadata entry too large ({key}-byte key, {value}-byte value; at most \
                 {MAX_KEY} and {MAX_VALUE})"
            ),
        }
    }
}

impl std::error::Error for TreeError {}

/// Where a pager's pages live.
pub trait PageIo {
    /// Reads page `addr` into `out` (`PAGE` bytes).
    fn read(&mut self, addr: PageAddr, out: &mut [u8]) -> Result<(), TreeError>;
    /// An address for a new page (free until written; freed pages come back
    /// through the owner of the space, never through the tree).
    fn alloc(&mut self) -> Result<PageAddr, TreeError>;
    /// Writes pages, each `PAGE` bytes at its address. They need not be
    /// durable when this returns; the owner flushes before it makes a root
    /// that names them durable.
    fn write(&mut self, pages: &[(PageAddr, Vec<u8>)]) -> Result<(), TreeError>;
    /// Reads several pages at once for read-ahead, best effort: `None`
    /// where a page could not be read whole (the reader then falls back to
    /// [`PageIo::read`], which repairs). By default one at a time.
    fn read_ahead(&mut self, addrs: &[PageAddr]) -> Vec<Option<Vec<u8>>> {
        addrs
            .iter()
            .map(|&a| {
                let mut buf = vec![0u8; PAGE];
                self.read(a, &mut buf).ok().map(|()| buf)
            })
            .collect()
    }
}

/// Pages in memory: the plain reference [`PageIo`], which also checks the
/// tree's use of its space — reading a page that was never written or was
/// freed is an error, and freeing a page twice panics.
#[derive(Debug, Default)]
pub struct MemPages {
    pages: HashMap<PageAddr, Vec<u8>>,
    allocated: HashSet<PageAddr>,
    free: Vec<PageAddr>,
    next: PageAddr,
    /// Most pages it may hold (0: no limit).
    pub limit: usize,
}

impl MemPages {
    /// An empty page space.
    pub fn new() -> MemPages {
        MemPages::default()
    }

    /// Frees a page (retired by a commit whose root is now durable).
    pub fn free(&mut self, addr: PageAddr) {
        assert!(
            self.pages.remove(&addr).is_some(),
            "page {addr} freed twice"
        );
        self.allocated.remove(&addr);
        self.free.push(addr);
    }

    /// Pages written and not freed.
    pub fn live(&self) -> usize {
        self.pages.len()
    }

    /// Damages page `addr` (flips a bit of byte `at`), for tests.
    pub fn corrupt(&mut self, addr: PageAddr, at: usize) {
        if let Some(p) = self.pages.get_mut(&addr) {
            p[at % PAGE] ^= 0x10;
        }
    }

    /// Forgets pages allocated but not written (a crash lost them).
    pub fn forget_allocations(&mut self) {
        self.allocated.clear();
    }

    /// The live page addresses.
    pub fn addrs(&self) -> Vec<PageAddr> {
        self.pages.keys().copied().collect()
    }
}

impl PageIo for MemPages {
    fn read(&mut self, addr: PageAddr, out: &mut [u8]) -> Result<(), TreeError> {
        let page = self.pages.get(&addr).ok_or(TreeError::Io {
            page: addr,
            errno: libc::ENOENT,
        })?;
        out.copy_from_slice(page);
        Ok(())
    }

    fn alloc(&mut self) -> Result<PageAddr, TreeError> {
        if self.limit != 0 && self.pages.len() + self.allocated.len() >= self.limit {
            return Err(TreeError::NoSpace);
        }
        let addr = match self.free.pop() {
            Some(a) => a,
            None => {
                self.next += 1;
                self.next
            }
        };
        self.allocated.insert(addr);
        Ok(addr)
    }

    fn write(&mut self, pages: &[(PageAddr, Vec<u8>)]) -> Result<(), TreeError> {
        for (addr, page) in pages {
            assert!(
                self.allocated.remove(addr),
                "page {addr} written without being allocated"
            );
            assert_eq!(page.len(), PAGE);
            self.pages.insert(*addr, page.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Xorshift: the meta tests' seeded random numbers.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn key(r: &mut Rng) -> Vec<u8> {
        // Few distinct prefixes so keys collide, lengths up to the maximum.
        let n = r.below(2000);
        let mut k = n.to_be_bytes().to_vec();
        let extra = match r.below(10) {
            0 => MAX_KEY - 8,
            1..=3 => r.below(40) as usize,
            _ => 0,
        };
        k.extend((0..extra).map(|i| (n as usize + i) as u8));
        k
    }

    fn value(r: &mut Rng) -> Vec<u8> {
        let len = match r.below(8) {
            0 => MAX_VALUE,
            1 => r.below(MAX_VALUE as u64) as usize,
            _ => r.below(64) as usize,
        };
        let b = r.next() as u8;
        (0..len).map(|i| b.wrapping_add(i as u8)).collect()
    }

    /// Commits, checks that exactly the tree's pages are live once the
    /// superseded ones are freed, and returns the committed root.
    fn commit(p: &mut Pager, io: &mut MemPages, t: &mut Tree) -> Option<PagePtr> {
        p.commit(io, t).unwrap();
        for old in p.finish() {
            io.free(old.addr);
        }
        let mut reach: Vec<u64> = p.pages_of(io, t).unwrap().iter().map(|x| x.addr).collect();
        let mut live = io.addrs();
        reach.sort_unstable();
        live.sort_unstable();
        assert_eq!(reach, live, "live pages are exactly the tree's pages");
        t.root()
    }

    #[test]
    fn tree_matches_an_ordered_map_across_commits_and_reopens() {
        for seed in 1..=6u64 {
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // A tiny cache: most loads go to the page space.
            let mut io = MemPages::new();
            let mut p = Pager::new(1, 8 * PAGE);
            let mut t = Tree::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut committed = (None, 0u64, model.clone());
            for step in 0..6000 {
                match r.below(20) {
                    0..=9 => {
                        let (k, v) = (key(&mut r), value(&mut r));
                        assert_eq!(
                            p.insert(&mut io, &mut t, &k, &v).unwrap(),
                            model.insert(k, v)
                        );
                    }
                    10..=14 => {
                        let k = key(&mut r);
                        assert_eq!(p.remove(&mut io, &mut t, &k).unwrap(), model.remove(&k));
                    }
                    15..=16 => {
                        let k = key(&mut r);
                        assert_eq!(p.get(&mut io, &t, &k).unwrap().as_ref(), model.get(&k));
                    }
                    17 => {
                        let from = key(&mut r);
                        let want = r.below(50) as usize;
                        let mut got = Vec::new();
                        p.scan(&mut io, &t, &from, &mut |k, v| {
                            got.push((k.to_vec(), v.to_vec()));
                            got.len() < want
                        })
                        .unwrap();
                        let exp: Vec<_> = model
                            .range(from..)
                            .take(want.max(1))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        assert_eq!(got, exp, "seed {seed} step {step}");
                    }
                    18 => {
                        let root = commit(&mut p, &mut io, &mut t);
                        committed = (root, t.len(), model.clone());
                    }
                    _ => {
                        // Crash: changes since the last commit are gone; the
                        // tree reopens from its committed root, cache cold.
                        let epoch = p.epoch();
                        // Pages of the lost generation were never written;
                        // the retired ones were never freed.
                        io.forget_allocations();
                        p = Pager::new(epoch, 8 * PAGE);
                        t = Tree::open(committed.0, committed.1);
                        model = committed.2.clone();
                    }
                }
                assert_eq!(t.len(), model.len() as u64);
                if step % 500 == 0 {
                    assert_eq!(p.check(&mut io, &t).unwrap(), Vec::<String>::new());
                }
            }
            commit(&mut p, &mut io, &mut t);
            let mut all = Vec::new();
            p.scan(&mut io, &t, &[], &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
            assert!(all.into_iter().eq(model.into_iter()));
        }
    }

    #[test]
    fn a_large_tree_commits_what_changed_and_empties_to_nothing() {
        let mut io = MemPages::new();
        let mut p = Pager::new(1, 64 * PAGE);
        let mut t = Tree::new();
        let n = 200_000u64;
        for i in 0..n {
            let k = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes();
            p.insert(&mut io, &mut t, &k, &i.to_le_bytes()).unwrap();
        }
        commit(&mut p, &mut io, &mut t);
        assert_eq!(p.check(&mut io, &t).unwrap(), Vec::<String>::new());
        let pages = io.live();
        assert!(pages > 1000, "{pages} pages for {n} entries");
        // One change rewrites one path (height pages), not the tree.
        let before = p.stats().writes;
        p.insert(&mut io, &mut t, &7u64.to_be_bytes(), b"x")
            .unwrap();
        commit(&mut p, &mut io, &mut t);
        let path = p.stats().writes - before;
        assert!((2..=5).contains(&path), "one change wrote {path} pages");
        assert!(p.cached_nodes() <= 64);
        for i in 0..n {
            let k = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes();
            assert_eq!(
                p.remove(&mut io, &mut t, &k).unwrap(),
                Some(i.to_le_bytes().to_vec())
            );
        }
        p.remove(&mut io, &mut t, &7u64.to_be_bytes()).unwrap();
        assert_eq!(p.check(&mut io, &t).unwrap(), Vec::<String>::new());
        assert!(t.is_empty());
        assert_eq!(commit(&mut p, &mut io, &mut t), None);
        assert_eq!(io.live(), 0);
    }

    #[test]
    fn damaged_misplaced_and_stale_pages_are_errors() {
        let mut io = MemPages::new();
        let mut p = Pager::new(1, PAGE);
        let mut t = Tree::new();
        for i in 0..2000u32 {
            p.insert(&mut io, &mut t, &i.to_be_bytes(), &[7; 40])
                .unwrap();
        }
        let root = commit(&mut p, &mut io, &mut t).unwrap();
        let leaf = p
            .pages_of(&mut io, &t)
            .unwrap()
            .into_iter()
            .find(|x| x.addr != root.addr)
            .unwrap();
        let mut page = vec![0; PAGE];
        io.read(leaf.addr, &mut page).unwrap();
        assert!(page::Node::decode(leaf, &page).is_ok());
        let stale = PagePtr {
            birth: leaf.birth + 1,
            ..leaf
        };
        assert!(matches!(
            page::Node::decode(stale, &page),
            Err(TreeError::Corrupt { what, .. }) if what.contains("generation")
        ));
        let moved = PagePtr {
            addr: leaf.addr + 1,
            ..leaf
        };
        assert!(page::Node::decode(moved, &page).is_err());
        for at in [0, 5, 9, 20, 30, 100, 4095] {
            let mut bad = page.clone();
            bad[at] ^= 1;
            assert!(page::Node::decode(leaf, &bad).is_err(), "flip at {at}");
        }
        // Through the tree: a damaged page fails the lookups that need it.
        let mut x = 1u64;
        for a in io.addrs() {
            io.corrupt(a, 200);
        }
        let mut p2 = Pager::new(p.epoch(), PAGE);
        let r = p2.get(&mut io, &t, &5u32.to_be_bytes());
        assert!(matches!(r, Err(TreeError::Corrupt { .. })), "{r:?}");
        // Random bytes never panic the decoder.
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut junk = page.clone();
            for i in 0..8 {
                junk[((x >> (i * 8)) % PAGE as u64) as usize] = (x >> 3) as u8;
            }
            let _ = page::Node::decode(leaf, &junk);
        }
    }

    #[test]
    fn oversized_entries_are_refused() {
        let mut io = MemPages::new();
        let mut p = Pager::new(1, PAGE);
        let mut t = Tree::new();
        assert_eq!(
            p.insert(&mut io, &mut t, &[0; MAX_KEY + 1], b""),
            Err(TreeError::TooLarge {
                key: MAX_KEY + 1,
                value: 0
            })
        );
        assert!(p
            .insert(&mut io, &mut t, b"k", &[0; MAX_VALUE + 1])
            .is_err());
        assert!(t.is_empty() && !t.is_dirty());
    }
}
