//! cpumapd's eBPF runtime against the kernel's own: the same object loaded
//! into the kernel (bpftool prog loadall, maps pinned in a bpffs directory
//! of its own) and into cpumapd, the same frames through both
//! (BPF_PROG_TEST_RUN through `bpftool batch`, cpumapd's interpreter and
//! JIT), and the actions, the redirect targets, the output bytes and the
//! maps afterwards compared.
//!
//! The redirect target is not in BPF_PROG_TEST_RUN's answer, so each
//! program runs twice over the frames, once with only cpumap entry 0 and
//! once with only entry 1: `bpf_redirect_map` into a missing entry returns
//! XDP_ABORTED (flags 0) in both, so a REDIRECT in run k says the target
//! was k. bpftool is pinned to CPU 0 (per-CPU map copies) and cpumapd
//! runs as lcore 0.
//!
//! Needs root, a bpffs at /sys/fs/bpf and bpftool; xdp-bench's object also
//! needs XDPTOOLS=DIR. `#[ignore]`d with that reason; CI runs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cpumapd::filter::ebpf::globals::{GlobalSet, LoadOptions};
use cpumapd::filter::ebpf::maps::MapKind;
use cpumapd::filter::ebpf::{self, Action, Instance, Program};
use cpumapd::frame::Pool;
use cpumapd::ids::TargetId;
use serde_json::Value;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ready() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !nix::unistd::geteuid().is_root() {
        common::skip("needs root to load programs into the kernel");
        return None;
    }
    let ok = Command::new("bpftool")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skip("needs bpftool (apt-get install bpftool)");
        return None;
    }
    if !Path::new("/sys/fs/bpf").exists()
        || !String::from_utf8_lossy(&std::fs::read("/proc/mounts").unwrap_or_default())
            .contains(" /sys/fs/bpf bpf ")
    {
        let _ = std::fs::create_dir_all("/sys/fs/bpf");
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status();
        if !st.is_ok_and(|s| s.success()) {
            common::skip("needs a bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
            return None;
        }
    }
    Some(SERIAL.lock().unwrap_or_else(|p| p.into_inner()))
}

fn bpftool(args: &[&str]) -> Value {
    try_bpftool(args).unwrap_or_else(|e| panic!("{e}"))
}

/// bpftool's JSON answer, or what it printed when it failed.
fn try_bpftool(args: &[&str]) -> Result<Value, String> {
    let o = Command::new("taskset")
        .args(["-c", "0", "bpftool", "-j"])
        .args(args)
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(format!(
            "bpftool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
}

/// The helper a kernel's verifier log says it offers to no program of this
/// type ("program of this type cannot use helper NAME#ID"): a property of
/// the kernel, not of the program (6.18.44-fc refuses
/// bpf_xdp_adjust_meta to every XDP program).
fn helper_the_kernel_lacks(log: &str) -> Option<String> {
    let rest = log
        .split("program of this type cannot use helper ")
        .nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// bpftool's JSON bytes (["0x3c", "0x00", ...]).
fn hex_bytes(x: &Value) -> Vec<u8> {
    x.as_array()
        .unwrap()
        .iter()
        .map(|h| u8::from_str_radix(h.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

fn hex_args(b: &[u8]) -> Vec<String> {
    b.iter().map(|x| x.to_string()).collect()
}

/// One object loaded into the kernel: its programs and maps pinned under a
/// bpffs directory of this test, removed on drop.
struct Kernel {
    progs: PathBuf,
    maps: PathBuf,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.progs);
        let _ = std::fs::remove_dir_all(&self.maps);
    }
}

impl Kernel {
    /// `bpftool prog loadall`; maps declared without max_entries (sized by
    /// a tool's loader) are made first with cpumapd's sizes and handed in.
    /// Err names a helper this kernel offers to no XDP program (nothing to
    /// compare against); any other failure panics.
    fn load(obj: &Path, ours: &Program, tag: &str, sized: &[&str]) -> Result<Kernel, String> {
        let base = PathBuf::from(format!("/sys/fs/bpf/cpmd{}_{tag}", std::process::id()));
        let k = Kernel {
            // bpffs refuses names with a dot.
            progs: PathBuf::from(format!("{}_p", base.display())),
            maps: PathBuf::from(format!("{}_m", base.display())),
        };
        let _ = std::fs::remove_dir_all(&k.progs);
        let _ = std::fs::remove_dir_all(&k.maps);
        std::fs::create_dir_all(&k.maps).unwrap();
        let mut args: Vec<String> = vec![
            "prog".into(),
            "loadall".into(),
            obj.display().to_string(),
            k.progs.display().to_string(),
        ];
        for name in sized {
            let m = ours.map(name).unwrap_or_else(|| panic!("map {name}"));
            let d = &m.def;
            let ty = match d.kind {
                MapKind::Array => "array",
                MapKind::PerCpuArray => "percpu_array",
                MapKind::CpuMap => "cpumap",
                MapKind::Hash => "hash",
                other => panic!("{name}: {other:?}"),
            };
            let pin = k.maps.join(format!("pre_{name}"));
            bpftool(&[
                "map",
                "create",
                pin.to_str().unwrap(),
                "type",
                ty,
                "key",
                &d.key_size.to_string(),
                "value",
                &d.value_size.to_string(),
                "entries",
                &d.max_entries.to_string(),
                "name",
                name,
                "flags",
                &d.flags.to_string(),
            ]);
            args.extend(["map", "name", name, "pinned"].map(String::from));
            args.push(pin.display().to_string());
        }
        args.push("pinmaps".into());
        args.push(k.maps.display().to_string());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match try_bpftool(&a) {
            Ok(_) => Ok(k),
            Err(e) => Err(helper_the_kernel_lacks(&e).unwrap_or_else(|| panic!("{e}"))),
        }
    }

    fn map_path(&self, name: &str) -> String {
        let pre = self.maps.join(format!("pre_{name}"));
        if pre.exists() {
            return pre.display().to_string();
        }
        if let Some(section) = name.strip_prefix('.') {
            // libbpf names a data section's map OBJNAME.SECTION and pins
            // it with the dot made '_'.
            for e in std::fs::read_dir(&self.maps).unwrap() {
                let n = e.unwrap().file_name().to_string_lossy().to_string();
                if n.ends_with(&format!("_{section}")) {
                    return self.maps.join(n).display().to_string();
                }
            }
        }
        self.maps.join(name).display().to_string()
    }

    fn update(&self, map: &str, key: &[u8], value: &[u8]) {
        let p = self.map_path(map);
        let mut a = vec!["map", "update", "pinned", &p, "key"];
        let (k, v) = (hex_args(key), hex_args(value));
        a.extend(k.iter().map(String::as_str));
        a.push("value");
        a.extend(v.iter().map(String::as_str));
        bpftool(&a);
    }

    fn delete(&self, map: &str, key: &[u8]) {
        let p = self.map_path(map);
        let k = hex_args(key);
        let mut a = vec!["map", "delete", "pinned", &p, "key"];
        a.extend(k.iter().map(String::as_str));
        bpftool(&a);
    }

    /// A QUEUE/STACK map's values in the order it gives them up, emptying
    /// it (`bpftool map dequeue` until it has none).
    fn drain(&self, map: &str) -> Vec<Vec<u8>> {
        let path = self.map_path(map);
        let mut out = Vec::new();
        loop {
            let o = Command::new("bpftool")
                .args(["-j", "map", "dequeue", "pinned", &path])
                .output()
                .unwrap();
            if !o.status.success() {
                return out;
            }
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            out.push(hex_bytes(&v["value"]));
        }
    }

    /// Every entry as (key, CPU 0's value or the value).
    fn dump(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let v = bpftool(&["map", "dump", "pinned", &self.map_path(map)]);
        let bytes = hex_bytes;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let val = match e.get("values") {
                    Some(per_cpu) => bytes(&per_cpu[0]["value"]),
                    None => bytes(&e["value"]),
                };
                (bytes(&e["key"]), val)
            })
            .collect()
    }

    /// Runs `prog` over `frames` (BPF_PROG_TEST_RUN, one batch): return
    /// value and output bytes per frame.
    fn run(&self, prog: &str, frames: &[Vec<u8>], tmp: &Path) -> Vec<(u32, Vec<u8>)> {
        let mut batch = String::new();
        for (i, f) in frames.iter().enumerate() {
            let (fin, fout) = (tmp.join(format!("in{i}")), tmp.join(format!("out{i}")));
            std::fs::write(&fin, f).unwrap();
            batch.push_str(&format!(
                "prog run pinned {} data_in {} data_out {} repeat 1\n",
                self.progs.join(prog).display(),
                fin.display(),
                fout.display()
            ));
        }
        let bf = tmp.join("batch");
        std::fs::write(&bf, batch).unwrap();
        let v = bpftool(&["batch", "file", bf.to_str().unwrap()]);
        v.as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rv = r["output"]["retval"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{prog} frame {i}: {r}"));
                (
                    rv as u32,
                    std::fs::read(tmp.join(format!("out{i}"))).unwrap(),
                )
            })
            .collect()
    }
}

/// The kernel's action number for the engine's action under "only entry
/// `only` exists" (a redirect elsewhere would have been a miss).
fn action(v: Action, only: u32) -> u32 {
    match v {
        Action::Aborted => 0,
        Action::Drop => 1,
        Action::Pass => 2,
        Action::Tx => 3,
        Action::Redirect(k) if k == only => 4,
        Action::Redirect(_) => 0,
        // BPF_PROG_TEST_RUN reports a devmap redirect as XDP_REDIRECT (an
        // egress program runs at transmission, which a test run skips).
        Action::RedirectDev(_) | Action::EgressDrop => 4,
    }
}

/// The frames both run: every capture record BPF_PROG_TEST_RUN takes
/// (14 bytes to a page), then generated frames for the branches captures
/// rarely reach (VLAN, QinQ, IPv6 TCP/UDP, ICMP, UDP port 9, a short IPv4).
fn frames() -> Vec<Vec<u8>> {
    let mut v = common::all_shared_records();
    v.retain(|f| (14..=2048).contains(&f.len()));
    for tags in 0..3u16 {
        v.push(udp4_vlan(tags, 1000 + tags, 9));
        v.push(udp4_vlan(tags, 53, 4000 + tags));
    }
    let mut b = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6([1; 16], [2; 16], 64)
        .tcp(4000, 80, 1, 1000)
        .write(&mut b, &[1; 20])
        .unwrap();
    v.push(b);
    let mut b = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6([1; 16], [3; 16], 64)
        .udp(5000, 9)
        .write(&mut b, &[1; 20])
        .unwrap();
    v.push(b);
    let mut b = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut b, &[0; 8])
        .unwrap();
    v.push(b);
    let mut short = udp4_vlan(0, 1, 2);
    short.truncate(20);
    v.push(short);
    v
}

/// IPv4/UDP with `tags` VLAN tags (0, 1 or 2).
fn udp4_vlan(tags: u16, sport: u16, dport: u16) -> Vec<u8> {
    let eth = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
    let b = match tags {
        0 => eth.ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64),
        1 => eth
            .single_vlan(100.try_into().unwrap())
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64),
        _ => eth
            .double_vlan(100.try_into().unwrap(), 200.try_into().unwrap())
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64),
    };
    let mut f = Vec::new();
    b.udp(sport, dport).write(&mut f, &[7; 18]).unwrap();
    f
}

/// Runs `name` of `obj` in both, twice (only entry 0, only entry 1), and
/// compares actions and output bytes frame by frame, for the interpreter
/// and the JIT; `fill` sets up both sides' maps the same way first.
#[allow(clippy::too_many_arguments)]
fn compare(
    obj: &Path,
    name: &str,
    opts: &LoadOptions,
    sized: &[&str],
    frames: &[Vec<u8>],
    tmp: &Path,
    check_maps: &dyn Fn(&Kernel, &Program),
) {
    for jit in [false, true] {
        let spec = format!("{}:{name}", obj.display());
        let ours = Arc::new(ebpf::load_object_with(&spec, opts).unwrap_or_else(|e| panic!("{e}")));
        let k = match Kernel::load(obj, &ours, &format!("{name}{}", jit as u8), sized) {
            Ok(k) => k,
            Err(helper) => {
                // Said in every run, past the test harness's capture
                // (which takes eprintln!'s output of a passing test): this
                // program's comparison did not happen here (cpumapd's own
                // runs of it are in tests/ebpf.rs).
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "kernel_diff: NOT COMPARED: {name} of {}: this kernel ({}) offers {helper} to no XDP program",
                    obj.display(),
                    kernel_release()
                );
                return;
            }
        };
        // PROG_ARRAY entries: the same program in the same slot.
        for set in &opts.prog_arrays {
            if ours.map(&set.map).is_some() {
                let (p, prog) = (k.map_path(&set.map), k.progs.join(&set.prog));
                let key = hex_args(&set.index.to_le_bytes());
                let mut a = vec!["map", "update", "pinned", &p, "key"];
                a.extend(key.iter().map(String::as_str));
                a.extend(["value", "pinned", prog.to_str().unwrap()]);
                bpftool(&a);
            }
        }
        // Targets 0 and 1 (CPUs the kernel's cpumap takes on this host).
        ours.fill_targets(&[TargetId(0), TargetId(1)]);
        if ours.map("cpus_available").is_some() {
            for i in 0..2u32 {
                k.update("cpus_available", &i.to_le_bytes(), &i.to_le_bytes());
            }
        }
        if ours.map("cpus_count").is_some() {
            k.update("cpus_count", &0u32.to_le_bytes(), &2u32.to_le_bytes());
        }
        let mut inst = match Instance::new(ours.clone(), 0, jit) {
            Ok(i) => i,
            Err(e)
                if jit
                    && e.to_string()
                        .contains("atomic instructions are not compiled") =>
            {
                // rbpf's JIT has no atomics: such programs run interpreted.
                continue;
            }
            Err(e) => panic!("{name} (jit {jit}): {e}"),
        };
        let mut pool = Pool::new("t", 4, 256, 2048).unwrap();
        let mut redirects = 0;
        for only in [0u32, 1] {
            let other = 1 - only;
            if ours.map("cpu_map").is_some() {
                k.update("cpu_map", &only.to_le_bytes(), &[0, 8, 0, 0, 0, 0, 0, 0]);
                let p = k.map_path("cpu_map");
                let _ = Command::new("bpftool")
                    .args(["map", "delete", "pinned", &p, "key"])
                    .args(hex_args(&other.to_le_bytes()))
                    .output();
            }
            let theirs = k.run(name, frames, tmp);
            assert_eq!(theirs.len(), frames.len(), "{name}: one result per frame");
            redirects += theirs.iter().filter(|r| r.0 == 4).count();
            for (i, bytes) in frames.iter().enumerate() {
                let mut f = pool.alloc().unwrap();
                f.copy_from(bytes).unwrap();
                let v = inst.run(&mut f, &|key| key == only);
                assert_eq!(
                    action(v, only),
                    theirs[i].0,
                    "{name} (jit {jit}, only entry {only}) frame {i}: cpumapd {v:?}, kernel {}: {bytes:02x?}",
                    theirs[i].0
                );
                // The kernel's data_out starts at data_meta.
                let meta = f.meta_len();
                let (buf, off) = f.xdp_buffer();
                assert_eq!(
                    &buf[off - meta..],
                    &theirs[i].1[..],
                    "{name} frame {i}: output bytes (metadata and data)"
                );
            }
        }
        let redirecting = ours.uses_helper(cpumapd::bpf_abi::helper::REDIRECT_MAP);
        assert!(
            redirects > 0 || !redirecting,
            "{name}: the kernel redirected some frames"
        );
        check_maps(&k, &ours);
        if ours.map("cpu_map").is_some() {
            k.delete("cpu_map", &1u32.to_le_bytes());
        }
    }
}

/// The same global set both ways: a copy of `obj` in `tmp` with `set`
/// written into its section (for the kernel, which bpftool cannot tell),
/// and cpumapd's load options with it.
fn with_global(obj: &Path, set: &str, tmp: &Path) -> (PathBuf, LoadOptions) {
    let set = GlobalSet::parse(set).unwrap();
    let raw = std::fs::read(obj).unwrap();
    let out = tmp.join(format!(
        "{}-{}",
        set.name,
        obj.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(
        &out,
        cpumapd::filter::ebpf::globals::patch_object(&raw, &set).unwrap(),
    )
    .unwrap();
    (
        out,
        LoadOptions {
            sets: vec![set],
            nr_cpus: 2,
            ..Default::default()
        },
    )
}

/// The kernel's map `map` after a run, asserted equal to cpumapd's entry
/// by entry (cpumapd's copy 0 of a per-CPU map: bpftool runs on CPU 0),
/// and returned for the checks of each program.
fn same_map(k: &Kernel, ours: &Program, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let theirs = k.dump(map);
    assert_eq!(
        theirs.len(),
        ours.map(map).unwrap().dump().len(),
        "{map}: entries"
    );
    for (key, v) in &theirs {
        assert_eq!(
            Some(v.clone()),
            ours_value(ours, map, key, 0),
            "{map} {key:02x?}"
        );
    }
    theirs
}

/// Value bytes of key `key` in cpumapd's map, copy `cpu`.
fn ours_value(p: &Program, map: &str, key: &[u8], cpu: usize) -> Option<Vec<u8>> {
    p.map(map)
        .unwrap()
        .dump()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v[cpu.min(v.len() - 1)].clone())
}

#[test]
#[ignore = "needs root, bpftool, a bpffs and clang (make -C bpf): cargo test --test kernel_diff -- --include-ignored"]
fn cpumapds_shipped_programs_act_as_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let frames = frames();
    let opts = LoadOptions {
        sets: vec![],
        nr_cpus: 2,
        ..Default::default()
    };
    for name in [
        "no_touch",
        "touch",
        "round_robin",
        "l4_proto",
        "l4_filter",
        "l4_hash",
        "l4_sport",
        "l4_dport",
    ] {
        compare(
            &dir.join("redirect_cpu.o"),
            name,
            &opts,
            &[],
            &frames,
            tmp.path(),
            &|k, ours| {
                if name == "round_robin" {
                    let theirs = k.dump("cpus_iterator");
                    assert_eq!(
                        Some(theirs[0].1.clone()),
                        ours_value(ours, "cpus_iterator", &0u32.to_le_bytes(), 0),
                        "round_robin's position after both runs"
                    );
                }
            },
        );
    }
    // Atomic RMWs (add/or/and/xor, fetch forms, xchg, cmpxchg; 8 and 4
    // bytes) on a shared array: the same counters in both.
    compare(
        &dir.join("atomics.o"),
        "count",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            assert_eq!(same_map(k, ours, "counters").len(), 4);
        },
    );
    // ISA v4: sdiv/smod (64 and 32 bits, by 0, -1 and the minimum),
    // ldsx, movsx and bswap; every result is in the output bytes.
    let v4 = dir.join("v4.o");
    let code = ebpf::load_object(&format!("{}:v4", v4.display())).unwrap();
    assert!(code.is_v4(), "v4.o was built with -mcpu=v4");
    compare(&v4, "v4", &opts, &[], &frames, tmp.path(), &|_, _| {});
    // bpf_xdp_adjust_tail: the same truncated bytes out of both (the
    // output-bytes check in compare); the clock and the PRNG ran.
    compare(
        &dir.join("trim.o"),
        "trim",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            let bss = &ours_value(ours, ".bss", &[0; 4], 0).unwrap();
            let boot = u64::from_le_bytes(bss[..8].try_into().unwrap());
            assert!(boot > 0, "bpf_ktime_get_boot_ns");
            let or = u32::from_le_bytes(bss[12..16].try_into().unwrap());
            assert!(or.count_ones() > 16, "bpf_get_prandom_u32 varies: {or:#x}");
            let theirs = k.dump(".bss");
            assert!(u64::from_le_bytes(theirs[0].1[..8].try_into().unwrap()) > 0);
        },
    );
    // An LPM_TRIE firewall: the same prefixes in both (nested, a default
    // route left out), then the same verdicts and per-prefix hit counts.
    let firewall = dir.join("firewall.o");
    let prefixes: [(u32, [u8; 4]); 5] = [
        (8, [10, 0, 0, 0]),
        (16, [10, 1, 0, 0]),
        (24, [192, 168, 1, 0]),
        (32, [172, 16, 0, 5]),
        (12, [172, 16, 0, 0]),
    ];
    let lpm_key = |plen: u32, a: [u8; 4]| [&plen.to_le_bytes()[..], &a[..]].concat();
    for jit in [false, true] {
        let ours = Arc::new(
            ebpf::load_object_with(&format!("{}:firewall", firewall.display()), &opts).unwrap(),
        );
        let k = Kernel::load(&firewall, &ours, &format!("fw{}", jit as u8), &[])
            .unwrap_or_else(|h| panic!("the kernel lacks {h}"));
        for (plen, a) in prefixes {
            let key = lpm_key(plen, a);
            k.update("blocked", &key, &0u64.to_le_bytes());
            assert_eq!(
                ours.map("blocked")
                    .unwrap()
                    .update(&key, &0u64.to_le_bytes(), 0, 0),
                0
            );
        }
        let mut fw_frames = frames.clone();
        for src in [
            [10, 2, 3, 4],
            [10, 1, 9, 9],
            [192, 168, 1, 77],
            [192, 168, 2, 1],
            [172, 16, 0, 5],
            [172, 17, 0, 5],
            [172, 31, 255, 1],
            [8, 8, 8, 8],
        ] {
            fw_frames.push(common::udp4(src, [10, 9, 9, 9], 1000, 2000));
        }
        let theirs = k.run("firewall", &fw_frames, tmp.path());
        let mut inst = Instance::new(ours.clone(), 0, jit).unwrap();
        let mut pool = Pool::new("fw", 4, 256, 2048).unwrap();
        let mut drops = 0;
        for (i, bytes) in fw_frames.iter().enumerate() {
            let mut f = pool.alloc().unwrap();
            f.copy_from(bytes).unwrap();
            let v = inst.run(&mut f, &|_| true);
            assert_eq!(
                action(v, 0),
                theirs[i].0,
                "firewall (jit {jit}) frame {i}: {bytes:02x?}"
            );
            drops += (v == Action::Drop) as u32;
        }
        assert!(drops >= 6, "the blocked sources were dropped: {drops}");
        let theirs = k.dump("blocked");
        assert_eq!(theirs.len(), prefixes.len());
        for (key, v) in theirs {
            assert_eq!(
                Some(v),
                ours_value(&ours, "blocked", &key, 0),
                "prefix {key:?}"
            );
        }
    }
    // A write into .rodata: refused by both.
    let o = Command::new("bpftool")
        .args(["prog", "load"])
        .arg(dir.join("bad_rodata.o"))
        .arg(format!("/sys/fs/bpf/cpmd{}_bad", std::process::id()))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(format!("/sys/fs/bpf/cpmd{}_bad", std::process::id()));
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("write into map forbidden"),
        "the kernel refuses it: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = ebpf::load_object(&format!("{}/bad_rodata.o", dir.display())).unwrap_err();
    assert!(e.to_string().contains("read-only map value"), "{e}");
    // The sampler: globals set before load (the kernel gets a patched copy),
    // a PERCPU_HASH and .bss compared entry by entry afterwards.
    let (patched, opts3) = with_global(&dir.join("sampler.o"), "sample_every=3", tmp.path());
    compare(
        &patched,
        "sample",
        &opts3,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            assert!(!same_map(k, ours, "flows").is_empty());
            same_map(k, ours, ".bss");
        },
    );
    // nat.c: bpf_csum_diff rewriting addresses and checksums; the output
    // bytes are compared frame by frame, the raw helper results in .bss.
    compare(
        &dir.join("nat.o"),
        "dnat",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            // .bss: raw bpf_csum_diff results (mixed in order, summed) and
            // the count.
            let bss = same_map(k, ours, ".bss");
            assert!(bss[0].1.iter().any(|&b| b != 0), "frames were rewritten");
        },
    );
    // conntrack.c: LRU_HASH and LRU_PERCPU_HASH. The connection table and
    // the per-source counts hold fewer entries than their maps (no eviction
    // in either), so they must be equal entry by entry, deletes on FIN/RST
    // included. `recent` (16 entries) evicts in both, each by its own
    // policy: only that it stays within its size and that no LRU update
    // failed (.bss update_failures) are compared.
    compare(
        &dir.join("conntrack.o"),
        "track",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            for m in ["conns", "per_source"] {
                assert!(!same_map(k, ours, m).is_empty(), "{m}");
            }
            let recent = (
                k.dump("recent").len(),
                ours.map("recent").unwrap().dump().len(),
            );
            assert!(recent.0 <= 16 && recent.1 == 16, "recent: {recent:?}");
            // .bss: update_failures and connections closed.
            let bss = same_map(k, ours, ".bss");
            assert_eq!(
                &bss[0].1[..8],
                &[0; 8],
                "the kernel's LRU updates all succeeded"
            );
            assert_ne!(&bss[0].1[8..16], &[0; 8], "some connections closed");
        },
    );
    // printk.c: bpf_trace_printk's return values (the formatted lengths,
    // summed) and a refused format, counted in .bss.
    compare(
        &dir.join("printk.o"),
        "trace",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            // .bss: lengths returned, formats refused.
            let bss = same_map(k, ours, ".bss");
            assert_ne!(&bss[0].1[..8], &[0; 8], "lines were formatted");
            assert_ne!(&bss[0].1[8..16], &[0; 8], "the bad format was refused");
        },
    );
    // calls.c: bpf-to-bpf calls (__noinline functions three deep, a
    // cursor of packet pointers in the caller's frame, a global function)
    // and bpf_loop, which cpumapd inlines; the verdicts, the per-flow
    // counts and .bss (bpf_loop's return values and what it summed).
    compare(
        &dir.join("calls.o"),
        "calls",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            for map in ["verdicts", "flows", ".bss"] {
                assert!(!same_map(k, ours, map).is_empty(), "{map}");
            }
            let verdicts = k.dump("verdicts");
            let n = |a: usize| u64::from_le_bytes(verdicts[a].1[..8].try_into().unwrap());
            assert!(
                n(1) > 0 && n(2) > 0 && n(4) > 0,
                "drop, pass and redirect: {verdicts:?}"
            );
            let bss = k.dump(".bss");
            assert_ne!(&bss[0].1[..8], &[0; 8], "bpf_loop ran its callback");
        },
    );
    // trailer.c: bpf_xdp_adjust_tail growing every frame by 6 bytes (the
    // grown bytes written by the program; output bytes compared), the
    // sequence number in .bss.
    compare(
        &dir.join("trailer.o"),
        "trailer",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            // .bss as clang lays it out: no_room (u64), then seq.
            let bss = same_map(k, ours, ".bss");
            assert_ne!(&bss[0].1[8..12], &[0; 4], "frames were tagged");
        },
    );
    // queue.c: a QUEUE pushed with BPF_EXIST, a STACK popped (into stack
    // bytes never written), peeked and refilled until -E2BIG; .bss counts.
    compare(
        &dir.join("queue.o"),
        "queue_stack",
        &opts,
        &[],
        &frames,
        tmp.path(),
        &|k, ours| {
            let bss = same_map(k, ours, ".bss");
            assert_ne!(&bss[0].1[16..24], &[0; 8], "the stack was refilled");
            for (map, lifo) in [("recent", false), ("tokens", true)] {
                let mut theirs = k.drain(map);
                if lifo {
                    // bpftool pops a stack newest first.
                    theirs.reverse();
                }
                assert_eq!(ours.map(map).unwrap().queued(), theirs, "{map}");
            }
        },
    );
    // lb.c: tail calls through PROG_ARRAYs (filled alike on both sides),
    // metadata handed from the entry program to the protocol programs, and
    // a chain stopped by the 33-call limit (.bss counts its runs).
    let lb_opts = common::lb_load_options();
    for name in ["lb_entry", "lb_chain"] {
        compare(
            &dir.join("lb.o"),
            name,
            &lb_opts,
            &[],
            &frames,
            tmp.path(),
            &|k, ours| {
                let theirs = same_map(k, ours, "lb_stats");
                let bss = same_map(k, ours, ".bss");
                if name == "lb_entry" {
                    let tcp_udp = u64::from_le_bytes(theirs[1].1[..8].try_into().unwrap())
                        + u64::from_le_bytes(theirs[2].1[..8].try_into().unwrap());
                    assert!(tcp_udp > 0, "frames were tail-called: {theirs:?}");
                } else {
                    let runs = u64::from_le_bytes(bss[0].1[..8].try_into().unwrap());
                    assert_eq!(runs % 34, 0, "34 runs per frame: {runs}");
                }
            },
        );
    }
}

#[test]
#[ignore = "needs root, bpftool, a bpffs and XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR): cargo test --test kernel_diff -- --include-ignored"]
fn xdp_benchs_own_programs_act_as_in_the_kernel() {
    let Some(_g) = ready() else { return };
    let Some(dir) = std::env::var_os("XDPTOOLS").map(|d| PathBuf::from(d).join("bpf-upstream"))
    else {
        common::skip("needs XDPTOOLS=DIR with xdp-tools 1.6.3 built");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let frames = frames();
    // nr_cpus as xdp-bench sets it, in the kernel's copy too.
    let (obj, opts) = with_global(
        &dir.join("xdp_redirect_cpumap.bpf.o"),
        "nr_cpus=2",
        tmp.path(),
    );
    let sized = [
        "cpu_map",
        "cpus_available",
        "rx_cnt",
        "redir_err_cnt",
        "cpumap_enqueue_cnt",
        "cpumap_kthread_cnt",
        "exception_cnt",
        "devmap_xmit_cnt",
        "rxq_cnt",
    ];
    for name in [
        "cpumap_no_touch",
        "cpumap_touch_data",
        "cpumap_round_robin",
        "cpumap_l4_proto",
        "cpumap_l4_filter",
        "cpumap_l4_hash",
        "cpumap_l4_sport",
        "cpumap_l4_dport",
    ] {
        compare(
            &obj,
            name,
            &opts,
            &sized,
            &frames,
            tmp.path(),
            &|k, ours| {
                // rx_cnt[CPU 0] counted what the program counted.
                let theirs = k.dump("rx_cnt");
                assert_eq!(
                    Some(theirs[0].1.clone()),
                    ours_value(ours, "rx_cnt", &0u32.to_le_bytes(), 0),
                    "{name}: rx_cnt[0]"
                );
            },
        );
    }
}

#[test]
fn only_a_helper_the_kernel_offers_no_program_skips_a_comparison() {
    let log = "libbpf: prog 'lb_entry': BPF program load failed: Invalid argument\n343: (85) call bpf_xdp_adjust_meta#54\nprogram of this type cannot use helper bpf_xdp_adjust_meta#54\nprocessed 190 insns";
    assert_eq!(
        helper_the_kernel_lacks(log).as_deref(),
        Some("bpf_xdp_adjust_meta#54")
    );
    // A verifier refusal of the program itself is a difference to report.
    for log in [
        "R1 invalid mem access 'scalar'",
        "invalid access to packet, off=14 size=1",
        "unknown func bpf_foo#999",
    ] {
        assert_eq!(helper_the_kernel_lacks(log), None, "{log}");
    }
}
