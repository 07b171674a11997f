//! Any bytes as an eBPF program (first byte 0: raw instructions against a
//! fixed set of maps; 1: an ELF object for the loader), never a panic. A
//! program the verifier accepts runs on a frame made of the input twice —
//! interpreted and JIT-compiled — and both must agree on the verdict and
//! the bytes: the JIT checks nothing, so a verifier hole shows up here as a
//! crash or a disagreement. Raw programs have a tail program (the second
//! half of the input) and themselves in a prog_array.
#![no_main]

use std::sync::Arc;

use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
use cpumapd::filter::ebpf::{Instance, Program, parse_object};
use cpumapd::frame::Pool;
use libfuzzer_sys::fuzz_target;

fn defs() -> Vec<MapDef> {
    let d = MapDef::new;
    let mut rodata = d(".rodata", MapKind::Array, 4, 16, 1);
    rodata.readonly = true;
    rodata.init = vec![7; 16];
    vec![
        d("array", MapKind::Array, 4, 8, 4),
        d("hash", MapKind::Hash, 4, 16, 8),
        d("percpu", MapKind::PerCpuArray, 4, 8, 2),
        d("cpu_map", MapKind::CpuMap, 4, 4, 8),
        d("percpu_hash", MapKind::PerCpuHash, 8, 8, 4),
        d("devmap", MapKind::DevMap, 4, 8, 2),
        d("lpm", MapKind::LpmTrie, 8, 8, 4),
        rodata,
        d(".bss", MapKind::Array, 4, 24, 1),
        // Small, so random updates evict and reuse slots.
        d("lru", MapKind::LruHash, 4, 8, 2),
        d("lru_percpu", MapKind::LruPerCpuHash, 4, 8, 2),
        // Slot 0: the tail program, slot 1: the program itself (a chain up
        // to the 33-call limit).
        d("jmp", MapKind::ProgArray, 4, 4, 4),
        // Small, so pushes fill them and BPF_EXIST drops the oldest.
        d("queue", MapKind::Queue, 0, 8, 4),
        d("stack", MapKind::Stack, 0, 16, 2),
    ]
}

/// Raw instructions: the first half the program, the second half its tail
/// program, both over the same maps, the prog_array filled.
fn raw(code: &[u8]) -> Option<Program> {
    let code = &code[..code.len() / 8 * 8];
    let half = code.len() / 16 * 8;
    let mut main = Program::from_insns("fuzz", code, defs()).ok()?;
    if half > 0 {
        if let Ok(tail) = Program::with_maps("tail", &code[half..], main.maps.clone()) {
            let me = Program::with_maps("fuzz", code, main.maps.clone()).ok()?;
            main.tails = vec![Arc::new(tail), Arc::new(me)];
            let jmp = main.map("jmp").unwrap();
            for (k, v) in [(0u32, 1u32), (1, 2)] {
                jmp.update(&k.to_le_bytes(), &v.to_le_bytes(), 0, 0);
            }
        }
    }
    Some(main)
}

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts at once, before cpumapd's own
    // catch_unwind around aya-obj (which panics on some malformed ELF) can
    // turn the panic into an error. Any panic that escapes cpumapd still
    // reaches libfuzzer-sys's catch_unwind and aborts there: a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&kind, rest)) = data.split_first() else { return };
    // Each run gets its own load (fresh maps), so both start equal.
    let load = || match kind {
        0 => raw(rest),
        _ => parse_object("fuzz.o", rest, None).ok(),
    };
    let (Some(a), Some(b)) = (load(), load()) else { return };
    let mut pool = Pool::new("fuzz", 4, 128, 2048).unwrap();
    let frame: Vec<u8> = rest.iter().copied().cycle().take(rest.len().clamp(14, 1500)).collect();
    let mut out = Vec::new();
    let clock = a.uses_helper(5);
    for (prog, jit) in [(a, false), (b, true)] {
        let Ok(mut inst) = Instance::new(Arc::new(prog), 0, jit) else { return };
        let mut f = pool.alloc().unwrap();
        f.copy_from(&frame).unwrap();
        let v = inst.run(&mut f, &|k| k % 2 == 0);
        out.push((v, f.data().to_vec()));
    }
    // bpf_ktime_get_ns differs between the runs; anything else must not.
    if !clock {
        assert_eq!(out[0], out[1], "interpreter and JIT disagree");
    }
});
