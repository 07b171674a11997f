//! Every profile in dpdk-config/ passes `cpumapd --check-config` (the real
//! binary, in this build: DPDK profiles are checked without DPDK), and the
//! check refuses what a run would refuse, naming the problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .arg("--check-config")
        .arg(file)
        .args(extra)
        .output()
        .expect("run cpumapd --check-config")
}

fn profiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dpdk-config");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_profile_checks_and_prints_its_plan() {
    let files = profiles();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The set: developer, single-NIC and two-NIC production, TAP
    // exception and virtio-user profiles, beside the native ones.
    for want in [
        "dev-dpdk.toml",
        "prod-1nic.toml",
        "prod-2nic.toml",
        "tap-exception.toml",
        "virtio-user.toml",
        "dev-gen.toml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let o = check(f, &[]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(": valid ("), "{out}");
        for section in ["lcores:", "ports:", "targets:", "pools:", "services:"] {
            assert!(
                out.contains(section),
                "{}: no {section}\n{out}",
                f.display()
            );
        }
        // Each target lcore is listed with its role, each port with queues.
        assert!(out.contains("target, cpumap key"), "{out}");
        assert!(out.contains("RX queue(s)"), "{out}");
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("backend = \"dpdk\"") {
            assert!(out.contains("(dpdk backend)"), "{out}");
            assert!(out.contains("main lcore: lcore0"), "{out}");
            assert!(out.contains("eal args:"), "{out}");
        }
    }
}

#[test]
fn the_production_profiles_resolve_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dpdk-config");
    let o = check(&dir.join("prod-1nic.toml"), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for l in 1..=4 {
        let line = out
            .lines()
            .find(|x| x.trim_start().starts_with(&format!("lcore{l} ")))
            .unwrap_or_else(|| panic!("no lcore{l}: {out}"));
        assert!(
            line.contains(&format!("cpus [{l}]")) && line.contains(&format!("RX port0/q{}", l - 1)),
            "{line}"
        );
    }
    assert!(
        out.contains("0000:3b:00.0") && out.contains("4 RX queue(s), RSS"),
        "{out}"
    );
    assert!(out.contains("tap:cpumapd0 through DPDK's net_tap"), "{out}");
    let o = check(&dir.join("prod-2nic.toml"), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // DPDK numbers PCI ports by address.
    let p0 = out.find("port0   0000:3b:00.0").expect(&out);
    let p1 = out.find("port1   0000:af:00.0").expect(&out);
    assert!(p0 < p1);
    assert!(out.contains("RX port1/q1"), "{out}");
}

#[test]
fn broken_profiles_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[eal]\nl = \"0-2\"\nargs = [\"--no-huge\", \"--in-memory\", \"--vdev\", \"net_null0\"]\n[app]\nbackend = \"dpdk\"\n",
            "--no-huge and --in-memory cannot be combined",
        ),
        (
            "[eal]\nl = \"0-2\"\nargs = [\"-a\", \"3b:00\"]\n[app]\nbackend = \"dpdk\"\n",
            "'3b:00' is not a PCI address",
        ),
        (
            "[eal]\nl = \"0-2\"\nargs = [\"--no-huge\"]\n[app]\nbackend = \"dpdk\"\n",
            "the EAL arguments name no port",
        ),
        (
            "[eal]\nl = \"0-2\"\nargs = [\"-a\", \"0000:3b:00.0\"]\n[app]\nbackend = \"dpdk\"\nrx = \"(0,0,0)\"\n",
            "lcore0 is the EAL main lcore",
        ),
        (
            "[eal]\nl = \"0-2\"\nargs = [\"-a\", \"0000:3b:00.0\"]\n[app]\nbackend = \"dpdk\"\nrx = \"(0,0,1),(0,2,1)\"\n",
            "numbered 0..2 without gaps",
        ),
        (
            "[eal]\nl = \"0-2\"\nvdev = [\"net_gen0\"]\n[app]\nbackend = \"dpdk\"\n",
            "net_gen is cpumapd's own generator",
        ),
        (
            "[eal]\nl = \"0-2\"\nvdev = [\"net_tap0\"]\n[app]\nbackend = \"dpdk\"\nexception = \"kni\"\n",
            "KNI was removed",
        ),
        (
            "[eal]\nlcores = \"0@0,1@1\"\nvdev = [\"net_gen0\"]\n[app]\nqsize = 0\n",
            "qsize 0 is out of range",
        ),
        (
            "[eal]\nl = \"0-2\"\nvdev = [\"net_null0\"]\n[app]\nbackend = \"vpp\"\n",
            "--backend 'vpp'",
        ),
        ("[app]\nqsise = 1\n", "[app] qsise: unknown key"),
        (
            "[app]\nqsize = \"big\"\n",
            "invalid value 'big' for '--qsize",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let o = check(&f, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(want), "{text}: wanted '{want}' in: {err}");
        assert!(o.stdout.is_empty(), "no plan printed for a refused profile");
    }
    let o = check(&dir.path().join("missing.toml"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing.toml") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn the_command_line_overrides_the_profile_as_in_a_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dpdk-config");
    let o = check(
        &dir.join("dev-gen.toml"),
        &["--", "--cpu", "2", "--qsize", "512"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("target, cpumap key 2 (qsize 512)"), "{out}");
    assert!(!out.contains("cpumap key 1"), "{out}");
}
