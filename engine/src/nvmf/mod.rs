//! The NVMe/TCP target: Flint volumes (files of its file systems) as
//! namespaces of NVMe subsystems, for the standard Linux initiator
//! (`nvme connect -t tcp`), with a discovery controller.
//!
//! - [`pdu`]: the transport's PDUs, parsed and checked, and encoded.
//! - [`spec`]: NVMe opcodes, the SQE and CQE, statuses.
//! - [`subsystem`]: subsystems, volumes, controllers and keep-alive.
//! - [`identify`]: Identify data and log pages.
//! - [`queue`]: one queue (connection) as a state machine, no socket.
//! - [`io`]: its jobs on the engine; engine errors as NVMe statuses.
//! - [`server`]: the listener and the reactors polling connections.
//! - [`config`]: the appliance's `[nvmf]` table.
//! - [`host`]: a small initiator, for tests and benchmarks.
//!
//! A write is answered once the engine has made it durable (unless its
//! file system is write-back: the namespace then reports a volatile write
//! cache and Flush makes it durable).

pub mod config;
pub mod host;
pub mod identify;
pub mod io;
pub mod pdu;
pub mod queue;
pub mod server;
pub mod spec;
pub mod subsystem;

pub use config::NvmfConfig;
pub use server::NvmfServer;
