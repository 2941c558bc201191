//! Memory the controller reads and writes: page-aligned, zeroed, at a
//! stable address, with the bus address (IOVA) the controller uses. The
//! driver maps each buffer into the IOMMU at IOVA = its virtual address
//! (VFIO type1 allows any IOVA), so the IOVA of a byte is its address.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// The page size the driver programs (CC.MPS = 0).
pub const PAGE: usize = 4096;

/// A page-aligned buffer shared with a controller.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value; the driver hands
// its address to one controller and synchronizes accesses with fences and
// the queue protocol (phase bits, doorbells).
unsafe impl Send for DmaBuf {}
// SAFETY: as above; shared references only read through raw pointers with
// volatile accesses.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// `len` bytes (rounded up to whole pages), zeroed.
    pub fn new(len: usize) -> DmaBuf {
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(len, PAGE).expect("page-aligned layout");
        // SAFETY: the layout has a nonzero size.
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        DmaBuf { ptr, len }
    }

    /// Its bus address.
    pub fn iova(&self) -> u64 {
        self.ptr.as_ptr() as u64
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
        let layout = Layout::from_size_align(self.len, PAGE).expect("page-aligned layout");
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}
