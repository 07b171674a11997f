//! Live reconfiguration: while a generator runs on two RX lcores into two
//! targets, the control thread makes 10,000 map changes (qsize changes,
//! deletes, qsize-0 deletes, EXIST replacements, and refused updates).
//! Afterwards every frame is accounted for exactly and every pool is full.

mod common;

use std::time::{Duration, Instant};

use common::args;
use cpumapd::config::Plan;
use cpumapd::cpumap::{BPF_ANY, BPF_EXIST, BPF_NOEXIST, EntryValue};
use cpumapd::filter::RemoteProg;
use cpumapd::lcore;

#[test]
fn ten_thousand_map_changes_under_traffic_lose_nothing() {
    let plan = Plan::from_args(&args(
        "--lcores 0@0,1@1,2@0,3@1 --vdev net_gen0,flows=128 -- --rx (0,0,0),(0,1,1) --cpu 2,3 --qsize 256 --mode l4-hash",
    ))
    .unwrap();
    let running = lcore::start(&plan).unwrap();
    let map = running.map().clone();
    let mut seed = 0x9e37_79b9u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let (mut ok, mut refused) = (0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..10_000u32 {
        if i % 16 == 0 {
            // Spread the changes over live traffic instead of one burst.
            std::thread::sleep(Duration::from_micros(50));
        }
        let key = 2 + (rnd() % 2);
        let r = match i % 8 {
            0..=2 => map.update(
                key,
                EntryValue {
                    qsize: 1 + rnd() % 4096,
                    prog: None,
                },
                BPF_ANY,
            ),
            3 => map.update(
                key,
                EntryValue {
                    qsize: 64,
                    prog: Some(RemoteProg::Pass),
                },
                BPF_EXIST,
            ),
            4 => map.delete(key),
            5 => map.update(
                key,
                EntryValue {
                    qsize: 0,
                    prog: None,
                },
                BPF_ANY,
            ),
            6 => map.update(
                key,
                EntryValue {
                    qsize: 20_000,
                    prog: None,
                },
                BPF_ANY,
            ),
            _ => map.update(
                key,
                EntryValue {
                    qsize: 8,
                    prog: None,
                },
                BPF_NOEXIST,
            ),
        };
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(matches!(e.code(), "EOVERFLOW" | "EEXIST"), "unexpected {e}");
                refused += 1;
            }
        }
    }
    let churn = t0.elapsed();
    // Leave both targets with an entry and let traffic settle a moment.
    for key in [2, 3] {
        map.update(
            key,
            EntryValue {
                qsize: 256,
                prog: None,
            },
            BPF_ANY,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let s = cpumapd::telemetry::Summary::at_shutdown(running).unwrap();
    eprintln!(
        "10,000 map changes in {churn:?}; rx {} redirect {} miss {}",
        s.rx, s.redirect, s.redirect_miss
    );

    s.check_identities(true).unwrap();
    assert_eq!((ok, refused), (7_500, 2_500));
    assert_eq!(
        s.map_updates_ok,
        ok + 2 + 2,
        "plus the 2 entries at start and the 2 at the end"
    );
    assert_eq!(s.map_updates_failed, refused);
    assert!(s.rx > 0 && s.delivered > 0, "traffic flowed: {s:?}");
    assert!(
        s.redirect_miss > 0,
        "deletes made some redirects miss (counted as aborted)"
    );
    assert_eq!(s.aborted, s.redirect_miss);
    assert_eq!(s.pool_in_use, 0);
    assert_eq!(s.in_flight, 0);
}
