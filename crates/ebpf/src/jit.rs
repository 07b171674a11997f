//! rbpf's x86-64 JIT for verified programs (`--jit`), and the helpers the
//! compiled code calls.
//!
//! rbpf's JIT checks nothing: the compiled program dereferences whatever
//! address it computes. So a program reaches it only after
//! [`verify`](super::verifier::verify) has proved every access in bounds,
//! and the helpers below read keys and write contexts through the raw
//! pointers the program passes, which the verifier typed (stack or map
//! value for keys and values, the context for adjust_head/meta).
//!
//! rbpf helpers are plain `fn(u64, u64, u64, u64, u64) -> u64`: the state of
//! the current run (maps, lcore, redirect) is reached through a
//! thread-local pointer set for the duration of one run on the owning lcore.
//!
//! This file is the one place in the engine with `unsafe` (the crate
//! denies it elsewhere): the call into JIT-compiled code and the helpers'
//! pointer reads.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::Arc;

use super::interp::{self, CTX_SIZE, RedirectTo, Tail, XdpCtx};
use super::maps::{self, Map};
use super::{Program, inline};
use crate::abi::errno::EINVAL;
use crate::abi::{helper, xdp};

/// What the helpers of the current run act on.
struct RunState {
    maps: *const [Arc<Map>],
    cpu: u32,
    /// Where XDP_REDIRECT goes, packed into one word ([`pack`]): a
    /// 12-byte Option written field by field and read whole stalled every
    /// run on store forwarding.
    redirect: u64,
    has: *const dyn Fn(u32) -> bool,
    /// Start of the frame's buffer (adjust_head's lower bound).
    buf_start: u64,
    /// End of the frame's buffer (adjust_tail's upper bound).
    buf_end: u64,
    ktime: fn() -> u64,
    /// The chain's state, the caller's (not copied in and out: a copy
    /// cost a store-forwarding stall on every run).
    tail: *mut Tail,
}

thread_local! {
    static RUN: Cell<*mut RunState> = const { Cell::new(std::ptr::null_mut()) };
}

/// Calls `f` with the current run's state. Context: inside `Jit::run` on
/// this thread (RUN is set there and cleared before it returns).
fn with_run<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    RUN.with(|r| {
        let p = r.get();
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at the RunState on Jit::run's stack frame, which
        // outlives the JIT call that invoked this helper; only this thread
        // sees it.
        Some(f(unsafe { &mut *p }))
    })
}

fn map_of(st: &RunState, fd: u64) -> Option<&Arc<Map>> {
    // SAFETY: st.maps is the program's map slice, alive for the run.
    let maps = unsafe { &*st.maps };
    let i = fd.checked_sub(maps::MAP_FD_BASE as u64)? as usize;
    maps.get(i)
}

/// Copies `len` bytes from `addr`, a key or value pointer the verifier
/// proved to be inside the stack or a map value.
fn copy_from(addr: u64, out: &mut [u8]) {
    // SAFETY: the verifier checked that `addr .. addr + out.len()` lies in
    // the program's stack (written bytes) or in a map value; both are live
    // during the run.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
}

/// Calls `f` with a copy of the `len` bytes at `addr` (in
/// [`maps::with_scratch`]'s buffers; None past MAX_VALUE_SIZE).
#[inline(always)]
fn with_bytes<R>(addr: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if len == 4 {
        // The common key (u32 index or address): no buffer to clear.
        let mut b = [0u8; 4];
        copy_from(addr, &mut b);
        return Some(f(&b));
    }
    maps::with_scratch(len, |b| {
        copy_from(addr, b);
        f(b)
    })
}

fn h_lookup(fd: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        with_bytes(key, m.def.key_size as usize, |k| {
            match m.lookup(k, st.cpu as usize) {
                Some(w) => m.words()[w..].as_ptr() as u64,
                None => 0,
            }
        })
    })
    .flatten()
    .unwrap_or(0)
}

fn h_update(fd: u64, key: u64, value: u64, flags: u64, _: u64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        with_bytes(key, m.def.key_size as usize, |k| {
            with_bytes(value, m.def.value_size as usize, |v| {
                m.update(k, v, flags, st.cpu as usize) as u64
            })
        })
        .flatten()
    })
    .flatten()
    .unwrap_or((-EINVAL) as u64)
}

fn h_delete(fd: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        with_bytes(key, m.def.key_size as usize, |k| m.delete(k) as u64)
    })
    .flatten()
    .unwrap_or((-EINVAL) as u64)
}

fn h_push(fd: u64, value: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        with_bytes(value, m.def.value_size as usize, |v| {
            m.push(v, flags) as u64
        })
    })
    .flatten()
    .unwrap_or((-EINVAL) as u64)
}

fn h_pop(fd: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    queue_take(fd, value, Map::pop)
}

fn h_peek(fd: u64, value: u64, _: u64, _: u64, _: u64) -> u64 {
    queue_take(fd, value, Map::peek)
}

/// bpf_map_pop_elem / peek: the value into a buffer, then to `value`.
fn queue_take(fd: u64, value: u64, take: fn(&Map, &mut [u8]) -> i64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        let len = m.def.value_size as usize;
        maps::with_scratch(len, |buf| {
            let r = take(m, buf);
            if r == 0 {
                // SAFETY: the verifier proved `len` writable bytes at
                // `value` (the stack or a writable map value), live
                // during the run.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), value as *mut u8, len) };
            }
            r as u64
        })
    })
    .flatten()
    .unwrap_or((-EINVAL) as u64)
}

fn h_ktime(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(|st| (st.ktime)()).unwrap_or(0)
}

fn h_boot_ns(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    super::clock::boot_ns()
}

fn h_prandom(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    super::clock::prandom_u32() as u64
}

fn h_adjust_tail(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    let mut b = [0u8; CTX_SIZE];
    copy_from(ctx, &mut b);
    let before = XdpCtx::from_bytes(&b);
    let Some(buf_end) = with_run(|st| st.buf_end) else {
        return (-EINVAL) as u64;
    };
    let Some(c) = interp::adjust_tail(before, delta as i32 as i64, buf_end) else {
        return (-EINVAL) as u64;
    };
    if c.data_end > before.data_end {
        // SAFETY: [before.data_end, c.data_end) is inside the frame's
        // buffer (adjust_tail bounds it by buf_end, the buffer Jit::run
        // was given), which this run owns.
        unsafe {
            std::ptr::write_bytes(
                before.data_end as *mut u8,
                0,
                (c.data_end - before.data_end) as usize,
            )
        };
    }
    let out = c.to_bytes();
    // SAFETY: ctx is the context buffer Jit::run passed as mbuff (the
    // verifier requires r1 == ctx for this helper); CTX_SIZE bytes.
    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), ctx as *mut u8, CTX_SIZE) };
    0
}

/// The XDP metadata kfuncs, one per id (rbpf's helpers do not know their
/// own id).
fn h_rx_hash(ctx: u64, hash: u64, rss_type: u64, _: u64, _: u64) -> u64 {
    rx_metadata(helper::XDP_RX_HASH, ctx, hash, rss_type)
}

fn h_rx_vlan_tag(ctx: u64, proto: u64, tci: u64, _: u64, _: u64) -> u64 {
    rx_metadata(helper::XDP_RX_VLAN_TAG, ctx, proto, tci)
}

fn h_rx_timestamp(ctx: u64, ts: u64, _: u64, _: u64, _: u64) -> u64 {
    rx_metadata(helper::XDP_RX_TIMESTAMP, ctx, ts, 0)
}

fn rx_metadata(id: i32, ctx: u64, a: u64, b: u64) -> u64 {
    let mut c = [0u8; CTX_SIZE];
    copy_from(ctx, &mut c);
    match interp::rx_metadata(id, &XdpCtx::from_bytes(&c)) {
        Ok(hash) => {
            // SAFETY: the verifier proved a and b point at 4 writable
            // bytes of the stack or a map value (the kfunc's arguments),
            // live during the run.
            unsafe {
                std::ptr::write_unaligned(a as *mut u32, hash);
                std::ptr::write_unaligned(b as *mut u32, 0); // XDP_RSS_TYPE_NONE
            }
            0
        }
        Err(e) => e,
    }
}

fn h_smp_id(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(|st| st.cpu as u64).unwrap_or(0)
}

/// A redirect target as one word: bits 62-63 the kind (0: none, 1: cpumap,
/// 2: interface), 32-61 an interface's egress program, 0-31 the key or
/// ifindex.
fn pack(to: RedirectTo) -> u64 {
    match to {
        RedirectTo::Cpu(k) => 1 << 62 | k as u64,
        RedirectTo::Dev(ifindex, egress) => {
            2 << 62 | ((egress as u64) & 0x3fff_ffff) << 32 | ifindex as u64
        }
    }
}

fn unpack(w: u64) -> Option<RedirectTo> {
    match w >> 62 {
        1 => Some(RedirectTo::Cpu(w as u32)),
        2 => Some(RedirectTo::Dev(w as u32, (w >> 32) as u32 & 0x3fff_ffff)),
        _ => None,
    }
}

fn h_redirect_map(fd: u64, key: u64, flags: u64, _: u64, _: u64) -> u64 {
    with_run(|st| {
        let m = map_of(st, fd)?;
        // SAFETY: st.has is the caller's closure, alive for the run.
        let has = unsafe { &*st.has };
        match interp::redirect_target(m, key as u32, has) {
            Some(to) => {
                st.redirect = pack(to);
                Some(xdp::REDIRECT as u64)
            }
            None => Some(flags & 0x3),
        }
    })
    .flatten()
    .unwrap_or(0)
}

fn h_csum_diff(from: u64, fs: u64, to: u64, ts: u64, seed: u64) -> u64 {
    // The verifier proved each non-empty range readable (stack bytes
    // written, or inside a map value) and the sizes constant.
    interp::csum_diff_call([from, fs, to, ts, seed], |a, out| {
        copy_from(a, out);
        Some(())
    })
    .unwrap_or((-EINVAL) as u64)
}

fn h_redirect(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(|st| match interp::redirect_dev(ifindex, flags) {
        Some(to) => {
            st.redirect = pack(to);
            xdp::REDIRECT as u64
        }
        None => xdp::ABORTED as u64,
    })
    .unwrap_or(xdp::ABORTED as u64)
}

fn h_trace_printk(fmt: u64, size: u64, a: u64, b: u64, c: u64) -> u64 {
    let mut buf = [0u8; super::printk::FMT_MAX];
    let n = (size as usize).min(buf.len());
    // The verifier proved `size` bytes at `fmt` readable (stack or map value).
    copy_from(fmt, &mut buf[..n]);
    let cpu = with_run(|st| st.cpu).unwrap_or(0);
    super::printk::trace_printk(&buf[..n], [a, b, c], cpu, super::clock::ktime_ns) as u64
}

fn h_tail_call(_ctx: u64, fd: u64, index: u64, _: u64, _: u64) -> u64 {
    with_run(|st| {
        // SAFETY: st.maps is the program's map slice, alive for the run.
        let maps = unsafe { &*st.maps };
        let i = fd.checked_sub(maps::MAP_FD_BASE as u64)? as usize;
        // SAFETY: st.tail is the &mut Tail Jit::run was given, alive and
        // not otherwise borrowed for the run.
        let tail = unsafe { &mut *st.tail };
        Some(tail.call(maps.get(i)?, index))
    })
    .flatten()
    .unwrap_or((-EINVAL) as u64)
}

fn adjust(ctx: u64, delta: u64, head: bool) -> u64 {
    with_run(|st| {
        let mut b = [0u8; CTX_SIZE];
        copy_from(ctx, &mut b);
        let c = XdpCtx::from_bytes(&b);
        let Some((c, mv)) = interp::adjust(c, st.buf_start, delta as i32 as i64, head) else {
            return (-EINVAL) as u64;
        };
        if let Some((from, to, len)) = mv {
            // SAFETY: both ranges lie in the frame's buffer between its
            // start and data_end (adjust checked them); copy handles the
            // overlap.
            unsafe {
                std::ptr::copy(
                    (st.buf_start + from as u64) as *const u8,
                    (st.buf_start + to as u64) as *mut u8,
                    len,
                )
            };
        }
        let out = c.to_bytes();
        // SAFETY: ctx is the context buffer Jit::run passed as mbuff (the
        // verifier requires r1 == ctx for these helpers); CTX_SIZE bytes.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), ctx as *mut u8, CTX_SIZE) };
        0
    })
    .unwrap_or((-EINVAL) as u64)
}

fn h_adjust_head(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    adjust(ctx, delta, true)
}

fn h_adjust_meta(ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    adjust(ctx, delta, false)
}

/// The lookups of `prog` the JIT can inline for lcore `cpu`: call sites
/// whose map the verifier found to be one ARRAY or PERCPU_ARRAY on every
/// path. The addresses stay valid while `prog` lives (its maps never
/// reallocate their storage).
fn array_lookups(prog: &Program, cpu: u32) -> Vec<inline::ArrayLookup> {
    prog.verified
        .lookup_sites
        .iter()
        .filter_map(|&(pc, map)| {
            let m = prog.maps.get(map as usize)?;
            let (first, words) = m.array_layout(cpu as usize)?;
            Some(inline::ArrayLookup {
                pc,
                base: m.words()[first..].as_ptr() as u64,
                max_entries: m.def.max_entries,
                stride: u32::try_from(words * 8).ok()?,
            })
        })
        .collect()
}

thread_local! {
    /// Set while this thread compiles: a panic then is rbpf's, caught.
    static COMPILING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `vm.jit_compile()`, with rbpf 0.3's panic on a program larger than its
/// fixed 4 KiB of machine code (an assertion in its emitter) turned into an
/// error, and the panic's message kept off stderr.
fn compile_quietly(vm: &mut rbpf::EbpfVmMbuff<'static>, insns: usize) -> Result<(), String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !COMPILING.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    COMPILING.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.jit_compile()));
    COMPILING.with(|c| c.set(false));
    match r {
        Ok(r) => r.map_err(|e| format!("JIT: {e}")),
        Err(_) => Err(format!(
            "JIT: the program ({insns} instructions after inlining its calls) compiles to more than the 4 KiB of machine code rbpf 0.3's JIT holds; run it without --jit"
        )),
    }
}

/// A JIT-compiled program, one per lcore. It holds the program (whose maps
/// the code addresses) and its own copy of the instructions (which the VM
/// borrows), and drops the VM first (field order).
pub struct Jit {
    vm: rbpf::EbpfVmMbuff<'static>,
    /// Map lookups compiled inline (the rest call the helper).
    pub inlined: usize,
    _code: Box<[u8]>,
    _prog: Arc<Program>,
}

// SAFETY: the VM holds the program bytes ('static), the helper table and
// the executable code; the lcore that owns the Instance is the only thread
// that runs it.
unsafe impl Send for Jit {}

impl Jit {
    /// Compiles `prog` (verified and rewritten) for lcore `cpu`, with its
    /// ARRAY and PERCPU_ARRAY lookups inlined (addressing `cpu`'s copy).
    pub fn compile(prog: Arc<Program>, cpu: u32) -> Result<Jit, String> {
        // rbpf 0.3's JIT has no atomic instructions (it would panic on
        // them): such programs run interpreted.
        if let Some(pc) = (0..prog.insn_count()).find(|&pc| {
            let i = super::insn::Insn::at(prog.code(), pc);
            i.class() == super::insn::STX && i.op & 0xe0 == super::insn::ATOMIC
        }) {
            return Err(format!(
                "insn {pc}: atomic instructions are not compiled by the JIT (rbpf 0.3 has none); run this program without --jit"
            ));
        }
        let lookups = inline::lookup_expansions(prog.code(), &array_lookups(&prog, cpu));
        let inlined = lookups.as_ref().map_or(0, |l| l.len());
        let mut sites = lookups.unwrap_or_default();
        sites.extend(inline::jit_expansions(prog.code())?);
        for pc in 0..prog.insn_count() {
            let i = super::insn::Insn::at(prog.code(), pc);
            if i.op == (super::insn::JMP | super::insn::CALL) && i.imm == helper::TAIL_CALL {
                sites.push((pc, inline::tail_call_exit()));
            }
        }
        let owned = inline::expand(prog.code(), &sites)
            .ok_or_else(|| "JIT: a jump does not fit its offset after expansion".to_string())?
            .into_boxed_slice();
        // SAFETY: the bytes live in `owned`'s heap allocation, which the Jit
        // keeps alive (its `_code` field, dropped after `vm`); the VM only
        // reads them. The lifetime is erased because the VM type wants one.
        let code: &'static [u8] = unsafe { &*(&*owned as *const [u8]) };
        // rbpf's own verifier refuses backward jumps (bounded loops); ours
        // ran, so install a no-op one before the program.
        let mut vm = rbpf::EbpfVmMbuff::new(None).map_err(|e| e.to_string())?;
        vm.set_verifier(|_| Ok(())).map_err(|e| e.to_string())?;
        vm.set_program(code).map_err(|e| e.to_string())?;
        for (id, f) in [
            (helper::MAP_LOOKUP_ELEM, h_lookup as rbpf::Helper),
            (helper::MAP_UPDATE_ELEM, h_update),
            (helper::MAP_DELETE_ELEM, h_delete),
            (helper::MAP_PUSH_ELEM, h_push),
            (helper::MAP_POP_ELEM, h_pop),
            (helper::MAP_PEEK_ELEM, h_peek),
            (helper::KTIME_GET_NS, h_ktime),
            (helper::GET_SMP_PROCESSOR_ID, h_smp_id),
            (helper::REDIRECT_MAP, h_redirect_map),
            (helper::REDIRECT, h_redirect),
            (helper::CSUM_DIFF, h_csum_diff),
            (helper::XDP_ADJUST_HEAD, h_adjust_head),
            (helper::XDP_ADJUST_TAIL, h_adjust_tail),
            (helper::KTIME_GET_BOOT_NS, h_boot_ns),
            (helper::GET_PRANDOM_U32, h_prandom),
            (helper::XDP_ADJUST_META, h_adjust_meta),
            (helper::TAIL_CALL, h_tail_call),
            (helper::TRACE_PRINTK, h_trace_printk),
            (helper::XDP_RX_HASH, h_rx_hash),
            (helper::XDP_RX_VLAN_TAG, h_rx_vlan_tag),
            (helper::XDP_RX_TIMESTAMP, h_rx_timestamp),
        ] {
            vm.register_helper(id as u32, f)
                .map_err(|e| e.to_string())?;
        }
        compile_quietly(&mut vm, prog.insn_count())?;
        Ok(Jit {
            vm,
            inlined,
            _code: owned,
            _prog: prog,
        })
    }

    /// Runs once. `pkt` is the frame's buffer up to data_end, `ctx` the
    /// context whose pointers point into it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn run(
        &self,
        maps: &[Arc<Map>],
        cpu: u32,
        has: &dyn Fn(u32) -> bool,
        ktime: fn() -> u64,
        pkt: &mut [u8],
        ctx: &mut [u8; CTX_SIZE],
        tail: &mut Tail,
    ) -> (u64, Option<RedirectTo>) {
        let mut st = RunState {
            maps: maps as *const [Arc<Map>],
            cpu,
            redirect: 0,
            // SAFETY: the lifetime is erased only for the duration of this
            // call; RUN is cleared before `has` goes out of scope.
            has: unsafe {
                std::mem::transmute::<
                    *const (dyn Fn(u32) -> bool + '_),
                    *const (dyn Fn(u32) -> bool + 'static),
                >(has as *const dyn Fn(u32) -> bool)
            },
            buf_start: pkt.as_ptr() as u64,
            buf_end: pkt.as_ptr() as u64 + pkt.len() as u64,
            ktime,
            tail: tail as *mut Tail,
        };
        RUN.with(|r| r.set(&mut st));
        // SAFETY: the program passed our verifier, so every access it makes
        // is inside `pkt` (up to data_end), its stack, `ctx` or a map value,
        // all alive for this call; helpers see `st` through RUN.
        let ret = unsafe { self.vm.execute_program_jit(pkt, ctx) }.unwrap_or(0);
        RUN.with(|r| r.set(std::ptr::null_mut()));
        (ret, unpack(st.redirect))
    }
}
