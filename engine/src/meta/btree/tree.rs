//! The copy-on-write B+tree: lookups, inserts, removals, ordered scans and
//! commits, over pages a [`Pager`] reads, caches and writes.

use std::sync::Arc;

use super::cache::Cache;
use super::page::{Node, PagePtr, HEADER};
use super::{PageAddr, PageIo, TreeError, MAX_KEY, MAX_VALUE, PAGE};

/// Most pages a scan reads ahead in one batch.
const READ_AHEAD: usize = 64;

type Result<T> = std::result::Result<T, TreeError>;

/// A child pointer: a written page, or a node changed since the last commit
/// (an index into the pager's dirty nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ptr {
    /// A page on the device.
    Disk(PagePtr),
    /// A dirty node in memory.
    Mem(u32),
}

impl Ptr {
    /// The page, for a written node.
    pub fn on_disk(&self) -> Option<PagePtr> {
        match self {
            Ptr::Disk(p) => Some(*p),
            Ptr::Mem(_) => None,
        }
    }
}

/// One tree: its root and entry count. A tree is changed only through the
/// [`Pager`] that holds its dirty nodes (it is not `Clone`: two copies
/// would share those nodes).
#[derive(Debug, PartialEq, Eq)]
pub struct Tree {
    root: Option<Ptr>,
    len: u64,
}

impl Tree {
    /// A tree with no entries.
    pub fn new() -> Tree {
        Tree { root: None, len: 0 }
    }

    /// The tree committed with root `root` (None: empty) and `len` entries.
    pub fn open(root: Option<PagePtr>, len: u64) -> Tree {
        Tree {
            root: root.map(Ptr::Disk),
            len,
        }
    }

    /// The committed root, or `None` for an empty tree; panics if the tree
    /// has changes not yet committed (a bug: commit before taking a root).
    pub fn root(&self) -> Option<PagePtr> {
        self.root.map(|p| {
            p.on_disk()
                .expect("tree root taken with uncommitted changes")
        })
    }

    /// Whether the tree has changes not yet committed.
    pub fn is_dirty(&self) -> bool {
        matches!(self.root, Some(Ptr::Mem(_)))
    }

    /// Entries.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

/// Counters of a pager's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagerStats {
    /// Pages read from the device (cache misses).
    pub reads: u64,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Pages written by commits.
    pub writes: u64,
    /// Commits (generations closed).
    pub commits: u64,
}

/// The nodes of one shard's trees: the dirty ones changed since the last
/// commit, a bounded cache of clean ones, and the page space they live in.
pub struct Pager {
    /// The generation new nodes are born in; above every written page's.
    epoch: u64,
    dirty: Vec<Option<Arc<Node>>>,
    free_dirty: Vec<u32>,
    /// Pages superseded since the last [`Pager::finish`].
    retired: Vec<PagePtr>,
    /// Pages encoded by the running commit, written at its end.
    outbox: Vec<(u64, Vec<u8>)>,
    cache: Cache,
    buf: Vec<u8>,
    stats: PagerStats,
}

/// A node split in two: the separator and the new right node.
type Split = (Box<[u8]>, u32);

/// The child of a branch with separators `keys` that holds `key`.
fn child_of(keys: &[Box<[u8]>], key: &[u8]) -> usize {
    keys.partition_point(|s| **s <= *key)
}

impl Pager {
    /// A pager whose next generation is `epoch` (one above the last
    /// committed one) and whose cache holds `cache_bytes` of nodes. The
    /// page space is passed to each call that may read or write pages, so
    /// its owner keeps it (a store's devices serve data too).
    pub fn new(epoch: u64, cache_bytes: usize) -> Pager {
        Pager {
            epoch,
            dirty: Vec::new(),
            free_dirty: Vec::new(),
            retired: Vec::new(),
            outbox: Vec::new(),
            cache: Cache::new(cache_bytes / PAGE),
            buf: vec![0; PAGE],
            stats: PagerStats::default(),
        }
    }

    /// The generation being built.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Counters.
    pub fn stats(&self) -> PagerStats {
        self.stats
    }

    /// Nodes changed since the last commit.
    pub fn dirty_nodes(&self) -> usize {
        self.dirty.len() - self.free_dirty.len()
    }

    /// Clean nodes cached.
    pub fn cached_nodes(&self) -> usize {
        self.cache.len()
    }

    fn load(&mut self, io: &mut dyn PageIo, p: Ptr) -> Result<Arc<Node>> {
        match p {
            Ptr::Mem(i) => Ok(self.dirty[i as usize]
                .clone()
                .expect("a dirty pointer names a live node")),
            Ptr::Disk(pp) => {
                if let Some(n) = self.cache.get(pp.addr, pp.birth) {
                    self.stats.hits += 1;
                    return Ok(n);
                }
                io.read(pp.addr, &mut self.buf)?;
                self.stats.reads += 1;
                let n = Arc::new(Node::decode(pp, &self.buf)?);
                self.cache.put(pp.addr, n.clone());
                Ok(n)
            }
        }
    }

    fn add_dirty(&mut self, node: Node) -> u32 {
        debug_assert_eq!(node.birth, self.epoch);
        match self.free_dirty.pop() {
            Some(i) => {
                self.dirty[i as usize] = Some(Arc::new(node));
                i
            }
            None => {
                self.dirty.push(Some(Arc::new(node)));
                (self.dirty.len() - 1) as u32
            }
        }
    }

    fn take_dirty(&mut self, i: u32) -> Node {
        let n = self.dirty[i as usize]
            .take()
            .expect("a dirty pointer names a live node");
        self.free_dirty.push(i);
        Arc::try_unwrap(n).unwrap_or_else(|n| (*n).clone())
    }

    fn node(&self, i: u32) -> &Node {
        self.dirty[i as usize]
            .as_deref()
            .expect("a dirty pointer names a live node")
    }

    fn node_mut(&mut self, i: u32) -> &mut Node {
        Arc::make_mut(
            self.dirty[i as usize]
                .as_mut()
                .expect("a dirty pointer names a live node"),
        )
    }

    /// The node at `p` as a dirty node of this generation (copied from its
    /// page, which is retired, if it was clean).
    fn make_dirty(&mut self, io: &mut dyn PageIo, p: Ptr) -> Result<u32> {
        match p {
            Ptr::Mem(i) => Ok(i),
            Ptr::Disk(pp) => {
                let n = self.load(io, p)?;
                self.cache.remove(pp.addr);
                let mut node = Arc::try_unwrap(n).unwrap_or_else(|n| (*n).clone());
                node.birth = self.epoch;
                self.retired.push(pp);
                Ok(self.add_dirty(node))
            }
        }
    }

    /// The value under `key`.
    pub fn get(&mut self, io: &mut dyn PageIo, t: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(mut p) = t.root else {
            return Ok(None);
        };
        loop {
            let n = self.load(io, p)?;
            if n.is_leaf() {
                return Ok(n
                    .keys
                    .binary_search_by(|k| (**k).cmp(key))
                    .ok()
                    .map(|j| n.vals[j].to_vec()));
            }
            p = n.kids[child_of(&n.keys, key)];
        }
    }

    /// Sets `key` to `val`; returns the value it replaced.
    pub fn insert(
        &mut self,
        io: &mut dyn PageIo,
        t: &mut Tree,
        key: &[u8],
        val: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        if key.len() > MAX_KEY || val.len() > MAX_VALUE {
            return Err(TreeError::TooLarge {
                key: key.len(),
                value: val.len(),
            });
        }
        let root = match t.root {
            Some(p) => self.make_dirty(io, p)?,
            None => self.add_dirty(Node::leaf(self.epoch)),
        };
        t.root = Some(Ptr::Mem(root));
        let (old, split) = self.insert_at(io, root, key, val)?;
        if let Some((sep, right)) = split {
            let mut top = Node::leaf(self.epoch);
            top.keys.push(sep);
            top.kids = vec![Ptr::Mem(root), Ptr::Mem(right)];
            t.root = Some(Ptr::Mem(self.add_dirty(top)));
        }
        if old.is_none() {
            t.len += 1;
        }
        Ok(old)
    }

    /// Inserts under dirty node `i`; returns the replaced value and, if the
    /// node split, the separator and the new right node.
    fn insert_at(
        &mut self,
        io: &mut dyn PageIo,
        i: u32,
        key: &[u8],
        val: &[u8],
    ) -> Result<(Option<Vec<u8>>, Option<Split>)> {
        if self.node(i).is_leaf() {
            let n = self.node_mut(i);
            let old = match n.keys.binary_search_by(|k| (**k).cmp(key)) {
                Ok(j) => Some(std::mem::replace(&mut n.vals[j], val.into()).into_vec()),
                Err(j) => {
                    n.keys.insert(j, key.into());
                    n.vals.insert(j, val.into());
                    None
                }
            };
            let split = (n.size() > PAGE).then(|| self.split(i));
            return Ok((old, split));
        }
        let j = child_of(&self.node(i).keys, key);
        let child = self.make_dirty(io, self.node(i).kids[j])?;
        self.node_mut(i).kids[j] = Ptr::Mem(child);
        let (old, split) = self.insert_at(io, child, key, val)?;
        let mut up = None;
        if let Some((sep, right)) = split {
            let n = self.node_mut(i);
            n.keys.insert(j, sep);
            n.kids.insert(j + 1, Ptr::Mem(right));
            if n.size() > PAGE {
                up = Some(self.split(i));
            }
        }
        Ok((old, up))
    }

    /// Splits overfull dirty node `i` in two that each fit a page, as even
    /// in bytes as they can be; returns the separator and the right node.
    fn split(&mut self, i: u32) -> Split {
        let epoch = self.epoch;
        let n = self.node_mut(i);
        let leaf = n.is_leaf();
        let sizes: Vec<usize> = if leaf {
            n.keys
                .iter()
                .zip(&n.vals)
                .map(|(k, v)| Node::leaf_entry(k.len(), v.len()))
                .collect()
        } else {
            n.keys.iter().map(|k| Node::branch_entry(k.len())).collect()
        };
        let base = if leaf { HEADER } else { HEADER + 16 };
        let total: usize = sizes.iter().sum();
        // Left keeps entries ..m; a branch's entry m moves up as the
        // separator (so neither side counts it).
        let mut best: Option<(usize, usize)> = None;
        let mut left = 0;
        let (lo, hi) = if leaf {
            (1, sizes.len())
        } else {
            (1, sizes.len() - 1)
        };
        for (m, s) in sizes.iter().enumerate().take(hi).skip(lo) {
            left += sizes[m - 1];
            let right = total - left - if leaf { 0 } else { *s };
            if base + left <= PAGE && base + right <= PAGE {
                let gap = left.abs_diff(right);
                if best.is_none_or(|b| gap < b.1) {
                    best = Some((m, gap));
                }
            }
        }
        let (m, _) = best.expect("entries are small enough for every split to fit");
        let mut right = Node::leaf(epoch);
        let sep = if leaf {
            right.keys = n.keys.split_off(m);
            right.vals = n.vals.split_off(m);
            right.keys[0].clone()
        } else {
            right.keys = n.keys.split_off(m + 1);
            right.kids = n.kids.split_off(m + 1);
            n.keys.pop().expect("separator m")
        };
        debug_assert!(n.size() <= PAGE && right.size() <= PAGE);
        let r = self.add_dirty(right);
        (sep, r)
    }

    /// Removes `key`; returns its value.
    pub fn remove(
        &mut self,
        io: &mut dyn PageIo,
        t: &mut Tree,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        // Look first, so removing a missing key copies no page.
        if self.get(io, t, key)?.is_none() {
            return Ok(None);
        }
        let root = self.make_dirty(io, t.root.expect("the key exists"))?;
        t.root = Some(Ptr::Mem(root));
        let old = self.remove_at(io, root, key)?;
        debug_assert!(old.is_some(), "the key was found above");
        t.len -= 1;
        // A root branch with one child gives way to it; an empty root leaf
        // leaves an empty tree.
        while let Some(Ptr::Mem(r)) = t.root {
            let n = self.node(r);
            if !n.is_leaf() && n.kids.len() == 1 {
                let only = n.kids[0];
                self.take_dirty(r);
                t.root = Some(only);
            } else if n.keys.is_empty() && n.kids.is_empty() {
                self.take_dirty(r);
                t.root = None;
                break;
            } else {
                break;
            }
        }
        Ok(old)
    }

    fn remove_at(&mut self, io: &mut dyn PageIo, i: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.node(i).is_leaf() {
            let n = self.node_mut(i);
            return Ok(match n.keys.binary_search_by(|k| (**k).cmp(key)) {
                Ok(j) => {
                    n.keys.remove(j);
                    Some(n.vals.remove(j).into_vec())
                }
                Err(_) => None,
            });
        }
        let j = child_of(&self.node(i).keys, key);
        let child = self.make_dirty(io, self.node(i).kids[j])?;
        self.node_mut(i).kids[j] = Ptr::Mem(child);
        let old = self.remove_at(io, child, key)?;
        self.rebalance(io, i, j)?;
        Ok(old)
    }

    /// After a removal under child `j` of dirty branch `i`: drops the child
    /// if it is empty, and merges it with a neighbour when it fell below a
    /// quarter page and the two fit in one. Every leaf stays at the same
    /// depth (only the root ever gives way to its child), so neighbours are
    /// always of one kind.
    fn rebalance(&mut self, io: &mut dyn PageIo, i: u32, j: usize) -> Result<()> {
        let Ptr::Mem(c) = self.node(i).kids[j] else {
            unreachable!("the child was made dirty")
        };
        let child = self.node(c);
        let empty = if child.is_leaf() {
            child.keys.is_empty()
        } else {
            child.kids.is_empty()
        };
        if empty {
            // Dropping child j drops the separator below it (or, for the
            // first child, the one above it). A branch left with no child is
            // empty in turn, for its parent to drop.
            self.take_dirty(c);
            let n = self.node_mut(i);
            n.kids.remove(j);
            if !n.keys.is_empty() {
                n.keys.remove(j.saturating_sub(1));
            }
            debug_assert!(n.kids.is_empty() || n.kids.len() == n.keys.len() + 1);
            return Ok(());
        }
        if self.node(c).size() >= PAGE / 4 || self.node(i).kids.len() < 2 {
            return Ok(());
        }
        let a = if j > 0 { j - 1 } else { j };
        let (l, r) = (self.node(i).kids[a], self.node(i).kids[a + 1]);
        let sep_len = self.node(i).keys[a].len();
        let (ln, rn) = (self.load(io, l)?, self.load(io, r)?);
        debug_assert_eq!(ln.is_leaf(), rn.is_leaf(), "neighbours at one depth");
        let merged = if ln.is_leaf() {
            ln.size() + rn.size() - HEADER
        } else {
            // Both headers and first-child pointers, less one of each, plus
            // the separator that comes down between them.
            ln.size() + rn.size() - HEADER - 16 + Node::branch_entry(sep_len)
        };
        drop((ln, rn));
        if merged > PAGE {
            return Ok(());
        }
        let l = self.make_dirty(io, l)?;
        let right = match r {
            Ptr::Mem(x) => self.take_dirty(x),
            Ptr::Disk(pp) => {
                let n = self.load(io, r)?;
                self.cache.remove(pp.addr);
                self.retired.push(pp);
                Arc::try_unwrap(n).unwrap_or_else(|n| (*n).clone())
            }
        };
        let sep = self.node_mut(i).keys.remove(a);
        self.node_mut(i).kids.remove(a + 1);
        self.node_mut(i).kids[a] = Ptr::Mem(l);
        let ln = self.node_mut(l);
        if ln.is_leaf() {
            ln.keys.extend(right.keys);
            ln.vals.extend(right.vals);
        } else {
            ln.keys.push(sep);
            ln.keys.extend(right.keys);
            ln.kids.extend(right.kids);
        }
        debug_assert!(ln.size() <= PAGE);
        Ok(())
    }

    /// Calls `f` with every entry whose key is at least `from`, in key
    /// order, until it returns false.
    pub fn scan(
        &mut self,
        io: &mut dyn PageIo,
        t: &Tree,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if let Some(r) = t.root {
            self.scan_at(io, r, from, f)?;
        }
        Ok(())
    }

    fn scan_at(
        &mut self,
        io: &mut dyn PageIo,
        p: Ptr,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<bool> {
        let n = self.load(io, p)?;
        if n.is_leaf() {
            let start = n.keys.partition_point(|k| **k < *from);
            for j in start..n.keys.len() {
                if !f(&n.keys[j], &n.vals[j]) {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        // Read-ahead that doubles while the scan goes on: a scan that stops
        // in its first child reads nothing more, a long one reads its
        // children in batches of up to READ_AHEAD pages.
        let first = child_of(&n.keys, from);
        let (mut ahead, mut window) = (first + 1, 1);
        for c in first..n.kids.len() {
            if c == ahead {
                let end = (c + window).min(n.kids.len());
                self.read_ahead(io, &n.kids[c..end]);
                ahead = end;
                window = (window * 2).min(READ_AHEAD);
            }
            if !self.scan_at(io, n.kids[c], from, f)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Puts the nodes `kids` names into the cache, read in one batch
    /// (best effort: what fails is read again, with repair, when loaded).
    fn read_ahead(&mut self, io: &mut dyn PageIo, kids: &[Ptr]) {
        let want: Vec<PagePtr> = kids
            .iter()
            .filter_map(|p| match p {
                Ptr::Disk(pp) if self.cache.get(pp.addr, pp.birth).is_none() => Some(*pp),
                _ => None,
            })
            .collect();
        if want.len() < 2 {
            return;
        }
        let addrs: Vec<PageAddr> = want.iter().map(|p| p.addr).collect();
        for (pp, page) in want.iter().zip(io.read_ahead(&addrs)) {
            if let Some(Ok(n)) = page.map(|b| Node::decode(*pp, &b)) {
                self.stats.reads += 1;
                self.cache.put(pp.addr, Arc::new(n));
            }
        }
    }

    /// Writes tree `t`'s changed nodes to new pages, children before
    /// parents, so its root is a page again. The pages are written through
    /// the page space but not flushed: the caller flushes, then makes the
    /// new root durable, then frees what [`Pager::finish`] returns.
    pub fn commit(&mut self, io: &mut dyn PageIo, t: &mut Tree) -> Result<()> {
        if let Some(r @ Ptr::Mem(_)) = t.root {
            let pp = self.flush(io, r)?;
            t.root = Some(Ptr::Disk(pp));
        }
        let pages = std::mem::take(&mut self.outbox);
        self.stats.writes += pages.len() as u64;
        io.write(&pages)
    }

    fn flush(&mut self, io: &mut dyn PageIo, p: Ptr) -> Result<PagePtr> {
        let i = match p {
            Ptr::Disk(pp) => return Ok(pp),
            Ptr::Mem(i) => i,
        };
        let mut node = self.take_dirty(i);
        for k in 0..node.kids.len() {
            if let Ptr::Mem(_) = node.kids[k] {
                node.kids[k] = Ptr::Disk(self.flush(io, node.kids[k])?);
            }
        }
        let addr = io.alloc()?;
        let mut page = vec![0u8; PAGE];
        node.encode(addr, &mut page);
        self.outbox.push((addr, page));
        let pp = PagePtr {
            addr,
            birth: node.birth,
        };
        self.cache.put(addr, Arc::new(node));
        Ok(pp)
    }

    /// Closes the generation once every tree changed in it is committed:
    /// returns the pages its commits superseded (free them once the roots
    /// naming the new pages are durable) and starts the next generation.
    pub fn finish(&mut self) -> Vec<PagePtr> {
        assert_eq!(
            self.dirty_nodes(),
            0,
            "a generation is finished with trees left uncommitted"
        );
        self.dirty.clear();
        self.free_dirty.clear();
        self.epoch += 1;
        self.stats.commits += 1;
        std::mem::take(&mut self.retired)
    }

    /// Checks tree `t`'s structure: keys in order and within their
    /// separators' bounds, every leaf at one depth, every node within a
    /// page, and the entry count. Returns what is wrong.
    pub fn check(&mut self, io: &mut dyn PageIo, t: &Tree) -> Result<Vec<String>> {
        let mut bad = Vec::new();
        let mut leaf_depth = None;
        let mut count = 0u64;
        // (node, depth, lower bound, upper bound)
        type Bound = Option<Box<[u8]>>;
        let mut stack: Vec<(Ptr, usize, Bound, Bound)> =
            t.root.into_iter().map(|p| (p, 0, None, None)).collect();
        while let Some((p, depth, lo, hi)) = stack.pop() {
            let n = self.load(io, p)?;
            if n.size() > PAGE {
                bad.push(format!("{p:?}: {} bytes", n.size()));
            }
            if n.keys.windows(2).any(|w| w[0] >= w[1]) {
                bad.push(format!("{p:?}: keys out of order"));
            }
            let first = n.keys.first().map(|k| &**k);
            let last = n.keys.last().map(|k| &**k);
            if lo.as_deref().zip(first).is_some_and(|(l, f)| f < l)
                || hi.as_deref().zip(last).is_some_and(|(h, l)| l >= h)
            {
                bad.push(format!("{p:?}: keys outside the separators' bounds"));
            }
            if n.is_leaf() {
                count += n.keys.len() as u64;
                if *leaf_depth.get_or_insert(depth) != depth {
                    bad.push(format!("{p:?}: leaf at depth {depth}"));
                }
                continue;
            }
            if n.kids.len() != n.keys.len() + 1 {
                bad.push(format!(
                    "{p:?}: {} children, {} keys",
                    n.kids.len(),
                    n.keys.len()
                ));
                continue;
            }
            for (c, kid) in n.kids.iter().enumerate() {
                let l = if c == 0 {
                    lo.clone()
                } else {
                    Some(n.keys[c - 1].clone())
                };
                let h = n.keys.get(c).cloned().or_else(|| hi.clone());
                stack.push((*kid, depth + 1, l, h));
            }
        }
        if count != t.len {
            bad.push(format!("{count} entries, the tree counts {}", t.len));
        }
        Ok(bad)
    }

    /// Every page tree `t` reaches (for checks: a committed tree's pages
    /// and nothing else must be live).
    pub fn pages_of(&mut self, io: &mut dyn PageIo, t: &Tree) -> Result<Vec<PagePtr>> {
        let mut out = Vec::new();
        let mut stack: Vec<Ptr> = t.root.into_iter().collect();
        while let Some(p) = stack.pop() {
            if let Ptr::Disk(pp) = p {
                out.push(pp);
            }
            let n = self.load(io, p)?;
            stack.extend(n.kids.iter().copied());
        }
        Ok(out)
    }
}
