//! The appliance: `flint serve` — a node that opens its devices on its
//! reactors, serves clients over the data protocol, and is managed over an
//! HTTP API by the `flint` CLI.
//!
//! - [`config`]: the config file, checked key by key.
//! - [`serve`]: start-up (format only on request), the serve loop, SIGTERM
//!   (stop taking requests, drain, checkpoint, exit 0).
//! - [`mgmt`]: the management API (snapshots in `snapshots.rs`);
//!   [`events`]: events and alerts.
//! - [`cli`]: the `flint` command line over the API.

pub mod cli;
pub mod config;
pub mod events;
pub mod mgmt;
pub mod serve;
mod snapshots;
