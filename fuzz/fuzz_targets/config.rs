//! Any text as a command line or a TOML config file: an error or a plan,
//! never a panic. The command line also goes through `--check-config`'s
//! offline reading of DPDK EAL arguments and its port prediction.
#![no_main]

use cpumapd::config::check::DpdkEal;
use cpumapd::config::{FileConfig, Plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Paths in a fuzzed command line must not create files: the pcap
    // exception path is only validated here, never opened.
    let args: Vec<String> = text.split_whitespace().map(String::from).collect();
    let _ = Plan::from_args(&args);
    if let Ok(eal) = DpdkEal::parse(&args) {
        let _ = eal.ports();
    }
    let _ = toml::from_str::<FileConfig>(text);
});
