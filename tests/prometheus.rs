//! A real Prometheus scrapes a real cpumapd: rates are live, the summed
//! counters equal cpumapd's own summary, `promtool check metrics` is clean,
//! the shipped rules evaluate, and every metric the Grafana dashboard uses
//! exists. Needs Debian's prometheus (scripts/get-prometheus.sh): those
//! tests are `#[ignore]`d with that reason and run with `--include-ignored`
//! (CI), where a missing tool fails them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` from $CPUMAPD_PROMETHEUS_BIN, target/tools/prometheus, or PATH.
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("CPUMAPD_PROMETHEUS_BIN") {
        dirs.push(d.into());
    }
    dirs.push(root().join("target/tools/prometheus/usr/bin"));
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The tool (a missing one fails the test, which runs only when asked for).
fn require(name: &str, how: &str) -> Option<PathBuf> {
    let t = tool(name);
    if t.is_none() {
        common::skip(&format!("{name} not found ({how})"));
    }
    t
}

/// Kills the child when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns the parsed `data.result` array.
fn query(prom: SocketAddr, q: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", urlencode(q)))
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("query {q}: HTTP {status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The single value of a scalar-like query (sum(...)), if any.
fn value(prom: SocketAddr, q: &str) -> Option<f64> {
    let r = query(prom, q).ok()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ctl_summary(sock: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .args(["ctl", "--control"])
        .arg(sock)
        .arg("summary")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Metric family names in a scrape (from its `# TYPE` lines).
fn families(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Every `cpumapd_*` metric name used in the dashboard's expressions.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/cpumapd.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(!out.is_empty());
    out
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("cpumapd_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

#[test]
#[ignore = "needs Prometheus and promtool (scripts/get-prometheus.sh): cargo test -- --include-ignored"]
fn prometheus_scrapes_cpumapd_and_agrees_with_its_summary() {
    let hint = "run scripts/get-prometheus.sh";
    let (Some(prometheus), Some(promtool)) =
        (require("prometheus", hint), require("promtool", hint))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let summary_file = dir.path().join("summary.json");
    const COUNT: u64 = 1_200_000;

    // Prometheus first (its start-up can take seconds on a busy machine), so
    // that it scrapes the whole run; cpumapd's port is chosen up front.
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rules = root().join("deploy/prometheus/cpumapd-rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: cpumapd\n    static_configs:\n      - targets: [\"{metrics}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prom = Proc(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("prometheus ready", Duration::from_secs(60), || {
        http_get(prom_addr, "/-/ready")
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    let mut cpumapd = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .args([
            "--lcores",
            "0@0,1@1,2@1",
            "--vdev",
            &format!("net_gen0,rate=200000,count={COUNT},flows=64"),
            "--",
            "--mode",
            "round-robin",
            "--remote-action",
            "pass",
            "--metrics",
            &metrics.to_string(),
            "--control",
            sock.to_str().unwrap(),
            "--state-dir",
            "off",
            "--linger",
            "120",
            "--interval",
            "0",
            "--summary-json",
            summary_file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cpumapd.stdout.take().unwrap();
    let cpumapd = Proc(cpumapd);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let l = lines.next().expect("cpumapd exited early").unwrap();
        if let Some(rest) = l.strip_prefix("cpumapd: metrics on http://") {
            assert_eq!(rest, format!("{metrics}/metrics"));
            break;
        }
    }

    // Live: Prometheus sees frames flowing while the generator runs.
    let rate = wait_until("a positive rx rate", Duration::from_secs(30), || {
        value(prom_addr, "sum(rate(cpumapd_rx_packets_total[5s]))").filter(|&v| v > 0.0)
    });
    assert!(rate > 1000.0, "rx rate {rate}");
    assert_eq!(value(prom_addr, "up{job=\"cpumapd\"}"), Some(1.0));

    // promtool's linter on a real scrape: no problems reported.
    let (status, scrape) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every metric the dashboard uses exists in the scrape, and every
    // dashboard expression is valid PromQL that returns data here.
    let have = families(&scrape);
    for expr in dashboard_exprs() {
        for name in metric_names(&expr) {
            assert!(
                have.contains(&name),
                "dashboard uses {name}, not in a scrape"
            );
        }
        let q = expr
            .replace("$__rate_interval", "10s")
            .replace("$instance", ".*");
        let r = wait_until(&format!("data for {q}"), Duration::from_secs(30), || {
            query(prom_addr, &q).ok().filter(|r| !r.is_empty())
        });
        assert!(!r.is_empty());
    }

    // The sources end; then Prometheus's sums equal cpumapd's summary.
    let s = wait_until("traffic to end and drain", Duration::from_secs(60), || {
        let s = ctl_summary(&sock);
        let n = |k: &str| s[k].as_u64().unwrap();
        (n("rx") == COUNT && n("enqueued") == n("target_processed")).then_some(s)
    });
    let n = |k: &str| s[k].as_u64().unwrap() as f64;
    let pairs = [
        ("sum(cpumapd_rx_packets_total)", n("rx")),
        ("sum(cpumapd_verdict_total)", n("rx")),
        (
            "sum(cpumapd_verdict_total{action=\"redirect\"})",
            n("redirect"),
        ),
        ("sum(cpumapd_enqueue_packets_total)", n("enqueued")),
        ("sum(cpumapd_enqueue_drops_total)", n("enqueue_drops")),
        ("sum(cpumapd_target_packets_total)", n("target_processed")),
        ("sum(cpumapd_target_drops_total)", n("target_drops")),
        (
            "sum(cpumapd_exception_packets_total)",
            n("delivered") + n("pass") - n("pass_drops"),
        ),
        ("sum(cpumapd_pool_in_use)", 0.0),
    ];
    wait_until(
        "prometheus to match the summary",
        Duration::from_secs(30),
        || {
            pairs
                .iter()
                .all(|(q, want)| value(prom_addr, q) == Some(*want))
                .then_some(())
        },
    );
    for (q, want) in pairs {
        assert_eq!(value(prom_addr, q), Some(want), "{q}");
    }
    // The shipped recording rules evaluate against real series.
    wait_until("recording rules", Duration::from_secs(30), || {
        query(prom_addr, "cpumapd:enqueue_packets:rate1m")
            .ok()
            .filter(|r| r.len() == 2)
    });
    assert!(query(prom_addr, "cpumapd:enqueue_bulk_avg:rate1m").is_ok());

    // SIGTERM: the exit summary equals what Prometheus saw.
    let mut cpumapd = cpumapd;
    common::sigterm(&cpumapd.0);
    let status = cpumapd.0.wait().unwrap();
    assert!(status.success(), "cpumapd exit {status:?}");
    let fin: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    for k in [
        "rx",
        "redirect",
        "enqueued",
        "enqueue_drops",
        "target_processed",
        "delivered",
    ] {
        assert_eq!(fin[k], s[k], "{k}");
    }
}

#[test]
#[ignore = "needs Prometheus and promtool (scripts/get-prometheus.sh): cargo test -- --include-ignored"]
fn shipped_prometheus_configs_pass_their_checkers() {
    if let Some(promtool) = require("promtool", "run scripts/get-prometheus.sh") {
        for args in [
            vec!["check", "config", "deploy/prometheus/prometheus.yml"],
            vec!["check", "rules", "deploy/prometheus/cpumapd-rules.yml"],
            // Every alert fires on the series that should trip it, and only
            // there (synthetic series, promtool's rule unit tests).
            vec!["test", "rules", "deploy/prometheus/cpumapd-rules.test.yml"],
        ] {
            let out = Command::new(&promtool)
                .args(&args)
                .current_dir(root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "promtool {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn every_exported_family_is_documented_and_used_names_exist() {
    let doc = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    let names = cpumapd::telemetry::exporter::family_names();
    for n in &names {
        assert!(
            doc.contains(&format!("`{n}`")),
            "docs/METRICS.md does not document {n}"
        );
    }
    // Names the docs, rules and dashboard mention must be exported.
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/cpumapd-rules.yml")).unwrap();
    for text in [doc.as_str(), rules.as_str()].into_iter().chain(
        dashboard_exprs()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ) {
        for m in metric_names(text) {
            assert!(
                names.contains(&m.as_str()),
                "{m} is mentioned but not exported"
            );
        }
    }
}
