//! XDP programs in userspace: clang-built eBPF objects loaded with
//! aya-obj, checked by our verifier, run by our interpreter or rbpf's JIT,
//! with the maps they declare. cpumapd's RX and cpumap-entry programs; the
//! engine knows nothing of cpumapd beyond the small interface below.
//!
//! # General idea
//!
//! Loading (control thread): parse the ELF ([`load_object`]), create the
//! maps it declares ([`maps`]), relocate map references to our map fds,
//! verify ([`verifier`]) and rewrite `xdp_md` loads to our context layout.
//! The result, a [`Program`], is immutable and shared (`Arc`) by every
//! thread that runs it; only map storage is written, without locks.
//!
//! Running (one [`Instance`] per thread, owned by it): build the context
//! for a packet buffer ([`XdpBuffer`]), run the interpreter or the JIT,
//! apply `adjust_head`/`adjust_tail` to the buffer, and turn the return
//! value into an [`Action`]: `XDP_REDIRECT` after `bpf_redirect_map` into
//! a cpumap becomes `Redirect(key)`. A run that faults (interpreter) or
//! returns an unknown action is `Aborted`. No allocation per packet.
//!
//! # The interface to a dataplane
//!
//! - [`XdpBuffer`]: the packet a program runs on (its bytes with headroom
//!   and metadata, the receive queue, RSS hash and ingress ifindex).
//! - [`Action`]: what the program decided, with the cpumap key or ifindex.
//! - [`globals::DevmapSet::parse`] takes the resolver of interface names.
//! - Cpumap keys are `u32`; [`Program::fill_targets`] takes anything that
//!   converts to one.
//!
//! ```
//! use cpumapd_ebpf::{Action, Instance, Program, VecBuffer};
//! // r0 = XDP_PASS (2); exit
//! let code = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
//! let prog = std::sync::Arc::new(Program::from_insns("pass", &code, vec![]).unwrap());
//! let mut inst = Instance::new(prog, 0, false).unwrap();
//! let mut pkt = VecBuffer::new(256, &[0u8; 60]);
//! assert_eq!(inst.run(&mut pkt, &|_| false), Action::Pass);
//! ```

#![deny(unsafe_code)]

pub mod abi;
mod buffer;
mod calls;
mod clock;
pub mod globals;
mod inline;
pub mod insn;
pub mod interp;
mod jit;
pub mod maps;
pub mod printk;
pub mod verifier;

use std::sync::Arc;

use thiserror::Error;

use crate::abi::{pseudo, xdp};
pub use buffer::{Action, VecBuffer, XdpBuffer};
use clock::ktime_ns;
use insn::STACK_SIZE;
use insn::{DW, IMM, INSN_SIZE, Insn, LD, LDX, MEM, ST, W};
use interp::{CTX_SIZE, Env, Mem, RedirectTo, XdpCtx};
use maps::{MAP_FD_BASE, Map, MapDef, MapKind};
use verifier::{CtxField, MapShape, Verified};

#[derive(Debug, Error)]
/// An eBPF object or program that cannot run here.
pub enum EbpfError {
    /// An object file that cannot be read or parsed.
    #[error("{path}: {why}")]
    Object {
        /// The object file.
        path: String,
        /// What is wrong.
        why: String,
    },
    #[error("program '{prog}' rejected by the verifier: {err}")]
    /// The verifier refused the program.
    Rejected {
        /// The program.
        prog: String,
        /// Where and why.
        err: verifier::VerifyError,
    },
    /// A program that cannot be loaded (maps, relocations, JIT).
    #[error("program '{prog}': {why}")]
    Load {
        /// The program.
        prog: String,
        /// What failed.
        why: String,
    },
}

/// A loaded, verified program and its maps.
pub struct Program {
    /// The program's name (its ELF symbol).
    pub name: String,
    /// Verified and rewritten instructions.
    code: Box<[u8]>,
    /// The code uses ISA v4's movsx, sdiv, smod or ldsx: the interpreter's
    /// instance that runs them.
    v4: bool,
    /// Its maps, in fd order.
    pub maps: Vec<Arc<Map>>,
    /// What the verifier proved.
    pub verified: Verified,
    /// Where the object says it attaches (its section), which decides
    /// where the kernel lets it run.
    pub attach: Attach,
    /// The object's programs its PROG_ARRAYs hold (`bpf_tail_call`
    /// targets; slot n of an array holds tail n + 1). Each runs over the
    /// same maps; their own `tails` are empty (this list serves the chain).
    pub tails: Vec<Arc<Program>>,
    /// The object's devmap egress programs its DEVMAP entries name (an
    /// entry's program field n runs egress n - 1), run by a cpumap
    /// program's instance on the frames it redirects there.
    pub egress: Vec<Arc<Program>>,
}

/// An XDP program's expected attach type, from its section name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attach {
    /// `SEC("xdp")`: an interface (cpumapd's RX filter).
    #[default]
    Interface,
    /// `SEC("xdp/cpumap")`: a cpumap entry's program.
    CpuMap,
    /// `SEC("xdp/devmap")`: a devmap entry's egress program.
    DevMap,
}

impl Attach {
    /// Its section name.
    pub fn section(self) -> &'static str {
        match self {
            Attach::Interface => "xdp",
            Attach::CpuMap => "xdp/cpumap",
            Attach::DevMap => "xdp/devmap",
        }
    }
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("insns", &(self.code.len() / INSN_SIZE))
            .finish()
    }
}

impl Program {
    /// Verifies raw instructions (maps referenced as `MAP_FD_BASE + i`)
    /// against `defs`, and rewrites their context loads.
    pub fn from_insns(name: &str, code: &[u8], defs: Vec<MapDef>) -> Result<Program, EbpfError> {
        let maps = defs
            .into_iter()
            .map(|d| Map::new(d).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| EbpfError::Load {
                prog: name.into(),
                why,
            })?;
        Program::with_maps(name, code, maps)
    }

    /// [`Program::from_insns`] over maps that exist already (shared with
    /// other programs of the run).
    pub fn with_maps(name: &str, code: &[u8], maps: Vec<Arc<Map>>) -> Result<Program, EbpfError> {
        let shapes: Vec<MapShape> = maps
            .iter()
            .map(|m| MapShape {
                kind: m.def.kind,
                key_size: m.def.key_size,
                value_size: m.def.value_size,
                readonly: m.def.readonly,
                writeonly: m.def.flags & crate::abi::BPF_F_WRONLY_PROG != 0,
            })
            .collect();
        let rejected = |err| EbpfError::Rejected {
            prog: name.into(),
            err,
        };
        // A map of a type cpumapd lacks refuses the programs that use it.
        for pc in 0..code.len() / INSN_SIZE {
            let i = Insn::at(code, pc);
            let fd = (i.op == (LD | IMM | DW)
                && matches!(i.src, pseudo::MAP_FD | pseudo::MAP_VALUE))
            .then(|| i.imm.checked_sub(MAP_FD_BASE))
            .flatten();
            if let Some(why) = fd
                .and_then(|fd| maps.get(fd as usize))
                .and_then(|m| m.def.unsupported.as_ref())
            {
                return Err(EbpfError::Load {
                    prog: name.into(),
                    why: format!("insn {pc}: {why}"),
                });
            }
        }
        let code = verifier::gotol_as_ja(code).map_err(rejected)?;
        let mut flat = calls::flatten(&code, &shapes).map_err(rejected)?;
        let verify = |flat: &calls::Flat| {
            verifier::verify_stack(&flat.code, &shapes, STACK_SIZE, &flat.moves)
                .map(|v| v.0)
                .map_err(|e| rejected(flat.error(e)))
        };
        let mut verified = verify(&flat)?;
        // Stack bytes read before they are written: zeroed at entry (what
        // the kernel's privileged loader leaves as garbage would otherwise
        // be an earlier frame's bytes here), and the program verified again
        // with the prologue, so that every instruction index the loader
        // uses comes from the code that runs.
        let zero = zeroing_prologue(&verified.reads_unwritten);
        if !zero.is_empty() {
            flat.prepend(&zero);
            verified = verify(&flat)?;
            debug_assert!(verified.reads_unwritten.iter().all(|&w| w == 0));
        }
        let mut code = flat.code;
        for &(pc, field, base_off) in &verified.ctx_loads {
            let mut i = Insn::at(&code, pc);
            let (op, off) = match field {
                CtxField::Data => (LDX | MEM | DW, interp::CTX_DATA),
                CtxField::DataEnd => (LDX | MEM | DW, interp::CTX_DATA_END),
                CtxField::DataMeta => (LDX | MEM | DW, interp::CTX_DATA_META),
                CtxField::IngressIfindex => (LDX | MEM | W, interp::CTX_INGRESS),
                CtxField::RxQueueIndex => (LDX | MEM | W, interp::CTX_RXQ),
                CtxField::EgressIfindex => (LDX | MEM | W, interp::CTX_EGRESS),
            };
            i.op = op;
            i.off = off - base_off as i16;
            code[pc * INSN_SIZE..pc * INSN_SIZE + INSN_SIZE].copy_from_slice(&i.encode());
        }
        // Global data: the value's address is fixed for the program's life
        // (map storage never moves), so the ld_imm64 becomes a constant, as
        // the kernel turns it into the map value's kernel address.
        for pc in 0..code.len() / INSN_SIZE {
            let i = Insn::at(&code, pc);
            if i.op != (LD | IMM | DW) || i.src != pseudo::MAP_VALUE {
                continue;
            }
            let idx = (i.imm - MAP_FD_BASE) as usize;
            let off = Insn::at(&code, pc + 1).imm as u32 as u64;
            let addr = maps[idx].words().as_ptr() as u64 + off;
            let mut lo = i;
            lo.src = 0;
            lo.imm = addr as u32 as i32;
            let mut hi = Insn::at(&code, pc + 1);
            hi.imm = (addr >> 32) as u32 as i32;
            code[pc * INSN_SIZE..(pc + 1) * INSN_SIZE].copy_from_slice(&lo.encode());
            code[(pc + 1) * INSN_SIZE..(pc + 2) * INSN_SIZE].copy_from_slice(&hi.encode());
        }
        Ok(Program {
            name: name.into(),
            v4: interp::uses_v4(&code),
            code: code.into_boxed_slice(),
            maps,
            verified,
            attach: Attach::Interface,
            tails: Vec::new(),
            egress: Vec::new(),
        })
    }

    /// What the kernel lets a program of this attach type do: read
    /// xdp_md's `egress_ifindex` only in a SEC("xdp/devmap") program
    /// (xdp_is_valid_access); return a pointer only from SEC("xdp")
    /// (a cpumap or devmap program's return value is checked).
    fn check_attach(&self) -> Result<(), EbpfError> {
        match self
            .verified
            .ctx_loads
            .iter()
            .find(|l| l.1 == CtxField::EgressIfindex)
        {
            Some(&(pc, ..)) if self.attach != Attach::DevMap => Err(EbpfError::Rejected {
                prog: self.name.clone(),
                err: verifier::VerifyError {
                    pc,
                    why: format!(
                        "invalid context access: egress_ifindex is readable only in a SEC(\"xdp/devmap\") program, not SEC(\"{}\")",
                        self.attach.section()
                    ),
                },
            }),
            _ => match self.verified.pointer_exit {
                Some(pc) if self.attach != Attach::Interface => Err(EbpfError::Rejected {
                    prog: self.name.clone(),
                    err: verifier::VerifyError {
                        pc,
                        why: format!(
                            "r0 at exit must be a number (an XDP action) in a SEC(\"{}\") program, not a pointer",
                            self.attach.section()
                        ),
                    },
                }),
                _ => Ok(()),
            },
        }
    }

    /// The verified, rewritten instructions.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// Whether it uses ISA v4's instructions (run by their own instance
    /// of the interpreter's loop).
    pub fn is_v4(&self) -> bool {
        self.v4
    }

    /// Instructions.
    pub fn insn_count(&self) -> usize {
        self.code.len() / INSN_SIZE
    }

    /// True when the program calls helper `id`.
    pub fn uses_helper(&self, id: i32) -> bool {
        (0..self.insn_count()).any(|pc| {
            let i = Insn::at(&self.code, pc);
            i.op == (insn::JMP | insn::CALL) && i.imm == id
        })
    }

    /// The map `name`.
    pub fn map(&self, name: &str) -> Option<&Arc<Map>> {
        self.usable_maps().find(|m| m.def.name == name)
    }

    /// Its maps but the stand-ins for types cpumapd lacks (which no loaded
    /// program uses): what the control plane and settings may name.
    pub fn usable_maps(&self) -> impl Iterator<Item = &Arc<Map>> {
        self.maps.iter().filter(|m| m.def.unsupported.is_none())
    }

    /// xdp-bench's convention: when the program has `cpus_available`
    /// (ARRAY index -> lcore) and `cpus_count` (ARRAY, key 0), fill them
    /// with the run's targets, so programs spread over them as the built-in
    /// modes do.
    pub fn fill_targets<T: Copy + Into<u32>>(&self, targets: &[T]) {
        if let Some(m) = self
            .map("cpus_available")
            .filter(|m| m.def.kind == MapKind::Array)
        {
            for (i, t) in targets.iter().enumerate() {
                m.update(
                    &(i as u32).to_le_bytes(),
                    &pad((*t).into(), m.def.value_size),
                    crate::abi::update::ANY,
                    0,
                );
            }
        }
        if let Some(m) = self
            .map("cpus_count")
            .filter(|m| m.def.kind == MapKind::Array)
        {
            m.update(
                &0u32.to_le_bytes(),
                &pad(targets.len() as u32, m.def.value_size),
                crate::abi::update::ANY,
                0,
            );
        }
    }
}

/// `*(u64 *)(r10 - STACK_SIZE + 8 * s) = 0` for each 8-byte slot s
/// holding a byte of `bytes` (a bitmap of the stack, as
/// [`verifier::Verified::reads_unwritten`]).
fn zeroing_prologue(bytes: &[u64]) -> Vec<u8> {
    let mut code = Vec::new();
    for s in 0..STACK_SIZE / 8 {
        if (s * 8..s * 8 + 8).any(|b| verifier::byte_bit(bytes, b)) {
            let store = Insn {
                op: ST | MEM | DW,
                dst: 10,
                src: 0,
                off: (s * 8) as i16 - STACK_SIZE as i16,
                imm: 0,
            };
            code.extend_from_slice(&store.encode());
        }
    }
    code
}

/// `v` as a little-endian value of `size` bytes (truncated or zero-padded).
fn pad(v: u32, size: u32) -> Vec<u8> {
    let mut b = vec![0u8; size as usize];
    let le = v.to_le_bytes();
    let n = b.len().min(4);
    b[..n].copy_from_slice(&le[..n]);
    b
}

/// `FILE.o[:NAME]`: the XDP program whose function is NAME, or
/// the only XDP program of the object.
pub fn load_object(spec: &str) -> Result<Program, EbpfError> {
    load_object_with(spec, &globals::options())
}

/// [`load_object`] with explicit options (`--prog-set` values, the CPUs
/// programs see) instead of the run's.
pub fn load_object_with(spec: &str, opts: &globals::LoadOptions) -> Result<Program, EbpfError> {
    let (path, want) = match spec.rsplit_once(':') {
        Some((p, n)) if p.ends_with(".o") => (p, Some(n)),
        _ => (spec, None),
    };
    let bad = |why: String| EbpfError::Object {
        path: path.into(),
        why,
    };
    let md = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !md.is_file() || md.len() > 16 << 20 {
        return Err(bad("not a regular file of at most 16 MiB".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse_object_with(path, &bytes, want, opts)
}

/// Parses and loads an object already in memory (fuzzing and tests).
pub fn parse_object(path: &str, bytes: &[u8], want: Option<&str>) -> Result<Program, EbpfError> {
    parse_object_with(path, bytes, want, &globals::options())
}

/// [`parse_object`] with explicit options.
pub fn parse_object_with(
    path: &str,
    bytes: &[u8],
    want: Option<&str>,
    opts: &globals::LoadOptions,
) -> Result<Program, EbpfError> {
    let bad = |why: String| EbpfError::Object {
        path: path.into(),
        why,
    };
    globals::check_sections(bytes).map_err(bad)?;
    let linked = globals::link_kfuncs(bytes).map_err(bad)?;
    let bytes = linked.as_deref().unwrap_or(bytes);
    // aya-obj 0.3 indexes section data by symbol addresses without checking
    // them, and panics on some malformed objects (found by fuzz/ebpf): a
    // panic while parsing is a bad object, reported as such.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse_and_relocate(bytes, want, opts)
    }))
    .map_err(|_| bad("malformed ELF object (its sections or symbols are inconsistent)".into()))?;
    let (obj, name, defs) = parsed.map_err(bad)?;
    let (code, attach) = program_code(&obj, &name).map_err(bad)?;
    let maps = defs
        .into_iter()
        .map(|d| {
            let pinned = d.pinned;
            opts.shared.get_or_make(path, d, pinned)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| EbpfError::Load {
            prog: name.clone(),
            why,
        })?;
    let tails = tail_programs(&obj, &maps, &opts.prog_arrays).map_err(bad)?;
    let egress = egress_programs(&obj, &maps, &opts.devmaps).map_err(bad)?;
    let mut p = Program::with_maps(&name, &code, maps)?;
    p.attach = attach;
    p.check_attach()?;
    p.tails = tails?;
    p.egress = egress?;
    fill_devmaps(&p, &opts.devmaps).map_err(bad)?;
    Ok(p)
}

/// Map `name`'s `map_flags`: those cpumapd honours, or an error naming the
/// rest.
fn check_map_flags(name: &str, flags: u32) -> Result<(), String> {
    let unknown = flags & !crate::abi::MAP_FLAGS_HONOURED;
    if unknown == 0 {
        return Ok(());
    }
    let names: Vec<&str> = crate::abi::MAP_FLAGS
        .iter()
        .filter(|(bit, _)| unknown & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    Err(format!(
        "map '{name}': map_flags {unknown:#x} ({}) are not supported",
        if names.is_empty() {
            "unknown bits".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// Program `name`'s relocated instructions and where it attaches.
fn program_code(obj: &aya_obj::Object, name: &str) -> Result<(Vec<u8>, Attach), String> {
    let prog = &obj.programs[name];
    let attach = match prog.section {
        aya_obj::ProgramSection::Xdp {
            attach_type: aya_obj::programs::XdpAttachType::CpuMap,
            ..
        } => Attach::CpuMap,
        aya_obj::ProgramSection::Xdp {
            attach_type: aya_obj::programs::XdpAttachType::DevMap,
            ..
        } => Attach::DevMap,
        _ => Attach::Interface,
    };
    let f = obj
        .functions
        .get(&prog.function_key())
        .ok_or_else(|| format!("program '{name}' has no code"))?;
    let mut code = Vec::with_capacity(f.instructions.len() * INSN_SIZE);
    for i in &f.instructions {
        code.extend_from_slice(
            &Insn {
                op: i.code,
                dst: i.dst_reg(),
                src: i.src_reg(),
                off: i.off,
                imm: i.imm,
            }
            .encode(),
        );
    }
    // The map ld_imm64s must carry our fds now.
    for pc in 0..code.len() / INSN_SIZE {
        let i = Insn::at(&code, pc);
        if i.op == (LD | IMM | DW) && i.src == pseudo::MAP_FD && i.imm < MAP_FD_BASE {
            return Err(format!(
                "program '{name}': insn {pc}: a map reference was not relocated"
            ));
        }
    }
    Ok((code, attach))
}

/// `--prog-array`: the object's tail programs (the programs its
/// PROG_ARRAYs hold, in name order, each verified over the object's maps)
/// with the arrays filled. The outer error is the object's (a setting
/// naming a program it lacks); the inner one a tail program's refusal. A
/// setting naming a map the object lacks is for another object.
fn tail_programs(
    obj: &aya_obj::Object,
    maps: &[Arc<Map>],
    sets: &[globals::ProgArraySet],
) -> Result<Result<Vec<Arc<Program>>, EbpfError>, String> {
    let ours: Vec<&globals::ProgArraySet> = sets
        .iter()
        .filter(|s| maps.iter().any(|m| m.def.name == s.map))
        .collect();
    let mut names: Vec<&str> = ours.iter().map(|s| s.prog.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for s in &ours {
        let m = maps.iter().find(|m| m.def.name == s.map).expect("filtered");
        let what = format!("--prog-array {}:{}={}", s.map, s.index, s.prog);
        if m.def.kind != MapKind::ProgArray {
            return Err(format!(
                "{what}: map '{}' is a {}, not a prog_array",
                s.map,
                m.def.kind.name()
            ));
        }
        let slot = names.iter().position(|n| *n == s.prog).expect("listed") as u32 + 1;
        if m.update(
            &s.index.to_le_bytes(),
            &slot.to_le_bytes(),
            crate::abi::update::ANY,
            0,
        ) != 0
        {
            return Err(format!(
                "{what}: index {} is not below max_entries {}",
                s.index, m.def.max_entries
            ));
        }
    }
    programs_named(obj, maps, &names, None, "--prog-array")
}

/// The object's programs `names`, each verified over the object's maps
/// (of attach type `attach` when given). The outer error names a program
/// the object lacks (or of another type); the inner one is a refusal.
fn programs_named(
    obj: &aya_obj::Object,
    maps: &[Arc<Map>],
    names: &[&str],
    attach: Option<Attach>,
    opt: &str,
) -> Result<Result<Vec<Arc<Program>>, EbpfError>, String> {
    let xdp = |p: &aya_obj::Program| matches!(p.section, aya_obj::ProgramSection::Xdp { .. });
    let mut out = Vec::with_capacity(names.len());
    for &n in names {
        if !obj.programs.get(n).is_some_and(xdp) {
            let mut have: Vec<&str> = obj
                .programs
                .iter()
                .filter(|(_, p)| xdp(p))
                .map(|(n, _)| n.as_str())
                .collect();
            have.sort();
            return Err(format!(
                "{opt} ...={n}: the object has no XDP program '{n}' (it has: {})",
                have.join(", ")
            ));
        }
        let (code, kind) = program_code(obj, n)?;
        if let Some(want) = attach.filter(|&a| a != kind) {
            return Err(format!(
                "{opt} ...={n}: program '{n}' is a SEC(\"{}\") program, not SEC(\"{}\")",
                kind.section(),
                want.section()
            ));
        }
        match Program::with_maps(n, &code, maps.to_vec()) {
            Ok(mut p) => {
                p.attach = kind;
                if let Err(e) = p.check_attach() {
                    return Ok(Err(e));
                }
                out.push(Arc::new(p));
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}

/// The programs `--devmap ...,prog=NAME` names for this object's DEVMAPs,
/// in name order (slot n of an entry's program field holds program n + 1).
fn egress_programs(
    obj: &aya_obj::Object,
    maps: &[Arc<Map>],
    sets: &[globals::DevmapSet],
) -> Result<Result<Vec<Arc<Program>>, EbpfError>, String> {
    let mut names: Vec<&str> = sets
        .iter()
        .filter(|s| maps.iter().any(|m| m.def.name == s.map))
        .filter_map(|s| s.prog.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    programs_named(obj, maps, &names, Some(Attach::DevMap), "--devmap")
}

/// `--devmap`: the entries of this object's DEVMAPs the run fills at load
/// (a setting naming a map the object lacks is for another object).
fn fill_devmaps(p: &Program, sets: &[globals::DevmapSet]) -> Result<(), String> {
    for d in sets {
        let Some(m) = p.map(&d.map) else {
            continue;
        };
        if !matches!(m.def.kind, MapKind::DevMap | MapKind::DevMapHash) {
            return Err(format!(
                "--devmap {}:{}={}: map '{}' is a {}, not a devmap",
                d.map,
                d.index,
                d.ifname,
                d.map,
                m.def.kind.name()
            ));
        }
        // struct bpf_devmap_val: ifindex, then the egress program (the
        // kernel's program fd; here its slot + 1, 0 for none).
        let mut val = vec![0u8; m.def.value_size as usize];
        let n = val.len().min(4);
        val[..n].copy_from_slice(&d.ifindex.to_le_bytes()[..n]);
        if let Some(prog) = &d.prog {
            if val.len() < 8 {
                return Err(format!(
                    "--devmap {}:{}={},prog={prog}: map '{}' has {}-byte values, without the program field of struct bpf_devmap_val",
                    d.map, d.index, d.ifname, d.map, m.def.value_size
                ));
            }
            let slot = p
                .egress
                .iter()
                .position(|e| &e.name == prog)
                .expect("loaded") as u32
                + 1;
            val[4..8].copy_from_slice(&slot.to_le_bytes());
        }
        let rc = m.update(&d.index.to_le_bytes(), &val, crate::abi::update::ANY, 0);
        if rc != 0 {
            return Err(format!(
                "--devmap {}:{}={}: the update failed ({rc}; is {} below max_entries {}?)",
                d.map, d.index, d.ifname, d.index, m.def.max_entries
            ));
        }
    }
    Ok(())
}

/// aya-obj's part of loading: parse, pick the program, create the map
/// definitions, relocate. Errors are messages (the caller names the file).
#[allow(clippy::type_complexity)]
fn parse_and_relocate(
    bytes: &[u8],
    want: Option<&str>,
    opts: &globals::LoadOptions,
) -> Result<(aya_obj::Object, String, Vec<MapDef>), String> {
    let bad = |why: String| why;
    let mut obj =
        aya_obj::Object::parse(bytes).map_err(|e| bad(format!("not a BPF ELF object: {e}")))?;
    let xdp: Vec<String> = {
        let mut v: Vec<String> = obj
            .programs
            .iter()
            .filter(|(_, p)| matches!(p.section, aya_obj::ProgramSection::Xdp { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    };
    let name = match want {
        Some(w) => xdp
            .iter()
            .find(|n| n.as_str() == w)
            .cloned()
            .ok_or_else(|| bad(format!("no XDP program '{w}' (it has: {})", xdp.join(", "))))?,
        None => match xdp.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(bad(
                    "no XDP program (a function in a section named \"xdp\" or \"xdp/...\")".into(),
                ));
            }
            many => {
                return Err(bad(format!(
                    "several XDP programs ({}): pick one with FILE.o:NAME",
                    many.join(", ")
                )));
            }
        },
    };
    apply_globals(&mut obj, bytes, opts)?;
    ignored_programs(&obj);
    // Maps in name order get fds MAP_FD_BASE + i.
    let mut names: Vec<String> = obj.maps.keys().cloned().collect();
    names.sort();
    let mut defs = Vec::new();
    let mut sized = Vec::new();
    for n in &names {
        let m = obj.maps.get_mut(n).expect("a listed map");
        let Some(kind) = MapKind::from_kernel(m.map_type()) else {
            // Refused in the programs that use it (Program::with_maps).
            let mut def = MapDef::new(n, MapKind::Array, 4, 8, 1);
            def.unsupported = Some(format!(
                "map '{n}': type {} ({}) is not supported (hash, percpu_hash, lru_hash, lru_percpu_hash, array, percpu_array, lpm_trie, prog_array, devmap, devmap_hash, cpumap and global data are)",
                m.map_type(),
                crate::abi::map_type::name(m.map_type())
            ));
            defs.push(def);
            continue;
        };
        check_map_flags(n, m.map_flags()).map_err(bad)?;
        let data = matches!(
            m.section_kind(),
            aya_obj::EbpfSectionKind::Data
                | aya_obj::EbpfSectionKind::Rodata
                | aya_obj::EbpfSectionKind::Bss
        );
        if m.max_entries() == 0 {
            // A map its tool's loader sizes before load (xdp-bench: the
            // number of possible CPUs).
            m.set_max_entries(opts.nr_cpus);
            sized.push(n.as_str());
        }
        defs.push(MapDef {
            name: n.clone(),
            kind,
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
            readonly: m.map_flags() & crate::abi::BPF_F_RDONLY_PROG != 0,
            flags: m.map_flags(),
            pinned: m.pinning() == aya_obj::maps::PinningType::ByName,
            init: if data { m.data().to_vec() } else { Vec::new() },
            unsupported: None,
        });
    }
    if !sized.is_empty() {
        say_once(format!(
            "cpumapd: maps declared without max_entries get {} (the CPUs programs see, as xdp-bench's loader gives them): {}",
            opts.nr_cpus,
            sized.join(", ")
        ));
    }
    // Sections holding functions (.text): calls and function references
    // into them are relocated as libbpf does.
    let text: std::collections::HashSet<usize> = obj.functions.keys().map(|k| k.0).collect();
    let obj_maps = obj.maps.clone();
    obj.relocate_maps(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), MAP_FD_BASE + i as i32, &obj_maps[n])),
        &text,
    )
    .map_err(|e| bad(format!("map relocation: {e}")))?;
    obj.relocate_calls(&text).map_err(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        bad(format!("call relocation: {e}{cause}"))
    })?;
    Ok((obj, name, defs))
}

/// Writes `--prog-set` values into the object's data sections (before
/// their maps are made, as libbpf's skeleton does), and xdp-bench's
/// `nr_cpus` when it is not set.
fn apply_globals(
    obj: &mut aya_obj::Object,
    bytes: &[u8],
    opts: &globals::LoadOptions,
) -> Result<(), String> {
    let vars = globals::globals(bytes)?;
    let mut sets = opts.sets.clone();
    if !sets.iter().any(|s| s.name == "nr_cpus")
        && vars
            .iter()
            .any(|v| v.name == "nr_cpus" && v.section == ".rodata")
    {
        sets.push(globals::GlobalSet {
            name: "nr_cpus".into(),
            value: opts.nr_cpus as i128,
            raw: None,
        });
    }
    for set in &sets {
        // A set this object lacks is for another object of the run: the
        // configuration checks that some loaded program had it.
        let Some(v) = vars.iter().find(|v| v.name == set.name) else {
            continue;
        };
        let b = set.bytes(v.size).ok_or_else(|| {
            format!(
                "--prog-set {}={}: '{}' is a {}-byte variable in {}; only 1, 2, 4 or 8-byte integers that hold the value, or byte arrays given as exactly that many bytes (aa:bb:..), can be set",
                set.name, set.shown(), v.name, v.size, v.section
            )
        })?;
        let map = obj
            .maps
            .get_mut(&v.section)
            .ok_or_else(|| format!("--prog-set {}: section {} has no map", set.name, v.section))?;
        let data = map.data_mut();
        let dst = data
            .get_mut(v.offset..v.offset + v.size)
            .ok_or_else(|| format!("--prog-set {}: symbol outside {}", set.name, v.section))?;
        dst.copy_from_slice(&b);
    }
    Ok(())
}

/// Says once which of the object's programs are not XDP programs (they
/// are not loaded: cpumapd runs XDP programs only).
fn ignored_programs(obj: &aya_obj::Object) {
    let mut other: Vec<String> = obj
        .programs
        .iter()
        .filter(|(_, p)| !matches!(p.section, aya_obj::ProgramSection::Xdp { .. }))
        .map(|(n, p)| format!("{n} ({:?})", p.section))
        .collect();
    if other.is_empty() {
        return;
    }
    other.sort();
    say_once(format!(
        "cpumapd: ignoring {} non-XDP program(s) of the object (cpumapd runs XDP programs): {}",
        other.len(),
        other.join(", ")
    ));
}

/// Prints a load-time line once per process (an object loaded for the RX
/// filter and again for the remote programs says it once).
fn say_once(line: String) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.contains(&line) {
        eprintln!("{line}");
        said.push(line);
    }
}

/// The global variables an object declares, by name (what `--prog-set`
/// can set).
pub fn object_globals(path: &str) -> Result<Vec<globals::Global>, EbpfError> {
    let bytes = std::fs::read(path).map_err(|e| EbpfError::Object {
        path: path.into(),
        why: e.to_string(),
    })?;
    globals::globals(&bytes).map_err(|why| EbpfError::Object {
        path: path.into(),
        why,
    })
}

/// One lcore's running copy of a program: its stack, context and (with
/// `--jit`) compiled code. Context: the owning lcore.
pub struct Instance {
    prog: Arc<Program>,
    cpu: u32,
    stack: Box<[u8; STACK_SIZE]>,
    ctx: [u8; CTX_SIZE],
    jit: Option<jit::Jit>,
    /// With `--jit`: the program's tail programs, compiled (same order).
    tail_jits: Vec<jit::Jit>,
    /// With `--jit`: its devmap egress programs, compiled (same order).
    egress_jits: Vec<jit::Jit>,
}

/// Where a run starts: the program, one of its tail programs, or a devmap
/// egress program (with the interface the frame goes out of).
#[derive(Clone, Copy)]
enum Start {
    Main,
    Tail(usize),
    Egress(usize, u32),
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("prog", &self.prog.name)
            .field("cpu", &self.cpu)
            .field("jit", &self.jit.is_some())
            .finish()
    }
}

struct RunEnv<'a> {
    maps: &'a [Arc<Map>],
    cpu: u32,
    has: &'a dyn Fn(u32) -> bool,
    redirect: Option<RedirectTo>,
    tail: interp::Tail,
}

impl Env for RunEnv<'_> {
    fn maps(&self) -> &[Arc<Map>] {
        self.maps
    }
    fn cpu(&self) -> u32 {
        self.cpu
    }
    fn ktime_ns(&self) -> u64 {
        ktime_ns()
    }
    fn cpumap_has(&self, key: u32) -> bool {
        (self.has)(key)
    }
    fn set_redirect(&mut self, to: RedirectTo) {
        self.redirect = Some(to);
    }
    fn tail_call(&mut self, map: usize, index: u64) -> u64 {
        self.tail.call(&self.maps[map], index)
    }
}

impl Instance {
    /// An instance for lcore `cpu`; `jit` compiles it.
    pub fn new(prog: Arc<Program>, cpu: u32, jit: bool) -> Result<Instance, EbpfError> {
        let compile = |p: &Arc<Program>| {
            jit::Jit::compile(p.clone(), cpu).map_err(|why| EbpfError::Load {
                prog: p.name.clone(),
                why,
            })
        };
        let (main, tail_jits, egress_jits) = if jit {
            let tails = prog.tails.iter().map(compile).collect::<Result<_, _>>()?;
            let egress = prog.egress.iter().map(compile).collect::<Result<_, _>>()?;
            (Some(compile(&prog)?), tails, egress)
        } else {
            (None, Vec::new(), Vec::new())
        };
        Ok(Instance {
            prog,
            cpu,
            stack: Box::new([0; STACK_SIZE]),
            ctx: [0; CTX_SIZE],
            jit: main,
            tail_jits,
            egress_jits,
        })
    }

    /// The program this instance runs.
    pub fn program(&self) -> &Arc<Program> {
        &self.prog
    }

    /// Map lookups the JIT compiled inline (0 when interpreted).
    pub fn inlined_lookups(&self) -> usize {
        self.jit.as_ref().map_or(0, |j| j.inlined)
    }

    /// Runs the program, then the tail programs its `bpf_tail_call`s jump
    /// to (the kernel's chain: same context and packet, at most
    /// MAX_TAIL_CALLS jumps): the last program's return value and where a
    /// redirect goes (the kernel's per-CPU redirect info outlives a tail
    /// call). None when the interpreter faults.
    #[inline]
    fn run_chain(
        &mut self,
        buf: &mut [u8],
        has: &dyn Fn(u32) -> bool,
        start: Start,
    ) -> Option<(u64, Option<RedirectTo>)> {
        let mut tail = interp::Tail::new(self.prog.tails.len());
        let mut redirect = None;
        let mut current = start;
        loop {
            let (prog, jit) = match current {
                Start::Main => (&self.prog, self.jit.as_ref()),
                Start::Tail(t) => (&self.prog.tails[t], self.tail_jits.get(t)),
                Start::Egress(e, _) => (&self.prog.egress[e], self.egress_jits.get(e)),
            };
            let (ret, to) = match jit {
                Some(j) => j.run(
                    &prog.maps,
                    self.cpu,
                    has,
                    ktime_ns,
                    buf,
                    &mut self.ctx,
                    &mut tail,
                ),
                None => {
                    let mut env = RunEnv {
                        maps: &prog.maps,
                        cpu: self.cpu,
                        has,
                        redirect: None,
                        tail,
                    };
                    let mut mem = Mem {
                        pkt: buf,
                        ctx: &mut self.ctx,
                        stack: &mut self.stack,
                    };
                    let r = if prog.v4 {
                        interp::run::<true>(&prog.code, &mut mem, &mut env)
                    } else {
                        interp::run::<false>(&prog.code, &mut mem, &mut env)
                    }
                    .ok()?;
                    tail = env.tail;
                    (r, env.redirect)
                }
            };
            redirect = to.or(redirect);
            match tail.next.take() {
                Some(next) => current = Start::Tail(next as usize),
                None => return Some((ret, redirect)),
            }
        }
    }

    /// Runs the program on `frame`. `has(key)`: the cpumap has an entry for
    /// `key` (what `bpf_redirect_map` checks). Never panics; no allocation.
    #[inline]
    pub fn run<B: XdpBuffer>(&mut self, frame: &mut B, has: &dyn Fn(u32) -> bool) -> Action {
        let Some((ret, redirect)) = self.run_on(frame, has, Start::Main) else {
            return Action::Aborted;
        };
        match u32::try_from(ret) {
            Ok(xdp::DROP) => Action::Drop,
            Ok(xdp::PASS) => Action::Pass,
            Ok(xdp::TX) => Action::Tx,
            Ok(xdp::REDIRECT) => match redirect {
                Some(RedirectTo::Cpu(k)) => Action::Redirect(k),
                Some(RedirectTo::Dev(ifindex, 0)) => Action::RedirectDev(ifindex),
                Some(RedirectTo::Dev(ifindex, e)) => self.egress(frame, ifindex, e - 1),
                None => Action::Aborted,
            },
            _ => Action::Aborted,
        }
    }

    /// Runs the program on `frame` and returns what it returned (None when
    /// it faulted): what BPF_PROG_TEST_RUN reports as `retval`, for
    /// checking a program's arithmetic against the kernel's. The frame is
    /// changed as [`run`](Self::run) changes it.
    pub fn test_run<B: XdpBuffer>(
        &mut self,
        frame: &mut B,
        has: &dyn Fn(u32) -> bool,
    ) -> Option<u64> {
        self.run_on(frame, has, Start::Main).map(|(ret, _)| ret)
    }

    /// A devmap entry's egress program on a frame redirected there, as the
    /// kernel runs it before transmission (`dev_map_bpf_prog_run`, with
    /// `egress_ifindex` set): XDP_PASS sends it, anything else drops it.
    /// Only a cpumap entry's program gets here (an RX program's devmap
    /// redirect is a miss).
    #[cold]
    fn egress<B: XdpBuffer>(&mut self, frame: &mut B, ifindex: u32, e: u32) -> Action {
        if self.prog.attach != Attach::CpuMap || e as usize >= self.prog.egress.len() {
            return Action::RedirectDev(ifindex);
        }
        match self.run_on(frame, &|_| false, Start::Egress(e as usize, ifindex)) {
            Some((ret, _)) if ret == xdp::PASS as u64 => Action::RedirectDev(ifindex),
            _ => Action::EgressDrop,
        }
    }

    /// Runs from `start` on `frame` (the context built from it, the frame
    /// changed as the programs moved its data and metadata): the return
    /// value and the redirect. None when a run faulted or moved the data
    /// out of the buffer.
    #[inline]
    fn run_on<B: XdpBuffer>(
        &mut self,
        frame: &mut B,
        has: &dyn Fn(u32) -> bool,
        start: Start,
    ) -> Option<(u64, Option<RedirectTo>)> {
        let (ingress_ifindex, queue) = (frame.ingress_ifindex(), frame.rx_queue_index());
        let (meta, rx_hash) = (frame.xdp_meta_len(), frame.rx_hash());
        let (buf, off, len) = frame.xdp_buffer_whole();
        let base = buf.as_ptr() as u64;
        let c = XdpCtx {
            data: base + off as u64,
            data_end: base + (off + len) as u64,
            // The RX program's metadata, for a remote program (meta_len is
            // never more than the headroom).
            data_meta: base + (off - meta.min(off)) as u64,
            // The Linux interface the frame came in on, as in the kernel
            // (0 from ports without one: generator, pcap, most DPDK devices).
            ingress_ifindex,
            // The kernel's cpumap does not report the queue to an entry's
            // program (cpu_map_bpf_prog_run_xdp leaves it 0).
            rx_queue_index: if self.prog.attach == Attach::CpuMap {
                0
            } else {
                queue
            },
            egress_ifindex: match start {
                Start::Egress(_, ifindex) => ifindex,
                Start::Main | Start::Tail(_) => 0,
            },
            rx_hash,
        };
        self.ctx = c.to_bytes();
        // Without tail programs there is no chain: one JIT run.
        let out = match (&self.jit, start) {
            (Some(j), Start::Main) if self.prog.tails.is_empty() => {
                let mut none = interp::Tail::new(0);
                j.run(
                    &self.prog.maps,
                    self.cpu,
                    has,
                    ktime_ns,
                    buf,
                    &mut self.ctx,
                    &mut none,
                )
            }
            _ => self.run_chain(buf, has, start)?,
        };
        // Apply a moved start of data (bpf_xdp_adjust_head) and a moved
        // end (bpf_xdp_adjust_tail).
        let after = XdpCtx::from_bytes(&self.ctx);
        let delta = after.data as i64 - c.data as i64;
        if delta != 0 {
            frame.xdp_adjust_head(delta as isize).then_some(())?;
        }
        if after.data_end != c.data_end {
            let len = after.data_end.saturating_sub(after.data) as usize;
            frame.xdp_set_len(len).then_some(())?;
        }
        if after.data_meta != c.data_meta || delta != 0 {
            frame.xdp_set_meta_len(after.data.saturating_sub(after.data_meta) as usize);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::check_map_flags;
    use crate::abi::{BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG};

    #[test]
    fn map_flags_cpumapd_does_not_honour_are_refused_by_name() {
        // Honoured: preallocation, NUMA, mmap-ability, program-side access.
        for ok in [0, 1, 1 << 2, 1 << 10, BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG] {
            assert_eq!(check_map_flags("m", ok), Ok(()), "{ok:#x}");
        }
        let e = check_map_flags("m", (1 << 12) | (1 << 3)).unwrap_err();
        assert_eq!(
            e,
            "map 'm': map_flags 0x1008 (BPF_F_RDONLY, BPF_F_INNER_MAP) are not supported"
        );
        let e = check_map_flags("m", 1 << 30).unwrap_err();
        assert!(e.contains("0x40000000 (unknown bits)"), "{e}");
    }
}
