//! Soak: the generator at 400 kpps through 2 targets for 10 minutes (or
//! CPUMAPD_SOAK_SECS) while a control client churns the map (updates,
//! deletes, re-adds, applies, a mode switch now and then), another asks for
//! the summary, and a scraper reads /metrics every second. Memory (VmRSS,
//! sampled every 5 s) must stay flat, every lcore must still be running at
//! the end, and the identity must be exact after the drain.
//!
//! Ignored by default (it takes 10 minutes):
//!   cargo test --release --test soak -- --ignored --nocapture
//!   CPUMAPD_SOAK_SECS=60 cargo test --release --test soak -- --ignored --nocapture
//! It prints the memory curve and the counts; docs/RELIABILITY.md has the
//! last result.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpumapd::config::Plan;
use cpumapd::control::ControlServer;
use cpumapd::control::proto::{Client, EntrySpec, Request, UpdateFlags};
use cpumapd::lcore;
use cpumapd::telemetry::exporter::MetricsServer;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
#[ignore = "10-minute soak; run with --ignored (CPUMAPD_SOAK_SECS to shorten)"]
fn ten_minutes_of_traffic_churn_and_scrapes() {
    let secs: u64 = std::env::var("CPUMAPD_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let plan = Plan::from_args(&common::args(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,rate=400000,flows=1024,proto=mix \
         -- --cpu 1,2 --qsize 2048 --mode l4-hash --remote-action drop",
    ))
    .unwrap();
    let running = lcore::start(&plan).expect("start");
    let metrics =
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), running.stats().clone()).unwrap();
    let _ctl = ControlServer::start(&sock, running.handle()).unwrap();
    let addr = metrics.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (churned, refused, scrapes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );

    // Map churn: every 20 ms one change; every 500th a mode switch and back.
    let churn = {
        let (sock, stop, churned, refused) =
            (sock.clone(), stop.clone(), churned.clone(), refused.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&sock).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = 1 + (i % 2) as u32;
                let req = match i % 10 {
                    0 => Request::MapDelete { key },
                    1 => Request::MapUpdate {
                        key,
                        qsize: 1024 + (i % 3) as u32 * 512,
                        flags: UpdateFlags::Noexist,
                        prog: None,
                    },
                    2 => Request::MapApply {
                        entries: vec![
                            EntrySpec {
                                key: 1,
                                qsize: 2048,
                                prog: None,
                            },
                            EntrySpec {
                                key: 2,
                                qsize: 2048,
                                prog: None,
                            },
                        ],
                    },
                    3 if i % 500 == 3 => Request::ModeSet {
                        mode: "round-robin".into(),
                    },
                    4 if i % 500 == 4 => Request::ModeSet {
                        mode: "l4-hash".into(),
                    },
                    _ => Request::MapUpdate {
                        key,
                        qsize: 256 + (i % 7) as u32 * 256,
                        flags: UpdateFlags::Any,
                        prog: None,
                    },
                };
                match c.call(&req) {
                    Ok(_) => churned.fetch_add(1, Ordering::Relaxed),
                    // NoExist on a present key: the kernel's EEXIST.
                    Err(e) if e.code == "EEXIST" => refused.fetch_add(1, Ordering::Relaxed),
                    Err(e) => panic!("ctl call {i}: {e}"),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Summaries over the socket and scrapes over HTTP, once a second.
    let watcher = {
        let (sock, stop, scrapes) = (sock.clone(), stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&sock).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let body = scrape(addr);
                assert!(body.contains("cpumapd_rx_packets_total"), "{body}");
                c.call(&Request::Summary).expect("summary");
                scrapes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let t0 = Instant::now();
    let mut curve = Vec::new();
    let mut last_rx = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5).min(Duration::from_secs(secs)));
        let rx = cpumapd::telemetry::Summary::now(running.stats()).rx;
        assert!(rx > last_rx, "RX stalled at {rx} after {:?}", t0.elapsed());
        last_rx = rx;
        curve.push((t0.elapsed().as_secs(), rss_kib(), rx));
        assert!(!churn.is_finished(), "the churn client died");
        assert!(!watcher.is_finished(), "the scraper died");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn client");
    watcher.join().expect("scraper");
    drop(metrics);
    // Every lcore still running: shutdown joins them and reports a panic.
    let s = cpumapd::telemetry::Summary::at_shutdown(running).expect("every lcore ran to the end");
    s.check_identities(true)
        .unwrap_or_else(|e| panic!("identity: {e}\n{s:#?}"));
    assert_eq!((s.pool_in_use, s.in_flight), (0, 0));

    println!(
        "soak: {secs} s, rx {}, redirect {}, redirect_miss {} (entries deleted under traffic), enqueue_drops {}, target_processed {}",
        s.rx, s.redirect, s.redirect_miss, s.enqueue_drops, s.target_processed
    );
    println!(
        "soak: map changes {} ok, {} refused (EEXIST), {} scrapes + summaries, map_updates ok {} failed {}",
        churned.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        scrapes.load(Ordering::Relaxed),
        s.map_updates_ok,
        s.map_updates_failed
    );
    println!("soak: t_s rss_kib rx");
    for (t, rss, rx) in &curve {
        println!("soak: {t} {rss} {rx}");
    }
    // Flat: after the first minute (pools, rings and thread stacks are
    // touched by then), RSS grows by less than 4 MiB to the end.
    let settled: Vec<u64> = curve
        .iter()
        .filter(|(t, _, _)| *t >= 60.min(secs / 2))
        .map(|c| c.1)
        .collect();
    let (lo, hi) = (
        *settled.iter().min().unwrap(),
        *settled.iter().max().unwrap(),
    );
    assert!(
        hi - lo < 4096,
        "RSS grew from {lo} to {hi} KiB after the first minute"
    );
    assert!(churned.load(Ordering::Relaxed) > secs * 10);
}
