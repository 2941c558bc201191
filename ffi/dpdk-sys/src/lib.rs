//! Raw bindings to the system DPDK (Debian `libdpdk-dev`, 22.11), generated
//! at build time by bindgen from pkg-config's flags with a narrow allowlist,
//! and a C shim (`flint_*`) for the static-inline functions and macros
//! (`rte_eth_rx_burst`, `rte_pktmbuf_*`, `rte_errno`). Everything here is
//! `unsafe` and unchecked; `flint_dataplane::nic::dpdk` is the safe port.

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    missing_docs,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
