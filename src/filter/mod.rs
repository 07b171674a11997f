//! The filter stage: what an XDP program is to the kernel's cpumap.
//!
//! An RX lcore runs its [`Filter`] on every received frame and acts on the
//! [`Verdict`]. The built-in programs are the eight `xdp-bench redirect-cpu`
//! modes (xdp-tools, xdp_redirect_cpumap.bpf.c), with the same names and
//! the same choice of target:
//!
//! | mode         | target index                                   | else          |
//! |--------------|------------------------------------------------|---------------|
//! | no-touch     | 0, packet not read                              |               |
//! | touch        | 0                                               | <14 B: aborted; 802.3 length: drop |
//! | round-robin  | per-lcore counter mod n                         |               |
//! | l4-proto     | TCP 0, UDP 1, ICMP/ICMPv6 2, other 0 (mod n)    | no L2: pass   |
//! | l4-filter    | as l4-proto; UDP to port 9 (pktgen) dropped     | no L2: pass   |
//! | l4-hash      | SuperFastHash(saddr+daddr, 15485863+proto) mod n, symmetric | no L2: pass |
//! | l4-sport     | TCP/UDP source port mod n, else 0               | no L2: pass   |
//! | l4-dport     | TCP/UDP destination port mod n, else 0          | no L2: pass   |
//!
//! "Target index" indexes the configured target list (xdp-bench's
//! `cpus_available`), in `--cpu` order. Deliberate differences from xdp-bench:
//! a non-IP ethertype is "other" (index 0) in l4-proto/l4-filter, where
//! xdp-bench's initial `ip_proto = IPPROTO_UDP` sends it to index 1 against
//! its own comment; IPv4 headers are honoured with their IHL, invalid IP
//! headers are "other", IPv4 fragments carry no ports, and index 2 wraps
//! modulo the number of targets instead of looking past the array.
//!
//! Filters never panic on any input: they read only through the checked
//! views in [`crate::wire`].

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use thiserror::Error;

/// The eBPF engine (the `cpumapd-ebpf` crate): real XDP objects loaded,
/// verified and run in userspace. [`Frame`] is its packet buffer and its
/// [`Action`](ebpf::Action) becomes a [`Verdict`].
pub use cpumapd_ebpf as ebpf;

use crate::frame::Frame;
use crate::ids::TargetId;
use crate::wire::{self, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP, L3};

/// What to do with a frame (XDP's actions, with the redirect target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// To the local stack: the lcore's exception path.
    Pass,
    /// Drop the frame.
    Drop,
    /// Back out of the port it came in on.
    Tx,
    /// Into the cpumap entry of this target.
    Redirect(TargetId),
    /// Out of the interface with this ifindex (an eBPF program's DEVMAP
    /// redirect or `bpf_redirect`; the target's transmit leg).
    RedirectDev(u32),
    /// The devmap entry's egress program did not pass the frame (dropped,
    /// counted as `egress_drop`).
    EgressDrop,
    /// The program failed; the frame is dropped and counted as aborted.
    Aborted,
}

impl From<ebpf::Action> for Verdict {
    #[inline(always)]
    fn from(a: ebpf::Action) -> Verdict {
        match a {
            ebpf::Action::Aborted => Verdict::Aborted,
            ebpf::Action::Drop => Verdict::Drop,
            ebpf::Action::Pass => Verdict::Pass,
            ebpf::Action::Tx => Verdict::Tx,
            ebpf::Action::Redirect(k) => Verdict::Redirect(TargetId(k)),
            ebpf::Action::RedirectDev(i) => Verdict::RedirectDev(i),
            ebpf::Action::EgressDrop => Verdict::EgressDrop,
        }
    }
}

/// A frame as an XDP program sees it. `ingress_ifindex` is the Linux
/// interface of the port it came in on (0 for ports without one).
impl ebpf::XdpBuffer for Frame {
    #[inline(always)]
    fn xdp_buffer_whole(&mut self) -> (&mut [u8], usize, usize) {
        Frame::xdp_buffer_whole(self)
    }
    #[inline(always)]
    fn xdp_adjust_head(&mut self, delta: isize) -> bool {
        self.adjust_head(delta).is_ok()
    }
    #[inline(always)]
    fn xdp_set_len(&mut self, len: usize) -> bool {
        self.set_len(len).is_ok()
    }
    #[inline(always)]
    fn xdp_meta_len(&self) -> usize {
        self.meta_len()
    }
    #[inline(always)]
    fn xdp_set_meta_len(&mut self, n: usize) {
        self.set_meta_len(n)
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        crate::port::ifindex(self.port())
    }
    #[inline(always)]
    fn rx_queue_index(&self) -> u32 {
        self.queue() as u32
    }
    #[inline(always)]
    fn rx_hash(&self) -> u32 {
        self.rss_hash()
    }
}

/// The eight xdp-bench redirect-cpu modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Redirect every frame to the first target without reading it.
    NoTouch,
    /// Read the Ethernet header, then redirect to the first target.
    Touch,
    /// Spread frames over the targets in turn.
    RoundRobin,
    /// By L4 protocol, as xdp-bench's `cpumap_l4_proto`.
    L4Proto,
    /// Drop UDP to port 9 (discard), the rest as l4-proto: xdp-bench's `cpumap_l4_filter`.
    L4Filter,
    #[default]
    /// By a hash of the 5-tuple.
    L4Hash,
    /// By the source port.
    L4Sport,
    /// By the destination port.
    L4Dport,
}

impl Mode {
    /// Every mode, in xdp-bench's order.
    pub const ALL: [Mode; 8] = [
        Mode::NoTouch,
        Mode::Touch,
        Mode::RoundRobin,
        Mode::L4Proto,
        Mode::L4Filter,
        Mode::L4Hash,
        Mode::L4Sport,
        Mode::L4Dport,
    ];

    /// The mode's xdp-bench name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::NoTouch => "no-touch",
            Mode::Touch => "touch",
            Mode::RoundRobin => "round-robin",
            Mode::L4Proto => "l4-proto",
            Mode::L4Filter => "l4-filter",
            Mode::L4Hash => "l4-hash",
            Mode::L4Sport => "l4-sport",
            Mode::L4Dport => "l4-dport",
        }
    }
}

/// The filter mode the control plane wants (`ctl mode set`): one byte,
/// written by the control plane, read by every RX lcore at the start of its
/// poll. Nothing else is published with it, so Relaxed is enough: an lcore
/// switches at most one poll later than the store.
#[derive(Debug)]
pub struct ModeSwitch(AtomicU8);

impl ModeSwitch {
    /// A switch set to `mode`.
    pub fn new(mode: Mode) -> Self {
        Self(AtomicU8::new(mode as u8))
    }

    /// Context: any thread; on an RX lcore, once per poll.
    #[inline(always)]
    pub fn get(&self) -> Mode {
        // Only `set` writes, and only with `mode as u8`.
        Mode::ALL[self.0.load(Ordering::Relaxed) as usize % Mode::ALL.len()]
    }

    /// Context: control plane.
    pub fn set(&self, mode: Mode) {
        self.0.store(mode as u8, Ordering::Relaxed);
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "unknown mode '{0}': expected one of no-touch, touch, round-robin, l4-proto, l4-filter, l4-hash, l4-sport, l4-dport"
)]
/// A `--mode` that is not one of [`Mode::ALL`].
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// Errors building a filter.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("the filter needs at least one redirect target")]
    /// The filter has no target to redirect to.
    NoTargets,
    #[error("{0}")]
    /// The eBPF program could not be instantiated.
    Ebpf(String),
}

/// A built-in program instance, or this lcore's instance of an eBPF
/// program (`--prog`). One per RX lcore: the round-robin counter is per
/// lcore (xdp-bench's PERCPU_ARRAY), so nothing is shared.
#[derive(Debug)]
pub struct Filter {
    mode: Mode,
    targets: Box<[TargetId]>,
    rr_next: u32,
    ebpf: Option<ebpf::Instance>,
}

const L4_HASH_INITVAL: u32 = 15_485_863;

/// Paul Hsieh's SuperFastHash for exactly 4 bytes (xdp-bench hash_func01.h),
/// reading 16-bit words little-endian as x86 does.
#[inline(always)]
pub fn super_fast_hash4(data: [u8; 4], initval: u32) -> u32 {
    let mut hash = initval;
    hash = hash.wrapping_add(u16::from_le_bytes([data[0], data[1]]) as u32);
    let tmp = ((u16::from_le_bytes([data[2], data[3]]) as u32) << 11) ^ hash;
    hash = (hash << 16) ^ tmp;
    hash = hash.wrapping_add(hash >> 11);
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// The symmetric IP-pair hash of l4-hash (0 for non-IP).
#[inline(always)]
pub fn l4_hash(p: &wire::Parsed<'_>) -> u32 {
    let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    match p.l3 {
        L3::Ipv4(ip) => {
            let sum = le(&ip.src_bytes()).wrapping_add(le(&ip.dst_bytes()));
            super_fast_hash4(
                sum.to_le_bytes(),
                L4_HASH_INITVAL.wrapping_add(ip.protocol() as u32),
            )
        }
        L3::Ipv6(ip) => {
            let (s, d) = (ip.src_bytes(), ip.dst_bytes());
            let mut sum = 0u32;
            for w in 0..4 {
                sum = sum
                    .wrapping_add(le(&s[w * 4..]))
                    .wrapping_add(le(&d[w * 4..]));
            }
            super_fast_hash4(
                sum.to_le_bytes(),
                L4_HASH_INITVAL.wrapping_add(ip.next_header() as u32),
            )
        }
        L3::Other(_) => 0,
    }
}

/// l4-proto's index: TCP 0, UDP 1, ICMP/ICMPv6 2, anything else 0.
#[inline(always)]
pub fn l4_proto_index(proto: Option<u8>) -> u32 {
    match proto {
        Some(IPPROTO_UDP) => 1,
        Some(IPPROTO_ICMP | IPPROTO_ICMPV6) => 2,
        _ => 0,
    }
}

impl Filter {
    /// A filter in `mode` over `targets`.
    pub fn new(mode: Mode, targets: &[TargetId]) -> Result<Self, FilterError> {
        if targets.is_empty() {
            return Err(FilterError::NoTargets);
        }
        Ok(Self {
            mode,
            targets: targets.into(),
            rr_next: 0,
            ebpf: None,
        })
    }

    /// Runs `inst` instead of the built-in mode (`--prog`).
    pub fn set_program(&mut self, inst: ebpf::Instance) {
        self.ebpf = Some(inst);
    }

    /// The eBPF program, when one replaces the mode.
    pub fn program(&self) -> Option<&ebpf::Instance> {
        self.ebpf.as_ref()
    }

    /// Runs the eBPF program if one is loaded, else the built-in mode.
    /// `has(key)`: the cpumap has an entry for key (bpf_redirect_map).
    /// Context: the owning RX lcore. Never panics; allocates nothing.
    #[inline(always)]
    pub fn run_frame(&mut self, f: &mut Frame, has: &dyn Fn(u32) -> bool) -> Verdict {
        match &mut self.ebpf {
            Some(inst) => inst.run(f, has).into(),
            None => self.run(f.data()),
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches the program; round-robin starts again at the first target.
    /// Context: the owning RX lcore, between polls.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.rr_next = 0;
    }

    /// The targets it redirects to.
    pub fn targets(&self) -> &[TargetId] {
        &self.targets
    }

    #[inline(always)]
    fn to(&self, idx: u32) -> Verdict {
        // targets is non-empty (checked in new), so the modulo is defined.
        Verdict::Redirect(self.targets[(idx as usize) % self.targets.len()])
    }

    /// Runs the program on one frame. Always inlined: into the RX loop, the
    /// mode dispatch is one predictable branch (out of line it cost ~8% of
    /// the null pipeline, docs/PERFORMANCE.md).
    /// Context: the owning RX lcore. Never panics; allocates nothing.
    #[inline(always)]
    pub fn run(&mut self, pkt: &[u8]) -> Verdict {
        match self.mode {
            Mode::NoTouch => self.to(0),
            Mode::Touch => match wire::EthernetFrame::new_checked(pkt) {
                None => Verdict::Aborted,
                Some(eth) if eth.ethertype() < wire::ETH_P_802_3_MIN => Verdict::Drop,
                Some(_) => self.to(0),
            },
            Mode::RoundRobin => {
                let idx = self.rr_next;
                self.rr_next = if idx + 1 >= self.targets.len() as u32 {
                    0
                } else {
                    idx + 1
                };
                self.to(idx)
            }
            Mode::L4Proto | Mode::L4Filter | Mode::L4Hash | Mode::L4Sport | Mode::L4Dport => {
                let Some(p) = wire::parse(pkt) else {
                    return Verdict::Pass;
                };
                match self.mode {
                    Mode::L4Hash => self.to(l4_hash(&p) % self.targets.len() as u32),
                    Mode::L4Sport => self.to(p.ports().map_or(0, |(s, _)| s as u32)),
                    Mode::L4Dport => self.to(p.ports().map_or(0, |(_, d)| d as u32)),
                    Mode::L4Filter
                        if p.ip_proto() == Some(IPPROTO_UDP)
                            && p.ports().map(|(_, d)| d) == Some(9) =>
                    {
                        Verdict::Drop
                    }
                    _ => self.to(l4_proto_index(p.ip_proto())),
                }
            }
        }
    }
}

/// The program a cpumap entry runs on its target before the exception path
/// (kernel 5.9's `bpf_cpumap_val.bpf_prog`); xdp-bench's `--remote-action`,
/// or a real eBPF program (`FILE.o[:NAME]`).
#[derive(Clone, Debug)]
pub enum RemoteProg {
    /// `cpumap_pass`: every frame to the stack.
    Pass,
    /// `cpumap_drop`: every frame dropped (counted as a remote drop).
    Drop,
    /// `cpumap_redirect` (xdp-bench's `-r redirect -D IF`): every frame
    /// out of this interface, sent by the target.
    Redirect {
        /// The interface's index (resolved when parsed).
        ifindex: u32,
        /// Its name, as given.
        name: String,
    },
    /// A loaded eBPF program; each target runs its own instance.
    Bpf(std::sync::Arc<ebpf::Program>),
}

impl PartialEq for RemoteProg {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RemoteProg::Pass, RemoteProg::Pass) | (RemoteProg::Drop, RemoteProg::Drop) => true,
            (RemoteProg::Redirect { ifindex: a, .. }, RemoteProg::Redirect { ifindex: b, .. }) => {
                a == b
            }
            (RemoteProg::Bpf(a), RemoteProg::Bpf(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for RemoteProg {}

impl RemoteProg {
    /// The program's name as `--remote-action` and `ctl` show it.
    pub fn name(&self) -> String {
        match self {
            RemoteProg::Pass => "pass".into(),
            RemoteProg::Drop => "drop".into(),
            RemoteProg::Redirect { name, .. } => format!("redirect:{name}"),
            RemoteProg::Bpf(p) => format!("bpf:{}", p.name),
        }
    }

    /// `drop`, `pass`, `redirect:IF`, or an eBPF object `FILE.o[:NAME]`
    /// (loaded and verified here, with the running pipeline's load options).
    pub fn parse(s: &str) -> Result<RemoteProg, String> {
        Self::parse_with(s, &ebpf::globals::options())
    }

    /// [`parse`](Self::parse) with explicit load options.
    pub fn parse_with(s: &str, opts: &ebpf::globals::LoadOptions) -> Result<RemoteProg, String> {
        match s {
            "pass" => Ok(RemoteProg::Pass),
            "drop" => Ok(RemoteProg::Drop),
            r if r.starts_with("redirect:") => {
                let name = &r["redirect:".len()..];
                match crate::port::netdev::index(name) {
                    Some(ifindex) if !name.is_empty() => Ok(RemoteProg::Redirect {
                        ifindex,
                        name: name.to_string(),
                    }),
                    _ => Err(format!(
                        "remote program '{r}': no interface named '{name}' here (redirect:IF sends every frame out of IF)"
                    )),
                }
            }
            f if f.contains(".o") => {
                let p = ebpf::load_object_with(f, opts).map_err(|e| e.to_string())?;
                if p.attach != ebpf::Attach::CpuMap {
                    // The kernel's cpumap takes only programs whose expected
                    // attach type is BPF_XDP_CPUMAP (EINVAL otherwise).
                    return Err(format!(
                        "{f}: program '{}' is a SEC(\"{}\") program; a cpumap entry runs SEC(\"xdp/cpumap\") programs only, as the kernel's does",
                        p.name,
                        p.attach.section()
                    ));
                }
                Ok(RemoteProg::Bpf(std::sync::Arc::new(p)))
            }
            other => Err(format!(
                "unknown remote program '{other}': expected drop, pass, redirect:IF or an eBPF object FILE.o[:NAME]"
            )),
        }
    }
}

/// A target's runner of its entry's remote program (the kernel's
/// `cpu_map_bpf_prog_run_xdp`): the one place a target turns a frame and
/// its entry's program into a verdict. The built-ins answer directly; an
/// eBPF program runs through this target's own instance, made when an
/// entry first hands over a burst with that program.
pub struct RemoteRunner {
    lcore: u32,
    jit: bool,
    inst: Option<ebpf::Instance>,
}

impl RemoteRunner {
    /// A runner for target lcore `lcore`; `jit` compiles eBPF programs.
    pub fn new(lcore: u32, jit: bool) -> Self {
        Self {
            lcore,
            jit,
            inst: None,
        }
    }

    /// Readies the runner for `prog` before a burst. Cold when the entry's
    /// program changed: a new instance is made (a JIT failure falls back to
    /// the interpreter; an instance that cannot be made leaves every frame
    /// of that program aborted). Context: the owning target lcore.
    #[inline(always)]
    pub fn select(&mut self, prog: &RemoteProg) {
        if let RemoteProg::Bpf(p) = prog
            && self
                .inst
                .as_ref()
                .is_none_or(|i| !std::sync::Arc::ptr_eq(i.program(), p))
        {
            self.instantiate(p);
        }
    }

    /// Makes this target's instance of `p`. Cold: once per program change.
    #[cold]
    #[inline(never)]
    fn instantiate(&mut self, p: &std::sync::Arc<ebpf::Program>) {
        self.inst = ebpf::Instance::new(p.clone(), self.lcore, self.jit)
            .or_else(|_| ebpf::Instance::new(p.clone(), self.lcore, false))
            .ok();
    }

    /// The verdict of `prog` (as last [`select`](Self::select)ed) on `f`.
    /// A remote program cannot redirect into the cpumap: every key misses.
    /// Context: the owning target lcore.
    #[inline(always)]
    pub fn run(&mut self, prog: &RemoteProg, f: &mut Frame) -> Verdict {
        match (prog, self.inst.as_mut()) {
            (RemoteProg::Pass, _) => Verdict::Pass,
            (RemoteProg::Drop, _) => Verdict::Drop,
            (RemoteProg::Redirect { ifindex, .. }, _) => Verdict::RedirectDev(*ifindex),
            (RemoteProg::Bpf(_), Some(inst)) => inst.run(f, &|_| false).into(),
            (RemoteProg::Bpf(_), None) => Verdict::Aborted,
        }
    }
}

impl FromStr for RemoteProg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RemoteProg::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests_support::{ipv6_frame, udp4_frame};

    fn t(ids: &[u32]) -> Vec<TargetId> {
        ids.iter().map(|&i| TargetId(i)).collect()
    }

    #[test]
    fn mode_names_round_trip_and_unknown_is_an_error() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        let e = "l4-magic".parse::<Mode>().unwrap_err();
        assert!(e.to_string().contains("unknown mode 'l4-magic'"));
    }

    #[test]
    fn no_targets_is_an_error() {
        assert_eq!(
            Filter::new(Mode::L4Hash, &[]).unwrap_err(),
            FilterError::NoTargets
        );
    }

    #[test]
    fn touch_mode_verdicts() {
        let mut f = Filter::new(Mode::Touch, &t(&[4, 5])).unwrap();
        assert_eq!(f.run(&[0; 13]), Verdict::Aborted);
        let mut short_len = [0u8; 14];
        short_len[12] = 0x05;
        assert_eq!(f.run(&short_len), Verdict::Drop);
        assert_eq!(
            f.run(&udp4_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2)),
            Verdict::Redirect(TargetId(4))
        );
    }

    #[test]
    fn round_robin_cycles_per_instance() {
        let mut f = Filter::new(Mode::RoundRobin, &t(&[1, 2, 3])).unwrap();
        let got: Vec<_> = (0..7).map(|_| f.run(&[])).collect();
        let want: Vec<_> = [1, 2, 3, 1, 2, 3, 1]
            .iter()
            .map(|&i| Verdict::Redirect(TargetId(i)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn l4_filter_drops_udp_port_9_only() {
        let mut f = Filter::new(Mode::L4Filter, &t(&[1, 2, 3])).unwrap();
        assert_eq!(
            f.run(&udp4_frame([1, 1, 1, 1], [2, 2, 2, 2], 5, 9)),
            Verdict::Drop
        );
        assert_eq!(
            f.run(&udp4_frame([1, 1, 1, 1], [2, 2, 2, 2], 9, 10)),
            Verdict::Redirect(TargetId(2))
        );
    }

    #[test]
    fn l4_hash_is_symmetric_and_spreads() {
        let mut f = Filter::new(Mode::L4Hash, &t(&[1, 2, 3, 4])).unwrap();
        let mut hit = [0u32; 5];
        for i in 0..64u8 {
            let a = udp4_frame([10, 0, 0, i], [192, 0, 2, 1], 1000, 53);
            let b = udp4_frame([192, 0, 2, 1], [10, 0, 0, i], 53, 1000);
            let va = f.run(&a);
            assert_eq!(va, f.run(&b), "swapping src/dst keeps the target");
            if let Verdict::Redirect(TargetId(x)) = va {
                hit[x as usize] += 1;
            }
        }
        assert!(
            hit[1..].iter().all(|&n| n > 0),
            "64 flows reach all 4 targets: {hit:?}"
        );
        let v6a = ipv6_frame([1; 16], [2; 16], 6);
        let v6b = ipv6_frame([2; 16], [1; 16], 6);
        assert_eq!(f.run(&v6a), f.run(&v6b));
    }

    #[test]
    fn super_fast_hash_matches_the_c_reference() {
        // Values printed by hash_func01.h's SuperFastHash4 compiled with gcc
        // on x86_64 (the header itself is not part of this repository).
        assert_eq!(
            super_fast_hash4([1, 2, 3, 4], L4_HASH_INITVAL + 17),
            3_885_879_363
        );
        assert_eq!(super_fast_hash4([0xff; 4], 0), 652_401_842);
        // l4-hash of UDP 10.0.0.1 -> 10.0.0.2, as the BPF program computes it.
        let f = udp4_frame([10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        assert_eq!(l4_hash(&crate::wire::parse(&f).unwrap()), 4_136_231_318);
    }

    #[test]
    fn port_modes_use_the_port_modulo_targets() {
        let mut s = Filter::new(Mode::L4Sport, &t(&[7, 8, 9])).unwrap();
        let mut d = Filter::new(Mode::L4Dport, &t(&[7, 8, 9])).unwrap();
        let f = udp4_frame([1, 2, 3, 4], [5, 6, 7, 8], 4, 8);
        assert_eq!(s.run(&f), Verdict::Redirect(TargetId(8)));
        assert_eq!(d.run(&f), Verdict::Redirect(TargetId(9)));
        assert_eq!(
            s.run(&ipv6_frame([0; 16], [0; 16], 99)),
            Verdict::Redirect(TargetId(7))
        );
    }

    #[test]
    fn garbage_never_panics_in_any_mode() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for m in Mode::ALL {
                let mut f = Filter::new(m, &t(&[1, 2])).unwrap();
                let _ = f.run(&buf);
            }
        }
    }
}
