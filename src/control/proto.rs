//! The control protocol: one JSON object per line each way.
//!
//! Request: `{"cmd":"map_update","key":2,"qsize":256,"flags":"exist"}`.
//! Reply: `{"ok":true,"result":...}` or
//! `{"ok":false,"code":"EOVERFLOW","message":"qsize 20000 > 16384"}`.
//! Codes are errno names: the map's own (EINVAL, E2BIG, EEXIST, EOVERFLOW,
//! ENODEV, ENOMEM) and, for the protocol, EINVAL (malformed request),
//! EOPNOTSUPP (unknown command), E2BIG (line too long) and EBUSY (too many
//! clients).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use crate::cpumap::{ApplyError, BPF_ANY, BPF_EXIST, BPF_NOEXIST, EntryValue, MapError};
use crate::filter::{Mode, RemoteProg};
use crate::lcore::Handle;

/// Longest request line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// `bpf_map_update_elem` flags by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateFlags {
    #[default]
    /// `BPF_ANY`: create or replace.
    Any,
    /// `BPF_NOEXIST`: create only (always EEXIST on a cpumap).
    Noexist,
    /// `BPF_EXIST`: replace only.
    Exist,
}

impl UpdateFlags {
    /// The flag's bpf(2) value.
    pub fn bits(self) -> u64 {
        match self {
            UpdateFlags::Any => BPF_ANY,
            UpdateFlags::Noexist => BPF_NOEXIST,
            UpdateFlags::Exist => BPF_EXIST,
        }
    }
}

/// One entry of a whole map (`map apply`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    /// The cpumap key (target lcore).
    pub key: u32,
    /// Ring size (0 deletes).
    pub qsize: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Remote program: pass, drop or an eBPF object path.
    pub prog: Option<String>,
}

/// A map file for `ctl map apply FILE`: TOML (`[[entries]]` tables) or,
/// for a `.json` file, `{"entries": [...]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapFile {
    #[serde(default)]
    /// Every entry of the new map.
    pub entries: Vec<EntrySpec>,
}

impl MapFile {
    /// Reads a TOML file, or JSON for a `.json` file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let parsed = if path.extension().is_some_and(|x| x == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Every request. The tag is `cmd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every entry.
    MapDump,
    /// One key's entry.
    MapLookup {
        /// The cpumap key.
        key: u32,
    },
    /// Create or replace an entry (qsize 0 deletes).
    MapUpdate {
        /// The cpumap key.
        key: u32,
        /// Ring size.
        qsize: u32,
        #[serde(default)]
        /// Update flags (any, noexist, exist).
        flags: UpdateFlags,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// Remote program: pass, drop or an eBPF object path.
        prog: Option<String>,
    },
    /// Delete an entry.
    MapDelete {
        /// The cpumap key.
        key: u32,
    },
    /// Replace the whole map atomically.
    MapApply {
        /// Every entry of the new map.
        entries: Vec<EntrySpec>,
    },
    /// The current RX filter mode.
    ModeGet,
    /// Switch the RX filter mode.
    ModeSet {
        /// The new mode.
        mode: String,
    },
    /// The live table over `interval_ms` (100..=10000, default 1000).
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// Milliseconds to measure over.
        interval_ms: Option<u64>,
    },
    /// The JSON summary so far.
    Summary,
    /// The entries of map `name` of a loaded eBPF program.
    ProgMapDump {
        /// The map's name in its object.
        name: String,
    },
    /// Set `key` of map `name` to `value` (numbers, little-endian at the
    /// map's sizes, or hex strings of exactly those sizes); PERCPU maps get
    /// the value in every lcore's copy.
    ProgMapUpdate {
        /// The map's name in its object.
        name: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The state kept across restarts (`--state-dir`) and its file.
    StateShow,
    /// Delete the state file: the next start uses the profile.
    StateReset,
}

/// The command names, for the EOPNOTSUPP message.
pub const COMMANDS: &[&str] = &[
    "prog_map_dump",
    "prog_map_update",
    "map_dump",
    "map_lookup",
    "map_update",
    "map_delete",
    "map_apply",
    "mode_get",
    "mode_set",
    "stats",
    "summary",
    "state_show",
    "state_reset",
];

/// A refused request: an errno name and what was wrong.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct CtlError {
    /// An errno name (EINVAL, E2BIG, ...).
    pub code: String,
    /// What was wrong.
    pub message: String,
}

impl CtlError {
    /// An error with errno name `code`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl From<MapError> for CtlError {
    fn from(e: MapError) -> Self {
        let code = e.code();
        let full = e.to_string();
        // MapError's Display is "CODE: message"; keep the message part.
        let message = full
            .strip_prefix(code)
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&full);
        CtlError::new(code, message)
    }
}

impl From<ApplyError> for CtlError {
    fn from(e: ApplyError) -> Self {
        let inner = CtlError::from(e.error);
        CtlError::new(&inner.code, format!("key {}: {}", e.key, inner.message))
    }
}

/// One reply line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    /// True for a result, false for an error.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The result (ok replies).
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The errno name (error replies).
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// What was wrong (error replies).
    pub message: Option<String>,
}

impl Reply {
    /// The reply to a request's outcome.
    pub fn from_result(r: Result<Value, CtlError>) -> Self {
        match r {
            Ok(v) => Reply {
                ok: true,
                result: Some(v),
                code: None,
                message: None,
            },
            Err(e) => Reply {
                ok: false,
                result: None,
                code: Some(e.code),
                message: Some(e.message),
            },
        }
    }

    /// The outcome a reply carries.
    pub fn into_result(self) -> Result<Value, CtlError> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(CtlError::new(
                self.code.as_deref().unwrap_or("EPROTO"),
                self.message.unwrap_or_default(),
            ))
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a reply always serialises");
        s.push('\n');
        s
    }
}

/// Parses one request line. Malformed JSON and bad fields are EINVAL, an
/// unknown `cmd` is EOPNOTSUPP; the message names what was wrong.
pub fn parse(line: &[u8]) -> Result<Request, CtlError> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| CtlError::new("EINVAL", format!("malformed request: {e}")))?;
    let Some(cmd) = v.get("cmd").and_then(Value::as_str).map(str::to_owned) else {
        return Err(CtlError::new(
            "EINVAL",
            "malformed request: expected a JSON object with a string \"cmd\"",
        ));
    };
    if !COMMANDS.contains(&cmd.as_str()) {
        return Err(CtlError::new(
            "EOPNOTSUPP",
            format!("unknown command '{cmd}' (known: {})", COMMANDS.join(", ")),
        ));
    }
    serde_json::from_value(v).map_err(|e| CtlError::new("EINVAL", format!("{cmd}: {e}")))
}

pub(super) fn prog(name: Option<&str>) -> Result<Option<RemoteProg>, CtlError> {
    name.map(|p| p.parse::<RemoteProg>())
        .transpose()
        .map_err(|e| CtlError::new("EINVAL", e))
}

/// A value of 1, 2, 4 or 8 bytes as a number, else hex.
fn number_or_hex(b: &[u8]) -> Value {
    match b.len() {
        1 | 2 | 4 | 8 => {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            json!(u64::from_le_bytes(w))
        }
        _ => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

/// `"5353"` or `"0x14e9"` as a little-endian value of `size` bytes, or a
/// hex string of exactly `size` bytes.
fn parse_bytes(s: &str, size: u32, what: &str) -> Result<Vec<u8>, CtlError> {
    let bad = |why: String| CtlError::new("EINVAL", format!("{what} '{s}': {why}"));
    let size = size as usize;
    let num = match s.strip_prefix("0x") {
        Some(h) if h.len() <= 16 => u64::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None => s.parse::<u64>().ok(),
    };
    if let Some(v) = num
        && size <= 8
    {
        if size < 8 && v >> (size * 8) != 0 {
            return Err(bad(format!("does not fit {size} bytes")));
        }
        return Ok(v.to_le_bytes()[..size].to_vec());
    }
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() != size * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "expected a number or {} hex digits ({size} bytes)",
            size * 2
        )));
    }
    Ok((0..size)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("hex checked"))
        .collect())
}

/// `prog map update NAME KEY VALUE`.
fn prog_map_update(h: &Handle, name: &str, key: &str, value: &str) -> Result<Value, CtlError> {
    prog_map_write(h, name, key, value, false)
}

/// A PROG_ARRAY's value as `prog map update` takes it: the name of one of
/// the object's tail programs (loaded with `--prog-array`), or `none` to
/// empty the slot. Stored as the program's slot number.
fn prog_array_value(
    progs: &[std::sync::Arc<crate::filter::ebpf::Program>],
    map: &str,
    value: &str,
) -> Result<Vec<u8>, CtlError> {
    if value == "none" {
        return Ok(0u32.to_le_bytes().to_vec());
    }
    let owner = progs
        .iter()
        .find(|p| p.map(map).is_some())
        .expect("the caller found the map");
    match owner.tails.iter().position(|t| t.name == value) {
        Some(i) => Ok((i as u32 + 1).to_le_bytes().to_vec()),
        None => Err(CtlError::new(
            "EINVAL",
            format!(
                "'{map}' is a prog_array: its value is a tail program of the object ({}) or none",
                if owner.tails.is_empty() {
                    "it has none: load them with --prog-array".to_string()
                } else {
                    owner
                        .tails
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        )),
    }
}

/// `prog map update`, or with `dry_run` only its checks (the map exists, is
/// not the cpumap, key and value parse at its sizes).
pub(super) fn prog_map_write(
    h: &Handle,
    name: &str,
    key: &str,
    value: &str,
    dry_run: bool,
) -> Result<Value, CtlError> {
    use crate::bpf_abi::update::ANY as BPF_ANY;
    use crate::filter::ebpf::maps::{MAX_LCORES, MapKind};
    let progs = h.programs();
    let map = progs
        .iter()
        .find_map(|p| p.map(name))
        .ok_or_else(|| CtlError::new("ENOENT", format!("no eBPF map '{name}' is loaded")))?;
    if map.def.kind == MapKind::CpuMap {
        return Err(CtlError::new(
            "EINVAL",
            format!("'{name}' is the cpumap: use map update"),
        ));
    }
    let k = parse_bytes(key, map.def.key_size, "key")?;
    let v = if map.def.kind == MapKind::ProgArray {
        prog_array_value(&progs, name, value)?
    } else {
        parse_bytes(value, map.def.value_size, "value")?
    };
    if dry_run {
        return Ok(Value::Null);
    }
    let copies = if map.def.kind.per_cpu() {
        MAX_LCORES
    } else {
        1
    };
    for cpu in 0..copies {
        let rc = map.update(&k, &v, BPF_ANY, cpu);
        if rc < 0 {
            let code = match -rc {
                2 => "ENOENT",
                7 => "E2BIG",
                17 => "EEXIST",
                _ => "EINVAL",
            };
            return Err(CtlError::new(
                code,
                format!("map '{name}' key {key}: update refused"),
            ));
        }
    }
    Ok(Value::Null)
}

/// `prog map dump NAME`: the map of that name in the RX program or in any
/// cpumap entry's remote program.
fn prog_map_dump(h: &Handle, name: &str) -> Result<Value, CtlError> {
    let progs = h.programs();
    let Some((prog, map)) = progs
        .iter()
        .find_map(|p| p.map(name).map(|m| (p.clone(), m)))
    else {
        let names: Vec<String> = progs
            .iter()
            .flat_map(|p| {
                p.usable_maps()
                    .map(|m| format!("{}/{}", p.name, m.def.name))
            })
            .collect();
        return Err(CtlError::new(
            "ENOENT",
            if names.is_empty() {
                format!("no eBPF program is loaded (map '{name}')")
            } else {
                format!("no map '{name}' (loaded: {})", names.join(", "))
            },
        ));
    };
    let percpu = map.def.kind.per_cpu();
    let entries: Vec<Value> = map
        .dump()
        .into_iter()
        .map(|(k, vals)| {
            if percpu {
                let per: serde_json::Map<String, Value> = vals
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.iter().any(|&b| b != 0))
                    .map(|(c, v)| (format!("lcore{c}"), number_or_hex(v)))
                    .collect();
                let sum: u64 = vals
                    .iter()
                    .filter_map(|v| number_or_hex(v).as_u64())
                    .fold(0u64, |a, b| a.wrapping_add(b));
                json!({ "key": number_or_hex(&k), "per_lcore": per, "sum": sum })
            } else if map.def.kind == crate::filter::ebpf::maps::MapKind::ProgArray {
                // The value is a slot into the object's tail programs: name it.
                let slot = vals[0].get(..4).map_or(0, |b| {
                    u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
                });
                let tail = slot
                    .checked_sub(1)
                    .and_then(|i| prog.tails.get(i))
                    .map(|t| t.name.clone());
                json!({ "key": number_or_hex(&k), "value": slot, "program": tail })
            } else {
                json!({ "key": number_or_hex(&k), "value": number_or_hex(&vals[0]) })
            }
        })
        .collect();
    Ok(json!({
        "program": prog.name,
        "map": name,
        "type": map.def.kind.name(),
        "key_size": map.def.key_size,
        "value_size": map.def.value_size,
        "max_entries": map.def.max_entries,
        "entries": entries,
    }))
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("control results always serialise")
}

/// Executes one request against the running pipeline.
/// Context: a control connection thread. `stats` sleeps for its interval;
/// everything else returns at once and never waits for an lcore.
pub fn execute(h: &Handle, req: Request) -> Result<Value, CtlError> {
    let map = h.map();
    match req {
        Request::MapDump => Ok(to_value(map.dump())),
        Request::MapLookup { key } => match map.lookup(key) {
            Some(e) => Ok(to_value(e)),
            None if key >= map.max_entries() => Err(MapError::KeyTooBig {
                key,
                max_entries: map.max_entries(),
            }
            .into()),
            None => Err(CtlError::new("ENOENT", format!("key {key} has no entry"))),
        },
        Request::MapUpdate {
            key,
            qsize,
            flags,
            prog: p,
        } => {
            let value = EntryValue {
                qsize,
                prog: prog(p.as_deref())?,
            };
            map.update(key, value, flags.bits())?;
            Ok(to_value(map.lookup(key)))
        }
        Request::MapDelete { key } => {
            map.delete(key)?;
            Ok(Value::Null)
        }
        Request::MapApply { entries } => {
            let mut spec = Vec::with_capacity(entries.len());
            for e in &entries {
                spec.push((
                    e.key,
                    EntryValue {
                        qsize: e.qsize,
                        prog: prog(e.prog.as_deref()).map_err(|err| {
                            CtlError::new("EINVAL", format!("key {}: {}", e.key, err.message))
                        })?,
                    },
                ));
            }
            Ok(to_value(map.apply(&spec)?))
        }
        Request::ProgMapDump { name } => prog_map_dump(h, &name),
        Request::ProgMapUpdate { name, key, value } => prog_map_update(h, &name, &key, &value),
        Request::ModeGet => Ok(json!({ "mode": h.mode().name() })),
        Request::ModeSet { mode } => {
            let m: Mode = mode
                .parse()
                .map_err(|e: crate::filter::UnknownMode| CtlError::new("EINVAL", e.to_string()))?;
            if let Some(p) = h.rx_program() {
                return Err(CtlError::new(
                    "EBUSY",
                    format!(
                        "the RX filter is the eBPF program '{}' (--prog); mode set applies to the built-in modes",
                        p.name
                    ),
                ));
            }
            h.set_mode(m);
            Ok(json!({ "mode": m.name() }))
        }
        Request::Stats { interval_ms } => {
            let ms = interval_ms.unwrap_or(1000);
            if !(100..=10_000).contains(&ms) {
                return Err(CtlError::new(
                    "EINVAL",
                    format!("stats interval {ms} ms is out of range 100..=10000"),
                ));
            }
            let before = crate::telemetry::Summary::now(h.stats());
            let t0 = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(ms));
            let after = crate::telemetry::Summary::now(h.stats());
            Ok(json!({ "table": after.table(&before, t0.elapsed().as_secs_f64()) }))
        }
        Request::Summary => Ok(to_value(crate::telemetry::Summary::now(h.stats()))),
        // The state store answers these before a request reaches here.
        Request::StateShow | Request::StateReset => Err(CtlError::new(
            "EOPNOTSUPP",
            "this control socket keeps no state",
        )),
    }
}

/// A control-socket client: one connection, many requests.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects, with an error that names the socket and what to check.
    pub fn connect(path: &Path) -> Result<Self, String> {
        let s = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to control socket {}: {e} (is cpumapd running with --control {}? only the socket's owner may connect)",
                path.display(),
                path.display()
            )
        })?;
        // `stats` takes up to its 10 s maximum interval.
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let reader = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Self { writer: s, reader })
    }

    /// Sends one raw line (a newline is added) and reads one reply line.
    pub fn call_raw(&mut self, line: &[u8]) -> Result<Reply, String> {
        self.writer
            .write_all(line)
            .and_then(|_| self.writer.write_all(b"\n"))
            .map_err(|e| format!("control socket write: {e}"))?;
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .map_err(|e| format!("control socket read: {e}"))?;
        if n == 0 {
            return Err("control socket closed by cpumapd".into());
        }
        serde_json::from_str(&buf).map_err(|e| format!("bad reply from cpumapd: {e}: {buf}"))
    }

    /// Sends a request; a transport failure is EPIPE.
    pub fn call(&mut self, req: &Request) -> Result<Value, CtlError> {
        let line = serde_json::to_vec(req).expect("requests always serialise");
        self.call_raw(&line)
            .map_err(|e| CtlError::new("EPIPE", e))?
            .into_result()
    }
}
