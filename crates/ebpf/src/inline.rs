//! Inlined ARRAY map lookups for the JIT, as the kernel's
//! `array_map_gen_lookup` does: a `call bpf_map_lookup_elem` whose map is
//! known at the call site becomes a bounds check and an address computed
//! from the key, with the map's storage (this lcore's copy, for a
//! PERCPU_ARRAY) as an immediate. The verifier has already accepted the
//! program with the call; the expansion returns exactly what the helper
//! would (the value's address, or 0 for an index out of range), so its
//! proof still holds.
//!
//! A `bpf_tail_call` gets an exit after it (the JIT cannot leave a program
//! from inside a helper).
//!
//! Every jump is re-targeted over the inserted instructions.

use super::insn::*;
use crate::abi::helper;

/// One call site to expand.
#[derive(Clone, Copy, Debug)]
pub struct ArrayLookup {
    /// Index of the `call` instruction.
    pub pc: usize,
    /// Address of element 0 of the copy this instance reads.
    pub base: u64,
    pub max_entries: u32,
    /// Bytes between elements.
    pub stride: u32,
}

/// Instructions one expansion takes (the call's slot included).
const EXPANSION: usize = 8;

/// The expansion of one lookup; r2 holds the key's address (the helper's
/// argument), r0 gets the value's address or 0, r1 is clobbered (as any
/// call clobbers r1-r5).
fn expansion(l: &ArrayLookup) -> [Insn; EXPANSION] {
    let i = Insn::new;
    [
        // r0 = *(u32 *)(r2 + 0)
        i(LDX | MEM | W, 0, 2, 0, 0),
        // if r0 >= max_entries goto null
        i(JMP | JGE | K, 0, 0, 5, l.max_entries as i32),
        // r0 *= stride
        i(ALU64 | MUL | K, 0, 0, 0, l.stride as i32),
        // r1 = base (ld_imm64: two slots)
        i(LD | IMM | DW, 1, 0, 0, l.base as u32 as i32),
        i(0, 0, 0, 0, (l.base >> 32) as u32 as i32),
        // r0 += r1
        i(ALU64 | ADD | X, 0, 1, 0, 0),
        // goto out
        i(JMP | JA, 0, 0, 1, 0),
        // null: r0 = 0
        i(ALU64 | MOV | K, 0, 0, 0, 0),
    ]
}

/// `call bpf_tail_call` for the JIT: the call, then `if r0 ==
/// TAIL_CALL_TAKEN exit` (the program ends on a taken call; the caller
/// runs the next program). r0 is unspecified after a failed call, so the
/// program cannot tell the difference.
pub fn tail_call_exit() -> Vec<Insn> {
    let taken = super::interp::TAIL_CALL_TAKEN;
    vec![
        Insn::new(JMP | CALL, 0, 0, 0, helper::TAIL_CALL),
        Insn::new(JMP | JNE | K, 0, 0, 1, taken),
        Insn::new(JMP | EXIT, 0, 0, 0, 0),
    ]
}

/// The array lookups of `sites` as expansions for [`expand`], or None when
/// a site cannot be inlined (not a lookup call, a constant that does not
/// fit an immediate).
pub fn lookup_expansions(code: &[u8], sites: &[ArrayLookup]) -> Option<Vec<(usize, Vec<Insn>)>> {
    let n = code.len() / INSN_SIZE;
    sites
        .iter()
        .map(|s| {
            let call = (s.pc < n).then(|| Insn::at(code, s.pc))?;
            let ok = call.op == (JMP | CALL)
                && call.src == 0
                && call.imm == helper::MAP_LOOKUP_ELEM
                && s.max_entries != 0
                && s.max_entries <= i32::MAX as u32
                && s.stride <= i32::MAX as u32;
            ok.then(|| (s.pc, expansion(s).to_vec()))
        })
        .collect()
}

/// What rbpf 0.3's JIT gets wrong or lacks, in forms it compiles right, as
/// expansions for [`expand`]:
/// - its `mov32` of a register and its `le16`/`le32` keep the upper bits,
///   where the ISA (and the verifier's proof) zero-extends: each gets an
///   explicit zero-extension (found by the kernel's verifier suite,
///   tests/verifier_suite.rs, whose `__retval`s the JIT failed);
/// - ISA v4: `bswap16/32/64` is `be16/32/64` on this little-endian host;
///   `movsx` is a move, a left shift and an arithmetic right shift; `ldsx`
///   a load and the same two shifts (`gotol` was made `ja` before
///   verification). Signed division and modulo become unsigned ones on
///   the operands' magnitudes with the signs fixed around them
///   ([`signed_div`]), which takes a register dead after the instruction
///   ([`live_out`]); with none free the program is refused here and runs
///   interpreted.
pub fn jit_expansions(code: &[u8]) -> Result<Vec<(usize, Vec<Insn>)>, String> {
    let mut out = Vec::new();
    let mut live: Option<Vec<u16>> = None;
    let mut pc = 0;
    while pc < code.len() / INSN_SIZE {
        let i = Insn::at(code, pc);
        let (c, o) = (i.class(), i.op & 0xf0);
        // Sign-extend the low `bits` of dst: shifts of the class's width.
        let sx = |is64: bool, bits: u32| {
            let (class, sh) = if is64 {
                (ALU64, 64 - bits)
            } else {
                (ALU, 32 - bits)
            };
            [
                Insn::new(class | LSH | K, i.dst, 0, 0, sh as i32),
                Insn::new(class | ARSH | K, i.dst, 0, 0, sh as i32),
            ]
        };
        // Clear the upper `64 - bits` bits of dst.
        let zx = |bits: i32| {
            [
                Insn::new(ALU64 | LSH | K, i.dst, 0, 0, 64 - bits),
                Insn::new(ALU64 | RSH | K, i.dst, 0, 0, 64 - bits),
            ]
        };
        match c {
            LD if i.op == (LD | IMM | DW) => pc += 1,
            ALU if o == MOV && i.op & X == X && i.off == 0 => {
                let mut e = vec![i];
                e.extend(zx(32));
                out.push((pc, e));
            }
            ALU if o == END && i.op & X == K && i.imm < 64 => out.push((pc, zx(i.imm).to_vec())),
            ALU | ALU64 if (o == DIV || o == MOD) && i.off == SIGNED_DIV => {
                let live = live.get_or_insert_with(|| live_out(code));
                let busy = live[pc]
                    | (1 << i.dst)
                    | (1 << 10)
                    | if i.op & X == X { 1 << i.src } else { 0 };
                let Some(t) = (0..10u8).find(|r| busy & (1 << r) == 0) else {
                    return Err(format!(
                        "insn {pc}: signed division (ISA v4 sdiv/smod) needs a register the program does not use after it for the JIT (rbpf 0.3 has no signed division); run this program without --jit"
                    ));
                };
                out.push((pc, signed_div(&i, t)));
            }
            ALU64 if o == END => {
                out.push((pc, vec![Insn::new(ALU | END | X, i.dst, 0, 0, i.imm)]));
            }
            ALU | ALU64 if o == MOV && i.off != 0 => {
                let mut e = vec![Insn::new(c | MOV | X, i.dst, i.src, 0, 0)];
                e.extend(sx(c == ALU64, i.off as u32));
                if c == ALU {
                    e.extend(zx(32));
                }
                out.push((pc, e));
            }
            LDX if i.op & 0xe0 == MEMSX => {
                let mut e = vec![Insn::new(LDX | MEM | (i.op & 0x18), i.dst, i.src, i.off, 0)];
                e.extend(sx(true, i.size() as u32 * 8));
                out.push((pc, e));
            }
            _ => {}
        }
        pc += 1;
    }
    Ok(out)
}

/// ISA v4's `sdiv`/`smod` (dst, src or imm) in instructions rbpf 0.3
/// compiles, with `t` as scratch (a register nothing reads after it): the
/// unsigned quotient or remainder of the magnitudes, negated where the
/// kernel's result is negative (the quotient when the signs differ, the
/// remainder when the dividend is negative). By 0 the quotient is 0 and
/// the remainder the dividend; by -1 the magnitudes give the kernel's
/// results (MIN / -1 is MIN, MIN % -1 is 0). The 32-bit forms work on the
/// low halves and end in a 32-bit operation, which zero-extends.
pub fn signed_div(i: &Insn, t: u8) -> Vec<Insn> {
    let n = Insn::new;
    let (c, j) = if i.class() == ALU64 {
        (ALU64, JMP)
    } else {
        (ALU, JMP32)
    };
    let (d, is_mod) = (i.dst, i.op & 0xf0 == MOD);
    if i.op & X == X && i.src == d {
        // x / x is 1 (0 for 0, zero-extended in the 32-bit form), x % x
        // is 0.
        return match (is_mod, c) {
            (true, _) => vec![n(c | MOV | K, d, 0, 0, 0)],
            (false, ALU64) => vec![n(j | JEQ | K, d, 0, 1, 0), n(c | MOV | K, d, 0, 0, 1)],
            (false, _) => vec![
                n(j | JEQ | K, d, 0, 1, 0),
                n(c | MOV | K, d, 0, 0, 1),
                n(ALU64 | LSH | K, d, 0, 0, 32),
                n(ALU64 | RSH | K, d, 0, 0, 32),
            ],
        };
    }
    let load_t = if i.op & X == X {
        n(ALU64 | MOV | X, t, i.src, 0, 0)
    } else {
        n(ALU64 | MOV | K, t, 0, 0, i.imm)
    };
    let (neg_d, neg_t) = (n(c | NEG, d, 0, 0, 0), n(c | NEG, t, 0, 0, 0));
    let div = n(c | if is_mod { MOD } else { DIV } | X, d, t, 0, 0);
    // The four sign cases: dividend >= 0 or < 0 (then made positive
    // first), divisor >= 0 or < 0 (then made positive in the block).
    let pp = vec![div];
    let pn = if is_mod {
        vec![neg_t, div]
    } else {
        vec![neg_t, div, neg_d]
    };
    let np = vec![div, neg_d];
    let nn = if is_mod {
        vec![neg_t, div, neg_d]
    } else {
        vec![neg_t, div]
    };
    let by_zero = match (is_mod, c) {
        (false, _) => vec![n(c | MOV | K, d, 0, 0, 0)],
        (true, ALU) => vec![
            n(ALU64 | LSH | K, d, 0, 0, 32),
            n(ALU64 | RSH | K, d, 0, 0, 32),
        ],
        (true, _) => Vec::new(),
    };
    // 0: t = divisor; 1: if t == 0 goto ZERO; 2: if d s< 0 goto NEG;
    // 3: if t s< 0 goto PN; PP; goto END; PN; goto END; NEG: d = -d;
    // if t s< 0 goto NN; NP; goto END; NN; goto END; ZERO; END.
    let len = |v: &Vec<Insn>| v.len() as i16;
    let p_pp = 4;
    let p_pn = p_pp + len(&pp) + 1;
    let p_neg = p_pn + len(&pn) + 1;
    let p_np = p_neg + 2;
    let p_nn = p_np + len(&np) + 1;
    let p_zero = p_nn + len(&nn) + 1;
    let p_end = p_zero + len(&by_zero);
    let jump = |op: u8, r: u8, at: i16, to: i16| n(op, r, 0, to - at - 1, 0);
    let mut e = vec![
        load_t,
        jump(j | JEQ | K, t, 1, p_zero),
        jump(j | JSLT | K, d, 2, p_neg),
        jump(j | JSLT | K, t, 3, p_pn),
    ];
    e.extend(&pp);
    e.push(jump(JMP | JA, 0, p_pn - 1, p_end));
    e.extend(&pn);
    e.push(jump(JMP | JA, 0, p_neg - 1, p_end));
    e.push(neg_d);
    e.push(jump(j | JSLT | K, t, p_neg + 1, p_nn));
    e.extend(&np);
    e.push(jump(JMP | JA, 0, p_nn - 1, p_end));
    e.extend(&nn);
    e.push(jump(JMP | JA, 0, p_zero - 1, p_end));
    e.extend(by_zero);
    debug_assert_eq!(e.len() as i16, p_end);
    e
}

/// For each instruction, the registers (bit n: rn) some path may read
/// after it before writing them: what a rewrite there must preserve.
pub fn live_out(code: &[u8]) -> Vec<u16> {
    let n = code.len() / INSN_SIZE;
    // (reads, writes, successors) per instruction.
    let mut facts = Vec::with_capacity(n);
    let mut pc = 0;
    while pc < n {
        let i = Insn::at(code, pc);
        let (d, s) = (1u16 << i.dst, 1u16 << i.src);
        let x = i.op & X == X;
        let o = i.op & 0xf0;
        let next = |k: usize| pc + k;
        let (reads, writes, succ): (u16, u16, [Option<usize>; 2]) = match i.class() {
            LD if i.op == (LD | IMM | DW) => (0, d, [Some(next(2)), None]),
            LDX => (s, d, [Some(next(1)), None]),
            ST => (d, 0, [Some(next(1)), None]),
            STX if i.op & 0xe0 == ATOMIC => {
                let (r, w) = if i.imm == CMPXCHG {
                    (d | s | 1, 1)
                } else if i.imm & FETCH != 0 {
                    (d | s, s)
                } else {
                    (d | s, 0)
                };
                (r, w, [Some(next(1)), None])
            }
            STX => (d | s, 0, [Some(next(1)), None]),
            ALU | ALU64 if o == MOV => (if x { s } else { 0 }, d, [Some(next(1)), None]),
            ALU | ALU64 => (d | if x { s } else { 0 }, d, [Some(next(1)), None]),
            JMP if o == EXIT => (1, 0, [None, None]),
            JMP if o == CALL => (0b11_1110, 0b11_1111, [Some(next(1)), None]),
            JMP | JMP32 => {
                let to = (pc as i64 + 1 + i.off as i64) as usize;
                if o == JA {
                    (0, 0, [Some(to), None])
                } else {
                    (d | if x { s } else { 0 }, 0, [Some(next(1)), Some(to)])
                }
            }
            _ => (0, 0, [Some(next(1)), None]),
        };
        facts.push((pc, reads, writes, succ));
        if i.op == (LD | IMM | DW) {
            facts.push((pc + 1, 0, 0, [None, None]));
            pc += 1;
        }
        pc += 1;
    }
    let mut live_in = vec![0u16; n + 2];
    let mut out = vec![0u16; n];
    loop {
        let mut changed = false;
        for &(pc, reads, writes, succ) in facts.iter().rev() {
            let o = succ
                .iter()
                .flatten()
                .filter(|&&t| t < n)
                .fold(0, |a, &t| a | live_in[t]);
            let li = reads | (o & !writes);
            if out[pc] != o || live_in[pc] != li {
                out[pc] = o;
                live_in[pc] = li;
                changed = true;
            }
        }
        if !changed {
            return out;
        }
    }
}

/// Returns `code` with every lookup in `sites` expanded and the jumps
/// re-targeted, or None when a site cannot be inlined or a jump offset
/// would overflow.
#[cfg(test)]
fn inline_lookups(code: &[u8], sites: &[ArrayLookup]) -> Option<Vec<u8>> {
    expand(code, &lookup_expansions(code, sites)?)
}

/// Returns `code` with the instruction at each site's pc replaced by its
/// expansion and every jump re-targeted, or None when a site is out of
/// range or a jump offset would overflow.
pub fn expand(code: &[u8], sites: &[(usize, Vec<Insn>)]) -> Option<Vec<u8>> {
    let n = code.len() / INSN_SIZE;
    let mut site_at: Vec<Option<&[Insn]>> = vec![None; n];
    for (pc, e) in sites {
        *site_at.get_mut(*pc)? = Some(e);
    }
    // new_pos[pc]: where old instruction pc starts in the new code.
    let mut new_pos = Vec::with_capacity(n + 1);
    let mut pos = 0usize;
    for s in &site_at {
        new_pos.push(pos);
        pos += s.map_or(1, |e| e.len());
    }
    new_pos.push(pos);
    let mut out = Vec::with_capacity(pos * INSN_SIZE);
    for pc in 0..n {
        let mut insn = Insn::at(code, pc);
        if let Some(e) = site_at[pc] {
            for i in e {
                out.extend_from_slice(&i.encode());
            }
            continue;
        }
        let class = insn.class();
        let op = insn.op & 0xf0;
        if (class == JMP || class == JMP32) && op != CALL && op != EXIT {
            let target = pc as i64 + 1 + insn.off as i64;
            let target = usize::try_from(target).ok().filter(|&t| t <= n)?;
            let off = new_pos[target] as i64 - (new_pos[pc] as i64 + 1);
            insn.off = i16::try_from(off).ok()?;
        }
        out.extend_from_slice(&insn.encode());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(pc: usize) -> ArrayLookup {
        ArrayLookup {
            pc,
            base: 0x1122_3344_5566_7788,
            max_entries: 4,
            stride: 8,
        }
    }

    #[test]
    fn jumps_across_an_expansion_are_retargeted_both_ways() {
        let call = Insn::new(JMP | CALL, 0, 0, 0, 1);
        let code = encode(&[
            Insn::new(JMP | JEQ | K, 3, 0, 2, 7), // 0: -> 3, over the call at 2
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 1), // 1
            call,                                 // 2
            Insn::new(JMP | JA, 0, 0, -4, 0),     // 3: -> 0, back over the call
            Insn::new(JMP | EXIT, 0, 0, 0, 0),    // 4
        ]);
        let out = inline_lookups(&code, &[site(2)]).unwrap();
        assert_eq!(out.len() / INSN_SIZE, 5 + EXPANSION - 1);
        // 0 -> old 3, now at 2 + 8 = 10: off 9.
        assert_eq!(Insn::at(&out, 0).off, 9);
        // old 3 is at 10 -> 0: off -11.
        assert_eq!(Insn::at(&out, 10).op, JMP | JA);
        assert_eq!(Insn::at(&out, 10).off, -11);
        // The expansion: key load, bounds check to its null arm, base.
        assert_eq!(Insn::at(&out, 2), Insn::new(LDX | MEM | W, 0, 2, 0, 0));
        let jge = Insn::at(&out, 3);
        assert_eq!((jge.op, jge.imm), (JMP | JGE | K, 4));
        assert_eq!(
            Insn::at(&out, 3 + 1 + jge.off as usize),
            Insn::new(ALU64 | MOV | K, 0, 0, 0, 0)
        );
        assert_eq!(Insn::at(&out, 5).imm as u32, 0x5566_7788);
        assert_eq!(Insn::at(&out, 6).imm as u32, 0x1122_3344);
        // Instructions after the expansion are unchanged.
        assert_eq!(Insn::at(&out, 11), Insn::new(JMP | EXIT, 0, 0, 0, 0));
    }

    #[test]
    fn what_cannot_be_inlined_is_refused() {
        let code = encode(&[
            Insn::new(JMP | CALL, 0, 0, 0, 1),
            Insn::new(JMP | EXIT, 0, 0, 0, 0),
        ]);
        // Not a call of the lookup helper.
        assert!(inline_lookups(&code, &[site(1)]).is_none());
        assert!(inline_lookups(&code, &[site(9)]).is_none());
        // Constants that do not fit an immediate.
        let big = ArrayLookup {
            max_entries: u32::MAX,
            ..site(0)
        };
        assert!(inline_lookups(&code, &[big]).is_none());
        // A jump whose offset no longer fits.
        let mut long = vec![Insn::new(JMP | JA, 0, 0, 32766, 0)];
        long.extend(std::iter::repeat_n(
            Insn::new(JMP | CALL, 0, 0, 0, 1),
            32767,
        ));
        long.push(Insn::new(JMP | EXIT, 0, 0, 0, 0));
        let code = encode(&long);
        assert!(inline_lookups(&code, &[site(1)]).is_none());
        assert!(inline_lookups(&code, &[]).is_some());
    }
}
