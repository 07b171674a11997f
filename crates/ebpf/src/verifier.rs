//! cpumapd's eBPF verifier: proves, before a program runs, that every memory
//! access stays inside the packet (after a `data_end` check), the stack, the
//! context or a map value, that every path ends, and that only known
//! instructions and helpers are used. The JIT runs with no checks at all, so
//! nothing reaches it without passing here.
//!
//! # General idea
//!
//! Abstract interpretation over every path, like the kernel's: each register
//! holds a type (scalar with an unsigned range, pointer to ctx / stack /
//! packet / packet end / metadata / map / map value, map value or NULL).
//! Packet pointers carry an id (pointers derived by constant offsets share
//! it), a constant offset and the largest variable part added; a comparison
//! of such a pointer with `data_end` proves a range of bytes for its id on
//! the branch where it holds. Branches whose outcome is known from constant
//! scalars are followed one way only, so a loop with a constant trip count
//! is unrolled and ends; any other loop runs the exploration out of its
//! budget and is refused as unbounded. Stack slots remember spilled
//! pointers (8-byte aligned stores) and which bytes were written.
//!
//! Context loads are recorded so the loader can rewrite the kernel's 32-bit
//! `xdp_md` fields into loads from cpumapd's context, as the kernel rewrites
//! them into `xdp_buff` loads.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::insn::*;
use super::maps::MapKind;
use crate::abi::{helper, pseudo};

/// Longest program accepted (instructions).
pub const MAX_INSNS: usize = 65_536;
/// Instructions the exploration may visit over all paths.
pub const MAX_EXPLORED: usize = 1_000_000;
/// States kept at once (explored at jump targets, and paths waiting):
/// bounds the verifier's memory (a state is about 1.5 KiB).
pub const MAX_STATES: usize = 65_536;
/// Jump targets copied with the paths that wait (each path remembers the
/// ones it went through, to tell a loop).
const MAX_PATH_COPIES: usize = 16_000_000;
/// Largest packet offset a program may compute (the kernel's MAX_PACKET_OFF).
const MAX_PACKET_OFF: u64 = 0xffff;
/// The largest variable part of a pointer's offset (the kernel's
/// BPF_MAX_VAR_OFF).
const MAX_VAR_OFF: u64 = 1 << 29;

#[derive(Clone, Debug, PartialEq, Eq)]
/// Why the verifier refused a program.
pub struct VerifyError {
    /// The instruction.
    pub pc: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insn {}: {}", self.pc, self.why)
    }
}

/// The `xdp_md` fields a program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtxField {
    /// `data`.
    Data,
    /// `data_end`.
    DataEnd,
    /// `data_meta`.
    DataMeta,
    /// `ingress_ifindex`.
    IngressIfindex,
    /// `rx_queue_index`.
    RxQueueIndex,
    /// `egress_ifindex`.
    EgressIfindex,
}

impl CtxField {
    fn at(off: i64) -> Option<CtxField> {
        Some(match off {
            0 => CtxField::Data,
            4 => CtxField::DataEnd,
            8 => CtxField::DataMeta,
            12 => CtxField::IngressIfindex,
            16 => CtxField::RxQueueIndex,
            20 => CtxField::EgressIfindex,
            _ => return None,
        })
    }
}

/// What the verifier learnt that the loader needs.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Context loads: instruction index, the field, and the constant offset
    /// of the context pointer register (usually 0).
    pub ctx_loads: Vec<(usize, CtxField, i64)>,
    /// `bpf_map_lookup_elem` calls whose map is the same on every path
    /// (instruction index, map index): the JIT may inline them.
    pub lookup_sites: Vec<(usize, u32)>,
    /// Instructions visited over all paths.
    pub explored: usize,
    /// An exit whose r0 may be a pointer: the kernel lets an XDP program
    /// return one (it is no action: XDP_ABORTED here), not a cpumap or
    /// devmap program (checked at load, where the attach type is known).
    pub pointer_exit: Option<usize>,
    /// Stack bytes some path reads before any path wrote them (bit i:
    /// byte `r10 - stack + i`). The kernel lets a privileged program read
    /// them (allow_uninit_stack) as an unknown number; cpumapd's stack is
    /// one buffer reused across frames, so the loader zeroes these bytes at
    /// entry rather than let a frame see an earlier one's.
    pub reads_unwritten: Vec<u64>,
}

/// What the verifier needs to know of each map (index = fd - base).
#[derive(Clone, Copy, Debug)]
pub struct MapShape {
    /// Its type.
    pub kind: MapKind,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Programs may not write its values (`.rodata`).
    pub readonly: bool,
    /// Programs may not read its values (`BPF_F_WRONLY_PROG`).
    pub writeonly: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reg {
    Uninit,
    /// A number in [min, max] (unsigned) whose low 32 bits are in
    /// [lo32, hi32] (what a JMP32 proved; kept consistent by [`scalar`]).
    /// Registers with the same non-zero `id` hold the same number (copies
    /// made by a 64-bit move): what a branch proves of one holds for all.
    Scalar {
        min: u64,
        max: u64,
        lo32: u32,
        hi32: u32,
        id: u32,
    },
    Ctx {
        off: i64,
    },
    /// Offset from the frame pointer (R10), so negative for the frame,
    /// plus [0, var].
    Stack {
        off: i64,
        var: u64,
    },
    /// `data + [0, var] + off`; `meta` for pointers from `data_meta`.
    Pkt {
        meta: bool,
        id: u32,
        off: i64,
        var: u64,
    },
    PktEnd,
    MapPtr {
        map: u32,
    },
    /// A map value pointer at `off + [0, var]`.
    Value {
        map: u32,
        off: i64,
        var: u64,
    },
    ValueOrNull {
        map: u32,
        id: u32,
    },
    /// A packet pointer a helper may have moved (adjust_head/meta): unusable.
    Stale,
}

const UNKNOWN: Reg = Reg::Scalar {
    min: 0,
    max: u64::MAX,
    lo32: 0,
    hi32: u32::MAX,
    id: 0,
};

fn konst(v: u64) -> Reg {
    Reg::Scalar {
        min: v,
        max: v,
        lo32: v as u32,
        hi32: v as u32,
        id: 0,
    }
}

fn range(min: u64, max: u64) -> Reg {
    scalar(min, max, 0, u32::MAX).expect("min <= max")
}

/// A number in [min, max] whose low half is in [lo32, hi32], each range
/// narrowed by what the other says; None when nothing is in both.
fn scalar(mut min: u64, mut max: u64, lo32: u32, hi32: u32) -> Option<Reg> {
    const LOW: u64 = u32::MAX as u64;
    let (mut lo, mut hi) = (lo32 as u64, hi32 as u64);
    if min > max {
        return None;
    }
    let upper = min & !LOW;
    if max & !LOW == upper {
        // One upper half: the low half runs from min's to max's.
        lo = lo.max(min & LOW);
        hi = hi.min(max & LOW);
        if lo > hi {
            return None;
        }
        (min, max) = (upper | lo, upper | hi);
    }
    Some(Reg::Scalar {
        min,
        max,
        lo32: lo as u32,
        hi32: hi as u32,
        id: 0,
    })
}

/// 8 bytes of stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    /// Bytes of no type; bit i of `zero`: byte i (lowest address first)
    /// is known to be 0 (the kernel's STACK_ZERO).
    Misc { zero: u8 },
    /// A register spilled whole (an aligned 8-byte store).
    Spill(Reg),
    /// A number stored by a `size`-byte store (1, 2 or 4) at the slot's
    /// start: its low bytes, which a fill of at most `size` bytes from the
    /// same place reads back as the number, truncated (the kernel's
    /// narrow spill). `reg` keeps its link id only if it fits `size`.
    Narrow { size: u8, reg: Reg },
}

const MISC: Slot = Slot::Misc { zero: 0 };

impl Slot {
    /// The spilled number or pointer, whole or narrow.
    fn reg_mut(&mut self) -> Option<&mut Reg> {
        match self {
            Slot::Spill(r) | Slot::Narrow { reg: r, .. } => Some(r),
            Slot::Misc { .. } => None,
        }
    }

    /// Bit i: byte i of the slot is known to be 0.
    fn zero_bytes(&self) -> u8 {
        let of = |c: u64, n: u8| {
            (0..n).fold(0u8, |m, b| {
                if c.to_le_bytes()[b as usize] == 0 {
                    m | 1 << b
                } else {
                    m
                }
            })
        };
        match *self {
            Slot::Misc { zero } => zero,
            Slot::Spill(Reg::Scalar { min, max, .. }) if min == max => of(min, 8),
            Slot::Narrow {
                size,
                reg: Reg::Scalar { min, max, .. },
            } if min == max => of(min, size),
            _ => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    regs: [Reg; 11],
    /// One per 8 bytes of the stack, lowest address first.
    slots: Box<[Slot]>,
    /// Bit i: stack byte (frame - stack size + i) was written.
    init: Box<[u64]>,
    /// Proven ranges: (meta?, id, bytes readable from the id's base).
    ranges: Vec<(bool, u32, i64)>,
}

/// Scalar ids a move links get this bit, apart from the packet and NULL
/// check ids of the same counter (which never meet a scalar's) and from
/// the small ids [`State::canonical`] gives.
const LINK_ID: u32 = 1 << 31;

impl State {
    /// Register `r` (a number) is now `to`: so are the registers that
    /// hold the same number (its id).
    fn narrow(&mut self, r: usize, to: Reg) {
        let id = match self.regs[r] {
            Reg::Scalar { id, .. } => id,
            _ => 0,
        };
        let Reg::Scalar {
            min,
            max,
            lo32,
            hi32,
            ..
        } = to
        else {
            self.regs[r] = to;
            return;
        };
        let linked = Reg::Scalar {
            min,
            max,
            lo32,
            hi32,
            id,
        };
        if id == 0 {
            self.regs[r] = linked;
            return;
        }
        let slots = self.slots.iter_mut().filter_map(Slot::reg_mut);
        for reg in self.regs.iter_mut().chain(slots) {
            if matches!(reg, Reg::Scalar { id: x, .. } if *x == id) {
                *reg = linked;
            }
        }
    }

    /// Renumbers link ids by first appearance (1, 2, ...) and drops an id
    /// only one register holds, so that two states that link the same
    /// registers compare equal whatever ids the moves drew (as the
    /// kernel's check_ids and its unique-id pruning do).
    fn canonical(&mut self) {
        // (old, new, holders), in order of first appearance: registers,
        // then stack slots.
        let mut seen: Vec<(u32, u32, u32)> = Vec::new();
        self.for_each_id(|id| match seen.iter_mut().find(|e| e.0 == *id) {
            Some(e) => e.2 += 1,
            None => seen.push((*id, seen.len() as u32 + 1, 1)),
        });
        self.for_each_id(|id| {
            let e = seen.iter().find(|e| e.0 == *id).expect("counted");
            *id = if e.2 > 1 { e.1 } else { 0 };
        });
        // Renumbered ids stay unique in this state: the small ones never
        // meet LINK_ID ones drawn later.
        debug_assert!(seen.len() < LINK_ID as usize);
    }

    /// Calls `f` on every non-zero link id: registers, then spilled slots.
    fn for_each_id(&mut self, mut f: impl FnMut(&mut u32)) {
        let slots = self.slots.iter_mut().filter_map(Slot::reg_mut);
        for r in self.regs.iter_mut().chain(slots) {
            if let Reg::Scalar { id, .. } = r
                && *id != 0
            {
                f(id);
            }
        }
    }

    /// The state at the program's start, with `stack` bytes of stack (a
    /// multiple of 64).
    fn entry(stack: usize) -> State {
        let mut regs = [Reg::Uninit; 11];
        regs[1] = Reg::Ctx { off: 0 };
        regs[10] = Reg::Stack { off: 0, var: 0 };
        State {
            regs,
            slots: vec![MISC; stack / 8].into_boxed_slice(),
            init: vec![0; stack / 64].into_boxed_slice(),
            ranges: Vec::new(),
        }
    }

    /// Bytes of stack below r10.
    fn stack_size(&self) -> usize {
        self.slots.len() * 8
    }

    fn range_of(&self, meta: bool, id: u32) -> i64 {
        self.ranges
            .iter()
            .find(|r| r.0 == meta && r.1 == id)
            .map_or(0, |r| r.2)
    }

    fn prove(&mut self, meta: bool, id: u32, r: i64) {
        match self.ranges.iter_mut().find(|x| x.0 == meta && x.1 == id) {
            Some(x) => x.2 = x.2.max(r),
            None => self.ranges.push((meta, id, r)),
        }
    }

    fn stack_written(&self, lo: usize, n: usize) -> bool {
        (lo..lo + n).all(|b| byte_bit(&self.init, b))
    }

    fn mark_written(&mut self, lo: usize, n: usize) {
        set_byte_bits(&mut self.init, lo, n, true);
    }

    /// After a helper that may move packet data: every packet pointer,
    /// in registers and spilled, becomes unusable, and proofs are void.
    fn invalidate_packet(&mut self) {
        let stale = |r: &mut Reg| {
            if matches!(r, Reg::Pkt { .. } | Reg::PktEnd) {
                *r = Reg::Stale;
            }
        };
        self.regs.iter_mut().for_each(stale);
        for s in self.slots.iter_mut() {
            if let Slot::Spill(r) = s {
                stale(r);
            }
        }
        self.ranges.clear();
    }
}

/// (jump target, state hash) pairs one path went through.
type Path = HashSet<(usize, u64)>;

struct Verifier<'a> {
    prog: &'a [u8],
    n: usize,
    maps: &'a [MapShape],
    next_id: u32,
    explored: usize,
    ctx_loads: Vec<(usize, CtxField, i64)>,
    /// Map of r1 at each bpf_map_lookup_elem call; None where paths
    /// disagree (the kernel's "poisoned" map_ptr_state).
    lookup_maps: BTreeMap<usize, Option<u32>>,
    pointer_exit: Option<usize>,
    /// States already explored at jump targets (where paths join).
    seen: HashSet<(usize, State)>,
    targets: Vec<bool>,
    back_edge: Option<(usize, usize)>,
    /// Bit i: some path wrote stack byte (frame - stack size + i).
    written: Vec<u64>,
    /// Bit i: some path read stack byte i before writing it.
    reads_unwritten: Vec<u64>,
    /// Instructions that save or restore a register around an inlined
    /// call: they move any register, even one not written yet.
    moves: Vec<bool>,
    /// Path entries copied so far (against [`MAX_PATH_COPIES`]).
    path_copies: usize,
}

fn err(pc: usize, why: impl Into<String>) -> VerifyError {
    VerifyError {
        pc,
        why: why.into(),
    }
}

/// Verifies `prog` (raw instructions, maps already relocated to
/// `MAP_FD_BASE + index`).
pub fn verify(prog: &[u8], maps: &[MapShape]) -> Result<Verified, VerifyError> {
    verify_stack(prog, maps, STACK_SIZE, &[]).map(|(v, _)| v)
}

/// [`verify`] with `stack` bytes of stack below r10 (a multiple of 64;
/// the loader sizes called functions' frames with a larger one), and
/// `moves`: the 8-byte stack stores and loads (with r10 as the base) that
/// keep a caller's register across an inlined call, which may move a
/// register not written yet (it stays unwritten). Also returns which stack
/// bytes some path wrote (bit i: byte `r10 - stack + i`).
pub fn verify_stack(
    prog: &[u8],
    maps: &[MapShape],
    stack: usize,
    moves: &[usize],
) -> Result<(Verified, Vec<u64>), VerifyError> {
    if prog.is_empty() || !prog.len().is_multiple_of(INSN_SIZE) {
        return Err(err(
            0,
            "program length is not a whole number of instructions",
        ));
    }
    let n = prog.len() / INSN_SIZE;
    if n > MAX_INSNS {
        return Err(err(
            0,
            format!("program has {n} instructions, more than {MAX_INSNS}"),
        ));
    }
    let mut v = Verifier {
        prog,
        n,
        maps,
        next_id: 1,
        explored: 0,
        ctx_loads: Vec::new(),
        lookup_maps: BTreeMap::new(),
        pointer_exit: None,
        seen: HashSet::new(),
        targets: vec![false; n],
        back_edge: None,
        written: vec![0; stack / 64],
        reads_unwritten: vec![0; stack / 64],
        moves: vec![false; n],
        path_copies: 0,
    };
    for &pc in moves {
        let i = Insn::at(prog, pc.min(n - 1));
        let save = i.op == (STX | MEM | DW) && i.dst == 10;
        let restore = i.op == (LDX | MEM | DW) && i.src == 10;
        if pc >= n || !(save || restore) || i.off % 8 != 0 {
            return Err(err(pc, "not a register save or restore"));
        }
        v.moves[pc] = true;
    }
    v.check_static()?;
    let mut work = vec![(0usize, State::entry(stack), HashSet::new())];
    while let Some((pc, st, path)) = work.pop() {
        v.run_path(pc, st, path, &mut work)?;
    }
    let mut ctx_loads = v.ctx_loads;
    ctx_loads.sort_by_key(|c| c.0);
    ctx_loads.dedup_by_key(|c| c.0);
    let verified = Verified {
        ctx_loads,
        lookup_sites: v
            .lookup_maps
            .into_iter()
            .filter_map(|(pc, m)| Some((pc, m?)))
            .collect(),
        explored: v.explored,
        pointer_exit: v.pointer_exit,
        reads_unwritten: v.reads_unwritten,
    };
    Ok((verified, v.written))
}

impl Verifier<'_> {
    fn insn(&self, pc: usize) -> Insn {
        Insn::at(self.prog, pc)
    }

    /// Checks that hold whatever the path: known opcodes, registers in
    /// range, jump targets inside the program and not into the middle of
    /// an `ld_imm64`, the last instruction ends the program.
    fn check_static(&mut self) -> Result<(), VerifyError> {
        let mut second_half = vec![false; self.n];
        let mut pc = 0;
        while pc < self.n {
            let i = self.insn(pc);
            if i.dst > 10 || i.src > 10 {
                return Err(err(
                    pc,
                    format!("register r{} does not exist", i.dst.max(i.src)),
                ));
            }
            if i.op == (LD | IMM | DW) {
                if pc + 1 >= self.n {
                    return Err(err(pc, "ld_imm64 is cut short by the end of the program"));
                }
                let next = self.insn(pc + 1);
                if next.op != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                    return Err(err(pc + 1, "malformed second half of ld_imm64"));
                }
                second_half[pc + 1] = true;
                pc += 2;
                continue;
            }
            self.known_opcode(pc, &i)?;
            pc += 1;
        }
        for pc in 0..self.n {
            if second_half[pc] {
                continue;
            }
            let i = self.insn(pc);
            let c = i.class();
            if (c == JMP || c == JMP32) && !matches!(i.op & 0xf0, CALL | EXIT) {
                let t = pc as i64 + 1 + i.off as i64;
                if t < 0 || t >= self.n as i64 {
                    return Err(err(pc, format!("jump to {t}, outside the program")));
                }
                if second_half[t as usize] {
                    return Err(err(pc, "jump into the middle of ld_imm64"));
                }
                self.targets[t as usize] = true;
            }
        }
        let last = self.insn(self.n - 1);
        if second_half[self.n - 1] || !(last.op == (JMP | EXIT) || (last.op == (JMP | JA))) {
            return Err(err(
                self.n - 1,
                "the last instruction must be exit or a jump",
            ));
        }
        Ok(())
    }

    /// The kernel's "uses reserved fields" checks: every field an
    /// instruction does not use must be zero (so nothing reads a field one
    /// engine ignores and another interprets; the ISA v4 forms, signed
    /// div/mod and movsx, put their meaning in `off`).
    fn reserved_fields(&self, pc: usize, i: &Insn) -> Result<(), VerifyError> {
        let x = i.op & X == X;
        let (c, o) = (i.class(), i.op & 0xf0);
        let clean = match c {
            ALU | ALU64 if o == END => i.src == 0 && i.off == 0,
            // ISA v4: off 1 makes div and mod signed; a register move's
            // off 8/16/32 sign-extends (movsx, 32 in ALU64 only).
            ALU | ALU64 if o == DIV || o == MOD => {
                matches!(i.off, 0 | SIGNED_DIV) && if x { i.imm == 0 } else { i.src == 0 }
            }
            ALU | ALU64 if o == MOV && x => {
                i.imm == 0 && (matches!(i.off, 0 | 8 | 16) || (c == ALU64 && i.off == 32))
            }
            ALU | ALU64 => i.off == 0 && if x { i.imm == 0 } else { i.src == 0 },
            LDX => i.imm == 0,
            ST => i.src == 0,
            STX if i.op & 0xe0 == MEM => i.imm == 0,
            // Atomics: off is the offset, imm the operation.
            JMP if o == EXIT => i.dst == 0 && i.src == 0 && i.off == 0 && i.imm == 0,
            JMP if o == CALL => i.dst == 0 && i.off == 0,
            JMP if o == JA => i.dst == 0 && i.src == 0 && i.imm == 0,
            JMP | JMP32 => {
                if x {
                    i.imm == 0
                } else {
                    i.src == 0
                }
            }
            _ => true,
        };
        if clean {
            return Ok(());
        }
        Err(err(
            pc,
            format!(
                "instruction {:#04x} uses reserved fields (dst r{}, src r{}, off {}, imm {}): a field it does not use must be 0",
                i.op, i.dst, i.src, i.off, i.imm
            ),
        ))
    }

    fn known_opcode(&self, pc: usize, i: &Insn) -> Result<(), VerifyError> {
        self.reserved_fields(pc, i)?;
        let op = i.op;
        let ok = match i.class() {
            LD => false, // only ld_imm64 (handled by the caller); LD_ABS/IND are socket-filter only
            // ISA v4's ldsx sign-extends 1, 2 or 4 bytes.
            LDX => op & 0xe0 == MEM || (op & 0xe0 == MEMSX && op & 0x18 != DW),
            ST => op & 0xe0 == MEM,
            STX => op & 0xe0 == MEM || op & 0xe0 == ATOMIC,
            ALU | ALU64 => {
                let o = op & 0xf0;
                // ALU64 | END | K is ISA v4's unconditional bswap.
                (o <= ARSH || o == END) && (o != END || i.class() == ALU || op & X == 0)
            }
            JMP => {
                let o = op & 0xf0;
                o <= JSLE && (o != CALL || op == (JMP | CALL)) && (o != EXIT || op == (JMP | EXIT))
            }
            JMP32 => {
                let o = op & 0xf0;
                o != JA && o != CALL && o != EXIT && o <= JSLE
            }
            _ => false,
        };
        if !ok {
            let what = if i.class() == LD && op & 0xe0 != 0 {
                " (LD_ABS/LD_IND are for socket filters, not XDP)"
            } else {
                ""
            };
            return Err(err(
                pc,
                format!("unknown instruction opcode {op:#04x}{what}"),
            ));
        }
        if i.class() == STX && op & 0xe0 == ATOMIC {
            let known = matches!(i.imm & !FETCH, 0x00 | 0x40 | 0x50 | 0xa0)
                || i.imm == XCHG
                || i.imm == CMPXCHG;
            if !known || !matches!(op & 0x18, W | DW) {
                return Err(err(
                    pc,
                    format!(
                        "unknown atomic operation {:#x} of size {:#x} (add, or, and, xor with or without fetch, xchg, cmpxchg on 4 or 8 bytes are known)",
                        i.imm,
                        op & 0x18
                    ),
                ));
            }
        }
        if i.class() == JMP && op & 0xf0 == CALL && i.src == pseudo::CALL {
            return Err(err(
                pc,
                "bpf-to-bpf calls are not supported (mark the function __always_inline)",
            ));
        }
        if (i.class() == ALU || i.class() == ALU64)
            && op & 0xf0 == END
            && ![16, 32, 64].contains(&i.imm)
        {
            return Err(err(pc, format!("byte swap of {} bits", i.imm)));
        }
        // The kernel's static ALU checks (check_alu_op): a constant
        // divisor of 0 and a constant shift past the width are refused
        // wherever they are, whatever they would do at run time.
        if (i.class() == ALU || i.class() == ALU64) && op & X == K {
            let o = op & 0xf0;
            let bits = if i.class() == ALU64 { 64 } else { 32 };
            if (o == DIV || o == MOD) && i.imm == 0 {
                return Err(err(pc, "div by zero (a constant divisor of 0)"));
            }
            if matches!(o, LSH | RSH | ARSH) && !(0..bits).contains(&i.imm) {
                return Err(err(
                    pc,
                    format!("invalid shift {} (the count must be below {bits})", i.imm),
                ));
            }
        }
        Ok(())
    }

    /// A restore (see `moves`) of a register that was saved unwritten.
    fn restore(&self, st: &State, i: &Insn, pc: usize) -> Option<Reg> {
        if !self.moves[pc] {
            return None;
        }
        let lo = i.off as i64 + st.stack_size() as i64;
        match st.slots.get(usize::try_from(lo).ok()? / 8) {
            Some(Slot::Spill(Reg::Uninit)) => Some(Reg::Uninit),
            _ => None,
        }
    }

    fn fresh_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn read(&self, pc: usize, st: &State, r: u8) -> Result<Reg, VerifyError> {
        match st.regs[r as usize] {
            Reg::Uninit => Err(err(pc, format!("r{r} is read before it is written"))),
            Reg::Stale => Err(err(
                pc,
                format!(
                    "r{r} is a packet pointer from before a call that may move the packet; load it again from the context"
                ),
            )),
            x => Ok(x),
        }
    }

    /// Follows one path from `pc`, pushing the other side of each branch.
    /// `path`: the (jump target, state hash) pairs this path went through,
    /// to tell a loop (the same state again on the same path) from two
    /// paths meeting (the same state reached another way).
    fn run_path(
        &mut self,
        mut pc: usize,
        mut st: State,
        mut path: Path,
        work: &mut Vec<(usize, State, Path)>,
    ) -> Result<(), VerifyError> {
        loop {
            if self.targets[pc] && !self.enter_jump_target(pc, &mut st, &mut path)? {
                return Ok(()); // explored already from another path
            }
            self.count_explored(pc)?;
            match self.step(pc, &mut st, &path, work)? {
                Some(next) => pc = next,
                None => return Ok(()),
            }
            if pc >= self.n {
                return Err(err(
                    self.n - 1,
                    "execution falls off the end of the program",
                ));
            }
        }
    }

    /// At a jump target: refuses a loop that comes back in the same state
    /// on the same path; false if this state was explored from another path.
    fn enter_jump_target(
        &mut self,
        pc: usize,
        st: &mut State,
        path: &mut Path,
    ) -> Result<bool, VerifyError> {
        st.canonical();
        let h = {
            use std::hash::{Hash, Hasher};
            let mut hs = std::collections::hash_map::DefaultHasher::new();
            st.hash(&mut hs);
            hs.finish()
        };
        if path.contains(&(pc, h)) {
            // The same state again on the same path: nothing forces the
            // loop to end.
            return Err(err(
                pc,
                "infinite loop: this loop head is reached again in the same state (nothing bounds the loop)",
            ));
        }
        if !self.seen.insert((pc, st.clone())) {
            return Ok(false);
        }
        if self.seen.len() > MAX_STATES {
            return Err(self.too_complex(pc, format!("kept {MAX_STATES} states")));
        }
        path.insert((pc, h));
        Ok(true)
    }

    /// Counts one explored instruction against [`MAX_EXPLORED`].
    fn count_explored(&mut self, pc: usize) -> Result<(), VerifyError> {
        self.explored += 1;
        if self.explored <= MAX_EXPLORED {
            return Ok(());
        }
        Err(self.too_complex(pc, format!("explored {MAX_EXPLORED} instructions")))
    }

    /// The error for an exploration out of budget (`spent`: which one),
    /// at the last back edge if there is one.
    fn too_complex(&self, pc: usize, spent: String) -> VerifyError {
        match self.back_edge {
            Some((from, to)) => err(
                from,
                format!("loop back to insn {to} is not provably bounded ({spent})"),
            ),
            None => err(pc, format!("program too complex ({spent})")),
        }
    }

    /// Queues the other side of a branch, within the memory budget.
    fn fork(
        &mut self,
        pc: usize,
        item: (usize, State, &Path),
        work: &mut Vec<(usize, State, Path)>,
    ) -> Result<(), VerifyError> {
        self.path_copies += item.2.len() + 1;
        if self.path_copies > MAX_PATH_COPIES {
            return Err(self.too_complex(pc, format!("copied {MAX_PATH_COPIES} path entries")));
        }
        if work.len() + self.seen.len() >= MAX_STATES {
            return Err(self.too_complex(pc, format!("kept {MAX_STATES} states")));
        }
        work.push((item.0, item.1, item.2.clone()));
        Ok(())
    }

    /// Checks instruction `pc` in state `st` and applies it. Returns the
    /// next instruction of this path, None where the path ends; the other
    /// side of a two-way branch goes to `work`.
    fn step(
        &mut self,
        pc: usize,
        st: &mut State,
        path: &Path,
        work: &mut Vec<(usize, State, Path)>,
    ) -> Result<Option<usize>, VerifyError> {
        let i = self.insn(pc);
        let writes_r10 = matches!(i.class(), LD | LDX | ALU | ALU64) && i.dst == 10;
        match i.class() {
            LD => {
                let val = self.ld_imm64(pc, &i)?;
                if writes_r10 {
                    return Err(err(pc, "r10 (the frame pointer) is read-only"));
                }
                st.regs[i.dst as usize] = val;
                Ok(Some(pc + 2))
            }
            LDX => {
                let base = self.read(pc, st, i.src)?;
                let sx = i.op & 0xe0 == MEMSX;
                if sx && matches!(base, Reg::Ctx { .. }) {
                    return Err(err(pc, "sign-extending load (ldsx) from the context"));
                }
                let val = match self.restore(st, &i, pc) {
                    Some(v) => v,
                    None => self.access(pc, st, base, i.off, i.size(), None)?,
                };
                let val = if sx {
                    sign_extended(val, i.size() as u32 * 8, u64::MAX)
                } else {
                    val
                };
                if writes_r10 {
                    return Err(err(pc, "r10 (the frame pointer) is read-only"));
                }
                st.regs[i.dst as usize] = val;
                Ok(Some(pc + 1))
            }
            STX if i.op & 0xe0 == ATOMIC => {
                self.atomic(pc, st, &i)?;
                Ok(Some(pc + 1))
            }
            STX if self.moves[pc] && st.regs[i.src as usize] == Reg::Uninit => {
                // Saving a register the caller never wrote: the slot
                // holds nothing readable.
                let lo = usize::try_from(i.off as i64 + st.stack_size() as i64)
                    .map_err(|_| err(pc, "register save outside the stack"))?;
                st.slots[lo / 8] = Slot::Spill(Reg::Uninit);
                set_byte_bits(&mut st.init, lo, 8, false);
                Ok(Some(pc + 1))
            }
            ST | STX => {
                self.store(pc, st, &i)?;
                Ok(Some(pc + 1))
            }
            ALU | ALU64 => {
                if writes_r10 {
                    return Err(err(pc, "r10 (the frame pointer) is read-only"));
                }
                self.alu(pc, st, &i)?;
                Ok(Some(pc + 1))
            }
            JMP | JMP32 => match i.op & 0xf0 {
                EXIT => {
                    if !matches!(self.read(pc, st, 0)?, Reg::Scalar { .. }) {
                        self.pointer_exit.get_or_insert(pc);
                    }
                    Ok(None)
                }
                CALL => {
                    self.call(pc, st, i.imm)?;
                    Ok(Some(pc + 1))
                }
                JA => Ok(Some(self.jump(pc, &i))),
                _ => {
                    let target = self.jump(pc, &i);
                    Ok(match self.branch(pc, st, &i)? {
                        (Some(t), Some(f)) => {
                            self.fork(pc, (target, t, path), work)?;
                            *st = f;
                            Some(pc + 1)
                        }
                        (Some(t), None) => {
                            *st = t;
                            Some(target)
                        }
                        (None, Some(f)) => {
                            *st = f;
                            Some(pc + 1)
                        }
                        (None, None) => None,
                    })
                }
            },
            _ => unreachable!("check_static refused unknown classes"),
        }
    }

    /// A store (ST, or STX but an atomic) of an immediate or a register.
    fn store(&mut self, pc: usize, st: &mut State, i: &Insn) -> Result<(), VerifyError> {
        let base = self.read(pc, st, i.dst)?;
        let val = if self.moves[pc] {
            st.regs[i.src as usize]
        } else if i.class() == STX {
            self.read(pc, st, i.src)?
        } else {
            konst(i.imm as i64 as u64)
        };
        // A spill of a number not known exactly, whole or at a slot's
        // start by a store as wide as the number, links the slot and the
        // register, as a move does (the kernel's spill assigns an id): a
        // compare of either, or of what is filled from the slot, narrows
        // all.
        let slot_start = |o: i64| (o + i.off as i64).rem_euclid(8) == 0;
        let val = match val {
            Reg::Scalar {
                min, max, id: 0, ..
            } if i.class() == STX
                && min != max
                && fits(max, i.size())
                && !self.moves[pc]
                && matches!(base, Reg::Stack { off, var: 0 } if slot_start(off)) =>
            {
                let id = self.fresh_id() | LINK_ID;
                if let Reg::Scalar { id: slot, .. } = &mut st.regs[i.src as usize] {
                    *slot = id;
                }
                st.regs[i.src as usize]
            }
            v => v,
        };
        self.access(pc, st, base, i.off, i.size(), Some(val))?;
        Ok(())
    }

    /// The value an `ld_imm64` at `pc` loads: a number or a map pointer.
    fn ld_imm64(&self, pc: usize, i: &Insn) -> Result<Reg, VerifyError> {
        let hi = self.insn(pc + 1).imm as u32 as u64;
        let val = (i.imm as u32 as u64) | (hi << 32);
        match i.src {
            0 => Ok(konst(val)),
            pseudo::MAP_FD => {
                let idx = (i.imm as i64 - super::maps::MAP_FD_BASE as i64) as usize;
                if idx >= self.maps.len() || hi != 0 {
                    return Err(err(pc, format!("ld_imm64 of unknown map fd {}", i.imm)));
                }
                Ok(Reg::MapPtr { map: idx as u32 })
            }
            pseudo::MAP_VALUE => {
                // Global data: the address of element 0 of a one-element
                // array plus a constant offset (libbpf's .rodata/.data/.bss).
                let idx = (i.imm as i64 - super::maps::MAP_FD_BASE as i64) as usize;
                let Some(m) = self.maps.get(idx) else {
                    return Err(err(pc, format!("ld_imm64 of unknown map fd {}", i.imm)));
                };
                if m.kind != MapKind::Array || hi >= m.value_size as u64 {
                    return Err(err(
                        pc,
                        format!(
                            "ld_imm64 of a map value: offset {hi} is not inside the {}-byte value of an array",
                            m.value_size
                        ),
                    ));
                }
                Ok(Reg::Value {
                    map: idx as u32,
                    off: hi as i64,
                    var: 0,
                })
            }
            s => Err(err(pc, format!("ld_imm64 source {s} is not supported"))),
        }
    }

    fn jump(&mut self, pc: usize, i: &Insn) -> usize {
        let t = (pc as i64 + 1 + i.off as i64) as usize;
        if t <= pc {
            self.back_edge = Some((pc, t));
        }
        t
    }

    /// An atomic read-modify-write of `*(size *)(dst + off)` with src (and
    /// r0 for cmpxchg): on a map value or the stack only, aligned to its
    /// size, as the kernel allows; the fetched old value is a number.
    fn atomic(&mut self, pc: usize, st: &mut State, i: &Insn) -> Result<(), VerifyError> {
        let size = i.size();
        let base = self.read(pc, st, i.dst)?;
        let val = self.read(pc, st, i.src)?;
        // A pointer operand is its address, a number, as the kernel lets a
        // privileged program use it (allow_ptr_leaks).
        let _ = val;
        if i.imm == CMPXCHG {
            self.read(pc, st, 0)?;
        }
        let at = match base {
            Reg::Value { var: 1.., .. } | Reg::Stack { var: 1.., .. } => {
                return Err(err(pc, "atomic operation at a variable offset"));
            }
            Reg::Value { off, .. } | Reg::Stack { off, .. } => off + i.off as i64,
            _ => {
                return Err(err(
                    pc,
                    "atomic operations work on a map value or the stack only",
                ));
            }
        };
        if at.rem_euclid(size as i64) != 0 {
            return Err(err(
                pc,
                format!("misaligned atomic access: offset {at} is not a multiple of {size}"),
            ));
        }
        // Bounds (and .rodata) as a load and a store of that size.
        self.access(pc, st, base, i.off, size, None)?;
        self.access(pc, st, base, i.off, size, Some(UNKNOWN))?;
        let old = if size == 4 {
            range(0, u32::MAX as u64)
        } else {
            UNKNOWN
        };
        if i.imm == CMPXCHG {
            st.regs[0] = old;
        } else if i.imm & FETCH != 0 {
            if i.src == 10 {
                return Err(err(pc, "r10 (the frame pointer) is read-only"));
            }
            st.regs[i.src as usize] = old;
        }
        Ok(())
    }

    /// A load (`store` None) or store through `base + off` of `size` bytes.
    /// Returns the loaded value's type.
    fn access(
        &mut self,
        pc: usize,
        st: &mut State,
        base: Reg,
        off: i16,
        size: usize,
        store: Option<Reg>,
    ) -> Result<Reg, VerifyError> {
        let off = off as i64;
        let sz = size as i64;
        let loaded = loaded_range(size);
        // A pointer stored into the packet or a map value is its address,
        // a number from then on (the kernel's allow_ptr_leaks, which a
        // privileged loader has); only the stack keeps spilled pointers.
        match base {
            Reg::Ctx { off: o } => self.ctx_access(pc, o + off, size, store.is_some(), o),
            Reg::Stack { off: o, var: 0 } => {
                let r = stack_access(pc, st, o + off, size, store, &mut self.reads_unwritten)?;
                if store.is_some() {
                    let lo = (o + off + st.stack_size() as i64) as usize;
                    set_byte_bits(&mut self.written, lo, size, true);
                }
                Ok(r)
            }
            Reg::Stack { off: o, var } => {
                let r =
                    stack_access_var(pc, st, o + off, var, size, store, &mut self.reads_unwritten)?;
                if store.is_some() {
                    // The frame's depth counts every byte it may write.
                    let lo = (o + off + st.stack_size() as i64) as usize;
                    set_byte_bits(&mut self.written, lo, var as usize + size, true);
                }
                Ok(r)
            }
            Reg::Pkt {
                meta,
                id,
                off: o,
                var: _,
            } => {
                let at = o + off;
                let proven = st.range_of(meta, id);
                if at < 0 || at + sz > proven {
                    let end = if meta { "data" } else { "data_end" };
                    return Err(err(
                        pc,
                        format!(
                            "packet access out of proven range: offset {at} size {size}, but only {proven} bytes are checked against {end} (compare the pointer with {end} first)"
                        ),
                    ));
                }
                Ok(if store.is_some() { UNKNOWN } else { loaded })
            }
            Reg::Value { map, off: o, var } => {
                if store.is_none() && self.maps[map as usize].writeonly {
                    return Err(err(
                        pc,
                        "read from a write-only map value (BPF_F_WRONLY_PROG)",
                    ));
                }
                if store.is_some() && self.maps[map as usize].readonly {
                    return Err(err(
                        pc,
                        "write into a read-only map value (.rodata: set it before load with --prog-set NAME=VALUE)",
                    ));
                }
                let at = o + off;
                let vs = self.maps[map as usize].value_size as i64;
                if at < 0 || at + var as i64 + sz > vs {
                    let at = if var == 0 {
                        format!("{at}")
                    } else {
                        format!("{at}..={}", at + var as i64)
                    };
                    return Err(err(
                        pc,
                        format!(
                            "map value access out of bounds: offset {at} size {size}, value size {vs}"
                        ),
                    ));
                }
                Ok(if store.is_some() { UNKNOWN } else { loaded })
            }
            Reg::ValueOrNull { .. } => Err(err(
                pc,
                "map value pointer may be NULL: check it against 0 first",
            )),
            Reg::PktEnd => Err(err(pc, "data_end may not be dereferenced")),
            Reg::MapPtr { .. } => Err(err(pc, "a map pointer may not be dereferenced")),
            Reg::Scalar { .. } => Err(err(pc, "memory access through a number, not a pointer")),
            Reg::Uninit | Reg::Stale => unreachable!("read() refuses these"),
        }
    }

    /// A load from the context at offset `at` (the register held the
    /// context plus `reg_off`): one of xdp_md's six 4-byte fields.
    fn ctx_access(
        &mut self,
        pc: usize,
        at: i64,
        size: usize,
        is_store: bool,
        reg_off: i64,
    ) -> Result<Reg, VerifyError> {
        if is_store {
            return Err(err(pc, "the context is read-only"));
        }
        let f = CtxField::at(at).filter(|_| size == 4).ok_or_else(|| {
            err(
                pc,
                format!(
                    "invalid context access: offset {at} size {size} (xdp_md has six 4-byte fields)"
                ),
            )
        })?;
        self.ctx_loads.push((pc, f, reg_off));
        let pkt = |meta| Reg::Pkt {
            meta,
            id: 0,
            off: 0,
            var: 0,
        };
        Ok(match f {
            CtxField::Data => pkt(false),
            CtxField::DataEnd => Reg::PktEnd,
            CtxField::DataMeta => pkt(true),
            _ => range(0, u32::MAX as u64),
        })
    }

    fn alu(&mut self, pc: usize, st: &mut State, i: &Insn) -> Result<(), VerifyError> {
        let is64 = i.class() == ALU64;
        let op = i.op & 0xf0;
        // A byte swap's 0x08 bit is its direction (BPF_TO_BE), not a source
        // register: it reads only dst.
        let src = if op == END {
            konst(0)
        } else if i.op & X == X {
            self.read(pc, st, i.src)?
        } else if is64 {
            konst(i.imm as i64 as u64)
        } else {
            konst(i.imm as u32 as u64)
        };
        if op == MOV && i.off != 0 {
            // movsx: sign-extends the low 8/16/32 bits of a number.
            let Reg::Scalar { .. } = src else {
                return Err(err(
                    pc,
                    format!("sign extension (movsx) of pointer r{}", i.src),
                ));
            };
            let lim = if is64 { u64::MAX } else { u32::MAX as u64 };
            st.regs[i.dst as usize] = sign_extended(src, i.off as u32, lim);
            return Ok(());
        }
        if op == MOV {
            st.regs[i.dst as usize] = match (is64, src) {
                // A copy of a number not known exactly: both registers
                // get one id, so a later compare of either narrows both.
                (
                    true,
                    Reg::Scalar {
                        min, max, id: 0, ..
                    },
                ) if i.op & X == X && min != max => {
                    let id = self.fresh_id() | LINK_ID;
                    let Reg::Scalar { id: slot, .. } = &mut st.regs[i.src as usize] else {
                        unreachable!("src was read as a number");
                    };
                    *slot = id;
                    st.regs[i.src as usize]
                }
                (true, v) => v,
                (false, Reg::Scalar { lo32, hi32, .. }) => range(lo32 as u64, hi32 as u64),
                (false, _) => range(0, u32::MAX as u64),
            };
            return Ok(());
        }
        let dst = self.read(pc, st, i.dst)?;
        let out = match (dst, src) {
            (a @ Reg::Scalar { .. }, b @ Reg::Scalar { .. }) => scalar_op(i, is64, a, b),
            (p, Reg::Scalar { min, max, .. }) if (op == ADD || op == SUB) && i.off == 0 => {
                if !is64 {
                    return Err(err(pc, "32-bit arithmetic on a pointer"));
                }
                self.ptr_offset(pc, p, op, min, max)?
            }
            (Reg::Scalar { min, max, .. }, p) if op == ADD && is64 && i.off == 0 => {
                self.ptr_offset(pc, p, ADD, min, max)?
            }
            // pointer - pointer: a number (the kernel's allow_ptr_leaks).
            (a, b) if op == SUB && is64 && i.off == 0 && is_pointer(a) && is_pointer(b) => UNKNOWN,
            _ => {
                return Err(err(
                    pc,
                    format!(
                        "arithmetic {} on pointer r{} is not allowed",
                        alu_name(op),
                        i.dst
                    ),
                ));
            }
        };
        st.regs[i.dst as usize] = out;
        Ok(())
    }

    /// `p +/- [min, max]`.
    fn ptr_offset(
        &mut self,
        pc: usize,
        p: Reg,
        op: u8,
        min: u64,
        max: u64,
    ) -> Result<Reg, VerifyError> {
        let konst = (min == max).then_some(min as i64);
        let sign = if op == SUB { -1 } else { 1 };
        let bump = |off: i64, c: i64| -> Result<i64, VerifyError> {
            let n = off + sign * c;
            if n.abs() > 1 << 29 {
                return Err(err(pc, format!("pointer offset {n} is out of range")));
            }
            Ok(n)
        };
        if op == SUB && matches!(p, Reg::Stack { .. }) {
            // As the kernel: JITs may not handle it (write r10 + -N).
            return Err(err(
                pc,
                "subtraction from the stack pointer is not allowed (add a negative number)",
            ));
        }
        // A pointer at off + [0, var], plus (or minus) [min, max]: the
        // lowest offset moves, the spread grows; bounded as the kernel
        // bounds variable offsets (BPF_MAX_VAR_OFF).
        let spread = |off: i64, var: u64, into: &str| -> Result<(i64, u64), VerifyError> {
            let v = var.saturating_add(max - min);
            if max > MAX_VAR_OFF || v > MAX_VAR_OFF {
                return Err(err(
                    pc,
                    format!(
                        "variable offset into {into} may reach {max}: bound it first (e.g. & 0xff, or compare it)"
                    ),
                ));
            }
            Ok((bump(off, if op == SUB { max } else { min } as i64)?, v))
        };
        Ok(match (p, konst) {
            (Reg::Ctx { off }, Some(c)) => Reg::Ctx { off: bump(off, c)? },
            (Reg::Stack { off, var }, Some(c)) => Reg::Stack {
                off: bump(off, c)?,
                var,
            },
            (Reg::Stack { off, var }, None) => {
                // r10 + [min, max]: checked where it is dereferenced.
                let (off, var) = spread(off, var, "the stack")?;
                Reg::Stack { off, var }
            }
            (Reg::Value { map, off, var }, Some(c)) => Reg::Value {
                map,
                off: bump(off, c)?,
                var,
            },
            (Reg::Value { map, off, var }, None) => {
                let (off, var) = spread(off, var, "a map value")?;
                Reg::Value { map, off, var }
            }
            (Reg::Pkt { meta, id, off, var }, Some(c)) => Reg::Pkt {
                meta,
                id,
                off: bump(off, c)?,
                var,
            },
            (Reg::Pkt { meta, var, off, .. }, None) if op == ADD => {
                let v = var.saturating_add(max);
                if v > MAX_PACKET_OFF {
                    return Err(err(
                        pc,
                        format!(
                            "variable packet offset may reach {v}, more than {MAX_PACKET_OFF}: bound it first (e.g. & 0xff)"
                        ),
                    ));
                }
                Reg::Pkt {
                    meta,
                    id: self.fresh_id(),
                    off,
                    var: v,
                }
            }
            (Reg::Ctx { .. }, None) => {
                return Err(err(pc, "variable offset into the context"));
            }
            (Reg::PktEnd, _) => return Err(err(pc, "arithmetic on data_end is not allowed")),
            // The kernel takes a known 0 added to a map pointer.
            (Reg::MapPtr { map }, Some(0)) if op == ADD => Reg::MapPtr { map },
            (Reg::MapPtr { .. } | Reg::ValueOrNull { .. }, _) => {
                return Err(err(
                    pc,
                    "arithmetic on a map pointer, or on a map value before its NULL check",
                ));
            }
            _ => return Err(err(pc, "pointer arithmetic is not allowed here")),
        })
    }

    /// The states on the taken and the fall-through side (None when that
    /// side cannot happen).
    fn branch(
        &mut self,
        pc: usize,
        st: &State,
        i: &Insn,
    ) -> Result<(Option<State>, Option<State>), VerifyError> {
        let op = i.op & 0xf0;
        let is64 = i.class() == JMP;
        let a = self.read(pc, st, i.dst)?;
        let b = if i.op & X == X {
            self.read(pc, st, i.src)?
        } else {
            konst(i.imm as i64 as u64)
        };
        let (mut t, mut f) = (st.clone(), st.clone());
        match (a, b) {
            (
                x @ Reg::Scalar { min, max, .. },
                Reg::Scalar {
                    min: k0, max: k1, ..
                },
            ) if k0 == k1 && (min != max || is64) => {
                return Ok(narrowed(t, f, i.dst, refine_reg(op, is64, x, k0)));
            }
            (
                Reg::Scalar {
                    min: k0, max: k1, ..
                },
                x @ Reg::Scalar { min, max, .. },
            ) if k0 == k1 && min != max => {
                // k OP x is x OP' k.
                return Ok(narrowed(t, f, i.src, refine_reg(mirror(op), is64, x, k0)));
            }
            (
                Reg::Scalar {
                    min: a0, max: a1, ..
                },
                Reg::Scalar {
                    min: b0, max: b1, ..
                },
            ) if a0 == a1 && b0 == b1 => {
                // Both known (JMP32 or reg-reg): one side only.
                let (x, y) = if is64 {
                    (a0, b0)
                } else {
                    (a0 as u32 as u64, b0 as u32 as u64)
                };
                let taken = eval_jump(op, x, y, is64);
                return Ok(if taken {
                    (Some(t), None)
                } else {
                    (None, Some(f))
                });
            }
            (a, b) if is64 && pkt_bound(a, b).is_some() => {
                // p OP data_end (or data OP meta pointer), either way round:
                // the side on which p stays below its bound proves it.
                // Where that side says p < bound (not <=), one more byte
                // is proven, as the kernel's find_good_pkt_pointers counts
                // a right-open range (never from off 0, as there).
                let (meta, id, off, ptr_left) = pkt_bound(a, b).expect("matched");
                let (below, strict) = match (op, ptr_left) {
                    (JGT, true) => (&mut f, false),
                    (JGE, true) => (&mut f, true),
                    (JGT, false) => (&mut t, true),
                    (JGE, false) => (&mut t, false),
                    (JLT, true) => (&mut t, true),
                    (JLE, true) => (&mut t, false),
                    (JLT, false) => (&mut f, false),
                    (JLE, false) => (&mut f, true),
                    _ => return Ok((Some(t), Some(f))),
                };
                if !(strict && off == 0) {
                    below.prove(meta, id, off + i64::from(strict));
                }
            }
            (Reg::ValueOrNull { map, id }, Reg::Scalar { min: 0, max: 0, .. })
                if is64 && (op == JEQ || op == JNE) =>
            {
                let (null, nonnull) = if op == JEQ {
                    (&mut t, &mut f)
                } else {
                    (&mut f, &mut t)
                };
                resolve_null(null, id, None);
                resolve_null(nonnull, id, Some(map));
            }
            // A map value pointer (NULL-checked) against 0, either way
            // round: one side only. The kernel's is_branch_taken predicts
            // this for the pointers its reg_not_null names, of which a map
            // value is the one an XDP program has (not the context, the
            // stack or the packet: it explores both sides of those).
            (Reg::Value { .. }, Reg::Scalar { min: 0, max: 0, .. })
            | (Reg::Scalar { min: 0, max: 0, .. }, Reg::Value { .. })
                if is64 && (op == JEQ || op == JNE) =>
            {
                return Ok(if op == JNE {
                    (Some(t), None)
                } else {
                    (None, Some(f))
                });
            }
            _ => {}
        }
        Ok((Some(t), Some(f)))
    }

    fn check_stack_arg(
        &mut self,
        pc: usize,
        st: &State,
        r: u8,
        len: u32,
        what: &str,
    ) -> Result<(), VerifyError> {
        match st.regs[r as usize] {
            Reg::Stack { off, var } => {
                let lo = stack_span(pc, st, off, r, len + var as u32, what)?;
                read_stack(
                    pc,
                    st,
                    lo,
                    len as usize + var as usize,
                    &mut self.reads_unwritten,
                )
                .map_err(|e| err(pc, format!("{what} (r{r}): {}", e.why)))
            }
            Reg::Value { map, off, var } => {
                if self.maps[map as usize].writeonly {
                    return Err(err(
                        pc,
                        format!("{what} (r{r}) reads a write-only map value (BPF_F_WRONLY_PROG)"),
                    ));
                }
                let vs = self.maps[map as usize].value_size as i64;
                if off < 0 || off + var as i64 + len as i64 > vs {
                    return Err(err(
                        pc,
                        format!("{what} (r{r}) of {len} bytes is outside the map value"),
                    ));
                }
                Ok(())
            }
            Reg::Pkt { meta, id, off, .. } => {
                // Packet bytes as the kernel's check_helper_mem_access
                // takes them: inside the range proven for this pointer.
                let proven = st.range_of(meta, id);
                if off < 0 || off + len as i64 > proven {
                    return Err(err(
                        pc,
                        format!(
                            "{what} (r{r}) of {len} bytes at packet offset {off}: only {proven} bytes are checked against {}",
                            if meta { "data" } else { "data_end" }
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err(err(
                pc,
                format!(
                    "{what} (r{r}) must point to the stack, a map value or checked packet bytes"
                ),
            )),
        }
    }

    /// bpf_csum_diff's pointers and sizes: each size a constant (at most
    /// CSUM_DIFF_MAX), each pointer NULL with size 0 or stack, map value
    /// or checked packet bytes of that size.
    fn csum_diff_args(&mut self, pc: usize, st: &State) -> Result<(), VerifyError> {
        for (p, n, what) in [(1u8, 2u8, "from"), (3, 4, "to")] {
            let max = super::interp::CSUM_DIFF_MAX as u64;
            let size = const_size(
                pc,
                st,
                n,
                0..=max,
                &format!("bpf_csum_diff: the {what} size"),
            )?;
            match st.regs[p as usize] {
                Reg::Scalar { min: 0, max: 0, .. } if size == 0 => {}
                _ => self.check_stack_arg(pc, st, p, size as u32, what)?,
            }
        }
        Ok(())
    }

    fn map_arg(&self, pc: usize, st: &State, helper: i32) -> Result<u32, VerifyError> {
        match st.regs[1] {
            Reg::MapPtr { map } => Ok(map),
            _ => Err(err(
                pc,
                format!("{} needs a map in r1", helper::name(helper)),
            )),
        }
    }

    /// bpf_map_lookup/update/delete_elem: the map (not the cpumap, not a
    /// prog_array), the key and value on the stack or in a map value.
    fn map_helper(&mut self, pc: usize, st: &State, id: i32) -> Result<Reg, VerifyError> {
        let map = self.map_arg(pc, st, id)?;
        let shape = self.maps[map as usize];
        let refuse = |why: &str| err(pc, format!("{} on a {why}", helper::name(id)));
        match shape.kind {
            MapKind::CpuMap => {
                return Err(refuse(
                    "cpumap is not supported from a program (use bpf_redirect_map)",
                ));
            }
            MapKind::ProgArray => {
                return Err(refuse(
                    "prog_array: programs only tail-call through it (the kernel refuses this map type for that helper)",
                ));
            }
            MapKind::Queue | MapKind::Stack => {
                return Err(refuse(&format!(
                    "{}: it has no keys (use bpf_map_push_elem, bpf_map_pop_elem, bpf_map_peek_elem)",
                    shape.kind.name()
                )));
            }
            _ => {}
        }
        self.check_stack_arg(pc, st, 2, shape.key_size, "key")?;
        Ok(match id {
            helper::MAP_LOOKUP_ELEM => {
                let seen = self.lookup_maps.entry(pc).or_insert(Some(map));
                if *seen != Some(map) {
                    *seen = None;
                }
                Reg::ValueOrNull {
                    map,
                    id: self.fresh_id(),
                }
            }
            helper::MAP_UPDATE_ELEM => {
                self.check_stack_arg(pc, st, 3, shape.value_size, "value")?;
                match st.regs[4] {
                    Reg::Scalar { .. } => UNKNOWN,
                    _ => {
                        return Err(err(
                            pc,
                            "bpf_map_update_elem: the flags (r4) must be a number",
                        ));
                    }
                }
            }
            _ => UNKNOWN,
        })
    }

    /// bpf_map_push_elem / pop / peek: a QUEUE or STACK map in r1; push
    /// reads the value at r2 (written stack bytes or a map value) and takes
    /// flags in r3; pop and peek write the value to r2 (stack bytes, written
    /// or not, or a writable map value), as the kernel's MEM_UNINIT.
    fn queue_helper(&mut self, pc: usize, st: &mut State, id: i32) -> Result<Reg, VerifyError> {
        let map = self.map_arg(pc, st, id)?;
        let shape = self.maps[map as usize];
        let name = helper::name(id);
        if !shape.kind.is_queue_or_stack() {
            return Err(err(
                pc,
                format!(
                    "{name} on a {}: it takes a queue or a stack",
                    shape.kind.name()
                ),
            ));
        }
        if id == helper::MAP_PUSH_ELEM {
            self.check_stack_arg(pc, st, 2, shape.value_size, &format!("{name}: the value"))?;
            if !matches!(st.regs[3], Reg::Scalar { .. }) {
                return Err(err(pc, format!("{name}: the flags (r3) must be a number")));
            }
        } else {
            self.out_arg(pc, st, 2, shape.value_size, &format!("{name}: the value"))?;
        }
        Ok(UNKNOWN)
    }

    /// A helper's output: `len` bytes at r`r` on the stack (their slots
    /// become plain written bytes: a pointer spilled there is gone) or in a
    /// writable map value.
    fn out_arg(
        &mut self,
        pc: usize,
        st: &mut State,
        r: u8,
        len: u32,
        what: &str,
    ) -> Result<(), VerifyError> {
        match st.regs[r as usize] {
            Reg::Stack { var: 1.., .. } => Err(err(
                pc,
                format!(
                    "{what} (r{r}) is at a variable offset into the stack: a helper writes at a known one"
                ),
            )),
            Reg::Stack { off, .. } => {
                let lo = stack_span(pc, st, off, r, len, what)?;
                for s in lo / 8..(lo + len as usize).div_ceil(8) {
                    st.slots[s] = MISC;
                }
                st.mark_written(lo, len as usize);
                Ok(())
            }
            Reg::Value { map, .. } if self.maps[map as usize].readonly => {
                Err(err(pc, format!("{what} (r{r}) points into .rodata")))
            }
            _ => self.check_stack_arg(pc, st, r, len, what),
        }
    }

    /// bpf_trace_printk: the format in stack or map value bytes (a .rodata
    /// string) of a constant size; the three values are not checked (the
    /// kernel declares two arguments).
    fn trace_printk_args(&mut self, pc: usize, st: &State) -> Result<Reg, VerifyError> {
        let max = super::printk::FMT_MAX as u64;
        let size = const_size(pc, st, 2, 1..=max, "bpf_trace_printk: the format size")?;
        self.check_stack_arg(pc, st, 1, size as u32, "the format")?;
        Ok(UNKNOWN)
    }

    /// The XDP metadata kfuncs: the context in r1, then pointers to what
    /// they write (the stack or a writable map value, its bytes set
    /// before: a kfunc that fails writes nothing): rx_hash a u32 hash and a
    /// u32 rss_type, rx_vlan_tag a __be16 protocol and a u16 tci,
    /// rx_timestamp a u64.
    fn metadata_kfunc_args(
        &mut self,
        pc: usize,
        st: &mut State,
        id: i32,
    ) -> Result<Reg, VerifyError> {
        let name = helper::name(id);
        if !matches!(st.regs[1], Reg::Ctx { off: 0 }) {
            return Err(err(pc, format!("{name} needs the context in r1")));
        }
        let outs: &[(u8, u32, &str)] = match id {
            helper::XDP_RX_HASH => &[(2, 4, "the hash"), (3, 4, "the rss_type")],
            helper::XDP_RX_VLAN_TAG => &[(2, 2, "the vlan_proto"), (3, 2, "the vlan_tci")],
            _ => &[(2, 8, "the timestamp")],
        };
        for &(r, len, what) in outs {
            let what = format!("{name}: {what}");
            self.check_stack_arg(pc, st, r, len, &what)?;
            self.out_arg(pc, st, r, len, &what)?;
        }
        Ok(UNKNOWN)
    }

    /// bpf_tail_call: the context in r1, a prog_array in r2.
    fn tail_call_args(&self, pc: usize, st: &State) -> Result<(), VerifyError> {
        if !matches!(st.regs[1], Reg::Ctx { off: 0 }) {
            return Err(err(pc, "bpf_tail_call needs the context in r1"));
        }
        match st.regs[2] {
            Reg::MapPtr { map } if self.maps[map as usize].kind == MapKind::ProgArray => Ok(()),
            _ => Err(err(pc, "bpf_tail_call needs a prog_array in r2")),
        }
    }

    fn call(&mut self, pc: usize, st: &mut State, id: i32) -> Result<(), VerifyError> {
        let scalar = |st: &State, r: usize| -> Result<(), VerifyError> {
            match st.regs[r] {
                Reg::Scalar { .. } => Ok(()),
                Reg::Uninit => Err(err(
                    pc,
                    format!("{}: argument r{r} is not set", helper::name(id)),
                )),
                _ => Err(err(
                    pc,
                    format!("{}: argument r{r} must be a number", helper::name(id)),
                )),
            }
        };
        let ret = match id {
            helper::MAP_LOOKUP_ELEM | helper::MAP_UPDATE_ELEM | helper::MAP_DELETE_ELEM => {
                self.map_helper(pc, st, id)?
            }
            helper::KTIME_GET_NS | helper::KTIME_GET_BOOT_NS | helper::GET_SMP_PROCESSOR_ID => {
                UNKNOWN
            }
            helper::GET_PRANDOM_U32 => range(0, u32::MAX as u64),
            helper::REDIRECT_MAP => {
                let map = self.map_arg(pc, st, id)?;
                if !matches!(
                    self.maps[map as usize].kind,
                    MapKind::CpuMap | MapKind::DevMap | MapKind::DevMapHash
                ) {
                    return Err(err(
                        pc,
                        format!(
                            "bpf_redirect_map into a {}: cpumapd redirects into a cpumap, a devmap or a devmap_hash (xskmap is not supported)",
                            self.maps[map as usize].kind.name()
                        ),
                    ));
                }
                scalar(st, 2)?;
                scalar(st, 3)?;
                range(0, u32::MAX as u64)
            }
            helper::TRACE_PRINTK => self.trace_printk_args(pc, st)?,
            helper::TAIL_CALL => {
                self.tail_call_args(pc, st)?;
                scalar(st, 3)?;
                // Reached only when the call fails (no program there, or
                // the chain is 33 calls long): r0 is unspecified.
                UNKNOWN
            }
            helper::REDIRECT => {
                scalar(st, 1)?;
                scalar(st, 2)?;
                range(0, u32::MAX as u64)
            }
            helper::CSUM_DIFF => {
                self.csum_diff_args(pc, st)?;
                scalar(st, 5)?;
                // A 16-bit sum, or -EINVAL for sizes not in whole words.
                UNKNOWN
            }
            helper::XDP_RX_HASH | helper::XDP_RX_VLAN_TAG | helper::XDP_RX_TIMESTAMP => {
                self.metadata_kfunc_args(pc, st, id)?
            }
            helper::MAP_PUSH_ELEM | helper::MAP_POP_ELEM | helper::MAP_PEEK_ELEM => {
                self.queue_helper(pc, st, id)?
            }
            helper::XDP_ADJUST_HEAD | helper::XDP_ADJUST_META | helper::XDP_ADJUST_TAIL => {
                if !matches!(st.regs[1], Reg::Ctx { off: 0 }) {
                    return Err(err(
                        pc,
                        format!("{} needs the context in r1", helper::name(id)),
                    ));
                }
                scalar(st, 2)?;
                st.invalidate_packet();
                UNKNOWN
            }
            other => {
                return Err(err(
                    pc,
                    format!(
                        "unknown or unsupported helper {other} ({})",
                        helper::name(other)
                    ),
                ));
            }
        };
        for r in 1..=5 {
            st.regs[r] = Reg::Uninit;
        }
        st.regs[0] = ret;
        Ok(())
    }
}

/// After `if (v == NULL)`: every copy of map value `id` becomes 0 or a value.
/// A comparison of a packet pointer with its bound: `data_end` for a data
/// pointer, `data` (unmoved) for a metadata pointer. Returns (meta, id,
/// off, pointer on the left).
fn pkt_bound(a: Reg, b: Reg) -> Option<(bool, u32, i64, bool)> {
    const DATA: Reg = Reg::Pkt {
        meta: false,
        id: 0,
        off: 0,
        var: 0,
    };
    match (a, b) {
        (
            Reg::Pkt {
                meta: false,
                id,
                off,
                ..
            },
            Reg::PktEnd,
        ) => Some((false, id, off, true)),
        (
            Reg::PktEnd,
            Reg::Pkt {
                meta: false,
                id,
                off,
                ..
            },
        ) => Some((false, id, off, false)),
        (
            Reg::Pkt {
                meta: true,
                id,
                off,
                ..
            },
            DATA,
        ) => Some((true, id, off, true)),
        (
            DATA,
            Reg::Pkt {
                meta: true,
                id,
                off,
                ..
            },
        ) => Some((true, id, off, false)),
        _ => None,
    }
    // As the kernel (find_good_pkt_pointers): a pointer past MAX_PACKET_OFF
    // proves no range.
    .filter(|&(_, _, off, _)| (0..=MAX_PACKET_OFF as i64).contains(&off))
}

/// A number's low `bits` sign-extended (ISA v4 `movsx`, `ldsx`), cut to
/// `lim` (the 32-bit movsx zero-extends its 32-bit result): exact for a
/// constant, the same range when the sign bit cannot be set, else unknown.
fn sign_extended(v: Reg, bits: u32, lim: u64) -> Reg {
    match v {
        Reg::Scalar { min, max, .. } if min == max => konst(sign_extend(min, bits) & lim),
        Reg::Scalar { min, max, .. } if max < 1 << (bits - 1) => range(min, max),
        // All negative in `bits`: sign extension keeps their order.
        Reg::Scalar { min, max, .. } if min >= 1 << (bits - 1) && max >> bits == 0 => {
            range(sign_extend(min, bits) & lim, sign_extend(max, bits) & lim)
        }
        _ => range(0, lim),
    }
}

/// `code` with ISA v4's `gotol` (JMP32 | JA, the offset in imm) as `ja`
/// (the offset in off): every later stage (function flattening, this
/// verifier, the interpreter, the JIT) knows one unconditional jump. A
/// gotol whose offset does not fit 16 bits (programs over 32K
/// instructions) is refused.
pub fn gotol_as_ja(code: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, VerifyError> {
    let n = code.len() / INSN_SIZE;
    if !(0..n).any(|pc| is_gotol(&Insn::at(code, pc))) {
        return Ok(std::borrow::Cow::Borrowed(code));
    }
    let mut out = code.to_vec();
    for pc in 0..n {
        let i = Insn::at(code, pc);
        if !is_gotol(&i) {
            continue;
        }
        if i.dst != 0 || i.src != 0 || i.off != 0 {
            return Err(err(
                pc,
                "gotol uses reserved fields (dst, src and off must be 0)",
            ));
        }
        let off = i16::try_from(i.imm).map_err(|_| {
            err(
                pc,
                format!(
                    "gotol of {} instructions: cpumapd takes jumps of at most 32767",
                    i.imm
                ),
            )
        })?;
        let ja = Insn::new(JMP | JA, 0, 0, off, 0);
        out[pc * INSN_SIZE..(pc + 1) * INSN_SIZE].copy_from_slice(&ja.encode());
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Is `r` a pointer (of any kind) rather than a number?
fn is_pointer(r: Reg) -> bool {
    !matches!(r, Reg::Scalar { .. } | Reg::Uninit | Reg::Stale)
}

/// What a load of `size` bytes may hold.
fn loaded_range(size: usize) -> Reg {
    range(
        0,
        if size == 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        },
    )
}

/// Where `len` bytes at stack offset `off` (a helper argument in r`r`)
/// start in the stack's byte map, or an error if they leave the stack.
fn stack_span(
    pc: usize,
    st: &State,
    off: i64,
    r: u8,
    len: u32,
    what: &str,
) -> Result<usize, VerifyError> {
    let lo = off + st.stack_size() as i64;
    if off + len as i64 > 0 || lo < 0 {
        return Err(err(
            pc,
            format!("{what} (r{r}) of {len} bytes is outside the stack"),
        ));
    }
    Ok(lo as usize)
}

/// A load or store of `size` bytes at stack offset `at + [0, var]`: every
/// byte it may touch in bounds; a load reads only written bytes (a number:
/// spilled pointers' bytes included, as the kernel lets a privileged
/// program); a store is of a number, turns the slots it may touch into
/// numbers, and marks nothing written (it may miss any one byte).
fn stack_access_var(
    pc: usize,
    st: &mut State,
    at: i64,
    var: u64,
    size: usize,
    store: Option<Reg>,
    unwritten: &mut [u64],
) -> Result<Reg, VerifyError> {
    let stack = st.stack_size() as i64;
    let span = var as i64 + size as i64;
    if at < -stack || at + span > 0 {
        return Err(err(
            pc,
            format!(
                "stack access out of bounds: offset {at}..={} size {size} (the stack is {stack} bytes below r10)",
                at + var as i64
            ),
        ));
    }
    let lo = (at + stack) as usize;
    match store {
        None => {
            read_stack(pc, st, lo, span as usize, unwritten)?;
            Ok(loaded_range(size))
        }
        Some(Reg::Scalar { .. }) => {
            for s in lo / 8..(lo + span as usize).div_ceil(8) {
                st.slots[s] = MISC;
            }
            Ok(UNKNOWN)
        }
        Some(_) => Err(err(
            pc,
            "a pointer may not be stored at a variable stack offset",
        )),
    }
}

/// A load or store of `size` bytes at stack offset `at` (below r10): in
/// bounds, reads only of written bytes, pointers spilled and filled only
/// whole and aligned.
fn stack_access(
    pc: usize,
    st: &mut State,
    at: i64,
    size: usize,
    store: Option<Reg>,
    unwritten: &mut [u64],
) -> Result<Reg, VerifyError> {
    let stack = st.stack_size() as i64;
    if at < -stack || at + size as i64 > 0 {
        return Err(err(
            pc,
            format!(
                "stack access out of bounds: offset {at} size {size} (the stack is {stack} bytes below r10)"
            ),
        ));
    }
    let lo = (at + stack) as usize;
    let slot = lo / 8;
    let start = lo.is_multiple_of(8);
    let Some(v) = store else {
        if !st.stack_written(lo, size) {
            read_stack(pc, st, lo, size, unwritten)?;
            return Ok(loaded_range(size));
        }
        let within = (lo % 8) + size <= 8;
        return match st.slots[slot] {
            Slot::Spill(p) if start && size == 8 => Ok(p),
            Slot::Spill(p) if !matches!(p, Reg::Scalar { .. }) => {
                Err(err(pc, "partial read of a spilled pointer"))
            }
            s => Ok(within
                .then(|| fill(s, lo % 8, size))
                .flatten()
                .unwrap_or_else(|| {
                    if known_zero(st, lo, size) {
                        konst(0)
                    } else {
                        loaded_range(size)
                    }
                })),
        };
    };
    match v {
        // Spilled numbers keep their range and link id.
        _ if start && size == 8 => st.slots[slot] = Slot::Spill(v),
        Reg::Scalar { max, .. } if start => {
            let reg = if fits(max, size) { v } else { unlinked(v) };
            st.slots[slot] = Slot::Narrow {
                size: size as u8,
                reg,
            };
        }
        Reg::Scalar { min, max, .. } => {
            // Part of a slot: bytes of no type, 0 if the number is.
            let zero = min == 0 && max == 0;
            for b in lo..lo + size {
                let s = &mut st.slots[b / 8];
                let mut z = s.zero_bytes();
                if zero {
                    z |= 1 << (b % 8);
                } else {
                    z &= !(1 << (b % 8));
                }
                *s = Slot::Misc { zero: z };
            }
        }
        _ => {
            return Err(err(
                pc,
                "a pointer may only be spilled with an aligned 8-byte store",
            ));
        }
    }
    st.mark_written(lo, size);
    Ok(UNKNOWN)
}

/// Whether a number of at most `max` fits `size` bytes.
fn fits(max: u64, size: usize) -> bool {
    size >= 8 || max >> (8 * size) == 0
}

/// `v` without its link id.
fn unlinked(v: Reg) -> Reg {
    match v {
        Reg::Scalar {
            min,
            max,
            lo32,
            hi32,
            ..
        } => Reg::Scalar {
            min,
            max,
            lo32,
            hi32,
            id: 0,
        },
        other => other,
    }
}

/// A load of `size` bytes at byte `at` of a slot holding a spilled number
/// (whole or narrow), within the slot: a constant's bytes; from the
/// slot's start, at most as wide as the store, the number truncated to
/// `size` bytes (still linked if it fits them), as the kernel fills a
/// narrow spill. None where the spill says nothing more than the slot's
/// known zero bytes do.
fn fill(slot: Slot, at: usize, size: usize) -> Option<Reg> {
    let (stored, x) = match slot {
        Slot::Spill(x) => (8, x),
        Slot::Narrow { size, reg } => (size as usize, reg),
        Slot::Misc { .. } => return None,
    };
    let Reg::Scalar {
        min,
        max,
        lo32,
        hi32,
        ..
    } = x
    else {
        return None;
    };
    if min == max && at + size <= stored {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&min.to_le_bytes()[at..at + size]);
        return Some(konst(u64::from_le_bytes(b)));
    }
    match (at == 0 && size <= stored, fits(max, size), size) {
        (true, true, _) => Some(x),
        (true, false, 4) => Some(range(lo32 as u64, hi32 as u64)),
        _ => None,
    }
}

/// Whether stack bytes `lo..lo + n` are all known to be 0.
fn known_zero(st: &State, lo: usize, n: usize) -> bool {
    (lo..lo + n).all(|b| st.slots[b / 8].zero_bytes() & 1 << (b % 8) != 0)
}

/// A read of stack bytes `lo..lo + n`: those not written on this path are
/// noted in `unwritten` (the loader zeroes them at entry; see
/// [`Verified::reads_unwritten`]). A slot holding a register an inlined
/// call saved before the caller wrote it stays unreadable: its bytes are
/// whatever the register held, not zeroed stack.
fn read_stack(
    pc: usize,
    st: &State,
    lo: usize,
    n: usize,
    unwritten: &mut [u64],
) -> Result<(), VerifyError> {
    if st.slots[lo / 8..(lo + n).div_ceil(8)].contains(&Slot::Spill(Reg::Uninit)) {
        return Err(err(
            pc,
            "read of a stack slot that holds a register never written",
        ));
    }
    for b in lo..lo + n {
        if !byte_bit(&st.init, b) {
            set_byte_bits(unwritten, b, 1, true);
        }
    }
    Ok(())
}

/// Bit `b` of a bitmap of stack bytes (bit i: byte r10 - stack size + i).
pub fn byte_bit(bits: &[u64], b: usize) -> bool {
    bits[b / 64] & (1 << (b % 64)) != 0
}

/// Sets (`on`) or clears bits `lo..lo + n` of a bitmap of stack bytes.
fn set_byte_bits(bits: &mut [u64], lo: usize, n: usize, on: bool) {
    for b in lo..lo + n {
        if on {
            bits[b / 64] |= 1 << (b % 64);
        } else {
            bits[b / 64] &= !(1 << (b % 64));
        }
    }
}

/// A helper's size argument in register `r`: a constant in `ok` (the
/// helpers whose memory arguments cpumapd bounds by a constant size).
fn const_size(
    pc: usize,
    st: &State,
    r: u8,
    ok: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<u64, VerifyError> {
    match st.regs[r as usize] {
        Reg::Scalar { min, max, .. } if min == max && ok.contains(&min) => Ok(min),
        _ => Err(err(
            pc,
            format!(
                "{what} (r{r}) must be a constant from {} to {}",
                ok.start(),
                ok.end()
            ),
        )),
    }
}

fn resolve_null(st: &mut State, id: u32, map: Option<u32>) {
    let fix = |r: &mut Reg| {
        if let Reg::ValueOrNull { id: x, .. } = *r
            && x == id
        {
            *r = match map {
                Some(map) => Reg::Value {
                    map,
                    off: 0,
                    var: 0,
                },
                None => konst(0),
            };
        }
    };
    st.regs.iter_mut().for_each(fix);
    for s in st.slots.iter_mut() {
        if let Slot::Spill(r) = s {
            fix(r);
        }
    }
}

/// An ALU operation on two numbers: the result's range, and its low
/// half's where that is known apart.
fn scalar_op(i: &Insn, is64: bool, a: Reg, b: Reg) -> Reg {
    let (
        Reg::Scalar {
            min: a0,
            max: a1,
            lo32: al,
            hi32: ah,
            ..
        },
        Reg::Scalar {
            min: b0,
            max: b1,
            lo32: bl,
            hi32: bh,
            ..
        },
    ) = (a, b)
    else {
        unreachable!("numbers only");
    };
    // A 32-bit operation reads the low halves only (a byte swap in the
    // ALU class may swap all 64 bits: be64).
    if i.op & 0xf0 == END {
        scalar_alu(i, is64, (a0, a1), (b0, b1))
    } else if is64 {
        let r = scalar_alu(i, is64, (a0, a1), (b0, b1));
        match (r, low_half(i, (al, ah), (bl, bh))) {
            (Reg::Scalar { min, max, .. }, Some((l, h))) => scalar(min, max, l, h).unwrap_or(r),
            _ => r,
        }
    } else {
        scalar_alu(i, is64, (al as u64, ah as u64), (bl as u64, bh as u64))
    }
}

fn scalar_alu(i: &Insn, is64: bool, a: (u64, u64), b: (u64, u64)) -> Reg {
    let (insn_op, imm) = (i.op, i.imm);
    let op = insn_op & 0xf0;
    if op == END {
        return if a.0 == a.1 {
            konst(byte_swap(a.0, imm, insn_op))
        } else {
            range(0, if imm >= 64 { u64::MAX } else { (1 << imm) - 1 })
        };
    }
    let lim = if is64 { u64::MAX } else { u32::MAX as u64 };
    // A shift count that may reach the width: the kernel calls the result
    // unknown (x86 masks the count, other JITs need not).
    let bits = if is64 { 64 } else { 32 };
    if matches!(op, LSH | RSH | ARSH) && b.1 >= bits {
        return range(0, lim);
    }
    if (op == DIV || op == MOD) && i.off == SIGNED_DIV {
        return if a.0 == a.1 && b.0 == b.1 {
            konst(alu_signed(op, is64, a.0, b.0))
        } else {
            range(0, lim)
        };
    }
    if a.0 == a.1 && b.0 == b.1 {
        return konst(alu_exact(op, is64, a.0, b.0));
    }
    let (a0, a1, b0, b1) = (a.0, a.1, b.0, b.1);
    let r = match op {
        ADD => a1
            .checked_add(b1)
            .filter(|&m| m <= lim)
            .map(|m| (a0 + b0, m)),
        SUB if a0 >= b1 => Some((a0 - b1, a1 - b0)),
        MUL => a1
            .checked_mul(b1)
            .filter(|&m| m <= lim)
            .map(|m| (a0 * b0, m)),
        AND => Some((0, a1.min(b1))),
        // Every bit of either is set: no less than either, no more than
        // all bits up to the highest either may set, nor than their sum
        // (an OR carries nothing).
        OR => Some((a0.max(b0), or_max(a1, b1))),
        XOR => Some((0, smear(a1 | b1))),
        RSH if b0 == b1 && b0 < if is64 { 64 } else { 32 } => Some((a0 >> b0, a1 >> b0)),
        LSH if b0 == b1 && b0 < 64 => a1
            .checked_shl(b0 as u32)
            .filter(|&m| m >> b0 == a1 && m <= lim)
            .map(|m| (a0 << b0, m)),
        DIV if b0 == b1 && b0 > 0 => Some((a0 / b0, a1 / b0)),
        MOD if b0 == b1 && b0 > 0 => Some((0, (b0 - 1).min(a1))),
        _ => None,
    };
    match r {
        Some((lo, hi)) if lo <= hi => range(lo, hi),
        _ => range(0, lim),
    }
}

/// All bits up to the highest set in `x`.
fn smear(x: u64) -> u64 {
    if x == 0 {
        0
    } else {
        u64::MAX >> x.leading_zeros()
    }
}

/// The most `x | y` can be for x <= `a`, y <= `b`: x | y <= x + y, and no
/// bit above the highest either may set.
fn or_max(a: u64, b: u64) -> u64 {
    smear(a | b).min(a.saturating_add(b))
}

/// The low half's range after a 64-bit operation on numbers whose low
/// halves are in `a` and `b`, where the low halves alone decide it (no
/// carry or borrow can cross from the upper half): None where they do
/// not.
fn low_half(i: &Insn, a: (u32, u32), b: (u32, u32)) -> Option<(u32, u32)> {
    let (a0, a1, b0, b1) = (a.0 as u64, a.1 as u64, b.0 as u64, b.1 as u64);
    const LOW: u64 = u32::MAX as u64;
    let r = match i.op & 0xf0 {
        ADD if a1 + b1 <= LOW => (a0 + b0, a1 + b1),
        SUB if a0 >= b1 => (a0 - b1, a1 - b0),
        AND if a0 == a1 && b0 == b1 => (a0 & b0, a0 & b0),
        AND => (0, a1.min(b1)),
        OR if a0 == a1 && b0 == b1 => (a0 | b0, a0 | b0),
        OR => (a0.max(b0), or_max(a1, b1)),
        // x << k for k >= 32 has no low half left; below, the low half
        // shifts as long as nothing leaves it.
        LSH if b0 == b1 && (32..64).contains(&b0) => (0, 0),
        LSH if b0 == b1 && b0 < 32 && (a1 << b0) <= LOW => (a0 << b0, a1 << b0),
        _ => return None,
    };
    Some((r.0 as u32, r.1 as u32))
}

/// The taken and fall-through states with register `r` narrowed to what
/// each side proved (None: that side cannot happen).
fn narrowed(
    mut t: State,
    mut f: State,
    r: u8,
    (tr, fr): (Option<Reg>, Option<Reg>),
) -> (Option<State>, Option<State>) {
    let taken = tr.map(|v| {
        t.narrow(r as usize, v);
        t
    });
    let fall = fr.map(|v| {
        f.narrow(r as usize, v);
        f
    });
    (taken, fall)
}

/// The number `x` on the taken and the fall-through side of `x OP k`
/// (None: that side cannot happen): a 64-bit jump refines its range, a
/// JMP32 one the range of its low half; each then narrows the other.
fn refine_reg(op: u8, is64: bool, x: Reg, k: u64) -> (Option<Reg>, Option<Reg>) {
    let Reg::Scalar {
        min,
        max,
        lo32,
        hi32,
        ..
    } = x
    else {
        return (Some(x), Some(x));
    };
    let (t, f) = if is64 {
        refine_cmp(op, true, min, max, k)
    } else {
        refine_cmp(op, false, lo32 as u64, hi32 as u64, k)
    };
    let side = |r: Option<(u64, u64)>| {
        r.and_then(|(a, b)| {
            if is64 {
                scalar(a, b, lo32, hi32)
            } else {
                scalar(min, max, a as u32, b as u32)
            }
        })
    };
    (side(t), side(f))
}

/// A number's range on the taken and the fall-through side of a jump
/// (None: that side cannot happen).
type Sides = (Option<(u64, u64)>, Option<(u64, u64)>);

/// The comparison `k OP x` written as `x OP' k`.
fn mirror(op: u8) -> u8 {
    match op {
        JGT => JLT,
        JGE => JLE,
        JLT => JGT,
        JLE => JGE,
        JSGT => JSLT,
        JSGE => JSLE,
        JSLT => JSGT,
        JSLE => JSGE,
        other => other, // JEQ, JNE, JSET are symmetric
    }
}

/// Ranges of `x in [lo, hi]` (unsigned) on the taken and fall-through
/// sides of `x OP k`, for 64-bit jumps and for JMP32 ones on a number
/// that fits 32 bits (its low half is then all of it; otherwise nothing
/// is refined). Signed comparisons flip the sign bit, which turns signed
/// order into unsigned order, refine each half of the range that lies on
/// one side of the sign boundary, and keep the hull of what is left.
fn refine_cmp(op: u8, is64: bool, lo: u64, hi: u64, k: u64) -> Sides {
    let (k, half) = if is64 {
        (k, 1u64 << 63)
    } else if hi <= u32::MAX as u64 {
        (k as u32 as u64, 1u64 << 31)
    } else {
        return (Some((lo, hi)), Some((lo, hi)));
    };
    let unsigned = match op {
        JSGT => JGT,
        JSGE => JGE,
        JSLT => JLT,
        JSLE => JLE,
        _ => return refine(op, lo, hi, k),
    };
    // The parts of [lo, hi] below and from the sign bit, each in flipped
    // (signed-as-unsigned) order, refined, flipped back.
    let parts = [(lo, hi.min(half - 1)), (lo.max(half), hi)];
    let hull = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
        (x, None) | (None, x) => x,
    };
    let (mut taken, mut fall) = (None, None);
    for (a, b) in parts.into_iter().filter(|(a, b)| a <= b) {
        let (t, f) = refine(unsigned, a ^ half, b ^ half, k ^ half);
        let back = |r: Option<(u64, u64)>| r.map(|(x, y)| (x ^ half, y ^ half));
        taken = hull(taken, back(t));
        fall = hull(fall, back(f));
    }
    (taken, fall)
}

/// Ranges of `x in [lo, hi]` on the taken and fall-through sides of
/// `x OP k` (unsigned; JSET is not refined).
fn refine(op: u8, lo: u64, hi: u64, k: u64) -> Sides {
    let ok = |a: u64, b: u64| (a <= b).then_some((a, b));
    match op {
        JEQ => (
            ok(lo.max(k), hi.min(k)),
            if lo == k && hi == k {
                None
            } else {
                Some((lo, hi))
            },
        ),
        JNE => (
            if lo == k && hi == k {
                None
            } else {
                Some((lo, hi))
            },
            ok(lo.max(k), hi.min(k)),
        ),
        JGT => (
            k.checked_add(1).and_then(|k1| ok(lo.max(k1), hi)),
            ok(lo, hi.min(k)),
        ),
        JGE => (
            ok(lo.max(k), hi),
            k.checked_sub(1).and_then(|k1| ok(lo, hi.min(k1))),
        ),
        JLT => (
            k.checked_sub(1).and_then(|k1| ok(lo, hi.min(k1))),
            ok(lo.max(k), hi),
        ),
        JLE => (
            ok(lo, hi.min(k)),
            k.checked_add(1).and_then(|k1| ok(lo.max(k1), hi)),
        ),
        _ => {
            if lo == hi {
                let t = eval_jump(op, lo, k, true);
                (t.then_some((lo, hi)), (!t).then_some((lo, hi)))
            } else {
                (Some((lo, hi)), Some((lo, hi)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values that make ranges cross the boundaries that matter: 0, the
    /// 32-bit sign bit and end, the 64-bit sign bit and end.
    fn edgy() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (0u64..64),
            (0x7fff_ffc0u64..0x8000_0040),
            (0xffff_ffc0u64..0x1_0000_0040),
            (0x7fff_ffff_ffff_ffc0u64..=0x8000_0000_0000_0040),
            (0xffff_ffff_ffff_ffc0u64..=u64::MAX),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Soundness of branch refinement: whichever way a value in the
        /// range makes the jump go, that side's range still holds it.
        #[test]
        fn a_refined_side_keeps_every_value_that_takes_it(
            a in edgy(), b in edgy(), x in edgy(), k in edgy(),
            op in prop::sample::select(vec![JEQ, JNE, JGT, JGE, JLT, JLE, JSET, JSGT, JSGE, JSLT, JSLE]),
            is64 in any::<bool>(),
        ) {
            let (mut lo, mut hi) = (a.min(b), a.max(b));
            if !is64 && lo > u32::MAX as u64 {
                lo &= u32::MAX as u64;
                hi = hi.max(lo);
            }
            let x = lo + x % (hi - lo).saturating_add(1).max(1);
            let x = x.min(hi);
            let (t, f) = refine_cmp(op, is64, lo, hi, k);
            let side = if eval_jump(op, x, k, is64) { t } else { f };
            let (s0, s1) = side.unwrap_or_else(|| panic!("x {x:#x} in [{lo:#x}, {hi:#x}] has no side for op {op:#x} k {k:#x} is64 {is64}"));
            prop_assert!(s0 <= x && x <= s1, "x {:#x} outside [{:#x}, {:#x}] (range [{:#x}, {:#x}], op {:#x}, k {:#x}, is64 {})", x, s0, s1, lo, hi, op, k, is64);
        }

        /// The same for a number with a 64-bit range and a range of its
        /// low half: after any jump, the side it takes still holds it in
        /// both.
        #[test]
        fn a_refined_number_keeps_its_value_in_both_ranges(
            x in edgy(), d in (edgy(), edgy(), any::<u32>(), any::<u32>()), k in edgy(),
            op in prop::sample::select(vec![JEQ, JNE, JGT, JGE, JLT, JLE, JSET, JSGT, JSGE, JSLT, JSLE]),
            is64 in any::<bool>(),
        ) {
            let (min, max) = (x.saturating_sub(d.0 % 5000), x.saturating_add(d.1 % (1 << 40)));
            let lo = (x as u32).saturating_sub(d.2 % 300);
            let hi = (x as u32).saturating_add(d.3 % 300);
            let r = scalar(min, max, lo, hi).expect("x is in both");
            let (t, f) = refine_reg(op, is64, r, k);
            let side = if eval_jump(op, x, k, is64) { t } else { f };
            let Some(Reg::Scalar { min, max, lo32, hi32, .. }) = side else {
                panic!("x {x:#x} in {r:?} has no side for op {op:#x} k {k:#x} is64 {is64}");
            };
            prop_assert!(min <= x && x <= max && lo32 <= x as u32 && x as u32 <= hi32,
                "x {:#x} outside {:?} (from {:?}, op {:#x}, k {:#x}, is64 {})", x, side, r, op, k, is64);
        }

        /// Soundness of arithmetic: for numbers in two ranges (64-bit and
        /// low half), the result of an operation on them is in the range
        /// the verifier gives it, both halves.
        #[test]
        fn an_operation_keeps_its_result_in_range(
            x in edgy(), dx in (edgy(), edgy(), any::<u32>(), any::<u32>()),
            y in edgy(), dy in (edgy(), edgy(), any::<u32>(), any::<u32>()),
            op in prop::sample::select(vec![ADD, SUB, MUL, AND, OR, XOR, LSH, RSH, DIV, MOD]),
            is64 in any::<bool>(), konst_y in any::<bool>(), small_y in any::<bool>(),
        ) {
            let around = |v: u64, d: (u64, u64, u32, u32)| {
                let (min, max) = (v.saturating_sub(d.0 % (1 << 36)), v.saturating_add(d.1 % (1 << 36)));
                let lo = (v as u32).saturating_sub(d.2 % 300);
                let hi = (v as u32).saturating_add(d.3 % 300);
                scalar(min, max, lo, hi).expect("v is in both")
            };
            let y = if small_y { y % 70 } else { y };
            let a = around(x, dx);
            let b = if konst_y { konst(y) } else { around(y, dy) };
            let i = Insn { op: if is64 { ALU64 } else { ALU } | op | X, dst: 1, src: 2, off: 0, imm: 0 };
            let want = alu_exact(op, is64, x, y);
            let Reg::Scalar { min, max, lo32, hi32, .. } = scalar_op(&i, is64, a, b) else {
                panic!("not a number");
            };
            prop_assert!(min <= want && want <= max && lo32 <= want as u32 && want as u32 <= hi32,
                "{:#x} op {:#x} {:#x} = {:#x} outside [{:#x}, {:#x}] low [{:#x}, {:#x}] (a {:?}, b {:?}, is64 {})",
                x, op, y, want, min, max, lo32, hi32, a, b, is64);
        }

        /// Sign extension of a range keeps every value's extension in it.
        #[test]
        fn a_sign_extended_range_holds_every_extension(
            x in edgy(), d in (any::<u16>(), any::<u16>()),
            bits in prop::sample::select(vec![8u32, 16, 32]), is64 in any::<bool>(),
        ) {
            let x = x & ((1u64 << bits) - 1);
            let lo = x.saturating_sub(d.0 as u64 % 200);
            let hi = x.saturating_add(d.1 as u64 % 200);
            let lim = if is64 { u64::MAX } else { u32::MAX as u64 };
            let want = sign_extend(x, bits) & lim;
            let Reg::Scalar { min, max, lo32, hi32, .. } = sign_extended(range(lo, hi), bits, lim) else {
                panic!("not a number");
            };
            prop_assert!(min <= want && want <= max && lo32 <= want as u32 && want as u32 <= hi32,
                "sext{} of {:#x} in [{:#x}, {:#x}] = {:#x} outside [{:#x}, {:#x}]", bits, x, lo, hi, want, min, max);
        }
    }
}
