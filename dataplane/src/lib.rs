//! # flint-dataplane
//!
//! The per-core substrate Flint's engine runs on. It knows nothing of files,
//! stripes or protocols; it gives the engine cores that poll, rings between
//! them, memory that devices can DMA into, and block devices shaped like NVMe
//! namespaces with a queue pair per core.
//!
//! How the pieces fit:
//!
//! - [`reactor`]: one pinned thread per core running a polled loop over its
//!   inbox, [`poller`]s and [`timer`]s; `busy` or `adaptive` [`reactor::PollMode`];
//!   [`placement`] pins it, [`park`] lets an adaptive reactor sleep and be
//!   woken, [`stats`] counts what it does; [`corering`] is the reactor's
//!   own io_uring, shared by its devices and the place it sleeps.
//! - [`ring`] (single producer) and [`queue`] (many producers): bounded
//!   lock-free rings; [`mesh`] builds typed data-path channels between every
//!   pair of reactors from them.
//! - [`mempool`]: per-core pools of 4 KiB-aligned DMA buffers, hugepage-backed
//!   when hugepages are reserved.
//! - [`bdev`]: the block device trait and queue pairs, with the `uring`,
//!   `memory` and `null` backends.
//! - [`nic`]: frame ports the data protocol runs on (kernel UDP now, DPDK
//!   with the same frames), and a lossy wrapper for tests.
//! - [`clock`]: the TSC clock the hot path reads; [`node`] and [`config`]:
//!   the `[reactor]`, `[memory]` and `[[device]]` tables of a config file.
//!
//! A typical start: [`reactor::ReactorSet::start`], open a device with
//! [`bdev::open`], then on each reactor ([`reactor::ReactorSet::run_on`])
//! create that core's queue pair and a poller that owns it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod bdev;
pub mod clock;
pub mod config;
pub mod corering;
pub mod error;
pub mod mempool;
pub mod mesh;
pub mod nic;
pub mod node;
pub mod park;
pub mod placement;
pub mod poller;
pub mod queue;
pub mod reactor;
pub mod ring;
pub mod stats;
pub mod timer;

pub use error::{Error, IoError, Result};
