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

use super::topology::Topology;
use super::{Backend, ConfigError, LcoreSpec, Parsed, Plan, PortSpec, eal};
use crate::exception::ExceptionSpec;
use crate::ids::LcoreId;

/// A device the EAL arguments name, before `rte_eal_init` probes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredPort {
    /// `0000:3b:00.0` or the vdev's name (`net_tap0`).
    pub name: String,
    /// `pci` or the vdev's driver (`net_tap`).
    pub driver: String,
    /// What the plan may map: the driver's own limit where it is fixed by
    /// its arguments, else DPDK's per-port maximum (the device's real limit
    /// is checked at start).
    pub max_rx_queues: u16,
}

/// RTE_MAX_QUEUES_PER_PORT in Debian's DPDK 22.11 build.
const RTE_MAX_QUEUES_PER_PORT: u16 = 1024;
/// RTE_PMD_TAP_MAX_QUEUES in DPDK 22.11.
const TAP_MAX_QUEUES: u16 = 16;

/// The EAL arguments of a DPDK profile, read as `rte_eal_init` reads them.
#[derive(Clone, Debug, Default)]
pub struct DpdkEal {
    /// Every lcore, the main one included.
    pub lcores: Vec<LcoreSpec>,
    /// The EAL's main lcore (the control thread).
    pub main: LcoreId,
    /// `-a` entries (address normalised to its domain form, devargs kept).
    pub pci: Vec<String>,
    /// `--vdev` arguments, in order.
    pub vdevs: Vec<String>,
    /// `--no-huge`: 4 KB pages.
    pub no_huge: bool,
    /// `--in-memory`: no files in the hugetlbfs mount.
    pub in_memory: bool,
    /// `--no-pci`: the PCI bus is not scanned.
    pub no_pci: bool,
    /// `--socket-mem`, as given.
    pub socket_mem: Option<String>,
    /// `-m`, as given.
    pub mem_mb: Option<String>,
    /// `--huge-dir`, as given.
    pub huge_dir: Option<String>,
    /// What the check noticed but does not refuse.
    pub warnings: Vec<String>,
}

fn eal_err(s: impl Into<String>) -> ConfigError {
    ConfigError::Eal(s.into())
}

/// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), normalised to the former.
fn pci_addr(s: &str) -> Option<String> {
    let (dom, rest) = match s.matches(':').count() {
        2 => s.split_once(':')?,
        1 => ("0000", s),
        _ => return None,
    };
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |x: &str, n: usize| x.len() == n && x.chars().all(|c| c.is_ascii_hexdigit());
    let func_ok = func.len() == 1 && ('0'..='7').contains(&func.chars().next()?);
    (hex(dom, 4) && hex(bus, 2) && hex(dev, 2) && func_ok)
        .then(|| format!("{dom}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

impl DpdkEal {
    /// Parses and checks `args` (everything before `--`).
    pub fn parse(args: &[String]) -> Result<DpdkEal, ConfigError> {
        let mut out = DpdkEal::default();
        let mut lcore_opts = Vec::new();
        let mut main = None;
        for o in eal::options(args)? {
            let Some(v) = o.value else {
                match o.opt {
                    "--no-huge" => out.no_huge = true,
                    "--in-memory" => out.in_memory = true,
                    "--no-pci" => out.no_pci = true,
                    _ => {}
                }
                continue;
            };
            let opt = o.opt;
            match opt {
                "-l" => lcore_opts.push(("-l", eal::parse_corelist(v)?)),
                "--lcores" => lcore_opts.push(("--lcores", eal::parse_lcores(v)?)),
                "-c" => lcore_opts.push(("-c", parse_coremask(v)?)),
                "--main-lcore" => {
                    main = Some(LcoreId(v.parse().map_err(|_| {
                        eal_err(format!("--main-lcore '{v}': expected an lcore number"))
                    })?))
                }
                "-a" | "--allow" | "-b" | "--block" => {
                    let (addr, devargs) =
                        v.split_once(',').map_or((v, None), |(a, d)| (a, Some(d)));
                    let norm = pci_addr(addr).ok_or_else(|| {
                        eal_err(format!(
                            "{opt} '{v}': '{addr}' is not a PCI address (DDDD:BB:DD.F, e.g. 0000:3b:00.0)"
                        ))
                    })?;
                    if opt.starts_with("-a") || opt == "--allow" {
                        out.pci.push(match devargs {
                            Some(d) => format!("{norm},{d}"),
                            None => norm,
                        });
                    }
                }
                "--vdev" => out.vdevs.push(v.to_string()),
                "-m" => out.mem_mb = Some(v.to_string()),
                "--socket-mem" => out.socket_mem = Some(v.to_string()),
                "--huge-dir" => out.huge_dir = Some(v.to_string()),
                "--proc-type" if !["primary", "secondary", "auto"].contains(&v) => {
                    return Err(eal_err(format!(
                        "--proc-type '{v}': expected primary, secondary or auto"
                    )));
                }
                "--iova-mode" if !["pa", "va"].contains(&v) => {
                    return Err(eal_err(format!("--iova-mode '{v}': expected pa or va")));
                }
                _ => {}
            }
        }
        out.lcores = Self::lcores(lcore_opts, &mut out.warnings)?;
        out.main = Self::main_lcore(main, &out.lcores)?;
        out.check_memory()?;
        if out.no_pci && !out.pci.is_empty() {
            return Err(eal_err(format!(
                "-a {} with --no-pci: the PCI bus is off, the device would not be probed",
                out.pci[0]
            )));
        }
        Ok(out)
    }

    /// The one lcore option given (or every allowed CPU, with a warning).
    fn lcores(
        mut lcore_opts: Vec<(&str, Vec<LcoreSpec>)>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<LcoreSpec>, ConfigError> {
        if lcore_opts.len() > 1 {
            let names: Vec<_> = lcore_opts.iter().map(|(o, _)| *o).collect();
            return Err(eal_err(format!(
                "give one of -l, --lcores and -c, not {}",
                names.join(" and ")
            )));
        }
        Ok(match lcore_opts.pop() {
            Some((_, l)) => l,
            None => {
                warnings.push(
                    "no -l/--lcores: the EAL makes an lcore of every CPU this process may use"
                        .into(),
                );
                super::allowed_cpus()
                    .into_iter()
                    .map(|c| LcoreSpec {
                        id: LcoreId(c as u32),
                        cpus: vec![c],
                    })
                    .collect()
            }
        })
    }

    /// `--main-lcore`, which must be one of `lcores`; else the first lcore.
    fn main_lcore(main: Option<LcoreId>, lcores: &[LcoreSpec]) -> Result<LcoreId, ConfigError> {
        match main {
            Some(m) if !lcores.iter().any(|l| l.id == m) => Err(eal_err(format!(
                "--main-lcore {}: not one of the EAL's lcores ({})",
                m.0,
                ids(lcores)
            ))),
            Some(m) => Ok(m),
            None => lcores
                .first()
                .map(|l| l.id)
                .ok_or_else(|| eal_err("the lcore list is empty")),
        }
    }

    /// The combinations `rte_eal_init` refuses, and what this host offers.
    fn check_memory(&mut self) -> Result<(), ConfigError> {
        if self.no_huge && self.in_memory {
            return Err(eal_err(
                "--no-huge and --in-memory cannot be combined (the EAL refuses it): use --no-huge --no-shconf for a run without hugepages",
            ));
        }
        if self.no_huge && self.socket_mem.is_some() {
            return Err(eal_err(
                "--socket-mem needs hugepages: it cannot be combined with --no-huge (use -m MB)",
            ));
        }
        if self.mem_mb.is_some() && self.socket_mem.is_some() {
            return Err(eal_err("-m and --socket-mem cannot be combined: give one"));
        }
        for (opt, v) in [("-m", &self.mem_mb), ("--socket-mem", &self.socket_mem)] {
            if let Some(v) = v
                && v.split(',').any(|x| x.trim().parse::<u64>().is_err())
            {
                return Err(eal_err(format!(
                    "{opt} '{v}': expected megabytes (a number, or per socket: 1024,1024)"
                )));
            }
        }
        if self.no_huge {
            return Ok(());
        }
        if let Some(d) = &self.huge_dir
            && !Path::new(d).is_dir()
        {
            self.warnings.push(format!(
                "--huge-dir {d} does not exist on this host (deploy/hugepages/setup-hugepages.sh mounts one)"
            ));
        }
        match host_hugepages() {
            Some((0, _, kb)) => self.warnings.push(format!(
                "this host has no {kb} kB hugepages reserved: deploy/hugepages/setup-hugepages.sh, or --no-huge for a test run"
            )),
            Some((total, free, kb)) => {
                let want = self
                    .socket_mem
                    .as_deref()
                    .or(self.mem_mb.as_deref())
                    .map(|v| v.split(',').filter_map(|x| x.trim().parse::<u64>().ok()).sum::<u64>());
                if let Some(mb) = want
                    && mb * 1024 > free * kb
                {
                    self.warnings.push(format!(
                        "the profile asks for {mb} MB of hugepages; this host has {free} of {total} x {kb} kB free ({} MB)",
                        free * kb / 1024
                    ));
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The ports `rte_eal_init` will create, in port-id order: PCI devices
    /// (the bus scan sorts them by address), then vdevs as given (the vdev
    /// bus probes last).
    pub fn ports(&self) -> Result<Vec<DeclaredPort>, ConfigError> {
        let mut pci: Vec<&String> = self.pci.iter().collect();
        pci.sort();
        let mut out: Vec<DeclaredPort> = pci
            .into_iter()
            .map(|p| DeclaredPort {
                name: p.split(',').next().unwrap_or(p).to_string(),
                driver: "pci".into(),
                max_rx_queues: RTE_MAX_QUEUES_PER_PORT,
            })
            .collect();
        for v in &self.vdevs {
            out.push(declared_vdev(v)?);
        }
        Ok(out)
    }
}

fn ids(l: &[LcoreSpec]) -> String {
    l.iter()
        .map(|l| l.id.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `-c 0xf`: lcore N on CPU N for each bit N.
fn parse_coremask(s: &str) -> Result<Vec<LcoreSpec>, ConfigError> {
    let hex = s.strip_prefix("0x").or(s.strip_prefix("0X")).unwrap_or(s);
    let mask = u128::from_str_radix(hex, 16)
        .map_err(|_| eal_err(format!("-c '{s}': expected a hexadecimal core mask")))?;
    Ok((0..128)
        .filter(|b| mask >> b & 1 == 1)
        .map(|b| LcoreSpec {
            id: LcoreId(b),
            cpus: vec![b as usize],
        })
        .collect())
}

/// A DPDK `--vdev NAME[,k=v...]`: its driver and the queues it can have.
fn declared_vdev(v: &str) -> Result<DeclaredPort, ConfigError> {
    let mut parts = v.split(',');
    let name = parts.next().unwrap_or_default().trim().to_string();
    let args: Vec<(&str, &str)> = parts.filter_map(|kv| kv.split_once('=')).collect();
    let driver = name
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string();
    let count = |key: &str| args.iter().filter(|(k, _)| *k == key).count() as u16;
    let num = |key: &str, default: u16| -> Result<u16, ConfigError> {
        match args.iter().find(|(k, _)| *k == key) {
            None => Ok(default),
            Some((_, x)) => x
                .parse()
                .map_err(|_| eal_err(format!("--vdev {v}: {key}='{x}' is not a number"))),
        }
    };
    let max_rx_queues = match driver.as_str() {
        "net_gen" => {
            return Err(eal_err(format!(
                "--vdev {v}: net_gen is cpumapd's own generator, not a DPDK driver; use backend = \"native\" for it, or a DPDK vdev (net_null, net_pcap, net_memif, ...)"
            )));
        }
        "net_kni" => {
            return Err(eal_err(format!(
                "--vdev {v}: KNI was removed from DPDK (23.11) and Debian's 22.11 does not ship it; use net_tap or virtio-user"
            )));
        }
        "net_pcap" => {
            for (k, f) in args.iter().filter(|(k, _)| *k == "rx_pcap") {
                if !Path::new(f).is_file() {
                    return Err(eal_err(format!("--vdev {v}: {k}={f}: no such file")));
                }
            }
            (count("rx_pcap") + count("rx_iface") + count("rx_iface_in") + count("iface")).max(1)
        }
        "net_af_packet" => num("qpairs", 1)?,
        "net_af_xdp" => num("queue_count", 1)?,
        "net_tap" | "net_tun" => TAP_MAX_QUEUES,
        "net_memif" => 255,
        "net_null" | "net_ring" | "net_virtio_user" | "net_vhost" | "net_bonding"
        | "net_failsafe" => RTE_MAX_QUEUES_PER_PORT,
        d if d.starts_with("net_") => RTE_MAX_QUEUES_PER_PORT,
        _ => {
            return Err(eal_err(format!(
                "--vdev {v}: '{name}' is not an ethdev (net_*) driver"
            )));
        }
    };
    Ok(DeclaredPort {
        name,
        driver,
        max_rx_queues,
    })
}

/// HugePages_Total, HugePages_Free and Hugepagesize (kB) of this host.
fn host_hugepages() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some((
        field("HugePages_Total:")?,
        field("HugePages_Free:")?,
        field("Hugepagesize:")?,
    ))
}

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

    fn a(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn pci_addresses_normalise_or_fail() {
        assert_eq!(pci_addr("3b:00.0").as_deref(), Some("0000:3b:00.0"));
        assert_eq!(pci_addr("0000:AF:00.1").as_deref(), Some("0000:af:00.1"));
        for bad in ["3b:00", "0000:3b:00.8", "zz:00.0", "0:3b:00.0", "3b.00.0"] {
            assert_eq!(pci_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn eal_combinations_the_eal_refuses_are_refused_here() {
        let cases = [
            ("-l 0-2 --no-huge --in-memory", "--no-huge and --in-memory"),
            (
                "-l 0-2 --no-huge --socket-mem 512",
                "--socket-mem needs hugepages",
            ),
            ("-l 0-2 -m 512 --socket-mem 512", "-m and --socket-mem"),
            ("-l 0-2 --lcores 0@0", "give one of -l, --lcores and -c"),
            ("-l 0-2 --main-lcore 7", "--main-lcore 7"),
            ("-l 0-2 -a 3b:00", "not a PCI address"),
            ("-l 0-2 --no-pci -a 0000:3b:00.0", "--no-pci"),
            ("-l 0-2 --frob", "unknown EAL option '--frob'"),
            ("-l 0-2 --socket-mem 1G", "expected megabytes"),
            ("-l 0-2 --iova-mode xx", "--iova-mode"),
            ("-l 0-2 --vdev", "needs a value"),
            ("-l 0-2 -é", "unknown EAL option '-é'"),
        ];
        for (args, want) in cases {
            let e = DpdkEal::parse(&a(args)).expect_err(args).to_string();
            assert!(e.contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn ports_come_in_dpdk_probe_order() {
        let e = DpdkEal::parse(&a(
            "-l0-3 --vdev net_tap0,iface=x -a 0000:af:00.0 -a 3b:00.1,rx_low_latency=1 -c0x1",
        ));
        assert!(e.unwrap_err().to_string().contains("not -l and -c"));
        let e = DpdkEal::parse(&a(
            "-l0-3 --main-lcore=3 --vdev net_tap0,iface=x -a 0000:af:00.0 -a 3b:00.1,rx_low_latency=1",
        ))
        .unwrap();
        assert_eq!(e.main, LcoreId(3));
        let names: Vec<_> = e.ports().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["0000:3b:00.1", "0000:af:00.0", "net_tap0"]);
        assert_eq!(parse_coremask("0x5").unwrap().len(), 2);
    }

    #[test]
    fn vdev_queue_limits_and_refusals() {
        assert_eq!(
            declared_vdev("net_af_packet0,iface=e,qpairs=4")
                .unwrap()
                .max_rx_queues,
            4
        );
        assert_eq!(declared_vdev("net_tap0,iface=x").unwrap().max_rx_queues, 16);
        for (v, want) in [
            ("net_gen0", "cpumapd's own generator"),
            ("net_kni0", "KNI was removed"),
            ("crypto_null0", "not an ethdev"),
            ("net_af_xdp0,queue_count=x", "not a number"),
            ("net_pcap0,rx_pcap=/nonexistent.pcap", "no such file"),
        ] {
            let e = declared_vdev(v).expect_err(v).to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
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
        args.extend(a("-- --cpu 0"));
        let e = check(&args).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("main lcore"), "{e}");
    }
}
