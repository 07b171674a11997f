//! Per-packet cost of one eBPF XDP program in cpumapd, interpreted and
//! JIT-compiled, on one frame repeated (what BPF_PROG_TEST_RUN's `repeat`
//! measures in the kernel): `scripts/bench-ebpf-vs-kernel.sh` runs it
//! beside `bpftool prog run ... repeat N` on the same object and frame.
//!
//! `cargo run --release --example ebpf_cost -- OBJ.o:PROG FRAME_FILE REPEAT [NAME=VALUE | MAP:INDEX=PROG ...]`
//! (global variables set, PROG_ARRAY entries filled) prints `interp NS jit
//! NS` (nanoseconds per run, best of 5).

use std::sync::Arc;
use std::time::Instant;

use cpumapd::filter::ebpf::globals::{GlobalSet, LoadOptions, ProgArraySet};
use cpumapd::filter::ebpf::{Instance, load_object_with};
use cpumapd::frame::Pool;
use cpumapd::ids::TargetId;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 {
        eprintln!(
            "usage: ebpf_cost OBJ.o:PROG FRAME_FILE REPEAT [NAME=VALUE | MAP:INDEX=PROG ...]"
        );
        std::process::exit(2);
    }
    let (arrays, sets): (Vec<&String>, Vec<&String>) = a[3..].iter().partition(|s| s.contains(':'));
    let opts = LoadOptions {
        sets: sets.iter().map(|s| GlobalSet::parse(s).unwrap()).collect(),
        prog_arrays: arrays
            .iter()
            .map(|s| ProgArraySet::parse(s).unwrap())
            .collect(),
        nr_cpus: 2,
        ..Default::default()
    };
    let frame = std::fs::read(&a[1]).expect("frame file");
    let repeat: u64 = a[2].parse().expect("REPEAT");
    let mut pool = Pool::new("cost", 4, 256, 2048).unwrap();
    let mut out = Vec::new();
    for jit in [false, true] {
        let p = Arc::new(load_object_with(&a[0], &opts).unwrap_or_else(|e| panic!("{e}")));
        p.fill_targets(&[TargetId(0), TargetId(1)]);
        let mut inst = Instance::new(p, 0, jit).unwrap();
        let mut f = pool.alloc().unwrap();
        f.copy_from(&frame).unwrap();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..repeat {
                std::hint::black_box(inst.run(&mut f, &|_| true));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / repeat as f64);
        }
        out.push(best);
    }
    println!("interp {:.1} jit {:.1}", out[0], out[1]);
}
