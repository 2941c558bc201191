//! A shard's metadata state: the small catalog (file systems,
//! organizations, counters) kept whole beside the root, and everything that
//! grows with the data — files, their block maps, the name index, the
//! stripe table and the shared pool — in one copy-on-write B+tree whose
//! pages live on the devices.
//!
//! | key | value |
//! |---|---|
//! | `I` `N` `E` `L` `X` | the namespace: inodes, entries by name and by sequence, symlink targets, xattrs ([`super::namespace`]) |
//! | `f` ino | a part: this shard's ranges of a file homed elsewhere (file system, size) |
//! | `b` ino block | where one logical block lives ([`BlockRef`]) |
//! | `s` id part | a stripe record, cut into parts of at most a value |
//! | `p` fs key | a block of the shared pool ([`Shared`]) |
//!
//! Integers in keys are big-endian so the tree orders them numerically: a
//! file's blocks are one range, listed in order.
//!
//! [`Meta::apply`] is still the only way state changes, live and in
//! replay. What it changes are dirty pages in memory; a checkpoint commits
//! them ([`Meta::commit`]) and writes the root ([`Meta::encode_root`]), so
//! a checkpoint costs what changed and opening costs the root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::codec::{DecodeError, Reader, Writer};

use super::btree::{PageIo, PagePtr, Pager, PagerStats, Tree, TreeError, MAX_VALUE};
use super::namespace::{inode_key, Attr, Home, Ids, Kind, Namespace, NsError};
use super::{
    decode_record, encode_record, BlockRef, FsId, FsMeta, Ino, NsOp, NsRecord, Org, OrgId, Record,
    Released, Shared, StripeMeta,
};
use crate::meta::group::{Group, GroupId};
use crate::meta::quota::{Quota, QuotaId};
use crate::meta::snap::{Snap, SnapId};

mod clone;
mod ns;
mod quota;
mod snap;

type Result<T> = std::result::Result<T, TreeError>;

const BLOCK: u64 = 4096;
/// Stripes kept decoded (reads look one up per run of blocks).
const STRIPE_CACHE: usize = 4096;

/// A regular file as the data path sees it: its file system and size (its
/// blocks are separate entries). On the file's home shard this is its
/// inode in the namespace; elsewhere, a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inode {
    /// Inode number.
    pub ino: Ino,
    /// Its file system.
    pub fs: FsId,
    /// Size in bytes (a part's: up to the end of what it holds).
    pub size: u64,
    /// Whether this is a part: the blocks this shard holds of a file whose
    /// inode lives on another shard.
    pub part: bool,
    /// The directory quota it counts against (0: none; parts count
    /// nothing).
    pub quota: QuotaId,
}

impl Inode {
    /// Whether this is a part (see [`Inode::part`]).
    pub fn is_part(&self) -> bool {
        self.part
    }
}

/// The inode number of file system `fs`'s root directory in an engine of
/// `shards` shards: above every number a shard hands out, carrying the
/// shard that holds it (`fs % shards`) in its low byte like every inode.
pub fn root_ino(fs: FsId, shards: u32) -> Ino {
    debug_assert!((1..=256).contains(&shards));
    (1 << 62) | (u64::from(fs) << 8) | u64::from(fs % shards.max(1))
}

/// What a shard holds of a regular file.
enum Held {
    /// Its inode (this is its home).
    Home(Attr),
    /// A part of it.
    Part(Inode),
}

impl Held {
    fn inode(&self) -> Inode {
        match self {
            Held::Home(a) => Inode {
                ino: a.ino,
                fs: a.fs,
                size: a.size,
                part: false,
                quota: a.quota,
            },
            Held::Part(i) => *i,
        }
    }
}

fn part_key(ino: Ino) -> [u8; 9] {
    let mut k = [b'f'; 9];
    k[1..].copy_from_slice(&ino.to_be_bytes());
    k
}

fn block_key(ino: Ino, idx: u64) -> [u8; 17] {
    let mut k = [b'b'; 17];
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k[9..].copy_from_slice(&idx.to_be_bytes());
    k
}

/// The key of a stripe's count of live references (blocks of this shard's
/// maps and shared pool in it).
fn refs_key(id: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn stripe_key(id: u64, part: u8) -> [u8; 10] {
    let mut k = [b's'; 10];
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9] = part;
    k
}

fn shared_key(fs: FsId, key: u128) -> [u8; 21] {
    let mut k = [b'p'; 21];
    k[1..5].copy_from_slice(&fs.to_be_bytes());
    k[5..].copy_from_slice(&key.to_be_bytes());
    k
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn corrupt(what: &'static str) -> TreeError {
    TreeError::Corrupt { page: 0, what }
}

fn encode_part(i: &Inode) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(i.fs).u64(i.size);
    w.buf
}

fn decode_part(ino: Ino, v: &[u8]) -> Result<Inode> {
    let mut r = Reader::new(v);
    let bad = |_| corrupt("part entry");
    Ok(Inode {
        ino,
        fs: r.u32("fs").map_err(bad)?,
        size: r.u64("size").map_err(bad)?,
        part: true,
        quota: 0,
    })
}

fn decode_attr(v: &[u8]) -> Result<Attr> {
    Attr::decode(v).ok_or(corrupt("inode record"))
}

/// What a namespace change did, for the store and the engine.
#[derive(Debug, Default)]
pub struct NsDone {
    /// The inode created or changed (for replies).
    pub attr: Option<Attr>,
    /// A regular file whose last name went: its parts on other shards are
    /// to be dropped.
    pub gone: Option<Ino>,
    /// Block references the change dropped.
    pub released: Released,
}

/// A block reference as a value: the address, then the fingerprint only
/// when there is one (most file systems do not deduplicate).
fn encode_block(b: &BlockRef) -> Vec<u8> {
    let mut w = Writer::default();
    super::encode_addr(&mut w, &b.addr);
    if b.fp != 0 {
        w.u128(b.fp);
    }
    w.buf
}

fn decode_block(v: &[u8]) -> Result<BlockRef> {
    let mut r = Reader::new(v);
    let addr = super::decode_addr(&mut r).map_err(|_| corrupt("block entry"))?;
    let fp = match r.remaining() {
        0 => 0,
        16 => r.u128("fp").map_err(|_| corrupt("block entry"))?,
        _ => return Err(corrupt("block entry")),
    };
    Ok(BlockRef { addr, fp })
}

/// Decoded stripes, bounded: two generations, the older dropped when the
/// newer fills (a cheap approximation of least-recently-used).
#[derive(Default)]
struct StripeCache {
    hot: HashMap<u64, Arc<StripeMeta>>,
    cold: HashMap<u64, Arc<StripeMeta>>,
}

impl StripeCache {
    fn get(&mut self, id: u64) -> Option<Arc<StripeMeta>> {
        if let Some(s) = self.hot.get(&id) {
            return Some(s.clone());
        }
        let s = self.cold.remove(&id)?;
        self.put(s.clone());
        Some(s)
    }

    fn put(&mut self, s: Arc<StripeMeta>) {
        if self.hot.len() >= STRIPE_CACHE / 2 {
            self.cold = std::mem::take(&mut self.hot);
        }
        self.hot.insert(s.id, s);
    }

    fn remove(&mut self, id: u64) {
        self.hot.remove(&id);
        self.cold.remove(&id);
    }
}

/// All metadata of one shard.
pub struct Meta {
    /// File systems by id.
    pub fss: BTreeMap<FsId, FsMeta>,
    /// Next file system id.
    pub next_fs: FsId,
    /// Next inode number.
    pub next_ino: Ino,
    /// Next stripe id.
    pub next_stripe: u64,
    /// Organizations by id (shard 0).
    pub orgs: BTreeMap<OrgId, Org>,
    /// The organization owning each file system (shard 0; absent: none).
    pub fs_owner: BTreeMap<FsId, OrgId>,
    /// Logical bytes of each file system's whole files (not parts).
    used: BTreeMap<FsId, u64>,
    /// Filesystem groups by id (shard 0).
    pub groups: BTreeMap<GroupId, Group>,
    /// The group each file system is in (shard 0; absent: none).
    pub fs_group: BTreeMap<FsId, GroupId>,
    /// Directory quotas by id (shard 0).
    pub quotas: BTreeMap<QuotaId, Quota>,
    /// Logical bytes of the files this shard holds under each quota
    /// (innermost; nested quotas' bytes are not in their parents').
    quota_used: BTreeMap<QuotaId, u64>,
    /// Quotas whose count changed since [`Meta::take_quota_changes`].
    quota_changed: BTreeSet<QuotaId>,
    /// Writable snapshots by their file system (shard 0).
    pub clones: BTreeMap<FsId, crate::meta::snap::CloneInfo>,
    /// Inode generations handed out.
    pub next_gen: u64,
    /// Blocks in the shared pool.
    shared_len: u64,
    /// The inodes this shard holds.
    pub home: Home,
    /// Snapshots by id.
    snaps: BTreeMap<SnapId, Snap>,
    /// The snapshot tree reads go through for a moment (namespace, inodes,
    /// parts and block maps; never stripes or the pool), if any.
    view: Option<Tree>,
    /// Pages deleted snapshots alone named: free at the next checkpoint.
    freed_pages: Vec<PagePtr>,
    /// A restore across the shards under way (shard 0 keeps it).
    restoring: Option<SnapId>,
    tree: Tree,
    pager: Pager,
    stripes: StripeCache,
}

impl Meta {
    /// Empty metadata whose page cache holds `cache_bytes`.
    pub fn new(cache_bytes: usize) -> Meta {
        Meta {
            fss: BTreeMap::new(),
            next_fs: 0,
            next_ino: 0,
            next_stripe: 0,
            orgs: BTreeMap::new(),
            fs_owner: BTreeMap::new(),
            used: BTreeMap::new(),
            groups: BTreeMap::new(),
            fs_group: BTreeMap::new(),
            quotas: BTreeMap::new(),
            quota_used: BTreeMap::new(),
            quota_changed: BTreeSet::new(),
            clones: BTreeMap::new(),
            next_gen: 1,
            shared_len: 0,
            home: Home::ALONE,
            snaps: BTreeMap::new(),
            view: None,
            freed_pages: Vec::new(),
            restoring: None,
            tree: Tree::new(),
            pager: Pager::new(1, cache_bytes),
            stripes: StripeCache::default(),
        }
    }

    /// The pager's counters.
    pub fn pager_stats(&self) -> PagerStats {
        self.pager.stats()
    }

    /// Nodes changed since the last commit (what the next one writes).
    pub fn dirty_nodes(&self) -> usize {
        self.pager.dirty_nodes()
    }

    /// Entries in the tree.
    pub fn entries(&self) -> u64 {
        self.tree.len()
    }

    /// Logical bytes stored in a file system (sum of file sizes).
    pub fn fs_used(&self, fs: FsId) -> u64 {
        self.used.get(&fs).copied().unwrap_or(0)
    }

    /// Blocks in this shard's shared pool.
    pub fn shared_len(&self) -> u64 {
        self.shared_len
    }

    /// A regular file (its inode here, or a part of it).
    pub fn file(&mut self, io: &mut dyn PageIo, ino: Ino) -> Result<Option<Inode>> {
        Ok(self.held(io, ino)?.map(|h| h.inode()))
    }

    /// What this shard holds of regular file `ino`: its inode, or a part.
    fn held(&mut self, io: &mut dyn PageIo, ino: Ino) -> Result<Option<Held>> {
        if let Some(a) = self.attr(io, ino)? {
            return Ok((a.kind == Kind::File).then_some(Held::Home(a)));
        }
        match self
            .pager
            .get(io, self.view.as_ref().unwrap_or(&self.tree), &part_key(ino))?
        {
            Some(v) => decode_part(ino, &v).map(|i| Some(Held::Part(i))),
            None => Ok(None),
        }
    }

    /// An inode's attributes, if it lives on this shard.
    pub fn attr(&mut self, io: &mut dyn PageIo, ino: Ino) -> Result<Option<Attr>> {
        match self.pager.get(
            io,
            self.view.as_ref().unwrap_or(&self.tree),
            &inode_key(ino),
        )? {
            Some(v) => decode_attr(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The namespace of file system `fs` in this tree, lent for one
    /// operation; a create takes its number from `ids`.
    pub fn namespace<'a>(
        &'a mut self,
        io: &'a mut dyn PageIo,
        fs: FsId,
        ids: &'a mut Ids,
    ) -> Namespace<'a> {
        let tree = match self.view.as_mut() {
            Some(t) => t,
            None => &mut self.tree,
        };
        Namespace::new(io, &mut self.pager, tree, fs, ids, self.home)
    }

    /// Where logical block `idx` of file `ino` lives.
    pub fn block(&mut self, io: &mut dyn PageIo, ino: Ino, idx: u64) -> Result<Option<BlockRef>> {
        match self.pager.get(
            io,
            self.view.as_ref().unwrap_or(&self.tree),
            &block_key(ino, idx),
        )? {
            Some(v) => decode_block(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Calls `f` with every stored block of file `ino` from logical block
    /// `from` on, in order, until it returns false.
    pub fn blocks(
        &mut self,
        io: &mut dyn PageIo,
        ino: Ino,
        from: u64,
        f: &mut dyn FnMut(u64, BlockRef) -> bool,
    ) -> Result<()> {
        let prefix = part_key(ino);
        let mut bad = None;
        let tree = self.view.as_ref().unwrap_or(&self.tree);
        self.pager
            .scan(io, tree, &block_key(ino, from), &mut |k, v| {
                if k.len() != 17 || k[0] != b'b' || k[1..9] != prefix[1..] {
                    return false;
                }
                match decode_block(v) {
                    Ok(b) => f(be64(&k[9..]), b),
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                }
            })?;
        bad.map_or(Ok(()), Err)
    }

    /// Calls `f` with every stored block of every file, in (inode, block)
    /// order, until it returns false.
    pub fn all_blocks(
        &mut self,
        io: &mut dyn PageIo,
        f: &mut dyn FnMut(Ino, u64, BlockRef) -> bool,
    ) -> Result<()> {
        let mut bad = None;
        self.pager.scan(io, &self.tree, b"b", &mut |k, v| {
            if k.len() != 17 || k[0] != b'b' {
                return false;
            }
            match decode_block(v) {
                Ok(b) => f(be64(&k[1..9]), be64(&k[9..]), b),
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// The stored blocks of file `ino` in logical blocks `from..to`.
    pub fn blocks_in(
        &mut self,
        io: &mut dyn PageIo,
        ino: Ino,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, BlockRef)>> {
        let mut out = Vec::new();
        self.blocks(io, ino, from, &mut |i, b| {
            if i >= to {
                return false;
            }
            out.push((i, b));
            true
        })?;
        Ok(out)
    }

    /// Calls `f` with every regular file this shard holds (the inodes
    /// homed here, then the parts), until it returns false.
    pub fn files(&mut self, io: &mut dyn PageIo, f: &mut dyn FnMut(Inode) -> bool) -> Result<()> {
        let mut bad = None;
        let mut go = true;
        self.pager.scan(io, &self.tree, b"I", &mut |k, v| {
            if k.len() != 9 || k[0] != b'I' {
                return false;
            }
            match decode_attr(v) {
                Ok(a) if a.kind != Kind::File => true,
                Ok(a) => {
                    go = f(Inode {
                        ino: a.ino,
                        fs: a.fs,
                        size: a.size,
                        part: false,
                        quota: a.quota,
                    });
                    go
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        if !go || bad.is_some() {
            return bad.map_or(Ok(()), Err);
        }
        self.parts(io, f)
    }

    /// Calls `f` with every part (a range of a file homed on another
    /// shard) until it returns false.
    pub fn parts(&mut self, io: &mut dyn PageIo, f: &mut dyn FnMut(Inode) -> bool) -> Result<()> {
        let mut bad = None;
        self.pager.scan(io, &self.tree, b"f", &mut |k, v| {
            if k.len() != 9 || k[0] != b'f' {
                return false;
            }
            match decode_part(be64(&k[1..]), v) {
                Ok(i) => f(i),
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// The file system of every file (for scans of every block, whose keys
    /// name only the inode).
    pub fn fs_of_files(&mut self, io: &mut dyn PageIo) -> Result<HashMap<Ino, FsId>> {
        let mut out = HashMap::new();
        self.files(io, &mut |i| {
            out.insert(i.ino, i.fs);
            true
        })?;
        Ok(out)
    }

    /// A stripe.
    pub fn stripe(&mut self, io: &mut dyn PageIo, id: u64) -> Result<Option<Arc<StripeMeta>>> {
        if let Some(s) = self.stripes.get(id) {
            return Ok(Some(s));
        }
        let mut bytes = Vec::new();
        let mut parts = 0u8;
        self.pager
            .scan(io, &self.tree, &stripe_key(id, 0), &mut |k, v| {
                if k != stripe_key(id, parts) {
                    return false;
                }
                bytes.extend_from_slice(v);
                parts += 1;
                true
            })?;
        if parts == 0 {
            return Ok(None);
        }
        let s = match decode_record(&mut Reader::new(&bytes)) {
            Ok(Record::Stripe(s)) if s.id == id => Arc::new(s),
            _ => return Err(corrupt("stripe entry")),
        };
        self.stripes.put(s.clone());
        Ok(Some(s))
    }

    /// Whether a stripe exists.
    pub fn has_stripe(&mut self, io: &mut dyn PageIo, id: u64) -> Result<bool> {
        if self.stripes.get(id).is_some() {
            return Ok(true);
        }
        Ok(self
            .pager
            .get(io, &self.tree, &stripe_key(id, 0))?
            .is_some())
    }

    /// Every stripe's id, in order.
    pub fn stripe_ids(&mut self, io: &mut dyn PageIo) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        self.pager.scan(io, &self.tree, b"s", &mut |k, _| {
            if k.len() != 10 || k[0] != b's' {
                return false;
            }
            if k[9] == 0 {
                out.push(be64(&k[1..9]));
            }
            true
        })?;
        Ok(out)
    }

    /// The highest stripe id in `lo..hi`.
    pub fn last_stripe_in(&mut self, io: &mut dyn PageIo, lo: u64, hi: u64) -> Result<Option<u64>> {
        let mut last = None;
        self.pager
            .scan(io, &self.tree, &stripe_key(lo, 0), &mut |k, _| {
                if k.len() != 10 || k[0] != b's' || be64(&k[1..9]) >= hi {
                    return false;
                }
                last = Some(be64(&k[1..9]));
                true
            })?;
        Ok(last)
    }

    /// A block of the shared pool.
    pub fn shared(&mut self, io: &mut dyn PageIo, fs: FsId, key: u128) -> Result<Option<Shared>> {
        match self.pager.get(io, &self.tree, &shared_key(fs, key))? {
            Some(v) => decode_block(&v).map(|b| {
                Some(Shared {
                    addr: b.addr,
                    fp: b.fp,
                })
            }),
            None => Ok(None),
        }
    }

    /// Calls `f` with every block of the shared pool, in (fs, key) order,
    /// until it returns false.
    pub fn shared_blocks(
        &mut self,
        io: &mut dyn PageIo,
        f: &mut dyn FnMut(FsId, u128, Shared) -> bool,
    ) -> Result<()> {
        let mut bad = None;
        self.pager.scan(io, &self.tree, b"p", &mut |k, v| {
            if k.len() != 21 || k[0] != b'p' {
                return false;
            }
            let fs = u32::from_be_bytes(k[1..5].try_into().expect("4 bytes"));
            let key = u128::from_be_bytes(k[5..].try_into().expect("16 bytes"));
            match decode_block(v) {
                Ok(b) => f(
                    fs,
                    key,
                    Shared {
                        addr: b.addr,
                        fp: b.fp,
                    },
                ),
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        bad.map_or(Ok(()), Err)
    }

    /// Removes the blocks of file `ino` (of `fs`) from logical block
    /// `from` on; returns how many, and adds those no snapshot keeps to
    /// `released`.
    fn cut_blocks(
        &mut self,
        io: &mut dyn PageIo,
        fs: FsId,
        ino: Ino,
        from: u64,
        released: &mut Released,
    ) -> Result<usize> {
        let mut idxs = Vec::new();
        self.blocks(io, ino, from, &mut |i, b| {
            idxs.push((i, b));
            true
        })?;
        for (i, b) in &idxs {
            self.pager.remove(io, &mut self.tree, &block_key(ino, *i))?;
            self.drop_block(io, fs, ino, *i, *b, released)?;
        }
        Ok(idxs.len())
    }

    /// Sets a file's size; on its home shard also its mtime and ctime,
    /// unless `mtime` is 0 (a move of blocks, which changes nothing here),
    /// and its count of stored blocks by `blocks` (blocks mapped where none
    /// was, less blocks cut).
    fn set_size(
        &mut self,
        io: &mut dyn PageIo,
        held: Held,
        size: u64,
        mtime: i64,
        blocks: i64,
    ) -> Result<()> {
        match held {
            Held::Part(mut i) => {
                if i.size != size {
                    i.size = size;
                    self.pager
                        .insert(io, &mut self.tree, &part_key(i.ino), &encode_part(&i))?;
                }
            }
            Held::Home(mut a) => {
                if a.size == size && mtime == 0 && blocks == 0 {
                    return Ok(());
                }
                a.blocks = a
                    .blocks
                    .checked_add_signed(blocks)
                    .ok_or(corrupt("block count"))?;
                let u = self.used.entry(a.fs).or_default();
                *u = (*u + size).saturating_sub(a.size);
                self.charge_quota(a.quota, size as i64 - a.size as i64);
                a.size = size;
                if mtime != 0 {
                    a.mtime = mtime;
                    a.ctime = mtime;
                }
                self.pager
                    .insert(io, &mut self.tree, &inode_key(a.ino), &a.encode())?;
            }
        }
        Ok(())
    }

    /// Applies one change. Returns the block references the change dropped.
    pub fn apply(&mut self, io: &mut dyn PageIo, rec: &Record) -> Result<Released> {
        debug_assert!(self.view.is_none(), "a change while a snapshot is viewed");
        if self.view.is_some() {
            return Err(corrupt("a change while a snapshot is viewed"));
        }
        let mut released = Vec::new();
        // Blocks the record puts into this shard's maps or pool.
        let mut added: Vec<BlockRef> = Vec::new();
        match rec {
            Record::FsCreate(fs) => {
                self.next_fs = self.next_fs.max(fs.id + 1);
                self.fss.insert(fs.id, fs.clone());
            }
            Record::FsResize { fs, capacity } => {
                if let Some(f) = self.fss.get_mut(fs) {
                    f.capacity = *capacity;
                }
            }
            Record::PartCreate { ino, fs } => {
                if self.file(io, *ino)?.is_none() {
                    let i = Inode {
                        ino: *ino,
                        fs: *fs,
                        size: 0,
                        part: true,
                        quota: 0,
                    };
                    self.pager
                        .insert(io, &mut self.tree, &part_key(*ino), &encode_part(&i))?;
                }
            }
            Record::PartDrop { ino } => {
                if let Some(i) = self.file(io, *ino)?.filter(|i| i.part) {
                    self.cut_blocks(io, i.fs, *ino, 0, &mut released)?;
                    self.pager.remove(io, &mut self.tree, &part_key(*ino))?;
                }
            }
            Record::Ns(n) => {
                return self
                    .apply_ns(io, n)
                    .map(|d| d.released)
                    .map_err(|e| match e {
                        NsError::Tree(t) => t,
                        _ => corrupt("a namespace record that does not apply"),
                    });
            }
            Record::Stripe(s) => {
                self.next_stripe = self.next_stripe.max(s.id + 1);
                let mut w = Writer::default();
                encode_record(&mut w, rec);
                for (part, bytes) in w.buf.chunks(MAX_VALUE).enumerate() {
                    let part = u8::try_from(part).map_err(|_| TreeError::TooLarge {
                        key: 10,
                        value: w.buf.len(),
                    })?;
                    self.pager
                        .insert(io, &mut self.tree, &stripe_key(s.id, part), bytes)?;
                }
                self.stripes.put(Arc::new(s.clone()));
            }
            Record::Extents {
                ino,
                size,
                blocks,
                mtime,
            } => {
                if let Some(held) = self.held(io, *ino)? {
                    let fs = held.inode().fs;
                    let mut new_blocks = 0i64;
                    for (idx, b) in blocks {
                        let old = self.pager.insert(
                            io,
                            &mut self.tree,
                            &block_key(*ino, *idx),
                            &encode_block(b),
                        )?;
                        added.push(*b);
                        match old {
                            Some(old) => {
                                let old = decode_block(&old)?;
                                self.drop_block(io, fs, *ino, *idx, old, &mut released)?;
                            }
                            None => new_blocks += 1,
                        }
                    }
                    self.set_size(io, held, *size, *mtime, new_blocks)?;
                }
            }
            Record::StripeFree { id } => {
                let mut part = 0u8;
                while self
                    .pager
                    .remove(io, &mut self.tree, &stripe_key(*id, part))?
                    .is_some()
                {
                    part += 1;
                }
                self.pager.remove(io, &mut self.tree, &refs_key(*id))?;
                self.stripes.remove(*id);
            }
            Record::Truncate { ino, size, mtime } => {
                if let Some(held) = self.held(io, *ino)? {
                    let fs = held.inode().fs;
                    let cut = self.cut_blocks(io, fs, *ino, size.div_ceil(BLOCK), &mut released)?;
                    self.set_size(io, held, *size, *mtime, -(cut as i64))?;
                }
            }
            Record::SharedPut { fs, key, block } => {
                added.push(block.as_ref());
                let v = encode_block(&block.as_ref());
                match self
                    .pager
                    .insert(io, &mut self.tree, &shared_key(*fs, *key), &v)?
                {
                    Some(old) => released.push((*fs, decode_block(&old)?)),
                    None => self.shared_len += 1,
                }
            }
            Record::SharedDrop { fs, key } => {
                if let Some(old) = self
                    .pager
                    .remove(io, &mut self.tree, &shared_key(*fs, *key))?
                {
                    released.push((*fs, decode_block(&old)?));
                    self.shared_len -= 1;
                }
            }
            Record::OrgCreate(o) => {
                self.orgs.insert(o.id, o.clone());
            }
            Record::FsOwner { fs, org } => {
                self.fs_owner.insert(*fs, *org);
            }
            Record::FsDelete { fs } => {
                let ids: Vec<SnapId> = self.snaps_of(*fs).map(|s| s.id).collect();
                for id in ids {
                    self.snap_delete(io, id, &mut released)?;
                }
                released.extend(self.drop_fs_files(io, *fs)?);
                self.fss.remove(fs);
                self.fs_owner.remove(fs);
                self.fs_group.remove(fs);
                self.clones.remove(fs);
                self.quotas.retain(|_, q| q.fs != *fs);
                self.used.remove(fs);
            }
            Record::FsMode { fs, write_back } => {
                if let Some(f) = self.fss.get_mut(fs) {
                    f.write_back = *write_back;
                }
            }
            Record::SnapCreate(snap) => {
                self.snaps.insert(snap.id, snap.clone());
            }
            Record::SnapDelete { id } => {
                self.snap_delete(io, *id, &mut released)?;
            }
            Record::SnapRestore { id } => {
                self.snap_restore(io, *id, &mut released)?;
            }
            Record::RestoreMark { id } => {
                self.restoring = *id;
            }
            Record::GroupCreate(g) => {
                self.groups.insert(g.id, g.clone());
            }
            Record::GroupDelete { id } => {
                self.groups.remove(id);
                self.fs_group.retain(|_, g| g != id);
            }
            Record::FsGroup { fs, group } => {
                if *group == 0 {
                    self.fs_group.remove(fs);
                } else {
                    self.fs_group.insert(*fs, *group);
                }
            }
            Record::QuotaSet(q) => {
                self.quotas.insert(q.id, q.clone());
            }
            Record::QuotaUnset { id } => {
                self.quotas.remove(id);
            }
            Record::QuotaTag { ino, quota } => self.quota_tag(io, *ino, *quota)?,
            Record::CloneMark(c) => {
                self.clones.insert(c.fs, c.clone());
            }
            Record::SnapClone { fs, clone } => self.snap_clone(io, fs, clone)?,
            Record::QuotaUsage { id, bytes } => {
                self.quota_used.insert(*id, *bytes);
                self.quota_changed.insert(*id);
            }
            // The write-ahead log's bytes: the store's replay keeps them.
            Record::OpenData { .. } => {}
        }
        self.count_refs(io, &added, &released)?;
        Ok(released)
    }

    /// Keeps each stripe's count of live references: `added` blocks came
    /// into this shard's maps or pool, `released` ones left (references to
    /// other shards' pools are counted by their owners).
    pub(super) fn count_refs(
        &mut self,
        io: &mut dyn PageIo,
        added: &[BlockRef],
        released: &Released,
    ) -> Result<()> {
        let mut delta: BTreeMap<u64, i64> = BTreeMap::new();
        for b in added.iter().filter(|b| b.owner().is_none()) {
            *delta.entry(b.addr.stripe).or_default() += 1;
        }
        for (_, b) in released.iter().filter(|(_, b)| b.owner().is_none()) {
            *delta.entry(b.addr.stripe).or_default() -= 1;
        }
        for (id, d) in delta {
            if d == 0 {
                continue;
            }
            let key = refs_key(id);
            let now = match self.pager.get(io, &self.tree, &key)? {
                Some(v) => u64::from_le_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| corrupt("a stripe reference count"))?,
                ),
                None => 0,
            };
            let next = now as i64 + d;
            debug_assert!(next >= 0, "stripe {id}: {now} references, {d} change");
            if next <= 0 {
                self.pager.remove(io, &mut self.tree, &key)?;
            } else {
                self.pager
                    .insert(io, &mut self.tree, &key, &(next as u64).to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Every stripe's count of live references on this shard (a stripe with
    /// none is absent).
    pub fn stripe_refs(&mut self, io: &mut dyn PageIo) -> Result<HashMap<u64, u64>> {
        let mut out = HashMap::new();
        let mut bad = false;
        self.pager.scan(io, &self.tree, b"r", &mut |k, v| {
            if k.len() != 9 || k[0] != b'r' {
                return false;
            }
            match <[u8; 8]>::try_from(v) {
                Ok(n) => {
                    out.insert(be64(&k[1..]), u64::from_le_bytes(n));
                    true
                }
                Err(_) => {
                    bad = true;
                    false
                }
            }
        })?;
        if bad {
            return Err(corrupt("a stripe reference count"));
        }
        Ok(out)
    }

    /// Writes the changed pages (not flushed) and closes the generation:
    /// returns the pages superseded, to free once the root naming the new
    /// pages ([`Meta::encode_root`]) is durable.
    pub fn commit(&mut self, io: &mut dyn PageIo) -> Result<Vec<PagePtr>> {
        self.pager.commit(io, &mut self.tree)?;
        Ok(self.pager.finish())
    }

    /// Checks the tree's structure; returns what is wrong.
    pub fn check(&mut self, io: &mut dyn PageIo) -> Result<Vec<String>> {
        self.pager.check(io, &self.tree)
    }

    /// Every page the committed tree reaches.
    pub fn pages(&mut self, io: &mut dyn PageIo) -> Result<Vec<PagePtr>> {
        self.pager.pages_of(io, &self.tree)
    }

    /// The root record: the catalog, the counters and the tree's root (a
    /// checkpoint's payload, with the page space's own table after it).
    /// Panics if the tree has changes not yet committed.
    pub fn encode_root(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.next_fs).u64(self.next_ino).u64(self.next_stripe);
        w.u64(self.next_gen);
        w.u64(self.pager.epoch());
        match self.tree.root() {
            Some(p) => w.u8(1).u64(p.addr).u64(p.birth),
            None => w.u8(0),
        };
        w.u64(self.tree.len()).u64(self.shared_len);
        let mut recs: Vec<Record> = self.fss.values().cloned().map(Record::FsCreate).collect();
        recs.extend(self.orgs.values().cloned().map(Record::OrgCreate));
        for (&fs, &org) in &self.fs_owner {
            recs.push(Record::FsOwner { fs, org });
        }
        recs.extend(self.snaps.values().cloned().map(Record::SnapCreate));
        recs.extend(self.groups.values().cloned().map(Record::GroupCreate));
        for (&fs, &group) in &self.fs_group {
            recs.push(Record::FsGroup { fs, group });
        }
        recs.extend(self.quotas.values().cloned().map(Record::QuotaSet));
        for (&id, &bytes) in &self.quota_used {
            recs.push(Record::QuotaUsage { id, bytes });
        }
        recs.extend(self.clones.values().cloned().map(Record::CloneMark));
        if self.restoring.is_some() {
            recs.push(Record::RestoreMark { id: self.restoring });
        }
        w.u32(recs.len() as u32);
        for r in &recs {
            encode_record(&mut w, r);
        }
        w.u32(self.used.len() as u32);
        for (&fs, &u) in &self.used {
            w.u32(fs).u64(u);
        }
        w.buf
    }

    /// Reads a root record from `r` (which goes on with what follows it).
    pub fn decode_root(
        r: &mut Reader<'_>,
        cache_bytes: usize,
    ) -> std::result::Result<Meta, DecodeError> {
        let mut m = Meta::new(0);
        m.next_fs = r.u32("next fs")?;
        m.next_ino = r.u64("next ino")?;
        m.next_stripe = r.u64("next stripe")?;
        m.next_gen = r.u64("next generation")?;
        let epoch = r.u64("epoch")?;
        let root = match r.u8("root flag")? {
            0 => None,
            1 => Some(PagePtr {
                addr: r.u64("root address")?,
                birth: r.u64("root birth")?,
            }),
            _ => return Err(DecodeError { what: "root flag" }),
        };
        if root.is_some_and(|p| p.birth >= epoch) {
            return Err(DecodeError { what: "root epoch" });
        }
        m.tree = Tree::open(root, r.u64("entries")?);
        m.shared_len = r.u64("shared blocks")?;
        m.pager = Pager::new(epoch, cache_bytes);
        for _ in 0..r.count(2, "catalog count")? {
            match decode_record(r)? {
                rec @ (Record::FsCreate(_)
                | Record::OrgCreate(_)
                | Record::FsOwner { .. }
                | Record::SnapCreate(_)
                | Record::GroupCreate(_)
                | Record::FsGroup { .. }
                | Record::QuotaSet(_)
                | Record::QuotaUsage { .. }
                | Record::CloneMark(_)
                | Record::RestoreMark { .. }) => {
                    let mut none = super::btree::MemPages::new();
                    // Catalog records touch no pages.
                    m.apply(&mut none, &rec)
                        .map_err(|_| DecodeError { what: "catalog" })?;
                }
                _ => return Err(DecodeError { what: "catalog" }),
            }
        }
        for _ in 0..r.count(12, "usage count")? {
            let fs = r.u32("fs")?;
            m.used.insert(fs, r.u64("used")?);
        }
        Ok(m)
    }
}
