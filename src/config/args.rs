//! The command line and the profile file, parsed but not yet resolved
//! ([`Parsed`]): the EAL arguments, and the application's options (after
//! `--`) and a profile's `[app]` table as one set of options, [`AppArgs`]. A profile's keys are the long
//! options without their dashes; [`merge`] reads the file's table and the
//! command line with the same parser, and for each option keeps what the
//! command line gave, else what the file gave (a list as a whole).

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use super::{Backend, ConfigError};

/// Application arguments (after `--`).
#[derive(Parser, Debug, Default, Clone)]
#[command(name = "cpumapd", no_binary_name = true, disable_version_flag = true)]
pub struct AppArgs {
    /// RX queue to lcore mapping, l3fwd style: "(port,queue,lcore)[,...]".
    #[arg(long)]
    pub rx: Option<String>,
    /// Target lcore (repeatable, or comma separated): one cpumap entry each.
    #[arg(long = "cpu", value_delimiter = ',')]
    pub cpu: Vec<u32>,
    /// Queue size of each cpumap entry (1..=16384).
    #[arg(long)]
    pub qsize: Option<u32>,
    /// The built-in RX filter: an xdp-bench redirect-cpu mode (below).
    #[arg(long)]
    pub mode: Option<String>,
    /// The cpumap entries' program, run on the target before the exception
    /// path: drop, pass, redirect:IF (out of interface IF, xdp-bench's -r
    /// redirect -D IF) or an eBPF object FILE.o[:PROGRAM].
    #[arg(long = "remote-action")]
    pub remote_action: Option<String>,
    /// Where targets hand frames to the kernel: drop, pcap:FILE,
    /// tap:IFNAME[,key=value...], virtio-user:PATH[,key=value...] or
    /// fault:key=value,... (keys below).
    #[arg(long)]
    pub exception: Option<String>,
    /// TAP exception path: rewrite the destination MAC of unicast frames to
    /// the TAP's (default) or keep it.
    #[arg(long = "kernel-mac")]
    pub kernel_mac: Option<String>,
    /// What an lcore does with nothing to do: spin (poll without pause),
    /// adaptive (spin a while, then block until work arrives; default) or
    /// sleep (block at once).
    #[arg(long)]
    pub idle: Option<String>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Live table interval in seconds (0 turns it off).
    #[arg(long, allow_negative_numbers = true)]
    pub interval: Option<f64>,
    /// Write the JSON summary to FILE ("-" for stdout).
    #[arg(long = "summary-json")]
    pub summary_json: Option<String>,
    /// TOML config file.
    #[arg(long)]
    pub config: Option<String>,
    /// Frames per bulk queue before a flush (1..=32, default 8).
    #[arg(long = "bulk-size")]
    pub bulk_size: Option<usize>,
    /// Buffers per RX lcore pool (default: enough to fill every target ring).
    #[arg(long = "pool-size")]
    pub pool_size: Option<u32>,
    /// Keys in the cpumap (default 128).
    #[arg(long = "max-entries")]
    pub max_entries: Option<u32>,
    /// Do not pin lcore threads to their CPUs.
    #[arg(long = "no-pin")]
    pub no_pin: bool,
    /// Prometheus endpoint: ADDR:PORT (default 127.0.0.1:9419) or off.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Control socket: PATH (default /run/cpumapd.sock as root) or off.
    #[arg(long)]
    pub control: Option<String>,
    /// After finite sources end, keep serving metrics and control this many
    /// seconds (or until SIGINT/SIGTERM) before shutting down.
    #[arg(long, allow_negative_numbers = true)]
    pub linger: Option<f64>,
    /// Packet I/O: dpdk (EAL, ethdev, mbufs; the default when built with
    /// the `dpdk` feature) or native (cpumapd's own ports and pools).
    #[arg(long)]
    pub backend: Option<String>,
    /// eBPF XDP object run as the RX filter instead of --mode:
    /// FILE.o[:PROGRAM] (built with clang -O2 -g -target bpf).
    #[arg(long)]
    pub prog: Option<String>,
    /// JIT-compile eBPF programs (rbpf, after our verifier accepted them).
    #[arg(long)]
    pub jit: bool,
    /// Set a global variable of the eBPF objects before load, as libbpf's
    /// skeleton does (`const volatile` in .rodata, or .data/.bss):
    /// NAME=VALUE, repeatable.
    #[arg(long = "prog-set", value_name = "NAME=VALUE")]
    pub prog_set: Vec<String>,
    /// Fill a DEVMAP entry of the eBPF objects at load, as a tool's loader
    /// does (xdp-bench's tx_port from -D IF): MAP:INDEX=IFNAME[,prog=NAME]
    /// (NAME: the object's devmap egress program), repeatable.
    #[arg(long = "devmap", value_name = "MAP:INDEX=IFNAME")]
    pub devmap: Vec<String>,
    /// Fill a PROG_ARRAY entry of the eBPF objects at load with a program
    /// of the same object, for bpf_tail_call: MAP:INDEX=PROG, repeatable.
    #[arg(long = "prog-array", value_name = "MAP:INDEX=PROG")]
    pub prog_array: Vec<String>,
    /// Measure RX-to-target latency: RX lcores stamp each burst, targets
    /// record every frame (percentiles in the summary).
    #[arg(long)]
    pub latency: bool,
    /// Count TSC cycles per poll stage on every lcore (cycles per packet
    /// per stage in the summary). Costs a few cycles per packet.
    #[arg(long)]
    pub stage_cycles: bool,
    /// Keep what ctl changes across restarts in DIR (default /var/lib/cpumapd
    /// as root, else $XDG_RUNTIME_DIR/cpumapd), or off.
    #[arg(long = "state-dir")]
    pub state_dir: Option<String>,
}

/// A profile's `[app]` table as command-line arguments: `qsize = 2048` is
/// `--qsize 2048`, `no-pin = true` is `--no-pin` (false: absent), a list
/// is the option once per item. Errors name the key.
pub fn file_argv(app: &toml::Table) -> Result<Vec<String>, String> {
    let cmd = AppArgs::command();
    let keys = || {
        cmd.get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|&l| l != "config")
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut argv = Vec::new();
    for (key, value) in app {
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
        else {
            return Err(format!(
                "[app] {key}: unknown key (the keys are the long options without their dashes: {})",
                keys()
            ));
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            _ => Err(format!(
                "[app] {key}: expected a string or a number, not a {}",
                v.type_str()
            )),
        };
        match value {
            toml::Value::Boolean(on) if flag => {
                if *on {
                    argv.push(format!("--{key}"));
                }
            }
            _ if flag => {
                return Err(format!(
                    "[app] {key}: expected true or false, not a {}",
                    value.type_str()
                ));
            }
            toml::Value::Array(items) => {
                if !matches!(arg.get_action(), ArgAction::Append) {
                    return Err(format!("[app] {key}: takes one value, not a list"));
                }
                for item in items {
                    argv.push(format!("--{key}"));
                    argv.push(scalar(item)?);
                }
            }
            v => {
                argv.push(format!("--{key}"));
                argv.push(scalar(v)?);
            }
        }
    }
    Ok(argv)
}

/// The options of the command line `cmdline` over those of a profile's
/// (`file`, from [`file_argv`]): each option the command line gives wins
/// whole (a list too), the file fills the rest. Both go through the same
/// parser, so a profile is checked exactly as the command line is.
pub fn merge(file: &[String], cmdline: &[String]) -> Result<AppArgs, MergeError> {
    let cmd = AppArgs::command();
    let from_file = cmd
        .clone()
        .try_get_matches_from(file)
        .map_err(MergeError::File)?;
    let from_cmdline = cmd
        .clone()
        .try_get_matches_from(cmdline)
        .map_err(MergeError::Cmdline)?;
    let given =
        |m: &clap::ArgMatches, id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    let mut argv = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        let m = if given(&from_cmdline, id) {
            &from_cmdline
        } else if given(&from_file, id) {
            &from_file
        } else {
            continue;
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            argv.push(format!("--{long}"));
            continue;
        }
        for v in m.get_raw(id).into_iter().flatten() {
            argv.push(format!("--{long}"));
            argv.push(v.to_string_lossy().into_owned());
        }
    }
    let m = cmd
        .try_get_matches_from(argv)
        .map_err(MergeError::Cmdline)?;
    AppArgs::from_arg_matches(&m).map_err(MergeError::Cmdline)
}

/// Which side of [`merge`] a parse error came from.
#[derive(Debug)]
pub enum MergeError {
    /// The profile's `[app]` table.
    File(clap::Error),
    /// The command line.
    Cmdline(clap::Error),
}

/// Command line and file, parsed but not yet resolved: a DPDK run gives
/// `eal_args` to `rte_eal_init` before the plan is resolved against the
/// ports it probed (as l3fwd parses its own arguments after EAL init).
#[derive(Debug)]
pub struct Parsed {
    /// The file's `[eal]` arguments, then the command line's.
    pub eal_args: Vec<String>,
    /// The application arguments (after `--`).
    pub app: AppArgs,
    /// The `--config` file, when given.
    pub file: Option<FileConfig>,
    /// The backend the run asks for.
    pub backend: Backend,
}

impl Parsed {
    /// Parses a command line for this build: `--backend dpdk` (or the
    /// file's `backend = "dpdk"`) needs the `dpdk` feature.
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let p = Self::parse_any_backend(args)?;
        if p.backend == Backend::Dpdk && !cfg!(feature = "dpdk") {
            return Err(ConfigError::Args(
                "--backend dpdk: this cpumapd was built without DPDK (cargo build --features dpdk)"
                    .into(),
            ));
        }
        Ok(p)
    }

    /// Parses a command line whatever backend it names.
    pub fn parse_any_backend(args: &[String]) -> Result<Self, ConfigError> {
        let (eal, app) = split_args(args);
        if eal.iter().any(|a| a == "-h" || a == "--help") {
            return Err(ConfigError::Help);
        }
        let clap_err = |e: clap::Error| match e.kind() {
            clap::error::ErrorKind::DisplayHelp => ConfigError::Help,
            _ => ConfigError::Args(e.to_string()),
        };
        // The command line alone first: it names the profile.
        let given = AppArgs::try_parse_from(app).map_err(clap_err)?;
        let path = given.config.clone();
        let file = path.as_deref().map(FileConfig::load).transpose()?;
        let app = match (&file, &path) {
            (Some(f), Some(path)) => {
                let bad = |why: String| ConfigError::File {
                    path: path.clone(),
                    why,
                };
                let file_args = file_argv(&f.app).map_err(bad)?;
                merge(&file_args, app).map_err(|e| match e {
                    MergeError::File(e) => bad(e.to_string()),
                    MergeError::Cmdline(e) => clap_err(e),
                })?
            }
            _ => given,
        };
        let mut eal_args = Vec::new();
        if let Some(f) = &file {
            if let Some(l) = &f.eal.lcores {
                eal_args.extend(["--lcores".to_string(), l.clone()]);
            } else if let Some(l) = &f.eal.l {
                eal_args.extend(["-l".to_string(), l.clone()]);
            }
            for v in &f.eal.vdev {
                eal_args.extend(["--vdev".to_string(), v.clone()]);
            }
            eal_args.extend(f.eal.args.iter().cloned());
        }
        eal_args.extend(eal.iter().cloned());
        let backend = Backend::parse(app.backend.as_deref())?;
        Ok(Parsed {
            eal_args,
            app,
            file,
            backend,
        })
    }
}

/// The TOML file: `[eal]` and `[app]` tables.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    /// The `[eal]` table.
    pub eal: FileEal,
    #[serde(default)]
    /// The `[app]` table: the app options' long names without their
    /// dashes (`prog-set = ["nr_cpus=4"]`, `no-pin = true`), read by
    /// [`args::file_argv`].
    pub app: toml::Table,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
/// A profile's `[eal]` table.
pub struct FileEal {
    /// `-l` syntax.
    pub l: Option<String>,
    /// `--lcores` syntax.
    pub lcores: Option<String>,
    #[serde(default)]
    /// `--vdev` arguments.
    pub vdev: Vec<String>,
    /// Other EAL args, passed as on the command line.
    #[serde(default)]
    pub args: Vec<String>,
}

impl FileConfig {
    /// Reads a regular file of at most 1 MiB (a device, FIFO or directory
    /// given as a config file is refused, not read forever).
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let err = |why: String| ConfigError::File {
            path: path.into(),
            why,
        };
        let md = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if !md.is_file() {
            return Err(err("not a regular file".into()));
        }
        if md.len() > 1 << 20 {
            return Err(err(format!(
                "{} bytes is too large for a config file",
                md.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            why: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.into(),
            why: e.to_string(),
        })
    }
}

/// Splits `argv[1..]` at the first `--` into EAL and app args. Without a
/// `--` everything is EAL.
pub fn split_args(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}
