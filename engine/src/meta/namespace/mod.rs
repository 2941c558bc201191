//! A file system's namespace on a B+tree: inodes, directory entries,
//! symlink targets and extended attributes, with POSIX semantics and the
//! errno of every refusal in the file of its operation.
//!
//! Keys (big-endian fields, so entries of one directory are adjacent and in
//! order):
//!
//! ```text
//! 'I' ino                 -> the inode's attributes (Attr)
//! 'N' dir name            -> the entry: its sequence number, inode, kind
//! 'E' dir seq             -> the same entry by sequence: readdir's order
//! 'L' ino part            -> a symlink's target, in parts of MAX_VALUE
//! 'X' ino name            -> an extended attribute's value
//! ```
//!
//! Each entry has a sequence number from its directory's counter, so
//! `readdir` resumes from a cookie (the last sequence returned) and an
//! entry present for the whole listing is returned exactly once, however
//! many others are added or removed meanwhile (a rename makes a new entry).
//!
//! One operation a file: `create.rs` (files, directories, symlinks, device
//! nodes), `remove.rs` (unlink, rmdir), `rename.rs`, `link.rs`,
//! `readdir.rs`, `attr.rs` (setattr, xattrs), `span.rs` (the steps of an
//! operation spanning shards). This layer changes the tree of one shard:
//! an operation that needs an inode another shard holds is refused with
//! [`NsError::Remote`] before it changes anything, and the engine runs it
//! as journaled steps on each shard instead.

mod attr;
mod check;
mod create;
mod link;
mod readdir;
mod remove;
mod rename;
mod span;

use std::fmt;

use super::btree::{PageIo, Pager, Tree, TreeError, MAX_VALUE};

pub use attr::{SetAttr, XattrMode};
pub use check::{check, Facts};
pub use create::inherit;
pub use readdir::DirEntry;
pub use remove::Removed;
pub use rename::RenameFlags;

/// An inode number within a namespace.
pub type Ino = u64;

/// The root directory's inode.
pub const ROOT: Ino = 1;
/// Longest name of an entry.
pub const NAME_MAX: usize = 255;
/// Longest symlink target.
pub const PATH_MAX: usize = 4095;
/// Longest extended attribute name.
pub const XATTR_NAME_MAX: usize = 255;

/// What an inode is (the `S_IFMT` bits of its mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
    /// A symbolic link.
    Symlink = 3,
    /// A FIFO.
    Fifo = 4,
    /// A character device.
    Char = 5,
    /// A block device.
    Block = 6,
    /// A socket.
    Socket = 7,
}

impl Kind {
    /// The kind `S_IFMT` bits of a mode name.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Char => libc::S_IFCHR,
            Kind::Block => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Char,
            Kind::Block,
            Kind::Socket,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

/// A time in nanoseconds since the epoch.
pub type Nanos = i64;

/// An inode's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Generation: with the number, names this inode and no later one.
    pub generation: u64,
    /// The file system it belongs to.
    pub fs: u32,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky), without the kind.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Links: entries naming it (a directory: 2 plus its subdirectories).
    pub nlink: u32,
    /// Size in bytes (a symlink: its target's length).
    pub size: u64,
    /// Device number of a device node.
    pub rdev: u32,
    /// Last access.
    pub atime: Nanos,
    /// Last change of the contents.
    pub mtime: Nanos,
    /// Last change of the inode.
    pub ctime: Nanos,
    /// A directory's parent (its `..`); 0 for others.
    pub parent: Ino,
    /// A directory's next entry sequence number.
    pub next_seq: u64,
    /// A regular file's stored 4 KiB blocks on its home shard (holes
    /// excluded), kept by the data path so `stat` does not count them.
    pub blocks: u64,
    /// The innermost directory quota it lies under (0: none); a new inode
    /// takes its directory's.
    pub quota: u32,
}

/// An attribute record before quotas (still read).
const ATTR_LEN_V1: usize = 8 + 8 + 4 + 1 + 4 * 5 + 8 + 8 * 3 + 8 + 8 + 8;
const ATTR_LEN: usize = ATTR_LEN_V1 + 4;

impl Attr {
    /// The full mode: kind bits and permissions.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | self.perm
    }

    /// Whether this is a file system's root directory (its own parent).
    pub fn is_root(&self) -> bool {
        self.kind == Kind::Dir && self.parent == self.ino
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ATTR_LEN);
        b.extend_from_slice(&self.ino.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.fs.to_le_bytes());
        b.push(self.kind as u8);
        for v in [self.perm, self.uid, self.gid, self.nlink, self.rdev] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.size.to_le_bytes());
        for t in [self.atime, self.mtime, self.ctime] {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(&self.parent.to_le_bytes());
        b.extend_from_slice(&self.next_seq.to_le_bytes());
        b.extend_from_slice(&self.blocks.to_le_bytes());
        b.extend_from_slice(&self.quota.to_le_bytes());
        debug_assert_eq!(b.len(), ATTR_LEN);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Attr> {
        if b.len() != ATTR_LEN && b.len() != ATTR_LEN_V1 {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Attr {
            ino: u64_at(0),
            generation: u64_at(8),
            fs: u32_at(16),
            kind: Kind::from_u8(b[20])?,
            perm: u32_at(21),
            uid: u32_at(25),
            gid: u32_at(29),
            nlink: u32_at(33),
            rdev: u32_at(37),
            size: u64_at(41),
            atime: u64_at(49) as i64,
            mtime: u64_at(57) as i64,
            ctime: u64_at(65) as i64,
            parent: u64_at(73),
            next_seq: u64_at(81),
            blocks: u64_at(89),
            quota: if b.len() == ATTR_LEN { u32_at(97) } else { 0 },
        })
    }
}

/// Who asks, and when: the caller's credentials (owners of what it
/// creates) and the time its changes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Now, in nanoseconds since the epoch.
    pub now: Nanos,
}

/// Why a namespace operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsError {
    /// No such entry or inode (ENOENT).
    NotFound,
    /// The name is taken (EEXIST).
    Exists,
    /// A path component or the target is not a directory (ENOTDIR).
    NotDir,
    /// The target is a directory (EISDIR).
    IsDir,
    /// The directory is not empty (ENOTEMPTY).
    NotEmpty,
    /// A name or target is too long (ENAMETOOLONG).
    NameTooLong,
    /// An argument is invalid: a bad name, `.`/`..`, moving a directory
    /// under itself, conflicting flags (EINVAL).
    Invalid(&'static str),
    /// Too many links to one inode (EMLINK).
    TooManyLinks,
    /// No such extended attribute (ENODATA).
    NoAttr,
    /// Not a symlink (EINVAL from readlink).
    NotSymlink,
    /// Not permitted: a hard link to a directory (EPERM).
    NotPermitted,
    /// An extended attribute's value is too large (E2BIG).
    ValueTooLarge,
    /// Too many symbolic links met resolving a path (ELOOP).
    Loop,
    /// A rename or link between file systems (EXDEV).
    CrossDevice,
    /// A rename or hard link across a directory quota's boundary (EXDEV,
    /// as WEKA: `mv` copies instead).
    QuotaBoundary,
    /// The operation needs inode `0`, which another shard holds: the
    /// engine runs it as an operation spanning shards instead (EREMOTE if
    /// it ever reaches a caller).
    Remote(Ino),
    /// The tree failed (I/O, damage, space).
    Tree(TreeError),
}

impl NsError {
    /// The negated errno.
    pub fn errno(&self) -> i32 {
        -match self {
            NsError::NotFound => libc::ENOENT,
            NsError::Exists => libc::EEXIST,
            NsError::NotDir => libc::ENOTDIR,
            NsError::IsDir => libc::EISDIR,
            NsError::NotEmpty => libc::ENOTEMPTY,
            NsError::NameTooLong => libc::ENAMETOOLONG,
            NsError::Invalid(_) | NsError::NotSymlink => libc::EINVAL,
            NsError::TooManyLinks => libc::EMLINK,
            NsError::NoAttr => libc::ENODATA,
            NsError::NotPermitted => libc::EPERM,
            NsError::ValueTooLarge => libc::E2BIG,
            NsError::Loop => libc::ELOOP,
            NsError::CrossDevice | NsError::QuotaBoundary => libc::EXDEV,
            NsError::Remote(_) => libc::EREMOTE,
            NsError::Tree(e) => return e.errno(),
        }
    }
}

impl fmt::Display for NsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsError::NotFound => write!(f, "no such file or directory"),
            NsError::Exists => write!(f, "file exists"),
            NsError::NotDir => write!(f, "not a directory"),
            NsError::IsDir => write!(f, "is a directory"),
            NsError::NotEmpty => write!(f, "directory not empty"),
            NsError::NameTooLong => write!(f, "name too long (names up to {NAME_MAX} bytes)"),
            NsError::Invalid(why) => write!(f, "invalid argument: {why}"),
            NsError::TooManyLinks => write!(f, "too many links"),
            NsError::NoAttr => write!(f, "no such extended attribute"),
            NsError::NotSymlink => write!(f, "not a symbolic link"),
            NsError::NotPermitted => write!(f, "operation not permitted"),
            NsError::ValueTooLarge => write!(
                f,
                "extended attribute value too large (at most {MAX_VALUE} bytes)"
            ),
            NsError::Loop => write!(f, "too many levels of symbolic links"),
            NsError::CrossDevice => write!(f, "a rename or link stays within one file system"),
            NsError::QuotaBoundary => write!(
                f,
                "a rename or link stays within one directory quota (copy across it instead)"
            ),
            NsError::Remote(ino) => write!(f, "inode {ino} is held by another shard"),
            NsError::Tree(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NsError {}

impl From<TreeError> for NsError {
    fn from(e: TreeError) -> Self {
        NsError::Tree(e)
    }
}

/// Result alias.
pub type Result<T, E = NsError> = std::result::Result<T, E>;

/// Most links to one inode.
pub const LINK_MAX: u32 = 65_000;

pub(crate) fn inode_key(ino: Ino) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'I';
    k[1..].copy_from_slice(&ino.to_be_bytes());
    k
}

/// The key of entry `name` of `dir`: the name itself, or for a name too
/// long to fit a key whole, its first bytes and a 128-bit hash of all of it.
fn name_key(dir: Ino, name: &[u8]) -> Vec<u8> {
    const WHOLE: usize = super::btree::MAX_KEY - 9;
    const HEAD: usize = WHOLE - 16;
    let mut k = Vec::with_capacity(9 + name.len().min(WHOLE));
    k.push(b'N');
    k.extend_from_slice(&dir.to_be_bytes());
    if name.len() <= WHOLE {
        k.extend_from_slice(name);
    } else {
        k.extend_from_slice(&name[..HEAD]);
        k.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(name).to_be_bytes());
    }
    debug_assert!(k.len() <= super::btree::MAX_KEY);
    k
}

fn seq_key(dir: Ino, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'E';
    k[1..9].copy_from_slice(&dir.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn link_key(ino: Ino, part: u8) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'L';
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k[9] = part;
    k
}

fn xattr_key(ino: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.push(b'X');
    k.extend_from_slice(&ino.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// A directory entry as the name index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    ino: Ino,
    kind: Kind,
}

impl Entry {
    fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.kind as u8;
        b
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        (b.len() == 17).then_some(())?;
        Some(Entry {
            seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            ino: u64::from_le_bytes(b[8..16].try_into().ok()?),
            kind: Kind::from_u8(b[16])?,
        })
    }
}

/// Checks an entry name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(NsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(NsError::Invalid(
            "a name is 1 to 255 bytes without '/' or NUL",
        ));
    }
    if name == b"." || name == b".." {
        return Err(NsError::Invalid(
            "`.` and `..` cannot be created or removed",
        ));
    }
    Ok(())
}

/// Where new inode numbers come from: each create takes `ino` and
/// `generation`, then `ino` moves on by `step` (the engine steps past the
/// shard bits it keeps in the low byte) and the generation by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// The number the next create takes.
    pub ino: Ino,
    /// Its generation.
    pub generation: u64,
    /// How far `ino` moves per create.
    pub step: u64,
}

impl Ids {
    /// A source for operations that create nothing (a create from it is a
    /// bug, caught by its zero number in debug builds).
    pub fn none() -> Ids {
        Ids {
            ino: 0,
            generation: 0,
            step: 0,
        }
    }

    fn take(&mut self) -> (Ino, u64) {
        let out = (self.ino, self.generation);
        self.ino += self.step;
        self.generation += 1;
        out
    }
}

/// Which inodes a shard's tree holds: those whose number carries the
/// shard in its low byte (see [`shard_of_ino`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Home {
    /// This shard.
    pub shard: u32,
    /// Shards of the engine.
    pub shards: u32,
}

impl Home {
    /// A namespace that holds every inode (one shard).
    pub const ALONE: Home = Home {
        shard: 0,
        shards: 1,
    };

    /// Whether inode `ino` lives here.
    pub fn holds(&self, ino: Ino) -> bool {
        shard_of_ino(ino, self.shards) == self.shard
    }
}

/// The shard of `shards` holding inode `ino`: inode numbers carry it in
/// their low byte.
pub fn shard_of_ino(ino: Ino, shards: u32) -> u32 {
    (ino & 0xff) as u32 % shards.max(1)
}

/// One file system's namespace, as a view of a tree: the tree, its pager
/// and page space, the file system new inodes belong to and where their
/// numbers come from. The view owns nothing, so the engine keeps the
/// namespace in the same tree as the rest of a shard's metadata and lends
/// its parts for each operation; [`Standalone`] owns them instead.
///
/// A root directory is its own parent (`..` of `/` is `/`); every other
/// directory reaches a root through its parents.
pub struct Namespace<'a> {
    io: &'a mut dyn PageIo,
    pager: &'a mut Pager,
    tree: &'a mut Tree,
    fs: u32,
    ids: &'a mut Ids,
    home: Home,
}

/// A namespace that owns its tree and page space (tests and the in-memory
/// benchmark; the engine lends its own instead).
pub struct Standalone<I: PageIo> {
    /// The page space.
    pub io: I,
    /// The pager.
    pub pager: Pager,
    /// The tree.
    pub tree: Tree,
    /// Inode numbers.
    pub ids: Ids,
}

impl<I: PageIo> Standalone<I> {
    /// A new namespace whose root directory is [`ROOT`], owned by `ctx`.
    pub fn new(io: I, pager: Pager, ctx: Ctx, perm: u32) -> Result<Standalone<I>> {
        let mut s = Standalone {
            io,
            pager,
            tree: Tree::new(),
            ids: Ids {
                ino: ROOT + 1,
                generation: 1,
                step: 1,
            },
        };
        s.ns().make_root(ROOT, perm, ctx)?;
        Ok(s)
    }

    /// The namespace (of file system 0).
    pub fn ns(&mut self) -> Namespace<'_> {
        Namespace::new(
            &mut self.io,
            &mut self.pager,
            &mut self.tree,
            0,
            &mut self.ids,
            Home::ALONE,
        )
    }

    /// Writes the changed pages and closes the generation; returns the
    /// pages superseded (free them once the root is durable).
    pub fn commit(&mut self) -> Result<Vec<super::btree::PagePtr>> {
        self.pager.commit(&mut self.io, &mut self.tree)?;
        Ok(self.pager.finish())
    }
}

impl<'a> Namespace<'a> {
    /// The namespace of file system `fs` in `tree`, whose new inodes take
    /// their numbers from `ids`; the tree holds the inodes of `home`.
    pub fn new(
        io: &'a mut dyn PageIo,
        pager: &'a mut Pager,
        tree: &'a mut Tree,
        fs: u32,
        ids: &'a mut Ids,
        home: Home,
    ) -> Namespace<'a> {
        Namespace {
            io,
            pager,
            tree,
            fs,
            ids,
            home,
        }
    }

    /// Creates a root directory numbered `ino`, owned by `ctx`.
    pub fn make_root(&mut self, ino: Ino, perm: u32, ctx: Ctx) -> Result<Attr> {
        if self
            .pager
            .get(&mut *self.io, &*self.tree, &inode_key(ino))?
            .is_some()
        {
            return Err(NsError::Exists);
        }
        let root = Attr {
            ino,
            generation: 0,
            fs: self.fs,
            kind: Kind::Dir,
            perm: perm & 0o7777,
            uid: ctx.uid,
            gid: ctx.gid,
            nlink: 2,
            size: 0,
            rdev: 0,
            atime: ctx.now,
            mtime: ctx.now,
            ctime: ctx.now,
            parent: ino,
            next_seq: 1,
            blocks: 0,
            quota: 0,
        };
        self.put_attr(&root)?;
        Ok(root)
    }

    /// An inode's attributes; [`NsError::Remote`] if another shard holds
    /// it (every operation reads an inode before it changes anything, so
    /// one that needs another shard's inode is refused whole).
    pub fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        if !self.home.holds(ino) {
            return Err(NsError::Remote(ino));
        }
        let v = self
            .pager
            .get(&mut *self.io, &*self.tree, &inode_key(ino))?
            .ok_or(NsError::NotFound)?;
        Attr::decode(&v).ok_or(NsError::Tree(TreeError::Corrupt {
            page: 0,
            what: "inode record",
        }))
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup(&mut self, dir: Ino, name: &[u8]) -> Result<Attr> {
        let e = self.entry(dir, name)?.ok_or(NsError::NotFound)?;
        self.getattr(e.ino)
    }

    /// A directory's attributes; ENOTDIR if it is something else.
    fn dir(&mut self, dir: Ino) -> Result<Attr> {
        let a = self.getattr(dir)?;
        if a.kind != Kind::Dir {
            return Err(NsError::NotDir);
        }
        Ok(a)
    }

    fn entry(&mut self, dir: Ino, name: &[u8]) -> Result<Option<Entry>> {
        if name.len() > NAME_MAX {
            return Err(NsError::NameTooLong);
        }
        // Only directories hold entries, so a hit needs no check of `dir`;
        // a miss tells ENOENT from ENOTDIR.
        match self
            .pager
            .get(&mut *self.io, &*self.tree, &name_key(dir, name))?
        {
            Some(v) => Ok(Entry::decode(&v)),
            None => {
                self.dir(dir)?;
                Ok(None)
            }
        }
    }

    fn put_attr(&mut self, a: &Attr) -> Result<()> {
        self.pager.insert(
            &mut *self.io,
            &mut *self.tree,
            &inode_key(a.ino),
            &a.encode(),
        )?;
        Ok(())
    }

    /// Adds entry `name` -> `ino` to directory `d` (whose attributes the
    /// caller holds and writes back).
    fn add_entry(&mut self, d: &mut Attr, name: &[u8], ino: Ino, kind: Kind) -> Result<()> {
        let e = Entry {
            seq: d.next_seq,
            ino,
            kind,
        };
        d.next_seq += 1;
        self.pager.insert(
            &mut *self.io,
            &mut *self.tree,
            &name_key(d.ino, name),
            &e.encode(),
        )?;
        let mut by_seq = e.encode().to_vec();
        by_seq.extend_from_slice(name);
        // (ino, kind, name) by sequence; name lengths fit MAX_VALUE.
        const _: () = assert!(17 + NAME_MAX <= MAX_VALUE);
        self.pager.insert(
            &mut *self.io,
            &mut *self.tree,
            &seq_key(d.ino, e.seq),
            &by_seq,
        )?;
        Ok(())
    }

    fn remove_entry(&mut self, dir: Ino, name: &[u8], e: &Entry) -> Result<()> {
        self.pager
            .remove(&mut *self.io, &mut *self.tree, &name_key(dir, name))?;
        self.pager
            .remove(&mut *self.io, &mut *self.tree, &seq_key(dir, e.seq))?;
        Ok(())
    }

    fn new_ino(&mut self) -> (Ino, u64) {
        self.ids.take()
    }

    /// Drops one link to inode `a`; removes the inode (and its symlink
    /// target and xattrs) when none is left. Returns whether it was removed
    /// (the engine then frees its data).
    fn drop_link(&mut self, mut a: Attr, now: Nanos) -> Result<bool> {
        let last = match a.kind {
            Kind::Dir => true,
            _ => a.nlink <= 1,
        };
        if !last {
            a.nlink -= 1;
            a.ctime = now;
            self.put_attr(&a)?;
            return Ok(false);
        }
        self.pager
            .remove(&mut *self.io, &mut *self.tree, &inode_key(a.ino))?;
        if a.kind == Kind::Symlink {
            for part in 0..=(PATH_MAX / MAX_VALUE) as u8 {
                self.pager
                    .remove(&mut *self.io, &mut *self.tree, &link_key(a.ino, part))?;
            }
        }
        for name in self.listxattr(a.ino)? {
            self.pager
                .remove(&mut *self.io, &mut *self.tree, &xattr_key(a.ino, &name))?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
