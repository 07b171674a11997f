//! A pipeline that fails while starting reports the error and leaves no
//! lcore thread behind.

mod common;

use common::args;
use cpumapd::config::Plan;
use cpumapd::lcore;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One test: the thread count is per process, and tests run in parallel.
#[test]
fn failed_starts_leave_no_thread_behind() {
    a_sink_that_cannot_open_fails_start_cleanly();
    a_pool_that_cannot_be_allocated_fails_start_cleanly();
}

fn a_sink_that_cannot_open_fails_start_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("out.pcap");
    // lcore2's capture file cannot be created: a directory is in the way.
    std::fs::create_dir(dir.path().join("out-lcore2.pcap")).unwrap();
    let plan = Plan::from_args(&args(&format!(
        "--lcores 0@0,1@0,2@0 --vdev net_gen0 -- --cpu 1,2 --exception pcap:{} --no-pin",
        base.display()
    )))
    .unwrap();
    let before = threads();
    let err = lcore::start(&plan)
        .err()
        .expect("start must fail")
        .to_string();
    assert!(err.contains("out-lcore2.pcap"), "{err}");
    assert_eq!(threads(), before, "no lcore thread left running");
}

fn a_pool_that_cannot_be_allocated_fails_start_cleanly() {
    // 16M buffers of 64 KiB: far more than the machine has.
    let mut plan = Plan::from_args(&args(
        "--lcores 0@0,1@0 --vdev net_gen0 -- --cpu 1 --pool-size 16000000 --no-pin",
    ))
    .unwrap();
    plan.data_room = u16::MAX - plan.headroom;
    let before = threads();
    let err = lcore::start(&plan)
        .err()
        .expect("start must fail")
        .to_string();
    assert!(err.contains("cannot allocate"), "{err}");
    assert_eq!(threads(), before, "no lcore thread left running");
}
