//! Model checking of the entry swap: `RUSTFLAGS="--cfg loom" cargo test
//! --release --lib cpumap::loom_tests`.
//!
//! The real CpuMap, MapReader, BulkQueues, TargetView and ring run under
//! loom (map slots are a loom mutex here instead of arc-swap). An RX thread
//! sends two frames in two polls while the control thread replaces the
//! target's entry and the target drains. Checks: every frame is dequeued by
//! the target or counted (enqueue drop, redirect miss), the pool is full at
//! the end, and the replaced entry is let go once drained.

use std::sync::Arc;

use arrayvec::ArrayVec;
use loom::sync::atomic::{AtomicBool, Ordering as LOrdering};
use loom::thread;

use super::*;
use crate::counters::RxStats;
use crate::frame::Pool;
use crate::ids::LcoreId;

fn value(qsize: u32) -> EntryValue {
    EntryValue { qsize, prog: None }
}

fn swap_model(second: Option<u32>) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let map = CpuMap::new(2, &[TargetId(1)], 1).unwrap();
        map.update(1, value(2), BPF_ANY).unwrap();
        let rx_done = Arc::new(AtomicBool::new(false));
        // As in Running::shutdown: targets stop only after RX and the control
        // plane have.
        let ctl_done = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RxStats::new(LcoreId(0), 2));

        let rx = {
            let (map, rx_done, stats) = (map.clone(), rx_done.clone(), stats.clone());
            thread::spawn(move || {
                let mut pool = Pool::new("rx", 4, 64, 64).unwrap();
                let mut reader = map.reader().unwrap();
                let mut bq = BulkQueues::new(2, CPU_MAP_BULK_SIZE);
                let (mut sent, mut missed) = (0u64, 0u64);
                for _ in 0..2 {
                    reader.refresh();
                    let f = pool.alloc().unwrap();
                    sent += 1;
                    if let Err(f) = bq.enqueue(&reader, TargetId(1), f, &stats, &mut pool) {
                        missed += 1;
                        drop(f);
                    }
                    bq.flush(&reader, &stats, &mut pool);
                }
                reader.offline();
                rx_done.store(true, LOrdering::Release);
                (pool, sent, missed)
            })
        };
        let target = {
            let (map, rx_done, ctl_done) = (map.clone(), rx_done.clone(), ctl_done.clone());
            thread::spawn(move || {
                let mut tv = map.target_view(TargetId(1));
                let mut got = 0u64;
                let mut out = ArrayVec::<Frame, 4>::new();
                loop {
                    let done =
                        rx_done.load(LOrdering::Acquire) && ctl_done.load(LOrdering::Acquire);
                    tv.refresh();
                    let n = tv.poll(&mut out, 4).count;
                    got += n as u64;
                    out.clear();
                    if n == 0 {
                        if done {
                            tv.adopt_all();
                            if tv.is_empty() {
                                break;
                            }
                        } else {
                            thread::yield_now();
                        }
                    }
                }
                // One more poll lets go of every drained, retired entry.
                let n = tv.poll(&mut out, 4).count;
                (got + n as u64, tv.held())
            })
        };
        // The control plane: replace (or delete) while traffic flows.
        match second {
            Some(q) => map.update(1, value(q), BPF_ANY).unwrap(),
            None => map.delete(1).unwrap(),
        }
        ctl_done.store(true, LOrdering::Release);
        let (pool, sent, missed) = rx.join().unwrap();
        let (got, held) = target.join().unwrap();
        let c = &stats.enqueue[1];
        assert_eq!(
            sent,
            c.enqueued.get() + c.drops.get() + missed,
            "redirect = enqueued + drops (+ misses)"
        );
        assert_eq!(
            got,
            c.enqueued.get(),
            "every enqueued frame was dequeued by the target"
        );
        assert_eq!(pool.in_use(), 0, "pool full");
        let live = usize::from(second.is_some());
        assert_eq!(
            held, live,
            "replaced entries were let go; only the live one is held"
        );
    });
}

#[test]
fn replace_under_traffic() {
    swap_model(Some(4));
}

#[test]
fn delete_under_traffic() {
    swap_model(None);
}
