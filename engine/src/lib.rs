//! # flint-engine
//!
//! Storage semantics on top of [`flint_dataplane`]. So far: the write
//! pipeline's stages ([`pipeline`]), each a trait with a plain reference
//! implementation beside the fast one and tests that hold them equal.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod appliance;
pub mod cluster;
pub mod codec;
pub mod control;
pub mod engine;
pub mod format;
pub mod meta;
#[cfg(feature = "mount")]
pub mod mount;
pub mod net;
pub mod nvmf;
pub mod pipeline;
pub mod store;
