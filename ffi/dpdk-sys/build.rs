//! Generates the bindings from the system DPDK's headers (flags from
//! pkg-config, which include `-include rte_config.h -march=...`) and
//! compiles the shim.

use std::path::PathBuf;
use std::process::Command;

fn pkg(arg: &str) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args([arg, "libdpdk"])
        .output()
        .expect("run pkg-config (install pkg-config)");
    assert!(
        out.status.success(),
        "pkg-config cannot find libdpdk: install libdpdk-dev (apt-get install libdpdk-dev libclang-dev)"
    );
    String::from_utf8(out.stdout)
        .expect("pkg-config prints UTF-8")
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn main() {
    for f in ["wrapper.h", "shim.h", "shim.c"] {
        println!("cargo:rerun-if-changed={f}");
    }
    let cflags = pkg("--cflags");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&cflags)
        .allowlist_function(
            "rte_(eal_init|eal_cleanup|strerror|socket_id|version|eal_iova_mode|eal_process_type)",
        )
        .allowlist_function(
            "rte_eth_(dev_count_avail|dev_configure|rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|dev_info_get|macaddr_get|dev_set_mtu|promiscuous_enable|stats_get|link_get_nowait)",
        )
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_thread_(register|unregister)")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("flint_.*")
        .allowlist_type("rte_(eth_conf|eth_dev_info|eth_stats|eth_link|ether_addr)")
        .allowlist_var("RTE_(ETH_DEV_|MBUF_DEFAULT|ETHER_|PKTMBUF_HEADROOM).*")
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on the DPDK headers");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    let mut b = cc::Build::new();
    b.file("shim.c").opt_level(2).warnings(false);
    for f in &cflags {
        b.flag(f);
    }
    b.compile("flintdpdkshim");
    for l in pkg("--libs") {
        if let Some(x) = l.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={x}");
        } else if let Some(x) = l.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={x}");
        }
    }
}
