//! Raw bindings to Intel ISA-L's erasure-code functions
//! (`isa-l/erasure_code.h`, ISA-L 2.30 as packaged by Debian 12).
//!
//! Hand-written rather than generated: the surface is four C functions with
//! plain integer and pointer arguments. Safe wrappers live in
//! `flint-engine`'s `pipeline::ec::isal`.
#![allow(non_camel_case_types)]

use std::os::raw::{c_int, c_uchar};

extern "C" {
    /// Expands a `rows x k` coefficient matrix `a` into the 32-byte-per-
    /// coefficient tables `gftbls` (`32 * k * rows` bytes) used by
    /// [`ec_encode_data`].
    pub fn ec_init_tables(k: c_int, rows: c_int, a: *mut c_uchar, gftbls: *mut c_uchar);

    /// Multiplies the matrix behind `gftbls` by `k` source buffers of `len`
    /// bytes, writing `rows` destination buffers.
    pub fn ec_encode_data(
        len: c_int,
        k: c_int,
        rows: c_int,
        gftbls: *mut c_uchar,
        data: *mut *mut c_uchar,
        coding: *mut *mut c_uchar,
    );

    /// Writes the `m x k` Cauchy encoding matrix (identity on top) into `a`.
    pub fn gf_gen_cauchy1_matrix(a: *mut c_uchar, m: c_int, k: c_int);

    /// Inverts the `n x n` matrix `in_mat` into `out_mat`; returns 0 on
    /// success, non-zero if singular. `in_mat` is overwritten.
    pub fn gf_invert_matrix(in_mat: *mut c_uchar, out_mat: *mut c_uchar, n: c_int) -> c_int;
}
