//! `cpumapd --check-config FILE [EAL args] [-- app args]`: validates a
//! profile and prints the plan it resolves to, then exits.
//!
//! Nothing starts: no lcore, no EAL, no hugepage, no device. A native
//! profile resolves exactly as a run would (files opened, eBPF objects
//! loaded and verified). A DPDK profile (`backend = "dpdk"`) has its EAL
//! arguments checked as `rte_eal_init` would read them — syntax, lcores
//! and the main lcore, PCI addresses, the memory options that cannot be
//! combined — and its ports predicted from them in DPDK's order (the PCI
//! allow-list by address, then the vdevs as given); device capabilities
//! (queue counts, RSS) are the device's, checked when the run starts. A
//! DPDK profile is checked in any build, so CI validates the production
//! profiles without DPDK or a NIC.

use std::fmt::Write as _;
use std::path::Path;

use super::eal_check::host_hugepages;
pub use super::eal_check::{DeclaredPort, DpdkEal};
use super::topology::Topology;
use super::{Backend, ConfigError, Parsed, Plan, PortSpec};
use crate::exception::ExceptionSpec;
use crate::ids::LcoreId;

/// A validated profile: the plan and what the check has to say about it.
pub struct Checked {
    /// The plan the profile resolves to.
    pub plan: Plan,
    /// The backend the profile is for.
    pub backend: Backend,
    /// The EAL arguments as DPDK would read them (DPDK profiles).
    pub eal: Option<DpdkEal>,
    /// What an operator should know (lcores sharing a CPU, too few hugepages, ...).
    pub warnings: Vec<String>,
    /// Where the lcores and ports sit on this host.
    pub topology: Topology,
}

/// Validates `cpumapd --check-config FILE [EAL args] [-- app args]` (`args`
/// without `--check-config`, FILE first).
pub fn check(args: &[String]) -> Result<Checked, ConfigError> {
    let Some((file, rest)) = args.split_first() else {
        return Err(ConfigError::Args(
            "--check-config needs a file: cpumapd --check-config FILE [EAL args] [-- app args]"
                .into(),
        ));
    };
    let (eal_args, app_args) = super::split_args(rest);
    let mut full: Vec<String> = eal_args.to_vec();
    full.extend(["--".into(), "--config".into(), file.clone()]);
    full.extend(app_args.iter().cloned());
    let parsed = Parsed::parse_any_backend(&full)?;
    let backend = parsed.backend;
    let (plan, eal) = match backend {
        Backend::Native => (Plan::resolve_native(parsed)?, None),
        Backend::Dpdk => {
            let eal = DpdkEal::parse(&parsed.eal_args)?;
            let ports = eal.ports()?;
            if ports.is_empty() {
                return Err(ConfigError::Plan(
                    "the EAL arguments name no port: allow a NIC with -a PCI_ADDR (bound to vfio-pci) or add a --vdev (e.g. --vdev net_null0)".into(),
                ));
            }
            let workers = eal
                .lcores
                .iter()
                .filter(|l| l.id != eal.main)
                .cloned()
                .collect();
            let ports = ports.into_iter().map(PortSpec::Declared).collect();
            let plan = Plan::resolve_eal_lcores(parsed, eal.main, workers, ports)?;
            (plan, Some(eal))
        }
    };
    let topology = Topology::detect();
    let mut warnings = eal.as_ref().map(|e| e.warnings.clone()).unwrap_or_default();
    warnings.extend(placement_warnings(&plan, &topology));
    if let ExceptionSpec::VirtioUser(v) = &plan.exception
        && !v.path.exists()
    {
        warnings.push(if v.path == Path::new("/dev/vhost-net") {
            format!(
                "{} does not exist on this host (no vhost-net module): virtio-user will fail to start; use tap:IFNAME",
                v.path.display()
            )
        } else {
            format!(
                "{} does not exist yet: start the vhost-user backend before cpumapd",
                v.path.display()
            )
        });
    }
    if backend == Backend::Dpdk && !cfg!(feature = "dpdk") {
        warnings.push(
            "this cpumapd was built without DPDK: run the profile with a build that has it (cargo build --release --features dpdk)".into(),
        );
    }
    Ok(Checked {
        plan,
        backend,
        eal,
        warnings,
        topology,
    })
}

/// The NUMA node of a port's device: a PCI address's (sysfs, as hwloc
/// reads it), an ethdev's socket, a Linux interface's device (AF_PACKET,
/// AF_XDP); None for virtual devices and hosts without NUMA.
pub fn port_node(topo: &Topology, port: &PortSpec) -> Option<u32> {
    match port {
        PortSpec::Declared(d) if d.driver == "pci" => {
            topo.pci_node(d.name.split(',').next().unwrap_or(&d.name))
        }
        PortSpec::Declared(_) => None,
        #[cfg(feature = "dpdk")]
        PortSpec::Dpdk(i) => u32::try_from(i.socket).ok(),
        PortSpec::Native(v) => topo.netdev_node(v.get("iface")?),
    }
}

/// Placement an operator should hear about: lcores pinned to one CPU, an
/// RX lcore and its target on two SMT threads of one core, a target on
/// another NUMA node than the RX lcores that feed it, and a port's queues
/// polled from another node than the port's.
pub fn placement_warnings(plan: &Plan, topo: &Topology) -> Vec<String> {
    let mut w = Vec::new();
    let rx_lcores = plan.rx_lcores();
    let pipeline: Vec<LcoreId> = rx_lcores
        .iter()
        .copied()
        .chain(plan.targets.iter().copied())
        .collect();
    for (i, a) in pipeline.iter().enumerate() {
        for b in &pipeline[i + 1..] {
            let shared: Vec<_> = plan
                .cpus_of(*a)
                .iter()
                .filter(|c| plan.cpus_of(*b).contains(c))
                .collect();
            if !shared.is_empty() {
                w.push(format!(
                    "{a} and {b} share cpu {shared:?}: poll-mode lcores spin, so each gets part of a CPU (fine for tests, not for production)"
                ));
            }
        }
    }
    let first_cpu = |l: LcoreId| plan.cpus_of(l).first().copied();
    for &r in &rx_lcores {
        for &t in &plan.targets {
            if let (Some(a), Some(b)) = (first_cpu(r), first_cpu(t))
                && topo.smt_siblings(a, b)
            {
                w.push(format!(
                    "RX {r} (cpu {a}) and target {t} (cpu {b}) are SMT siblings of one core: they share its execution units and L1/L2 (give each its own core)"
                ));
            }
        }
    }
    let node = |l: LcoreId| first_cpu(l).and_then(|c| topo.node_of(c));
    let rx_nodes: Vec<u32> = rx_lcores.iter().copied().filter_map(node).collect();
    for &t in &plan.targets {
        if let Some(n) = node(t)
            && !rx_nodes.is_empty()
            && !rx_nodes.contains(&n)
        {
            w.push(format!(
                "target {t} is on NUMA node {n}, its RX lcores on {rx_nodes:?}: every redirected frame crosses nodes"
            ));
        }
    }
    for (p, spec) in plan.ports.iter().enumerate() {
        let Some(pn) = port_node(topo, spec) else {
            continue;
        };
        for r in plan.rx.iter().filter(|r| r.port.0 as usize == p) {
            if let Some(n) = node(r.lcore)
                && n != pn
            {
                w.push(format!(
                    "port{p} ({}) is on NUMA node {pn} but its queue {} is polled by {} on node {n}: every frame crosses nodes (poll it from a node-{pn} lcore)",
                    spec.name(),
                    r.queue,
                    r.lcore
                ));
            }
        }
    }
    w
}

impl Checked {
    /// The human-readable plan `--check-config` prints.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{file}: valid ({} backend)", self.backend.name());
        if let Some(e) = &self.eal {
            self.render_eal(&mut s, e);
        }
        self.render_lcores(&mut s);
        self.render_ports(&mut s);
        self.render_pipeline(&mut s);
        let _ = writeln!(s, "pools:      {}", self.pools_line());
        let p = &self.plan;
        let ep = |e: Option<String>| e.unwrap_or_else(|| "off".into());
        let _ = writeln!(
            s,
            "services:   metrics {}, control {}",
            ep(p.metrics.get().map(|a| format!("http://{a}/metrics"))),
            ep(p.control.get().map(|c| c.display().to_string()))
        );
        if self.warnings.is_empty() {
            let _ = writeln!(s, "warnings:   none");
        } else {
            let _ = writeln!(s, "warnings:");
            for w in &self.warnings {
                let _ = writeln!(s, "  - {w}");
            }
        }
        s
    }

    /// EAL arguments, memory and the main lcore of a DPDK profile.
    fn render_eal(&self, s: &mut String, e: &DpdkEal) {
        let args = self
            .plan
            .dpdk
            .as_ref()
            .map(|d| d.eal_args.join(" "))
            .unwrap_or_default();
        let _ = writeln!(s, "eal args:   {args}");
        let mem = if e.no_huge {
            "no hugepages (4 KB pages: functional runs only)".to_string()
        } else {
            let mut m = String::from("hugepages");
            if e.in_memory {
                m += ", --in-memory (no files in the hugetlbfs mount)";
            }
            if let Some(sm) = &e.socket_mem {
                m += &format!(", --socket-mem {sm} MB");
            }
            if let Some((total, free, kb)) = host_hugepages() {
                m += &format!(" (this host: {free} of {total} x {kb} kB free)");
            }
            m
        };
        let _ = writeln!(s, "memory:     {mem}");
        let _ = writeln!(
            s,
            "main lcore: {} on cpu {:?} (control thread: metrics, ctl, the live table)",
            e.main,
            e.lcores
                .iter()
                .find(|l| l.id == e.main)
                .map(|l| l.cpus.clone())
                .unwrap_or_default()
        );
    }

    /// Each lcore with its CPUs, NUMA node, core, SMT siblings, shared L3
    /// and role.
    fn render_lcores(&self, s: &mut String) {
        let p = &self.plan;
        let _ = writeln!(s, "lcores:     (topology from {})", self.topology.source);
        let list = |v: &[usize]| match v {
            [] => "?".to_string(),
            [a, .., b] if v.len() == b - a + 1 => format!("{a}-{b}"),
            v => v
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        for l in &p.lcores {
            let place = l.cpus.first().and_then(|&c| self.topology.place(c));
            let role = if p.targets.contains(&l.id) {
                format!("target, cpumap key {} (qsize {})", l.id.0, p.qsize)
            } else {
                let q: Vec<String> =
                    p.rx.iter()
                        .filter(|r| r.lcore == l.id)
                        .map(|r| format!("{}/q{}", r.port, r.queue))
                        .collect();
                if q.is_empty() {
                    "idle (no RX queue, not a target)".into()
                } else {
                    format!("RX {}", q.join(" "))
                }
            };
            let where_ = match place {
                Some(pl) => format!(
                    "node {:<3} core {:<3} smt {:<5} L3 {:<6}",
                    pl.node.map_or("?".into(), |n| n.to_string()),
                    pl.core.map_or("?".into(), |n| n.to_string()),
                    list(&pl.siblings),
                    list(&pl.l3)
                ),
                None => format!("{:<37}", "(not a CPU of this host)"),
            };
            let _ = writeln!(
                s,
                "  {:<8} cpus {:<8} {where_} {role}",
                l.id.to_string(),
                format!("{:?}", l.cpus),
            );
        }
    }

    /// Each port with its driver and RX queue count.
    fn render_ports(&self, s: &mut String) {
        let p = &self.plan;
        let _ = writeln!(s, "ports:");
        for (i, port) in p.ports.iter().enumerate() {
            let nq = p.rx.iter().filter(|r| r.port.0 as usize == i).count();
            let what = match port {
                PortSpec::Native(v) => format!("native {:?}", v.driver),
                #[cfg(feature = "dpdk")]
                PortSpec::Dpdk(d) => format!("ethdev {}", d.driver),
                PortSpec::Declared(d) if d.driver == "pci" => {
                    "PCI device (bind it to vfio-pci)".into()
                }
                PortSpec::Declared(d) => format!("vdev {}", d.driver),
            };
            let rss = if nq > 1 { ", RSS over IP/TCP/UDP" } else { "" };
            let node = port_node(&self.topology, port)
                .map_or(String::new(), |n| format!(", NUMA node {n}"));
            let _ = writeln!(
                s,
                "  port{i:<3} {:<16} {what}: {nq} RX queue(s){rss}{node}",
                port.name()
            );
        }
    }

    /// Filter, targets, remote program and exception path.
    fn render_pipeline(&self, s: &mut String) {
        let p = &self.plan;
        let filter = match &p.prog {
            Some(prog) => format!(
                "eBPF {} ({}, {} maps)",
                prog.name,
                if p.jit { "JIT" } else { "interpreter" },
                prog.maps.len()
            ),
            None => format!("built-in mode {}", p.mode),
        };
        let _ = writeln!(s, "filter:     {filter}");
        let _ = writeln!(
            s,
            "targets:    {} (max_entries {}, bulk {} frames per RX lcore and target)",
            p.targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            p.max_entries,
            p.bulk_size
        );
        let _ = writeln!(
            s,
            "remote:     {}",
            p.remote.as_ref().map_or("none".into(), |r| r.name())
        );
        let exception = match (&p.exception, self.backend) {
            (ExceptionSpec::Tap(t), Backend::Dpdk) => {
                format!(
                    "tap:{} through DPDK's net_tap, a queue per target",
                    t.ifname
                )
            }
            (ExceptionSpec::Tap(t), Backend::Native) => {
                format!("tap:{}, multi-queue, a queue per target", t.ifname)
            }
            (ExceptionSpec::VirtioUser(v), _) => {
                let backend = if v.path == Path::new("/dev/vhost-net") {
                    "vhost-kernel"
                } else {
                    "vhost-user"
                };
                let gro = if v.gro {
                    "GRO with TSO where the backend offers it"
                } else {
                    "gro=off"
                };
                format!("virtio-user on {} ({backend}; {gro})", v.path.display())
            }
            (e, _) => e.backend().to_string(),
        };
        let _ = writeln!(s, "exception:  {exception}");
    }

    /// The pools a run would create: one per NUMA socket with RX lcores
    /// (DPDK), else one per RX lcore.
    fn pools_line(&self) -> String {
        let p = &self.plan;
        let buf = p.headroom as u32 + p.data_room as u32;
        if self.eal.is_none() {
            return format!(
                "one pool per RX lcore: {} buffers of {buf} B (~{} MB each)",
                p.pool_size,
                (p.pool_size as u64 * buf as u64) >> 20
            );
        }
        // Nodes as this host numbers its CPUs; "?" where it has no such CPU.
        let mut by_node: std::collections::BTreeMap<String, Vec<LcoreId>> = Default::default();
        for l in p.rx_lcores() {
            let n = p.cpus_of(l).first().and_then(|&c| self.topology.node_of(c));
            by_node
                .entry(n.map_or("?".into(), |n| n.to_string()))
                .or_default()
                .push(l);
        }
        by_node
            .iter()
            .map(|(node, ls)| {
                let n = p.dpdk_mempool_size(ls.len() as u32);
                format!(
                    "socket {node} ({} RX lcore(s)): {n} mbufs of {buf} B (~{} MB)",
                    ls.len(),
                    (n as u64 * (buf as u64 + 128)) >> 20
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_warnings_name_smt_siblings_nodes_and_remote_ports() {
        let sys = super::super::topology::fake_sys();
        let topo = Topology::from_sysfs(sys.path());
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        // RX on cpu 0, target on its SMT sibling cpu 1.
        let plan = Plan::from_args(&args(
            "--lcores 0@0,1@1 --vdev net_gen0 -- --metrics off --control off",
        ))
        .unwrap();
        let w = placement_warnings(&plan, &topo);
        assert!(
            w.iter().any(|w| w.contains("SMT siblings")
                && w.contains("lcore0")
                && w.contains("lcore1")),
            "{w:?}"
        );
        // Pretend the target sits on cpu 4 (node 1) and the port is a PCI
        // device on node 1 polled from node 0.
        let mut plan = plan;
        plan.lcores[1].cpus = vec![4];
        plan.ports[0] = PortSpec::Declared(DeclaredPort {
            name: "0000:3b:00.0".into(),
            driver: "pci".into(),
            max_rx_queues: 8,
        });
        let w = placement_warnings(&plan, &topo);
        assert!(!w.iter().any(|w| w.contains("SMT")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("target lcore1 is on NUMA node 1")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("port0 (0000:3b:00.0) is on NUMA node 1")
                    && w.contains("lcore0 on node 0")),
            "{w:?}"
        );
        // A Linux interface's device is read the same way.
        let nic = crate::port::VdevSpec::parse("net_af_packet0,iface=ens1f0").unwrap();
        assert_eq!(port_node(&topo, &PortSpec::Native(nic)), Some(1));
        let veth = crate::port::VdevSpec::parse("net_af_packet0,iface=veth9").unwrap();
        assert_eq!(port_node(&topo, &PortSpec::Native(veth)), None);
        // Everything on node 1, on separate cores: nothing to say.
        plan.lcores[0].cpus = vec![6];
        let w = placement_warnings(&plan, &topo);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_dpdk_profile_checks_in_any_build() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            "[eal]\nl = \"0-3\"\nargs = [\"-a\", \"0000:3b:00.0\", \"--no-huge\", \"--no-shconf\"]\n\
             [app]\nbackend = \"dpdk\"\nrx = \"(0,0,1),(0,1,2)\"\ncpu = [3]\n",
        )
        .unwrap();
        let mut args = vec![f.display().to_string()];
        let c = check(&args).unwrap();
        assert_eq!(c.backend, Backend::Dpdk);
        assert_eq!(c.plan.targets, vec![LcoreId(3)]);
        let text = c.render("p.toml");
        assert!(text.contains("0000:3b:00.0     PCI device"), "{text}");
        assert!(text.contains("2 RX queue(s), RSS"), "{text}");
        assert!(text.contains("main lcore: lcore0"), "{text}");
        // The command line adds to and overrides the file, as in a run.
        args.extend(["--".to_string(), "--cpu".into(), "0".into()]);
        let e = check(&args).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("main lcore"), "{e}");
    }
}
