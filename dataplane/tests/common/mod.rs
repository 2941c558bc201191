//! Helpers shared by the dataplane's integration tests.
#![allow(dead_code)]

use flint_dataplane::bdev::{Completion, IoCmd, QueuePair};
use flint_dataplane::reactor::{ReactorConfig, ReactorSet};
use flint_dataplane::IoError;
use std::time::{Duration, Instant};

/// Adaptive reactors on up to `n` of this process's CPUs (tests share two).
pub fn reactors(n: usize) -> ReactorSet {
    let cpus = flint_dataplane::placement::allowed_cores().expect("affinity");
    let cores: Vec<usize> = cpus.iter().copied().cycle().take(n).collect();
    let mut uniq = cores.clone();
    uniq.sort();
    uniq.dedup();
    let cfg = ReactorConfig {
        // Fewer CPUs than reactors: run unpinned on the CPUs we have.
        pin: uniq.len() == cores.len(),
        cores: if uniq.len() == cores.len() {
            cores
        } else {
            vec![]
        },
        ..ReactorConfig::default()
    };
    ReactorSet::start(&cfg).expect("start reactors")
}

/// Submits one command and polls until it completes (on a reactor thread).
pub fn io(qp: &mut dyn QueuePair, cmd: IoCmd) -> Result<u32, IoError> {
    // SAFETY (test): every caller keeps the buffer alive and untouched until
    // this function returns, which is after the completion is reaped.
    unsafe { qp.submit(&cmd)? };
    qp.flush();
    let mut out = [Completion::EMPTY; 4];
    let t0 = Instant::now();
    loop {
        let n = qp.poll(&mut out);
        if let Some(c) = out[..n].iter().find(|c| c.tag == cmd.tag) {
            return c.result;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "I/O never completed"
        );
        std::thread::yield_now();
    }
}

/// An aligned heap buffer for tests that need one outside a pool.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    /// `len` bytes aligned to 4 KiB, zeroed.
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        AlignedBuf { ptr, len }
    }
    pub fn ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: we own len initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: we own len initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

// SAFETY: plain owned memory.
unsafe impl Send for AlignedBuf {}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).unwrap();
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

/// A deterministic byte pattern for block `lba`, seeded.
pub fn pattern(buf: &mut [u8], lba: u64, seed: u64) {
    let mut x = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}
