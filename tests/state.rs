//! `--state-dir`: what ctl changes survives a SIGKILL and a restart, a bad
//! state file is set aside with a reason and never applied in part, and
//! `ctl state show|reset`. The randomised crash drill is
//! `scripts/crash-drill.sh` (CI runs it).

mod common;

use common::ctl_ok;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cpumapd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpumapd"))
}

/// A cpumapd with its state in `dir`, control socket `sock`; returns the
/// child and its first lines of output (up to the state line).
fn start(dir: &Path, sock: &Path) -> (Child, String) {
    let mut child = cpumapd()
        .args([
            "--lcores",
            "0@0,1@1,2@1",
            "--vdev",
            "net_gen0,rate=100000,flows=64",
            "--",
            "--cpu",
            "1,2",
            "--max-entries",
            "8",
            "--control",
            sock.to_str().unwrap(),
            "--state-dir",
            dir.to_str().unwrap(),
            "--metrics",
            "off",
            "--interval",
            "0",
            "--duration",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The state line comes after the control socket's: read up to it.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let t0 = Instant::now();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.starts_with("cpumapd: state: ") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no state line: {seen}"
        );
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, seen)
}

/// (key, qsize, prog) of every entry.
fn entries(sock: &Path) -> Vec<(u64, u64, Option<String>)> {
    let v: Value = serde_json::from_str(&ctl_ok(sock, &["map", "dump"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_u64().unwrap(),
                e["qsize"].as_u64().unwrap(),
                e["prog"].as_str().map(String::from),
            )
        })
        .collect()
}

fn kill9(mut c: Child) {
    let _ = c.kill(); // SIGKILL: no clean shutdown, no last save
    let _ = c.wait();
}

fn state_file(dir: &Path, sock: &Path) -> PathBuf {
    cpumapd::control::state::state_file(dir, sock)
}

#[test]
fn changes_survive_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let (c, out) = start(dir.path(), &sock);
    assert!(out.contains("state: nothing saved yet"), "{out}");
    assert_eq!(entries(&sock).len(), 2, "the profile's two targets");
    ctl_ok(&sock, &["map", "update", "1", "256", "--prog", "drop"]);
    ctl_ok(&sock, &["map", "delete", "2"]);
    ctl_ok(&sock, &["mode", "set", "touch"]);
    let want = entries(&sock);
    assert_eq!(want, vec![(1, 256, Some("drop".into()))]);
    kill9(c);

    let (c, out) = start(dir.path(), &sock);
    assert!(
        out.contains("state: restored from") && out.contains("1 entries, mode touch"),
        "{out}"
    );
    assert_eq!(entries(&sock), want, "the map as last acknowledged");
    assert_eq!(ctl_ok(&sock, &["mode", "get"]).trim(), "touch");
    let show: Value = serde_json::from_str(&ctl_ok(&sock, &["state", "show"])).unwrap();
    assert_eq!(
        show["path"].as_str().unwrap(),
        state_file(dir.path(), &sock).to_str().unwrap()
    );
    assert_eq!(show["state"]["entries"][0]["prog"], "drop");
    // Reset: the file goes; the next start is the profile's map again.
    ctl_ok(&sock, &["state", "reset"]);
    assert!(!state_file(dir.path(), &sock).exists());
    kill9(c);
    let (c, out) = start(dir.path(), &sock);
    assert!(out.contains("nothing saved yet"), "{out}");
    assert_eq!(entries(&sock).len(), 2);
    kill9(c);
}

#[test]
fn bad_state_files_are_set_aside_with_a_reason_and_never_applied() {
    let cases: &[(&str, &str)] = &[
        (
            "{\"format\": 1, \"max_entries\": 8, \"entr",
            "not a cpumapd state file",
        ),
        ("garbage", "not a cpumapd state file"),
        (
            r#"{"format": 2, "max_entries": 8, "entries": [], "mode": "touch"}"#,
            "format 2",
        ),
        (
            r#"{"format": 1, "max_entries": 8, "entries": [{"key": 5, "qsize": 64}], "mode": "touch"}"#,
            "ENODEV",
        ),
        (
            r#"{"format": 1, "max_entries": 8, "entries": [{"key": 1, "qsize": 64, "prog": "/nonexistent.o"}], "mode": "touch"}"#,
            "key 1",
        ),
        (
            r#"{"format": 1, "max_entries": 8, "entries": [{"key": 1, "qsize": 64}], "mode": "warp"}"#,
            "warp",
        ),
        (
            r#"{"format": 1, "max_entries": 8, "entries": [{"key": 1, "qsize": 64}], "mode": "touch", "prog_maps": [{"name": "nope", "key": "0", "value": "1"}]}"#,
            "program map 'nope'",
        ),
    ];
    for (text, why) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("ctl.sock");
        let file = state_file(dir.path(), &sock);
        std::fs::write(&file, text).unwrap();
        let (c, out) = start(dir.path(), &sock);
        assert!(
            out.contains("not restored") && out.contains(why) && out.contains("set aside"),
            "{text}: want '{why}' in: {out}"
        );
        assert!(!file.exists(), "moved away");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".rejected-"))
            .collect();
        assert_eq!(aside.len(), 1, "{text}");
        assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), *text);
        // Nothing of it applied: the profile's map and mode.
        let e = entries(&sock);
        assert_eq!(e.len(), 2, "{text}: {e:?}");
        assert!(e.iter().all(|(_, q, _)| *q == 2048), "{text}: {e:?}");
        assert_eq!(ctl_ok(&sock, &["mode", "get"]).trim(), "l4-hash", "{text}");
        // And the run saves afresh from here.
        ctl_ok(&sock, &["map", "update", "2", "128"]);
        assert!(file.exists());
        kill9(c);
    }
}

#[test]
fn a_given_state_dir_that_cannot_be_made_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = cpumapd()
        .args(["--lcores", "0@0,1@1", "--vdev", "net_gen0,count=10", "--"])
        .args(["--control", dir.path().join("s").to_str().unwrap()])
        .args(["--state-dir", blocker.join("sub").to_str().unwrap()])
        .args(["--metrics", "off", "--interval", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("state directory") && err.contains("--state-dir off"),
        "{err}"
    );
}
