//! One B+tree node as a 4 KiB page on a device.
//!
//! ```text
//! 0..4    magic "FLBT"
//! 4       kind: 1 leaf, 2 branch
//! 5       reserved (0)
//! 6..8    entries (u16)
//! 8..16   birth: the generation that wrote the page
//! 16..24  the page's own address (a page read from the wrong place fails)
//! 24..32  xxh3-64 over bytes 0..24 and 32..4096
//! 32..    leaf:   entries of [key len u16][value len u16][key][value]
//!         branch: [child 0: addr u64, birth u64], then entries of
//!                 [key len u16][key][child: addr u64, birth u64]
//! ```
//!
//! A branch with n children holds n-1 separator keys: child i holds the
//! keys k with `sep[i-1] <= k < sep[i]`. A parent records each child's
//! birth beside its address, so a page that was lost or overwritten by an
//! older generation is caught on read, not trusted (ZFS's block pointers
//! carry the same check).

use crate::pipeline::checksum::SEED_META;

use super::{PageAddr, TreeError, MAX_KEY, MAX_VALUE, PAGE};

const MAGIC: &[u8; 4] = b"FLBT";
const LEAF: u8 = 1;
const BRANCH: u8 = 2;
/// Bytes before the first entry.
pub(super) const HEADER: usize = 32;
/// Bytes of a child pointer (address and birth).
const PTR: usize = 16;

/// A child pointer: where a page lives and the generation that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePtr {
    /// Page address.
    pub addr: PageAddr,
    /// Generation that wrote it.
    pub birth: u64,
}

/// A decoded node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// Generation that made this version of the node.
    pub birth: u64,
    /// Leaf: sorted keys, one per value. Branch: the separators.
    pub keys: Vec<Box<[u8]>>,
    /// Leaf values (empty in a branch).
    pub vals: Vec<Box<[u8]>>,
    /// Branch children, `keys.len() + 1` of them (empty in a leaf).
    pub kids: Vec<super::tree::Ptr>,
}

impl Node {
    /// An empty leaf of generation `birth`.
    pub fn leaf(birth: u64) -> Node {
        Node {
            birth,
            keys: Vec::new(),
            vals: Vec::new(),
            kids: Vec::new(),
        }
    }

    /// Whether this is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.kids.is_empty()
    }

    /// Bytes one leaf entry takes.
    pub fn leaf_entry(key: usize, val: usize) -> usize {
        4 + key + val
    }

    /// Bytes one branch entry (separator and the child after it) takes.
    pub fn branch_entry(key: usize) -> usize {
        2 + key + PTR
    }

    /// Bytes the node takes encoded.
    pub fn size(&self) -> usize {
        if self.is_leaf() {
            HEADER
                + self
                    .keys
                    .iter()
                    .zip(&self.vals)
                    .map(|(k, v)| Self::leaf_entry(k.len(), v.len()))
                    .sum::<usize>()
        } else {
            HEADER
                + PTR
                + self
                    .keys
                    .iter()
                    .map(|k| Self::branch_entry(k.len()))
                    .sum::<usize>()
        }
    }

    /// Encodes the node as the page at `addr`; every child must already
    /// have an address.
    pub fn encode(&self, addr: PageAddr, out: &mut [u8]) {
        debug_assert!(self.size() <= PAGE, "node of {} bytes", self.size());
        debug_assert_eq!(out.len(), PAGE);
        out.fill(0);
        out[..4].copy_from_slice(MAGIC);
        out[4] = if self.is_leaf() { LEAF } else { BRANCH };
        out[6..8].copy_from_slice(&(self.keys.len() as u16).to_le_bytes());
        out[8..16].copy_from_slice(&self.birth.to_le_bytes());
        out[16..24].copy_from_slice(&addr.to_le_bytes());
        let mut at = HEADER;
        let mut put = |b: &[u8], at: &mut usize| {
            out[*at..*at + b.len()].copy_from_slice(b);
            *at += b.len();
        };
        if self.is_leaf() {
            for (k, v) in self.keys.iter().zip(&self.vals) {
                put(&(k.len() as u16).to_le_bytes(), &mut at);
                put(&(v.len() as u16).to_le_bytes(), &mut at);
                put(k, &mut at);
                put(v, &mut at);
            }
        } else {
            let ptr = |p: &super::tree::Ptr| {
                let p = p.on_disk().expect("children are written before parents");
                let mut b = [0u8; PTR];
                b[..8].copy_from_slice(&p.addr.to_le_bytes());
                b[8..].copy_from_slice(&p.birth.to_le_bytes());
                b
            };
            put(&ptr(&self.kids[0]), &mut at);
            for (k, c) in self.keys.iter().zip(&self.kids[1..]) {
                put(&(k.len() as u16).to_le_bytes(), &mut at);
                put(k, &mut at);
                put(&ptr(c), &mut at);
            }
        }
        let sum = checksum(out);
        out[24..32].copy_from_slice(&sum.to_le_bytes());
    }

    /// Decodes the page read from `want.addr`, checking that it is the
    /// version its parent points to.
    pub fn decode(want: PagePtr, page: &[u8]) -> Result<Node, TreeError> {
        let bad = |what: &'static str| TreeError::Corrupt {
            page: want.addr,
            what,
        };
        if page.len() != PAGE || &page[..4] != MAGIC {
            return Err(bad("page magic"));
        }
        let stored = u64::from_le_bytes(page[24..32].try_into().expect("8 bytes"));
        if checksum(page) != stored {
            return Err(bad("page checksum"));
        }
        let addr = u64::from_le_bytes(page[16..24].try_into().expect("8 bytes"));
        let birth = u64::from_le_bytes(page[8..16].try_into().expect("8 bytes"));
        if addr != want.addr {
            return Err(bad("page address (misdirected write)"));
        }
        if birth != want.birth {
            return Err(bad("page generation (lost or stale write)"));
        }
        let n = usize::from(u16::from_le_bytes([page[6], page[7]]));
        let mut at = HEADER;
        let take = |len: usize, at: &mut usize| -> Result<&[u8], TreeError> {
            let end = at.checked_add(len).filter(|e| *e <= PAGE);
            let end = end.ok_or(bad("entry length"))?;
            let b = &page[*at..end];
            *at = end;
            Ok(b)
        };
        let u16_at = |b: &[u8]| usize::from(u16::from_le_bytes([b[0], b[1]]));
        let ptr_at = |b: &[u8]| PagePtr {
            addr: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            birth: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        };
        let mut node = Node::leaf(birth);
        match page[4] {
            LEAF => {
                for _ in 0..n {
                    let kl = u16_at(take(2, &mut at)?);
                    let vl = u16_at(take(2, &mut at)?);
                    if kl > MAX_KEY || vl > MAX_VALUE {
                        return Err(bad("entry length"));
                    }
                    node.keys.push(take(kl, &mut at)?.into());
                    node.vals.push(take(vl, &mut at)?.into());
                }
            }
            BRANCH => {
                node.kids
                    .push(super::tree::Ptr::Disk(ptr_at(take(PTR, &mut at)?)));
                for _ in 0..n {
                    let kl = u16_at(take(2, &mut at)?);
                    if kl > MAX_KEY {
                        return Err(bad("separator length"));
                    }
                    node.keys.push(take(kl, &mut at)?.into());
                    node.kids
                        .push(super::tree::Ptr::Disk(ptr_at(take(PTR, &mut at)?)));
                }
            }
            _ => return Err(bad("page kind")),
        }
        if node.keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("key order"));
        }
        Ok(node)
    }
}

/// Whether `page` is a whole page written for address `addr` (magic, own
/// address and checksum), whatever its generation: what a page space checks
/// to pick a good copy among mirrors and heal the others.
pub fn intact(addr: PageAddr, page: &[u8]) -> bool {
    page.len() == PAGE
        && &page[..4] == MAGIC
        && page[16..24] == addr.to_le_bytes()
        && page[24..32] == checksum(page).to_le_bytes()
}

fn checksum(page: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(SEED_META);
    h.update(&page[..24]);
    h.update(&page[32..]);
    h.digest()
}
