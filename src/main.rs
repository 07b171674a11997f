//! `cpumapd [EAL args] -- [app args]`; with no arguments, the demo;
//! `cpumapd ctl ...`, the control client.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cpumapd::config::{Backend, ConfigError, Endpoint, Parsed, Plan};
use cpumapd::control::ControlServer;
use cpumapd::control::ctl::{self, CtlArgs, Output};
use cpumapd::control::proto::EntrySpec;
use cpumapd::control::state::{Restored, StateStore, state_file};
use cpumapd::counters::stages::{RxStage, TargetStage};
use cpumapd::lcore;
use cpumapd::telemetry::Summary;
use cpumapd::telemetry::exporter::MetricsServer;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "ctl") {
        return ctl_main(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "--check-config") {
        return check_main(&args[1..]);
    }
    // Before anything slow (EAL init, pools, eBPF verification): a SIGTERM
    // or SIGINT from then on asks for a clean stop instead of killing the
    // process with nothing summarised; the main loop sees it at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("cpumapd: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let started = if args.is_empty() {
        Plan::demo().map(|p| (p, None))
    } else {
        plan_from_args(&args)
    };
    let (plan, eal) = match started {
        Ok(p) => p,
        Err(ConfigError::Help) => {
            print!("{}", cpumapd::cli::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cpumapd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&plan, eal, stop) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cpumapd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "dpdk")]
type Eal = cpumapd::dpdk::Eal;
#[cfg(not(feature = "dpdk"))]
type Eal = std::convert::Infallible;

/// The plan, and for a DPDK run the EAL it was resolved against: DPDK
/// initialises the EAL with everything before `--`, then resolves the app
/// arguments against the lcores and ports it found (as l3fwd does).
fn plan_from_args(args: &[String]) -> Result<(Plan, Option<Eal>), ConfigError> {
    let parsed = Parsed::parse(args)?;
    if parsed.eal_args.is_empty() && parsed.file.is_none() && parsed.app.backend.is_none() {
        // App arguments alone (`cpumapd -- --duration 5`): the demo, with them.
        eprintln!("cpumapd: no EAL arguments or profile: running the demo (net_gen0, every CPU)");
        return Plan::demo_with(parsed.app).map(|p| (p, None));
    }
    match parsed.backend {
        Backend::Native => Plan::resolve_native(parsed).map(|p| (p, None)),
        #[cfg(feature = "dpdk")]
        Backend::Dpdk => {
            use cpumapd::dpdk::ethdev;
            let mut it = parsed.eal_args.iter();
            while let Some(a) = it.next() {
                let v = match a.strip_prefix("--vdev=") {
                    Some(v) => Some(v),
                    None if a == "--vdev" => it.next().map(String::as_str),
                    None => None,
                };
                if let Some(v) = v.filter(|v| v.starts_with("net_gen")) {
                    return Err(ConfigError::Eal(format!(
                        "--vdev {v}: net_gen is cpumapd's own generator, not a DPDK driver; run it with `-- --backend native`, or use a DPDK vdev (net_null, net_pcap, net_memif, ...)"
                    )));
                }
            }
            let eal = cpumapd::dpdk::Eal::init(&parsed.eal_args)
                .map_err(|e| ConfigError::Eal(e.to_string()))?;
            let ports = ethdev::ports(&eal);
            let plan = Plan::resolve_dpdk(parsed, &eal, ports)?;
            Ok((plan, Some(eal)))
        }
        #[cfg(not(feature = "dpdk"))]
        Backend::Dpdk => unreachable!("Backend::parse refuses dpdk without the feature"),
    }
}

/// `cpumapd --check-config FILE [EAL args] [-- app args]`: validate, print
/// the resolved plan, exit 0; or name the problem and exit 1.
fn check_main(args: &[String]) -> ExitCode {
    match cpumapd::config::check::check(args) {
        Ok(c) => {
            print!("{}", c.render(args.first().map_or("", String::as_str)));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let file = args.first().map_or("--check-config", String::as_str);
            let e = e.to_string();
            if e.contains(file) {
                eprintln!("cpumapd: {e}");
            } else {
                eprintln!("cpumapd: {file}: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn ctl_main(args: &[String]) -> ExitCode {
    let parsed = match CtlArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            // --help and usage errors, clap's way (exit 0 or 2).
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match ctl::run(&parsed) {
        Ok(Output::Json(v)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            ExitCode::SUCCESS
        }
        Ok(Output::Text(t)) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Ok(Output::Nothing) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpumapd ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts one service: an endpoint the user gave must open; a default one
/// that cannot is a warning and the dataplane runs without it.
fn service<A, S, E: std::fmt::Display>(
    ep: &Endpoint<A>,
    start: impl FnOnce(&A) -> Result<S, E>,
) -> Result<Option<S>, String> {
    let Some(a) = ep.get() else {
        return Ok(None);
    };
    match start(a) {
        Ok(s) => Ok(Some(s)),
        Err(e) if ep.is_given() => Err(e.to_string()),
        Err(e) => {
            eprintln!("cpumapd: warning: {e}");
            Ok(None)
        }
    }
}

/// One line with where each lcore sits (topology from hwloc or sysfs), and
/// the placement warnings `--check-config` gives.
fn print_placement(plan: &Plan, out: &mut Box<dyn Write>) {
    let topo = cpumapd::config::topology::Topology::detect();
    let placed: Vec<String> = plan
        .lcores
        .iter()
        .filter_map(|l| {
            let cpu = *l.cpus.first()?;
            let p = topo.place(cpu)?;
            let opt = |v: Option<u32>| v.map_or("?".to_string(), |n| n.to_string());
            Some(format!(
                "{} cpu{cpu} node{} core{}",
                l.id,
                opt(p.node),
                opt(p.core)
            ))
        })
        .collect();
    if !placed.is_empty() {
        let _ = writeln!(
            out,
            "cpumapd: topology ({}): {}",
            topo.source,
            placed.join(" | ")
        );
    }
    for w in cpumapd::config::check::placement_warnings(plan, &topo) {
        eprintln!("cpumapd: warning: {w} (topology from {})", topo.source);
    }
}

/// Opens the control socket (as `--control` says) with its state store, and
/// restores the saved state over the profile once the socket is ours; says
/// so in one line.
fn start_control(
    plan: &Plan,
    running: &lcore::Running,
    out: &mut Box<dyn Write>,
) -> Result<Option<ControlServer>, String> {
    let store = match plan.control.get() {
        Some(sock) => state_store(plan, sock)?,
        None => Arc::new(StateStore::disabled()),
    };
    let control = service(&plan.control, |p| {
        ControlServer::start_with_state(p, running.handle(), store.clone())
    })?;
    if let Some(c) = &control {
        let _ = writeln!(out, "cpumapd: control socket {}", c.path().display());
        // The socket is ours, so is its state: restore it over the profile.
        if let Some(file) = store.path() {
            let line = match store.restore(&running.handle()) {
                Restored::Nothing => format!("nothing saved yet in {}", file.display()),
                Restored::Applied {
                    entries,
                    mode,
                    prog_maps,
                } => format!(
                    "restored from {}: {entries} entries, mode {mode}, {prog_maps} program map values (over the profile)",
                    file.display()
                ),
                Restored::Rejected { moved_to, why } => format!(
                    "{} not restored: {why}; set aside as {}, the profile's map stays",
                    file.display(),
                    moved_to.display()
                ),
            };
            let _ = writeln!(out, "cpumapd: state: {line}");
        }
    }
    Ok(control)
}

/// The state store of the instance owning control socket `sock`: its file
/// in `--state-dir` (created 0700 if missing), the profile's entries as the
/// starting state. A given directory that cannot be made is an error; the
/// default one only warns (the run then keeps nothing).
fn state_store(plan: &Plan, sock: &Path) -> Result<Arc<StateStore>, String> {
    let Some(dir) = plan.state_dir.get() else {
        return Ok(Arc::new(StateStore::disabled()));
    };
    let made = std::fs::create_dir_all(dir).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    });
    if let Err(e) = made {
        let msg = format!(
            "state directory {}: {e}; pass --state-dir DIR or --state-dir off",
            dir.display()
        );
        if plan.state_dir.is_given() {
            return Err(msg);
        }
        eprintln!("cpumapd: warning: {msg} (what ctl changes is not kept)");
        return Ok(Arc::new(StateStore::disabled()));
    }
    let profile = plan
        .targets
        .iter()
        .map(|t| EntrySpec {
            key: t.0,
            qsize: plan.qsize,
            prog: plan.remote_spec.clone(),
        })
        .collect();
    Ok(Arc::new(StateStore::new(
        Some(state_file(dir, sock)),
        plan.max_entries,
        profile,
        plan.mode,
    )))
}

fn run(plan: &Plan, eal: Option<Eal>, stop: Arc<AtomicBool>) -> Result<ExitCode, String> {
    // Human output goes to stderr when stdout carries the JSON summary.
    let json_to_stdout = plan.summary_json.as_deref() == Some("-");
    let mut out: Box<dyn Write> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };

    print_placement(plan, &mut out);
    let _ = writeln!(
        out,
        "cpumapd: {} | {} port(s) | RX {} | targets {} | qsize {} | bulk {} | exception {}",
        match &plan.prog {
            // The eBPF program classifies, not the (default) mode.
            Some(p) => format!("prog {}", p.name),
            None => format!("mode {}", plan.mode),
        },
        plan.ports.len(),
        plan.rx_lcores()
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(","),
        plan.targets
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(","),
        plan.qsize,
        plan.bulk_size,
        plan.exception.backend(),
    );
    let running = match eal {
        #[cfg(feature = "dpdk")]
        Some(eal) => lcore::start_dpdk(plan, eal),
        #[cfg(not(feature = "dpdk"))]
        Some(never) => match never {},
        None => lcore::start(plan),
    }
    .map_err(|e| e.to_string())?;
    // A service that must open and cannot: `running` drops, which stops and
    // joins every lcore.
    let metrics = service(&plan.metrics, |a| {
        MetricsServer::start(*a, running.stats().clone())
    })?;
    let control = start_control(plan, &running, &mut out)?;
    if let Some(m) = &metrics {
        let _ = writeln!(out, "cpumapd: metrics on http://{}/metrics", m.addr());
    }
    let t0 = Instant::now();
    let mut last = Summary::now(running.stats());
    let mut last_t = Instant::now();
    let mut sources_ended: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if plan.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        if sources_ended.is_none() && running.rx_finished() {
            sources_ended = Some(Instant::now());
        }
        if let Some(ended) = sources_ended
            && ended.elapsed() >= plan.linger.unwrap_or_default()
        {
            break;
        }
        if let Some(iv) = plan.interval
            && last_t.elapsed() >= iv
        {
            let now = Summary::now(running.stats());
            let _ = write!(out, "{}", now.table(&last, last_t.elapsed().as_secs_f64()));
            let _ = out.flush();
            last = now;
            last_t = Instant::now();
        }
    }
    // Services first: no map change or scrape races the drain.
    drop(control);
    drop(metrics);
    let summary = Summary::at_shutdown(running).map_err(|e| e.to_string())?;
    report(&mut out, &summary);
    if let Some(path) = &plan.summary_json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        if path == "-" {
            // Not println!: a closed stdout (`cpumapd ... | head`) is an
            // error to report, not a panic.
            if let Err(e) = writeln!(std::io::stdout().lock(), "{json}") {
                eprintln!("cpumapd: cannot write the summary to stdout: {e}");
            }
        } else {
            std::fs::write(path, json + "\n").map_err(|e| format!("--summary-json {path}: {e}"))?;
        }
    }
    match summary.check_identities(true) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("cpumapd: accounting identity violated: {e}");
            Ok(ExitCode::from(3))
        }
    }
}

fn report(out: &mut dyn Write, s: &Summary) {
    let _ = writeln!(
        out,
        "summary: {:.2}s rx {} ({:.2} Mpps) pass {} drop {} tx {} redirect {} aborted {} | enqueued {} enqueue_drops {} | \
         target_processed {} delivered {} target_drops {} | in_flight {} pool_in_use {} | \
         reverse_rx {} reverse_tx {} reverse_drops {}",
        s.duration_s,
        s.rx,
        s.rx_pps / 1e6,
        s.pass,
        s.drop,
        s.tx,
        s.redirect,
        s.aborted,
        s.enqueued,
        s.enqueue_drops,
        s.target_processed,
        s.delivered,
        s.target_drops,
        s.in_flight,
        s.pool_in_use,
        s.reverse_rx,
        s.reverse_tx,
        s.reverse_drops
    );
    let rows = s
        .rx_lcores
        .iter()
        .map(|r| (format!("{} (RX)", r.lcore), &r.stages, &RxStage::NAMES[..]))
        .chain(s.targets.iter().map(|t| {
            (
                format!("{} (target)", t.target),
                &t.stages,
                &TargetStage::NAMES[..],
            )
        }));
    for (who, st, names) in rows {
        if let Some(st) = st {
            // In loop order, not the map's alphabetical one.
            let stages: Vec<String> = names
                .iter()
                .map(|k| format!("{k} {:.1}", st.cycles_per_packet.get(k).unwrap_or(&0.0)))
                .collect();
            let _ = writeln!(
                out,
                "stage cycles/packet {who}: {} | total {:.1} ({:.1} ns) over {} packets",
                stages.join(" "),
                st.total_per_packet,
                st.ns_per_packet,
                st.packets
            );
        }
    }
}
