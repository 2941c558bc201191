//! The appliance: `flint serve` — a node that opens its devices on its
//! reactors, serves clients over the data protocol, and is managed over an
//! HTTP API by the `flint` CLI.
//!
//! - [`config`]: the config file, checked key by key.
//! - [`serve`]: start-up (format only on request), the serve loop, SIGTERM
//!   (stop taking requests, drain, checkpoint, exit 0).
//! - [`mgmt`]: the management API (snapshots in `snapshots.rs`, directory
//!   quotas in [`quotas`], filesystem groups in `groups.rs`, Prometheus in
//!   `metrics.rs`);
//!   [`events`]: events and alerts.
//! - [`cli`]: the `flint` command line over the API.

pub mod cli;
pub mod config;
pub mod events;
mod groups;
mod metrics;
pub mod mgmt;
pub mod quotas;
pub mod serve;
mod snapshots;
