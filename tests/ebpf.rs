//! Real eBPF XDP programs (bpf/*.c, built by clang) against the built-in
//! modes, frame by frame, interpreted and JIT-compiled; the verifier's
//! refusals; maps through the pipeline.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cpumapd::filter::ebpf::{self, Instance, Program};
use cpumapd::filter::{Filter, Mode, Verdict};
use cpumapd::frame::{Frame, Pool};
use cpumapd::ids::TargetId;

/// An instance's run as the dataplane acts on it: the engine's action as
/// a cpumapd [`Verdict`].
trait RunVerdict {
    fn verdict(&mut self, f: &mut Frame, has: &dyn Fn(u32) -> bool) -> Verdict;
}

impl RunVerdict for Instance {
    fn verdict(&mut self, f: &mut Frame, has: &dyn Fn(u32) -> bool) -> Verdict {
        self.run(f, has).into()
    }
}

/// Every record of ../shared/pcaps that fits one buffer.
fn buffer_sized_records() -> Vec<Vec<u8>> {
    let mut frames = common::all_shared_records();
    frames.retain(|f| f.len() <= 2048);
    frames
}

/// Loads with fresh maps: `load_object` takes the running pipeline's
/// options, and a pipeline started in this process (another test) shares
/// one object's maps between its loads.
fn load(dir: &Path, spec: &str) -> Arc<Program> {
    let opts = cpumapd::filter::ebpf::globals::LoadOptions {
        nr_cpus: cpumapd::filter::ebpf::globals::possible_cpus(),
        ..Default::default()
    };
    let p = ebpf::load_object_with(&format!("{}/{spec}", dir.display()), &opts)
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    Arc::new(p)
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn shipped_programs_classify_every_frame_like_the_built_in_modes() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let targets = [TargetId(2), TargetId(3), TargetId(5)];
    let frames = buffer_sized_records();
    let mut pool = Pool::new("t", 64, 128, 2048).unwrap();
    for mode in Mode::ALL {
        let name = mode.name().replace('-', "_");
        for jit in [false, true] {
            // A fresh load per run: round-robin's per-lcore position starts
            // at 0, as the built-in filter's does.
            let prog = load(&dir, &format!("redirect_cpu.o:{name}"));
            prog.fill_targets(&targets);
            let mut inst = Instance::new(prog.clone(), 1, jit).unwrap();
            if jit {
                // Every lookup in the shipped programs is of a known array.
                let calls = (0..prog.insn_count())
                    .filter(|&pc| {
                        let i = cpumapd::filter::ebpf::insn::Insn::at(prog.code(), pc);
                        i.op == 0x85 && i.imm == 1
                    })
                    .count();
                assert_eq!(inst.inlined_lookups(), calls, "{name}: lookups inlined");
            }
            let mut builtin = Filter::new(mode, &targets).unwrap();
            for (i, bytes) in frames.iter().enumerate() {
                let mut f = pool.alloc().unwrap();
                f.copy_from(bytes).unwrap();
                let want = builtin.run(f.data());
                let got = inst.verdict(&mut f, &|_| true);
                assert_eq!(got, want, "{name} (jit {jit}) frame {i}: {bytes:02x?}");
                assert_eq!(f.data(), &bytes[..], "the program left the frame alone");
            }
        }
    }
}

/// A tiny assembler for hand-written test programs.
mod asm {
    use cpumapd::filter::ebpf::insn::*;

    pub fn i(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        Insn::new(op, dst, src, off, imm).encode()
    }
    pub fn prog(insns: &[[u8; 8]]) -> Vec<u8> {
        insns.concat()
    }
    pub fn mov_imm(d: u8, v: i32) -> [u8; 8] {
        i(ALU64 | MOV | K, d, 0, 0, v)
    }
    pub fn mov(d: u8, s: u8) -> [u8; 8] {
        i(ALU64 | MOV | X, d, s, 0, 0)
    }
    pub fn add_imm(d: u8, v: i32) -> [u8; 8] {
        i(ALU64 | ADD | K, d, 0, 0, v)
    }
    pub fn ldx(size: u8, d: u8, s: u8, off: i16) -> [u8; 8] {
        i(LDX | MEM | size, d, s, off, 0)
    }
    pub fn stx(size: u8, d: u8, s: u8, off: i16) -> [u8; 8] {
        i(STX | MEM | size, d, s, off, 0)
    }
    pub fn st(size: u8, d: u8, off: i16, imm: i32) -> [u8; 8] {
        i(ST | MEM | size, d, 0, off, imm)
    }
    pub fn jmp(op: u8, d: u8, s: u8, off: i16) -> [u8; 8] {
        i(JMP | op | X, d, s, off, 0)
    }
    pub fn jmp_imm(op: u8, d: u8, imm: i32, off: i16) -> [u8; 8] {
        i(JMP | op | K, d, 0, off, imm)
    }
    pub fn call(id: i32) -> [u8; 8] {
        i(JMP | CALL, 0, 0, 0, id)
    }
    pub fn exit() -> [u8; 8] {
        i(JMP | EXIT, 0, 0, 0, 0)
    }
    /// r0 = bpf_map_lookup_elem(map fd 0, &key) with the key written at
    /// fp-4 from r6 (= `key`).
    pub fn lookup_map0(key: i32) -> Vec<[u8; 8]> {
        vec![
            mov_imm(6, key),
            stx(W, 10, 6, -4),
            mov(2, 10),
            add_imm(2, -4),
            i(
                LD | IMM | DW,
                1,
                cpumapd::bpf_abi::pseudo::MAP_FD,
                0,
                cpumapd::filter::ebpf::maps::MAP_FD_BASE,
            ),
            i(0, 0, 0, 0, 0),
            call(1),
        ]
    }
    /// r2 = data, r3 = data_end (kernel xdp_md offsets).
    pub fn data(d: u8) -> [u8; 8] {
        ldx(W, d, 1, 0)
    }
    pub fn data_end(d: u8) -> [u8; 8] {
        ldx(W, d, 1, 4)
    }
}

fn rejected(what: &str, code: &[u8]) -> String {
    match Program::from_insns("bad", code, Vec::new()) {
        Ok(_) => panic!("accepted a bad program: {what}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_verifier_refuses_unsafe_programs_naming_the_instruction_and_the_reason() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "read past the checked bytes",
            prog(&[
                data(2),
                data_end(3),
                mov(4, 2),
                add_imm(4, 14),
                jmp(JGT, 4, 3, 2),
                ldx(B, 0, 2, 20),
                exit(),
                mov_imm(0, 1),
                exit(),
            ]),
            "insn 5: packet access out of proven range: offset 20 size 1, but only 14 bytes are checked",
        ),
        (
            "no data_end check at all",
            prog(&[data(2), ldx(B, 0, 2, 0), exit()]),
            "insn 1: packet access out of proven range: offset 0 size 1, but only 0 bytes",
        ),
        (
            "stack overflow",
            prog(&[st(DW, 10, -520, 0), mov_imm(0, 2), exit()]),
            "insn 0: stack access out of bounds: offset -520",
        ),
        (
            "bpf_csum_diff with a size only known at run time",
            prog(&[
                ldx(W, 2, 1, 12), // ingress_ifindex: unknown
                st(W, 10, -4, 7),
                mov(1, 10),
                add_imm(1, -4),
                mov(3, 1),
                mov_imm(4, 4),
                mov_imm(5, 0),
                call(28),
                mov_imm(0, 2),
                exit(),
            ]),
            "insn 7: bpf_csum_diff: the from size (r2) must be a constant",
        ),
        (
            "bpf_csum_diff over more packet bytes than were checked",
            prog(&[
                data(6),
                data_end(7),
                mov(4, 6),
                add_imm(4, 4),
                jmp(JGT, 4, 7, 6),
                mov(1, 6),
                mov_imm(2, 8),
                mov_imm(3, 0),
                mov_imm(4, 0),
                mov_imm(5, 0),
                call(28),
                mov_imm(0, 2),
                exit(),
            ]),
            "insn 10: from (r1) of 8 bytes at packet offset 0: only 4 bytes are checked against data_end",
        ),
        (
            "unknown helper",
            prog(&[call(69), mov_imm(0, 2), exit()]),
            "insn 0: unknown or unsupported helper 69 (bpf_fib_lookup)",
        ),
        (
            "unbounded loop",
            prog(&[
                ldx(W, 2, 1, 12), // ingress_ifindex: unknown
                add_imm(2, -1),
                jmp_imm(JNE, 2, 0, -2),
                mov_imm(0, 2),
                exit(),
            ]),
            "insn 1: infinite loop",
        ),
        (
            "a loop whose counter grows but whose exit test does not use it",
            prog(&[
                ldx(W, 2, 1, 12),
                mov_imm(0, 0),
                add_imm(0, 1),
                jmp_imm(JNE, 2, 0, -2),
                mov_imm(0, 2),
                exit(),
            ]),
            "is not provably bounded",
        ),
        (
            "unknown instruction",
            prog(&[i(0xff, 0, 0, 0, 0), exit()]),
            "insn 0: unknown instruction opcode 0xff",
        ),
        (
            "uninitialised r0",
            prog(&[exit()]),
            "insn 0: r0 is read before it is written",
        ),
        (
            "writing the context",
            prog(&[st(W, 1, 0, 0), mov_imm(0, 2), exit()]),
            "insn 0: the context is read-only",
        ),
        (
            "jump out of the program",
            prog(&[jmp_imm(JEQ, 1, 0, 40), mov_imm(0, 2), exit()]),
            "insn 0: jump to 41, outside the program",
        ),
    ];
    for (what, code, want) in cases {
        let e = rejected(what, &code);
        assert!(e.contains(want), "{what}: got '{e}', want '{want}'");
    }
}

#[test]
fn a_bounded_loop_is_accepted_and_runs() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // r0 = 0; do r0 += 1 while r0 < 10; return r0 == 10 ? XDP_PASS : XDP_DROP
    let code = prog(&[
        mov_imm(0, 0),
        add_imm(0, 1),
        jmp_imm(JLT, 0, 10, -2),
        jmp_imm(JEQ, 0, 10, 2),
        mov_imm(0, 1),
        exit(),
        mov_imm(0, 2),
        exit(),
    ]);
    let p = Arc::new(Program::from_insns("loop", &code, Vec::new()).unwrap());
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        assert_eq!(inst.verdict(&mut f, &|_| true), Verdict::Pass, "jit {jit}");
    }
    // An action the XDP contract does not have is aborted.
    let bad = Arc::new(
        Program::from_insns("seven", &prog(&[mov_imm(0, 7), exit()]), Vec::new()).unwrap(),
    );
    assert_eq!(
        Instance::new(bad, 0, false)
            .unwrap()
            .verdict(&mut f, &|_| true),
        Verdict::Aborted
    );
}

#[test]
fn random_bytecode_never_crashes_the_verifier_or_a_run() {
    use cpumapd::filter::ebpf::insn::*;
    // Random instructions drawn from valid opcodes (so some get deep into
    // the verifier) and raw bytes; accepted ones run on a frame.
    let ops: Vec<u8> = [
        ALU64 | MOV | K,
        ALU64 | MOV | X,
        ALU64 | ADD | K,
        ALU64 | ADD | X,
        ALU64 | SUB | X,
        ALU64 | AND | K,
        ALU64 | LSH | K,
        ALU64 | RSH | K,
        ALU64 | DIV | X,
        ALU64 | MOD | X,
        ALU | MOV | K,
        ALU | ADD | X,
        ALU | END | X,
        LDX | MEM | W,
        LDX | MEM | B,
        LDX | MEM | DW,
        STX | MEM | DW,
        STX | MEM | B,
        ST | MEM | W,
        JMP | JGT | X,
        JMP | JEQ | K,
        JMP | JNE | K,
        JMP | JA,
        JMP32 | JLT | K,
        JMP | CALL,
        JMP | EXIT,
    ]
    .to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let (mut accepted, mut total) = (0, 0);
    for round in 0..20_000 {
        let n = 2 + (next() % 24) as usize;
        let mut code = Vec::with_capacity(n * 8);
        for _ in 0..n {
            let r = next();
            if round % 4 == 0 {
                code.extend_from_slice(&r.to_le_bytes());
            } else {
                let op = ops[(r % ops.len() as u64) as usize];
                let imm = match op & 0xf0 {
                    CALL => [1, 2, 5, 8, 44, 51, 54][(r >> 8) as usize % 7],
                    _ => ((r >> 16) as i32) % 64,
                };
                let mut insn = Insn {
                    op,
                    dst: ((r >> 32) % 11) as u8,
                    src: ((r >> 36) % 11) as u8,
                    // Forward jumps only: a loop with an unknown condition
                    // runs the verifier's whole budget (a second each);
                    // loops have their own tests.
                    off: ((r >> 40) as i16).rem_euclid(16),
                    imm,
                };
                // Fields the instruction does not use are 0, as a compiler
                // writes them (the verifier refuses anything else); one in
                // 16 keeps its random fields to exercise that refusal.
                if (r >> 56) % 16 != 0 {
                    clear_unused(&mut insn);
                }
                code.extend_from_slice(&insn.encode());
            }
        }
        code.extend_from_slice(&asm::exit());
        total += 1;
        if let Ok(p) = Program::from_insns("fuzz", &code, Vec::new()) {
            accepted += 1;
            let p = Arc::new(p);
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[0xab; 64]).unwrap();
            for jit in [false, true] {
                let v = Instance::new(p.clone(), 0, jit)
                    .unwrap()
                    .verdict(&mut f, &|_| true);
                let _ = v;
            }
        }
    }
    println!("{accepted} of {total} random programs were accepted and ran (interpreter and JIT)");
    assert!(accepted > 0, "the generator reaches accepted programs");
}

/// Zeroes the fields `i` does not use (the kernel's reserved fields).
fn clear_unused(i: &mut cpumapd::filter::ebpf::insn::Insn) {
    use cpumapd::filter::ebpf::insn::*;
    let x = i.op & X == X;
    match (i.class(), i.op & 0xf0) {
        (ALU | ALU64, _) => {
            i.off = 0;
            if x {
                i.imm = 0;
            } else {
                i.src = 0;
            }
        }
        (LDX, _) => i.imm = 0,
        (ST, _) => i.src = 0,
        (STX, _) => i.imm = 0,
        (JMP, EXIT) => {
            *i = Insn {
                op: i.op,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            }
        }
        (JMP, CALL) => {
            i.dst = 0;
            i.src = 0;
            i.off = 0;
        }
        (JMP | JMP32, _) if x => i.imm = 0,
        (JMP | JMP32, _) => i.src = 0,
        _ => {}
    }
}

fn mixed_pcap(dir: &Path) -> PathBuf {
    let mut frames = common::all_shared_records();
    frames.retain(|f| (14..=2048).contains(&f.len()));
    for i in 0..500u16 {
        frames.push(common::udp4(
            [10, 0, (i % 5) as u8, 1],
            [10, 9, 0, 2],
            1000 + i,
            [9, 53, 80][i as usize % 3],
        ));
    }
    let p = dir.join("mix.pcap");
    common::write_pcap(&p, &frames);
    p
}

fn per_target(s: &cpumapd::telemetry::Summary) -> Vec<(u32, u64)> {
    s.targets
        .iter()
        .map(|t| (t.target.0, t.enqueued + t.enqueue_drops))
        .collect()
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn the_pipeline_with_an_ebpf_program_counts_what_the_built_in_mode_counts() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pcap = mixed_pcap(tmp.path());
    let base = format!(
        "--lcores 0@0,1@1,2@1,3@0 --vdev net_pcap0,rx_pcap={} -- --rx (0,0,0) --cpu 1,2,3 --qsize 16384 --metrics off --control off --no-pin",
        pcap.display()
    );
    for mode in ["l4-hash", "round-robin", "l4-filter", "l4-sport"] {
        let builtin = common::run_to_end(&format!("{base} --mode {mode}"));
        for jit in ["", "--jit"] {
            let prog = format!(
                "{}/redirect_cpu.o:{}",
                dir.display(),
                mode.replace('-', "_")
            );
            let s = common::run_to_end(&format!("{base} --prog {prog} {jit}"));
            s.check_identities(true).unwrap();
            for (what, a, b) in [
                ("rx", s.rx, builtin.rx),
                ("pass", s.pass, builtin.pass),
                ("drop", s.drop, builtin.drop),
                ("redirect", s.redirect, builtin.redirect),
                ("aborted", s.aborted, builtin.aborted),
            ] {
                assert_eq!(a, b, "{mode} {jit}: {what}");
            }
            assert_eq!(
                per_target(&s),
                per_target(&builtin),
                "{mode} {jit}: per target"
            );
        }
    }
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn a_remote_program_dropping_half_is_counted_and_its_percpu_map_sums_through_ctl() {
    use cpumapd::config::Plan;
    use cpumapd::control::proto::{Request, execute};
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let n = 10_000;
    let cmd = format!(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,count={n},flows=64 -- --rx (0,0,0) --cpu 1,2 --mode round-robin --qsize 16384 --remote-action {}/remote_half.o --metrics off --control off --no-pin",
        dir.display()
    );
    let plan = Plan::from_args(&common::args(&cmd)).unwrap();
    let running = cpumapd::lcore::start(&plan).unwrap();
    common::wait_drained(&running);
    // The targets' `seen` counters, per lcore and summed, through the
    // control protocol.
    let dump = execute(
        &running.handle(),
        Request::ProgMapDump {
            name: "seen".into(),
        },
    )
    .unwrap();
    assert_eq!(dump["type"], "percpu_array");
    let entry = &dump["entries"][0];
    let per = entry["per_lcore"].as_object().unwrap();
    assert_eq!(per.len(), 2, "one copy per target lcore: {dump}");
    // A name no program has is ENOENT, naming what is loaded.
    let e = execute(
        &running.handle(),
        Request::ProgMapDump {
            name: "nope".into(),
        },
    )
    .unwrap_err();
    assert!(e.message.contains("remote_half/seen"), "{}", e.message);
    let s = cpumapd::telemetry::Summary::at_shutdown(running).unwrap();
    s.check_identities(true).unwrap();
    assert_eq!(s.rx, n);
    assert_eq!(
        entry["sum"].as_u64().unwrap(),
        s.target_processed,
        "the program saw every frame"
    );
    // Half of each target's frames (its odd-numbered ones) are dropped.
    let mut dropped = 0;
    for t in &s.targets {
        let d = t.drop_reasons.get("remote_drop").copied().unwrap_or(0);
        assert_eq!(d, t.processed.div_ceil(2), "target {}", t.target.0);
        assert_eq!(t.delivered + t.drops, t.processed);
        dropped += d;
    }
    assert_eq!(s.delivered + dropped, s.target_processed);
}

#[test]
fn malformed_objects_found_by_fuzzing_are_errors_not_panics() {
    // fuzz/ebpf found aya-obj 0.3 panicking (a symbol past its section, a
    // bad BTF type index); loading must say "malformed", not crash.
    for f in ["ebpf-aya-btf-panic.bin", "ebpf-aya-symbol-panic.bin"] {
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(f),
        )
        .unwrap();
        // The fuzz input's first byte picks the loader; the ELF follows.
        let e = ebpf::parse_object(f, &data[1..], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(f) && e.contains("malformed ELF object"), "{e}");
    }
    // ...and allocating a .bss of the size a forged header declares.
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ebpf-aya-huge-bss.bin"),
    )
    .unwrap();
    let e = ebpf::parse_object("huge.o", &data[1..], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("declares") && e.contains("MiB a section may have"),
        "{e}"
    );
    let e = ebpf::load_object("/dev/null").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let e = ebpf::parse_object("x.o", b"\x7fELF garbage", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.o"), "{e}");
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn ddos_filter_is_configured_and_read_through_cpumapd_ctl() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("ctl.sock");
    let n = 300_000u64;
    let bin = env!("CARGO_BIN_EXE_cpumapd");
    let child = Command::new(bin)
        .args(common::args(&format!(
            "--lcores 0@0,1@1,2@1 --vdev net_gen0,rate=150000,count={n},flows=16,proto=udp,dport=5353 -- --cpu 1,2 --prog {}/ddos_filter.o --jit --control {} --state-dir off --metrics off --interval 0 --linger 60 --summary-json -",
            dir.display(),
            sock.display()
        )))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ctl = |a: &[&str]| {
        let o = Command::new(bin)
            .arg("ctl")
            .arg("--control")
            .arg(&sock)
            .args(a)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Drop UDP to 5353 from now on (the program's default is 53).
    let (ok, _, err) = ctl(&["prog", "map", "update", "ddos_config", "0", "5353"]);
    assert!(ok, "{err}");
    // Errors name the problem.
    let (ok, _, err) = ctl(&["prog", "map", "update", "ddos_config", "0", "0x1ffffffff"]);
    assert!(
        !ok && err.contains("EINVAL") && err.contains("does not fit 4 bytes"),
        "{err}"
    );
    let (ok, _, err) = ctl(&["prog", "map", "dump", "nope"]);
    assert!(
        !ok && err.contains("ENOENT") && err.contains("ddos_filter/drops"),
        "{err}"
    );
    let (ok, _, err) = ctl(&["mode", "set", "l4-hash"]);
    assert!(
        !ok && err.contains("EBUSY") && err.contains("ddos_filter"),
        "{err}"
    );
    // Wait for the finite source to end, then read the map and the counts.
    let summary = loop {
        let (ok, out, err) = ctl(&["summary"]);
        assert!(ok, "{err}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        if s["rx"].as_u64() == Some(n) && s["in_flight"].as_u64() == Some(0) {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "traffic did not end: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ok, out, err) = ctl(&["prog", "map", "dump", "drops"]);
    assert!(ok, "{err}");
    let dump: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dump["type"], "hash");
    let entries = dump["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 16, "one entry per source address: {dump}");
    let counted: u64 = entries.iter().map(|e| e["value"].as_u64().unwrap()).sum();
    let dropped = summary["drop"].as_u64().unwrap();
    assert!(
        dropped > n / 2,
        "most frames came after the update: {dropped}"
    );
    assert_eq!(
        counted, dropped,
        "every dropped frame is counted per source"
    );
    assert_eq!(
        summary["redirect"].as_u64().unwrap() + dropped,
        n,
        "the rest went to the targets"
    );
    common::sigterm(&child);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn adjust_head_grows_the_frame_into_its_headroom_interpreted_and_jit() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // r6 = ctx; adjust_head(ctx, -14): on success write 0xee into the new
    // first byte (after checking it against data_end) and pass.
    let code = prog(&[
        mov(6, 1),
        mov_imm(2, -14),
        call(44),
        jmp_imm(JNE, 0, 0, 6),
        data(2),
        i(LDX | MEM | W, 3, 6, 4, 0), // data_end from r6
        mov(4, 2),
        add_imm(4, 1),
        jmp(JGT, 4, 3, 2),
        st(B, 2, 0, 0xee),
        mov_imm(0, 2),
        exit(),
    ]);
    // r2 = data must come from r6 (ctx) after the call: patch the load.
    let mut code = code;
    code[4 * 8..5 * 8].copy_from_slice(&i(LDX | MEM | W, 2, 6, 0, 0));
    let p = Arc::new(Program::from_insns("adjust", &code, Vec::new()).unwrap());
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut f = pool.alloc().unwrap();
        f.copy_from(&[7u8; 60]).unwrap();
        let v = Instance::new(p.clone(), 0, jit)
            .unwrap()
            .verdict(&mut f, &|_| true);
        assert_eq!(v, Verdict::Pass, "jit {jit}");
        assert_eq!((f.len(), f.headroom()), (74, 114), "jit {jit}");
        assert_eq!(f.data()[0], 0xee);
        assert_eq!(&f.data()[14..], &[7u8; 60][..]);
    }
    // A packet pointer kept across the call is refused.
    let stale = prog(&[
        data(7),
        mov(6, 1),
        mov_imm(2, -14),
        call(44),
        ldx(B, 0, 7, 0),
        exit(),
    ]);
    // fuzz/ebpf: a division with a value in its unused `off` field (ISA
    // v4's signed form) ran differently interpreted and under the JIT.
    let reserved = prog(&[mov_imm(0, 7), i(ALU64 | DIV | X, 0, 0, 0xc0, 0), exit()]);
    let e = rejected("reserved fields", &reserved);
    assert!(
        e.contains("insn 1: instruction 0x3f uses reserved fields"),
        "{e}"
    );
    let e = rejected("stale packet pointer", &stale);
    assert!(
        e.contains("insn 4: r7 is a packet pointer from before a call"),
        "{e}"
    );
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn jit_inlined_percpu_lookups_address_each_lcores_copy() {
    // remote_half counts in a PERCPU_ARRAY and drops odd counts. The JIT
    // inlines its lookup with the lcore's copy as a constant; the
    // interpreter goes through the helper. Both must hit the same copy.
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let p = load(&dir, "remote_half.o");
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    let mut runs = |cpu: u32, jit: bool, n: usize| -> Vec<Verdict> {
        let mut inst = Instance::new(p.clone(), cpu, jit).unwrap();
        assert_eq!(inst.inlined_lookups(), jit as usize);
        (0..n).map(|_| inst.verdict(&mut f, &|_| false)).collect()
    };
    let alternate = |from: u64, n: u64| -> Vec<Verdict> {
        (from..from + n)
            .map(|c| {
                if c & 1 == 1 {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            })
            .collect()
    };
    assert_eq!(runs(3, true, 7), alternate(1, 7), "jit, lcore 3");
    assert_eq!(
        runs(5, true, 4),
        alternate(1, 4),
        "jit, lcore 5: its own copy"
    );
    assert_eq!(
        runs(3, false, 2),
        alternate(8, 2),
        "interpreter, lcore 3: continues the JIT's copy"
    );
    let dump = p.map("seen").unwrap().dump();
    let copy = |c: usize| u64::from_le_bytes(dump[0].1[c][..8].try_into().unwrap());
    assert_eq!((copy(3), copy(5), copy(0), copy(4)), (9, 4, 0, 0));
}

#[test]
fn jit_inlined_array_lookup_returns_null_past_the_last_index() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    // key = r6 (set per variant); v = lookup(arr, &key);
    // return v ? (*v == 42 ? PASS : TX) : DROP
    let body = |key: i32| {
        let mut v = lookup_map0(key);
        v.extend_from_slice(&[
            jmp_imm(JEQ, 0, 0, 5),
            ldx(DW, 1, 0, 0),
            mov_imm(0, 2),
            jmp_imm(JEQ, 1, 42, 1),
            mov_imm(0, 3),
            exit(),
            mov_imm(0, 1),
            exit(),
        ]);
        prog(&v)
    };
    let def = || MapDef::new("arr", MapKind::Array, 4, 8, 3);
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    for (key, want) in [
        (2, Verdict::Pass),
        (1, Verdict::Tx),
        (3, Verdict::Drop),
        (-1, Verdict::Drop),
    ] {
        let p = Arc::new(Program::from_insns("arr", &body(key), vec![def()]).unwrap());
        assert_eq!(
            p.map("arr")
                .unwrap()
                .update(&2u32.to_le_bytes(), &42u64.to_le_bytes(), 0, 0),
            0
        );
        for jit in [false, true] {
            let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
            assert_eq!(inst.inlined_lookups(), jit as usize);
            assert_eq!(
                inst.verdict(&mut f, &|_| true),
                want,
                "key {key}, jit {jit}"
            );
        }
    }
}

fn load_with(dir: &Path, spec: &str, sets: &[&str], nr_cpus: u32) -> Arc<Program> {
    use cpumapd::filter::ebpf::globals::{GlobalSet, LoadOptions};
    let opts = LoadOptions {
        sets: sets.iter().map(|s| GlobalSet::parse(s).unwrap()).collect(),
        nr_cpus,
        ..Default::default()
    };
    let p = ebpf::load_object_with(&format!("{}/{spec}", dir.display()), &opts)
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    Arc::new(p)
}

/// An IPv4 frame's (saddr, daddr, proto) as bpf/sampler.c keys it.
fn sampler_key(f: &[u8]) -> Option<Vec<u8>> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let mut k = f[26..34].to_vec();
    k.extend_from_slice(&(f[23] as u32).to_le_bytes());
    k.extend_from_slice(&[0; 4]);
    Some(k)
}

/// bpf/sampler.c as libbpf would load it: its `const volatile` tunables
/// set before load (`--prog-set`), a .bss counter and a .data value the
/// program reads and writes through ld_imm64 map-value pointers, flows
/// counted per lcore in a PERCPU_HASH. Interpreter and JIT, each on its
/// own lcore, over every frame of ../shared/pcaps; then the maps hold what
/// the frames say. Writing .rodata is refused at load (bpf/bad_rodata.c).
#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn globals_and_percpu_hash_work_as_libbpf_loads_them() {
    use std::collections::HashMap;
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let targets = [TargetId(2), TargetId(3), TargetId(5)];
    let frames = buffer_sized_records();
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    for (sets, every, idx) in [
        (&[][..], 1u64, 0usize),
        (&["sample_every=3", "target_idx=1"][..], 3, 1),
    ] {
        for (jit, cpu) in [(false, 1u32), (true, 4)] {
            let p = load_with(&dir, "sampler.o:sample", sets, 8);
            p.fill_targets(&targets);
            let mut inst = Instance::new(p.clone(), cpu, jit).unwrap();
            let mut want: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
            for (i, bytes) in frames.iter().enumerate() {
                let mut f = pool.alloc().unwrap();
                f.copy_from(bytes).unwrap();
                let got = inst.verdict(&mut f, &|_| true);
                let key = sampler_key(bytes);
                let expect = match &key {
                    Some(_) if (i as u64).is_multiple_of(every) => Verdict::Redirect(targets[idx]),
                    _ => Verdict::Pass,
                };
                assert_eq!(got, expect, "{sets:?} jit {jit} frame {i}");
                if let Some(k) = key {
                    let e = want.entry(k).or_default();
                    e.0 += 1;
                    e.1 += bytes.len() as u64;
                }
            }
            let bss = p.map(".bss").unwrap().dump();
            let seen = u64::from_le_bytes(bss[0].1[0][..8].try_into().unwrap());
            assert_eq!(seen, frames.len() as u64, ".bss frames_seen");
            let data = p.map(".data").unwrap().dump();
            assert_eq!(data[0].1[0], 7u32.to_le_bytes(), ".data keeps its bytes");
            let rodata = p.map(".rodata").unwrap();
            assert!(rodata.def.readonly);
            let flows = p.map("flows").unwrap().dump();
            assert_eq!(flows.len(), want.len(), "one entry per flow");
            for (k, copies) in &flows {
                let v = &copies[cpu as usize];
                let got = (
                    u64::from_le_bytes(v[..8].try_into().unwrap()),
                    u64::from_le_bytes(v[8..16].try_into().unwrap()),
                );
                assert_eq!(Some(&got), want.get(k), "lcore {cpu}'s count of {k:02x?}");
                let others: u64 = copies
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| *c != cpu as usize)
                    .map(|(_, v)| v.iter().map(|&b| b as u64).sum::<u64>())
                    .sum();
                assert_eq!(others, 0, "other lcores' copies stay zero");
            }
        }
    }
    let e = ebpf::load_object(&format!("{}/bad_rodata.o:writes_rodata", dir.display()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("writes_rodata") && e.contains("read-only map value"),
        "{e}"
    );
    let e = ebpf::load_object_with(
        &format!("{}/sampler.o:sample", dir.display()),
        &cpumapd::filter::ebpf::globals::LoadOptions {
            sets: vec![
                cpumapd::filter::ebpf::globals::GlobalSet::parse("sample_every=0x100000000")
                    .unwrap(),
            ],
            nr_cpus: 2,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("'sample_every' is a 4-byte variable in .rodata"),
        "{e}"
    );
}

/// xdp-tools 1.6.3's own objects (../shared/xdp-tools/build.sh DIR leaves
/// them in DIR/bpf-upstream), or None after saying why.
fn xdp_bench_objects() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("XDPTOOLS") else {
        common::skip(
            "needs XDPTOOLS=DIR with xdp-tools 1.6.3 built (../shared/xdp-tools/build.sh DIR)",
        );
        return None;
    };
    let up = PathBuf::from(dir).join("bpf-upstream");
    if !up.join("xdp_redirect_cpumap.bpf.o").exists() {
        common::skip(&format!(
            "{} has no xdp_redirect_cpumap.bpf.o",
            up.display()
        ));
        return None;
    }
    Some(up)
}

/// xdp-bench's own redirect-cpu object, unchanged: every one of its eight
/// XDP programs classifies every frame of ../shared/pcaps as the built-in
/// mode of the same name, interpreted and JIT-compiled (its .rodata
/// nr_cpus, its maps without max_entries, its PERCPU_HASH and DEVMAP and
/// its tracing programs all load), and its cpumap programs are what a
/// cpumap entry takes (its interface programs are refused there).
#[test]
#[ignore = "needs xdp-tools 1.6.3's objects: XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR) cargo test -- --include-ignored"]
fn xdp_benchs_own_object_classifies_like_the_built_in_modes() {
    let Some(dir) = xdp_bench_objects() else {
        return;
    };
    let targets = [TargetId(2), TargetId(3), TargetId(5)];
    let frames = buffer_sized_records();
    let mut pool = Pool::new("t", 64, 128, 2048).unwrap();
    for mode in Mode::ALL {
        let name = match mode {
            Mode::Touch => "cpumap_touch_data".to_string(),
            m => format!("cpumap_{}", m.name().replace('-', "_")),
        };
        for jit in [false, true] {
            let prog = load_with(&dir, &format!("xdp_redirect_cpumap.bpf.o:{name}"), &[], 8);
            prog.fill_targets(&targets);
            let mut inst = Instance::new(prog.clone(), 1, jit).unwrap();
            let mut builtin = Filter::new(mode, &targets).unwrap();
            let mut differ = Vec::new();
            for (i, bytes) in frames.iter().enumerate() {
                let mut f = pool.alloc().unwrap();
                f.copy_from(bytes).unwrap();
                let want = builtin.run(f.data());
                let got = inst.verdict(&mut f, &|_| true);
                if got != want {
                    differ.push((i, got, want));
                }
            }
            // Where they may differ: the built-in modes parse strictly
            // (a valid IP header, its IHL, no fragments), xdp-bench reads
            // fixed offsets and defaults ip_proto to UDP, so a frame
            // without a valid IP header and L4 ports (ARP: xdp-bench's
            // UDP target; a broken or optioned IPv4 header: ports read 20
            // bytes in) may go elsewhere. Any other difference fails.
            let strict = |b: &[u8]| {
                cpumapd::wire::parse(b).is_some_and(|p| {
                    p.ports().is_some() && (p.ethertype != 0x0800 || b[p.l3_offset] == 0x45)
                })
            };
            let unexplained: Vec<_> = differ
                .iter()
                .filter(|(i, ..)| strict(&frames[*i]))
                .collect();
            assert!(
                unexplained.is_empty(),
                "{name} (jit {jit}): {} frames with a valid IP/L4 header differ, first: {:?} {:02x?}",
                unexplained.len(),
                unexplained.first(),
                unexplained.first().map(|(i, ..)| &frames[*i])
            );
            let allowed = match mode {
                Mode::L4Proto | Mode::L4Filter | Mode::L4Sport | Mode::L4Dport => 30,
                _ => 0,
            };
            assert!(
                differ.len() <= allowed,
                "{name} (jit {jit}): {} of {} frames differ (at most {allowed} expected), first: {:?}",
                differ.len(),
                frames.len(),
                differ.first()
            );
            // rx_cnt (indexed by the lcore) counted every frame (touch
            // aborts frames shorter than an Ethernet header first).
            let rx = prog.map("rx_cnt").unwrap().dump();
            let processed = u64::from_le_bytes(rx[1].1[0][..8].try_into().unwrap());
            let counted = frames
                .iter()
                .filter(|f| mode != Mode::Touch || f.len() >= 14)
                .count();
            assert_eq!(processed, counted as u64, "{name}: rx_cnt[1].processed");
        }
    }
    let obj = format!("{}/xdp_redirect_cpumap.bpf.o", dir.display());
    // cpumap_redirect (a devmap redirect) loads too: tests/remote_redirect.rs
    // runs it on veths.
    for remote in ["cpumap_pass", "cpumap_drop", "cpumap_redirect"] {
        cpumapd::filter::RemoteProg::parse(&format!("{obj}:{remote}"))
            .unwrap_or_else(|e| panic!("{remote}: {e}"));
    }
    let e = cpumapd::filter::RemoteProg::parse(&format!("{obj}:cpumap_l4_hash")).unwrap_err();
    assert!(e.contains("runs SEC(\"xdp/cpumap\") programs only"), "{e}");
}

/// docs/EBPF.md's "runs unchanged" command, in the pipeline: xdp-bench's own
/// object as the RX filter (l4-hash and round-robin, interpreted and JIT)
/// and its cpumap programs as every entry's program. The counts equal the
/// built-in mode's; cpumap_drop's frames are counted as remote drops,
/// cpumap_pass's delivered.
#[test]
#[ignore = "needs xdp-tools 1.6.3's objects: XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR) cargo test -- --include-ignored"]
fn the_pipeline_runs_xdp_benchs_object_unchanged() {
    let Some(dir) = xdp_bench_objects() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pcap = mixed_pcap(tmp.path());
    let obj = dir.join("xdp_redirect_cpumap.bpf.o");
    let base = format!(
        "--lcores 0@0,1@1,2@1,3@0 --vdev net_pcap0,rx_pcap={} -- --rx (0,0,0) --cpu 1,2,3 --qsize 16384 --metrics off --control off --no-pin",
        pcap.display()
    );
    for (mode, remote) in [("l4-hash", "cpumap_pass"), ("round-robin", "cpumap_drop")] {
        let builtin = common::run_to_end(&format!("{base} --mode {mode} --remote-action pass"));
        for jit in ["", "--jit"] {
            let s = common::run_to_end(&format!(
                "{base} --prog {}:cpumap_{} --remote-action {}:{remote} {jit}",
                obj.display(),
                mode.replace('-', "_"),
                obj.display()
            ));
            s.check_identities(true).unwrap();
            for (what, a, b) in [
                ("rx", s.rx, builtin.rx),
                ("redirect", s.redirect, builtin.redirect),
                ("aborted", s.aborted, builtin.aborted),
                (
                    "target_processed",
                    s.target_processed,
                    builtin.target_processed,
                ),
            ] {
                assert_eq!(a, b, "{mode} {jit}: {what}");
            }
            assert_eq!(
                per_target(&s),
                per_target(&builtin),
                "{mode} {jit}: per target"
            );
            if remote == "cpumap_drop" {
                assert_eq!(s.delivered, 0, "{mode} {jit}");
                assert_eq!(s.target_drops, s.target_processed, "{mode} {jit}");
            } else {
                assert_eq!(s.delivered, s.target_processed, "{mode} {jit}");
            }
        }
    }
}

/// Atomic read-modify-writes: on a map value they run (interpreted) with
/// the kernel's results (tests/kernel_diff.rs compares them with the
/// kernel's), the JIT declines them with a clear error, and the verifier
/// refuses them on the packet, misaligned, with an unknown operation and
/// on .rodata.
#[test]
fn atomics_run_on_map_values_and_are_refused_elsewhere() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    let atomic = |size: u8, d: u8, s: u8, off: i16, op: i32| i(STX | ATOMIC | size, d, s, off, op);
    // r6 = &arr[0] (value of 16 bytes); BODY; return PASS
    let with = |body: &[[u8; 8]]| {
        let mut v = lookup_map0(0);
        v.extend_from_slice(&[jmp_imm(JNE, 0, 0, 2), mov_imm(0, 0), exit(), mov(6, 0)]);
        v.extend_from_slice(body);
        v.extend_from_slice(&[mov_imm(0, 2), exit()]);
        prog(&v)
    };
    let def = |readonly: bool| {
        let mut d = MapDef::new("arr", MapKind::Array, 4, 16, 1);
        d.readonly = readonly;
        vec![d]
    };
    let ok = with(&[
        mov_imm(1, 5),
        atomic(DW, 6, 1, 0, 0x00), // arr[0] += 5
        mov_imm(1, 7),
        atomic(DW, 6, 1, 0, FETCH), // r1 = fetch_add(arr[0], 7) -> 5
        stx(DW, 6, 1, 8),           // arr[8..] = 5
        mov_imm(0, 12),
        mov_imm(2, 40),
        atomic(DW, 6, 2, 0, CMPXCHG), // 12 == 12: arr[0] = 40
        mov_imm(3, 0x100),
        atomic(W, 6, 3, 12, 0x40), // arr[12..16] |= 0x100
        mov_imm(4, 1),
        atomic(DW, 6, 4, 0, XCHG), // arr[0] = 1, r4 = 40
        atomic(W, 6, 4, 8, 0xa0),  // arr[8..12] ^= 40
    ]);
    let p = Arc::new(Program::from_insns("atomics", &ok, def(false)).unwrap());
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    let mut inst = Instance::new(p.clone(), 0, false).unwrap();
    assert_eq!(inst.verdict(&mut f, &|_| true), Verdict::Pass);
    let v = &p.map("arr").unwrap().dump()[0].1[0];
    let w = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().unwrap());
    assert_eq!(
        u64::from_le_bytes(v[..8].try_into().unwrap()),
        1,
        "xchg left 1"
    );
    assert_eq!(
        w(8),
        5 ^ 40,
        "fetch_add's old value, then xor with xchg's old value"
    );
    assert_eq!(w(12), 0x100, "32-bit or");
    let e = Instance::new(p, 0, true).unwrap_err().to_string();
    assert!(e.contains("insn 12") && e.contains("without --jit"), "{e}");
    let refused = |what: &str, body: &[[u8; 8]], ro: bool| -> String {
        match Program::from_insns("bad", &with(body), def(ro)) {
            Ok(_) => panic!("accepted: {what}"),
            Err(e) => e.to_string(),
        }
    };
    let e = refused(
        "misaligned",
        &[mov_imm(1, 1), atomic(DW, 6, 1, 4, 0)],
        false,
    );
    assert!(e.contains("misaligned atomic access: offset 4"), "{e}");
    let e = refused(
        "unknown op",
        &[mov_imm(1, 1), atomic(DW, 6, 1, 0, 0x30)],
        false,
    );
    assert!(e.contains("unknown atomic operation 0x30"), "{e}");
    let e = refused("rodata", &[mov_imm(1, 1), atomic(DW, 6, 1, 0, 0)], true);
    assert!(e.contains("read-only map value"), "{e}");
    let pkt = prog(&[
        data(7),
        data_end(8),
        mov(9, 7),
        add_imm(9, 8),
        jmp(JGT, 9, 8, 2),
        mov_imm(1, 1),
        atomic(DW, 7, 1, 0, 0),
        mov_imm(0, 2),
        exit(),
    ]);
    let e = rejected("atomic on the packet", &pkt);
    assert!(e.contains("map value or the stack only"), "{e}");
}

/// bpf_xdp_adjust_tail: shrinking trims the frame, growing extends it into
/// the buffer's tailroom with zeros (interpreted and JIT); growing past the
/// buffer is -EINVAL, and so is a frame shorter than an Ethernet header.
#[test]
fn adjust_tail_shrinks_and_grows_within_the_buffer() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // r0 = adjust_tail(ctx, DELTA); return r0 == 0 ? PASS : DROP
    let p = |delta: i32| {
        Arc::new(
            Program::from_insns(
                "tail",
                &prog(&[
                    mov_imm(2, delta),
                    call(cpumapd::bpf_abi::helper::XDP_ADJUST_TAIL),
                    mov(1, 0),
                    mov_imm(0, 2),
                    jmp_imm(JEQ, 1, 0, 1),
                    mov_imm(0, 1),
                    exit(),
                ]),
                Vec::new(),
            )
            .unwrap(),
        )
    };
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let tailroom = {
        let mut f = pool.alloc().unwrap();
        f.copy_from(&[0; 60]).unwrap();
        let (buf, off, len) = f.xdp_buffer_whole();
        (buf.len() - off - len) as i32
    };
    assert!(tailroom > 1000, "{tailroom}");
    for jit in [false, true] {
        for (delta, want, len) in [
            (-20, Verdict::Pass, 40),
            (4, Verdict::Pass, 64),
            (tailroom, Verdict::Pass, 60 + tailroom as usize),
            (tailroom + 1, Verdict::Drop, 60),
            (-47, Verdict::Drop, 60),
            (-46, Verdict::Pass, 14),
        ] {
            let mut f = pool.alloc().unwrap();
            // Old bytes in the tailroom must not show through.
            f.xdp_buffer_whole().0.fill(0xaa);
            f.copy_from(&(0..60u8).collect::<Vec<_>>()).unwrap();
            let mut inst = Instance::new(p(delta), 0, jit).unwrap();
            assert_eq!(
                inst.verdict(&mut f, &|_| true),
                want,
                "delta {delta} jit {jit}"
            );
            assert_eq!(f.len(), len, "delta {delta} jit {jit}");
            let kept = len.min(60);
            assert_eq!(&f.data()[..kept], &(0..kept as u8).collect::<Vec<_>>()[..]);
            assert!(
                f.data()[kept..].iter().all(|&b| b == 0),
                "delta {delta} jit {jit}: grown bytes are zeros"
            );
        }
    }
}

/// bpf/lb.c with its PROG_ARRAYs filled as its loader would.
fn load_lb(dir: &Path, name: &str) -> Arc<Program> {
    let opts = common::lb_load_options();
    let p = ebpf::load_object_with(&format!("{}/lb.o:{name}", dir.display()), &opts)
        .unwrap_or_else(|e| panic!("lb.o:{name}: {e}"));
    p.fill_targets(&[TargetId(1), TargetId(2)]);
    Arc::new(p)
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn tail_calls_jump_to_the_protocols_program_and_stop_at_the_kernels_limit() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    for jit in [false, true] {
        let entry = load_lb(&dir, "lb_entry");
        assert_eq!(
            entry
                .tails
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["lb_chain", "lb_tcp", "lb_udp"]
        );
        let mut inst = Instance::new(entry.clone(), 0, jit).unwrap();
        let mut pool = Pool::new("t", 4, 256, 2048).unwrap();
        let mut run = |bytes: &[u8]| {
            let mut f = pool.alloc().unwrap();
            f.copy_from(bytes).unwrap();
            inst.verdict(&mut f, &|_| true)
        };
        let udp = common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
        assert_eq!(
            run(&udp),
            Verdict::Redirect(TargetId(1)),
            "DNS to the first target"
        );
        let v = run(&common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 80));
        assert!(matches!(v, Verdict::Redirect(_)), "{v:?}");
        let stats = |i: u32| {
            let m = entry.map("lb_stats").unwrap();
            let w = m.lookup(&i.to_le_bytes(), 0).unwrap();
            m.words()[w].load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(
            (stats(0), stats(2), stats(3)),
            (2, 2, 0),
            "rx, udp, fell through"
        );
        // lb_chain: 1 run + 33 tail calls, then the 34th fails and it passes.
        let chain = load_lb(&dir, "lb_chain");
        let mut c = Instance::new(chain.clone(), 0, jit).unwrap();
        let mut f = pool.alloc().unwrap();
        f.copy_from(&udp).unwrap();
        assert_eq!(c.verdict(&mut f, &|_| true), Verdict::Pass);
        let bss = chain.map(".bss").unwrap();
        assert_eq!(
            bss.words()[0].load(std::sync::atomic::Ordering::Relaxed),
            34,
            "jit {jit}"
        );
    }
}

/// Runs cpumapd with `app` args over `n` generated frames and a control
/// socket; once every frame is through, returns the summary and the named
/// maps' values by key (`ctl prog map dump`), runs `then` with the
/// socket, and stops it.
fn run_and_dump(
    source: &str,
    app: &str,
    n: u64,
    maps: &[&str],
    then: &dyn Fn(&Path),
) -> (serde_json::Value, Vec<Vec<u64>>) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("ctl.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .args(common::args(&format!(
            "--lcores 0@0,1@1 --vdev net_gen0,count={n},rate=200000,{source} -- --cpu 1 {app} --control {} --state-dir off --metrics off --interval 0 --linger 60",
            sock.display()
        )))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_control(&sock);
    let t0 = Instant::now();
    let summary = loop {
        let s: serde_json::Value =
            serde_json::from_str(&common::ctl_ok(&sock, &["summary"])).unwrap();
        if s["rx"].as_u64() == Some(n) && s["in_flight"].as_u64() == Some(0) {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "traffic did not end: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let values = maps
        .iter()
        .map(|m| {
            let d: serde_json::Value =
                serde_json::from_str(&common::ctl_ok(&sock, &["prog", "map", "dump", m])).unwrap();
            d["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["value"].as_u64().unwrap())
                .collect()
        })
        .collect();
    then(&sock);
    common::sigterm(&child);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::assert_no_pool_leak(&o.stderr);
    (summary, values)
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn an_objects_rx_and_remote_programs_share_its_maps_and_the_rx_metadata() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let o = format!("{}/lb.o", dir.display());
    let n = 20_000u64;
    // UDP to 53 and 80 in turn (flows=2 alternates the port): all redirected
    // by lb_udp, reached through the tail call.
    let (s, v) = run_and_dump(
        "flows=2,proto=udp,dport=53",
        &format!(
            "--prog {o}:lb_entry --prog-array jmp_table:0=lb_tcp --prog-array jmp_table:1=lb_udp --remote-action {o}:lb_remote"
        ),
        n,
        &["lb_stats"],
        &|sock| {
            // Tail programs are swapped by name; slot n holds tail n + 1
            // (lb_tcp, lb_udp in name order).
            let slots = |sock: &Path| -> Vec<u64> {
                let d: serde_json::Value = serde_json::from_str(&common::ctl_ok(
                    sock,
                    &["prog", "map", "dump", "jmp_table"],
                ))
                .unwrap();
                d["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["value"].as_u64().unwrap())
                    .collect()
            };
            assert_eq!(slots(sock), [1, 2, 0, 0]);
            let d: serde_json::Value =
                serde_json::from_str(&common::ctl_ok(sock, &["prog", "map", "dump", "jmp_table"]))
                    .unwrap();
            let names: Vec<Option<&str>> = d["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["program"].as_str())
                .collect();
            assert_eq!(names, [Some("lb_tcp"), Some("lb_udp"), None, None], "{d}");
            common::ctl_ok(sock, &["prog", "map", "update", "jmp_table", "1", "none"]);
            common::ctl_ok(sock, &["prog", "map", "update", "jmp_table", "2", "lb_tcp"]);
            assert_eq!(slots(sock), [1, 0, 1, 0]);
            let e = common::ctl(
                sock,
                &["prog", "map", "update", "jmp_table", "0", "lb_nope"],
            );
            let err = String::from_utf8_lossy(&e.stderr);
            assert!(
                !e.status.success() && err.contains("lb_tcp, lb_udp") && err.contains("EINVAL"),
                "{err}"
            );
        },
    );
    let st = &v[0];
    assert_eq!(s["redirect"].as_u64(), Some(n), "{s}");
    assert_eq!(st[0], n, "lb_entry ran on every frame: {st:?}");
    assert_eq!(st[2], n, "every frame went through lb_udp: {st:?}");
    assert_eq!(st[3], 0, "no tail call fell through: {st:?}");
    // A ring may overflow while other tests share the CPUs: every frame is
    // processed or counted as an enqueue drop.
    let processed = s["target_processed"].as_u64().unwrap();
    assert_eq!(processed + s["enqueue_drops"].as_u64().unwrap(), n, "{s}");
    assert!(processed > 0, "{s}");
    assert_eq!(
        st[4], processed,
        "lb_remote counted into the RX program's map: {st:?}"
    );
    assert_eq!(
        st[5], processed,
        "and read lb_entry's metadata on every frame: {st:?}"
    );
    // Two objects, one map pinned by name: each counts into its half.
    let (s, v) = run_and_dump(
        "flows=4",
        &format!(
            "--prog {0}/pin_rx.o --remote-action {0}/pin_remote.o",
            dir.display()
        ),
        n,
        &["pin_hits", "local"],
        &|_| {},
    );
    let processed = s["target_processed"].as_u64().unwrap();
    assert_eq!(processed + s["enqueue_drops"].as_u64().unwrap(), n, "{s}");
    assert_eq!(s["target_drops"].as_u64(), Some(processed), "{s}");
    assert_eq!(v[0], [n, processed], "pin_rx and pin_remote share pin_hits");
    assert_eq!(v[1], [n], "each object's own map: the RX program's");
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn bad_prog_array_settings_get_an_error_naming_the_problem() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let prog = format!("{}/lb.o:lb_entry", dir.display());
    for (set, want) in [
        (
            "--devmap lb_tx:0=lo,prog=lb_tcp",
            "program 'lb_tcp' is a SEC(\"xdp\") program, not SEC(\"xdp/devmap\")",
        ),
        (
            "--devmap lb_tx:0=lo,prog=lb_nope",
            "no XDP program 'lb_nope'",
        ),
        ("jmp_table", "--prog-array 'jmp_table': no '='"),
        ("jmp_table:x=lb_tcp", "INDEX must be a u32"),
        (
            "lb_stats:0=lb_tcp",
            "map 'lb_stats' is a array, not a prog_array",
        ),
        (
            "jmp_table:0=lb_nope",
            "the object has no XDP program 'lb_nope' (it has: lb_chain, lb_egress, lb_entry, lb_redirect, lb_remote, lb_tcp, lb_udp)",
        ),
        ("jmp_table:9=lb_tcp", "index 9 is not below max_entries 4"),
        (
            "nope:0=lb_tcp",
            "--prog-array nope: no loaded eBPF program has a map 'nope'",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args([
                "--lcores", "0@0,1@0", "--vdev", "net_gen0", "--", "--prog", &prog,
            ])
            .args(match set.split_once(' ') {
                Some((opt, v)) => [opt, v],
                None => ["--prog-array", set],
            })
            .args(["--control", "off", "--metrics", "off"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{set}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn programs_only_tail_call_through_a_prog_array() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MAP_FD_BASE, MapDef, MapKind};
    let arr = || {
        vec![
            MapDef::new("jmp", MapKind::ProgArray, 4, 4, 4),
            MapDef::new("a", MapKind::Array, 4, 8, 1),
        ]
    };
    // A lookup on the prog_array (map fd 0): refused, as the kernel does.
    let mut lookup = lookup_map0(0);
    lookup.extend([mov_imm(0, 2), exit()]);
    let e = Program::from_insns("t", &prog(&lookup), arr())
        .unwrap_err()
        .to_string();
    assert!(e.contains("on a prog_array"), "{e}");
    // r2 = map `m`; r3 = 0; bpf_tail_call(ctx, r2, r3); return XDP_PASS.
    let tail_through = |m: i32| {
        prog(&[
            i(
                LD | IMM | DW,
                2,
                cpumapd::bpf_abi::pseudo::MAP_FD,
                0,
                MAP_FD_BASE + m,
            ),
            i(0, 0, 0, 0, 0),
            mov_imm(3, 0),
            call(12),
            mov_imm(0, 2),
            exit(),
        ])
    };
    let e = Program::from_insns("t", &tail_through(1), arr())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a prog_array in r2"), "{e}");
    // Through the prog_array: accepted; the empty slot fails and the
    // program goes on.
    let p = Arc::new(Program::from_insns("t", &tail_through(0), arr()).unwrap());
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        let mut pool = Pool::new("t", 2, 256, 2048).unwrap();
        let mut f = pool.alloc().unwrap();
        f.copy_from(&common::udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2))
            .unwrap();
        assert_eq!(inst.verdict(&mut f, &|_| true), Verdict::Pass, "jit {jit}");
    }
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn trace_printk_lines_reach_stderr_at_a_bounded_rate() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .args(common::args(&format!(
            "--lcores 0@0,1@1 --vdev net_gen0,count=3000,rate=1500,flows=1 -- --cpu 1 --prog {}/printk.o --control off --metrics off --state-dir off --interval 0 --summary-json -",
            dir.display()
        )))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cpumapd: bpf_trace_printk: lcore0: "))
        .collect();
    assert!(
        lines.contains(&"cpumapd: bpf_trace_printk: lcore0: len    64 proto 17  dport 0009"),
        "{err}"
    );
    // Two formats per frame, 6000 calls over about 2 s: 10 lines a second.
    let secs = 4;
    assert!(
        lines.len() >= 10 && lines.len() <= secs * printk_rate(),
        "{} lines",
        lines.len()
    );
    assert!(err.contains("earlier lines left out)"), "{err}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["pass"].as_u64(), Some(3000), "every frame passed: {s}");
}

fn printk_rate() -> usize {
    cpumapd::filter::ebpf::printk::LINES_PER_SEC as usize
}

#[test]
fn trace_printk_needs_its_format_in_memory_of_a_constant_size() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // "%d\0" on the stack, size from the clock: refused; size 3: accepted.
    let with_size = |size: [u8; 8]| {
        prog(&[
            st(W, 10, -4, i32::from_le_bytes(*b"%d\0\0")),
            call(5),
            mov(6, 0),
            mov(1, 10),
            add_imm(1, -4),
            size,
            mov_imm(3, 7),
            call(6),
            mov_imm(0, 2),
            exit(),
        ])
    };
    let e = Program::from_insns("t", &with_size(mov(2, 6)), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("format size (r2) must be a constant"), "{e}");
    let e = Program::from_insns("t", &with_size(mov_imm(2, 8)), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("the format (r1) of 8 bytes"), "{e}");
    Program::from_insns("t", &with_size(mov_imm(2, 3)), vec![]).unwrap();
}

#[test]
fn bpf_to_bpf_calls_keep_frames_and_r6_r9_apart_and_errors_name_the_function() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    let local_call = |rel: i32| i(JMP | CALL, 0, 1, 0, rel);
    let add = |d: u8, s: u8| i(ALU64 | ADD | X, d, s, 0, 0);
    let code = prog(&[
        // main: its own r10-8 and r6, r7 (a pointer into its frame) must
        // come back from f as they were; PASS if r0 = 5 + 7 + 1 + 1.
        st(DW, 10, -8, 1),
        mov_imm(6, 7),
        mov(7, 10),
        add_imm(7, -8),
        local_call(10), // f (15)
        add(0, 6),
        ldx(DW, 1, 7, 0),
        add(0, 1),
        ldx(DW, 1, 10, -8),
        add(0, 1),
        jmp_imm(JEQ, 0, 14, 2),
        mov_imm(0, 1),
        exit(),
        mov_imm(0, 2),
        exit(),
        // f (15): writes its own r10-8, r6 and r7; g must leave its r6.
        st(DW, 10, -8, 100),
        mov_imm(6, 1000),
        mov_imm(7, 0),
        local_call(4), // g (23)
        add(0, 6),
        add_imm(0, -1000),
        add_imm(0, 4),
        exit(),
        // g (23): a pointer to its own frame in r6; returns 9 - 8.
        st(DW, 10, -16, 9),
        mov(6, 10),
        add_imm(6, -16),
        ldx(DW, 0, 6, 0),
        add_imm(0, -8),
        exit(),
    ]);
    let p = Arc::new(Program::from_insns("calls", &code, Vec::new()).unwrap());
    assert!(p.insn_count() > 29, "inlined: {}", p.insn_count());
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        assert_eq!(
            inst.verdict(&mut f, &|_| true),
            Verdict::Pass,
            "jit {jit}: r6, r7 and the frames survived the calls"
        );
    }
    // A bad access inside g: the error names g's instruction and the call
    // that brought it in.
    let mut bad = code.clone();
    bad[26 * 8..27 * 8].copy_from_slice(&ldx(DW, 0, 1, 0));
    let e = rejected("an 8-byte context read in a called function", &bad);
    assert!(
        e.contains("insn 26") && e.contains("called at insn 18"),
        "{e}"
    );
    // Recursion: refused at the call.
    let mut rec = code.clone();
    rec[18 * 8..19 * 8].copy_from_slice(&local_call(-4));
    let e = rejected("a function calling itself", &rec);
    assert!(e.contains("insn 18") && e.contains("recursive"), "{e}");
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn an_object_with_noinline_functions_loads_and_runs_them() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let frames: [(Vec<u8>, Verdict); 5] = [
        (
            common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 9),
            Verdict::Drop,
        ),
        (
            common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 80),
            Verdict::Pass,
        ),
        (
            common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 53, 80),
            Verdict::Redirect(TargetId(0)),
        ),
        (vec![0xff; 10], Verdict::Drop),
        (
            [vec![0xff; 12], vec![0x08, 0x06], vec![0; 28]].concat(),
            Verdict::Pass,
        ),
    ];
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    for jit in [false, true] {
        let p = load(&dir, "calls.o");
        p.fill_targets(&[TargetId(0)]);
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for (bytes, want) in &frames {
            let mut f = pool.alloc().unwrap();
            f.copy_from(bytes).unwrap();
            assert_eq!(
                inst.verdict(&mut f, &|_| true),
                *want,
                "jit {jit}: {bytes:02x?}"
            );
        }
        // count() (a global function) counted each verdict once, and
        // count_flow's five keys per call landed for the three IPv4 frames.
        let verdicts = p.map("verdicts").unwrap().dump();
        let n = |a: u32| {
            let v = &verdicts
                .iter()
                .find(|(k, _)| k[..] == a.to_le_bytes())
                .unwrap()
                .1[0];
            u64::from_le_bytes(v[..8].try_into().unwrap())
        };
        assert_eq!((n(1), n(2), n(4)), (2, 2, 1), "jit {jit}");
        let flows: u64 = p
            .map("flows")
            .unwrap()
            .dump()
            .iter()
            .map(|(_, v)| u64::from_le_bytes(v[0][..8].try_into().unwrap()))
            .sum();
        assert_eq!(flows, 3 * 5, "jit {jit}: 3 IPv4 frames, 5 keys each");
        // .bss (as clang lays it out): loop_runs, loop_sum, deepest.
        // bpf_loop(24) over each frame's 16-bit words stops where the
        // frame ends: 21 words in the 42-byte frames (22 returned), 5 in
        // the runt (6).
        let bss = &p.map(".bss").unwrap().dump()[0].1[0];
        let word = |i: usize| u64::from_le_bytes(bss[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 4 * 22 + 6, "jit {jit}: bpf_loop's return values");
        let sum: u64 = frames
            .iter()
            .map(|(b, _)| {
                b.chunks_exact(2)
                    .take(24)
                    .map(|w| u16::from_be_bytes([w[0], w[1]]) as u64)
                    .sum::<u64>()
            })
            .sum();
        assert_eq!(word(1), sum, "jit {jit}: the words the callback added");
        assert_eq!(word(2), 3, "jit {jit}: three frames reached flow_ports");
    }
}

#[test]
fn bpf_loop_runs_its_callback_with_the_kernels_return_values() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // bpf_loop(nr, cb, NULL, flags) == want ? PASS : DROP, where cb stops
    // the loop at index 3.
    let program = |nr: i32, flags: i32, want: i32| {
        prog(&[
            mov_imm(1, nr),
            i(LD | IMM | DW, 2, 4, 0, 9), // cb at 1 + 1 + 9 = 11
            i(0, 0, 0, 0, 0),
            mov_imm(3, 0),
            mov_imm(4, flags),
            call(181),
            jmp_imm(JEQ, 0, want, 2),
            mov_imm(0, 1),
            exit(),
            mov_imm(0, 2),
            exit(),
            // cb (11): return index == 3
            mov_imm(0, 0),
            jmp_imm(JNE, 1, 3, 1),
            mov_imm(0, 1),
            exit(),
        ])
    };
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    for (nr, flags, want, what) in [
        (10, 0, 4, "stopped by the callback at index 3: 4 runs"),
        (2, 0, 2, "the count reached"),
        (0, 0, 0, "no runs"),
        (10, 1, -22, "flags: -EINVAL"),
        ((1 << 23) + 1, 0, -7, "past BPF_MAX_LOOPS: -E2BIG"),
    ] {
        let p = Arc::new(
            Program::from_insns("loop", &program(nr, flags, want), Vec::new())
                .unwrap_or_else(|e| panic!("{what}: {e}")),
        );
        for jit in [false, true] {
            let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
            assert_eq!(
                inst.verdict(&mut f, &|_| true),
                Verdict::Pass,
                "{what} (jit {jit})"
            );
        }
    }
    // A count known only at run time (the frame's length): refused, at
    // once, naming bpf_loop.
    let mut unknown = program(10, 0, 4);
    unknown[..8].copy_from_slice(&ldx(W, 1, 1, 16)); // rx_queue_index
    unknown[12 * 8..13 * 8].copy_from_slice(&i(JMP | JA, 0, 0, 1, 0)); // never stops
    let t = std::time::Instant::now();
    let e = rejected("bpf_loop with a count the verifier cannot bound", &unknown);
    assert!(
        e.contains("insn 5") && e.contains("bpf_loop: cpumapd unrolls"),
        "{e}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    // A function address that is not bpf_loop's callback is refused.
    let mut bad = program(10, 0, 4);
    bad[5 * 8..6 * 8].copy_from_slice(&call(7));
    let e = rejected("a function address passed to another helper", &bad);
    assert!(
        e.contains("insn 1") && e.contains("bpf_loop's callback"),
        "{e}"
    );
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn the_xdp_metadata_kfuncs_give_the_ports_hash_and_the_kernels_errors() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    let frame = common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000);
    for jit in [false, true] {
        let p = load(&dir, "rx_meta.o");
        p.fill_targets(&[TargetId(0), TargetId(1)]);
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        let bss = |p: &Program| p.map(".bss").unwrap().dump()[0].1[0].clone();
        // .bss as clang lays it out: hash_ret, vlan_ret, ts_ret (s64),
        // last_hash (u32, padded), hashed (u64); found by symbol below.
        let globals = ebpf::object_globals(&format!("{}/rx_meta.o", dir.display())).unwrap();
        let at = |name: &str| globals.iter().find(|g| g.name == name).unwrap().offset;
        let read = |b: &[u8], name: &str, n: usize| {
            let o = at(name);
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&b[o..o + n]);
            i64::from_le_bytes(w)
        };
        // A frame with a hash from its port: the kfunc gives it.
        let mut f = pool.alloc().unwrap();
        f.copy_from(&frame).unwrap();
        f.set_rx_meta(0, 0, 0x1234_5677);
        let v = inst.verdict(&mut f, &|_| true);
        assert_eq!(
            v,
            Verdict::Redirect(TargetId(1)),
            "jit {jit}: steered by the hash"
        );
        let b = bss(&p);
        assert_eq!(read(&b, "hash_ret", 8), 0, "jit {jit}");
        assert_eq!(read(&b, "last_hash", 4), 0x1234_5677, "jit {jit}");
        assert_eq!(
            read(&b, "vlan_ret", 8),
            -95,
            "jit {jit}: no stripped tag (EOPNOTSUPP)"
        );
        assert_eq!(
            read(&b, "ts_ret", 8),
            -95,
            "jit {jit}: no timestamp (EOPNOTSUPP)"
        );
        // Without one: -EOPNOTSUPP, as the kernel answers for a driver
        // that has none.
        let mut f = pool.alloc().unwrap();
        f.copy_from(&frame).unwrap();
        f.set_rx_meta(0, 0, 0);
        assert_eq!(inst.verdict(&mut f, &|_| true), Verdict::Pass, "jit {jit}");
        let b = bss(&p);
        assert_eq!(read(&b, "hash_ret", 8), -95, "jit {jit}");
        assert_eq!(read(&b, "hashed", 8), 1, "jit {jit}");
    }
    // A kfunc cpumapd does not provide: the load names it.
    let e = ebpf::load_object(&format!("{}/bad_kfunc.o", dir.display())).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("'bpf_dynptr_from_xdp'") && e.contains("does not provide"),
        "{e}"
    );
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn queue_and_stack_maps_push_pop_and_peek_as_the_kernels_do() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let mut pool = Pool::new("t", 4, 128, 2048).unwrap();
    for jit in [false, true] {
        let p = load(&dir, "queue.o");
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        let globals = ebpf::object_globals(&format!("{}/queue.o", dir.display())).unwrap();
        let bss = |name: &str| {
            let b = p.map(".bss").unwrap().dump()[0].1[0].clone();
            let o = globals.iter().find(|g| g.name == name).unwrap().offset;
            u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
        };
        let mut verdicts = Vec::new();
        for len in [60u16, 61, 62, 63, 64, 65] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&vec![0u8; len as usize]).unwrap();
            verdicts.push(inst.verdict(&mut f, &|_| true));
        }
        // Frame 1 finds no token: three are pushed (1, 2, 3; the fourth
        // is -E2BIG) and it is dropped. Frames 2-4 spend 3, 2, 1 (LIFO),
        // peeking 2, 1, then nothing; frame 5 refills; frame 6 spends 3
        // and peeks 2.
        use Verdict::{Drop, Pass};
        assert_eq!(verdicts, [Drop, Pass, Pass, Pass, Drop, Pass], "jit {jit}");
        assert_eq!(
            (bss("spent"), bss("peek_sum"), bss("refills"), bss("full")),
            (3 + 2 + 1 + 3, 2 + 1 + 2, 2, 2),
            "jit {jit}"
        );
        // The queue kept the four newest lengths, oldest first (BPF_EXIST
        // dropped the oldest each time it was full).
        let recent: Vec<u32> = p
            .map("recent")
            .unwrap()
            .queued()
            .iter()
            .map(|v| u32::from_le_bytes(v[..4].try_into().unwrap()))
            .collect();
        assert_eq!(recent, [62, 63, 64, 65], "jit {jit}");
        let tokens = p.map("tokens").unwrap().queued();
        assert_eq!(tokens.len(), 2, "jit {jit}: 1 and 2 are left");
    }
}

#[test]
fn queue_helpers_are_checked_at_load() {
    use asm::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    let q = MapDef::new("q", MapKind::Queue, 0, 8, 4);
    let h = MapDef::new("h", MapKind::Hash, 4, 8, 4);
    let ld_map = |m: i32| {
        let fd = cpumapd::filter::ebpf::maps::MAP_FD_BASE + m;
        [i(0x18, 1, 1, 0, fd), i(0, 0, 0, 0, 0)]
    };
    let with = |body: &[[u8; 8]]| {
        let mut v = Vec::new();
        v.extend_from_slice(&ld_map(0));
        v.extend_from_slice(body);
        v.extend_from_slice(&[mov_imm(0, 2), exit()]);
        prog(&v)
    };
    let load = |code: Vec<u8>, maps: Vec<MapDef>| Program::from_insns("t", &code, maps).map(|_| ());
    // pop into stack bytes never written: accepted (MEM_UNINIT), and the
    // bytes may be read after it.
    let ok = with(&[mov(2, 10), add_imm(2, -8), call(88), ldx(0x18, 3, 10, -8)]);
    load(ok, vec![q.clone()]).unwrap();
    // push of stack bytes never written: accepted, as the kernel's
    // privileged loader does (they are zeroed at entry).
    load(
        with(&[mov(2, 10), add_imm(2, -8), mov_imm(3, 0), call(87)]),
        vec![q.clone()],
    )
    .unwrap();
    // push/pop on a hash map, lookup on a queue: refused naming both.
    let e = load(
        with(&[mov(2, 10), add_imm(2, -8), call(88)]),
        vec![h.clone()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bpf_map_pop_elem on a hash"), "{e}");
    let e = load(
        with(&[st(0x18, 10, -8, 0), mov(2, 10), add_imm(2, -8), call(1)]),
        vec![q.clone()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bpf_map_lookup_elem on a queue"), "{e}");
    // A stack pointer spilled to the stack: filled back, it may be
    // dereferenced; once a pop has overwritten its slot it is a number
    // and using it as a pointer is refused (the JIT checks no bounds).
    let spilled = |pop: bool| {
        let mut body = vec![
            st(0x18, 10, -16, 0),
            mov(4, 10),
            add_imm(4, -16),
            stx(0x18, 10, 4, -8),
        ];
        if pop {
            body.extend_from_slice(&[mov(2, 10), add_imm(2, -8), call(88)]);
        }
        body.extend_from_slice(&[ldx(0x18, 5, 10, -8), ldx(0x18, 0, 5, 0)]);
        with(&body)
    };
    load(spilled(false), vec![q.clone()]).unwrap();
    let e = load(spilled(true), vec![q]).unwrap_err().to_string();
    assert!(e.contains("insn 10: memory access through a number"), "{e}");
}

/// `ld_imm64 d, v` (two slots).
fn ld64(d: u8, v: u64) -> Vec<[u8; 8]> {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    vec![
        i(LD | IMM | DW, d, 0, 0, v as u32 as i32),
        i(0, 0, 0, 0, (v >> 32) as u32 as i32),
    ]
}

/// r0 after running `body` (then exit) once, interpreted and JIT-compiled
/// (None where the JIT refuses the program, with its message).
fn r0_of(body: &[[u8; 8]]) -> (u64, Result<u64, String>) {
    let mut code = body.to_vec();
    code.push(asm::exit());
    let p = Arc::new(
        Program::from_insns("v4", &asm::prog(&code), Vec::new()).unwrap_or_else(|e| panic!("{e}")),
    );
    let mut pool = Pool::new("v4", 2, 128, 2048).unwrap();
    let mut run = |jit: bool| -> Result<u64, String> {
        let mut inst = Instance::new(p.clone(), 0, jit).map_err(|e| e.to_string())?;
        let mut f = pool.alloc().unwrap();
        f.copy_from(&[0u8; 64]).unwrap();
        Ok(inst.test_run(&mut f, &|_| false).expect("no fault"))
    };
    (run(false).unwrap(), run(true))
}

#[test]
fn isa_v4_runs_as_the_kernel_defines_it_interpreted_and_jit() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    const MIN: u64 = i64::MIN as u64;
    let m7 = (-7i64) as u64;
    // (what, r1, r2, instruction on r1 and r2 into r1, expected r1)
    let sdiv = |c: u8, o: u8| i(c | o | X, 1, 2, SIGNED_DIV, 0);
    let cases: Vec<(&str, u64, u64, [u8; 8], u64)> = vec![
        ("sdiv64 -7 / 2", m7, 2, sdiv(ALU64, DIV), (-3i64) as u64),
        ("sdiv64 MIN / -1", MIN, u64::MAX, sdiv(ALU64, DIV), MIN),
        ("sdiv64 by 0", m7, 0, sdiv(ALU64, DIV), 0),
        ("smod64 -7 % 2", m7, 2, sdiv(ALU64, MOD), u64::MAX),
        ("smod64 by 0", m7, 0, sdiv(ALU64, MOD), m7),
        ("smod64 MIN % -1", MIN, u64::MAX, sdiv(ALU64, MOD), 0),
        // 32-bit: the low halves, zero-extended.
        (
            "sdiv32 -8 / 2",
            0xdead_0000_ffff_fff8,
            2,
            sdiv(ALU, DIV),
            0xffff_fffc,
        ),
        (
            "smod32 by 0",
            0xdead_0000_ffff_fff9,
            0,
            sdiv(ALU, MOD),
            0xffff_fff9,
        ),
        (
            "sdiv32 INT_MIN / -1",
            0x8000_0000,
            0xffff_ffff,
            sdiv(ALU, DIV),
            0x8000_0000,
        ),
        (
            "movsx64 s8",
            0x1_0000_0080,
            0,
            i(ALU64 | MOV | X, 1, 1, 8, 0),
            0xffff_ffff_ffff_ff80,
        ),
        (
            "movsx64 s16",
            0x7fff,
            0,
            i(ALU64 | MOV | X, 1, 1, 16, 0),
            0x7fff,
        ),
        (
            "movsx64 s32",
            0x8000_0000,
            0,
            i(ALU64 | MOV | X, 1, 1, 32, 0),
            0xffff_ffff_8000_0000,
        ),
        (
            "movsx32 s8",
            0xffff_0000_0000_0080,
            0,
            i(ALU | MOV | X, 1, 1, 8, 0),
            0xffff_ff80,
        ),
        (
            "movsx32 s16",
            0x8000,
            0,
            i(ALU | MOV | X, 1, 1, 16, 0),
            0xffff_8000,
        ),
        (
            "bswap16",
            0x1122_3344_5566_7788,
            0,
            i(ALU64 | END | K, 1, 0, 0, 16),
            0x8877,
        ),
        (
            "bswap32",
            0x1122_3344_5566_7788,
            0,
            i(ALU64 | END | K, 1, 0, 0, 32),
            0x8877_6655,
        ),
        (
            "bswap64",
            0x1122_3344_5566_7788,
            0,
            i(ALU64 | END | K, 1, 0, 0, 64),
            0x8877_6655_4433_2211,
        ),
        // rbpf 0.3's JIT kept the upper half on these (the kernel's
        // verifier suite found it): cpumapd's JIT zero-extends them.
        (
            "mov32 reg",
            0x1_0000_0005,
            0,
            i(ALU | MOV | X, 1, 1, 0, 0),
            5,
        ),
        (
            "le16",
            0x1122_3344_5566_7788,
            0,
            i(ALU | END | K, 1, 0, 0, 16),
            0x7788,
        ),
        (
            "le32",
            0x1122_3344_5566_7788,
            0,
            i(ALU | END | K, 1, 0, 0, 32),
            0x5566_7788,
        ),
    ];
    for (what, a, b, op, want) in cases {
        let mut body = ld64(1, a);
        body.extend(ld64(2, b));
        body.extend([op, mov(0, 1)]);
        let (interp, jit) = r0_of(&body);
        assert_eq!(interp, want, "{what}: interpreted");
        assert_eq!(jit, Ok(want), "{what}: JIT");
    }
    // ldsx: sign-extending loads of 1, 2 and 4 bytes from the stack.
    for (size, v, want) in [
        (B, 0x1180u64, 0xffff_ffff_ffff_ff80u64),
        (H, 0x1_8001, 0xffff_ffff_ffff_8001),
        (W, 0x1_8000_0001, 0xffff_ffff_8000_0001),
        (W, 0x1_7fff_ffff, 0x7fff_ffff),
    ] {
        let mut body = ld64(1, v);
        body.extend([stx(DW, 10, 1, -8), i(LDX | MEMSX | size, 0, 10, -8, 0)]);
        let (interp, jit) = r0_of(&body);
        assert_eq!(interp, want, "ldsx {v:#x} size {size:#x}: interpreted");
        assert_eq!(jit.unwrap(), want, "ldsx {v:#x} size {size:#x}: JIT");
    }
    // gotol: a 32-bit jump offset in imm.
    let (interp, jit) = r0_of(&[mov_imm(0, 1), i(JMP32 | JA, 0, 0, 0, 1), mov_imm(0, 2)]);
    assert_eq!(
        (interp, jit.unwrap()),
        (1, 1),
        "gotol skips one instruction"
    );
    // What the kernel refuses statically, cpumapd refuses too.
    for (what, code, msg) in [
        (
            "sdiv by constant 0",
            i(ALU64 | DIV | K, 0, 0, SIGNED_DIV, 0),
            "div by zero",
        ),
        (
            "movsx of 64",
            i(ALU64 | MOV | X, 0, 1, 64, 0),
            "uses reserved fields",
        ),
        (
            "movsx32 of 32",
            i(ALU | MOV | X, 0, 1, 32, 0),
            "uses reserved fields",
        ),
        (
            "ldsx of 8 bytes",
            i(LDX | MEMSX | DW, 0, 10, -8, 0),
            "unknown instruction opcode",
        ),
        (
            "bswap from a register",
            i(ALU64 | END | X, 0, 0, 0, 16),
            "unknown instruction opcode",
        ),
        (
            "shift by 64",
            i(ALU64 | LSH | K, 0, 0, 0, 64),
            "invalid shift 64",
        ),
    ] {
        let e = rejected(
            what,
            &prog(&[mov_imm(0, 0), stx(DW, 10, 0, -8), code, exit()]),
        );
        assert!(e.contains(msg), "{what}: {e}");
    }
    // movsx of a pointer, and a subtraction from the stack pointer.
    let e = rejected(
        "movsx of r10",
        &prog(&[i(ALU64 | MOV | X, 0, 10, 8, 0), exit()]),
    );
    assert!(e.contains("sign extension (movsx) of pointer r10"), "{e}");
    let e = rejected(
        "r10 - 8",
        &prog(&[
            mov(1, 10),
            i(ALU64 | SUB | K, 1, 0, 0, 8),
            mov_imm(0, 0),
            exit(),
        ]),
    );
    assert!(e.contains("subtraction from the stack pointer"), "{e}");
}

#[test]
fn variable_offsets_into_a_map_value_are_bounded_and_run() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    // value = lookup(array of 16-byte values, 0); idx = data[0] & MASK;
    // return *(u8 *)(value + idx) (the byte the frame's first byte picks).
    let program = |mask: i32, sub: bool| {
        let mut p = vec![mov(8, 1)];
        p.extend(lookup_map0(0));
        p.extend([
            jmp_imm(JNE, 0, 0, 2),
            mov_imm(0, 0),
            exit(),
            mov(7, 0),
            ldx(W, 2, 8, 0),
            ldx(W, 3, 8, 4),
            mov(4, 2),
            add_imm(4, 1),
            jmp(JGT, 4, 3, 5),
            ldx(B, 5, 2, 0),
            i(ALU64 | AND | K, 5, 0, 0, mask),
        ]);
        if sub {
            // value + 15 - idx: the other way round.
            p.extend([add_imm(7, 15), i(ALU64 | SUB | X, 7, 5, 0, 0)]);
        } else {
            p.push(i(ALU64 | ADD | X, 7, 5, 0, 0));
        }
        p.extend([ldx(B, 0, 7, 0), exit()]);
        p.extend([mov_imm(0, 0), exit()]);
        prog(&p)
    };
    let defs = || vec![MapDef::new("values", MapKind::Array, 4, 16, 1)];
    for sub in [false, true] {
        let p = Arc::new(
            Program::from_insns("var", &program(15, sub), defs()).unwrap_or_else(|e| panic!("{e}")),
        );
        let value: Vec<u8> = (100..116).collect();
        p.maps[0].update(&0u32.to_le_bytes(), &value, 0, 0);
        let mut pool = Pool::new("var", 2, 128, 2048).unwrap();
        for jit in [false, true] {
            let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
            for first in [0u8, 7, 15, 0xff] {
                let mut f = pool.alloc().unwrap();
                f.copy_from(&[first; 60]).unwrap();
                let idx = (first & 15) as usize;
                let want = if sub { value[15 - idx] } else { value[idx] };
                assert_eq!(
                    inst.test_run(&mut f, &|_| false),
                    Some(want as u64),
                    "sub {sub} jit {jit} first {first}"
                );
            }
        }
    }
    // 0..=16 reaches one byte past the value.
    let e = Program::from_insns("var", &program(16, false), defs())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("map value access out of bounds: offset 0..=16 size 1, value size 16"),
        "{e}"
    );
    // A whole byte reaches far past it.
    let e = Program::from_insns("var", &program(-1, false), defs())
        .unwrap_err()
        .to_string();
    assert!(e.contains("offset 0..=255 size 1, value size 16"), "{e}");
}

#[test]
fn variable_offsets_into_the_stack_read_only_written_bytes() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // Writes 0x1122334455667788 at r10-8 (or only its low 4 bytes), then
    // returns the byte at r10 - 8 + (data[0] & MASK).
    let program = |mask: i32, whole: bool| {
        let mut p = vec![
            data(2),
            data_end(3),
            mov(4, 2),
            add_imm(4, 1),
            jmp(JGT, 4, 3, 10),
        ];
        p.extend(ld64(6, 0x1122_3344_5566_7788));
        p.push(if whole {
            stx(DW, 10, 6, -8)
        } else {
            stx(W, 10, 6, -8)
        });
        p.extend([
            ldx(B, 5, 2, 0),
            i(ALU64 | AND | K, 5, 0, 0, mask),
            mov(7, 10),
            add_imm(7, -8),
            i(ALU64 | ADD | X, 7, 5, 0, 0),
            ldx(B, 0, 7, 0),
            exit(),
            mov_imm(0, 0),
            exit(),
        ]);
        prog(&p)
    };
    let p = Arc::new(
        Program::from_insns("stack", &program(7, true), Vec::new())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut pool = Pool::new("stack", 2, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for first in [0u8, 3, 7, 0xfe] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[first; 60]).unwrap();
            let want = 0x1122_3344_5566_7788u64.to_le_bytes()[(first & 7) as usize];
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want as u64),
                "jit {jit} first {first}"
            );
        }
    }
    let e = rejected("past r10", &program(15, true));
    assert!(
        e.contains("stack access out of bounds: offset -8..=7 size 1"),
        "{e}"
    );
    // Half written: the other half reads as zero (zeroed at entry).
    let p = Arc::new(
        Program::from_insns("half", &program(7, false), Vec::new())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for first in [0u8, 3, 4, 7] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[first; 60]).unwrap();
            let want = if first < 4 {
                0x5566_7788u64.to_le_bytes()[first as usize]
            } else {
                0
            };
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want as u64),
                "jit {jit} first {first}"
            );
        }
    }
}

/// The kernel lets a privileged program read stack bytes it has not
/// written (an unknown number). cpumapd's stack outlives a run, so the
/// loader zeroes those bytes at entry: a run never sees an earlier one's.
#[test]
fn stack_bytes_read_before_written_are_zero_never_an_earlier_frames() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // if (data[0] == 1) *(u64 *)(r10 - 16) = 0x5eed_f00d; return *(u64 *)(r10 - 16);
    let code = prog(&[
        data(2),
        data_end(3),
        mov(4, 2),
        add_imm(4, 1),
        mov_imm(0, 0),
        jmp(JGT, 4, 3, 6),
        ldx(B, 5, 2, 0),
        jmp_imm(JNE, 5, 1, 2),
        mov_imm(6, 0x5eed_f00d),
        stx(DW, 10, 6, -16),
        ldx(DW, 0, 10, -16),
        exit(),
        exit(),
    ]);
    let p = Arc::new(
        Program::from_insns("uninit", &code, Vec::new()).unwrap_or_else(|e| panic!("{e}")),
    );
    let mut pool = Pool::new("uninit", 2, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for (first, want) in [(1u8, 0x5eed_f00du64), (0, 0), (1, 0x5eed_f00d), (2, 0)] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[first; 60]).unwrap();
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want),
                "jit {jit}: data[0] = {first}"
            );
        }
    }
    // One store per slot that may be read unwritten, before the program.
    assert_eq!(p.insn_count(), 14, "the prologue zeroes one slot");
    // A program that writes before it reads gets no prologue.
    let written = prog(&[
        mov_imm(0, 2),
        stx(DW, 10, 0, -8),
        ldx(DW, 0, 10, -8),
        exit(),
    ]);
    let p = Program::from_insns("written", &written, Vec::new()).unwrap();
    assert_eq!(p.insn_count(), 4);
}

#[test]
fn a_map_key_may_be_checked_packet_bytes() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MAP_FD_BASE, MapDef, MapKind};
    // lookup(hash, key = the frame's first 4 bytes, once CHECKED bytes
    // are proven against data_end): the value, or 0.
    let program = |checked: i32| {
        prog(&[
            data(2),
            data_end(3),
            mov(4, 2),
            add_imm(4, checked),
            jmp(JGT, 4, 3, 6),
            i(
                LD | IMM | DW,
                1,
                cpumapd::bpf_abi::pseudo::MAP_FD,
                0,
                MAP_FD_BASE,
            ),
            i(0, 0, 0, 0, 0),
            call(1),
            jmp_imm(JEQ, 0, 0, 2),
            ldx(DW, 0, 0, 0),
            exit(),
            mov_imm(0, 0),
            exit(),
        ])
    };
    let defs = || vec![MapDef::new("flows", MapKind::Hash, 4, 8, 4)];
    let p = Arc::new(
        Program::from_insns("pkt_key", &program(4), defs()).unwrap_or_else(|e| panic!("{e}")),
    );
    p.maps[0].update(&[1, 2, 3, 4], &42u64.to_le_bytes(), 0, 0);
    let mut pool = Pool::new("pkt_key", 2, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for (frame, want) in [([1u8, 2, 3, 4], 42u64), ([1, 2, 3, 5], 0)] {
            let mut f = pool.alloc().unwrap();
            let mut bytes = [0u8; 60];
            bytes[..4].copy_from_slice(&frame);
            f.copy_from(&bytes).unwrap();
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want),
                "jit {jit} key {frame:?}"
            );
        }
    }
    let e = Program::from_insns("pkt_key", &program(2), defs())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "key (r2) of 4 bytes at packet offset 0: only 2 bytes are checked against data_end"
        ),
        "{e}"
    );
}

#[test]
fn a_compare_of_a_copy_bounds_the_original() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    // idx = data[0]; copy = idx; [copy += 0 when BREAK]; if copy > 15
    // return 0; return *(u8 *)(value + idx): only the copy was compared.
    let program = |brk: bool| {
        let mut p = vec![mov(8, 1)];
        p.extend(lookup_map0(0));
        p.extend([
            jmp_imm(JNE, 0, 0, 2),
            mov_imm(0, 0),
            exit(),
            mov(7, 0),
            ldx(W, 2, 8, 0),
            ldx(W, 3, 8, 4),
            mov(4, 2),
            add_imm(4, 1),
            jmp(JGT, 4, 3, 8),
            ldx(B, 5, 2, 0),
            mov(6, 5),
            if brk { add_imm(6, 0) } else { mov(6, 6) },
            jmp_imm(JGT, 6, 15, 4),
            i(ALU64 | ADD | X, 7, 5, 0, 0),
            ldx(B, 0, 7, 0),
            exit(),
            mov_imm(0, 0),
            mov_imm(0, 0),
            exit(),
        ]);
        prog(&p)
    };
    let defs = || vec![MapDef::new("values", MapKind::Array, 4, 16, 1)];
    let p = Arc::new(
        Program::from_insns("linked", &program(false), defs()).unwrap_or_else(|e| panic!("{e}")),
    );
    let value: Vec<u8> = (100..116).collect();
    p.maps[0].update(&0u32.to_le_bytes(), &value, 0, 0);
    let mut pool = Pool::new("linked", 2, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for (first, want) in [(0u8, 100u64), (15, 115), (16, 0), (0xff, 0)] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[first; 60]).unwrap();
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want),
                "jit {jit} first {first}"
            );
        }
    }
    // Arithmetic on the copy makes it another number: the compare proves
    // nothing of the original.
    let e = Program::from_insns("linked", &program(true), defs())
        .unwrap_err()
        .to_string();
    assert!(e.contains("offset 0..=255 size 1, value size 16"), "{e}");
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn a_map_type_cpumapd_lacks_refuses_only_the_programs_that_use_it() {
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let obj = format!("{}/ringbuf_events.o", dir.display());
    // pass_all loads and runs although its object declares a RINGBUF.
    let p =
        Arc::new(ebpf::load_object(&format!("{obj}:pass_all")).unwrap_or_else(|e| panic!("{e}")));
    assert!(p.map("events").is_none(), "the stand-in is no map to name");
    assert_eq!(
        p.usable_maps().count(),
        p.maps.len() - 1,
        "all but the stand-in"
    );
    let mut pool = Pool::new("rb", 2, 128, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 60]).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        assert_eq!(inst.verdict(&mut f, &|_| true), Verdict::Pass, "jit {jit}");
    }
    // log_events uses it: refused, naming the map, its type and the insn.
    let e = ebpf::load_object(&format!("{obj}:log_events"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("program 'log_events': insn ")
            && e.contains("map 'events': type 27 (ringbuf) is not supported"),
        "{e}"
    );
}

#[test]
fn a_spilled_number_keeps_its_range_and_its_link() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    use cpumapd::filter::ebpf::maps::{MapDef, MapKind};
    // idx = data[0] spilled to r10-16 and filled into r6; if r6 > 15
    // return 0; return *(u8 *)(value + idx): the fill's compare bounds
    // the register spilled. Then the low byte of a spilled constant.
    let mut p = vec![mov(8, 1)];
    p.extend(lookup_map0(0));
    p.extend([
        jmp_imm(JNE, 0, 0, 2),
        mov_imm(0, 0),
        exit(),
        mov(7, 0),
        ldx(W, 2, 8, 0),
        ldx(W, 3, 8, 4),
        mov(4, 2),
        add_imm(4, 1),
        jmp(JGT, 4, 3, 13),
        ldx(B, 5, 2, 0),
        stx(DW, 10, 5, -16),
        ldx(DW, 6, 10, -16),
        jmp_imm(JGT, 6, 15, 9),
        i(ALU64 | ADD | X, 7, 5, 0, 0),
        // *(u64 *)(r10 - 24) = 0x0102; r1 = *(u8 *)(r10 - 24): 2, exactly.
        mov_imm(1, 0x0102),
        stx(DW, 10, 1, -24),
        ldx(B, 1, 10, -24),
        jmp_imm(JNE, 1, 2, 2),
        ldx(B, 0, 7, 0),
        exit(),
        ldx(DW, 0, 10, -32), // unwritten: refused unless proven dead
        exit(),
        mov_imm(0, 0),
        exit(),
    ]);
    let defs = vec![MapDef::new("values", MapKind::Array, 4, 16, 1)];
    let p =
        Arc::new(Program::from_insns("spill", &prog(&p), defs).unwrap_or_else(|e| panic!("{e}")));
    let value: Vec<u8> = (100..116).collect();
    p.maps[0].update(&0u32.to_le_bytes(), &value, 0, 0);
    let mut pool = Pool::new("spill", 2, 128, 2048).unwrap();
    for jit in [false, true] {
        let mut inst = Instance::new(p.clone(), 0, jit).unwrap();
        for (first, want) in [(3u8, 103u64), (15, 115), (16, 0)] {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[first; 60]).unwrap();
            assert_eq!(
                inst.test_run(&mut f, &|_| false),
                Some(want),
                "jit {jit} first {first}"
            );
        }
    }
}

use proptest::prelude::*;

/// Values where signed division has its edges (0, +-1, MIN) and any.
fn division_edges() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(i64::MIN as u64),
        Just(i32::MIN as u32 as u64),
        (-3i64..3).prop_map(|v| v as u64)
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]

    /// The JIT's expansion of sdiv/smod (rbpf has none) against the
    /// kernel's semantics (insn::alu_signed), for register and immediate
    /// divisors, both widths, and a register divided by itself.
    #[test]
    fn jit_signed_division_matches_the_kernels(
        a in division_edges(),
        b in division_edges(),
        is_mod in proptest::prelude::any::<bool>(),
        is64 in proptest::prelude::any::<bool>(),
        form in 0u8..3,
    ) {
        use asm::*;
        use cpumapd::filter::ebpf::insn::*;
        let class = if is64 { ALU64 } else { ALU };
        let op = if is_mod { MOD } else { DIV };
        let imm = b as i32;
        let (insn, b_eff) = match form {
            0 => (i(class | op | X, 1, 2, SIGNED_DIV, 0), b),
            // An immediate divisor (0 is refused statically).
            1 if imm != 0 => (i(class | op | K, 1, 0, SIGNED_DIV, imm), imm as i64 as u64),
            1 => return Ok(()),
            _ => (i(class | op | X, 1, 1, SIGNED_DIV, 0), a),
        };
        let want = alu_signed(op, is64, a, b_eff);
        let mut body = ld64(1, a);
        body.extend(ld64(2, b));
        body.extend([insn, mov(0, 1)]);
        let (interp, jit) = r0_of(&body);
        proptest::prop_assert_eq!(interp, want);
        proptest::prop_assert_eq!(jit, Ok(want));
    }
}

#[test]
fn jit_signed_division_takes_only_a_dead_register() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    // r0, r3..r8 hold 1..=7 and are summed after r1 s/= r2: the expansion
    // may use r9 only. With r9 live too, the JIT refuses the program.
    let program = |r9_live: bool| {
        let mut p = Vec::new();
        for (r, v) in [
            (0u8, 1),
            (3, 2),
            (4, 3),
            (5, 4),
            (6, 5),
            (7, 6),
            (8, 7),
            (9, 8),
        ] {
            p.push(mov_imm(r, v));
        }
        p.extend(ld64(1, (-100i64) as u64));
        p.push(mov_imm(2, 7));
        p.push(i(ALU64 | DIV | X, 1, 2, SIGNED_DIV, 0)); // -14
        for r in [3u8, 4, 5, 6, 7, 8] {
            p.push(i(ALU64 | ADD | X, 0, r, 0, 0));
        }
        p.push(i(ALU64 | ADD | X, 0, 1, 0, 0));
        if r9_live {
            p.push(i(ALU64 | ADD | X, 0, 9, 0, 0));
        }
        p
    };
    let (interp, jit) = r0_of(&program(false));
    assert_eq!(
        (interp, jit),
        (28 - 14, Ok(28 - 14)),
        "1 + 2 + ... + 7, then -100 / 7"
    );
    let (interp, jit) = r0_of(&program(true));
    assert_eq!(interp, 28 - 14 + 8);
    let e = jit.unwrap_err();
    assert!(
        e.contains("needs a register the program does not use after it"),
        "{e}"
    );
}

/// The kernel's narrow spills and zeroed stack bytes: a number stored by
/// a store as wide as it, filled back by a load of that width from the
/// same place, is the same number (a compare of one narrows the other);
/// bytes stored as 0 load as 0. Each program reads r9, never written, on
/// a path that this proves dead: accepted only if the verifier proves it.
#[test]
fn narrow_spills_and_zeroed_stack_bytes_prove_paths_dead() {
    use asm::*;
    use cpumapd::filter::ebpf::insn::*;
    let dead_read = [ldx(DW, 0, 9, 0), exit(), mov_imm(0, 2), exit()];
    // r0 = prandom & mask; *(size *)(r10 - 8) = r0; r1 = *(size *)(r10 - 8);
    // if r1 != 0 goto out; if r0 == 0 goto out; dead
    let linked = |size: u8, mask: i32| {
        let mut p = vec![
            call(7),
            i(ALU64 | AND | K, 0, 0, 0, mask),
            stx(size, 10, 0, -8),
            ldx(size, 1, 10, -8),
            mov_imm(2, 0),
            jmp(JNE, 1, 2, 3),
            jmp(JEQ, 0, 2, 2),
        ];
        p.extend(dead_read);
        prog(&p)
    };
    for (size, mask) in [(W, 0x4000_0000), (H, 0x8000), (B, 0x80), (DW, 0x4000_0000)] {
        Program::from_insns("narrow", &linked(size, mask), Vec::new())
            .unwrap_or_else(|e| panic!("size {size:#x}: {e}"));
    }
    // A number wider than the store is truncated: no link, the path lives.
    let e = rejected("wider than its spill", &linked(H, 0x1_8000));
    assert!(e.contains("r9 is read before it is written"), "{e}");
    // *(u32 *)(r10 - 4) = K; r2 = *(u8 *)(r10 - 1); if r2 == 0 goto out; dead
    let zeroed = |k: i32| {
        let mut p = vec![st(W, 10, -4, k), ldx(B, 2, 10, -1), jmp_imm(JEQ, 2, 0, 2)];
        p.extend(dead_read);
        prog(&p)
    };
    Program::from_insns("zero", &zeroed(0), Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let e = rejected("a byte stored as 1", &zeroed(0x0100_0000));
    assert!(e.contains("r9 is read before it is written"), "{e}");
}
