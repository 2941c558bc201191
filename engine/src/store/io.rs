//! Device I/O on the shard's queue pairs: aligned buffers, running a set
//! of commands to completion, and the metadata areas' mirrored writes
//! (every healthy device holds a copy of the journal and checkpoints).

use super::*;

pub(super) struct Dev {
    pub(super) name: String,
    pub(super) qp: Box<dyn QueuePair>,
    pub(super) failed: bool,
    pub(super) errors: u64,
    /// Being emptied (its node leaves): read and written as a member,
    /// but no new chunk goes to it and evacuation moves its chunks off.
    pub(super) retiring: bool,
}

impl Dev {
    /// Whether chunks may stay on it and new ones go to it.
    pub(super) fn keeps(&self) -> bool {
        !self.failed && !self.retiring
    }
}

/// A 4 KiB-aligned buffer for device I/O.
pub(super) struct Scratch(pub(super) AlignedBytes);

impl Scratch {
    pub(super) fn new(len: usize) -> Result<Self> {
        AlignedBytes::new(len)
            .map(Scratch)
            .ok_or_else(|| StoreError::NoSpace {
                what: format!("cannot allocate a {len}-byte I/O buffer"),
            })
    }
}

/// Zeroed heap memory aligned to 4 KiB (what `O_DIRECT` needs).
pub(super) struct AlignedBytes {
    pub(super) ptr: std::ptr::NonNull<u8>,
    pub(super) len: usize,
}

impl AlignedBytes {
    pub(super) fn layout(len: usize) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(len.max(4096).next_multiple_of(4096), 4096).ok()
    }

    pub(super) fn new(len: usize) -> Option<Self> {
        let layout = Self::layout(len)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        Some(AlignedBytes {
            ptr: std::ptr::NonNull::new(ptr)?,
            len: layout.size(),
        })
    }

    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` zero-initialised bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.len) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Runs commands on several queue pairs and waits for all of them.
/// `cmds` are (device index, command); results come back in the same order.
/// A queue pair that is full takes the rest of its commands as earlier ones
/// complete (a batch may be longer than any queue).
pub(super) fn run_io(
    devs: &mut [Option<Dev>],
    cmds: &[(usize, IoCmd)],
) -> Vec<Result<u32, IoError>> {
    let mut results: Vec<Option<Result<u32, IoError>>> = vec![None; cmds.len()];
    let mut next = 0;
    let mut waiting = 0;
    let mut out = [Completion::EMPTY; 32];
    while next < cmds.len() || waiting > 0 {
        // Submit in order until a queue is full.
        while next < cmds.len() {
            let (d, cmd) = &cmds[next];
            let mut cmd = *cmd;
            cmd.tag = next as u64;
            match devs.get_mut(*d).and_then(|x| x.as_mut()) {
                Some(dev) if !dev.failed => {
                    // SAFETY: every buffer named by `cmds` is owned by the
                    // caller and outlives this function, which returns only
                    // after every submitted command has completed.
                    match unsafe { dev.qp.submit(&cmd) } {
                        Ok(()) => waiting += 1,
                        Err(IoError::QueueFull) if waiting > 0 => break,
                        Err(e) => results[next] = Some(Err(e)),
                    }
                }
                _ => {
                    results[next] = Some(Err(IoError::Device {
                        errno: libc::ENODEV,
                    }))
                }
            }
            next += 1;
        }
        for dev in devs.iter_mut().flatten() {
            dev.qp.flush();
        }
        let mut got = 0;
        for dev in devs.iter_mut().flatten() {
            let n = dev.qp.poll(&mut out);
            for c in &out[..n] {
                if let Some(slot) = results.get_mut(c.tag as usize) {
                    *slot = Some(c.result);
                    waiting -= 1;
                }
            }
            got += n;
        }
        if got == 0 {
            std::hint::spin_loop();
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(IoError::Device { errno: libc::EIO })))
        .collect()
}

/// Runs one command on one queue pair and waits for it.
pub(super) fn run_one(dev: &mut Dev, cmd: IoCmd) -> Result<u32, IoError> {
    // SAFETY: the caller's buffer outlives this call, which returns only
    // after the command's completion has been reaped.
    unsafe { dev.qp.submit(&cmd)? };
    dev.qp.flush();
    let mut out = [Completion::EMPTY; 8];
    loop {
        let n = dev.qp.poll(&mut out);
        if let Some(c) = out[..n].iter().find(|c| c.tag == cmd.tag) {
            return c.result;
        }
        if n == 0 {
            std::hint::spin_loop();
        }
    }
}

pub(super) fn open_qpairs(
    core: &mut Core,
    devices: &[Arc<dyn BlockDevice>],
) -> Result<Vec<Option<Dev>>> {
    devices
        .iter()
        .map(|d| {
            Ok(Some(Dev {
                name: d.name().to_string(),
                qp: d.queue_pair(core, &QpairOptions { depth: 64 })?,
                failed: false,
                errors: 0,
                retiring: false,
            }))
        })
        .collect()
}

/// Counts an error on device `d` and takes it out of service.
pub(super) fn mark_failed(devs: &mut [Option<Dev>], d: usize, what: &str) {
    if let Some(dev) = devs.get_mut(d).and_then(|x| x.as_mut()) {
        dev.errors += 1;
        if !dev.failed {
            tracing::error!(device = %dev.name, op = what, "device failed; running degraded");
            dev.failed = true;
        }
    }
}

/// Copies a sealed stripe's chunks, contiguous, into `buf`.
pub(super) fn copy_chunks(s: &SealedStripe<'_>, buf: &mut Scratch) {
    let mut at = 0;
    for c in &s.chunks {
        buf.0.as_mut_slice()[at..at + c.len()].copy_from_slice(c);
        at += c.len();
    }
}

impl Store {
    pub(super) fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| !d.failed))
            .map(|(i, _)| i)
    }

    /// Devices new chunks may go to: healthy and not retiring.
    pub(super) fn placeable(&self) -> impl Iterator<Item = usize> + '_ {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.as_ref().is_some_and(Dev::keeps))
            .map(|(i, _)| i)
    }

    /// Marks devices `which` as retiring (and the others not): nothing new
    /// goes to them, and [`Store::evacuate`] moves their chunks off.
    pub fn set_retiring(&mut self, which: &BTreeSet<usize>) {
        for (i, d) in self.devs.iter_mut().enumerate() {
            if let Some(d) = d {
                d.retiring = which.contains(&i);
            }
        }
    }

    pub(super) fn mark_failed(&mut self, d: usize, what: &str) {
        mark_failed(&mut self.devs, d, what);
    }

    /// Reads `blocks` blocks at `lba` from each of devices `ids`; a device
    /// whose read fails is marked failed and left out.
    pub(super) fn read_from(
        &mut self,
        ids: Vec<usize>,
        lba: u64,
        blocks: u64,
    ) -> Result<Vec<(usize, Scratch)>> {
        let mut bufs = Vec::new();
        for _ in &ids {
            bufs.push(Scratch::new(blocks as usize * 4096)?);
        }
        let mut cmds = Vec::new();
        for (i, &d) in ids.iter().enumerate() {
            let max = self.layout.block_size as u64;
            let per = (1u64 << 20) / max;
            let mut off = 0;
            while off < blocks {
                let n = per.min(blocks - off);
                // SAFETY: `off + n <= blocks` so the pointer stays inside.
                let p = unsafe { bufs[i].0.as_ptr().add((off * max) as usize) };
                cmds.push((d, IoCmd::read(lba + off, n as u32, p, 0)));
                off += n;
            }
        }
        let results = run_io(&mut self.devs, &cmds);
        let mut bad = BTreeSet::new();
        for ((d, _), r) in cmds.iter().zip(&results) {
            if r.is_err() {
                bad.insert(*d);
            }
        }
        for &d in &bad {
            self.mark_failed(d, "metadata read");
        }
        Ok(ids
            .into_iter()
            .zip(bufs)
            .filter(|(d, _)| !bad.contains(d))
            .collect())
    }

    pub(super) fn flush_devices(&mut self) -> Result<()> {
        let ids: Vec<usize> = self.healthy().collect();
        let cmds: Vec<(usize, IoCmd)> = ids.iter().map(|&d| (d, IoCmd::flush(0))).collect();
        for ((d, _), r) in cmds.iter().zip(run_io(&mut self.devs, &cmds)) {
            if r.is_err() {
                self.mark_failed(*d, "flush");
            }
        }
        if self.healthy().count() == 0 {
            return Err(StoreError::Io {
                device: "all".into(),
                op: "flush",
                error: IoError::Device { errno: libc::EIO },
            });
        }
        Ok(())
    }

    /// Writes and flushes `blocks` blocks at `lba` on every healthy device;
    /// fails only if no device took it.
    pub(super) fn write_everywhere(
        &mut self,
        lba: u64,
        buf: &Scratch,
        blocks: usize,
        op: &'static str,
    ) -> Result<()> {
        let ids: Vec<usize> = self.healthy().collect();
        let mut cmds = Vec::new();
        // Commands of at most 1 MiB, the smallest transfer limit a device
        // may have (large checkpoints and journal entries exceed it).
        let per = (MAX_IO / self.layout.block_size as usize).max(1);
        for &d in &ids {
            for start in (0..blocks).step_by(per) {
                let n = per.min(blocks - start);
                let p = buf
                    .0
                    .as_ptr()
                    .wrapping_add(start * self.layout.block_size as usize);
                cmds.push((d, IoCmd::write(lba + start as u64, n as u32, p, 0)));
            }
        }
        let results = run_io(&mut self.devs, &cmds);
        for ((d, _), r) in cmds.iter().zip(results) {
            if r.is_err() {
                self.mark_failed(*d, op);
            }
        }
        self.flush_devices()
    }
}
