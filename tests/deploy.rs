//! deploy/ checked as far as this machine allows: the Kubernetes manifests
//! against the API's schemas and each other (and the validator shown to
//! catch breakage), the systemd units with systemd-analyze, the hugepage
//! script on a fake sysfs tree (and, as root, on the real one), the pktgen
//! Lua script with luac and against a mock of pktgen's API, and the TRex
//! profile's packets built with scapy and run through cpumapd.
//!
//! Needs scripts/get-deploy-tools.sh (Python venv with kubernetes-validate
//! and scapy, Debian's lua5.4) and systemd-analyze; each test that needs
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
            .args(["-c", "import kubernetes_validate, scapy"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        skip("no Python venv with kubernetes-validate and scapy (scripts/get-deploy-tools.sh)");
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
#[ignore = "needs lua5.4 and luac5.4 (apt-get install lua5.4): cargo test -- --include-ignored"]
fn pktgen_script_parses_and_runs_against_a_mock_of_pktgen() {
    let (Some(luac), Some(lua)) = (on_path("luac5.4"), on_path("lua5.4")) else {
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
    let run = |mix: &str| {
        Command::new(&lua)
            .current_dir(&dir)
            .args(["mock_pktgen.lua", "cpumapd.lua"])
            .env("CPUMAPD_MIX", mix)
            .env("CPUMAPD_STEP_MS", "100")
            .env("CPUMAPD_RATES", "10,50,100")
            .output()
            .unwrap()
    };
    let seqs = |out: &str| -> Vec<(String, u32, u32)> {
        out.lines()
            .filter_map(|l| l.strip_prefix("seq "))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (
                    w[1].to_string(),
                    w[2].parse().unwrap(),
                    w[5].parse().unwrap(),
                )
            })
            .collect()
    };
    let o = run("udp64");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("mock: seq_cnt 0 range true steps 3"), "{out}");
    let o = run("tcpudp");
    let s = seqs(&text(&o));
    assert_eq!(s.len(), 16, "{}", text(&o));
    assert_eq!(s.iter().filter(|x| x.0 == "tcp").count(), 8);
    let o = run("imix");
    let s = seqs(&text(&o));
    let n = |size| s.iter().filter(|x| x.1 == size).count();
    assert_eq!((n(64), n(594), n(1518)), (7, 4, 1), "{}", text(&o));
    let o = run("ddos");
    let s = seqs(&text(&o));
    assert_eq!(s.iter().filter(|x| x.0 == "udp" && x.2 == 9).count(), 15);
    assert_eq!(s.iter().filter(|x| x.0 == "tcp" && x.2 == 443).count(), 1);
    let o = run("bogus");
    assert!(
        !o.status.success() && text(&o).contains("CPUMAPD_MIX 'bogus'"),
        "{}",
        text(&o)
    );
}

#[test]
#[ignore = "needs scapy (scripts/get-deploy-tools.sh): cargo test -- --include-ignored"]
fn trex_profile_packets_classify_in_cpumapd_as_documented() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(&py)
        .arg(root().join("deploy/loadtest/trex/cpumapd.py"))
        .args([
            "--pcap",
            &dir.path().display().to_string(),
            "--count",
            "1600",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // TRex would load the same module: register() and the stream builder
    // import without TRex installed.
    let o = Command::new(&py)
        .current_dir(root().join("deploy/loadtest/trex"))
        .args([
            "-c",
            "import cpumapd as p; r = p.register(); ss = p.streams('imix'); print(len(ss), sorted(len(s.pkt) for s in ss))",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "3 [60, 590, 1514]",
        "{}",
        text(&o)
    );
    let pcap = |m: &str| dir.path().join(format!("{m}.pcap"));
    let frames = common::read_pcap(&pcap("udp64"));
    assert_eq!(frames.len(), 1600);
    assert!(frames.iter().all(|f| f.len() == 60 && f[23] == 17));
    let flows: std::collections::BTreeSet<&[u8]> = frames.iter().map(|f| &f[26..36]).collect();
    assert_eq!(flows.len(), 1600, "every frame its own flow");
    let sizes: Vec<usize> = common::read_pcap(&pcap("imix"))
        .iter()
        .map(Vec::len)
        .collect();
    let n = |s| sizes.iter().filter(|&&x| x == s).count();
    assert_eq!((n(60), n(590), n(1514)), (933, 533, 134), "7:4:1 of 1600");
    // Through cpumapd (native pcap port): l4-filter drops exactly the
    // flood; l4-proto splits TCP and UDP evenly over two targets.
    let run = |m: &str, mode: &str| {
        let s = common::run_to_end(&format!(
            "--lcores 0@0,1@1,2@1 --vdev net_pcap0,rx_pcap={} -- --mode {mode} --cpu 1,2 --metrics off --control off --interval 0",
            pcap(m).display()
        ));
        s.check_identities(true).unwrap();
        s
    };
    let s = run("ddos", "l4-filter");
    assert_eq!((s.rx, s.drop, s.redirect), (1600, 1500, 100), "{s:?}");
    let s = run("tcpudp", "l4-proto");
    let per: Vec<u64> = s.targets.iter().map(|t| t.processed).collect();
    assert_eq!(per, vec![800, 800], "{s:?}");
    let s = run("imix", "l4-hash");
    assert_eq!(s.redirect + s.pass, 1600);
    assert_eq!(
        s.targets.iter().map(|t| t.processed).sum::<u64>() + s.enqueue_drops,
        s.redirect
    );
    assert_eq!(s.rx, 1600);
}
