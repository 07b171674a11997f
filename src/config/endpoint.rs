//! The service endpoints a run opens beside the dataplane: `/metrics`,
//! the control socket and the state directory, each off, defaulted or
//! given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// A service endpoint: off, the default, or one the user gave. A default
/// that cannot be opened is a warning (the dataplane still runs); one the
/// user gave is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint<T> {
    /// Turned off.
    Off,
    /// Not given: the default, which may fail with a warning only.
    Default(T),
    /// Given: must open, or the run fails.
    Given(T),
}

impl<T> Endpoint<T> {
    /// The endpoint, unless off.
    pub fn get(&self) -> Option<&T> {
        match self {
            Endpoint::Off => None,
            Endpoint::Default(t) | Endpoint::Given(t) => Some(t),
        }
    }

    /// True when the user gave it (a failure to open is then an error).
    pub fn is_given(&self) -> bool {
        matches!(self, Endpoint::Given(_))
    }
}

/// Default Prometheus endpoint (the port is cpumapd's own, next to
/// node_exporter's 9100 family).
pub const DEFAULT_METRICS: &str = "127.0.0.1:9419";

/// Parses `--metrics`: `off` or `ADDR:PORT`.
pub fn parse_metrics(v: Option<&str>) -> Result<Endpoint<SocketAddr>, ConfigError> {
    match v {
        Some("off") => Ok(Endpoint::Off),
        Some(s) => s.parse().map(Endpoint::Given).map_err(|_| {
            ConfigError::Args(format!(
                "--metrics '{s}': expected ADDR:PORT (e.g. {DEFAULT_METRICS}, [::1]:9419) or off"
            ))
        }),
        None => Ok(Endpoint::Default(
            DEFAULT_METRICS.parse().expect("the default parses"),
        )),
    }
}

/// The control socket when `--control` is not given: `/run/cpumapd.sock`
/// for root, else `$XDG_RUNTIME_DIR/cpumapd.sock` (or `/tmp/cpumapd-UID.sock`).
pub fn default_control_path() -> PathBuf {
    per_user_default("/run/cpumapd.sock", "cpumapd.sock", ".sock")
}

/// The state directory when `--state-dir` is not given: `/var/lib/cpumapd`
/// for root, else `$XDG_RUNTIME_DIR/cpumapd` (or `/tmp/cpumapd-UID`).
pub fn default_state_dir() -> PathBuf {
    per_user_default("/var/lib/cpumapd", "cpumapd", "")
}

/// A default path: `for_root` as root; else `name` in `$XDG_RUNTIME_DIR`,
/// or `/tmp/cpumapd-UID` with `tmp_suffix` without it.
fn per_user_default(for_root: &str, name: &str, tmp_suffix: &str) -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from(for_root);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join(name),
        _ => PathBuf::from(format!("/tmp/cpumapd-{uid}{tmp_suffix}")),
    }
}

/// Parses `--state-dir`: `off` or a directory.
pub fn parse_state_dir(v: Option<&str>) -> Result<Endpoint<PathBuf>, ConfigError> {
    parse_path(v, "--state-dir", "a directory", default_state_dir)
}

/// Parses `--control`: `off` or a socket path.
pub fn parse_control(v: Option<&str>) -> Result<Endpoint<PathBuf>, ConfigError> {
    parse_path(v, "--control", "a socket path", default_control_path)
}

/// A path endpoint: `off`, the path given, or `default()` when absent.
fn parse_path(
    v: Option<&str>,
    flag: &str,
    what: &str,
    default: fn() -> PathBuf,
) -> Result<Endpoint<PathBuf>, ConfigError> {
    match v {
        Some("off") => Ok(Endpoint::Off),
        Some("") => Err(ConfigError::Args(format!(
            "{flag} '': expected {what} or off"
        ))),
        Some(s) => Ok(Endpoint::Given(PathBuf::from(s))),
        None => Ok(Endpoint::Default(default())),
    }
}
