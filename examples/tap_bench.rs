//! Frames per second into the kernel through a multi-queue TAP: cpumapd's
//! TAP sink (TapSink::deliver_burst on pool frames, with the kernel-MAC
//! rewrite and the frees) against a plain write() loop on a raw queue fd
//! and against io_uring submitting a burst of 32 writes per kernel entry,
//! the same 64-byte UDP frame, 1 and 2 queues, each queue on its own thread
//! pinned to its own CPU. Needs root (CAP_NET_ADMIN). Run in a throwaway
//! network namespace (scripts/bench-tap.sh does):
//!
//!   cargo run --release --example tap_bench -- SECONDS

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpumapd::exception::ExceptionSink;
use cpumapd::exception::tap::{KernelMac, TapDevice, TapSpec};
use cpumapd::frame::Pool;
use cpumapd::port::{Burst, MAX_BURST};

/// Ethernet + IPv4 + UDP to 10.88.0.1:9 (no listener: the stack does the
/// full receive path and then drops it).
fn frame(tap_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&tap_mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let mut ip = [
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 88, 0, 2, 10, 88, 0, 1,
    ];
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0, 9, 0, 26, 0, 0]);
    f.resize(64, 0x41);
    f
}

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    let _ = set.set(cpu);
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

#[derive(Clone, Copy, PartialEq)]
enum How {
    /// write(2) per frame on the raw queue fd.
    Plain,
    /// io_uring: a burst of 32 write SQEs, one io_uring_enter per burst.
    Uring,
    /// cpumapd's TapSink::deliver_burst.
    Sink,
}

fn run(dev: &Arc<TapDevice>, queues: usize, how: How, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let handles: Vec<_> = (0..queues)
        .map(|q| {
            let mut sink = dev.open_sink().expect("tap queue");
            let (stop, total) = (stop.clone(), total.clone());
            let pkt = frame(dev.mac());
            // The queues carry virtio-net headers (offload=on, the sink's
            // default): a raw write is the header (all zero: no checksum
            // or GSO work) then the frame, as the sink writes it.
            let mut raw = vec![0u8; cpumapd::wire::vnet::HDR_LEN];
            raw.extend_from_slice(&pkt);
            std::thread::spawn(move || {
                pin(q % cpus);
                let mut sent = 0u64;
                if how == How::Uring {
                    use io_uring::{IoUring, opcode, types};
                    let fd = types::Fd(sink.as_raw_fd());
                    let mut ring = IoUring::new(64).expect("io_uring");
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..MAX_BURST {
                            let e = opcode::Write::new(fd, raw.as_ptr(), raw.len() as u32)
                                .offset(u64::MAX) // -1: current position, as write(2)
                                .build()
                                .user_data(i as u64);
                            // SAFETY: raw outlives the submission (waited below).
                            unsafe { ring.submission().push(&e).expect("sq room") };
                        }
                        ring.submit_and_wait(MAX_BURST).expect("io_uring_enter");
                        for cqe in ring.completion() {
                            sent += (cqe.result() > 0) as u64;
                        }
                    }
                } else if how == How::Plain {
                    let fd = sink.as_raw_fd();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..MAX_BURST {
                            // SAFETY: raw is a valid buffer for the call.
                            let r = unsafe { libc::write(fd, raw.as_ptr().cast(), raw.len()) };
                            sent += (r > 0) as u64;
                        }
                    }
                } else {
                    let mut pool = Pool::new("bench", 1024, 128, 2048).unwrap();
                    let mut burst = Burst::new();
                    while !stop.load(Ordering::Relaxed) {
                        pool.alloc_burst(&mut burst, MAX_BURST);
                        for f in burst.iter_mut() {
                            f.copy_from(&pkt).unwrap();
                        }
                        sent += sink.deliver_burst(&mut burst).delivered as u64;
                    }
                }
                total.fetch_add(sent, Ordering::Relaxed);
            })
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let spec = TapSpec::parse("cmbench0").unwrap();
    let dev =
        Arc::new(TapDevice::prepare(&spec, KernelMac::Rewrite, false).expect("TAP (needs root)"));
    // One queue held open for the whole run keeps the (non-persistent)
    // device alive between rounds.
    let _keep = dev.open_sink().expect("tap queue");
    // An address, so the stack takes the frames as its own.
    let ok = std::process::Command::new("ip")
        .args(["addr", "add", "10.88.0.1/24", "dev", "cmbench0"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip addr add failed");
    // Two rounds, alternating, to see the noise.
    println!(
        "| queues | plain write() Mpps | io_uring 32 writes/enter Mpps | cpumapd TapSink Mpps | uring/plain | sink/plain |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for _round in 0..2 {
        for queues in [1, 2] {
            let plain = run(&dev, queues, How::Plain, secs);
            let uring = run(&dev, queues, How::Uring, secs);
            let sink = run(&dev, queues, How::Sink, secs);
            println!(
                "| {queues} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
                plain / 1e6,
                uring / 1e6,
                sink / 1e6,
                uring / plain,
                sink / plain
            );
        }
    }
}
