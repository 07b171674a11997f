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

/// The sleep/wake handshake: an RX thread flushes frames into the target's
/// ring in two polls while the target, finding its ring empty, announces a
/// sleep, re-checks, and blocks until woken. A lost wake-up leaves the
/// target blocked with a frame in its ring: the model then never ends
/// (loom reports it). Checks: every frame is dequeued, the pool is full.
fn sleep_wake_model(frames: u32) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let map = CpuMap::new(2, &[TargetId(1)], 1).unwrap();
        map.update(1, value(4), BPF_ANY).unwrap();
        let stats = Arc::new(RxStats::new(LcoreId(0), 2));
        let rx = {
            let (map, stats) = (map.clone(), stats.clone());
            thread::spawn(move || {
                let mut pool = Pool::new("rx", 4, 64, 64).unwrap();
                let mut reader = map.reader().unwrap();
                let mut bq = BulkQueues::new(2, CPU_MAP_BULK_SIZE);
                for _ in 0..frames {
                    reader.refresh();
                    let f = pool.alloc().unwrap();
                    bq.enqueue(&reader, TargetId(1), f, &stats, &mut pool)
                        .unwrap();
                    bq.flush(&reader, &stats, &mut pool);
                }
                reader.offline();
                pool
            })
        };
        let target = {
            let map = map.clone();
            thread::spawn(move || {
                let mut tv = map.target_view(TargetId(1));
                let mut out = ArrayVec::<Frame, 4>::new();
                let mut got = 0u32;
                let mut sleeps = 0u32;
                while got < frames {
                    tv.refresh();
                    let n = tv.poll(&mut out, 4).count;
                    got += n as u32;
                    out.clear();
                    if n > 0 {
                        continue;
                    }
                    let w = tv.waker().clone();
                    w.prepare_sleep();
                    if !tv.is_empty() || tv.changed() {
                        w.cancel();
                        continue;
                    }
                    // Blocked in poll(2) on the eventfd.
                    w.block();
                    w.woken();
                    sleeps += 1;
                }
                (got, sleeps)
            })
        };
        let pool = rx.join().unwrap();
        let (got, _sleeps) = target.join().unwrap();
        assert_eq!(got, frames, "every frame reached the target");
        assert_eq!(stats.enqueue[1].enqueued.get(), frames as u64);
        assert_eq!(pool.in_use(), 0, "pool full");
    });
}

#[test]
fn sleep_wake_one_flush() {
    sleep_wake_model(1);
}

#[test]
fn sleep_wake_two_flushes() {
    sleep_wake_model(2);
}

/// The handshake alone, over a counter standing in for a ring.
#[test]
fn sleep_wake_handshake_alone() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        use loom::sync::atomic::AtomicU32 as LU32;
        let w = Arc::new(Waker::new().unwrap());
        let items = Arc::new(LU32::new(0));
        let rx = {
            let (w, items) = (w.clone(), items.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    items.fetch_add(1, LOrdering::Release);
                    w.notify();
                }
            })
        };
        let mut got = 0;
        while got < 2 {
            let n = items.swap(0, LOrdering::Acquire);
            got += n;
            if n > 0 {
                continue;
            }
            w.prepare_sleep();
            if items.load(LOrdering::Acquire) > 0 {
                w.cancel();
                continue;
            }
            w.block();
            w.woken();
        }
        rx.join().unwrap();
    });
}

/// The handshake over the real ring.
#[test]
fn sleep_wake_handshake_ring() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let w = Arc::new(Waker::new().unwrap());
        let (p, mut c) = crate::ring::mpsc::<u32>(4).unwrap();
        let rx = {
            let w = w.clone();
            thread::spawn(move || {
                for i in 0..2 {
                    let mut one = ArrayVec::<u32, 1>::new();
                    one.push(i);
                    assert_eq!(p.enqueue_burst(&mut one), 1);
                    w.notify();
                }
            })
        };
        let mut got = 0;
        let mut out = ArrayVec::<u32, 4>::new();
        while got < 2 {
            let n = c.dequeue_up_to(&mut out, 4);
            out.clear();
            got += n;
            if n > 0 {
                continue;
            }
            w.prepare_sleep();
            if !c.is_empty() {
                w.cancel();
                continue;
            }
            w.block();
            w.woken();
        }
        rx.join().unwrap();
    });
}
