//! The peer for the side-by-side benchmark: the kernel's own cpumap on an
//! interface. An XDP program redirects every frame to CPU `TARGET` through a
//! BPF_MAP_TYPE_CPUMAP entry (qsize 2048) whose program counts the frame in
//! an ARRAY map and drops it (xdp-bench redirect-cpu -p no-touch -r drop,
//! which does not run on this kernel: its libbpf needs BTF tracepoint types
//! the kernel no longer has). Prints frames processed on the target CPU per
//! second. Needs root.
//!
//!   kernel_cpumap IFNAME SECONDS [TARGET_CPU]     (scripts/bench-vs-kernel.sh)

use std::time::{Duration, Instant};

use cpumapd::bpf_abi::{attach, helper, map_type, xdp};
use cpumapd::port::bpf::{self, insn};
use cpumapd::port::netdev;

fn count(map: &std::os::fd::OwnedFd) -> u64 {
    let mut v = [0u8; 8];
    bpf::map_lookup(map, &0u32.to_ne_bytes(), &mut v).expect("counter lookup");
    u64::from_ne_bytes(v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(ifname), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<f64>().ok()))
    else {
        eprintln!("usage: kernel_cpumap IFNAME SECONDS [TARGET_CPU]");
        std::process::exit(2);
    };
    let target: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let ifindex = netdev::index(ifname).unwrap_or_else(|| panic!("no interface {ifname}"));

    let counter = bpf::map_create(map_type::ARRAY, 4, 8, 1).expect("ARRAY map");
    let [c0, c1] = bpf::ld_map_fd(1, &counter);
    // The cpumap entry's program: counter[0] += 1 (atomically); XDP_DROP.
    let remote = [
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
        insn(0xbf, 2, 10, 0, 0),  // r2 = r10
        insn(0x07, 2, 0, 0, -4),  // r2 += -4
        c0,
        c1,                                           // r1 = &counter
        insn(0x85, 0, 0, 0, helper::MAP_LOOKUP_ELEM), // r0 = lookup(r1, r2)
        insn(0x15, 0, 0, 2, 0),                       // if r0 == 0 goto +2
        insn(0xb7, 1, 0, 0, 1),                       // r1 = 1
        insn(0xdb, 0, 1, 0, 0),                       // lock *(u64 *)(r0 + 0) += r1
        insn(0xb7, 0, 0, 0, xdp::DROP as i32),        // r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),                       // exit
    ];
    let remote = bpf::prog_load(bpf::PROG_TYPE_XDP, attach::XDP_CPUMAP, &remote, "cm_remote")
        .expect("cpumap program");

    let ncpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let cpumap = bpf::map_create(map_type::CPUMAP, 4, 8, ncpus).expect("CPUMAP");
    // struct bpf_cpumap_val { u32 qsize; int bpf_prog_fd; }
    let mut val = [0u8; 8];
    val[..4].copy_from_slice(&2048u32.to_ne_bytes());
    val[4..].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(&remote)).to_ne_bytes());
    bpf::map_update(&cpumap, &target.to_ne_bytes(), &val).expect("cpumap entry");

    let [m0, m1] = bpf::ld_map_fd(1, &cpumap);
    let rx = [
        m0,
        m1,                                        // r1 = &cpumap
        insn(0xb7, 2, 0, 0, target as i32),        // r2 = target cpu
        insn(0xb7, 3, 0, 0, 0),                    // r3 = 0 (aborted on a miss)
        insn(0x85, 0, 0, 0, helper::REDIRECT_MAP), // bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),                    // exit
    ];
    let rx = bpf::prog_load(bpf::PROG_TYPE_XDP, 0, &rx, "cm_rx").expect("XDP program");
    let (_link, mode) = bpf::link_xdp(&rx, ifindex).expect("attach XDP");

    let c0 = count(&counter);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let n = count(&counter) - c0;
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "{{\"peer\":\"kernel cpumap\",\"xdp_mode\":\"{mode}\",\"target_cpu\":{target},\"processed\":{n},\"seconds\":{dt:.3},\"pps\":{:.0}}}",
        n as f64 / dt
    );
}
