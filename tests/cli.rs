//! The binary as a user runs it: the demo and SIGINT, the JSON summary, and
//! bad input of every kind (clear message, non-zero exit, no panic).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn cpumapd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cpumapd"))
}

fn fails_with(args: &[&str], want: &str) {
    let out = cpumapd().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(want),
        "{args:?}: stderr {stderr:?} lacks {want:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(d("bad.toml"), "[app\nqsize = ").unwrap();
    std::fs::write(d("empty.pcap"), b"").unwrap();
    std::fs::write(d("junk.pcap"), b"this is not a capture at all, just text").unwrap();
    let good = d("good.pcap");
    write_pcap(
        std::path::Path::new(&good),
        &vec![udp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2); 3],
    );
    let mut cut = std::fs::read(&good).unwrap();
    cut.truncate(cut.len() - 5);
    std::fs::write(d("cut.pcap"), cut).unwrap();
    let lc = "--lcores=0@0,1@0";
    let vgen = "--vdev=net_gen0";

    fails_with(&[lc, vgen, "--", "--config", &d("bad.toml")], "config file");
    fails_with(
        &[lc, vgen, "--", "--config", &d("missing.toml")],
        "missing.toml",
    );
    fails_with(
        &[lc, vgen, "--", "--mode", "l4-magic"],
        "unknown mode 'l4-magic'",
    );
    fails_with(&[lc, vgen, "--", "--qsize", "20000"], "qsize 20000");
    fails_with(
        &[lc, vgen, "--", "--remote-action", "redirect:nosuch0"],
        "no interface named 'nosuch0' here",
    );
    fails_with(
        &[lc, vgen, "--", "--devmap", "tx_port=lo"],
        "--devmap 'tx_port=lo': expected MAP:INDEX=IFNAME",
    );
    fails_with(
        &[lc, vgen, "--", "--devmap", "tx_port:x=lo"],
        "INDEX must be a u32",
    );
    fails_with(
        &[lc, vgen, "--", "--devmap", "tx_port:0=nosuch0"],
        "no interface named 'nosuch0' here",
    );
    fails_with(
        &[lc, vgen, "--", "--devmap", "tx_port:0=lo"],
        "--devmap tx_port: no loaded eBPF program has a map 'tx_port'",
    );
    fails_with(
        &[lc, vgen, "--", "--devmap", "tx_port:0=lo,egress"],
        "after IFNAME only ,prog=NAME",
    );
    fails_with(
        &[lc, vgen, "--", "--cpu", "7"],
        "target lcore 7 is not in the EAL lcore list",
    );
    fails_with(
        &["-l", "0", vgen, "--", "--cpu", "1"],
        "target lcore 1 is not in the EAL lcore list",
    );
    let vdev = |f: &str| format!("--vdev=net_pcap0,rx_pcap={}", d(f));
    fails_with(&[lc, &vdev("empty.pcap"), "--"], "empty file");
    fails_with(&[lc, &vdev("junk.pcap"), "--"], "not a pcap capture");
    fails_with(&[lc, &vdev("cut.pcap"), "--"], "record 2");
    fails_with(
        &[lc, "--vdev=net_tap0,iface=x", "--"],
        "needs the DPDK backend",
    );
    fails_with(
        &[lc, vgen, "-a", "0000:01:00.0", "--"],
        "needs the DPDK backend",
    );
    fails_with(&[lc, vgen, "--mode", "touch"], "go after `--`");
    fails_with(&[lc, vgen, "--", "--exception", "kni"], "KNI was removed");
    fails_with(&[lc, vgen, "--", "--rx", "(0,0"], "--rx");
    fails_with(
        &[lc, vgen, "--", "--prog-array", "jmp:0"],
        "--prog-array 'jmp:0': no '='",
    );
}

#[test]
fn json_summary_on_stdout_has_every_field_and_balances() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    let frames: Vec<Vec<u8>> = (0..300u16)
        .map(|i| udp4([10, 0, 0, i as u8], [10, 0, 1, 1], i, 80))
        .collect();
    write_pcap(&input, &frames);
    let out = cpumapd()
        .args([
            "--lcores=0@0,1@0,2@0",
            &format!("--vdev=net_pcap0,rx_pcap={}", input.display()),
            "--",
            "--summary-json",
            "-",
            "--no-pin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is only the JSON summary");
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("field {k} missing: {v}"))
    };
    for k in [
        "rx",
        "pass",
        "drop",
        "tx",
        "redirect",
        "aborted",
        "enqueued",
        "enqueue_drops",
        "target_processed",
        "delivered",
        "target_drops",
        "in_flight",
        "pool_in_use",
    ] {
        n(k);
    }
    assert_eq!(n("rx"), 300);
    assert_eq!(
        n("rx"),
        n("pass") + n("drop") + n("tx") + n("redirect") + n("aborted")
    );
    assert_eq!(n("redirect"), n("enqueued") + n("enqueue_drops"));
    assert_eq!(n("target_processed"), n("delivered") + n("target_drops"));
    assert_eq!((n("in_flight"), n("pool_in_use")), (0, 0));
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
}

#[test]
fn demo_runs_until_sigint_then_drains_and_exits_zero() {
    let child = cpumapd()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "shutdown is prompt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mode l4-hash"), "{stdout}");
    assert!(
        stdout.contains("receive total"),
        "live table printed: {stdout}"
    );
    assert!(stdout.contains("in_flight 0 pool_in_use 0"), "{stdout}");
}

#[test]
fn app_args_alone_run_the_demo_with_them() {
    let out = cpumapd()
        .args([
            "--",
            "--duration",
            "1",
            "--interval",
            "0",
            "--summary-json",
            "-",
        ])
        .args([
            "--metrics",
            "off",
            "--control",
            "off",
            "--mode",
            "round-robin",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stdout} {stderr}",
        out.status
    );
    assert!(stderr.contains("running the demo"), "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON summary");
    assert_eq!(s["mode"], "round-robin", "the app args apply");
    assert!(s["rx"].as_u64().unwrap() > 0, "the demo's generator ran");
    let d = s["duration_s"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&d), "--duration 1 ended it: {d}");
}

#[test]
fn sigterm_during_start_up_stops_cleanly_with_a_summary() {
    // The handler is installed before anything slow (pools, ports, EAL), so
    // a SIGTERM that lands while the pipeline is still being built is a
    // clean stop (summary, identity, exit 0), not a kill.
    for delay_ms in [20u64, 60, 150] {
        let child = cpumapd()
            .args(args(
                "--lcores 0@0,1@1 --vdev net_gen0 -- --cpu 1 --pool-size 1048576 --interval 0 \
                 --metrics off --control off",
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        common::sigterm(&child);
        let t0 = Instant::now();
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "after {delay_ms} ms: {:?}\n{out}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("summary:"), "after {delay_ms} ms: {out}");
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
}

/// `cpumapd --help` and `cpumapd -- --help` print the one generated
/// reference; it names every option, EAL option, driver and key, exception
/// path and key, mode and ctl command the parsers know; and docs/CLI.md
/// carries it verbatim.
#[test]
fn help_is_one_generated_reference_and_docs_carry_it() {
    use clap::CommandFactory;
    let help = |args: &[&str]| {
        let o = cpumapd().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let text = help(&["--help"]);
    assert_eq!(text, help(&["--", "--help"]), "both --help print the same");
    assert_eq!(text, help(&["-h"]));
    assert_eq!(text, cpumapd::cli::help());

    // A token is named when it stands alone: not inside a longer option
    // (`-n` inside `--no-huge` does not count).
    let named = |hay: &str, tok: &str| {
        hay.match_indices(tok).any(|(i, _)| {
            let before = hay[..i].chars().next_back();
            let after = hay[i + tok.len()..].chars().next();
            let open_ended = tok.ends_with('=');
            !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
                && (open_ended
                    || !after.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-'))
        })
    };
    let mut tokens: Vec<String> = Vec::new();
    for a in cpumapd::config::AppArgs::command().get_arguments() {
        if let Some(l) = a.get_long() {
            tokens.push(format!("--{l}"));
        }
    }
    let eal = &cpumapd::config::eal::WITH_VALUE;
    tokens.extend(eal.iter().map(|s| s.to_string()));
    tokens.extend(cpumapd::config::eal::FLAGS.iter().map(|s| s.to_string()));
    tokens.extend(
        cpumapd::config::eal::NATIVE_NO_OP
            .iter()
            .map(|s| s.to_string()),
    );
    for d in cpumapd::port::Driver::ALL {
        tokens.push(d.name().to_string());
        tokens.extend(d.keys().iter().map(|k| format!("{}=", k.name)));
    }
    let tables: [&[cpumapd::kv::Key]; 4] = [
        cpumapd::port::fault::FAULT_KEYS,
        cpumapd::exception::tap::TAP_KEYS,
        cpumapd::exception::VIRTIO_KEYS,
        cpumapd::exception::FAULT_KEYS,
    ];
    for t in tables {
        tokens.extend(t.iter().map(|k| format!("{}=", k.name)));
    }
    tokens.extend(
        [
            "drop",
            "pcap:FILE",
            "tap:IFNAME",
            "virtio-user:PATH",
            "fault:key=value",
            "kni",
        ]
        .map(String::from),
    );
    tokens.extend(
        cpumapd::filter::Mode::ALL
            .iter()
            .map(|m| m.name().to_string()),
    );
    fn leaves(cmd: &clap::Command, out: &mut Vec<String>) {
        for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            out.push(s.get_name().to_string());
            leaves(s, out);
        }
    }
    leaves(&cpumapd::control::ctl::CtlArgs::command(), &mut tokens);
    let missing: Vec<&String> = tokens.iter().filter(|t| !named(&text, t)).collect();
    assert!(missing.is_empty(), "--help does not name {missing:?}");
    // The check can fail: a made-up key is not named.
    assert!(!named(&text, "zero_copy=") && !named(&text, "-n-"));

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLI.md")).unwrap();
    let block = doc
        .split("<!-- BEGIN cpumapd --help -->\n```text\n")
        .nth(1)
        .and_then(|r| r.split("```\n<!-- END cpumapd --help -->").next())
        .expect("docs/CLI.md has the generated block");
    assert_eq!(
        block, text,
        "docs/CLI.md's copy of --help is stale: replace it with `cargo run -q -- --help`"
    );
}
