//! `egress=kernel` on a port over a Linux interface (net_af_packet,
//! net_af_xdp): the kernel sends its replies straight out of that
//! interface, as it does behind the kernel's own cpumap, instead of into the
//! exception path's reverse direction (written into the TAP, read back by a
//! target lcore and sent out of the port).
//!
//! # General idea
//!
//! The servers' address stays on the exception path's interface (the TAP),
//! where requests arrive; the route back to the clients goes out of the
//! port's interface (the operator's `ip route`, see docs/DATAPLANE.md). For
//! that interface's stack to send, it must resolve its neighbours, and it
//! must not take the requests a second time:
//!
//! * net_af_xdp: cpumapd's XDP program passes ARP and IPv6 neighbour
//!   discovery (ICMPv6 types 133-137) to the interface's stack and
//!   redirects the rest to its sockets, as before.
//! * net_af_packet: a packet socket sees frames beside the stack, so
//!   cpumapd attaches a tcx ingress program (Linux 6.6) that drops IPv4 and
//!   IPv6 other than neighbour discovery after the packet sockets have
//!   taken their copy (taps run before tc ingress). Its BPF link lives as
//!   long as the port's queues; at exit or crash the kernel detaches it.
//!
//! Context: control thread at open time; nothing here runs per packet.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::bpf::{self, Insn, insn};
use super::{PortError, VdevSpec};
use crate::bpf_abi::{PROG_TYPE_SCHED_CLS, SK_BUFF_DATA, SK_BUFF_DATA_END, attach, tcx};

/// Who sends what the kernel answers out of the port's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// cpumapd: the exception path's reverse direction (the default).
    Cpumapd,
    /// The kernel, routed out of the port's own interface.
    Kernel,
}

impl Egress {
    /// The port's `egress=` key.
    pub fn of(spec: &VdevSpec) -> Result<Self, PortError> {
        match spec.get("egress") {
            None | Some("cpumapd") => Ok(Egress::Cpumapd),
            Some("kernel") => Ok(Egress::Kernel),
            Some(other) => Err(PortError::BadVdev {
                vdev: spec.name.clone(),
                why: format!("egress={other}: expected cpumapd or kernel"),
            }),
        }
    }
}

// Opcodes (class | size/op | source) of the few instructions used here.
const LDXW: u8 = 0x61;
const LDXH: u8 = 0x69;
const LDXB: u8 = 0x71;
const MOV_X: u8 = 0xbf;
const MOV_K: u8 = 0xb7;
const ADD_K: u8 = 0x07;
const JA: u8 = 0x05;
const JGT_X: u8 = 0x2d;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JLT_K: u8 = 0xa5;
const JGT_K: u8 = 0x25;
const EXIT: u8 = 0x95;

/// EtherTypes as a little-endian 16-bit load of the header reads them.
const ARP_LE: i32 = 0x0608;
const IPV4_LE: i32 = 0x0008;
const IPV6_LE: i32 = 0xdd86;
/// ICMPv6's router solicitation .. redirect (133-137): neighbour discovery.
const ND_FIRST: i32 = 133;
const ND_LAST: i32 = 137;
const ICMPV6: i32 = 58;

/// Where a classified frame goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    /// ARP and IPv6 neighbour discovery.
    Control,
    /// IPv4, and IPv6 other than neighbour discovery.
    Ip,
    /// Anything else (too short, other EtherTypes).
    Other,
}

/// `(instruction, jump target)`: a jump's offset is filled in by
/// [`resolve`] once the targets' positions are known.
type Asm = Vec<(Insn, Option<To>)>;

/// Classifies the Ethernet frame from r2 (data) to r3 (data_end), both
/// loaded: jumps to `To::Control`, `To::Ip` or `To::Other`, never falls
/// through. Uses r4 and r5; VLAN-tagged frames are `Other`.
fn classify() -> Asm {
    let j = |op, dst, src, imm, to| (insn(op, dst, src, 0, imm), Some(to));
    let i = |op, dst, src, off, imm| (insn(op, dst, src, off, imm), None);
    vec![
        i(MOV_X, 4, 2, 0, 0),
        i(ADD_K, 4, 0, 0, 14),
        j(JGT_X, 4, 3, 0, To::Other), // no Ethernet header
        i(LDXH, 5, 2, 12, 0),
        j(JEQ_K, 5, 0, ARP_LE, To::Control),
        j(JEQ_K, 5, 0, IPV4_LE, To::Ip),
        j(JNE_K, 5, 0, IPV6_LE, To::Other),
        i(ADD_K, 4, 0, 0, 41), // through the ICMPv6 type's byte
        j(JGT_X, 4, 3, 0, To::Ip),
        i(LDXB, 5, 2, 20, 0), // next header
        j(JNE_K, 5, 0, ICMPV6, To::Ip),
        i(LDXB, 5, 2, 54, 0), // ICMPv6 type
        j(JLT_K, 5, 0, ND_FIRST, To::Ip),
        j(JGT_K, 5, 0, ND_LAST, To::Ip),
        j(JA, 0, 0, 0, To::Control),
    ]
}

/// `asm` followed by the three targets' code, each a list of instructions,
/// with every jump's offset set.
fn resolve(asm: Asm, targets: [(To, Vec<Insn>); 3]) -> Vec<Insn> {
    let mut at = asm.len();
    let mut starts = Vec::new();
    for (to, code) in &targets {
        starts.push((*to, at));
        at += code.len();
    }
    let mut out: Vec<Insn> = asm
        .into_iter()
        .enumerate()
        .map(|(pc, (mut x, to))| {
            if let Some(to) = to {
                let (_, t) = starts
                    .iter()
                    .find(|s| s.0 == to)
                    .expect("every target placed");
                x = x.with_off((*t - pc - 1) as i16);
            }
            x
        })
        .collect();
    for (_, code) in targets {
        out.extend(code);
    }
    out
}

/// The XDP program for `egress=kernel`: ARP and neighbour discovery to the
/// interface's stack (XDP_PASS); every other frame runs `redirect` (which
/// starts with r1 the context, as the program's entry has it).
pub fn xdp_program(redirect: &[Insn], pass: i32) -> Vec<Insn> {
    let mut asm: Asm = vec![
        (insn(LDXW, 2, 1, 0, 0), None), // data
        (insn(LDXW, 3, 1, 4, 0), None), // data_end
    ];
    asm.extend(classify());
    resolve(
        asm,
        [
            (
                To::Control,
                vec![insn(MOV_K, 0, 0, 0, pass), insn(EXIT, 0, 0, 0, 0)],
            ),
            (To::Ip, redirect.to_vec()),
            // Not IP: as before, to the sockets (the redirect).
            (
                To::Other,
                vec![insn(JA, 0, 0, -(redirect.len() as i16) - 1, 0)],
            ),
        ],
    )
}

/// The tcx ingress program for a packet-socket port with `egress=kernel`:
/// drops IP (not neighbour discovery) before the interface's stack takes
/// it; the packet sockets already have their copy.
fn tcx_program() -> Vec<Insn> {
    let mut asm: Asm = vec![
        (insn(LDXW, 2, 1, SK_BUFF_DATA, 0), None),
        (insn(LDXW, 3, 1, SK_BUFF_DATA_END, 0), None),
    ];
    asm.extend(classify());
    let verdict = |v| vec![insn(MOV_K, 0, 0, 0, v), insn(EXIT, 0, 0, 0, 0)];
    resolve(
        asm,
        [
            (To::Control, verdict(tcx::NEXT)),
            (To::Ip, verdict(tcx::DROP)),
            (To::Other, verdict(tcx::NEXT)),
        ],
    )
}

/// The tcx ingress program attached to an interface; dropping the last
/// clone detaches it.
pub struct IngressDrop {
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl IngressDrop {
    /// Loads and attaches [`tcx_program`] to `ifindex`.
    pub fn attach(ifindex: u32) -> io::Result<Arc<Self>> {
        let prog = bpf::prog_load(
            PROG_TYPE_SCHED_CLS,
            attach::TCX_INGRESS,
            &tcx_program(),
            "cpumapd_egress",
        )?;
        let link = bpf::link_create(&prog, ifindex, attach::TCX_INGRESS, 0)?;
        Ok(Arc::new(Self {
            _prog: prog,
            _link: link,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_key_takes_two_values_and_names_a_wrong_one() {
        let spec = |v: &str| VdevSpec::parse(&format!("net_af_xdp0,iface=lo{v}")).unwrap();
        assert_eq!(Egress::of(&spec("")).unwrap(), Egress::Cpumapd);
        assert_eq!(
            Egress::of(&spec(",egress=cpumapd")).unwrap(),
            Egress::Cpumapd
        );
        assert_eq!(Egress::of(&spec(",egress=kernel")).unwrap(), Egress::Kernel);
        let e = Egress::of(&spec(",egress=tap")).unwrap_err().to_string();
        assert!(e.contains("egress=tap: expected cpumapd or kernel"), "{e}");
    }

    /// Every jump of both programs lands on an instruction of its own
    /// program (the kernel's verifier checks the rest at load, in
    /// tests/kernel_path.rs).
    #[test]
    fn every_jump_lands_inside_the_program() {
        let redirect = [insn(MOV_K, 0, 0, 0, 2), insn(EXIT, 0, 0, 0, 0)];
        for prog in [xdp_program(&redirect, 2), tcx_program()] {
            for (pc, i) in prog.iter().enumerate() {
                let code = i.code();
                if code & 0x07 == 0x05 && code != EXIT {
                    let to = pc as i64 + 1 + i.off() as i64;
                    assert!(
                        (0..prog.len() as i64).contains(&to),
                        "insn {pc} jumps to {to}"
                    );
                }
            }
            // The kernel wants the last instruction to leave (exit or ja).
            assert!(matches!(prog.last().map(Insn::code), Some(EXIT | JA)));
        }
    }
}
