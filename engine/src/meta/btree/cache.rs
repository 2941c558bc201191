//! A bounded cache of clean (written) nodes, least recently used out.
//!
//! Recency is kept as a queue of (address, stamp) with lazy deletion: a hit
//! pushes a new stamp, eviction pops until it finds an entry whose stamp is
//! current. Both are O(1) amortised; the queue is compacted when stale
//! stamps outnumber live entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::page::Node;
use super::PageAddr;

pub(super) struct Cache {
    map: HashMap<PageAddr, (Arc<Node>, u64)>,
    lru: VecDeque<(PageAddr, u64)>,
    clock: u64,
    /// Most nodes held.
    cap: usize,
}

impl Cache {
    /// A cache of at most `cap` nodes (at least one).
    pub fn new(cap: usize) -> Cache {
        Cache {
            map: HashMap::new(),
            lru: VecDeque::new(),
            clock: 0,
            cap: cap.max(1),
        }
    }

    /// The node cached for `addr` if it is the version born at `birth`.
    pub fn get(&mut self, addr: PageAddr, birth: u64) -> Option<Arc<Node>> {
        let e = self.map.get_mut(&addr)?;
        if e.0.birth != birth {
            return None;
        }
        self.clock += 1;
        e.1 = self.clock;
        self.lru.push_back((addr, self.clock));
        let node = e.0.clone();
        self.compact();
        Some(node)
    }

    /// Caches `node` as page `addr`, evicting the least recently used.
    pub fn put(&mut self, addr: PageAddr, node: Arc<Node>) {
        self.clock += 1;
        self.map.insert(addr, (node, self.clock));
        self.lru.push_back((addr, self.clock));
        while self.map.len() > self.cap {
            let Some((a, stamp)) = self.lru.pop_front() else {
                break;
            };
            if self.map.get(&a).is_some_and(|e| e.1 == stamp) {
                self.map.remove(&a);
            }
        }
        self.compact();
    }

    /// Forgets page `addr` (retired).
    pub fn remove(&mut self, addr: PageAddr) -> Option<Arc<Node>> {
        self.map.remove(&addr).map(|e| e.0)
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn compact(&mut self) {
        if self.lru.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.lru
                .retain(|(a, stamp)| map.get(a).is_some_and(|e| e.1 == *stamp));
        }
        debug_assert!(self.map.len() <= self.cap);
    }
}
