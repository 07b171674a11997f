//! `cpumapd ctl` against a running cpumapd: every command, every error code,
//! the socket's permissions, and a clean exit with the identity intact.

mod common;

use common::{ctl, ctl_ok};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn cpumapd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpumapd"))
}

/// Starts cpumapd with the generator at a moderate rate and waits for its
/// control socket.
fn start(sock: &Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "--lcores",
        "0@0,1@1,2@1",
        "--vdev",
        "net_gen0,rate=200000,flows=64",
        "--",
        "--control",
        sock.to_str().unwrap(),
        "--state-dir",
        "off",
        "--metrics",
        "off",
        "--interval",
        "0",
        "--summary-json",
        "-",
        "--duration",
        "60",
    ];
    args.extend_from_slice(extra);
    let child = cpumapd()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn ok_json(sock: &Path, args: &[&str]) -> Value {
    let out = ctl(sock, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a non-zero exit whose message starts with `code:` and contains
/// `want`.
fn fails(sock: &Path, args: &[&str], code: &str, want: &str) {
    let out = ctl(sock, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ctl {args:?} should fail");
    assert!(
        err.starts_with(&format!("cpumapd ctl: {code}: ")) && err.contains(want),
        "ctl {args:?}: want {code} with '{want}', got: {err}"
    );
}

#[test]
fn every_command_and_every_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let child = start(&sock, &[]);

    // Only the owner may connect: the socket is born 0600.
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // dump / lookup
    let dump = ok_json(&sock, &["map", "dump"]);
    let keys: Vec<u64> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, vec![1, 2]);
    assert_eq!(ok_json(&sock, &["map", "lookup", "2"])["qsize"], 2048);
    fails(
        &sock,
        &["map", "lookup", "0"],
        "ENOENT",
        "key 0 has no entry",
    );
    fails(
        &sock,
        &["map", "lookup", "500"],
        "E2BIG",
        "key 500 >= max_entries 128",
    );

    // update: the kernel's codes, in the kernel's order
    let e = ok_json(
        &sock,
        &["map", "update", "1", "256", "--exist", "--prog", "drop"],
    );
    assert_eq!(
        (e["qsize"].as_u64(), e["prog"].as_str()),
        (Some(256), Some("drop"))
    );
    fails(
        &sock,
        &["map", "update", "1", "20000"],
        "EOVERFLOW",
        "qsize 20000 > 16384",
    );
    fails(&sock, &["map", "update", "5", "64"], "ENODEV", "key 5");
    fails(
        &sock,
        &["map", "update", "1", "64", "--noexist"],
        "EEXIST",
        "key 1",
    );
    fails(&sock, &["map", "update", "128", "64"], "E2BIG", "key 128");
    fails(
        &sock,
        &["map", "update", "1", "64", "--prog", "bogus"],
        "EINVAL",
        "bogus",
    );

    // delete: EINVAL past the end, as in the kernel; then recreate
    assert!(ctl(&sock, &["map", "delete", "2"]).status.success());
    fails(&sock, &["map", "lookup", "2"], "ENOENT", "key 2");
    fails(&sock, &["map", "delete", "128"], "EINVAL", "key 128");
    ok_json(&sock, &["map", "update", "2", "512"]);

    // apply: TOML and JSON files; a bad map changes nothing
    let toml = dir.path().join("map.toml");
    std::fs::write(
        &toml,
        "[[entries]]\nkey = 1\nqsize = 128\n\n[[entries]]\nkey = 2\nqsize = 128\nprog = \"pass\"\n",
    )
    .unwrap();
    let r = ok_json(&sock, &["map", "apply", toml.to_str().unwrap()]);
    assert_eq!(
        (r["replaced"].as_u64(), r["created"].as_u64()),
        (Some(2), Some(0))
    );
    let json = dir.path().join("map.json");
    std::fs::write(&json, r#"{"entries":[{"key":2,"qsize":64}]}"#).unwrap();
    let r = ok_json(&sock, &["map", "apply", json.to_str().unwrap()]);
    assert_eq!(
        (r["replaced"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(1))
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"entries":[{"key":1,"qsize":64},{"key":2,"qsize":99999}]}"#,
    )
    .unwrap();
    fails(
        &sock,
        &["map", "apply", bad.to_str().unwrap()],
        "EOVERFLOW",
        "key 2",
    );
    let dump = ok_json(&sock, &["map", "dump"]);
    assert_eq!(dump.as_array().unwrap().len(), 1, "nothing applied: {dump}");
    assert_eq!(dump[0]["qsize"], 64);
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[entries]]\nkey = \"one\"\n").unwrap();
    fails(
        &sock,
        &["map", "apply", broken.to_str().unwrap()],
        "EINVAL",
        "broken.toml",
    );
    std::fs::write(
        &toml,
        "[[entries]]\nkey = 1\nqsize = 256\n[[entries]]\nkey = 2\nqsize = 256\n",
    )
    .unwrap();
    ok_json(&sock, &["map", "apply", toml.to_str().unwrap()]);

    // mode
    assert_eq!(ctl_ok(&sock, &["mode", "get"]), "l4-hash\n");
    assert_eq!(
        ctl_ok(&sock, &["mode", "set", "round-robin"]),
        "round-robin\n"
    );
    fails(
        &sock,
        &["mode", "set", "fastest"],
        "EINVAL",
        "unknown mode 'fastest'",
    );

    // stats: the live table once; round-robin spreads over both targets
    let table = ctl_ok(&sock, &["stats", "--interval", "0.5"]);
    assert!(table.contains("cpumapd round-robin -> drop"), "{table}");
    assert!(
        table.contains("kthread lcore1") && table.contains("kthread lcore2"),
        "{table}"
    );
    fails(
        &sock,
        &["stats", "--interval", "60"],
        "EINVAL",
        "--interval 60",
    );

    // summary so far
    let s = ok_json(&sock, &["summary"]);
    assert!(s["rx"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["mode"], "round-robin");
    assert!(s["map_updates_failed"].as_u64().unwrap() >= 6, "{s}");

    // usage errors are clap's (exit 2), not a connection attempt
    let out = ctl(&sock, &["map", "update", "x"]);
    assert_eq!(out.status.code(), Some(2));

    common::sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n("rx"),
        n("pass") + n("drop") + n("tx") + n("redirect") + n("aborted")
    );
    assert_eq!(n("redirect"), n("enqueued") + n("enqueue_drops"));
    assert_eq!(n("target_processed"), n("delivered") + n("target_drops"));
    assert_eq!(n("enqueued"), n("target_processed"), "drained at exit");
    assert_eq!(n("pool_in_use"), 0);
    assert!(!sock.exists(), "socket removed at exit");

    // No cpumapd: a clear error naming the socket.
    fails(
        &sock,
        &["summary"],
        "ECONNREFUSED",
        &sock.display().to_string(),
    );
}

#[test]
#[ignore = "needs root and setpriv (connects as another user): cargo test -- --include-ignored"]
fn only_the_sockets_owner_can_connect() {
    let root = nix::unistd::geteuid().is_root();
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(
        root && setpriv.exists(),
        "needs root and /usr/bin/setpriv to connect as another user (run with --include-ignored as root)"
    );
    // A directory everyone may enter, so only the socket's own mode decides.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("ctl.sock");
    let child = start(&sock, &[]);
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_cpumapd"))
        .args(["ctl", "--control"])
        .arg(&sock)
        .arg("summary")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "uid 65534 must not reach the socket");
    assert!(
        err.contains("cannot connect to control socket") && err.contains("Permission denied"),
        "{err}"
    );
    // The owner still can.
    assert!(ok_json(&sock, &["summary"])["rx"].as_u64().is_some());
    common::sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
}

/// Starts a second cpumapd on `sock`; the caller checks why it failed.
fn start_expecting_failure(sock: &Path) -> Output {
    let out = cpumapd()
        .args([
            "--lcores",
            "0@0,1@1",
            "--vdev",
            "net_gen0",
            "--",
            "--control",
        ])
        .arg(sock)
        .args(["--metrics", "off", "--duration", "1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "cpumapd on {} should fail",
        sock.display()
    );
    out
}

#[test]
fn a_second_cpumapd_on_the_same_socket_is_refused_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let first = start(&sock, &[]);
    let out = start_expecting_failure(&sock);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another cpumapd is listening"), "{err}");
    common::sigterm(&first);
    assert!(first.wait_with_output().unwrap().status.success());

    // A stale socket file (nobody listening) is replaced.
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(l);
    assert!(sock.exists());
    let second = start(&sock, &[]);
    assert_eq!(ctl_ok(&sock, &["mode", "get"]), "l4-hash\n");
    common::sigterm(&second);
    assert!(second.wait_with_output().unwrap().status.success());

    // A path that is not a socket is never removed.
    std::fs::write(&sock, "precious").unwrap();
    let out = start_expecting_failure(&sock);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
}
