//! `cpumapd ctl`: the control socket's command-line client (bpftool-like).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use super::proto::{Client, CtlError, MapFile, Request, UpdateFlags};

#[derive(Parser, Debug)]
#[command(
    name = "cpumapd ctl",
    no_binary_name = true,
    disable_version_flag = true,
    about = "Change and inspect a running cpumapd through its control socket"
)]
/// `cpumapd ctl`'s command line.
pub struct CtlArgs {
    /// Control socket (default: /run/cpumapd.sock as root, else $XDG_RUNTIME_DIR/cpumapd.sock).
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    #[command(subcommand)]
    /// What to do.
    pub cmd: CtlCmd,
}

#[derive(Subcommand, Debug)]
/// The `ctl` commands.
pub enum CtlCmd {
    /// The cpumap: dump, lookup, update, delete, apply.
    #[command(subcommand)]
    Map(MapCmd),
    /// The RX filter mode.
    #[command(subcommand)]
    Mode(ModeCmd),
    /// The live table once, over an interval.
    Stats {
        /// Seconds to measure over (0.1..=10).
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
    },
    /// The JSON summary so far.
    Summary,
    /// Loaded eBPF programs' maps.
    #[command(subcommand)]
    Prog(ProgCmd),
    /// The state kept across restarts (`--state-dir`).
    #[command(subcommand)]
    State(StateCmd),
}

#[derive(Subcommand, Debug)]
/// `ctl state` commands.
pub enum StateCmd {
    /// What is saved, and where.
    Show,
    /// Delete the saved state: the next start uses the profile.
    Reset,
}

#[derive(Subcommand, Debug)]
/// `ctl prog` commands.
pub enum ProgCmd {
    /// Program maps.
    #[command(subcommand)]
    Map(ProgMapCmd),
}

#[derive(Subcommand, Debug)]
/// `ctl prog map` commands.
pub enum ProgMapCmd {
    /// Every entry of the map NAME (PERCPU maps: per lcore and summed).
    Dump {
        /// The map's name in its object.
        name: String,
    },
    /// Set KEY of map NAME to VALUE (numbers or hex; PERCPU: every lcore).
    Update {
        /// The map's name in its object.
        name: String,
        /// The key (a number, or hex of the key size).
        key: String,
        /// The value (a number, or hex of the value size).
        value: String,
    },
}

#[derive(Subcommand, Debug)]
/// `ctl map` commands.
pub enum MapCmd {
    /// Every entry.
    Dump,
    /// One key's entry.
    Lookup {
        /// The cpumap key (target lcore).
        key: u32,
    },
    /// Create or replace an entry (qsize 0 deletes), with the kernel's checks.
    Update {
        /// The cpumap key (target lcore).
        key: u32,
        /// Ring size (1..=16384; 0 deletes).
        qsize: u32,
        /// BPF_NOEXIST (always EEXIST on a cpumap, as in the kernel).
        #[arg(long, conflicts_with = "exist")]
        noexist: bool,
        /// BPF_EXIST.
        #[arg(long)]
        exist: bool,
        /// Remote program run on the target: pass, drop or an eBPF object
        /// FILE.o[:PROGRAM] (read, verified and loaded by the daemon).
        #[arg(long)]
        prog: Option<String>,
    },
    /// Delete a key's entry.
    Delete {
        /// The cpumap key (target lcore).
        key: u32,
    },
    /// Replace the whole map atomically from a TOML (`[[entries]]`) or .json file.
    Apply {
        /// The map file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
/// `ctl mode` commands.
pub enum ModeCmd {
    /// The current mode.
    Get,
    /// Switch every RX lcore to another mode.
    Set {
        /// The new mode (xdp-bench redirect-cpu names).
        mode: String,
    },
}

/// What `run` prints on success.
pub enum Output {
    /// A JSON value, printed pretty.
    Json(Value),
    /// A line of text.
    Text(String),
    /// Nothing to print.
    Nothing,
}

/// Builds the request for a parsed command line. File errors (map apply)
/// are EINVAL naming the file.
pub fn request(cmd: &CtlCmd) -> Result<Request, CtlError> {
    Ok(match cmd {
        CtlCmd::Map(MapCmd::Dump) => Request::MapDump,
        CtlCmd::Map(MapCmd::Lookup { key }) => Request::MapLookup { key: *key },
        CtlCmd::Map(MapCmd::Update {
            key,
            qsize,
            noexist,
            exist,
            prog,
        }) => Request::MapUpdate {
            key: *key,
            qsize: *qsize,
            flags: match (noexist, exist) {
                (true, _) => UpdateFlags::Noexist,
                (_, true) => UpdateFlags::Exist,
                _ => UpdateFlags::Any,
            },
            prog: prog.clone(),
        },
        CtlCmd::Map(MapCmd::Delete { key }) => Request::MapDelete { key: *key },
        CtlCmd::Map(MapCmd::Apply { file }) => Request::MapApply {
            entries: MapFile::load(file)
                .map_err(|e| CtlError::new("EINVAL", e))?
                .entries,
        },
        CtlCmd::Mode(ModeCmd::Get) => Request::ModeGet,
        CtlCmd::Mode(ModeCmd::Set { mode }) => Request::ModeSet { mode: mode.clone() },
        CtlCmd::Stats { interval } => {
            if !(interval.is_finite() && (0.1..=10.0).contains(interval)) {
                return Err(CtlError::new(
                    "EINVAL",
                    format!("--interval {interval}: expected 0.1 to 10 seconds"),
                ));
            }
            Request::Stats {
                interval_ms: Some((interval * 1000.0).round() as u64),
            }
        }
        CtlCmd::Summary => Request::Summary,
        CtlCmd::Prog(ProgCmd::Map(ProgMapCmd::Dump { name })) => {
            Request::ProgMapDump { name: name.clone() }
        }
        CtlCmd::State(StateCmd::Show) => Request::StateShow,
        CtlCmd::State(StateCmd::Reset) => Request::StateReset,
        CtlCmd::Prog(ProgCmd::Map(ProgMapCmd::Update { name, key, value })) => {
            Request::ProgMapUpdate {
                name: name.clone(),
                key: key.clone(),
                value: value.clone(),
            }
        }
    })
}

/// Runs one ctl command line against the socket.
pub fn run(args: &CtlArgs) -> Result<Output, CtlError> {
    let req = request(&args.cmd)?;
    let path = args
        .control
        .clone()
        .unwrap_or_else(crate::config::default_control_path);
    let mut client = Client::connect(&path).map_err(|e| CtlError::new("ECONNREFUSED", e))?;
    let result = client.call(&req)?;
    Ok(match (&args.cmd, result) {
        (CtlCmd::Stats { .. }, v) => Output::Text(
            v.get("table")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        (CtlCmd::Mode(_), v) => Output::Text(format!(
            "{}\n",
            v.get("mode").and_then(Value::as_str).unwrap_or_default()
        )),
        (_, Value::Null) => Output::Nothing,
        (_, v) => Output::Json(v),
    })
}
