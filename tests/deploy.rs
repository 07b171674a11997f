//! deploy/ checked as far as this machine allows: the Kubernetes manifests
//! against the API's schemas and each other (and the validator shown to
//! catch breakage), the systemd units with systemd-analyze, the hugepage
//! script on a fake sysfs tree (and, as root, on the real one), the pktgen
//! Lua script with luac (pktgen itself runs it in scripts/loadtest.sh), and
//! the TRex profile's packets as TRex's own simulator writes them, run
//! through cpumapd.
//!
//! Needs scripts/get-deploy-tools.sh (Python venv with kubernetes-validate,
//! Debian's lua5.4), TRex's simulator and systemd-analyze; each test that needs
//! one is `#[ignore]`d naming it and runs with `--include-ignored` (CI),
//! where a missing tool fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::skip;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python with the deploy tools (a missing venv fails the test).
fn python() -> Option<PathBuf> {
    let p = root().join("target/tools/pyenv/bin/python");
    let ok = p.is_file()
        && Command::new(&p)
            .args(["-c", "import kubernetes_validate"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        skip("no Python venv with kubernetes-validate (scripts/get-deploy-tools.sh)");
        return None;
    }
    Some(p)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip(&format!("{name} not found (scripts/get-deploy-tools.sh)"));
    }
    found
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let t = std::fs::read_to_string(path).unwrap();
    assert!(t.contains(from), "{}: no '{from}'", path.display());
    std::fs::write(path, t.replacen(from, to, 1)).unwrap();
}

#[test]
#[ignore = "needs kubernetes-validate (scripts/get-deploy-tools.sh): cargo test -- --include-ignored"]
fn kubernetes_manifests_validate_and_the_validator_catches_breakage() {
    let Some(py) = python() else { return };
    let validate = |dir: &Path| {
        Command::new(&py)
            .arg(root().join("deploy/kubernetes/validate.py"))
            .arg(dir)
            .args([
                "--k8s",
                "1.30,1.37",
                "--cpumapd",
                env!("CARGO_BIN_EXE_cpumapd"),
            ])
            .output()
            .unwrap()
    };
    let o = validate(&root().join("deploy/kubernetes"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "daemonset.yaml: DaemonSet against Kubernetes 1.30 (strict)",
        "servicemonitor.yaml: ServiceMonitor against schemas/servicemonitor.json",
        "cross-references",
        "cpumapd --check-config accepts cpumapd.toml",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // Each breakage a cluster (or a silent misconfiguration) would punish,
    // caught with its reason.
    let cases = [
        (
            "daemonset.yaml",
            "hostNetwork: true",
            "hostNetwrk: true",
            "'hostNetwrk' was unexpected",
        ),
        (
            "daemonset.yaml",
            "              memory: 1Gi\n              hugepages-2Mi: 2Gi\n          volumeMounts",
            "              memory: 1Gi\n              hugepages-2Mi: 1Gi\n          volumeMounts",
            "hugepages-2Mi requests must equal limits",
        ),
        (
            "daemonset.yaml",
            "$(POD_IP):9419",
            "$(NODE_IP):9419",
            "env has no NODE_IP",
        ),
        (
            "daemonset.yaml",
            "name: cpumapd-config",
            "name: cpumapd-cfg",
            "ConfigMap cpumapd-cfg, which is not here",
        ),
        (
            "servicemonitor.yaml",
            "- port: metrics",
            "- port: metric",
            "endpoint port metric",
        ),
        (
            "servicemonitor.yaml",
            "interval: 15s",
            "interval: 15 seconds",
            "interval",
        ),
        (
            "service.yaml",
            "targetPort: metrics",
            "targetPort: metrix",
            "targetPort metrix",
        ),
        (
            "configmap.yaml",
            "qsize = 4096",
            "qsize = 0",
            "check-config refused the profile",
        ),
        (
            "kustomization.yaml",
            "  - service.yaml\n",
            "",
            "does not list service.yaml",
        ),
    ];
    for (file, from, to, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join("deploy/kubernetes"), dir.path());
        edit(&dir.path().join(file), from, to);
        let o = validate(dir.path());
        let out = text(&o);
        assert!(!o.status.success(), "{file}: '{to}' was not caught:\n{out}");
        assert!(out.contains(want), "{file}: wanted '{want}':\n{out}");
    }
}

#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd): cargo test -- --include-ignored"]
fn systemd_units_verify_against_this_build() {
    let Some(analyze) = on_path("systemd-analyze") else {
        return;
    };
    // The units name installed paths; verify them against this checkout.
    let dir = tempfile::tempdir().unwrap();
    for unit in ["cpumapd.service", "cpumapd-hugepages.service"] {
        let t = std::fs::read_to_string(root().join("deploy/systemd").join(unit))
            .unwrap()
            .replace("/usr/local/bin/cpumapd", env!("CARGO_BIN_EXE_cpumapd"))
            .replace(
                "/usr/local/lib/cpumapd/setup-hugepages.sh",
                &root()
                    .join("deploy/hugepages/setup-hugepages.sh")
                    .display()
                    .to_string(),
            );
        std::fs::write(dir.path().join(unit), t).unwrap();
    }
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(dir.path().join("cpumapd.service"))
        .arg(dir.path().join("cpumapd-hugepages.service"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    // The unit's ExecStartPre, run as systemd would (its default config
    // replaced by a shipped profile): it accepts a good profile and stops
    // the start on a bad one.
    let unit = std::fs::read_to_string(root().join("deploy/systemd/cpumapd.service")).unwrap();
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("ExecStartPre");
    let run_pre = |config: &Path| {
        let words: Vec<String> = pre
            .replace("${CPUMAPD_CONFIG}", &config.display().to_string())
            .replace("$CPUMAPD_EAL_ARGS", "")
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(words[0], "/usr/local/bin/cpumapd");
        Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args(&words[1..])
            .output()
            .unwrap()
    };
    let o = run_pre(&root().join("dpdk-config/prod-1nic.toml"));
    assert!(o.status.success(), "{}", text(&o));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[eal]\nlcores = \"0@0,1@0\"\nvdev = [\"net_gen0\"]\n[app]\nqsize = 0\n",
    )
    .unwrap();
    let o = run_pre(&bad);
    assert!(
        !o.status.success() && text(&o).contains("qsize 0"),
        "{}",
        text(&o)
    );
}

/// A sysfs tree with `nodes` NUMA nodes, each with 2 MB (and 1 GB) pools.
fn fake_sysfs(dir: &Path, nodes: usize, gig: bool) {
    for n in 0..nodes {
        let base = dir.join(format!("devices/system/node/node{n}/hugepages"));
        let mut sizes = vec!["hugepages-2048kB"];
        if gig {
            sizes.push("hugepages-1048576kB");
        }
        for s in sizes {
            std::fs::create_dir_all(base.join(s)).unwrap();
            std::fs::write(base.join(s).join("nr_hugepages"), "0\n").unwrap();
        }
    }
}

fn hugepages(args: &[&str]) -> Output {
    Command::new(root().join("deploy/hugepages/setup-hugepages.sh"))
        .args(args)
        .output()
        .unwrap()
}

fn nr(sysfs: &Path, node: usize, size: &str) -> String {
    std::fs::read_to_string(sysfs.join(format!(
        "devices/system/node/node{node}/hugepages/hugepages-{size}/nr_hugepages"
    )))
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn hugepage_script_reserves_per_node_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("sys");
    fake_sysfs(&sysfs, 2, true);
    let mounts = dir.path().join("mounts");
    std::fs::write(&mounts, "nodev /dev/hugepages hugetlbfs rw 0 0\n").unwrap();
    let (s, m) = (sysfs.display().to_string(), mounts.display().to_string());
    // On the fake tree and mount table, with these options.
    let run = |extra: &[&str]| {
        let mut a = vec!["--sysfs", s.as_str(), "--mounts", m.as_str()];
        a.extend_from_slice(extra);
        hugepages(&a)
    };
    // Dry run: says what it would do, changes nothing.
    let o = run(&["--pages-2m", "64", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("node 1: would set 2M pages 0 -> 64"),
        "{}",
        text(&o)
    );
    assert_eq!(nr(&sysfs, 0, "2048kB"), "0");
    // One node, then all of them; the mount exists and is kept.
    let o = run(&["--pages-2m", "64", "--node", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        (nr(&sysfs, 0, "2048kB"), nr(&sysfs, 1, "2048kB")),
        ("0".into(), "64".into())
    );
    assert!(
        text(&o).contains("already mounted on /dev/hugepages"),
        "{}",
        text(&o)
    );
    let o = run(&["--pages-2m", "64", "--pages-1g", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("node 1: 64 x 2M pages already reserved"),
        "{out}"
    );
    assert!(out.contains("node 0: 2M pages 0 -> 64"), "{out}");
    assert_eq!(nr(&sysfs, 1, "1048576kB"), "2");
    // Errors name the problem.
    for (args, want) in [
        (
            &["--pages-2m", "x"][..],
            "--pages-2m 'x': expected a number",
        ),
        (&["--node", "7"][..], "NUMA node 7 does not exist"),
        (&["--frob"][..], "unknown option '--frob'"),
    ] {
        let mut a = vec!["--no-mount"];
        a.extend_from_slice(args);
        let o = run(&a);
        assert!(
            !o.status.success() && text(&o).contains(want),
            "{want}: {}",
            text(&o)
        );
    }
    let no1g = dir.path().join("sys2");
    fake_sysfs(&no1g, 1, false);
    let o = hugepages(&[
        "--sysfs",
        &no1g.display().to_string(),
        "--no-mount",
        "--pages-1g",
        "1",
    ]);
    assert!(text(&o).contains("no 1 GB hugepages"), "{}", text(&o));
}

#[test]
#[ignore = "needs root (writes /sys hugepage counts, mounts hugetlbfs): cargo test -- --include-ignored"]
fn hugepage_script_on_this_host() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to read and write /sys hugepage counts and mount hugetlbfs");
        return;
    }
    // Asks for the count node 0 already has (changes nothing the other
    // tests rely on) and mounts hugetlbfs on a private directory.
    let have = nr(Path::new("/sys"), 0, "2048kB");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("huge");
    let mnt_s = mnt.display().to_string();
    let run = || hugepages(&["--pages-2m", &have, "--node", "0", "--mount", &mnt_s]);
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already reserved"), "{}", text(&o));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let mounted = mounts
        .lines()
        .any(|l| l.contains(&mnt_s) && l.contains("hugetlbfs"));
    // Second run: the mount is found and kept.
    let o2 = run();
    let _ = Command::new("umount").arg(&mnt).output();
    assert!(
        mounted,
        "hugetlbfs not mounted on {}: {mounts}",
        mnt.display()
    );
    assert!(text(&o2).contains("already mounted"), "{}", text(&o2));
}

#[test]
#[ignore = "needs luac5.4 (apt-get install lua5.4): cargo test -- --include-ignored"]
fn pktgen_script_parses() {
    // A static check only: scripts/loadtest.sh --source pktgen runs the
    // script in pktgen-dpdk itself (CI).
    let Some(luac) = on_path("luac5.4") else {
        return;
    };
    let dir = root().join("deploy/loadtest/pktgen");
    let o = Command::new(&luac)
        .arg("-p")
        .arg(dir.join("cpumapd.lua"))
        .output()
        .unwrap();
    assert!(o.status.success(), "luac -p: {}", text(&o));
    // luac -p does fail on a broken script.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.lua");
    let good = std::fs::read_to_string(dir.join("cpumapd.lua")).unwrap();
    std::fs::write(&broken, good.replacen("local port =", "local port ==", 1)).unwrap();
    assert!(
        !Command::new(&luac)
            .arg("-p")
            .arg(&broken)
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// TRex's stateless simulator (`stl-sim`): $TREX_SCRIPTS, else
/// $CPUMAPD_CACHE/trex/trex-core-3.0.8/scripts (CI builds it there with
/// ../shared/trex/build.sh).
fn trex_scripts() -> Option<PathBuf> {
    let dir = std::env::var_os("TREX_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CPUMAPD_CACHE").unwrap_or("/var/cache/cpumapd".into()))
                .join("trex/trex-core-3.0.8/scripts")
        });
    if !dir.join("stl-sim").is_file() {
        skip(&format!(
            "TRex's stl-sim not found in {} (TREX_SCRIPTS, or ../shared/trex/build.sh $CPUMAPD_CACHE/trex)",
            dir.display()
        ));
        return None;
    }
    Some(dir)
}

/// The frames TRex would send for the profile's `mix`: stl-sim compiles
/// deploy/loadtest/trex/cpumapd.py with TRex's own client library and
/// applies its field engine in TRex's C++ packet builder.
fn trex_frames(scripts: &Path, mix: &str, count: usize, out: &Path) -> Vec<Vec<u8>> {
    let pcap = out.join(format!("{mix}.pcap"));
    let o = Command::new("./stl-sim")
        .current_dir(scripts)
        .arg("-f")
        .arg(root().join("deploy/loadtest/trex/cpumapd.py"))
        .arg("-o")
        .arg(&pcap)
        .args(["-l", &count.to_string(), "-t", "--mix", mix])
        .output()
        .unwrap();
    assert!(o.status.success(), "stl-sim {mix}: {}", text(&o));
    common::read_pcap(&pcap)
}

#[test]
#[ignore = "needs TRex's stateless simulator (../shared/trex/build.sh): cargo test -- --include-ignored"]
fn trex_profile_as_trex_sends_it_classifies_in_cpumapd_as_documented() {
    let Some(scripts) = trex_scripts() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let proto_dport = |f: &[u8]| (f[23], u16::from_be_bytes([f[36], f[37]]));
    // udp64: every frame its own flow (the field engine walks sources and
    // source ports together).
    let frames = trex_frames(&scripts, "udp64", 1600, dir.path());
    assert_eq!(frames.len(), 1600);
    assert!(frames.iter().all(|f| f.len() == 60 && f[23] == 17));
    let flows: std::collections::BTreeSet<&[u8]> = frames.iter().map(|f| &f[26..36]).collect();
    assert_eq!(flows.len(), 1600, "every frame its own flow");
    // imix: 7:4:1 of the packets (the streams' shares are of packets).
    let sizes: Vec<usize> = trex_frames(&scripts, "imix", 1200, dir.path())
        .iter()
        .map(Vec::len)
        .collect();
    let n = |s| sizes.iter().filter(|&&x| x == s).count();
    assert_eq!((n(60), n(590), n(1514)), (700, 400, 100), "7:4:1 of 1200");
    // Through cpumapd (native pcap port): l4-filter drops exactly the
    // flood; l4-proto splits TCP and UDP evenly over two targets.
    let run = |m: &str, mode: &str| {
        let s = common::run_to_end(&format!(
            "--lcores 0@0,1@1,2@1 --vdev net_pcap0,rx_pcap={} -- --mode {mode} --cpu 1,2 --qsize 4096 --metrics off --control off --interval 0",
            dir.path().join(format!("{m}.pcap")).display()
        ));
        s.check_identities(true).unwrap();
        s
    };
    let ddos = trex_frames(&scripts, "ddos", 1600, dir.path());
    let flood = ddos.iter().filter(|f| proto_dport(f) == (17, 9)).count();
    let syn = ddos.iter().filter(|f| proto_dport(f) == (6, 443)).count();
    assert_eq!((flood, syn), (1500, 100), "15:1 of 1600");
    let s = run("ddos", "l4-filter");
    assert_eq!((s.rx, s.drop, s.redirect), (1600, 1500, 100), "{s:?}");
    let tcpudp = trex_frames(&scripts, "tcpudp", 1600, dir.path());
    assert_eq!(tcpudp.iter().filter(|f| f[23] == 6).count(), 800);
    let s = run("tcpudp", "l4-proto");
    let per: Vec<u64> = s.targets.iter().map(|t| t.processed).collect();
    assert_eq!(per, vec![800, 800], "{s:?}");
}
