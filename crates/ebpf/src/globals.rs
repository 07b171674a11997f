//! What libbpf's skeleton does before load, done by cpumapd's loader:
//! global variables set by name (`--prog-set NAME=VALUE`, libbpf's
//! `skel->rodata->NAME = VALUE`), and the sizes a tool's loader fills in
//! (a map declared without `max_entries`, xdp-bench's `nr_cpus`).
//!
//! Context: control thread, while loading an object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::maps::{Map, MapDef};

/// How objects are loaded in this run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--prog-set NAME=VALUE`, in order.
    pub sets: Vec<GlobalSet>,
    /// CPUs as programs see them: `bpf_get_smp_processor_id()` returns an
    /// lcore id below this. What a map declared with `max_entries` 0 gets,
    /// and xdp-bench's `nr_cpus` when not set (as xdp-bench's own loader
    /// sets both from the number of possible CPUs).
    pub nr_cpus: u32,
    /// `--devmap MAP:INDEX=IFNAME`: DEVMAP entries filled at load, as a
    /// tool's loader fills them (xdp-bench's `tx_port` from `-D IF`).
    pub devmaps: Vec<DevmapSet>,
    /// `--prog-array MAP:INDEX=PROG`: PROG_ARRAY entries filled at load
    /// with a program of the same object (what a loader does with
    /// `bpf_map_update_elem(map_fd, &index, &prog_fd)`).
    pub prog_arrays: Vec<ProgArraySet>,
    /// The maps this run's objects share (none: every load makes its own).
    pub shared: SharedMaps,
}

/// The maps one run's programs share, as the kernel shares them: the
/// programs loaded from one object file share its maps (one libbpf
/// `bpf_object`: xdp-bench's RX program and its cpumap program count into
/// the same maps), and a map declared with `LIBBPF_PIN_BY_NAME` is shared
/// by name with every object of the run that declares it alike (as a map
/// pinned in bpffs is reused by libbpf). Context: control thread, at load.
#[derive(Clone, Default)]
pub struct SharedMaps(Option<Arc<Mutex<ByKey>>>);

/// Shared maps by "CANONICAL_PATH:NAME" or "pinned:NAME".
type ByKey = HashMap<String, Arc<Map>>;

impl SharedMaps {
    /// A run's set, empty.
    pub fn run() -> SharedMaps {
        SharedMaps(Some(Arc::default()))
    }

    /// The map `def` of the object at `path` (pinned by name when
    /// `pinned`): the one already made in this run, or a new one. A map of
    /// that name made with another shape is an error naming both.
    pub fn get_or_make(&self, path: &str, def: MapDef, pinned: bool) -> Result<Arc<Map>, String> {
        let Some(all) = &self.0 else {
            return Map::new(def).map(Arc::new);
        };
        let key = if pinned {
            format!("pinned:{}", def.name)
        } else {
            let canon = std::fs::canonicalize(path)
                .map_or_else(|_| path.into(), |p| p.display().to_string());
            format!("{canon}:{}", def.name)
        };
        let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = all.get(&key) {
            let (a, b) = (&m.def, &def);
            if (a.kind, a.key_size, a.value_size, a.max_entries, a.flags)
                != (b.kind, b.key_size, b.value_size, b.max_entries, b.flags)
            {
                return Err(format!(
                    "map '{}' ({}) cannot be shared: this run already has it as a {} (key {} B, value {} B, {} entries, flags {:#x}), this object declares a {} (key {} B, value {} B, {} entries, flags {:#x})",
                    def.name,
                    if pinned {
                        "LIBBPF_PIN_BY_NAME"
                    } else {
                        "the same object, loaded again"
                    },
                    a.kind.name(),
                    a.key_size,
                    a.value_size,
                    a.max_entries,
                    a.flags,
                    b.kind.name(),
                    b.key_size,
                    b.value_size,
                    b.max_entries,
                    b.flags,
                ));
            }
            return Ok(m.clone());
        }
        let m = Arc::new(Map::new(def)?);
        all.insert(key, m.clone());
        Ok(m)
    }
}

impl PartialEq for SharedMaps {
    fn eq(&self, other: &SharedMaps) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for SharedMaps {}

impl std::fmt::Debug for SharedMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("SharedMaps(none)"),
            Some(m) => write!(f, "SharedMaps({} maps)", m.lock().map_or(0, |m| m.len())),
        }
    }
}

/// One `MAP:INDEX=PROG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgArraySet {
    /// The PROG_ARRAY's name.
    pub map: String,
    /// The key.
    pub index: u32,
    /// An XDP program of the object that declares the map.
    pub prog: String,
}

impl ProgArraySet {
    /// Parses `MAP:INDEX=PROG`.
    pub fn parse(s: &str) -> Result<ProgArraySet, String> {
        let bad = |why: &str| format!("--prog-array '{s}': {why} (expected MAP:INDEX=PROG)");
        let (left, prog) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let (map, index) = left.rsplit_once(':').ok_or_else(|| bad("no ':INDEX'"))?;
        if map.is_empty() || prog.is_empty() {
            return Err(bad("MAP and PROG must not be empty"));
        }
        let index = index
            .parse::<u32>()
            .map_err(|_| bad("INDEX must be a u32"))?;
        Ok(ProgArraySet {
            map: map.into(),
            index,
            prog: prog.into(),
        })
    }
}

/// One `MAP:INDEX=IFNAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevmapSet {
    /// The DEVMAP's (or DEVMAP_HASH's) name.
    pub map: String,
    /// The key.
    pub index: u32,
    /// The interface, as given.
    pub ifname: String,
    /// Its index, resolved when parsed.
    pub ifindex: u32,
    /// The entry's egress program (`,prog=NAME`): a SEC("xdp/devmap")
    /// program of the same object, run on every frame sent there.
    pub prog: Option<String>,
}

impl DevmapSet {
    /// Parses `MAP:INDEX=IFNAME[,prog=NAME]`; `ifindex` resolves IFNAME
    /// (the dataplane's `if_nametoindex`), which must exist.
    pub fn parse(s: &str, ifindex: &dyn Fn(&str) -> Option<u32>) -> Result<DevmapSet, String> {
        let bad = |why: &str| format!("--devmap '{s}': {why}");
        let (left, right) = s
            .split_once('=')
            .ok_or_else(|| bad("expected MAP:INDEX=IFNAME[,prog=NAME]"))?;
        let (ifname, prog) = match right.split_once(',') {
            None => (right, None),
            Some((i, p)) => match p.strip_prefix("prog=") {
                Some(n) if !n.is_empty() => (i, Some(n.to_string())),
                _ => return Err(bad("after IFNAME only ,prog=NAME (an egress program)")),
            },
        };
        let (map, index) = left
            .rsplit_once(':')
            .ok_or_else(|| bad("expected MAP:INDEX=IFNAME"))?;
        if map.is_empty() {
            return Err(bad("MAP is empty"));
        }
        let index = index
            .parse::<u32>()
            .map_err(|_| bad("INDEX must be a u32"))?;
        let ifindex = ifindex(ifname)
            .filter(|_| !ifname.is_empty())
            .ok_or_else(|| bad(&format!("no interface named '{ifname}' here")))?;
        Ok(DevmapSet {
            map: map.into(),
            index,
            ifname: ifname.into(),
            ifindex,
            prog,
        })
    }
}

/// One `NAME=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSet {
    /// The variable's symbol name.
    pub name: String,
    /// Its value, as written.
    pub value: i128,
    /// `aa:bb:...`: bytes for a byte array of exactly that size (a MAC
    /// address, as xdp-bench's loader writes `tx_mac_addr`).
    pub raw: Option<Vec<u8>>,
}

impl GlobalSet {
    /// Parses `NAME=VALUE` (VALUE decimal, `0x` hex, or negative).
    pub fn parse(s: &str) -> Result<GlobalSet, String> {
        let bad = |why: &str| format!("--prog-set '{s}': {why}");
        let (name, v) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=VALUE"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("NAME must be a C identifier"));
        }
        if v.contains(':') {
            let raw = v
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| bad("a byte VALUE is two-digit hex bytes separated by ':'"))?;
            return Ok(GlobalSet {
                name: name.into(),
                value: 0,
                raw: Some(raw),
            });
        }
        let (neg, digits) = match v.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, v),
        };
        let mag = match digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            Some(h) => i128::from_str_radix(h, 16),
            None => digits.parse::<i128>(),
        }
        .map_err(|_| bad("VALUE must be an integer (decimal or 0x hex)"))?;
        Ok(GlobalSet {
            name: name.into(),
            value: if neg { -mag } else { mag },
            raw: None,
        })
    }

    /// The value as written (for messages).
    pub fn shown(&self) -> String {
        match &self.raw {
            Some(b) => b
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            None => self.value.to_string(),
        }
    }

    /// The value as `size` little-endian bytes, if it fits (signed or
    /// unsigned); byte values only for exactly their size.
    pub fn bytes(&self, size: usize) -> Option<Vec<u8>> {
        if let Some(raw) = &self.raw {
            return (raw.len() == size).then(|| raw.clone());
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        let bits = size as u32 * 8;
        let (lo, hi) = (-(1i128 << (bits - 1)), (1i128 << bits) - 1);
        if self.value < lo || self.value > hi {
            return None;
        }
        Some((self.value as u64).to_le_bytes()[..size].to_vec())
    }
}

static OPTIONS: Mutex<Option<LoadOptions>> = Mutex::new(None);

/// Sets the running pipeline's options, for objects loaded while it runs
/// (`ctl map update ... --prog FILE.o`). The configuration loads its own
/// objects with the plan's options explicitly.
pub fn set_options(o: LoadOptions) {
    *OPTIONS.lock().unwrap_or_else(|p| p.into_inner()) = Some(o);
}

/// The running pipeline's options (before one runs: no sets, the host's
/// possible CPUs).
pub fn options() -> LoadOptions {
    OPTIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| LoadOptions {
            sets: Vec::new(),
            nr_cpus: possible_cpus(),
            devmaps: Vec::new(),
            prog_arrays: Vec::new(),
            shared: SharedMaps::default(),
        })
}

/// The host's possible CPUs (`/sys/devices/system/cpu/possible`, as
/// libbpf_num_possible_cpus reads it), at least 1.
pub fn possible_cpus() -> u32 {
    let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/possible") else {
        return std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    };
    let mut max = 0u32;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next().unwrap_or("0");
        max = max.max(last.parse::<u32>().unwrap_or(0));
    }
    max + 1
}

/// A global variable: its section (a data map's name) and place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Symbol name.
    pub name: String,
    /// Section (`.rodata`, `.data`, `.bss`, `.rodata.*`, `.data.*`).
    pub section: String,
    /// Byte offset in the section.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// Largest section an object may declare (a `.bss` has no bytes in the
/// file, so its size is only a number in the header).
pub const MAX_SECTION: u64 = 16 << 20;

/// Refuses an object whose header declares a section larger than
/// [`MAX_SECTION`]: aya-obj allocates a `.bss` of the declared size before
/// cpumapd sees it, so a forged size would be a huge allocation (found by
/// fuzz/ebpf). An object the `object` crate cannot read is left to aya-obj
/// to refuse.
pub fn check_sections(bytes: &[u8]) -> Result<(), String> {
    use object::{Object, ObjectSection};
    let Ok(f) = object::File::parse(bytes) else {
        return Ok(());
    };
    for sec in f.sections() {
        if sec.size() > MAX_SECTION {
            return Err(format!(
                "section {} declares {} bytes, more than the {} MiB a section may have",
                sec.name().unwrap_or("?"),
                sec.size(),
                MAX_SECTION >> 20
            ));
        }
    }
    Ok(())
}

/// The object's global variables (ELF symbols in its data sections).
pub fn globals(bytes: &[u8]) -> Result<Vec<Global>, String> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let f = object::File::parse(bytes).map_err(|e| format!("not an ELF object: {e}"))?;
    let mut out = Vec::new();
    for sym in f.symbols() {
        let Some(idx) = sym.section_index() else {
            continue;
        };
        let Ok(sec) = f.section_by_index(idx) else {
            continue;
        };
        let Ok(sname) = sec.name() else { continue };
        let data_section = matches!(sname, ".rodata" | ".data" | ".bss")
            || sname.starts_with(".rodata.")
            || sname.starts_with(".data.");
        let Ok(name) = sym.name() else { continue };
        if !data_section || name.is_empty() || sym.size() == 0 {
            continue;
        }
        out.push(Global {
            name: name.into(),
            section: sname.into(),
            offset: sym.address() as usize,
            size: sym.size() as usize,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Links the object's calls of kfuncs (extern functions, `__ksym`) to
/// cpumapd's helpers for them, as libbpf resolves them against the
/// kernel's BTF: each such `call` (clang emits a bpf-to-bpf call with a
/// relocation to the undefined symbol) becomes a call of the helper id
/// [`crate::abi::helper::KFUNCS`] gives its name. None when the object
/// calls none; an error names a kfunc cpumapd does not provide.
pub fn link_kfuncs(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use crate::abi::helper::KFUNCS;
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
    let Ok(f) = object::File::parse(bytes) else {
        return Ok(None); // the parser says what is wrong
    };
    let mut out: Option<Vec<u8>> = None;
    for sec in f.sections() {
        let Some((base, size)) = sec.file_range() else {
            continue;
        };
        for (off, rel) in sec.relocations() {
            let RelocationTarget::Symbol(idx) = rel.target() else {
                continue;
            };
            let Ok(sym) = f.symbol_by_index(idx) else {
                continue;
            };
            let at = base as usize + off as usize;
            let is_call = off + 8 <= size && bytes.get(at) == Some(&0x85);
            if !sym.is_undefined() || !is_call {
                continue;
            }
            let name = sym.name().unwrap_or("?");
            let id = KFUNCS
                .iter()
                .find(|k| k.0 == name)
                .map(|k| k.1)
                .ok_or_else(|| {
                    format!(
                        "calls '{name}', an extern function (kfunc) cpumapd does not provide (it provides {})",
                        KFUNCS.map(|k| k.0).join(", ")
                    )
                })?;
            let b = out.get_or_insert_with(|| bytes.to_vec());
            b[at + 1] &= 0x0f; // src: a helper, not a bpf-to-bpf call
            b[at + 4..at + 8].copy_from_slice(&id.to_le_bytes());
        }
    }
    Ok(out)
}

/// A copy of an object with global `set.name` set to `set.value` in its
/// section's bytes (a `.rodata`/`.data` variable; `.bss` has no bytes in
/// the file). For loading the same settings into the kernel with a tool
/// that cannot set globals (bpftool), as differential tests do.
pub fn patch_object(bytes: &[u8], set: &GlobalSet) -> Result<Vec<u8>, String> {
    use object::{Object, ObjectSection};
    let vars = globals(bytes)?;
    let v = vars
        .iter()
        .find(|v| v.name == set.name)
        .ok_or_else(|| format!("no global variable '{}'", set.name))?;
    let b = set
        .bytes(v.size)
        .ok_or_else(|| format!("'{}' is {} bytes: the value does not fit", v.name, v.size))?;
    let f = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let sec = f
        .section_by_name(&v.section)
        .ok_or_else(|| format!("no section {}", v.section))?;
    let (off, size) = sec
        .file_range()
        .ok_or_else(|| format!("{} has no bytes in the file (.bss)", v.section))?;
    if (v.offset + v.size) as u64 > size {
        return Err(format!("'{}' lies outside {}", v.name, v.section));
    }
    let mut out = bytes.to_vec();
    let at = off as usize + v.offset;
    out[at..at + v.size].copy_from_slice(&b);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapKind;

    #[test]
    fn a_run_shares_an_objects_maps_and_pinned_maps_by_name() {
        let def = |name: &str, n: u32| MapDef::new(name, MapKind::Array, 4, 8, n);
        let run = SharedMaps::run();
        let a = run.get_or_make("/x/a.o", def("stats", 4), false).unwrap();
        let again = run.get_or_make("/x/a.o", def("stats", 4), false).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "one object's map, loaded twice");
        let other = run.get_or_make("/x/b.o", def("stats", 4), false).unwrap();
        assert!(
            !Arc::ptr_eq(&a, &other),
            "another object's map of that name"
        );
        let p = run.get_or_make("/x/a.o", def("hits", 4), true).unwrap();
        let q = run.get_or_make("/x/b.o", def("hits", 4), true).unwrap();
        assert!(Arc::ptr_eq(&p, &q), "pinned by name across objects");
        let e = run.get_or_make("/x/c.o", def("hits", 8), true).unwrap_err();
        assert!(
            e.contains("'hits'") && e.contains("4 entries") && e.contains("8 entries"),
            "{e}"
        );
        // Without a run's set every load makes its own.
        let none = SharedMaps::default();
        let x = none.get_or_make("/x/a.o", def("stats", 4), false).unwrap();
        let y = none.get_or_make("/x/a.o", def("stats", 4), false).unwrap();
        assert!(!Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn sets_parse_and_fit_their_size() {
        let s = GlobalSet::parse("nr_cpus=4").unwrap();
        assert_eq!((s.name.as_str(), s.value), ("nr_cpus", 4));
        assert_eq!(s.bytes(4).unwrap(), vec![4, 0, 0, 0]);
        let h = GlobalSet::parse("mask=0xff00").unwrap();
        assert_eq!(h.bytes(2).unwrap(), vec![0x00, 0xff]);
        assert!(h.bytes(1).is_none(), "0xff00 does not fit a byte");
        let n = GlobalSet::parse("delta=-1").unwrap();
        assert_eq!(n.bytes(8).unwrap(), vec![0xff; 8]);
        assert!(n.bytes(3).is_none(), "only 1/2/4/8-byte variables");
        for bad in [
            "x",
            "=1",
            "a-b=1",
            "x=one",
            "x=0xg",
            "m=02:1:03",
            "m=02:zz",
            "m=0203:04",
        ] {
            assert!(GlobalSet::parse(bad).is_err(), "{bad}");
        }
        let mac = GlobalSet::parse("tx_mac_addr=02:aa:bb:cc:dd:0e").unwrap();
        assert_eq!(mac.bytes(6).unwrap(), [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e]);
        assert!(mac.bytes(8).is_none(), "exactly its size");
        assert_eq!(mac.shown(), "02:aa:bb:cc:dd:0e");
        assert!(possible_cpus() >= 1);
    }
}
