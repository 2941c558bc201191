//! The write pipeline's stages: fingerprint -> dedup -> compress -> erasure
//! code -> checksum. One trait per stage, one file per implementation (a
//! fast one and a plain reference one), tests holding them equal.

pub mod checksum;
pub mod compress;
pub mod dedup;
pub mod ec;
pub mod fingerprint;
