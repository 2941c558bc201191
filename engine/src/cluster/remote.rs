//! A slice on a peer node as a [`BlockDevice`]: what lets one engine put a
//! stripe's k+m chunks on k+m nodes. Each reactor's queue pair is a data
//! protocol session of its own to the peer (the cluster's organization),
//! polled from the reactor's loop like any device's completions; every
//! call carries the map epoch the node holds, so a peer that has seen a
//! newer one refuses it (`ESTALE`). A peer that stops answering fails its
//! commands with `ETIMEDOUT` after `timeout`, and the engine reads around
//! it from parity as it does around a failed local device.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flint_dataplane::bdev::{
    BlockDevice, Completion, Geometry, IoCmd, Opcode, QpairOptions, QueuePair,
};
use flint_dataplane::error::{IoError, Result as DpResult};
use flint_dataplane::reactor::Core;

use super::slices::SLICE_BLOCK;
use crate::net::auth::Key;
use crate::net::client::{Client, ClientConfig, ClientError};
use crate::net::slice::{SliceCall, SliceRequest};
use crate::net::wire::Request;

/// Where a remote slice is and how to reach it.
#[derive(Clone)]
pub struct RemoteSpec {
    /// The device's name in the engine.
    pub name: String,
    /// The peer's data address.
    pub peer: SocketAddr,
    /// The slice's name on the peer.
    pub slice: String,
    /// Its size, when the peer creates it.
    pub bytes: u64,
    /// The cluster's organization and key.
    pub org: String,
    /// The key.
    pub key: Key,
    /// The map epoch this node holds (the fencing token of every call).
    pub epoch: Arc<AtomicU64>,
    /// A command unanswered this long fails (`ETIMEDOUT`).
    pub timeout: Duration,
}

impl std::fmt::Debug for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSpec")
            .field("name", &self.name)
            .field("peer", &self.peer)
            .field("slice", &self.slice)
            .finish_non_exhaustive()
    }
}

/// A peer's slice as a block device.
#[derive(Debug)]
pub struct RemoteDevice {
    spec: RemoteSpec,
    geometry: Geometry,
}

/// Most bytes one command moves (one protocol message).
const MAX_TRANSFER: u32 = 1 << 20;

fn client(spec: &RemoteSpec) -> Result<Client, ClientError> {
    let cfg = ClientConfig {
        timeout: spec.timeout,
        ..ClientConfig::default()
    };
    Client::connect(spec.peer, &spec.org, &spec.key, cfg)
}

impl RemoteDevice {
    /// Opens (creating when missing) the slice on its peer.
    pub fn open(spec: RemoteSpec) -> Result<RemoteDevice, ClientError> {
        let mut c = client(&spec)?;
        let body = c.call(&Request::Slice(SliceRequest {
            epoch: spec.epoch.load(Ordering::Acquire),
            slice: spec.slice.clone(),
            call: SliceCall::Open { bytes: spec.bytes },
        }))?;
        if body.len() != 12 {
            return Err(ClientError::Protocol("a slice's geometry"));
        }
        let block_size = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
        let blocks = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
        if block_size != SLICE_BLOCK || blocks == 0 {
            return Err(ClientError::Protocol("a slice's block size"));
        }
        Ok(RemoteDevice {
            spec,
            geometry: Geometry {
                block_size,
                blocks,
                max_transfer: MAX_TRANSFER,
                max_queue_depth: 32,
                buf_align: 1,
            },
        })
    }
}

impl BlockDevice for RemoteDevice {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn kind(&self) -> &'static str {
        "remote"
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn queue_pair(&self, _core: &mut Core, opts: &QpairOptions) -> DpResult<Box<dyn QueuePair>> {
        let c = client(&self.spec).map_err(|e| flint_dataplane::error::Error::QueuePair {
            device: self.spec.name.clone(),
            op: "connect to the slice's node",
            source: std::io::Error::other(format!(
                "slice {} on {}: {e}",
                self.spec.slice, self.spec.peer
            )),
        })?;
        let depth = opts
            .depth
            .min(self.geometry.max_queue_depth)
            .min(u32::from(c.credits()))
            .max(1);
        Ok(Box::new(RemoteQpair {
            client: c,
            spec: self.spec.clone(),
            geometry: self.geometry,
            pending: HashMap::new(),
            done: VecDeque::new(),
            depth,
        }))
    }
}

struct Pending {
    op: Opcode,
    buf: *mut u8,
    len: usize,
}

struct RemoteQpair {
    client: Client,
    spec: RemoteSpec,
    geometry: Geometry,
    pending: HashMap<u64, Pending>,
    done: VecDeque<Completion>,
    depth: u32,
}

impl RemoteQpair {
    fn fail(&mut self, tag: u64, errno: i32) {
        self.done.push_back(Completion {
            tag,
            result: Err(IoError::Device { errno }),
        });
    }
}

impl QueuePair for RemoteQpair {
    unsafe fn submit(&mut self, cmd: &IoCmd) -> Result<(), IoError> {
        if self.pending.len() + self.done.len() >= self.depth as usize {
            return Err(IoError::QueueFull);
        }
        cmd.validate(&self.geometry)?;
        let len = cmd.bytes(&self.geometry) as usize;
        let call = match cmd.op {
            Opcode::Read => SliceCall::Read {
                lba: cmd.lba,
                blocks: cmd.blocks,
            },
            Opcode::Write => {
                // SAFETY: the caller guarantees `buf` holds `len` bytes that
                // stay valid and unwritten until completion; we copy them
                // out now.
                let data = unsafe { std::slice::from_raw_parts(cmd.buf, len) }.to_vec();
                SliceCall::Write { lba: cmd.lba, data }
            }
            Opcode::Flush => SliceCall::Flush,
            Opcode::WriteZeroes => SliceCall::Zero {
                lba: cmd.lba,
                blocks: cmd.blocks,
            },
        };
        let req = Request::Slice(SliceRequest {
            epoch: self.spec.epoch.load(Ordering::Acquire),
            slice: self.spec.slice.clone(),
            call,
        });
        match self.client.submit(&req, cmd.tag) {
            Ok(()) => {
                self.pending.insert(
                    cmd.tag,
                    Pending {
                        op: cmd.op,
                        buf: cmd.buf,
                        len,
                    },
                );
                Ok(())
            }
            Err(ClientError::Busy) => Err(IoError::QueueFull),
            Err(e) => {
                self.fail(cmd.tag, -e.errno());
                Ok(())
            }
        }
    }

    fn flush(&mut self) {}

    fn poll(&mut self, out: &mut [Completion]) -> usize {
        if !self.pending.is_empty() {
            match self.client.poll(Duration::ZERO) {
                Ok(got) => {
                    for c in got {
                        let Some(p) = self.pending.remove(&c.tag) else {
                            continue;
                        };
                        let result = if c.status != 0 {
                            Err(IoError::Device { errno: -c.status })
                        } else if p.op == Opcode::Read {
                            if c.body.len() == p.len {
                                // SAFETY: `buf` holds `len` bytes reserved
                                // for this read until its completion, which
                                // is being returned now.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(c.body.as_ptr(), p.buf, p.len)
                                };
                                Ok(p.len as u32)
                            } else {
                                Err(IoError::Short {
                                    expected: p.len as u32,
                                    got: c.body.len() as u32,
                                })
                            }
                        } else {
                            Ok(p.len as u32)
                        };
                        self.done.push_back(Completion { tag: c.tag, result });
                    }
                }
                Err(e) => {
                    // The session broke: every command in flight fails.
                    let errno = -e.errno();
                    let tags: Vec<u64> = self.pending.drain().map(|(t, _)| t).collect();
                    for t in tags {
                        self.fail(t, errno);
                    }
                }
            }
        }
        let mut n = 0;
        while n < out.len() {
            match self.done.pop_front() {
                Some(c) => {
                    out[n] = c;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn in_flight(&self) -> u32 {
        (self.pending.len() + self.done.len()) as u32
    }

    fn depth(&self) -> u32 {
        self.depth
    }

    fn wakes_on_completion(&self) -> bool {
        false
    }
}
