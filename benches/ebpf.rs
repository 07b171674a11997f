//! Per-packet cost of one filter program three ways, in the same run: the
//! built-in Rust mode, the same program as eBPF (bpf/redirect_cpu.c)
//! interpreted, and JIT-compiled by rbpf. Frames: every record of
//! ../shared/pcaps that fits a buffer plus UDP/TCP flows.
//!
//! `cargo bench --bench ebpf` (builds bpf/ with make; needs clang).

use std::sync::Arc;

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

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let built = std::process::Command::new("make")
        .args(["-s", "-C"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        eprintln!("skipped: make -C bpf failed (needs clang and libbpf-dev)");
        return;
    }
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
                            cpumapd::filter::Verdict::Redirect(_)
                        ) as u32);
                    }
                    n
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
