//! Any bytes as a capture file for net_pcap: an error naming the problem or
//! a trace whose records all lie inside it, never a panic.
#![no_main]

use cpumapd::port::PcapTrace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = PcapTrace::from_reader(data) {
        for i in 0..t.records.len() {
            let _ = t.record(i);
        }
    }
});
