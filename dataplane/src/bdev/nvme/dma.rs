//! Memory the controller reads and writes: page-aligned, zeroed, at a
//! stable address, with the bus address (IOVA) the controller uses — given
//! by a [`DmaMap`]: the IOMMU (VFIO), or the identity for a controller in
//! this process (the tests' fake).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

/// Maps memory for a controller's DMA.
pub trait DmaMap: Send + Sync {
    /// Maps `len` bytes at `vaddr`; returns their bus address.
    fn map(&self, vaddr: u64, len: usize) -> io::Result<u64>;
    /// Unmaps what [`DmaMap::map`] mapped.
    fn unmap(&self, _iova: u64, _len: usize) {}
}

/// Bus address = address (a controller in this process).
pub struct Identity;

impl DmaMap for Identity {
    fn map(&self, vaddr: u64, _len: usize) -> io::Result<u64> {
        Ok(vaddr)
    }
}

/// The page size the driver programs (CC.MPS = 0).
pub const PAGE: usize = 4096;

/// A page-aligned buffer shared with a controller.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    map: Arc<dyn DmaMap>,
}

// SAFETY: the buffer is plain memory owned by this value; the driver hands
// its address to one controller and synchronizes accesses with fences and
// the queue protocol (phase bits, doorbells).
unsafe impl Send for DmaBuf {}
// SAFETY: as above; shared references only read through raw pointers with
// volatile accesses.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// `len` bytes (rounded up to whole pages), zeroed, at bus address =
    /// address.
    pub fn new(len: usize) -> DmaBuf {
        Self::mapped(len, &(Arc::new(Identity) as Arc<dyn DmaMap>))
            .expect("the identity map cannot fail")
    }

    /// `len` bytes (rounded up to whole pages), zeroed, mapped by `map`.
    pub fn mapped(len: usize, map: &Arc<dyn DmaMap>) -> io::Result<DmaBuf> {
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(len, PAGE).expect("page-aligned layout");
        // SAFETY: the layout has a nonzero size.
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let iova = match map.map(p as u64, len) {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: allocated just above with this layout.
                unsafe { dealloc(p, layout) };
                return Err(e);
            }
        };
        Ok(DmaBuf {
            ptr,
            len,
            iova,
            map: map.clone(),
        })
    }

    /// Its bus address.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Its first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` in at `at` with volatile stores (the device may read
    /// it at any time after a doorbell).
    pub fn write(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len, "DMA write past the buffer");
        for (i, b) in src.iter().enumerate() {
            // SAFETY: in bounds (asserted); the memory is ours and alive.
            unsafe { self.ptr.as_ptr().add(at + i).write_volatile(*b) };
        }
    }

    /// Copies `dst.len()` bytes out from `at` with volatile loads (the
    /// device may have written them).
    pub fn read(&self, at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= self.len, "DMA read past the buffer");
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: in bounds (asserted); the memory is ours and alive.
            *b = unsafe { self.ptr.as_ptr().add(at + i).read_volatile() };
        }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.map.unmap(self.iova, self.len);
        let layout = Layout::from_size_align(self.len, PAGE).expect("page-aligned layout");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}
