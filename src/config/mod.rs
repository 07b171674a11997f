//! Command line, TOML config and the resolved, validated [`Plan`].
//!
//! `cpumapd [EAL args] -- [app args]`. EAL args are parsed natively
//! ([`eal`]); app args use xdp-bench's names where they exist. A TOML file
//! (`--config`) has an `[eal]` and an `[app]` table with the same keys; the
//! command line wins over the file. Every check that can fail happens here,
//! before any thread starts, and names the offending value.

pub mod args;
pub mod check;
pub mod eal;
mod eal_check;
pub mod endpoint;
pub mod topology;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::cpumap::{CPU_MAP_BULK_SIZE, MAX_BULK, MAX_QSIZE};
use crate::dpdk;
use crate::exception::tap::KernelMac;

/// `--idle`: what an lcore does when a poll finds nothing (DPDK
/// l3fwd-power's RX interrupts, VPP's interrupt mode; the kernel cpumap's
/// kthread sleeps until a flush wakes it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdlePolicy {
    /// Poll without pause (every CPU an lcore has stays busy).
    Spin,
    /// Poll while work keeps coming (by the recent gaps between work, up to
    /// 50 us after the last), then block until it arrives.
    #[default]
    Adaptive,
    /// Block as soon as a poll finds nothing.
    Sleep,
}

impl std::str::FromStr for IdlePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(Self::Spin),
            "adaptive" => Ok(Self::Adaptive),
            "sleep" => Ok(Self::Sleep),
            _ => Err(format!("--idle '{s}': expected spin, adaptive or sleep")),
        }
    }
}
use crate::exception::{ExceptionError, ExceptionSpec};
use crate::filter::{Mode, RemoteProg, UnknownMode};
use crate::frame::{DEFAULT_DATA_ROOM, DEFAULT_HEADROOM};
use crate::ids::{LcoreId, PortId};
use crate::port::{PortError, VdevSpec};

pub use args::{AppArgs, FileConfig, FileEal, Parsed, split_args};
pub use eal::{EalArgs, LcoreSpec};
pub use endpoint::{
    DEFAULT_METRICS, Endpoint, default_control_path, default_state_dir, parse_control,
    parse_metrics, parse_state_dir,
};

#[derive(Debug, Error)]
/// A command line, profile or plan that cannot run, with what is wrong.
pub enum ConfigError {
    #[error("EAL: {0}")]
    /// An EAL argument.
    Eal(String),
    #[error("{0}")]
    /// An application argument.
    Args(String),
    #[error("config file {path}: {why}")]
    /// A config file that cannot be read or parsed.
    File {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    #[error(transparent)]
    /// An unknown `--mode`.
    Mode(#[from] UnknownMode),
    #[error(transparent)]
    /// A port that cannot be opened or is misconfigured.
    Port(#[from] PortError),
    #[error(transparent)]
    /// An exception path that cannot be opened or is misconfigured.
    Exception(#[from] ExceptionError),
    #[error("{0}")]
    /// A plan whose parts do not fit together.
    Plan(String),
    /// `--help` was asked for: print `cpumapd::cli::help()`, exit 0.
    #[error("--help: see cpumapd::cli::help()")]
    Help,
}

fn plan_err(s: impl Into<String>) -> ConfigError {
    ConfigError::Plan(s.into())
}

/// Which packet I/O layer runs the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// cpumapd's own ports and pools.
    Native,
    /// DPDK's EAL, ethdev ports and mbufs.
    Dpdk,
}

impl Backend {
    /// Built with the `dpdk` feature: DPDK, else native.
    pub const DEFAULT: Backend = if cfg!(feature = "dpdk") {
        Backend::Dpdk
    } else {
        Backend::Native
    };

    /// The backend named, whether or not this build includes it
    /// (`--check-config` validates DPDK profiles in any build).
    fn parse(s: Option<&str>) -> Result<Backend, ConfigError> {
        match s {
            None => Ok(Self::DEFAULT),
            Some("native") => Ok(Backend::Native),
            Some("dpdk") => Ok(Backend::Dpdk),
            Some(o) => Err(ConfigError::Args(format!(
                "--backend '{o}': expected native or dpdk"
            ))),
        }
    }

    /// The backend's name (`native`, `dpdk`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Dpdk => "dpdk",
        }
    }
}

/// A port of the plan: a native vdev, a DPDK ethdev the EAL probed, or
/// (`--check-config` only) a device the EAL would probe.
#[derive(Clone, Debug)]
pub enum PortSpec {
    /// A native port (`--vdev net_gen0`, ...).
    Native(VdevSpec),
    /// A probed DPDK ethdev.
    #[cfg(feature = "dpdk")]
    Dpdk(crate::dpdk::PortInfo),
    /// Named by the EAL arguments (`-a PCI` or a DPDK `--vdev`) and known
    /// only by name until `rte_eal_init` probes it: a validated plan can be
    /// printed, not run.
    Declared(check::DeclaredPort),
}

impl PortSpec {
    /// The port's name (its vdev name or the device's).
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Native(v) => &v.name,
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(i) => &i.name,
            PortSpec::Declared(d) => &d.name,
        }
    }

    /// RX queues the port can give the plan.
    pub fn max_queues(&self) -> u16 {
        match self {
            PortSpec::Native(v) => v.max_queues(),
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(i) => i.max_rx_queues,
            PortSpec::Declared(d) => d.max_rx_queues,
        }
    }
}

/// One RX queue and the lcore that polls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxAssign {
    /// The port.
    pub port: PortId,
    /// Its RX queue.
    pub queue: u16,
    /// The RX lcore that polls it.
    pub lcore: LcoreId,
}

/// Everything the pipeline needs, validated.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every lcore of the run (the DPDK main lcore excluded).
    pub lcores: Vec<LcoreSpec>,
    /// Ports in port-id order.
    pub ports: Vec<PortSpec>,
    /// Which RX lcore polls which port queue.
    pub rx: Vec<RxAssign>,
    /// Target lcores; each is a cpumap key.
    pub targets: Vec<LcoreId>,
    /// The built-in RX filter mode.
    pub mode: Mode,
    /// Ring size of each entry.
    pub qsize: u32,
    /// The entries' remote program.
    pub remote: Option<RemoteProg>,
    /// The exception path.
    pub exception: ExceptionSpec,
    /// What the TAP path does with destination MACs.
    pub kernel_mac: KernelMac,
    /// What idle lcores do.
    pub idle: IdlePolicy,
    /// Frames per bulk queue.
    pub bulk_size: usize,
    /// Buffers per RX lcore pool.
    pub pool_size: u32,
    /// Keys in the cpumap.
    pub max_entries: u32,
    /// Bytes of headroom per buffer.
    pub headroom: u16,
    /// Bytes of data room per buffer.
    pub data_room: u16,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Live table interval (None: off).
    pub interval: Option<Duration>,
    /// Where the JSON summary goes.
    pub summary_json: Option<String>,
    /// Pin lcore threads to their CPUs.
    pub pin: bool,
    /// The Prometheus endpoint.
    pub metrics: Endpoint<SocketAddr>,
    /// The control socket.
    pub control: Endpoint<PathBuf>,
    /// How long to keep serving after finite sources end.
    pub linger: Option<Duration>,
    /// Set for a DPDK run.
    pub dpdk: Option<DpdkPlan>,
    /// The RX filter's eBPF program (`--prog`), loaded and verified, its
    /// target maps filled.
    pub prog: Option<std::sync::Arc<crate::filter::ebpf::Program>>,
    /// JIT-compile eBPF programs.
    pub jit: bool,
    /// `--latency`: RX-to-target latency percentiles.
    pub latency: bool,
    /// `--stage-cycles`: cycles per packet per loop stage.
    pub stage_cycles: bool,
    /// Where what ctl changes is kept across restarts.
    pub state_dir: Endpoint<PathBuf>,
    /// How eBPF objects are loaded in this run (`--prog-set`, the CPUs
    /// programs see); also for objects loaded while it runs.
    pub load: crate::filter::ebpf::globals::LoadOptions,
    /// The entries' remote program as given (`--remote-action`), so a saved
    /// state can name it again.
    pub remote_spec: Option<String>,
}

/// What a DPDK run adds to the plan.
#[derive(Clone, Debug)]
pub struct DpdkPlan {
    /// Given to `rte_eal_init` unchanged.
    pub eal_args: Vec<String>,
    /// The EAL main lcore: the control thread.
    pub main_lcore: LcoreId,
}

/// How this run loads eBPF objects: `--prog-set` values, and the CPUs
/// programs see (`bpf_get_smp_processor_id()` is the lcore id, so at least
/// the highest lcore id + 1).
fn load_options(
    app: &AppArgs,
    lcores: &[LcoreSpec],
) -> Result<crate::filter::ebpf::globals::LoadOptions, ConfigError> {
    use crate::filter::ebpf::globals::{
        DevmapSet, GlobalSet, LoadOptions, ProgArraySet, SharedMaps, possible_cpus,
    };
    let sets = app
        .prog_set
        .iter()
        .map(|s| GlobalSet::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::Args)?;
    let devmaps = app
        .devmap
        .iter()
        .map(|s| DevmapSet::parse(s, &crate::port::netdev::index))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::Args)?;
    let prog_arrays = app
        .prog_array
        .iter()
        .map(|s| ProgArraySet::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::Args)?;
    let top = lcores.iter().map(|l| l.id.0 + 1).max().unwrap_or(1);
    Ok(LoadOptions {
        sets,
        nr_cpus: possible_cpus().max(top),
        devmaps,
        prog_arrays,
        shared: SharedMaps::run(),
    })
}

/// Names for an error message: sorted, once each, or "none".
fn listed(mut names: Vec<String>) -> String {
    names.sort();
    names.dedup();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Every `--prog-set NAME` must name a global variable of an object this
/// run loads (the RX program's or the remote program's); a typo would
/// otherwise leave the program running with its default.
fn check_prog_sets(
    sets: &[crate::filter::ebpf::globals::GlobalSet],
    prog: Option<&str>,
    remote: Option<&str>,
) -> Result<(), ConfigError> {
    if sets.is_empty() {
        return Ok(());
    }
    let mut vars = Vec::new();
    for spec in [prog, remote].into_iter().flatten() {
        let Some(path) = spec.split(':').next().filter(|p| p.ends_with(".o")) else {
            continue;
        };
        if let Ok(g) = crate::filter::ebpf::object_globals(path) {
            vars.extend(g.into_iter().map(|g| g.name));
        }
    }
    for s in sets {
        if !vars.contains(&s.name) {
            return Err(ConfigError::Args(format!(
                "--prog-set {}: no loaded eBPF object has a global variable '{}' (they have: {})",
                s.name,
                s.name,
                listed(vars)
            )));
        }
    }
    Ok(())
}

/// The RX queue assignment (`--rx`, else every port's queue 0 on the first
/// lcore that is not a target) and the targets (`--cpu`, else every lcore
/// that polls no RX queue), checked against the lcores and ports.
fn assign_rx_and_targets(
    lcores: &[LcoreSpec],
    ports: &[PortSpec],
    app: &AppArgs,
) -> Result<(Vec<RxAssign>, Vec<LcoreId>), ConfigError> {
    let mut targets: Vec<LcoreId> = app.cpu.iter().copied().map(LcoreId).collect();
    let rx = match &app.rx {
        Some(s) => parse_rx(s)?,
        None => {
            let first = lcores
                .iter()
                .map(|l| l.id)
                .find(|id| !targets.contains(id))
                .ok_or_else(|| plan_err("every lcore is a target: no lcore is left for RX"))?;
            (0..ports.len())
                .map(|p| RxAssign {
                    port: PortId(p as u16),
                    queue: 0,
                    lcore: first,
                })
                .collect()
        }
    };
    let mut rx_lcores: Vec<LcoreId> = rx.iter().map(|r| r.lcore).collect();
    rx_lcores.sort();
    rx_lcores.dedup();
    let lcore_list = lcores
        .iter()
        .map(|l| l.id.0.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if targets.is_empty() {
        targets = lcores
            .iter()
            .map(|l| l.id)
            .filter(|id| !rx_lcores.contains(id))
            .collect();
        if targets.is_empty() {
            return Err(plan_err(format!(
                "no target lcores: every lcore in ({lcore_list}) polls RX; add lcores (e.g. --lcores 0@0,1@1,2@0) or give --cpu"
            )));
        }
    }
    let has = |id: LcoreId| lcores.iter().any(|l| l.id == id);
    for (i, t) in targets.iter().enumerate() {
        if !has(*t) {
            return Err(plan_err(format!(
                "target lcore {} is not in the EAL lcore list ({lcore_list})",
                t.0
            )));
        }
        if rx_lcores.contains(t) {
            return Err(plan_err(format!(
                "{t} cannot be both an RX lcore and a target"
            )));
        }
        if targets[..i].contains(t) {
            return Err(plan_err(format!("target {t} is given twice")));
        }
    }
    for r in &rx {
        if !has(r.lcore) {
            return Err(plan_err(format!(
                "--rx uses lcore {} which is not in the EAL lcore list ({lcore_list})",
                r.lcore.0
            )));
        }
    }
    check_rx_queues(&rx, ports)?;
    Ok((rx, targets))
}

/// Every `--rx` queue exists, is assigned once, and every port's queues
/// are numbered 0..n without gaps.
fn check_rx_queues(rx: &[RxAssign], ports: &[PortSpec]) -> Result<(), ConfigError> {
    for (i, r) in rx.iter().enumerate() {
        let Some(spec) = ports.get(r.port.0 as usize) else {
            return Err(plan_err(format!(
                "--rx uses {} but only {} port(s) exist (--vdev order)",
                r.port,
                ports.len()
            )));
        };
        if r.queue >= spec.max_queues() {
            return Err(plan_err(format!(
                "--rx uses {} queue {} but {} has {} queue(s)",
                r.port,
                r.queue,
                spec.name(),
                spec.max_queues()
            )));
        }
        if rx[..i]
            .iter()
            .any(|o| o.port == r.port && o.queue == r.queue)
        {
            return Err(plan_err(format!(
                "{} queue {} is assigned twice in --rx",
                r.port, r.queue
            )));
        }
    }
    for (p, spec) in ports.iter().enumerate() {
        let mine = || rx.iter().filter(|r| r.port.0 as usize == p);
        let n = mine().count();
        if n == 0 {
            return Err(plan_err(format!(
                "port{p} ({}) has no RX queue in --rx",
                spec.name()
            )));
        }
        let max_q = mine().map(|r| r.queue).max().unwrap_or(0);
        if max_q as usize + 1 != n {
            return Err(plan_err(format!(
                "port{p}: RX queues must be numbered 0..{n} without gaps"
            )));
        }
    }
    Ok(())
}

/// Parses `"(0,0,1),(0,1,2)"`.
pub fn parse_rx(s: &str) -> Result<Vec<RxAssign>, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Args(format!(
            "--rx '{s}': {why}; expected (port,queue,lcore)[,...]"
        ))
    };
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('(').ok_or_else(|| bad("missing '('"))?;
        let end = inner.find(')').ok_or_else(|| bad("missing ')'"))?;
        let nums: Vec<&str> = inner[..end].split(',').map(str::trim).collect();
        if nums.len() != 3 {
            return Err(bad("each tuple has three numbers"));
        }
        let n = |i: usize| {
            nums[i]
                .parse::<u32>()
                .map_err(|_| bad(&format!("'{}' is not a number", nums[i])))
        };
        let (p, q, l) = (n(0)?, n(1)?, n(2)?);
        if p > u16::MAX as u32 || q > u16::MAX as u32 {
            return Err(bad("port or queue too large"));
        }
        out.push(RxAssign {
            port: PortId(p as u16),
            queue: q as u16,
            lcore: LcoreId(l),
        });
        rest = inner[end + 1..].trim_start_matches(',').trim();
    }
    if out.is_empty() {
        return Err(bad("empty"));
    }
    Ok(out)
}

fn secs(v: Option<f64>, what: &str) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (0.0..1e9).contains(&x) => {
            Ok((x > 0.0).then(|| Duration::from_secs_f64(x)))
        }
        Some(x) => Err(ConfigError::Args(format!(
            "--{what} {x}: expected a number of seconds >= 0"
        ))),
    }
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

impl Plan {
    /// The built-in demo: generator -> l4-hash -> one target per remaining
    /// lcore -> drop, with the live table, until Ctrl-C.
    pub fn demo() -> Result<Self, ConfigError> {
        Self::demo_with(AppArgs::default())
    }

    /// The demo with application arguments on top (`cpumapd -- --duration
    /// 5`: app args alone, no EAL arguments, no profile): its generator and
    /// lcores, the live table every second unless `--interval` says other.
    pub fn demo_with(app: AppArgs) -> Result<Self, ConfigError> {
        let demo = Self::demo_eal();
        let app = AppArgs {
            interval: app.interval.or(Some(1.0)),
            ..app
        };
        Self::resolve(demo, app, None)
    }

    /// The demo's lcores (one per allowed CPU, two sharing one CPU on a
    /// one-CPU machine) and its generator port.
    fn demo_eal() -> EalArgs {
        let cpus = allowed_cpus();
        let lcores = if cpus.len() >= 2 {
            cpus.iter()
                .map(|&c| LcoreSpec {
                    id: LcoreId(c as u32),
                    cpus: vec![c],
                })
                .collect()
        } else {
            // One CPU: still show the pipeline, two lcores sharing it.
            let c = cpus.first().copied().unwrap_or(0);
            vec![
                LcoreSpec {
                    id: LcoreId(0),
                    cpus: vec![c],
                },
                LcoreSpec {
                    id: LcoreId(1),
                    cpus: vec![c],
                },
            ]
        };
        EalArgs {
            lcores: Some(lcores),
            vdevs: vec!["net_gen0,flows=256".into()],
        }
    }

    /// Parses a full command line (without argv[0]) into a native plan,
    /// whatever the build's default backend (library users and tests run
    /// the native ports). A DPDK run uses [`Parsed::parse`] and
    /// [`Plan::resolve_dpdk`] around `rte_eal_init`.
    pub fn from_args(args: &[String]) -> Result<Self, ConfigError> {
        let p = Parsed::parse(args)?;
        if p.app.backend.as_deref() == Some("dpdk") {
            return Err(ConfigError::Args(
                "--backend dpdk needs the EAL: run the cpumapd binary (Plan::from_args builds native plans)"
                    .into(),
            ));
        }
        Self::resolve_native(p)
    }

    /// Resolves a native run: EAL arguments interpreted by cpumapd itself.
    pub fn resolve_native(p: Parsed) -> Result<Self, ConfigError> {
        let eal = EalArgs::parse(&p.eal_args)?;
        Self::resolve(eal, p.app, p.file)
    }

    /// Merges file and command line and validates the result (native).
    pub fn resolve(
        eal: EalArgs,
        app: AppArgs,
        file: Option<FileConfig>,
    ) -> Result<Self, ConfigError> {
        let f = file.unwrap_or_default();
        let lcores = match (eal.lcores, &f.eal.lcores, &f.eal.l) {
            (Some(l), _, _) => l,
            (None, Some(s), _) => eal::parse_lcores(s)?,
            (None, None, Some(s)) => eal::parse_corelist(s)?,
            (None, None, None) => allowed_cpus()
                .iter()
                .map(|&c| LcoreSpec {
                    id: LcoreId(c as u32),
                    cpus: vec![c],
                })
                .collect(),
        };
        let allowed = allowed_cpus();
        for l in &lcores {
            if let Some(c) = l.cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(plan_err(format!(
                    "{} would run on cpu {c}, which this process cannot use (allowed: {allowed:?}); place it with --lcores {}@CPU",
                    l.id, l.id.0
                )));
            }
        }
        let vdevs = if eal.vdevs.is_empty() {
            f.eal.vdev.clone()
        } else {
            eal.vdevs
        };
        if vdevs.is_empty() {
            return Err(plan_err(
                "no ports: give at least one --vdev (e.g. --vdev net_gen0)",
            ));
        }
        let ports = vdevs
            .iter()
            .map(|v| VdevSpec::parse(v).map(PortSpec::Native))
            .collect::<Result<Vec<_>, _>>()?;
        Self::resolve_with(lcores, ports, app, None)
    }

    /// Resolves a DPDK run after `rte_eal_init`: the lcores are the EAL's
    /// (`main` runs the control thread and takes no pipeline role), the
    /// ports every ethdev it probed.
    #[cfg(feature = "dpdk")]
    pub fn resolve_dpdk(
        p: Parsed,
        eal: &crate::dpdk::Eal,
        ports: Vec<crate::dpdk::PortInfo>,
    ) -> Result<Self, ConfigError> {
        let main = eal.main_lcore();
        let lcores: Vec<LcoreSpec> = eal
            .lcores()
            .into_iter()
            .filter(|&l| l != main)
            .map(|id| LcoreSpec {
                id,
                cpus: eal.cpus_of(id),
            })
            .collect();
        let ports = ports.into_iter().map(PortSpec::Dpdk).collect();
        let mut plan = Self::resolve_eal_lcores(p, main, lcores, ports)?;
        // The EAL pins each worker lcore itself: `pin` says whether we do;
        // the CPUs above still tell which lcores share one.
        plan.pin = false;
        Ok(plan)
    }

    /// The DPDK resolution shared by a run and `--check-config`: `lcores`
    /// are the EAL's worker lcores (`main` excluded), `ports` in port-id
    /// order.
    fn resolve_eal_lcores(
        p: Parsed,
        main: LcoreId,
        lcores: Vec<LcoreSpec>,
        ports: Vec<PortSpec>,
    ) -> Result<Self, ConfigError> {
        if lcores.is_empty() {
            return Err(plan_err(format!(
                "the EAL gave only the main lcore ({main}), which runs the control thread; give worker lcores too (e.g. -l 0-2)"
            )));
        }
        if ports.is_empty() {
            return Err(plan_err(
                "the EAL probed no ports: allow a NIC with -a PCI_ADDR (bound to vfio-pci) or add a --vdev (e.g. --vdev net_null0)",
            ));
        }
        let app = p.app;
        let rx = app.rx.as_deref().map(parse_rx).transpose()?;
        if rx.iter().flatten().any(|r| r.lcore == main) || app.cpu.contains(&main.0) {
            return Err(plan_err(format!(
                "{main} is the EAL main lcore, which runs the control thread; give RX queues and targets worker lcores (or move it with --main-lcore)"
            )));
        }
        let dpdk = DpdkPlan {
            eal_args: p.eal_args,
            main_lcore: main,
        };
        Self::resolve_with(lcores, ports, app, Some(dpdk))
    }

    /// Validates merged options (`app`: command line over file) against
    /// the lcores and ports and builds the plan.
    fn resolve_with(
        lcores: Vec<LcoreSpec>,
        ports: Vec<PortSpec>,
        app: AppArgs,
        dpdk: Option<DpdkPlan>,
    ) -> Result<Self, ConfigError> {
        let (rx, targets) = assign_rx_and_targets(&lcores, &ports, &app)?;
        let mode: Mode = app
            .mode
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let qsize = app.qsize.unwrap_or(2048);
        if qsize == 0 || qsize > MAX_QSIZE {
            return Err(plan_err(format!(
                "qsize {qsize} is out of range: cpumap entries hold 1 to {MAX_QSIZE} frames"
            )));
        }
        let load = load_options(&app, &lcores)?;
        let remote = match app.remote_action.as_deref() {
            None | Some("none") => None,
            Some(s) => Some(RemoteProg::parse_with(s, &load).map_err(ConfigError::Args)?),
        };
        let exception = ExceptionSpec::parse(app.exception.as_deref().unwrap_or("drop"))?;
        let bulk_size = app.bulk_size.unwrap_or(CPU_MAP_BULK_SIZE);
        if !(1..=MAX_BULK).contains(&bulk_size) {
            return Err(plan_err(format!(
                "bulk size {bulk_size} is out of range 1..={MAX_BULK}"
            )));
        }
        let max_entries = app.max_entries.unwrap_or(128);
        if let Some(t) = targets.iter().find(|t| t.0 >= max_entries) {
            return Err(plan_err(format!(
                "target {t} does not fit a cpumap of max_entries {max_entries}"
            )));
        }
        // Enough buffers to fill every target ring from this lcore, plus
        // bursts in hand.
        let default_pool =
            (targets.len() as u32 * qsize + 4 * 32 + targets.len() as u32 * MAX_BULK as u32)
                .max(1024);
        let pool_size = app.pool_size.unwrap_or(default_pool);
        if pool_size < 64 {
            return Err(plan_err(format!(
                "pool size {pool_size} is too small (at least 64 buffers)"
            )));
        }
        let mut plan = Plan {
            lcores,
            ports,
            rx,
            targets,
            mode,
            qsize,
            remote,
            exception,
            kernel_mac: app
                .kernel_mac
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(ConfigError::Args)?
                .unwrap_or_default(),
            idle: app
                .idle
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(ConfigError::Args)?
                .unwrap_or_default(),
            bulk_size,
            pool_size,
            max_entries,
            headroom: DEFAULT_HEADROOM,
            data_room: DEFAULT_DATA_ROOM,
            duration: secs(app.duration, "duration")?,
            interval: secs(app.interval.or(Some(2.0)), "interval")?,
            summary_json: app.summary_json,
            pin: !app.no_pin,
            metrics: parse_metrics(app.metrics.as_deref())?,
            control: parse_control(app.control.as_deref())?,
            linger: secs(app.linger, "linger")?,
            dpdk,
            prog: None,
            jit: app.jit,
            latency: app.latency,
            stage_cycles: app.stage_cycles,
            state_dir: parse_state_dir(app.state_dir.as_deref())?,
            remote_spec: app.remote_action.clone().filter(|r| r != "none"),
            load,
        };
        check_prog_sets(
            &plan.load.sets,
            app.prog.as_deref(),
            plan.remote_spec.as_deref(),
        )?;
        if let Some(spec) = app.prog.as_deref() {
            plan.prog = Some(std::sync::Arc::new(plan.load_rx_program(spec)?));
        }
        plan.check_devmaps()?;
        plan.check_devices()?;
        Ok(plan)
    }

    /// Every `--devmap MAP` and `--prog-array MAP` must name a map of a
    /// program this run loads (a typo would leave the entry empty and every
    /// redirect a miss, every tail call a fall-through).
    fn check_devmaps(&self) -> Result<(), ConfigError> {
        let remote = match &self.remote {
            Some(RemoteProg::Bpf(p)) => Some(p.as_ref()),
            _ => None,
        };
        let progs: Vec<&crate::filter::ebpf::Program> =
            self.prog.as_deref().into_iter().chain(remote).collect();
        let devmaps = self.load.devmaps.iter().map(|d| ("--devmap", &d.map));
        let arrays = self
            .load
            .prog_arrays
            .iter()
            .map(|d| ("--prog-array", &d.map));
        for (opt, map) in devmaps.chain(arrays) {
            if !progs.iter().any(|p| p.map(map).is_some()) {
                let names: Vec<String> = progs
                    .iter()
                    .flat_map(|p| p.usable_maps().map(|m| m.def.name.clone()))
                    .collect();
                return Err(ConfigError::Args(format!(
                    "{opt} {map}: no loaded eBPF program has a map '{map}' (they have: {})",
                    listed(names)
                )));
            }
        }
        Ok(())
    }

    /// Loads `--prog`: a SEC("xdp") program (the kernel attaches no
    /// cpumap/devmap program to an interface), xdp-bench's target maps
    /// filled with this run's targets.
    fn load_rx_program(&self, spec: &str) -> Result<crate::filter::ebpf::Program, ConfigError> {
        use crate::filter::ebpf::Attach;
        let p = crate::filter::ebpf::load_object_with(spec, &self.load)
            .map_err(|e| ConfigError::Args(format!("--prog {spec}: {e}")))?;
        if p.attach != Attach::Interface {
            return Err(ConfigError::Args(format!(
                "--prog {spec}: program '{}' is a SEC(\"{}\") program, for a {} entry: give it to --remote-action; the RX filter is a SEC(\"xdp\") program",
                p.name,
                p.attach.section(),
                if p.attach == Attach::CpuMap {
                    "cpumap"
                } else {
                    "devmap"
                }
            )));
        }
        let targets: Vec<crate::ids::TargetId> = self.targets.iter().map(|&l| l.into()).collect();
        p.fill_targets(&targets);
        Ok(p)
    }

    /// Opens every native port once (files and arguments are validated
    /// now) and checks the exception path's device or directory.
    fn check_devices(&self) -> Result<(), ConfigError> {
        for (p, spec) in self.ports.iter().enumerate() {
            #[cfg_attr(not(feature = "dpdk"), allow(irrefutable_let_patterns))]
            if let PortSpec::Native(v) = spec {
                crate::port::check(v, PortId(p as u16))?;
            }
        }
        if self.dpdk.is_none() && matches!(self.exception, ExceptionSpec::VirtioUser(_)) {
            return Err(plan_err(
                "--exception virtio-user needs the DPDK backend; natively use tap:IFNAME",
            ));
        }
        if let ExceptionSpec::Pcap(base) = &self.exception {
            let dir = base
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(plan_err(format!(
                    "exception pcap directory {} does not exist",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// The lcores that poll RX queues, sorted.
    pub fn rx_lcores(&self) -> Vec<LcoreId> {
        let mut v: Vec<_> = self.rx.iter().map(|r| r.lcore).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Mbufs in the DPDK mempool of a NUMA socket with `rx_on_socket` RX
    /// lcores: their `pool_size` budgets, plus what the descriptor rings and
    /// the lcore caches hold.
    pub fn dpdk_mempool_size(&self, rx_on_socket: u32) -> u32 {
        let queues = self.rx.len() as u32;
        let lcores = (self.targets.len() + self.rx_lcores().len() + 1) as u32;
        self.pool_size * rx_on_socket
            + (dpdk::RX_DESC as u32 + dpdk::TX_DESC as u32) * (queues + lcores)
            + dpdk::MEMPOOL_CACHE * lcores
    }

    /// The CPUs lcore `l` runs on.
    pub fn cpus_of(&self, l: LcoreId) -> &[usize] {
        self.lcores
            .iter()
            .find(|s| s.id == l)
            .map_or(&[], |s| s.cpus.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &str) -> Result<Plan, ConfigError> {
        let v: Vec<String> = args.split_whitespace().map(String::from).collect();
        Plan::from_args(&v)
    }

    #[test]
    fn config_files_must_be_small_regular_files() {
        let e = plan("--lcores 0@0,1@0 --vdev net_gen0 -- --config /dev/zero").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = plan("--lcores 0@0,1@0 --vdev net_gen0 -- --config /").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn defaults_put_rx_on_the_first_lcore_and_targets_on_the_rest() {
        let p = plan("--lcores 0@0,1@0,2@0 --vdev net_gen0 --").unwrap();
        assert_eq!(
            p.rx,
            vec![RxAssign {
                port: PortId(0),
                queue: 0,
                lcore: LcoreId(0)
            }]
        );
        assert_eq!(p.targets, vec![LcoreId(1), LcoreId(2)]);
        assert_eq!((p.mode, p.qsize, p.bulk_size), (Mode::L4Hash, 2048, 8));
    }

    #[test]
    fn rx_tuples_parse() {
        let r = parse_rx("(0,0,1),(0,1,2)").unwrap();
        assert_eq!(
            r[1],
            RxAssign {
                port: PortId(0),
                queue: 1,
                lcore: LcoreId(2)
            }
        );
        assert!(parse_rx("(0,0)").is_err());
        assert!(parse_rx("0,0,1").is_err());
        assert!(parse_rx("(a,0,1)").is_err());
    }

    #[test]
    fn bad_plans_name_the_problem() {
        let cases = [
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --qsize 20000",
                "qsize 20000",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --mode l4-magic",
                "unknown mode 'l4-magic'",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --cpu 5",
                "target lcore 5 is not in the EAL lcore list",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --rx (0,0,0) --cpu 0",
                "both an RX lcore and a target",
            ),
            ("--lcores 0@0 --vdev net_gen0 --", "no target lcores"),
            ("--lcores 0@0,1@0 --", "no ports"),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --rx (1,0,0)",
                "only 1 port(s) exist",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_pcap0,rx_pcap=/nonexistent.pcap --",
                "/nonexistent.pcap",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --bulk-size 0",
                "bulk size 0",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --exception kni",
                "KNI was removed",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --remote-action redirect",
                "unknown remote program",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --duration -1",
                "--duration -1",
            ),
            (
                "--lcores 0@0,1@0 --vdev net_gen0 -- --frobnicate",
                "--frobnicate",
            ),
            ("--lcores 0@999 --vdev net_gen0 --", "cpu 999"),
        ];
        for (args, want) in cases {
            let e = plan(args).expect_err(args).to_string();
            assert!(e.contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn toml_file_and_cli_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[eal]\nlcores = \"0@0,1@0,2@0\"\nvdev = [\"net_gen0,flows=8\"]\n[app]\nmode = \"round-robin\"\nqsize = 512\ncpu = [2]\n",
        )
        .unwrap();
        let p = plan(&format!("-- --config {} --qsize 256", path.display())).unwrap();
        assert_eq!((p.mode, p.qsize), (Mode::RoundRobin, 256));
        assert_eq!(p.targets, vec![LcoreId(2)]);
        std::fs::write(&path, "[app]\nqsise = 1\n").unwrap();
        let e = plan(&format!("-- --config {}", path.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[app] qsise: unknown key"), "{e}");
        assert!(e.contains("prog-set"), "the error lists the keys: {e}");
        // A list on the command line replaces the file's whole; a flag is
        // on if either side sets it; the file is parsed as the command line.
        std::fs::write(
            &path,
            "[eal]\nlcores = \"0@0,1@0,2@0,3@0\"\nvdev = [\"net_gen0\"]\n[app]\ncpu = [1, 2]\nno-pin = true\nduration = 0.5\n",
        )
        .unwrap();
        let p = plan(&format!("-- --config {} --cpu 3", path.display())).unwrap();
        assert_eq!(p.targets, vec![LcoreId(3)]);
        assert!(!p.pin);
        assert_eq!(p.duration, Some(Duration::from_millis(500)));
        let p = plan(&format!("-- --config {}", path.display())).unwrap();
        assert_eq!(p.targets, vec![LcoreId(1), LcoreId(2)]);
        for (body, want) in [
            (
                "[app]\nprog_set = [\"a=1\"]\n",
                "[app] prog_set: unknown key",
            ),
            (
                "[app]\nno-pin = 1\n",
                "[app] no-pin: expected true or false",
            ),
            ("[app]\nqsize = [1, 2]\n", "[app] qsize: takes one value"),
            ("[app]\nqsize = \"many\"\n", "many"),
            ("[app]\nconfig = \"x.toml\"\n", "[app] config: unknown key"),
        ] {
            std::fs::write(&path, body).unwrap();
            let e = plan(&format!("--vdev net_gen0 -- --config {}", path.display()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.contains("c.toml"), "names the file: {e}");
        }
    }
}
