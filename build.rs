//! Build script. The native build needs nothing generated. With the `dpdk`
//! feature it
//! * takes the compiler flags from the `pkg-config --cflags --libs libdpdk`
//!   command line (the pkg-config crate drops `-include rte_config.h` and
//!   `-march=...`, without which DPDK's headers do not compile),
//! * generates bindings with bindgen, allowlisted to what src/dpdk/ calls,
//! * compiles src/dpdk/shim.c: exported wrappers for DPDK's static-inline
//!   fast-path functions (rx/tx burst, mbuf alloc/free, rte_ring, rte_errno).
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    fn pkg_config(arg: &str) -> Vec<String> {
        let out = Command::new("pkg-config")
            .args([arg, "libdpdk"])
            .output()
            .unwrap_or_else(|e| panic!("feature `dpdk`: cannot run pkg-config: {e}"));
        if !out.status.success() {
            panic!(
                "feature `dpdk`: `pkg-config {arg} libdpdk` failed ({}). Install DPDK 22.11: \
                 apt-get install -y --no-install-recommends libdpdk-dev dpdk-dev pkg-config clang libclang-dev",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // Kept word for word, in order: `-include rte_config.h` is two
        // words that must stay together.
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// bindgen loads the newest libclang it finds but takes the compiler
    /// headers (emmintrin.h...) of the `clang` on PATH: with two LLVMs
    /// installed (Debian's clang 14 and clang-19, which the verifier suite
    /// needs) the pair disagrees and DPDK's headers fail to parse. Unless
    /// LIBCLANG_PATH is set, take the libclang of that `clang`'s LLVM.
    fn match_libclang_to_clang() {
        println!("cargo::rerun-if-env-changed=LIBCLANG_PATH");
        if env::var_os("LIBCLANG_PATH").is_some() {
            return;
        }
        let Ok(out) = Command::new("clang").arg("--version").output() else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(major) = text
            .split("version ")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.trim().parse::<u32>().ok())
        else {
            return;
        };
        let dir = format!("/usr/lib/llvm-{major}/lib");
        if std::path::Path::new(&dir).exists() {
            // SAFETY: the build script is single-threaded here; nothing
            // else reads or writes the environment concurrently.
            unsafe { env::set_var("LIBCLANG_PATH", &dir) };
        }
    }

    pub fn build() {
        println!("cargo::rerun-if-changed=src/dpdk/shim.c");
        println!("cargo::rerun-if-changed=src/dpdk/shim.h");
        println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
        let cflags = pkg_config("--cflags");
        let libs = pkg_config("--libs");

        let mut cc = cc::Build::new();
        cc.file("src/dpdk/shim.c").opt_level(3).warnings(true);
        for f in &cflags {
            cc.flag(f);
        }
        cc.compile("cpumapd_dpdk_shim");

        for l in &libs {
            if let Some(dir) = l.strip_prefix("-L") {
                println!("cargo::rustc-link-search=native={dir}");
            } else if let Some(lib) = l.strip_prefix("-l") {
                // Shared linking: EAL loads its drivers from the pmds
                // directory at run time.
                if lib.starts_with(':') {
                    continue;
                }
                println!("cargo::rustc-link-lib={lib}");
            } else if l.starts_with("-Wl,") {
                println!("cargo::rustc-link-arg={l}");
            }
        }

        match_libclang_to_clang();
        let mut b = bindgen::Builder::default()
            .header("src/dpdk/shim.h")
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .prepend_enum_name(false);
        for f in &cflags {
            b = b.clang_arg(f);
        }
        // Only what src/dpdk/ uses.
        for f in [
            "cpumapd_.*",
            "rte_eal_init",
            "rte_eal_cleanup",
            "rte_eal_remote_launch",
            "rte_eal_wait_lcore",
            "rte_eal_hotplug_add",
            "rte_eal_hotplug_remove",
            "rte_get_main_lcore",
            "rte_lcore_is_enabled",
            "rte_lcore_to_socket_id",
            "rte_lcore_count",
            "rte_socket_id",
            "rte_strerror",
            "rte_get_tsc_hz",
            "rte_pktmbuf_pool_create",
            "rte_mempool_free",
            "rte_mempool_avail_count",
            "rte_mempool_in_use_count",
            "rte_pktmbuf_free_bulk",
            "rte_mbuf_dynfield_register",
            "rte_ring_create",
            "rte_ring_free",
            "rte_eth_dev_count_avail",
            "rte_eth_find_next_owned_by",
            "rte_eth_dev_info_get",
            "rte_eth_dev_configure",
            "rte_eth_rx_queue_setup",
            "rte_eth_tx_queue_setup",
            "rte_eth_dev_start",
            "rte_eth_dev_stop",
            "rte_eth_dev_close",
            "rte_eth_dev_socket_id",
            "rte_eth_dev_get_name_by_port",
            "rte_eth_dev_get_port_by_name",
            "rte_eth_dev_adjust_nb_rx_tx_desc",
            "rte_eth_promiscuous_enable",
            "rte_eth_stats_get",
            "rte_eth_xstats_get",
            "rte_eth_xstats_get_names",
            "rte_eth_link_get_nowait",
            "rte_eth_macaddr_get",
            "rte_eth_dev_set_mtu",
            "rte_eth_dev_rx_intr_enable",
            "rte_eth_dev_rx_intr_disable",
            "rte_eth_dev_rx_intr_ctl_q_get_fd",
        ] {
            b = b.allowlist_function(f);
        }
        for t in [
            "rte_mbuf",
            "rte_mbuf_dynfield",
            "rte_eth_conf",
            "rte_eth_dev_info",
            "rte_eth_stats",
            "rte_eth_xstat",
            "rte_eth_xstat_name",
            "rte_eth_link",
            "rte_ether_addr",
        ] {
            b = b.allowlist_type(t);
        }
        for v in [
            "RTE_ETH_RSS_.*",
            "RTE_ETH_MQ_RX_.*",
            "RTE_ETH_MQ_TX_.*",
            "RTE_MBUF_F_RX_.*",
            "RTE_MBUF_F_TX_.*",
            "RTE_PTYPE_.*",
            "RTE_MAX_ETHPORTS",
            "RTE_MAX_LCORE",
            "RTE_ETH_NAME_MAX_LEN",
            "RTE_MBUF_DEFAULT_BUF_SIZE",
            "RTE_PKTMBUF_HEADROOM",
            "RTE_RING_F_.*",
            "RING_F_.*",
            "RTE_ETH_LINK_.*",
            "SOCKET_ID_ANY",
        ] {
            b = b.allowlist_var(v);
        }
        let bindings = b.generate().expect(
            "feature `dpdk`: bindgen could not generate DPDK bindings (is libclang-dev installed?)",
        );
        let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("dpdk_bindings.rs");
        bindings
            .write_to_file(&out)
            .expect("feature `dpdk`: cannot write bindings");
    }
}
