//! The hot paths allocate nothing: a counting allocator counts allocations
//! made on lcore threads (named `lcoreN`); while traffic flows, the count
//! must not move.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::args;
use cpumapd::config::Plan;
use cpumapd::lcore;

struct Counting;

static LCORE_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// 0 unknown, 1 lcore thread, 2 other thread, 3 being determined.
    static KIND: Cell<u8> = const { Cell::new(0) };
}

fn on_lcore() -> bool {
    KIND.with(|k| match k.get() {
        1 => true,
        0 => {
            k.set(3); // anything allocated while asking is not counted
            // Exactly `lcore<digits>` (the test thread is named after the
            // test, which also starts with "lcore").
            let is = std::thread::current()
                .name()
                .and_then(|n| n.strip_prefix("lcore"))
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            k.set(if is { 1 } else { 2 });
            is
        }
        _ => false,
    })
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if on_lcore() {
            LCORE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if on_lcore() {
            LCORE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// One pipeline at a time: the counter is process-wide.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn lcores_allocate_nothing_while_traffic_flows() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Generator -> l4-hash -> 2 targets, with Pass verdicts (none here),
    // enqueue drops (small rings), latency recording, stage timing and injected port
    // faults (duplicates come from the pool) exercised too.
    let plan = Plan::from_args(&args(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,flows=256,proto=mix,fault_drop=13,fault_truncate=7,fault_corrupt=5,fault_dup=3 \
         -- --cpu 1,2 --qsize 64 --remote-action pass --no-pin --latency --stage-cycles",
    ))
    .unwrap();
    let running = lcore::start(&plan).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = LCORE_ALLOCS.load(Ordering::Relaxed);
    let rx_before = cpumapd::telemetry::Summary::now(running.stats()).rx;
    std::thread::sleep(Duration::from_millis(1000));
    let after = LCORE_ALLOCS.load(Ordering::Relaxed);
    let rx_after = cpumapd::telemetry::Summary::now(running.stats()).rx;
    let s = cpumapd::telemetry::Summary::at_shutdown(running).unwrap();
    s.check_identities(true).unwrap();
    assert!(
        rx_after - rx_before > 10_000,
        "traffic flowed: {}",
        rx_after - rx_before
    );
    assert!(
        s.enqueue_drops > 0 && s.delivered > 0,
        "both paths taken: {s:?}"
    );
    assert!(s.ports[0].fault_duplicated > 0 && s.targets[0].latency.is_some());
    assert!(
        before > 0,
        "start-up allocations on lcores are seen (pools), so the counter works"
    );
    assert_eq!(
        after,
        before,
        "allocations on lcore threads while {} frames flowed",
        rx_after - rx_before
    );
}

#[test]
#[ignore = "needs clang and libbpf-dev to build bpf/: cargo test -- --include-ignored"]
fn ebpf_programs_allocate_nothing_per_frame_interpreted_or_jit() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The RX filter and the targets' remote program are eBPF (bpf/, built
    // with clang): still nothing allocated per frame.
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    for jit in ["", "--jit"] {
        let plan = Plan::from_args(&args(&format!(
            "--lcores 0@0,1@1,2@1 --vdev net_gen0,flows=256,proto=mix -- --cpu 1,2 --qsize 64 --prog {d}/ddos_filter.o --remote-action {d}/remote_half.o {jit} --no-pin --metrics off --control off",
            d = dir.display()
        )))
        .unwrap();
        let running = lcore::start(&plan).unwrap();
        // The first bursts create the targets' remote instances (cold).
        std::thread::sleep(Duration::from_millis(400));
        let before = LCORE_ALLOCS.load(Ordering::Relaxed);
        let rx_before = cpumapd::telemetry::Summary::now(running.stats()).rx;
        std::thread::sleep(Duration::from_millis(800));
        let after = LCORE_ALLOCS.load(Ordering::Relaxed);
        let rx_after = cpumapd::telemetry::Summary::now(running.stats()).rx;
        let s = cpumapd::telemetry::Summary::at_shutdown(running).unwrap();
        s.check_identities(true).unwrap();
        assert!(rx_after - rx_before > 10_000, "{jit}: traffic flowed");
        assert_eq!(
            after, before,
            "{jit}: allocations on lcore threads per frame"
        );
    }
}
