//! DMA buffer pools: per-core, fixed-size, allocated once at start-up.
//!
//! A [`DmaRegion`] is one mapping, backed by 2 MiB hugepages when the system
//! has them reserved (`MAP_HUGETLB`) and by ordinary pre-faulted pages
//! otherwise; either way it is 4 KiB-aligned and suitable for `O_DIRECT` and
//! io_uring registered buffers. A [`BufPool`] cuts a region into equal
//! buffers and hands them out from a free list owned by one core: `get` and
//! `put` are a vector pop and push, no lock and no allocation. An empty pool
//! is back-pressure (`get` returns `None`), never a crash.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::io;
use std::ptr::NonNull;

const HUGE_PAGE: usize = 2 << 20;
/// Alignment every DMA buffer has at least.
pub const DMA_ALIGN: usize = 4096;

/// Whether pools use hugepages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugePages {
    /// Use hugepages when reserved, ordinary pages otherwise.
    #[default]
    Auto,
    /// Never use hugepages.
    Off,
    /// Fail if hugepages are not available.
    Require,
}

/// One anonymous mapping for DMA buffers.
#[derive(Debug)]
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the region is plain memory; who may touch which bytes is governed
// by the buffers handed out, not by the region itself.
unsafe impl Send for DmaRegion {}
// SAFETY: as above; the region itself has no interior state.
unsafe impl Sync for DmaRegion {}

fn map(len: usize, flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint; the result
    // is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::MAP_HUGETLB == 0 {
        // Ask for transparent hugepages (fewer TLB misses) before faulting in.
        // SAFETY: advice on the mapping we just made; failure is harmless.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    }
    // Fault every page in now so the I/O path never takes a page fault.
    // SAFETY: as above; MADV_POPULATE_WRITE (Linux 5.14) only faults pages in.
    if unsafe { libc::madvise(p, len, libc::MADV_POPULATE_WRITE) } != 0 {
        for off in (0..len).step_by(4096) {
            // SAFETY: `off` is inside the fresh, writable mapping.
            unsafe { p.cast::<u8>().add(off).write_volatile(0) };
        }
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))
}

/// Logs, once per process, which memory DMA regions use.
fn announce(huge: bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if huge {
            tracing::info!("DMA buffers: 2 MiB hugepages (MAP_HUGETLB)");
        } else {
            tracing::info!(
                "DMA buffers: ordinary 4 KiB pages (no hugepages reserved;                  echo N > /proc/sys/vm/nr_hugepages to use them)"
            );
        }
    });
}

impl DmaRegion {
    /// Maps at least `len` bytes, with hugepages as `huge` says.
    pub fn new(len: usize, huge: HugePages) -> Result<Self> {
        let region = Self::map_region(len, huge)?;
        announce(region.huge);
        Ok(region)
    }

    fn map_region(len: usize, huge: HugePages) -> Result<Self> {
        let len = len.max(DMA_ALIGN).next_multiple_of(DMA_ALIGN);
        if huge != HugePages::Off {
            let hlen = len.next_multiple_of(HUGE_PAGE);
            match map(hlen, libc::MAP_HUGETLB) {
                Ok(ptr) => {
                    return Ok(DmaRegion {
                        ptr,
                        len: hlen,
                        huge: true,
                    })
                }
                Err(source) if huge == HugePages::Require => {
                    return Err(Error::Memory {
                        bytes: hlen,
                        source: io::Error::new(
                            source.kind(),
                            format!(
                                "{source}; hugepages are required but not reserved: \
                                 echo N > /proc/sys/vm/nr_hugepages, or set hugepages = \"auto\""
                            ),
                        ),
                    })
                }
                Err(_) => {}
            }
        }
        let ptr = map(len, 0).map_err(|source| Error::Memory { bytes: len, source })?;
        Ok(DmaRegion {
            ptr,
            len,
            huge: false,
        })
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the region is backed by hugepages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// The region's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes owned by this region
        // (zero-filled at creation), alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The region's bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Whether `[ptr, ptr + len)` lies inside the region.
    pub fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let base = self.ptr.as_ptr() as usize;
        let p = ptr as usize;
        p >= base && p.saturating_add(len) <= base + self.len
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing refers to it any more (the
        // pool that hands out its buffers is being dropped with it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A buffer from a [`BufPool`]: an exclusive handle to `len` bytes of DMA
/// memory. Give it back with [`BufPool::put`].
#[derive(Debug)]
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    index: u32,
}

// SAFETY: a DmaBuf is the only handle to its bytes, so moving it to another
// thread moves exclusive access with it.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// Start of the buffer.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Start of the buffer, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes (never, for pool buffers).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the buffer in its pool.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer exclusively owns `len` initialised (mapped,
        // zero-filled at start) bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A per-core pool of equal, aligned DMA buffers.
pub struct BufPool {
    region: DmaRegion,
    buf_size: usize,
    count: u32,
    free: Vec<u32>,
}

impl BufPool {
    /// Creates a pool of `count` buffers of `buf_size` bytes (rounded up to
    /// 4 KiB), mapping all memory now.
    pub fn new(count: u32, buf_size: usize, huge: HugePages) -> Result<Self> {
        let buf_size = buf_size.max(1).next_multiple_of(DMA_ALIGN);
        let region = DmaRegion::new(buf_size * count as usize, huge)?;
        Ok(BufPool {
            region,
            buf_size,
            count,
            free: (0..count).rev().collect(),
        })
    }

    /// Takes a buffer; `None` when all are in use (back-pressure).
    #[inline]
    pub fn get(&mut self) -> Option<DmaBuf> {
        let index = self.free.pop()?;
        // SAFETY: index < count, so the offset is inside the region.
        let ptr = unsafe { self.region.as_ptr().add(index as usize * self.buf_size) };
        Some(DmaBuf {
            // SAFETY: derived from the region's non-null base.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len: self.buf_size,
            index,
        })
    }

    /// Returns a buffer. A buffer from another pool is refused and handed back.
    #[inline]
    pub fn put(&mut self, buf: DmaBuf) -> Result<(), DmaBuf> {
        let expected = self.region.as_ptr() as usize + buf.index as usize * self.buf_size;
        if buf.index >= self.count || buf.ptr.as_ptr() as usize != expected {
            return Err(buf);
        }
        self.free.push(buf.index);
        Ok(())
    }

    /// Buffers free now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// The region behind the pool (to register with a device).
    pub fn region(&self) -> &DmaRegion {
        &self.region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_backpressure_and_buffers_are_aligned() {
        let mut pool = BufPool::new(4, 4096, HugePages::Auto).unwrap();
        let bufs: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
        assert!(pool.get().is_none(), "an empty pool says so");
        for b in &bufs {
            assert_eq!(b.as_ptr() as usize % DMA_ALIGN, 0);
            assert!(pool.region().contains(b.as_ptr(), b.len()));
        }
        for b in bufs {
            pool.put(b).unwrap();
        }
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn foreign_buffers_are_refused() {
        let mut a = BufPool::new(2, 4096, HugePages::Off).unwrap();
        let mut b = BufPool::new(2, 4096, HugePages::Off).unwrap();
        let buf = a.get().unwrap();
        let buf = b.put(buf).unwrap_err();
        a.put(buf).unwrap();
    }

    #[test]
    fn require_without_reserved_hugepages_is_a_clear_error() {
        let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
            .map(|s| s.trim() != "0")
            .unwrap_or(false);
        if reserved {
            eprintln!("skip: hugepages are reserved on this machine");
            return;
        }
        let err = BufPool::new(1, 4096, HugePages::Require).err().unwrap();
        assert!(err.to_string().contains("nr_hugepages"), "{err}");
    }
}
