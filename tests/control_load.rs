//! The control socket under load and under hostile input, with the
//! dataplane running in this process so pools and counters can be checked
//! exactly afterwards.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use cpumapd::config::Plan;
use cpumapd::control::ControlServer;
use cpumapd::control::proto::{Client, EntrySpec, MAX_LINE, Request, UpdateFlags};
use cpumapd::lcore::{self, Running};
use cpumapd::telemetry::Summary;
use rand_like::Rng;

/// A tiny deterministic generator (xorshift), so failures replay.
mod rand_like {
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}

fn start(cmdline: &str, sock: &Path) -> (Running, ControlServer) {
    let plan = Plan::from_args(&common::args(cmdline)).unwrap();
    let running = lcore::start(&plan).expect("start");
    let server = ControlServer::start(sock, running.handle()).expect("control socket");
    (running, server)
}

fn rx_now(r: &Running) -> u64 {
    cpumapd::telemetry::Summary::now(r.stats()).rx
}

/// Waits until the RX counter moves: the dataplane is forwarding.
fn assert_forwarding(r: &Running) {
    let before = rx_now(r);
    let t0 = Instant::now();
    while rx_now(r) == before {
        assert!(t0.elapsed() < Duration::from_secs(10), "forwarding stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_exact(s: &Summary) {
    s.check_identities(true)
        .unwrap_or_else(|e| panic!("identity: {e}\n{s:#?}"));
    assert_eq!(s.pool_in_use, 0, "every buffer back in its pool");
    assert_eq!(s.in_flight, 0);
}

fn entries(a: &[(u32, u32)]) -> Vec<EntrySpec> {
    a.iter()
        .map(|&(key, qsize)| EntrySpec {
            key,
            qsize,
            prog: None,
        })
        .collect()
}

#[test]
fn reconfiguration_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let (running, _server) = start(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,rate=400000,flows=256 -- --mode round-robin --qsize 256",
        &sock,
    );
    assert_forwarding(&running);

    let map_a = entries(&[(1, 256), (2, 256)]);
    let map_b = entries(&[(1, 64), (2, 1024)]);
    let applier = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(&sock).unwrap();
            for i in 0..1000 {
                let m = if i % 2 == 0 { &map_a } else { &map_b };
                c.call(&Request::MapApply { entries: m.clone() })
                    .unwrap_or_else(|e| panic!("apply {i}: {e}"));
            }
        })
    };
    // 2 x 2500 single updates and deletes, some refused on purpose.
    let updaters: Vec<_> = (0..2u64)
        .map(|seed| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock).unwrap();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1));
                let (mut ok, mut refused) = (0u64, 0u64);
                for _ in 0..2500 {
                    let key = 1 + rng.below(2) as u32;
                    let req = match rng.below(10) {
                        0 => Request::MapDelete { key },
                        1 => Request::MapUpdate {
                            key,
                            qsize: 20_000, // EOVERFLOW
                            flags: UpdateFlags::Any,
                            prog: None,
                        },
                        2 => Request::MapUpdate {
                            key: 3, // ENODEV: not a target
                            qsize: 64,
                            flags: UpdateFlags::Any,
                            prog: None,
                        },
                        _ => Request::MapUpdate {
                            key,
                            qsize: 1 + rng.below(2048) as u32,
                            flags: UpdateFlags::Exist,
                            prog: None,
                        },
                    };
                    match c.call(&req) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            assert!(["EOVERFLOW", "ENODEV"].contains(&e.code.as_str()), "{e}");
                            refused += 1;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    applier.join().unwrap();
    let (mut ok, mut refused) = (1000u64, 0u64);
    for u in updaters {
        let (o, r) = u.join().unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok + refused, 6000);

    // The control socket still answers, and the dataplane still forwards.
    let mut c = Client::connect(&sock).unwrap();
    let s = c.call(&Request::Summary).unwrap();
    let plan_updates = 2; // the two entries created at start
    assert_eq!(
        s["map_updates_ok"].as_u64().unwrap() + s["map_updates_failed"].as_u64().unwrap(),
        6000 + plan_updates
    );
    assert_eq!(s["map_updates_failed"].as_u64().unwrap(), refused);
    c.call(&Request::MapApply {
        entries: entries(&[(1, 512), (2, 512)]),
    })
    .unwrap();
    assert_forwarding(&running);

    let summary = cpumapd::telemetry::Summary::at_shutdown(running).expect("shutdown");
    assert_exact(&summary);
    assert!(summary.rx > 0 && summary.delivered > 0, "{summary:#?}");
}

#[test]
fn hostile_control_input_neither_crashes_nor_stalls_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let (running, _server) = start(
        "--lcores 0@0,1@1 --vdev net_gen0,rate=300000 -- --qsize 512",
        &sock,
    );
    assert_forwarding(&running);

    // 10,000 random byte lines on one connection: each gets an error reply
    // (or, for the rare line that parses, a real one); none kills the server.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut c = Client::connect(&sock).unwrap();
    let mut errors = 0;
    for _ in 0..10_000 {
        let len = 1 + (rng.below(200)) as usize;
        let line: Vec<u8> = (0..len)
            .map(|_| rng.below(256) as u8)
            .filter(|&b| b != b'\n')
            .collect();
        if line.trim_ascii().is_empty() {
            continue; // blank lines get no reply, by design
        }
        let r = c.call_raw(&line).expect("a reply to every line");
        errors += (!r.ok) as u32;
    }
    assert!(errors > 9_000, "random bytes are refused ({errors})");
    assert_forwarding(&running);

    // Structured but wrong: every field type and command misuse.
    for (line, code) in [
        (r#"{"cmd":42}"#, "EINVAL"),
        (r#"[1,2,3]"#, "EINVAL"),
        (r#"{"cmd":"reboot"}"#, "EOPNOTSUPP"),
        (r#"{"cmd":"map_update","key":-1,"qsize":1}"#, "EINVAL"),
        (
            r#"{"cmd":"map_update","key":1,"qsize":1,"flags":"sometimes"}"#,
            "EINVAL",
        ),
        (
            r#"{"cmd":"map_update","key":1,"qsize":1,"extra":true}"#,
            "EINVAL",
        ),
        (r#"{"cmd":"map_apply","entries":"all"}"#, "EINVAL"),
        (r#"{"cmd":"stats","interval_ms":5}"#, "EINVAL"),
        (r#"{"cmd":"mode_set","mode":"warp"}"#, "EINVAL"),
    ] {
        let r = c.call_raw(line.as_bytes()).unwrap();
        assert_eq!(r.code.as_deref(), Some(code), "{line}: {r:?}");
    }

    // A line longer than 64 KiB: E2BIG, then the connection is closed.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = vec![b'x'; MAX_LINE + 10];
    let _ = s.write_all(&huge);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.contains("\"code\":\"E2BIG\""), "{reply}");

    // A vanished client (half a line, then gone) and many at once: the
    // ones over the limit get EBUSY, the others are served.
    {
        let mut v = UnixStream::connect(&sock).unwrap();
        v.write_all(br#"{"cmd":"map_du"#).unwrap();
    }
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..cpumapd::control::MAX_CLIENTS + 8 {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"{\"cmd\":\"mode_get\"}\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.contains("EBUSY") {
            busy += 1;
        } else {
            assert!(text.contains("\"ok\":true"), "{text}");
        }
        held.push(s);
    }
    // `c` holds one slot already.
    assert!(busy >= 8, "clients over the limit are refused ({busy})");
    drop(held);

    // Once they are gone, slots free up again.
    let t0 = Instant::now();
    loop {
        let mut fresh = Client::connect(&sock).unwrap();
        match fresh.call(&Request::ModeGet) {
            Ok(v) => {
                assert_eq!(v["mode"], "l4-hash");
                break;
            }
            Err(e) if e.message.contains("EBUSY") || e.code == "EBUSY" => {}
            Err(e) => panic!("{e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "slots never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_forwarding(&running);
    drop(c);

    // A client that sends requests but never reads its replies: the server's
    // write times out and it closes the connection; forwarding goes on.
    let slow = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
            // A small send buffer whatever net.core.wmem_default says (a
            // trafgen killed with SIGKILL leaves it at 4 MB, and then the
            // whole request fits in the kernel and nothing blocks).
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::SndBuf, &65536).unwrap();
            let req = b"{\"cmd\":\"map_dump\"}\n".repeat(200_000);
            let t0 = Instant::now();
            let r = s.write_all(&req);
            (r.is_err(), t0.elapsed())
        })
    };
    assert_forwarding(&running);
    let (closed, took) = slow.join().unwrap();
    assert!(
        closed,
        "the server closed the connection of a client that does not read"
    );
    assert!(
        took >= cpumapd::control::WRITE_TIMEOUT - Duration::from_millis(500),
        "closed after the write timeout, not before ({took:?})"
    );
    assert_forwarding(&running);

    let summary = cpumapd::telemetry::Summary::at_shutdown(running).expect("shutdown");
    assert_exact(&summary);
}

#[test]
fn mode_set_switches_the_rx_filter_while_traffic_flows() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl.sock");
    let (running, _server) = start(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,rate=300000 -- --mode no-touch",
        &sock,
    );
    let to = |t: usize| {
        cpumapd::telemetry::Summary::now(running.stats()).targets[t].enqueued
            + cpumapd::telemetry::Summary::now(running.stats()).targets[t].enqueue_drops
    };
    assert_forwarding(&running);
    // no-touch sends everything to the first target.
    assert_eq!(to(1), 0);
    let mut c = Client::connect(&sock).unwrap();
    c.call(&Request::ModeSet {
        mode: "round-robin".into(),
    })
    .unwrap();
    let t0 = Instant::now();
    while to(1) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "round-robin never reached lcore2"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    c.call(&Request::ModeSet {
        mode: "no-touch".into(),
    })
    .unwrap();
    // After the switch has surely happened (the RX counter moved twice),
    // lcore2 receives nothing more.
    assert_forwarding(&running);
    let settled = to(1);
    assert_forwarding(&running);
    assert_forwarding(&running);
    assert_eq!(to(1), settled, "no-touch again: nothing more to lcore2");
    let summary = cpumapd::telemetry::Summary::at_shutdown(running).expect("shutdown");
    assert_exact(&summary);
    assert_eq!(summary.mode, "no-touch");
}
