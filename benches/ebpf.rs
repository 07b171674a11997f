//! Per-packet cost of the filter stage, in one run, over the same frames
//! (the first 512 records of ../shared/pcaps that fit a buffer, real and
//! malformed):
//! - `builtin_modes`: each of the eight built-in modes, beside a peer that
//!   classifies like l4-proto with etherparse (an independent, widely used
//!   header parser);
//! - `filter_per_packet`: one program three ways, the built-in Rust mode,
//!   the same program as eBPF (bpf/redirect_cpu.c) interpreted, and
//!   JIT-compiled by rbpf.
//!
//! `cargo bench --bench ebpf` (the eBPF group builds bpf/ with make and
//! needs clang; without it only the built-in group runs).

use std::sync::Arc;

#[path = "../tests/common/mod.rs"]
mod common;

use cpumapd::filter::ebpf::{self, Instance};
use cpumapd::filter::{Filter, Mode};
use cpumapd::frame::{Frame, Pool};
use cpumapd::ids::TargetId;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn frames(pool: &mut Pool) -> Vec<Frame> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(file) = std::fs::File::open(&f) else {
            continue;
        };
        let Ok(mut r) = pcap_file::pcap::PcapReader::new(file) else {
            continue;
        };
        while let Some(Ok(p)) = r.next_raw_packet() {
            if p.data.len() <= 2048 && out.len() < 512 {
                let mut fr = pool.alloc().expect("pool");
                fr.copy_from(&p.data).unwrap();
                out.push(fr);
            }
        }
    }
    out
}

fn builtin_modes(c: &mut Criterion) {
    let targets = [TargetId(1), TargetId(2), TargetId(3)];
    let mut pool = Pool::new("bench_modes", 1024, 128, 2048).unwrap();
    let fs = frames(&mut pool);
    let mut g = c.benchmark_group("builtin_modes");
    g.throughput(Throughput::Elements(fs.len() as u64));
    for mode in Mode::ALL {
        let mut f = Filter::new(mode, &targets).unwrap();
        g.bench_function(mode.name(), |b| {
            b.iter(|| {
                let mut n = 0u32;
                for fr in fs.iter() {
                    if let cpumapd::filter::Verdict::Redirect(t) = f.run(fr.data()) {
                        n = n.wrapping_add(t.0);
                    }
                }
                n
            })
        });
    }
    // The peer: TCP 0, UDP 1, ICMP 2, else 0, as l4-proto decides, from
    // etherparse's slicing of the same frames.
    g.bench_function("etherparse_l4_proto", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for fr in fs.iter() {
                if let Ok(p) = etherparse::SlicedPacket::from_ethernet(fr.data()) {
                    n = n.wrapping_add(match p.transport {
                        Some(etherparse::TransportSlice::Tcp(_)) => 1,
                        Some(etherparse::TransportSlice::Udp(_)) => 2,
                        Some(etherparse::TransportSlice::Icmpv4(_))
                        | Some(etherparse::TransportSlice::Icmpv6(_)) => 3,
                        _ => 1,
                    });
                }
            }
            n
        })
    });
    g.finish();
}

/// QUEUE map push + pop of an 8-byte value on one thread (what a program's
/// pair of helper calls costs past the call), beside crossbeam's
/// ArrayQueue (lock-free, values owned) and a Mutex<VecDeque> (the
/// kernel's spinlock design, in userspace).
fn queue_map(c: &mut Criterion) {
    use cpumapd::filter::ebpf::maps::{Map, MapDef, MapKind};
    const N: u64 = 1024;
    let mut g = c.benchmark_group("queue_push_pop");
    g.throughput(Throughput::Elements(N));
    let m = Map::new(MapDef::new("q", MapKind::Queue, 0, 8, 64)).unwrap();
    g.bench_function("cpumapd_queue_map", |b| {
        b.iter(|| {
            let mut out = [0u8; 8];
            let mut sum = 0u64;
            for i in 0..N {
                m.push(&i.to_le_bytes(), 0);
                m.pop(&mut out);
                sum = sum.wrapping_add(u64::from_le_bytes(out));
            }
            sum
        })
    });
    let q = crossbeam_queue::ArrayQueue::<u64>::new(64);
    g.bench_function("crossbeam_arrayqueue", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..N {
                let _ = q.push(i);
                sum = sum.wrapping_add(q.pop().unwrap_or(0));
            }
            sum
        })
    });
    let l = std::sync::Mutex::new(std::collections::VecDeque::<u64>::with_capacity(64));
    g.bench_function("mutex_vecdeque", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..N {
                l.lock().unwrap().push_back(i);
                sum = sum.wrapping_add(l.lock().unwrap().pop_front().unwrap_or(0));
            }
            sum
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    builtin_modes(c);
    queue_map(c);
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let targets = [TargetId(1), TargetId(2), TargetId(3)];
    let mut pool = Pool::new("bench", 1024, 128, 2048).unwrap();
    let mut fs = frames(&mut pool);
    let mut g = c.benchmark_group("filter_per_packet");
    g.throughput(Throughput::Elements(fs.len() as u64));
    for mode in [Mode::L4Hash, Mode::L4Sport, Mode::NoTouch] {
        let name = mode.name().replace('-', "_");
        let mut builtin = Filter::new(mode, &targets).unwrap();
        g.bench_function(BenchmarkId::new("builtin", &name), |b| {
            b.iter(|| {
                let mut n = 0u32;
                for f in fs.iter() {
                    n = n.wrapping_add(matches!(
                        builtin.run(f.data()),
                        cpumapd::filter::Verdict::Redirect(_)
                    ) as u32);
                }
                n
            })
        });
        let prog = Arc::new(
            ebpf::load_object(&format!("{}/redirect_cpu.o:{name}", dir.display())).unwrap(),
        );
        prog.fill_targets(&targets);
        for (label, jit) in [("interpreter", false), ("jit", true)] {
            let mut inst = Instance::new(prog.clone(), 0, jit).unwrap();
            g.bench_function(BenchmarkId::new(label, &name), |b| {
                b.iter(|| {
                    let mut n = 0u32;
                    for f in fs.iter_mut() {
                        n = n.wrapping_add(matches!(
                            inst.run(f, &|_| true),
                            ebpf::Action::Redirect(_)
                        ) as u32);
                    }
                    n
                })
            });
        }
    }
    g.finish();
}

// criterion_group! makes an undocumented `pub fn benches`; missing_docs is
// for the library's public items.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench);
}
use group::benches;
criterion_main!(benches);
