//! The slices a node keeps for its peers: files in one directory, each a
//! block device that another node's stripes put chunks on, reached over
//! the data protocol ([`crate::net::slice`]) by sessions of the cluster's
//! own organization only.
//!
//! Each slice remembers the highest map epoch it has been addressed with
//! and refuses calls of an older one (`ESTALE`, counted): a node that lost
//! its shard to a newer owner can no longer write its chunks, whatever it
//! believes. Writes are buffered; a Flush makes them durable (fdatasync),
//! as a device's volatile cache would — the engine flushes before it
//! acknowledges.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::net::slice::{SliceCall, SliceRequest};

/// Block size of every slice.
pub const SLICE_BLOCK: u32 = crate::net::slice::SLICE_BLOCK as u32;

#[derive(Debug)]
struct Slice {
    file: File,
    blocks: u64,
    epoch: AtomicU64,
}

/// The node's slices.
#[derive(Debug)]
pub struct Slices {
    dir: PathBuf,
    org: String,
    max_bytes: u64,
    open: Mutex<HashMap<String, Arc<Slice>>>,
    stale: AtomicU64,
    served: AtomicU64,
}

fn errno(e: &std::io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

impl Slices {
    /// Slices in `dir` (created when missing), each at most `max_bytes`,
    /// for sessions of organization `org`.
    pub fn new(dir: &Path, org: &str, max_bytes: u64) -> std::io::Result<Slices> {
        std::fs::create_dir_all(dir)?;
        Ok(Slices {
            dir: dir.to_path_buf(),
            org: org.to_string(),
            max_bytes,
            open: Mutex::new(HashMap::new()),
            stale: AtomicU64::new(0),
            served: AtomicU64::new(0),
        })
    }

    /// The organization whose sessions may use the slices.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// Calls refused for a stale epoch.
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Calls served.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn slice(&self, name: &str, create: Option<u64>) -> Result<Arc<Slice>, i32> {
        let mut open = self.open.lock().map_err(|_| -libc::EIO)?;
        if let Some(s) = open.get(name) {
            return Ok(s.clone());
        }
        let path = self.dir.join(format!("{name}.slice"));
        let file = match create {
            Some(bytes) => {
                if bytes == 0
                    || !bytes.is_multiple_of(u64::from(SLICE_BLOCK))
                    || bytes > self.max_bytes
                {
                    return Err(-libc::EINVAL);
                }
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| errno(&e))?;
                if f.metadata().map_err(|e| errno(&e))?.len() == 0 {
                    f.set_len(bytes).map_err(|e| errno(&e))?;
                    f.sync_all().map_err(|e| errno(&e))?;
                    File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| errno(&e))?;
                }
                f
            }
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| errno(&e))?,
        };
        let blocks = file.metadata().map_err(|e| errno(&e))?.len() / u64::from(SLICE_BLOCK);
        let s = Arc::new(Slice {
            file,
            blocks,
            epoch: AtomicU64::new(0),
        });
        open.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// Serves one call: its answer's body, or a negated errno.
    pub fn serve(&self, req: SliceRequest) -> Result<Vec<u8>, i32> {
        let create = match req.call {
            SliceCall::Open { bytes } => Some(bytes),
            _ => None,
        };
        let s = self.slice(&req.slice, create)?;
        let seen = s.epoch.fetch_max(req.epoch, Ordering::AcqRel);
        if req.epoch < seen {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return Err(-libc::ESTALE);
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        let bs = u64::from(SLICE_BLOCK);
        let range = |lba: u64, blocks: u64| -> Result<u64, i32> {
            match lba.checked_add(blocks) {
                Some(end) if end <= s.blocks && blocks > 0 => Ok(lba * bs),
                _ => Err(-libc::ERANGE),
            }
        };
        match req.call {
            SliceCall::Open { .. } => {
                let mut out = Vec::with_capacity(12);
                out.extend_from_slice(&SLICE_BLOCK.to_le_bytes());
                out.extend_from_slice(&s.blocks.to_le_bytes());
                Ok(out)
            }
            SliceCall::Read { lba, blocks } => {
                let off = range(lba, u64::from(blocks))?;
                let mut buf = vec![0u8; blocks as usize * SLICE_BLOCK as usize];
                s.file.read_exact_at(&mut buf, off).map_err(|e| errno(&e))?;
                Ok(buf)
            }
            SliceCall::Write { lba, data } => {
                if !(data.len() as u64).is_multiple_of(bs) {
                    return Err(-libc::EINVAL);
                }
                let off = range(lba, data.len() as u64 / bs)?;
                s.file.write_all_at(&data, off).map_err(|e| errno(&e))?;
                Ok(Vec::new())
            }
            SliceCall::Flush => {
                s.file.sync_data().map_err(|e| errno(&e))?;
                Ok(Vec::new())
            }
            SliceCall::Zero { lba, blocks } => {
                let off = range(lba, u64::from(blocks))?;
                let zeros = vec![0u8; 1 << 20];
                let mut left = u64::from(blocks) * bs;
                let mut at = off;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    s.file
                        .write_all_at(&zeros[..n], at)
                        .map_err(|e| errno(&e))?;
                    at += n as u64;
                    left -= n as u64;
                }
                Ok(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(slice: &str, epoch: u64, call: SliceCall) -> SliceRequest {
        SliceRequest {
            epoch,
            slice: slice.into(),
            call,
        }
    }

    #[test]
    fn slices_read_write_and_refuse_stale_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Slices::new(dir.path(), "_cluster", 1 << 20).unwrap();
        assert_eq!(
            s.serve(call("b1", 1, SliceCall::Read { lba: 0, blocks: 1 })),
            Err(-libc::ENOENT),
            "a slice must be opened (created) first"
        );
        assert_eq!(
            s.serve(call("b1", 1, SliceCall::Open { bytes: 3 << 20 })),
            Err(-libc::EINVAL)
        );
        let geo = s
            .serve(call("b1", 1, SliceCall::Open { bytes: 1 << 20 }))
            .unwrap();
        assert_eq!(u64::from_le_bytes(geo[4..12].try_into().unwrap()), 256);
        let data: Vec<u8> = (0..8192).map(|i| (i % 251) as u8).collect();
        s.serve(call(
            "b1",
            1,
            SliceCall::Write {
                lba: 10,
                data: data.clone(),
            },
        ))
        .unwrap();
        s.serve(call("b1", 2, SliceCall::Flush)).unwrap();
        assert_eq!(
            s.serve(call("b1", 2, SliceCall::Read { lba: 10, blocks: 2 }))
                .unwrap(),
            data
        );
        assert_eq!(
            s.serve(call(
                "b1",
                1,
                SliceCall::Write {
                    lba: 0,
                    data: vec![1; 4096]
                }
            )),
            Err(-libc::ESTALE),
            "epoch 2 was seen: epoch 1 is fenced off"
        );
        assert_eq!(s.stale(), 1);
        assert_eq!(
            s.serve(call(
                "b1",
                2,
                SliceCall::Read {
                    lba: 255,
                    blocks: 2
                }
            )),
            Err(-libc::ERANGE)
        );
        s.serve(call("b1", 2, SliceCall::Zero { lba: 10, blocks: 1 }))
            .unwrap();
        let back = s
            .serve(call("b1", 2, SliceCall::Read { lba: 10, blocks: 2 }))
            .unwrap();
        assert!(back[..4096].iter().all(|&b| b == 0));
        assert_eq!(&back[4096..], &data[4096..]);
    }
}
