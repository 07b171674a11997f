//! Fault injection and overload: every injected refusal is counted under
//! its reason, the identity holds, pools come back full, and a slow exception
//! path only costs counted tail drops, never RX progress or buffers.

mod common;

use common::run_to_end;

/// One pipeline at a time: each spins lcores on both CPUs of a small
/// machine, and these tests reason about who keeps up.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many of frames 1..=n frame suffer each fault, as FaultSpec defines.
fn expected(n: u64, busy: u64, down: u64, error: u64) -> (u64, u64, u64) {
    let (mut b, mut d, mut e) = (0, 0, 0);
    for i in 1..=n {
        if i % busy == 0 {
            b += 1;
        } else if i % down == 0 {
            d += 1;
        } else if i % error == 0 {
            e += 1;
        }
    }
    (b, d, e)
}

#[test]
fn injected_exception_faults_are_counted_under_their_reasons() {
    let _g = serial();
    // Every frame fits in the rings (and the pool), so however the targets
    // are scheduled no tail drop can hide a fault.
    let s = run_to_end(
        "--lcores 0@0,1@0,2@0 --vdev net_gen0,count=24000,flows=64 -- --rx (0,0,0) --cpu 1,2 \
         --qsize 16384 --pool-size 32768 --exception fault:busy=7,down=11,error=13 --no-pin",
    );
    s.check_identities(true).unwrap();
    assert_eq!(s.rx, 24_000);
    assert_eq!(
        s.enqueue_drops, 0,
        "rings large enough: every fault is at the exception path"
    );
    let mut injected = 0;
    for t in &s.targets {
        let (b, d, e) = expected(t.processed, 7, 11, 13);
        assert_eq!(t.drop_reasons["exception_busy"], b, "{}", t.target);
        assert_eq!(t.drop_reasons["exception_down"], d, "{}", t.target);
        assert_eq!(t.drop_reasons["exception_error"], e, "{}", t.target);
        assert_eq!(t.delivered, t.processed - b - d - e);
        assert!(t.processed > 0);
        injected += b + d + e;
    }
    assert_eq!(s.target_drops, injected);
    assert_eq!(s.delivered + s.target_drops, s.target_processed);
}

#[test]
fn a_slow_exception_path_costs_counted_tail_drops_not_rx_or_buffers() {
    let _g = serial();
    // Targets sleep 200 us per burst: far slower than RX. Small rings fill.
    let s = run_to_end(
        "--lcores 0@0,1@0 --vdev net_gen0,count=300000,flows=64 -- --rx (0,0,0) --cpu 1 \
         --qsize 64 --pool-size 1024 --exception fault:delay_us=200 --no-pin",
    );
    s.check_identities(true).unwrap();
    // RX took every frame the source had; the overflow is counted where it
    // happened (enqueue tail drops), and every buffer is home.
    assert_eq!(s.rx, 300_000);
    assert!(s.enqueue_drops > 0, "{s:#?}");
    assert_eq!(s.redirect, s.enqueued + s.enqueue_drops);
    assert_eq!(s.pool_in_use, 0);
    assert!(s.pool_capacity <= 1024 + 1024, "pool stays bounded");
    assert_eq!(s.delivered, s.target_processed);
}

#[test]
fn bad_fault_specs_get_a_clear_error() {
    for (bad, want) in [
        ("fault:busy", "'busy' is not key=value"),
        ("fault:busy=x", "busy=x is not a number"),
        (
            "fault:often=3",
            "unknown option 'often' (known: busy, down, error, delay_us, lcore)",
        ),
        (
            "fault:delay_us=99999999",
            "delay_us=99999999 is out of range",
        ),
    ] {
        let args: Vec<String> = format!("--lcores 0@0,1@0 --vdev net_gen0 -- --exception {bad}")
            .split_whitespace()
            .map(String::from)
            .collect();
        let e = cpumapd::config::Plan::from_args(&args)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want) && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn one_stalled_target_costs_its_own_tail_drops_and_nothing_else() {
    let _g = serial();
    // Target lcore1's exception path sleeps 20 ms per burst of at most 32
    // (stalled: ~1,600 frames/s against the 100,000/s it is sent);
    // lcore2's is healthy. Round-robin gives each exactly half. The rings
    // hold 2048 frames, 20 ms at 100 kpps: this VM's host deschedules a
    // vCPU for up to ~8 ms at times (docs/PERFORMANCE.md, latency), which
    // a 256-slot ring (2.6 ms) did not ride out.
    let n = 100_000;
    let s = run_to_end(&format!(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,count={n},rate=200000,flows=64 -- --rx (0,0,0) --cpu 1,2 \
         --mode round-robin --qsize 2048 --pool-size 8192 --exception fault:delay_us=20000,lcore=1 --no-pin"
    ));
    s.check_identities(true).unwrap();
    assert_eq!(s.rx, n, "RX took every frame: the stall did not reach it");
    let t = |id: u32| s.targets.iter().find(|t| t.target.0 == id).unwrap();
    let (stalled, healthy) = (t(1), t(2));
    // The healthy target keeps up (a few tail drops when the scheduler
    // parks it are counted, as always: unpinned, three lcores share two
    // vCPUs; one CI run saw 1.1% of its half); the stalled one loses almost
    // all of its half, counted at its own ring.
    assert_eq!(healthy.enqueued + healthy.enqueue_drops, n / 2);
    assert!(
        healthy.enqueue_drops <= n / 2 / 25,
        "the healthy target kept up: {healthy:?}"
    );
    assert_eq!(healthy.delivered, healthy.processed);
    assert_eq!(stalled.enqueued + stalled.enqueue_drops, n / 2);
    assert!(
        stalled.enqueue_drops >= n / 2 * 9 / 10,
        "the stalled target's ring overflowed, counted there: {stalled:?}"
    );
    assert_eq!(
        stalled.delivered, stalled.processed,
        "what it took, it delivered"
    );
    assert_eq!(s.pool_in_use, 0);
}

/// Frames 1..=n of one queue: (dropped, truncated, corrupted, duplicated),
/// as port::fault defines them.
fn port_expected(n: u64, drop: u64, trunc: u64, corrupt: u64, dup: u64) -> [u64; 4] {
    let mut e = [0; 4];
    for i in 1..=n {
        if i % drop == 0 {
            e[0] += 1;
            continue;
        }
        if i % trunc == 0 {
            e[1] += 1;
        } else if i % corrupt == 0 {
            e[2] += 1;
        }
        if i % dup == 0 {
            e[3] += 1;
        }
    }
    e
}

#[test]
fn injected_port_faults_are_counted_and_the_rx_lcore_sees_exactly_the_rest() {
    let _g = serial();
    // Real captures (many malformed) and the generator, each with every
    // port fault at once; truncated and corrupted frames go through the
    // filter like any malformed frame.
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("all.pcap");
    // Without the empty records: an empty frame cannot be truncated or
    // corrupted, so the injector leaves it alone and the arithmetic below
    // would not hold.
    let mut records = common::all_shared_records();
    records.retain(|r| !r.is_empty());
    common::write_pcap(&pcap, &records);
    let n = records.len() as u64;
    for (src, n) in [
        (format!("net_pcap0,rx_pcap={}", pcap.display()), n),
        ("net_gen0,count=200000,flows=256".to_string(), 200_000),
    ] {
        for mode in ["l4-hash", "touch", "l4-filter"] {
            let s = run_to_end(&format!(
                "--lcores 0@0,1@1,2@1 --vdev {src},fault_drop=7,fault_truncate=5,fault_corrupt=3,fault_dup=11 \
                 -- --mode {mode} --cpu 1,2 --qsize 16384 --metrics off --control off"
            ));
            s.check_identities(true).unwrap();
            let p = &s.ports[0];
            // The pcap port refuses records larger than a buffer (ierrors);
            // the faults count over the frames it delivered.
            assert_eq!(
                p.ipackets + p.ierrors,
                n,
                "{src} {mode}: every record accounted"
            );
            let want = port_expected(p.ipackets, 7, 5, 3, 11);
            assert_eq!(
                [
                    p.fault_dropped,
                    p.fault_truncated,
                    p.fault_corrupted,
                    p.fault_duplicated
                ],
                want,
                "{src} {mode}"
            );
            assert_eq!(
                s.rx,
                p.ipackets - p.fault_dropped + p.fault_duplicated,
                "{src} {mode}: the RX lcore saw what the faults left, copies included"
            );
            assert_eq!(s.pool_in_use, 0, "{src} {mode}");
        }
    }
}

#[test]
fn a_delaying_port_slows_rx_and_loses_nothing() {
    let _g = serial();
    let s = run_to_end(
        "--lcores 0@0,1@1 --vdev net_gen0,count=20000,fault_delay_us=200 -- --cpu 1 \
         --metrics off --control off",
    );
    s.check_identities(true).unwrap();
    assert_eq!(s.rx, 20_000);
    assert!(s.ports[0].fault_delayed > 0);
    // At most a burst of 32 per 200 us poll: at least 625 polls' worth of time.
    assert!(s.duration_s >= 20_000.0 / 32.0 * 200e-6, "{}", s.duration_s);
    for bad in ["fault_drop=x", "fault_delay_us=5000000", "fault_dupe=3"] {
        let e = cpumapd::config::Plan::from_args(&common::args(&format!(
            "--lcores 0@0,1@1 --vdev net_gen0,{bad} --"
        )))
        .unwrap_err()
        .to_string();
        let key = bad.split('=').next().unwrap();
        assert!(e.contains(key), "{bad}: {e}");
    }
}
