//! bpf-to-bpf calls (`__noinline` functions), inlined at load.
//!
//! The interpreter and rbpf's JIT run one flat function, so a program
//! whose functions call each other is flattened before it is verified:
//! every `call` of a function becomes the function's body, with its own
//! frame below its caller's, its `exit`s jumps to the instruction after the
//! body, and the caller's r6-r9 that the body (or anything it calls)
//! writes kept in stack slots across it (the BPF calling convention: r1-r5
//! are the callee's, r6-r9 survive a call, r0 is its result). The verifier
//! then checks the flat program, so its proof covers exactly what runs.
//!
//! # Frames
//!
//! A function's frame is as deep as the deepest stack byte it writes,
//! which only the verifier knows (pointers into the frame travel through
//! registers and spills). So the program is flattened twice: first with a
//! 512-byte frame for every call, verified over a stack as large as that
//! needs, and each function's depth read from the bytes the verifier saw
//! written in its frames; then with those depths, verified over the
//! kernel's 512 bytes. The kernel limits the call chain's frames to 512
//! bytes together, and so does cpumapd (counting the saved registers).
//!
//! What the kernel takes and this does not: recursion (the kernel refuses
//! it too), callbacks (`bpf_loop`: a function's address as a value), and
//! r10 as an ALU or comparison operand inside a called function (its
//! value there would be the caller's frame pointer).

use std::collections::BTreeMap;

use super::insn::*;
use super::verifier::{self, MAX_INSNS, MapShape, VerifyError};
use crate::abi::{errno, helper, pseudo};

/// The kernel's MAX_CALL_FRAMES: the program and seven nested calls.
const MAX_FRAMES: usize = 8;

/// A flattened program.
pub struct Flat {
    /// Its instructions.
    pub code: Vec<u8>,
    /// The saves and restores of r6-r9 around inlined calls (for
    /// [`verifier::verify_stack`]).
    pub moves: Vec<usize>,
    /// Per instruction of `code`, where it came from (empty when the
    /// program had no calls: `code` is the original).
    origin: Vec<Origin>,
    /// The `call bpf_loop` instructions (original numbering).
    loops: Vec<usize>,
}

/// An instruction of the flat program, in terms of the original.
#[derive(Clone, Copy, Debug)]
struct Origin {
    /// The original instruction (the call, for saves and restores).
    pc: usize,
    /// The call that inlined it (None in the program's own function).
    call: Option<usize>,
}

impl Flat {
    /// `e` (from verifying `code`) in terms of the original program.
    pub fn error(&self, e: VerifyError) -> VerifyError {
        let Some(o) = self.origin.get(e.pc) else {
            return e;
        };
        let mut why = e.why;
        if let Some(rest) = why.strip_prefix("loop back to insn ") {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if let Some(t) = rest[..digits]
                .parse()
                .ok()
                .and_then(|t: usize| self.origin.get(t))
            {
                why = format!("loop back to insn {}{}", t.pc, &rest[digits..]);
            }
        }
        if self.loops.contains(&o.pc) {
            why = format!(
                "bpf_loop: cpumapd unrolls the loop to verify it, so its count must be a constant or a small range: {why}"
            );
        }
        match o.call {
            None => VerifyError { pc: o.pc, why },
            Some(c) => VerifyError {
                pc: o.pc,
                why: format!("{why} (in the function called at insn {c})"),
            },
        }
    }
}

impl Flat {
    /// Puts `insns` (encoded) before the first instruction, for the
    /// loader's prologue; errors in them name instruction 0.
    pub fn prepend(&mut self, insns: &[u8]) {
        let k = insns.len() / INSN_SIZE;
        if self.origin.is_empty() {
            let n = self.code.len() / INSN_SIZE;
            self.origin = (0..n).map(|pc| Origin { pc, call: None }).collect();
        }
        let first = Origin { pc: 0, call: None };
        self.origin.splice(0..0, std::iter::repeat_n(first, k));
        self.code.splice(0..0, insns.iter().copied());
        for m in &mut self.moves {
            *m += k;
        }
    }
}

fn err(pc: usize, why: impl Into<String>) -> VerifyError {
    VerifyError {
        pc,
        why: why.into(),
    }
}

fn is_jump(i: &Insn) -> bool {
    matches!(i.class(), JMP | JMP32) && !matches!(i.op & 0xf0, CALL | EXIT)
}

fn is_local_call(i: &Insn) -> bool {
    i.op == (JMP | CALL) && i.src == pseudo::CALL
}

/// The register an instruction writes, if any (calls: r0-r5).
fn written(i: &Insn) -> Option<u8> {
    match i.class() {
        LD | LDX | ALU | ALU64 => Some(i.dst),
        STX if i.op & 0xe0 == ATOMIC && i.imm == CMPXCHG => Some(0),
        STX if i.op & 0xe0 == ATOMIC && i.imm & FETCH != 0 => Some(i.src),
        _ => None,
    }
}

/// Registers r6-r9 an instruction writes (bit r).
fn writes(i: &Insn) -> u16 {
    match written(i) {
        Some(r) if (6..=9).contains(&r) => 1 << r,
        _ => 0,
    }
}

/// Instructions some jump lands on.
fn jump_targets(insns: &[Insn]) -> Vec<bool> {
    let mut t = vec![false; insns.len()];
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        if is_jump(&i) {
            let to = pc as i64 + 1 + i.off as i64;
            if (0..insns.len() as i64).contains(&to) {
                t[to as usize] = true;
            }
        }
        pc += if i.op == (LD | IMM | DW) { 2 } else { 1 };
    }
    t
}

/// The `call bpf_loop` whose callback is the function address loaded at
/// `pc`: it must go into r2 and reach the next call in straight-line code
/// (as clang emits it), so the callback is known where the call is.
fn loop_call(insns: &[Insn], targets: &[bool], pc: usize) -> Result<usize, VerifyError> {
    let refuse = || {
        err(
            pc,
            "a function's address is supported only as bpf_loop's callback, loaded into r2 before the call (bpf_for_each_map_elem, timers and other callbacks are not)",
        )
    };
    if insns[pc].dst != 2 {
        return Err(refuse());
    }
    let mut k = pc + 2;
    while k < insns.len() && !targets[k] {
        let i = insns[k];
        if i.op == (JMP | CALL) && i.src == 0 && i.imm == helper::LOOP {
            return Ok(k);
        }
        if matches!(i.class(), JMP | JMP32) || written(&i) == Some(2) {
            break;
        }
        k += if i.op == (LD | IMM | DW) { 2 } else { 1 };
    }
    Err(refuse())
}

/// The program cut into functions, with what flattening needs of each.
struct Funcs {
    insns: Vec<Insn>,
    /// First instruction of each function, in order (function 0 at 0).
    starts: Vec<usize>,
    /// Per function: r6-r9 it or anything it calls writes.
    clobbers: Vec<u16>,
    /// `call bpf_loop` instructions and their callback's first instruction.
    loops: BTreeMap<usize, usize>,
}

impl Funcs {
    fn range(&self, f: usize) -> (usize, usize) {
        let end = self.starts.get(f + 1).copied().unwrap_or(self.insns.len());
        (self.starts[f], end)
    }

    fn func_at(&self, pc: usize) -> usize {
        self.starts.partition_point(|&s| s <= pc) - 1
    }

    /// The function a local call or a bpf_loop at `pc` runs, if either.
    fn callee(&self, pc: usize) -> Option<usize> {
        if let Some(&cb) = self.loops.get(&pc) {
            return Some(self.func_at(cb));
        }
        let i = self.insns[pc];
        is_local_call(&i).then(|| self.func_at((pc as i64 + 1 + i.imm as i64) as usize))
    }

    /// Cuts `insns` at every call target; None when nothing is called.
    fn cut(insns: Vec<Insn>) -> Result<Option<Funcs>, VerifyError> {
        let n = insns.len();
        let mut starts = vec![0];
        let mut loops = BTreeMap::new();
        let targets = jump_targets(&insns);
        let mut pc = 0;
        while pc < n {
            let i = insns[pc];
            if i.op == (LD | IMM | DW) {
                if i.src == pseudo::FUNC {
                    let cb = pc as i64 + 1 + i.imm as i64;
                    if cb <= 0 || cb >= n as i64 {
                        return Err(err(
                            pc,
                            format!("function address {cb} outside the program"),
                        ));
                    }
                    loops.insert(loop_call(&insns, &targets, pc)?, cb as usize);
                    starts.push(cb as usize);
                }
                pc += 2;
                continue;
            }
            if is_local_call(&i) {
                let t = pc as i64 + 1 + i.imm as i64;
                let lands_mid_ld =
                    t > 0 && (t as usize) < n && insns[t as usize - 1].op == (LD | IMM | DW);
                if t <= 0 || t >= n as i64 || lands_mid_ld {
                    return Err(err(pc, format!("call to insn {t}, not a function's start")));
                }
                starts.push(t as usize);
            }
            pc += 1;
        }
        if starts.len() == 1 {
            return Ok(None);
        }
        starts.sort_unstable();
        starts.dedup();
        let mut f = Funcs {
            insns,
            clobbers: vec![0; starts.len()],
            starts,
            loops,
        };
        for g in 0..f.starts.len() {
            f.check_body(g)?;
        }
        f.walk(0, &mut Vec::new())?;
        Ok(Some(f))
    }

    /// What the kernel checks of each function: it ends in an exit or a
    /// jump, its jumps stay inside it; and what inlining needs: r10 only
    /// as a load/store base or copied (in called functions).
    fn check_body(&self, f: usize) -> Result<(), VerifyError> {
        let (s, e) = self.range(f);
        let last = self.insns[e - 1];
        let ends = last.class() == JMP && matches!(last.op & 0xf0, EXIT | JA);
        if !ends || (e >= 2 && self.insns[e - 2].op == (LD | IMM | DW)) {
            return Err(err(
                e - 1,
                format!("the function at insn {s} does not end in an exit or a jump"),
            ));
        }
        let mut pc = s;
        while pc < e {
            let i = self.insns[pc];
            if i.op == (LD | IMM | DW) {
                pc += 2;
                continue;
            }
            if is_jump(&i) {
                let t = pc as i64 + 1 + i.off as i64;
                if t < s as i64 || t >= e as i64 {
                    return Err(err(
                        pc,
                        format!("jump to insn {t} leaves its function (the function at insn {s})"),
                    ));
                }
            }
            if f > 0 && frame_access(&i) && i.off >= 0 {
                return Err(err(
                    pc,
                    format!("stack access at r10{:+}, above the frame", i.off),
                ));
            }
            if f > 0 && uses_r10_as_operand(&i) {
                return Err(err(
                    pc,
                    "r10 as an operand in a called function (cpumapd inlines called functions and moves their frame: r10 is supported there as a load/store base and in rX = r10)",
                ));
            }
            pc += 1;
        }
        Ok(())
    }

    /// Depth-first over the calls from `f` (`chain`: the calls that led
    /// here): refuses recursion and chains deeper than the kernel's, and
    /// fills `clobbers`.
    fn walk(&mut self, f: usize, chain: &mut Vec<(usize, usize)>) -> Result<u16, VerifyError> {
        let (s, e) = self.range(f);
        let mut clob = 0;
        for pc in s..e {
            let i = self.insns[pc];
            clob |= writes(&i);
            let Some(g) = self.callee(pc) else {
                continue;
            };
            if g == f || chain.iter().any(|&(_, c)| c == g) {
                return Err(err(
                    pc,
                    format!(
                        "recursive call: the function at insn {} calls itself",
                        self.starts[g]
                    ),
                ));
            }
            if chain.len() + 2 > MAX_FRAMES {
                return Err(err(
                    pc,
                    format!("calls nested deeper than the kernel's {MAX_FRAMES} frames"),
                ));
            }
            chain.push((pc, f));
            let inner = self.walk(g, chain)?;
            chain.pop();
            // bpf_loop's expansion keeps every r6-r9 of its caller.
            if !self.loops.contains_key(&pc) {
                clob |= inner;
            }
        }
        self.clobbers[f] = clob;
        Ok(clob)
    }
}

/// A load or store (atomics too) with r10 as its base.
fn frame_access(i: &Insn) -> bool {
    match i.class() {
        LDX => i.src == 10,
        ST | STX => i.dst == 10,
        _ => false,
    }
}

/// r10 read as something other than a load/store base or the source of a
/// 64-bit copy.
fn uses_r10_as_operand(i: &Insn) -> bool {
    match i.class() {
        ALU | ALU64 => i.op & X == X && i.src == 10 && !(i.class() == ALU64 && i.op & 0xf0 == MOV),
        JMP | JMP32 => is_jump(i) && (i.dst == 10 || (i.op & X == X && i.src == 10)),
        STX => i.src == 10,
        _ => false,
    }
}

/// Where generated instructions come from: the instruction they stand
/// for and the call that inlined it.
type Loc = (usize, Option<usize>);

/// One flattening with given frame sizes.
struct Emit<'a> {
    f: &'a Funcs,
    /// Frame bytes per function.
    frames: &'a [i64],
    out: Vec<Insn>,
    origin: Vec<Origin>,
    moves: Vec<usize>,
    /// Every inlined copy: its function and frame base (below r10).
    instances: Vec<(usize, i64)>,
    /// Lowest stack offset any frame or save slot reaches.
    low: i64,
}

impl Emit<'_> {
    fn push(&mut self, i: Insn, pc: usize, call: Option<usize>) -> Result<(), VerifyError> {
        if self.out.len() >= MAX_INSNS {
            return Err(err(
                pc,
                format!("inlining the called functions makes more than {MAX_INSNS} instructions"),
            ));
        }
        self.out.push(i);
        self.origin.push(Origin { pc, call });
        Ok(())
    }

    /// Emits function `f` with its frame at `base` (0 or negative); `call`
    /// is the call being inlined (None for the program itself).
    fn function(&mut self, f: usize, base: i64, call: Option<usize>) -> Result<(), VerifyError> {
        let (s, e) = self.f.range(f);
        self.instances.push((f, base));
        self.low = self.low.min(base - self.frames[f]);
        let mut newpos = vec![0usize; e - s];
        let mut jumps = Vec::new();
        let mut exits = Vec::new();
        let moved = |off: i16, pc: usize| {
            i16::try_from(off as i64 + base)
                .map_err(|_| err(pc, "stack offset out of range after inlining"))
        };
        let mut pc = s;
        while pc < e {
            newpos[pc - s] = self.out.len();
            let mut i = self.f.insns[pc];
            pc += 1;
            if i.op == (LD | IMM | DW) && pc < e {
                let mut hi = self.f.insns[pc];
                if i.src == pseudo::FUNC {
                    // bpf_loop's callback: inlined where the call is.
                    (i.src, i.imm, hi.imm) = (0, 0, 0);
                }
                self.push(i, pc - 1, call)?;
                newpos[pc - s] = self.out.len();
                self.push(hi, pc, call)?;
                pc += 1;
                continue;
            }
            let pc = pc - 1;
            if self.f.loops.contains_key(&pc) {
                self.bpf_loop(f, base, pc, call)?;
                continue;
            }
            if is_local_call(&i) {
                let g = self.f.callee(pc).expect("a local call");
                self.inline_at(g, base - self.frames[f], pc, call)?;
                continue;
            }
            if i.op == (JMP | EXIT) && call.is_some() {
                exits.push(self.out.len());
                i = Insn::new(JMP | JA, 0, 0, 0, 0);
            } else if is_jump(&i) {
                jumps.push((self.out.len(), (pc as i64 + 1 + i.off as i64) as usize));
            } else if base != 0 && frame_access(&i) {
                i.off = moved(i.off, pc)?;
            } else if base != 0 && i.op == (ALU64 | MOV | X) && i.src == 10 {
                // rX = r10 - the frame's distance below the real r10.
                self.push(i, pc, call)?;
                i = Insn::new(ALU64 | ADD | K, i.dst, 0, 0, base as i32);
            }
            self.push(i, pc, call)?;
        }
        let end = self.out.len();
        for (at, t) in jumps {
            self.patch(at, newpos[t - s])?;
        }
        for at in exits {
            self.patch(at, end)?;
        }
        Ok(())
    }

    /// Points the jump at `at` to instruction `to`.
    fn patch(&mut self, at: usize, to: usize) -> Result<(), VerifyError> {
        let off = to as i64 - at as i64 - 1;
        self.out[at].off = i16::try_from(off).map_err(|_| {
            err(
                self.origin[at].pc,
                "jump too long after inlining the called functions",
            )
        })?;
        Ok(())
    }

    /// Appends `op dst, src/imm` for the instruction at `pc` and returns
    /// where it is (for a jump to patch).
    fn emit(&mut self, op: u8, dst: u8, src: u8, imm: i32, at: Loc) -> Result<usize, VerifyError> {
        let here = self.out.len();
        self.push(Insn::new(op, dst, src, 0, imm), at.0, at.1)?;
        Ok(here)
    }

    /// A save (or restore) of register `r` at `off` below r10.
    fn mov_slot(&mut self, save: bool, r: u8, off: i64, at: Loc) -> Result<(), VerifyError> {
        let off = off as i16;
        let i = if save {
            Insn::new(STX | MEM | DW, 10, r, off, 0)
        } else {
            Insn::new(LDX | MEM | DW, r, 10, off, 0)
        };
        self.moves.push(self.out.len());
        self.push(i, at.0, at.1)
    }

    /// `call bpf_loop` at `pc` in function `f` (frame at `base`), as the
    /// kernel inlines it: -EINVAL for flags, -E2BIG past BPF_MAX_LOOPS,
    /// else the callback (r1 = index, r2 = the context argument) run until
    /// it returns non-zero or the count is reached; r0 is the iterations
    /// run. The count, index and context live in r6-r8, the caller's kept
    /// below its frame.
    fn bpf_loop(
        &mut self,
        f: usize,
        base: i64,
        pc: usize,
        call: Option<usize>,
    ) -> Result<(), VerifyError> {
        let at = (pc, call);
        let g = self.f.callee(pc).expect("a bpf_loop");
        let below = base - self.frames[f];
        let slot = |k: usize| below - 8 * (k as i64 + 1);
        let flags = self.emit(JMP | JNE | K, 4, 0, 0, at)?;
        let count = self.emit(JMP | JGT | K, 1, 0, helper::MAX_LOOPS, at)?;
        for (k, r) in [6u8, 7, 8].into_iter().enumerate() {
            self.mov_slot(true, r, slot(k), at)?;
        }
        self.emit(ALU64 | MOV | X, 6, 1, 0, at)?;
        self.emit(ALU64 | MOV | K, 7, 0, 0, at)?;
        self.emit(ALU64 | MOV | X, 8, 3, 0, at)?;
        let head = self.emit(JMP | JGE | X, 7, 6, 0, at)?;
        self.emit(ALU64 | MOV | X, 1, 7, 0, at)?;
        self.emit(ALU64 | MOV | X, 2, 8, 0, at)?;
        self.inline_at(g, slot(2), pc, call)?;
        self.emit(ALU64 | ADD | K, 7, 0, 1, at)?;
        let stop = self.emit(JMP | JNE | K, 0, 0, 0, at)?;
        let back = self.emit(JMP | JA, 0, 0, 0, at)?;
        self.patch(back, head)?;
        let done = self.emit(ALU64 | MOV | X, 0, 7, 0, at)?;
        self.patch(head, done)?;
        self.patch(stop, done)?;
        for (k, r) in [6u8, 7, 8].into_iter().enumerate().rev() {
            self.mov_slot(false, r, slot(k), at)?;
        }
        let out1 = self.emit(JMP | JA, 0, 0, 0, at)?;
        let einval = self.emit(ALU64 | MOV | K, 0, 0, -errno::EINVAL as i32, at)?;
        self.patch(flags, einval)?;
        let out2 = self.emit(JMP | JA, 0, 0, 0, at)?;
        let e2big = self.emit(ALU64 | MOV | K, 0, 0, -errno::E2BIG as i32, at)?;
        self.patch(count, e2big)?;
        let end = self.out.len();
        self.patch(out1, end)?;
        self.patch(out2, end)?;
        self.low = self.low.min(slot(2));
        Ok(())
    }

    /// Function `g` for the call at `pc`: the caller's r6-r9 that `g`
    /// writes saved from `below` down, `g`'s frame under them, the
    /// registers restored.
    fn inline_at(
        &mut self,
        g: usize,
        below: i64,
        pc: usize,
        ctx: Option<usize>,
    ) -> Result<(), VerifyError> {
        let saved: Vec<u8> = (6..=9)
            .filter(|r| self.f.clobbers[g] & (1 << r) != 0)
            .collect();
        let slot = |k: usize| below - 8 * (k as i64 + 1);
        for (k, &r) in saved.iter().enumerate() {
            self.mov_slot(true, r, slot(k), (pc, ctx))?;
        }
        self.function(g, below - 8 * saved.len() as i64, Some(pc))?;
        for (k, &r) in saved.iter().enumerate() {
            self.mov_slot(false, r, slot(k), (pc, ctx))?;
        }
        Ok(())
    }
}

fn emit<'a>(f: &'a Funcs, frames: &'a [i64]) -> Result<Emit<'a>, VerifyError> {
    let mut e = Emit {
        f,
        frames,
        out: Vec::new(),
        origin: Vec::new(),
        moves: Vec::new(),
        instances: Vec::new(),
        low: 0,
    };
    e.function(0, 0, None)?;
    Ok(e)
}

/// `code` with every bpf-to-bpf call inlined (unchanged when it has
/// none). Errors name the original instruction.
pub fn flatten(code: &[u8], maps: &[MapShape]) -> Result<Flat, VerifyError> {
    let unchanged = || Flat {
        code: code.to_vec(),
        moves: Vec::new(),
        origin: Vec::new(),
        loops: Vec::new(),
    };
    if code.is_empty() || !code.len().is_multiple_of(INSN_SIZE) {
        return Ok(unchanged()); // the verifier says what is wrong
    }
    let insns = (0..code.len() / INSN_SIZE)
        .map(|pc| Insn::at(code, pc))
        .collect();
    let Some(funcs) = Funcs::cut(insns)? else {
        return Ok(unchanged());
    };
    // Pass 1: 512 bytes for every frame, over as large a stack as that
    // needs; each function's depth from what was written in its frames.
    let full = vec![STACK_SIZE as i64; funcs.starts.len()];
    let wide = emit(&funcs, &full)?;
    let stack = (-wide.low as usize).next_multiple_of(64);
    let loops: Vec<usize> = funcs.loops.keys().copied().collect();
    let flat = Flat {
        code: encode(&wide.out),
        moves: wide.moves.clone(),
        origin: wide.origin.clone(),
        loops: loops.clone(),
    };
    let (_, written) =
        verifier::verify_stack(&flat.code, maps, stack, &flat.moves).map_err(|e| flat.error(e))?;
    let is_written = |at: i64| verifier::byte_bit(&written, (at + stack as i64) as usize);
    let mut frames = vec![0i64; funcs.starts.len()];
    for &(g, base) in &wide.instances {
        let depth = (1..=STACK_SIZE as i64)
            .rev()
            .find(|d| is_written(base - d))
            .unwrap_or(0);
        frames[g] = frames[g].max((depth + 7) & !7);
    }
    // Pass 2: the real frames, which must fit the kernel's stack.
    let tight = emit(&funcs, &frames)?;
    if -tight.low > STACK_SIZE as i64 {
        let deepest: Vec<String> = (0..funcs.starts.len())
            .map(|g| format!("insn {}: {} bytes", funcs.starts[g], frames[g]))
            .collect();
        return Err(err(
            0,
            format!(
                "the call chain needs {} bytes of stack, more than {STACK_SIZE} (frames: {}; plus 8 bytes per r6-r9 register kept across a call)",
                -tight.low,
                deepest.join(", ")
            ),
        ));
    }
    Ok(Flat {
        code: encode(&tight.out),
        moves: tight.moves,
        origin: tight.origin,
        loops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(rel: i32) -> Insn {
        Insn::new(JMP | CALL, 0, pseudo::CALL, 0, rel)
    }

    const EXIT_: Insn = Insn::new(JMP | EXIT, 0, 0, 0, 0);

    fn flat(p: &[Insn]) -> Result<Vec<Insn>, VerifyError> {
        let code = encode(p);
        let f = flatten(&code, &[])?;
        Ok((0..f.code.len() / INSN_SIZE)
            .map(|pc| Insn::at(&f.code, pc))
            .collect())
    }

    #[test]
    fn a_program_without_calls_is_unchanged() {
        let p = [Insn::new(ALU64 | MOV | K, 0, 0, 0, 2), EXIT_];
        assert_eq!(flat(&p).unwrap(), p);
    }

    #[test]
    fn a_called_function_gets_its_own_frame_and_returns_to_the_caller() {
        // main: *(u64 *)(r10 - 8) = 1; r6 = 7; call f; r0 += r6; r0 += *(r10 - 8); exit
        // f:    *(u64 *)(r10 - 16) = 5; r6 = *(r10 - 16); r0 = r6; exit
        let p = [
            Insn::new(ST | MEM | DW, 10, 0, -8, 1),
            Insn::new(ALU64 | MOV | K, 6, 0, 0, 7),
            call(4),
            Insn::new(ALU64 | ADD | X, 0, 6, 0, 0),
            Insn::new(LDX | MEM | DW, 1, 10, -8, 0),
            Insn::new(ALU64 | ADD | X, 0, 1, 0, 0),
            EXIT_,
            Insn::new(ST | MEM | DW, 10, 0, -16, 5),
            Insn::new(LDX | MEM | DW, 6, 10, -16, 0),
            Insn::new(ALU64 | MOV | X, 0, 6, 0, 0),
            EXIT_,
        ];
        let out = flat(&p).unwrap();
        // The caller's frame is 8 bytes, r6 is saved at -16, the callee's
        // frame starts at -16 and its -16 is -32.
        assert_eq!(out[2], Insn::new(STX | MEM | DW, 10, 6, -16, 0), "{out:#?}");
        assert_eq!(out[3], Insn::new(ST | MEM | DW, 10, 0, -32, 5));
        assert_eq!(out[4], Insn::new(LDX | MEM | DW, 6, 10, -32, 0));
        assert_eq!(
            out[6],
            Insn::new(JMP | JA, 0, 0, 0, 0),
            "the exit goes to the restore"
        );
        assert_eq!(out[7], Insn::new(LDX | MEM | DW, 6, 10, -16, 0));
        assert_eq!(out.len(), 12);
        assert!(!out.iter().any(is_local_call));
    }

    #[test]
    fn recursion_and_callbacks_are_refused_naming_the_instruction() {
        let p = [call(1), EXIT_, call(-1), EXIT_];
        let e = flat(&p).unwrap_err();
        assert_eq!(e.pc, 2);
        assert!(e.why.contains("recursive"), "{e}");
        let p = [
            Insn::new(LD | IMM | DW, 2, pseudo::FUNC, 0, 1),
            Insn::new(0, 0, 0, 0, 0),
            EXIT_,
        ];
        let e = flat(&p).unwrap_err();
        assert!(e.why.contains("callback"), "{e}");
        let p = [call(5), EXIT_];
        assert!(flat(&p).unwrap_err().why.contains("not a function's start"));
    }

    #[test]
    fn a_function_may_not_jump_into_another() {
        let p = [
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 0),
            Insn::new(JMP | JA, 0, 0, 2, 0),
            call(1),
            EXIT_,
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 1),
            EXIT_,
        ];
        let e = flat(&p).unwrap_err();
        assert_eq!(e.pc, 1);
        assert!(e.why.contains("leaves its function"), "{e}");
    }

    #[test]
    fn frames_deeper_than_the_stack_together_are_refused() {
        // Each function uses 256 bytes; main -> f -> g needs 768.
        let p = [
            Insn::new(ST | MEM | DW, 10, 0, -256, 0),
            call(1),
            EXIT_,
            Insn::new(ST | MEM | DW, 10, 0, -256, 0),
            call(1),
            EXIT_,
            Insn::new(ST | MEM | DW, 10, 0, -256, 0),
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 0),
            EXIT_,
        ];
        let e = flat(&p).unwrap_err();
        assert!(e.why.contains("768 bytes of stack"), "{e}");
    }

    #[test]
    fn a_pointer_to_the_callers_frame_reaches_the_callee() {
        // main: *(r10-8) = 0; r1 = r10; r1 += -8; call f; r0 = *(r10-8); exit
        // f:    *(u64 *)(r1 + 0) = 42; r0 = 0; exit
        let p = [
            Insn::new(ST | MEM | DW, 10, 0, -8, 0),
            Insn::new(ALU64 | MOV | X, 1, 10, 0, 0),
            Insn::new(ALU64 | ADD | K, 1, 0, 0, -8),
            call(2),
            Insn::new(LDX | MEM | DW, 0, 10, -8, 0),
            EXIT_,
            Insn::new(ST | MEM | DW, 1, 0, 0, 42),
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 0),
            EXIT_,
        ];
        let out = flat(&p).unwrap();
        // Nothing to save, nothing moved: the callee writes through r1.
        assert_eq!(out[3], Insn::new(ST | MEM | DW, 1, 0, 0, 42));
    }
}
