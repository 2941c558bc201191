//! The write pipeline's stages: fingerprint -> dedup -> compress -> erasure
//! code -> checksum. One trait per stage, one file per implementation.

pub mod ec;
