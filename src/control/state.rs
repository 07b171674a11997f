//! Runtime state that survives a crash or restart (`--state-dir`): what
//! `ctl` changed — the cpumap's entries, the RX filter mode, values written
//! into eBPF program maps — as the kernel keeps a cpumap pinned in bpffs
//! alive past the process that loaded it.
//!
//! # General idea
//!
//! The control threads (one per connection) change the map through
//! [`StateStore::commit`], which holds one lock across "apply the change,
//! record it, write the whole state durably": a temporary file, fsync,
//! rename over the state file, fsync of the directory. Only then does `ctl`
//! get its `ok`, so every acknowledged change is on disk in the order it was
//! applied, and a crash at any moment leaves either the state before a
//! change or the state after it (rename is atomic). The file is small (at
//! most `max_entries` entries), so it is rewritten whole; no journal.
//!
//! At start, after the map was built from the profile, [`StateStore::restore`]
//! reads the file and applies it whole (the map through one `map apply`
//! swap) or not at all: a file that does not parse, is from another format
//! version, names keys this run has no target lcore for, or a program that
//! does not load is renamed aside (`*.rejected-UNIXTIME`) with one line
//! saying why, and the run keeps the profile's map. The state belongs to the
//! control socket's owner: its file is named after the socket, and nothing
//! is restored or written without a control socket. Nothing here runs on an
//! lcore.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::proto::{self, CtlError, EntrySpec, Request};
use crate::cpumap::EntryValue;
use crate::filter::Mode;
use crate::lcore::Handle;

/// The state file's format version.
pub const FORMAT: u32 = 1;

/// One value written into an eBPF program's map (`ctl prog map update`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgMapValue {
    /// The map's name in its object.
    pub name: String,
    /// The key, as given.
    pub key: String,
    /// The value, as given.
    pub value: String,
}

/// What is saved: the file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// [`FORMAT`].
    pub format: u32,
    /// The map's size when saved.
    pub max_entries: u32,
    /// Every entry of the map, in key order (programs as given to `ctl`).
    pub entries: Vec<EntrySpec>,
    /// The RX filter mode.
    pub mode: String,
    /// Program map values, in the order written (one per map and key).
    #[serde(default)]
    pub prog_maps: Vec<ProgMapValue>,
}

/// The running instance's state and where it is kept.
pub struct StateStore {
    /// The state file (None: `--state-dir off`, or no control socket).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: BTreeMap<u32, EntrySpec>,
    mode: String,
    prog_maps: Vec<ProgMapValue>,
    max_entries: u32,
    /// Saves so far (`ctl state show`).
    saves: u64,
}

/// What [`StateStore::restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// No state directory, or no file in it yet.
    Nothing,
    /// The file was applied.
    Applied {
        /// Entries in the map now.
        entries: usize,
        /// The mode now.
        mode: String,
        /// Program map values written.
        prog_maps: usize,
    },
    /// The file was set aside and the profile's map kept.
    Rejected {
        /// Where the file went.
        moved_to: PathBuf,
        /// Why.
        why: String,
    },
}

/// The state file of the instance whose control socket is `socket`, in
/// `dir`: the socket's path with `/` turned into `_`
/// (`/run/cpumapd.sock` -> `DIR/run_cpumapd.sock.state.json`).
pub fn state_file(dir: &Path, socket: &Path) -> PathBuf {
    let name: String = socket
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    dir.join(format!("{name}.state.json"))
}

impl StateStore {
    /// A store for a run that starts with `profile` entries and `mode`;
    /// `path` None keeps nothing (every commit only applies).
    pub fn new(
        path: Option<PathBuf>,
        max_entries: u32,
        profile: Vec<EntrySpec>,
        mode: Mode,
    ) -> Self {
        Self {
            path,
            inner: Mutex::new(Inner {
                entries: profile.into_iter().map(|e| (e.key, e)).collect(),
                mode: mode.name().to_string(),
                prog_maps: Vec::new(),
                max_entries,
                saves: 0,
            }),
        }
    }

    /// A store that keeps nothing (library users, tests).
    pub fn disabled() -> Self {
        Self::new(None, 0, Vec::new(), Mode::default())
    }

    /// The state file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a request. A request that changes state is applied, recorded
    /// and saved under one lock, and succeeds only once the file is on disk
    /// (a failed save is EIO: applied, not durable). Others just run.
    /// Context: a control connection's thread.
    pub fn commit(&self, h: &Handle, req: Request) -> Result<Value, CtlError> {
        match req {
            Request::StateShow => return Ok(self.show()),
            Request::StateReset => return self.reset(),
            _ => {}
        }
        let mutates = matches!(
            req,
            Request::MapUpdate { .. }
                | Request::MapDelete { .. }
                | Request::MapApply { .. }
                | Request::ModeSet { .. }
                | Request::ProgMapUpdate { .. }
        );
        if !mutates || self.path.is_none() {
            return proto::execute(h, req);
        }
        let mut inner = self.lock();
        let record = req.clone();
        let out = proto::execute(h, req)?;
        inner.record(record);
        self.save(&mut inner).map_err(|e| {
            CtlError::new(
                "EIO",
                format!("applied, but the state could not be saved: {e}"),
            )
        })?;
        Ok(out)
    }

    /// `ctl state show`: the state as it would be saved, and where.
    pub fn show(&self) -> Value {
        let inner = self.lock();
        serde_json::json!({
            "path": self.path.as_ref().map(|p| p.display().to_string()),
            "saves": inner.saves,
            "state": inner.snapshot(),
        })
    }

    /// `ctl state reset`: deletes the state file, so the next start uses the
    /// profile; the next change saves the whole current state again.
    pub fn reset(&self) -> Result<Value, CtlError> {
        let _inner = self.lock();
        let Some(path) = &self.path else {
            return Err(CtlError::new(
                "ENOENT",
                "no state directory (--state-dir off)",
            ));
        };
        match std::fs::remove_file(path) {
            Ok(()) => Ok(serde_json::json!({ "removed": path.display().to_string() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(serde_json::json!({ "removed": null }))
            }
            Err(e) => Err(CtlError::new("EIO", format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the state: temporary file, fsync, rename, fsync the directory.
    fn save(&self, inner: &mut Inner) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&inner.snapshot()).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        inner.saves += 1;
        Ok(())
    }

    /// Applies the saved state over the profile, whole or not at all (see
    /// the module docs). Context: start-up, before `ctl` changes anything.
    pub fn restore(&self, h: &Handle) -> Restored {
        let Some(path) = &self.path else {
            return Restored::Nothing;
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Restored::Nothing,
            Err(e) => return self.reject(path, format!("cannot read it: {e}")),
        };
        let mut inner = self.lock();
        match inner.apply_saved(h, &text) {
            Ok(r) => r,
            Err(why) => {
                drop(inner);
                self.reject(path, why)
            }
        }
    }

    fn reject(&self, path: &Path, why: String) -> Restored {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let moved_to = PathBuf::from(format!("{}.rejected-{stamp}", path.display()));
        let why = match std::fs::rename(path, &moved_to) {
            Ok(()) => why,
            Err(e) => format!("{why}; and it could not be moved aside: {e}"),
        };
        Restored::Rejected { moved_to, why }
    }
}

impl Inner {
    fn snapshot(&self) -> State {
        State {
            format: FORMAT,
            max_entries: self.max_entries,
            entries: self.entries.values().cloned().collect(),
            mode: self.mode.clone(),
            prog_maps: self.prog_maps.clone(),
        }
    }

    /// Records an applied request.
    fn record(&mut self, req: Request) {
        match req {
            Request::MapUpdate {
                key, qsize, prog, ..
            } if qsize > 0 => {
                self.entries.insert(key, EntrySpec { key, qsize, prog });
            }
            Request::MapUpdate { key, .. } | Request::MapDelete { key } => {
                self.entries.remove(&key);
            }
            Request::MapApply { entries } => {
                self.entries = entries
                    .into_iter()
                    .filter(|e| e.qsize > 0)
                    .map(|e| (e.key, e))
                    .collect();
            }
            Request::ModeSet { mode } => self.mode = mode,
            Request::ProgMapUpdate { name, key, value } => {
                self.prog_maps.retain(|v| !(v.name == name && v.key == key));
                self.prog_maps.push(ProgMapValue { name, key, value });
            }
            _ => {}
        }
    }

    /// Parses and applies a saved state; on any error the map and mode are
    /// as the profile left them.
    fn apply_saved(&mut self, h: &Handle, text: &[u8]) -> Result<Restored, String> {
        let st: State = serde_json::from_slice(text)
            .map_err(|e| format!("it is not a cpumapd state file ({e})"))?;
        if st.format != FORMAT {
            return Err(format!(
                "it is format {}, this cpumapd reads format {FORMAT}",
                st.format
            ));
        }
        let mode: Mode = st
            .mode
            .parse()
            .map_err(|e: crate::filter::UnknownMode| e.to_string())?;
        let mut spec = Vec::with_capacity(st.entries.len());
        for e in &st.entries {
            let prog = proto::prog(e.prog.as_deref())
                .map_err(|err| format!("key {}: {}", e.key, err.message))?;
            spec.push((
                e.key,
                EntryValue {
                    qsize: e.qsize,
                    prog,
                },
            ));
        }
        let map = h.map();
        map.apply(&spec)
            .map_err(|e| format!("the map refuses it: {e}"))?;
        if let Some(bad) = st.prog_maps.iter().find_map(|v| {
            proto::prog_map_write(h, &v.name, &v.key, &v.value, true)
                .err()
                .map(|e| format!("program map '{}' key {}: {}", v.name, v.key, e.message))
        }) {
            // Back to the profile's map: nothing of the file stays applied.
            let profile = self.profile_spec()?;
            map.apply(&profile)
                .map_err(|e| format!("{bad}; and the profile's map could not be put back: {e}"))?;
            return Err(bad);
        }
        if h.rx_program().is_none() {
            h.set_mode(mode);
        }
        for v in &st.prog_maps {
            proto::prog_map_write(h, &v.name, &v.key, &v.value, false)
                .map_err(|e| format!("program map '{}': {}", v.name, e.message))?;
        }
        self.entries = st.entries.iter().map(|e| (e.key, e.clone())).collect();
        self.mode = h.mode().name().to_string();
        self.prog_maps = st.prog_maps.clone();
        Ok(Restored::Applied {
            entries: st.entries.len(),
            mode: self.mode.clone(),
            prog_maps: st.prog_maps.len(),
        })
    }

    /// The profile's entries as a map spec (what the store started with).
    fn profile_spec(&self) -> Result<Vec<(u32, EntryValue)>, String> {
        self.entries
            .values()
            .map(|e| {
                let prog = proto::prog(e.prog.as_deref()).map_err(|err| err.message)?;
                Ok((
                    e.key,
                    EntryValue {
                        qsize: e.qsize,
                        prog,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_after_the_control_socket() {
        assert_eq!(
            state_file(
                Path::new("/var/lib/cpumapd"),
                Path::new("/run/cpumapd.sock")
            ),
            PathBuf::from("/var/lib/cpumapd/run_cpumapd.sock.state.json")
        );
    }

    #[test]
    fn requests_are_recorded_as_the_map_applies_them() {
        let mut i = Inner {
            entries: BTreeMap::new(),
            mode: "l4-hash".into(),
            prog_maps: Vec::new(),
            max_entries: 8,
            saves: 0,
        };
        let upd = |key, qsize, prog: Option<&str>| Request::MapUpdate {
            key,
            qsize,
            flags: Default::default(),
            prog: prog.map(String::from),
        };
        i.record(upd(1, 256, Some("drop")));
        i.record(upd(2, 512, None));
        i.record(upd(1, 0, None)); // qsize 0 deletes
        assert_eq!(i.entries.keys().copied().collect::<Vec<_>>(), vec![2]);
        i.record(Request::MapDelete { key: 2 });
        assert!(i.entries.is_empty());
        i.record(Request::MapApply {
            entries: vec![
                EntrySpec {
                    key: 3,
                    qsize: 64,
                    prog: Some("pass".into()),
                },
                EntrySpec {
                    key: 4,
                    qsize: 0,
                    prog: None,
                },
            ],
        });
        assert_eq!(i.entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        i.record(Request::ModeSet {
            mode: "touch".into(),
        });
        for v in ["1", "2"] {
            i.record(Request::ProgMapUpdate {
                name: "m".into(),
                key: "0".into(),
                value: v.into(),
            });
        }
        let s = i.snapshot();
        assert_eq!(s.mode, "touch");
        assert_eq!(s.prog_maps.len(), 1, "one value per map and key");
        assert_eq!(s.prog_maps[0].value, "2");
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
    }
}
