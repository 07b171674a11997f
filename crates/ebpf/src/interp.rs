//! cpumapd's eBPF interpreter: allocation-free and written in safe Rust.
//!
//! Registers hold real addresses (so programs compute with pointers exactly
//! as under the JIT), and every load and store translates its address back
//! to the region it falls in — the frame's buffer, this run's stack, the
//! context, or a map's storage — before touching memory through a checked
//! slice or an atomic word. An address outside them ends the run with an
//! error (counted as `aborted`); the verifier makes that impossible for a
//! verified program, this makes it harmless for any program.
//!
//! Semantics follow rbpf's interpreter and the kernel: division by zero
//! gives 0, modulo by zero leaves the dividend, shifts are masked.
//!
//! Context: the owning lcore, once per frame.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::insn::*;
use super::maps::{self, Map};
use crate::abi::errno::{EINVAL, ENOENT};
use crate::abi::{helper, xdp};

/// Instructions one run may execute (a verified program cannot reach it;
/// an unverified one is stopped).
pub const MAX_RUN_INSNS: u64 = 1 << 20;

/// Why a run ended without a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A memory access outside what the run may touch.
    BadAccess {
        /// The instruction.
        pc: usize,
        /// The address it touched.
        addr: u64,
    },
    /// The instruction budget ran out.
    TooLong,
    /// An instruction the interpreter does not know.
    BadInsn {
        /// The instruction.
        pc: usize,
    },
    /// An unknown helper, or a helper with bad arguments.
    BadHelper {
        /// The instruction.
        pc: usize,
        /// The helper id.
        id: i32,
    },
}

/// cpumapd's context, what `xdp_md` loads are rewritten to read (the
/// loader turns `*(u32 *)(ctx + 4)` into a 64-bit load at `DATA_END`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpCtx {
    /// Start of the packet data.
    pub data: u64,
    /// End of the packet data.
    pub data_end: u64,
    /// Start of the metadata before the data.
    pub data_meta: u64,
    /// The ifindex the frame came in on.
    pub ingress_ifindex: u32,
    /// The RX queue it came in on.
    pub rx_queue_index: u32,
    /// The egress ifindex (devmap programs).
    pub egress_ifindex: u32,
    /// The port's hash of the frame, 0 for none (not in `xdp_md`: read by
    /// `bpf_xdp_metadata_rx_hash`).
    pub rx_hash: u32,
}

/// Offset of `data` as the program sees it (`struct xdp_md`).
pub const CTX_DATA: i16 = 0;
/// Offset of `data_end`.
pub const CTX_DATA_END: i16 = 8;
/// Offset of `data_meta`.
pub const CTX_DATA_META: i16 = 16;
/// Offset of `ingress_ifindex`.
pub const CTX_INGRESS: i16 = 24;
/// Offset of `rx_queue_index`.
pub const CTX_RXQ: i16 = 28;
/// Offset of `egress_ifindex`.
pub const CTX_EGRESS: i16 = 32;
/// Bytes of the in-memory context.
pub const CTX_SIZE: usize = 40;

impl XdpCtx {
    /// The context's bytes.
    #[inline]
    pub fn to_bytes(self) -> [u8; CTX_SIZE] {
        let mut b = [0u8; CTX_SIZE];
        b[0..8].copy_from_slice(&self.data.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_end.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_meta.to_le_bytes());
        b[24..28].copy_from_slice(&self.ingress_ifindex.to_le_bytes());
        b[28..32].copy_from_slice(&self.rx_queue_index.to_le_bytes());
        b[32..36].copy_from_slice(&self.egress_ifindex.to_le_bytes());
        b[36..40].copy_from_slice(&self.rx_hash.to_le_bytes());
        b
    }

    /// The context from its bytes.
    #[inline]
    pub fn from_bytes(b: &[u8; CTX_SIZE]) -> XdpCtx {
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let d = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        XdpCtx {
            data: q(0),
            data_end: q(8),
            data_meta: q(16),
            ingress_ifindex: d(24),
            rx_queue_index: d(28),
            egress_ifindex: d(32),
            rx_hash: d(36),
        }
    }
}

/// What helpers act on, for one run.
pub trait Env {
    /// The program's maps (index = fd - base).
    fn maps(&self) -> &[Arc<Map>];
    /// This lcore's id (PERCPU copy, `bpf_get_smp_processor_id`).
    fn cpu(&self) -> u32;
    /// `bpf_ktime_get_ns`.
    fn ktime_ns(&self) -> u64;
    /// `bpf_redirect_map` on a cpumap: remember `key` when it has an entry.
    fn cpumap_has(&self, key: u32) -> bool;
    /// Records where `XDP_REDIRECT` sends the frame.
    fn set_redirect(&mut self, to: RedirectTo);
    /// `bpf_tail_call` through map `map` (an index into `maps()`) at
    /// `index`, on the run's chain ([`Tail::call`]).
    fn tail_call(&mut self, map: usize, index: u64) -> u64;
}

/// The kernel's MAX_TAIL_CALL_CNT: the 34th tail call of a chain fails.
pub const MAX_TAIL_CALLS: u32 = 33;

/// What a successful `bpf_tail_call` returns into the program (the JIT's
/// expansion exits on it; a failed call returns a negative errno).
pub const TAIL_CALL_TAKEN: i32 = 0x7a11_ca11;

/// One run's tail-call chain: how many calls it made, the program the
/// last one jumps to, and how many tail programs the object has.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tail {
    /// Tail calls taken so far.
    pub count: u32,
    /// The tail program to run when this one exits.
    pub next: Option<u32>,
    /// The object's tail programs.
    pub programs: u32,
}

impl Tail {
    /// A chain over `programs` tail programs.
    #[inline]
    pub fn new(programs: usize) -> Tail {
        Tail {
            count: 0,
            next: None,
            programs: programs as u32,
        }
    }

    /// `bpf_tail_call(ctx, map, index)`: TAIL_CALL_TAKEN when `map` holds
    /// a program at `index` and the chain may grow, else -ENOENT.
    #[inline]
    pub fn call(&mut self, map: &Map, index: u64) -> u64 {
        let slot = u32::try_from(index).ok().and_then(|i| map.prog_slot(i));
        match slot {
            Some(s) if s < self.programs && self.count < MAX_TAIL_CALLS => {
                self.count += 1;
                self.next = Some(s);
                TAIL_CALL_TAKEN as u64
            }
            _ => (-ENOENT) as u64,
        }
    }
}

/// Where a program's `XDP_REDIRECT` goes (the kernel's `bpf_redirect_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectTo {
    /// A cpumap entry (its key).
    Cpu(u32),
    /// An interface (its ifindex): a DEVMAP entry or `bpf_redirect`; then
    /// the entry's egress program (0: none, n: the object's egress program
    /// n - 1).
    Dev(u32, u32),
}

/// `bpf_redirect_map`'s answer for `map` (cpumap or DEVMAP/DEVMAP_HASH) and
/// `key`: the destination, or None on a miss. `has` says whether the
/// cpumap has an entry for a key.
#[inline]
pub fn redirect_target(map: &Map, key: u32, has: impl Fn(u32) -> bool) -> Option<RedirectTo> {
    if map.def.kind == super::maps::MapKind::CpuMap {
        return has(key).then_some(RedirectTo::Cpu(key));
    }
    map.devmap_entry(key)
        .map(|(ifindex, egress)| RedirectTo::Dev(ifindex, egress))
}

/// Most bytes `bpf_csum_diff` reads from each pointer in cpumapd (the
/// verifier refuses more: the kernel's old scratchpad limit).
pub const CSUM_DIFF_MAX: usize = 512;

/// The kernel's x86-64 `csum_partial` over whole 4-byte words (the only
/// lengths `bpf_csum_diff` takes): 8-byte little-endian words and a 4-byte
/// tail added with the end-around carry into a 64-bit sum starting at the
/// seed, folded to 32 bits the same way.
fn csum_partial(b: &[u8], seed: u32) -> u32 {
    let add = |acc: u64, v: u64| {
        let (s, c) = acc.overflowing_add(v);
        s + c as u64
    };
    let mut acc = seed as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        acc = add(acc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    if let Ok(t) = <[u8; 4]>::try_from(words.remainder()) {
        acc = add(acc, u32::from_le_bytes(t) as u64);
    }
    let (s, c) = ((acc >> 32) as u32).overflowing_add(acc as u32);
    s + c as u32
}

/// `csum_sub` of include/net/checksum.h (a + ~b with the end-around carry).
fn csum_sub(a: u32, b: u32) -> u32 {
    let r = a.wrapping_add(!b);
    r.wrapping_add((r < !b) as u32)
}

/// `csum_from32to16`: the 32-bit sum folded to 16 bits (not inverted).
fn csum_from32to16(s: u32) -> u16 {
    (s.wrapping_add(s.rotate_left(16)) >> 16) as u16
}

/// `bpf_csum_diff(from, from_size, to, to_size, seed)` as the kernel has
/// computed it since 6.13 on every architecture: the 16-bit folded sum of
/// `to` minus `from` plus the seed (or -EINVAL for a size that is not whole
/// words).
fn csum_diff(from: &[u8], to: &[u8], seed: u32) -> u64 {
    if !(from.len() | to.len()).is_multiple_of(4) {
        return (-EINVAL) as u64;
    }
    let ret = if to.is_empty() {
        !csum_partial(from, !seed)
    } else if from.is_empty() {
        csum_partial(to, seed)
    } else {
        csum_sub(csum_partial(to, seed), csum_partial(from, 0))
    };
    csum_from32to16(ret) as u64
}

/// The `bpf_csum_diff(from, from_size, to, to_size, seed)` call, for the
/// interpreter and the JIT alike: `read` copies a verified range (the
/// interpreter's address translation, the JIT's raw copy). None when a
/// read fails.
pub fn csum_diff_call(
    args: [u64; 5],
    mut read: impl FnMut(u64, &mut [u8]) -> Option<()>,
) -> Option<u64> {
    let [from, fs, to, ts, seed] = args;
    let (fs, ts) = (fs as usize, ts as usize);
    if fs > CSUM_DIFF_MAX || ts > CSUM_DIFF_MAX {
        return Some((-EINVAL) as u64);
    }
    let (mut f, mut t) = ([0u8; CSUM_DIFF_MAX], [0u8; CSUM_DIFF_MAX]);
    if fs > 0 {
        read(from, &mut f[..fs])?;
    }
    if ts > 0 {
        read(to, &mut t[..ts])?;
    }
    Some(csum_diff(&f[..fs], &t[..ts], seed as u32))
}

/// `bpf_redirect(ifindex, flags)`: XDP_REDIRECT to the interface, or
/// XDP_ABORTED for any flag (the kernel's bpf_xdp_redirect).
#[inline]
pub fn redirect_dev(ifindex: u64, flags: u64) -> Option<RedirectTo> {
    (flags == 0).then_some(RedirectTo::Dev(ifindex as u32, 0))
}

/// The memory a run may touch.
pub struct Mem<'a> {
    /// The frame's whole buffer: headroom, data and tailroom (the verifier
    /// keeps the program's accesses inside the data).
    pub pkt: &'a mut [u8],
    /// The context (`struct xdp_md` as 64-bit pointers).
    pub ctx: &'a mut [u8; CTX_SIZE],
    /// The program's stack.
    pub stack: &'a mut [u8; STACK_SIZE],
}

enum Region<'m> {
    Bytes(&'m mut [u8]),
    Words(&'m [AtomicU64]),
}

impl Mem<'_> {
    fn region<'m>(
        &'m mut self,
        maps: &'m [Arc<Map>],
        addr: u64,
        size: usize,
    ) -> Option<(Region<'m>, usize)> {
        let inside = |base: u64, len: usize| {
            addr.checked_sub(base)
                .filter(|&o| o.checked_add(size as u64).is_some_and(|e| e <= len as u64))
                .map(|o| o as usize)
        };
        if let Some(o) = inside(self.pkt.as_ptr() as u64, self.pkt.len()) {
            return Some((Region::Bytes(self.pkt), o));
        }
        if let Some(o) = inside(self.stack.as_ptr() as u64, STACK_SIZE) {
            return Some((Region::Bytes(self.stack), o));
        }
        if let Some(o) = inside(self.ctx.as_ptr() as u64, CTX_SIZE) {
            return Some((Region::Bytes(self.ctx), o));
        }
        for m in maps {
            let w = m.words();
            if let Some(o) = inside(w.as_ptr() as u64, w.len() * 8) {
                return Some((Region::Words(w), o));
            }
        }
        None
    }

    fn load(&mut self, maps: &[Arc<Map>], addr: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        match self.region(maps, addr, size)? {
            (Region::Bytes(s), o) => b[..size].copy_from_slice(&s[o..o + size]),
            (Region::Words(w), o) => maps::read_bytes(w, o, &mut b[..size])?,
        }
        Some(u64::from_le_bytes(b))
    }

    /// An atomic read-modify-write of `size` (4 or 8) aligned bytes at
    /// `addr` (op = the instruction's imm): the old value, and false for an
    /// unknown operation. On map storage it is one atomic RMW of the word
    /// holding it; the stack is this run's own. None: not a map value or
    /// the stack, or misaligned.
    fn atomic(
        &mut self,
        maps: &[Arc<Map>],
        addr: u64,
        size: usize,
        op: i32,
        src: u64,
        r0: u64,
    ) -> Option<(u64, bool)> {
        use std::sync::atomic::Ordering::SeqCst;
        if !matches!(size, 4 | 8) || !addr.is_multiple_of(size as u64) {
            return None;
        }
        let mask = if size == 8 { u64::MAX } else { u32::MAX as u64 };
        let apply = |old: u64| -> Option<u64> {
            let (a, b) = (old & mask, src & mask);
            Some(match op & !FETCH {
                0x00 => a.wrapping_add(b) & mask,
                0x40 => a | b,
                0x50 => a & b,
                0xa0 => a ^ b,
                _ if op == XCHG => b,
                _ if op == CMPXCHG => {
                    if a == r0 & mask {
                        b
                    } else {
                        a
                    }
                }
                _ => return None,
            })
        };
        let stack = self.stack.as_ptr() as u64;
        if addr >= stack && addr + size as u64 <= stack + STACK_SIZE as u64 {
            let o = (addr - stack) as usize;
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(&self.stack[o..o + size]);
            let old = u64::from_le_bytes(b);
            let Some(new) = apply(old) else {
                return Some((0, false));
            };
            self.stack[o..o + size].copy_from_slice(&new.to_le_bytes()[..size]);
            return Some((old, true));
        }
        let (Region::Words(w), o) = self.region(maps, addr, size)? else {
            return None; // atomics on the packet or context are refused
        };
        let word = &w[o / 8];
        let shift = (o % 8) * 8;
        let mut unknown = false;
        let prev = word
            .fetch_update(SeqCst, SeqCst, |cur| {
                let old = (cur >> shift) & mask;
                match apply(old) {
                    Some(new) => Some((cur & !(mask << shift)) | (new << shift)),
                    None => {
                        unknown = true;
                        None
                    }
                }
            })
            .unwrap_or_else(|cur| cur);
        Some(((prev >> shift) & mask, !unknown))
    }

    fn store(&mut self, maps: &[Arc<Map>], addr: u64, size: usize, v: u64) -> Option<()> {
        self.write_from(maps, addr, v.to_le_bytes().get(..size)?)
    }

    /// Writes `src` at `addr` (a helper's output; never the context).
    fn write_from(&mut self, maps: &[Arc<Map>], addr: u64, src: &[u8]) -> Option<()> {
        let ctx = self.ctx.as_ptr() as u64;
        if addr >= ctx && addr < ctx + CTX_SIZE as u64 {
            return None; // read-only
        }
        match self.region(maps, addr, src.len())? {
            (Region::Bytes(s), o) => s[o..o + src.len()].copy_from_slice(src),
            (Region::Words(w), o) => maps::write_bytes(w, o, src)?,
        }
        Some(())
    }

    /// Copies `out.len()` bytes at `addr` (a helper's key or value).
    fn read_into(&mut self, maps: &[Arc<Map>], addr: u64, out: &mut [u8]) -> Option<()> {
        match self.region(maps, addr, out.len())? {
            (Region::Bytes(s), o) => out.copy_from_slice(&s[o..o + out.len()]),
            (Region::Words(w), o) => maps::read_bytes(w, o, out)?,
        }
        Some(())
    }
}

/// ISA v4's ALU forms, which carry their meaning in `off` (movsx, sdiv,
/// smod): apart, so that the common instructions pay one test of `off`.
#[cold]
#[inline(never)]
fn alu_v4(i: &Insn, op: u8, is64: bool, a: u64, b: u64) -> u64 {
    match op {
        // movsx: the low `off` bits, sign-extended.
        MOV if is64 => sign_extend(b, i.off as u32),
        MOV => sign_extend(b, i.off as u32) as u32 as u64,
        _ => alu_signed(op, is64, a, b),
    }
}

/// ISA v4's ldsx: a load of 1, 2 or 4 bytes, sign-extended.
#[cold]
#[inline(never)]
fn ldsx(
    mem: &mut Mem<'_>,
    env: &mut dyn Env,
    i: &Insn,
    base: u64,
    pc: usize,
) -> Result<u64, Fault> {
    let addr = base.wrapping_add(i.off as i64 as u64);
    let v = mem
        .load(env.maps(), addr, i.size())
        .ok_or(Fault::BadAccess { pc, addr })?;
    Ok(sign_extend(v, i.size() as u32 * 8))
}

/// One atomic instruction at `pc` (its fetched value into src, or r0 for
/// cmpxchg).
#[inline(always)]
fn atomic(
    i: &Insn,
    reg: &mut [u64; 11],
    mem: &mut Mem<'_>,
    env: &mut dyn Env,
    pc: usize,
) -> Result<(), Fault> {
    let (d, s) = (i.dst as usize, i.src as usize);
    let addr = reg[d].wrapping_add(i.off as i64 as u64);
    let (old, ok) = mem
        .atomic(env.maps(), addr, i.size(), i.imm, reg[s], reg[0])
        .ok_or(Fault::BadAccess { pc, addr })?;
    if !ok {
        return Err(Fault::BadInsn { pc });
    }
    if i.imm == CMPXCHG {
        reg[0] = old;
    } else if i.imm & FETCH != 0 {
        reg[s] = old;
    }
    Ok(())
}

/// Does `prog` use ISA v4's movsx, sdiv, smod or ldsx (the forms the
/// interpreter runs only in [`run`]'s `V4` instance)?
pub fn uses_v4(prog: &[u8]) -> bool {
    (0..prog.len() / INSN_SIZE).any(|pc| {
        let i = Insn::at(prog, pc);
        match i.class() {
            ALU | ALU64 => i.off != 0 && matches!(i.op & 0xf0, MOV | DIV | MOD),
            LDX => i.op & 0xe0 == MEMSX,
            _ => false,
        }
    })
}

/// Runs `prog` (verified and rewritten) once. R1 = the context. `V4`:
/// the program uses ISA v4's forms ([`uses_v4`]); without them the loop
/// tests nothing for them (one such test per instruction cost the
/// interpreter 10-15%, measured with benches/ebpf.rs).
pub fn run<const V4: bool>(
    prog: &[u8],
    mem: &mut Mem<'_>,
    env: &mut dyn Env,
) -> Result<u64, Fault> {
    let n = prog.len() / INSN_SIZE;
    let mut reg = [0u64; 11];
    reg[1] = mem.ctx.as_ptr() as u64;
    reg[10] = mem.stack.as_ptr() as u64 + STACK_SIZE as u64;
    let mut pc = 0usize;
    let mut budget = MAX_RUN_INSNS;
    loop {
        if pc >= n {
            return Err(Fault::BadInsn { pc });
        }
        budget -= 1;
        if budget == 0 {
            return Err(Fault::TooLong);
        }
        let i = Insn::at(prog, pc);
        let (d, s) = (i.dst as usize, i.src as usize);
        pc += 1;
        match i.class() {
            LD => {
                if i.op != (LD | IMM | DW) || pc >= n {
                    return Err(Fault::BadInsn { pc: pc - 1 });
                }
                let hi = Insn::at(prog, pc).imm as u32 as u64;
                reg[d] = (i.imm as u32 as u64) | (hi << 32);
                pc += 1;
            }
            LDX if !V4 || i.op & 0xe0 == MEM => {
                let addr = reg[s].wrapping_add(i.off as i64 as u64);
                reg[d] = mem
                    .load(env.maps(), addr, i.size())
                    .ok_or(Fault::BadAccess { pc: pc - 1, addr })?;
            }
            LDX => reg[d] = ldsx(mem, env, &i, reg[s], pc - 1)?,
            STX if i.op & 0xe0 == ATOMIC => atomic(&i, &mut reg, mem, env, pc - 1)?,
            ST | STX => {
                if i.op & 0xe0 != MEM {
                    return Err(Fault::BadInsn { pc: pc - 1 });
                }
                let addr = reg[d].wrapping_add(i.off as i64 as u64);
                let v = if i.class() == STX {
                    reg[s]
                } else {
                    i.imm as i64 as u64
                };
                mem.store(env.maps(), addr, i.size(), v)
                    .ok_or(Fault::BadAccess { pc: pc - 1, addr })?;
            }
            ALU | ALU64 => {
                let is64 = i.class() == ALU64;
                let op = i.op & 0xf0;
                let b = if i.op & X == X {
                    reg[s]
                } else if is64 {
                    i.imm as i64 as u64
                } else {
                    i.imm as u32 as u64
                };
                // `off` is 0 but for ISA v4's movsx, sdiv and smod (the
                // verifier's reserved-field check).
                reg[d] = match op {
                    MOV | DIV | MOD if V4 && i.off != 0 => alu_v4(&i, op, is64, reg[d], b),
                    MOV if is64 => b,
                    MOV => b as u32 as u64,
                    END => byte_swap(reg[d], i.imm, i.op),
                    _ => alu_exact(op, is64, reg[d], b),
                };
            }
            JMP | JMP32 => {
                let op = i.op & 0xf0;
                match op {
                    EXIT => return Ok(reg[0]),
                    CALL => {
                        reg[0] = call(i.imm, &reg, mem, env).ok_or(Fault::BadHelper {
                            pc: pc - 1,
                            id: i.imm,
                        })?;
                        // A taken tail call ends this program; the caller
                        // runs the next one.
                        if i.imm == helper::TAIL_CALL && reg[0] == TAIL_CALL_TAKEN as u64 {
                            return Ok(reg[0]);
                        }
                    }
                    JA => pc = (pc as i64 + i.off as i64) as usize,
                    _ => {
                        let b = if i.op & X == X {
                            reg[s]
                        } else {
                            i.imm as i64 as u64
                        };
                        let a = reg[d];
                        if !matches!(
                            op,
                            JEQ | JNE | JGT | JGE | JLT | JLE | JSET | JSGT | JSGE | JSLT | JSLE
                        ) {
                            return Err(Fault::BadInsn { pc: pc - 1 });
                        }
                        let taken = eval_jump(op, a, b, i.class() == JMP);
                        if taken {
                            pc = (pc as i64 + i.off as i64) as usize;
                        }
                    }
                }
            }
            _ => return Err(Fault::BadInsn { pc: pc - 1 }),
        }
    }
}

/// Map index from the fd a program holds.
fn map_index(fd: u64, maps: &[Arc<Map>]) -> Option<usize> {
    let i = fd.checked_sub(maps::MAP_FD_BASE as u64)? as usize;
    (i < maps.len()).then_some(i)
}

/// bpf_map_push_elem / pop / peek on a QUEUE or STACK map.
fn queue_call(id: i32, reg: &[u64; 11], mem: &mut Mem<'_>, env: &mut dyn Env) -> Option<u64> {
    let mi = map_index(reg[1], env.maps())?;
    let vs = env.maps()[mi].def.value_size as usize;
    maps::with_scratch(vs, |val| {
        if id == helper::MAP_PUSH_ELEM {
            mem.read_into(env.maps(), reg[2], val)?;
            return Some(env.maps()[mi].push(val, reg[3]) as u64);
        }
        let m = &env.maps()[mi];
        let r = if id == helper::MAP_POP_ELEM {
            m.pop(val)
        } else {
            m.peek(val)
        };
        if r == 0 {
            mem.write_from(env.maps(), reg[2], val)?;
        }
        Some(r as u64)
    })?
}

/// Runs helper `id`; None for an unknown helper or a bad argument.
fn call(id: i32, reg: &[u64; 11], mem: &mut Mem<'_>, env: &mut dyn Env) -> Option<u64> {
    let neg = |e: i64| (-e) as u64;
    match id {
        helper::MAP_LOOKUP_ELEM | helper::MAP_UPDATE_ELEM | helper::MAP_DELETE_ELEM => {
            let mi = map_index(reg[1], env.maps())?;
            let (ks, vs) = {
                let d = &env.maps()[mi].def;
                (d.key_size as usize, d.value_size as usize)
            };
            // Small buffers for the usual keys: zeroing 4 KiB per call
            // would cost more than the lookup.
            let mut small = [0u8; 64];
            let mut big_buf;
            let key: &mut [u8] = if ks <= 64 {
                &mut small[..ks]
            } else {
                big_buf = [0u8; 512];
                big_buf.get_mut(..ks)?
            };
            mem.read_into(env.maps(), reg[2], key)?;
            let cpu = env.cpu() as usize;
            let m = &env.maps()[mi];
            Some(match id {
                helper::MAP_LOOKUP_ELEM => match m.lookup(key, cpu) {
                    Some(w) => m.words()[w..].as_ptr() as u64,
                    None => 0,
                },
                helper::MAP_UPDATE_ELEM => maps::with_scratch(vs, |val| {
                    mem.read_into(env.maps(), reg[3], val)?;
                    let m = &env.maps()[mi];
                    Some(m.update(key, val, reg[4], cpu) as u64)
                })??,
                _ => m.delete(key) as u64,
            })
        }
        helper::MAP_PUSH_ELEM | helper::MAP_POP_ELEM | helper::MAP_PEEK_ELEM => {
            queue_call(id, reg, mem, env)
        }
        helper::TRACE_PRINTK => {
            let mut fmt = [0u8; super::printk::FMT_MAX];
            let n = (reg[2] as usize).min(fmt.len());
            mem.read_into(env.maps(), reg[1], &mut fmt[..n])?;
            let args = [reg[3], reg[4], reg[5]];
            Some(
                super::printk::trace_printk(&fmt[..n], args, env.cpu(), super::clock::ktime_ns)
                    as u64,
            )
        }
        helper::TAIL_CALL => {
            let mi = map_index(reg[2], env.maps())?;
            Some(env.tail_call(mi, reg[3]))
        }
        helper::KTIME_GET_NS => Some(env.ktime_ns()),
        helper::KTIME_GET_BOOT_NS => Some(super::clock::boot_ns()),
        helper::GET_PRANDOM_U32 => Some(super::clock::prandom_u32() as u64),
        helper::XDP_ADJUST_TAIL => Some(adjust_tail_call(mem, reg[2] as i32 as i64)),
        helper::XDP_RX_HASH | helper::XDP_RX_VLAN_TAG | helper::XDP_RX_TIMESTAMP => {
            match rx_metadata(id, &XdpCtx::from_bytes(mem.ctx)) {
                Ok(hash) => {
                    mem.store(env.maps(), reg[2], 4, hash as u64)?;
                    mem.store(env.maps(), reg[3], 4, 0)?; // XDP_RSS_TYPE_NONE
                    Some(0)
                }
                Err(e) => Some(e),
            }
        }
        helper::GET_SMP_PROCESSOR_ID => Some(env.cpu() as u64),
        helper::REDIRECT_MAP => {
            let m = &env.maps()[map_index(reg[1], env.maps())?];
            match redirect_target(m, reg[2] as u32, |k| env.cpumap_has(k)) {
                Some(to) => {
                    env.set_redirect(to);
                    Some(xdp::REDIRECT as u64)
                }
                // The kernel: the low bits of flags are the action on a miss.
                None => Some(reg[3] & 0x3),
            }
        }
        helper::CSUM_DIFF => {
            let maps = env.maps();
            csum_diff_call([reg[1], reg[2], reg[3], reg[4], reg[5]], |a, out| {
                mem.read_into(maps, a, out)
            })
        }
        helper::REDIRECT => match redirect_dev(reg[1], reg[2]) {
            Some(to) => {
                env.set_redirect(to);
                Some(xdp::REDIRECT as u64)
            }
            None => Some(xdp::ABORTED as u64),
        },
        helper::XDP_ADJUST_HEAD | helper::XDP_ADJUST_META => {
            let c = XdpCtx::from_bytes(mem.ctx);
            let start = mem.pkt.as_ptr() as u64;
            let ok = match adjust(
                c,
                start,
                reg[2] as i32 as i64,
                id == helper::XDP_ADJUST_HEAD,
            ) {
                Some((c, mv)) => {
                    if let Some((from, to, len)) = mv {
                        mem.pkt.copy_within(from..from + len, to);
                    }
                    *mem.ctx = c.to_bytes();
                    true
                }
                None => false,
            };
            if ok { Some(0) } else { Some(neg(EINVAL)) }
        }
        _ => None,
    }
}

/// One of the XDP metadata kfuncs (helper `id`) on context `c`: its return
/// result: the hash `bpf_xdp_metadata_rx_hash` writes (with rss_type
/// XDP_RSS_TYPE_NONE: the hash's inputs are not known), or the negative
/// error it returns. cpumapd's ports give a hash (AF_PACKET: the kernel's
/// skb hash; DPDK: the RSS hash; the generator: its flow) and no stripped
/// VLAN tag (tags stay in the frame) or timestamp; what a port does not
/// have is -EOPNOTSUPP, the kernel's answer for a driver without the
/// operation.
pub fn rx_metadata(id: i32, c: &XdpCtx) -> Result<u32, u64> {
    match id {
        helper::XDP_RX_HASH if c.rx_hash != 0 => Ok(c.rx_hash),
        _ => Err((-crate::abi::errno::EOPNOTSUPP) as u64),
    }
}

/// `bpf_xdp_adjust_tail(ctx, delta)` on the run's context and frame: 0, or
/// -EINVAL.
fn adjust_tail_call(mem: &mut Mem<'_>, delta: i64) -> u64 {
    let c = XdpCtx::from_bytes(mem.ctx);
    let start = mem.pkt.as_ptr() as u64;
    let Some(after) = adjust_tail(c, delta, start + mem.pkt.len() as u64) else {
        return (-EINVAL) as u64;
    };
    // Grown bytes read as zeros, as the kernel clears them.
    let (from, to) = (c.data_end - start, after.data_end - start);
    if let Some(grown) = mem.pkt.get_mut(from as usize..to as usize) {
        grown.fill(0);
    }
    *mem.ctx = after.to_bytes();
    0
}

/// `bpf_xdp_adjust_tail` by `delta` on context `c` whose buffer ends at
/// `buf_end`: the new context, or None when the frame would be shorter
/// than an Ethernet header or grow past its buffer (the kernel's limit is
/// the frame's tailroom less the skb_shared_info it keeps there; cpumapd
/// builds no skb in the buffer, so its tailroom is the buffer's rest). The
/// caller zeroes grown bytes.
pub fn adjust_tail(mut c: XdpCtx, delta: i64, buf_end: u64) -> Option<XdpCtx> {
    let end = c.data_end.checked_add_signed(delta)?;
    if end > buf_end || end < c.data.saturating_add(14) {
        return None;
    }
    c.data_end = end;
    Some(c)
}

/// Metadata bytes to move: (from, to, len), offsets from the buffer start.
pub type MetaMove = (usize, usize, usize);

/// `bpf_xdp_adjust_head` (`head`) or `_meta` by `delta` on context `c`
/// whose buffer starts at `start`: the new context and, when metadata must
/// move with the data (as in the kernel), (from, to, len) as offsets from
/// `start`. None when the result would leave the buffer, put data within 14
/// bytes of its end, or make metadata longer than 32 or not 4-aligned.
pub fn adjust(
    mut c: XdpCtx,
    start: u64,
    delta: i64,
    head: bool,
) -> Option<(XdpCtx, Option<MetaMove>)> {
    if head {
        let (data, meta) = (
            c.data.wrapping_add_signed(delta),
            c.data_meta.wrapping_add_signed(delta),
        );
        if !(meta >= start && meta <= data && data.saturating_add(14) <= c.data_end) {
            return None;
        }
        let metalen = (c.data - c.data_meta) as usize;
        let mv = (metalen > 0).then(|| {
            (
                (c.data_meta - start) as usize,
                (meta - start) as usize,
                metalen,
            )
        });
        c.data = data;
        c.data_meta = meta;
        Some((c, mv))
    } else {
        let meta = c.data_meta.wrapping_add_signed(delta);
        let ok = meta >= start
            && meta <= c.data
            && (c.data - meta) <= 32
            && (c.data - meta).is_multiple_of(4);
        ok.then(|| {
            c.data_meta = meta;
            (c, None)
        })
    }
}
