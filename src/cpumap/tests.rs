use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrayvec::ArrayVec;

use super::*;
use crate::counters::RxStats;
use crate::frame::Pool;
use crate::ids::LcoreId;

fn val(qsize: u32) -> EntryValue {
    EntryValue { qsize, prog: None }
}

fn map() -> Arc<CpuMap> {
    CpuMap::new(8, &[TargetId(1), TargetId(2)], 1).unwrap()
}

#[test]
fn update_follows_the_kernel_contract_in_order() {
    let m = map();
    // flags first, even with a bad key
    assert_eq!(m.update(99, val(20000), 3).unwrap_err().code(), "EINVAL");
    // then key
    assert_eq!(
        m.update(8, val(20000), BPF_NOEXIST).unwrap_err(),
        MapError::KeyTooBig {
            key: 8,
            max_entries: 8
        }
    );
    // then NOEXIST
    assert_eq!(
        m.update(1, val(20000), BPF_NOEXIST).unwrap_err(),
        MapError::Exists { key: 1 }
    );
    // then qsize
    let e = m.update(3, val(20000), BPF_ANY).unwrap_err();
    assert_eq!(e, MapError::QsizeOverflow { qsize: 20000 });
    assert_eq!(e.to_string(), "EOVERFLOW: qsize 20000 > 16384");
    // then the device, even for qsize 0 (delete)
    assert_eq!(m.update(3, val(0), BPF_ANY).unwrap_err().code(), "ENODEV");
    assert_eq!(
        m.update(0, val(64), BPF_EXIST).unwrap_err().code(),
        "ENODEV"
    );
    // valid: ANY creates, EXIST replaces (array semantics: no existence check)
    m.update(1, val(64), BPF_EXIST).unwrap();
    assert_eq!(m.lookup(1).unwrap().qsize, 64);
    m.update(1, val(MAX_QSIZE), BPF_ANY).unwrap();
    assert_eq!(m.lookup(1).unwrap().qsize, MAX_QSIZE);
    assert_eq!(m.update_counts(), (2, 6));
}

#[test]
fn qsize_zero_deletes_and_delete_checks_key_with_einval() {
    let m = map();
    m.update(2, val(128), BPF_ANY).unwrap();
    let id = m.lookup(2).unwrap().id;
    m.update(2, val(256), BPF_ANY).unwrap();
    assert_ne!(m.lookup(2).unwrap().id, id, "an update builds a new entry");
    m.update(2, val(0), BPF_ANY).unwrap();
    assert!(m.lookup(2).is_none());
    m.delete(2).unwrap();
    m.update(2, val(1), BPF_ANY).unwrap();
    m.delete(2).unwrap();
    assert!(m.lookup(2).is_none());
    assert_eq!(m.delete(8).unwrap_err().code(), "EINVAL");
    assert!(m.lookup(8).is_none());
    assert!(m.lookup(u32::MAX).is_none());
}

#[test]
fn next_key_walks_like_an_array() {
    let m = map();
    assert_eq!(m.next_key(None), Ok(0));
    assert_eq!(m.next_key(Some(8)), Ok(0));
    assert_eq!(m.next_key(Some(u32::MAX)), Ok(0));
    assert_eq!(m.next_key(Some(0)), Ok(1));
    assert_eq!(m.next_key(Some(6)), Ok(7));
    assert_eq!(m.next_key(Some(7)).unwrap_err().code(), "ENOENT");
    let mut walk = vec![];
    let mut k = None;
    while let Ok(n) = m.next_key(k) {
        walk.push(n);
        k = Some(n);
    }
    assert_eq!(walk, (0..8).collect::<Vec<_>>());
}

#[test]
fn targets_outside_the_map_are_refused_at_creation() {
    assert_eq!(
        CpuMap::new(2, &[TargetId(5)], 1).unwrap_err().code(),
        "E2BIG"
    );
    assert_eq!(CpuMap::new(0, &[], 1).unwrap_err().code(), "EINVAL");
}

#[test]
fn reader_slots_are_bounded() {
    let m = map();
    let _r = m.reader().unwrap();
    assert!(m.reader().is_err());
}

#[test]
fn flush_tail_drops_what_does_not_fit_and_counts_it() {
    let m = map();
    m.update(1, val(5), BPF_ANY).unwrap();
    let mut pool = Pool::new("t", 64, 64, 64).unwrap();
    let mut reader = m.reader().unwrap();
    reader.refresh();
    let stats = RxStats::new(LcoreId(0), 8);
    let mut bq = BulkQueues::new(8, CPU_MAP_BULK_SIZE);
    for _ in 0..12 {
        let f = pool.alloc().unwrap();
        bq.enqueue(&reader, TargetId(1), f, &stats, &mut pool)
            .unwrap();
    }
    // The 9th enqueue flushed the first 8: 5 fit, 3 dropped.
    let c = &stats.enqueue[1];
    assert_eq!(
        (c.enqueued.get(), c.drops.get(), c.flushes.get()),
        (5, 3, 1)
    );
    bq.flush(&reader, &stats, &mut pool);
    assert_eq!(
        (c.enqueued.get(), c.drops.get(), c.flushes.get()),
        (5, 7, 2)
    );
    assert!(bq.is_empty());
    // No entry for key 2: the frame comes back.
    let f = pool.alloc().unwrap();
    assert!(
        bq.enqueue(&reader, TargetId(2), f, &stats, &mut pool)
            .is_err()
    );
    let mut tv = m.target_view(TargetId(1));
    tv.refresh();
    let mut out = ArrayVec::<Frame, 32>::new();
    assert_eq!(tv.poll(&mut out, 32).count, 5);
    drop(out);
    assert_eq!(
        pool.in_use(),
        0,
        "every frame went back: 5 dequeued, 7 dropped, 1 returned"
    );
}

/// An RX thread enqueues while the control thread replaces and deletes the
/// entry; a target thread drains. Every frame is either dequeued by the
/// target or counted as an enqueue drop or a miss, and the pool is full at
/// the end: no frame lost in a swap.
#[test]
fn swaps_under_traffic_lose_nothing() {
    let m = CpuMap::new(4, &[TargetId(1)], 1).unwrap();
    m.update(1, val(64), BPF_ANY).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rx_done = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(RxStats::new(LcoreId(0), 4));

    let rx = {
        let (m, stop, stats, rx_done) = (m.clone(), stop.clone(), stats.clone(), rx_done.clone());
        std::thread::spawn(move || {
            let mut pool = Pool::new("rx", 1024, 64, 64).unwrap();
            let mut reader = m.reader().unwrap();
            let mut bq = BulkQueues::new(4, CPU_MAP_BULK_SIZE);
            let (mut sent, mut missed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                reader.refresh();
                for _ in 0..20 {
                    let Some(f) = pool.alloc() else { break };
                    sent += 1;
                    if bq
                        .enqueue(&reader, TargetId(1), f, &stats, &mut pool)
                        .is_err()
                    {
                        missed += 1;
                    }
                }
                bq.flush(&reader, &stats, &mut pool);
            }
            reader.offline();
            rx_done.store(true, Ordering::Release);
            (pool, sent, missed)
        })
    };
    let target = {
        let (m, rx_done) = (m.clone(), rx_done.clone());
        std::thread::spawn(move || {
            let mut tv = m.target_view(TargetId(1));
            let mut got = 0u64;
            let mut out = ArrayVec::<Frame, 32>::new();
            loop {
                let done = rx_done.load(Ordering::Acquire);
                tv.refresh();
                let n = tv.poll(&mut out, 32).count;
                got += n as u64;
                out.clear();
                if n == 0 {
                    if done && tv.is_empty() {
                        tv.refresh();
                        if tv.is_empty() {
                            break;
                        }
                    }
                    std::thread::yield_now();
                }
            }
            got
        })
    };
    // Swap while traffic flows: wait for the RX thread's first frames.
    let t0 = std::time::Instant::now();
    while stats.enqueue[1].enqueued.get() == 0 && t0.elapsed().as_secs() < 10 {
        std::thread::yield_now();
    }
    for i in 0..2000u32 {
        match i % 4 {
            0 => m.update(1, val(8 + i % 100), BPF_ANY).unwrap(),
            1 => m.delete(1).unwrap(),
            2 => m.update(1, val(0), BPF_ANY).unwrap(),
            _ => m.update(1, val(512), BPF_EXIST).unwrap(),
        }
    }
    m.update(1, val(64), BPF_ANY).unwrap();
    stop.store(true, Ordering::Relaxed);
    let (pool, sent, missed) = rx.join().unwrap();
    let got = target.join().unwrap();
    let c = &stats.enqueue[1];
    assert!(sent > 0);
    assert_eq!(
        sent,
        c.enqueued.get() + c.drops.get() + missed,
        "redirect = enqueued + drops (+ misses)"
    );
    assert_eq!(
        got,
        c.enqueued.get(),
        "every enqueued frame reached the target"
    );
    assert_eq!(pool.in_use(), 0, "pool full again");
}

fn map3() -> Arc<CpuMap> {
    CpuMap::new(8, &[TargetId(1), TargetId(2), TargetId(3)], 1).unwrap()
}

#[test]
fn apply_switches_all_keys_or_none_and_names_the_bad_key() {
    let m = map3();
    m.update(1, val(64), BPF_ANY).unwrap();
    m.update(2, val(64), BPF_ANY).unwrap();
    let id1 = m.lookup(1).unwrap().id;
    let id2 = m.lookup(2).unwrap().id;

    // Each refusal leaves the map exactly as it was.
    let refusals: [(&MapSpec, &str, u32); 4] = [
        (&[(3, val(64)), (9, val(64))], "E2BIG", 9),
        (&[(3, val(64)), (2, val(20000))], "EOVERFLOW", 2),
        (&[(3, val(64)), (4, val(64))], "ENODEV", 4),
        (&[(3, val(64)), (3, val(32))], "EINVAL", 3),
    ];
    for (spec, code, key) in refusals {
        let e = m.apply(spec).unwrap_err();
        assert_eq!((e.error.code(), e.key), (code, key), "{e}");
        assert!(
            e.to_string().starts_with(&format!("key {key}: {code}")),
            "{e}"
        );
        assert!(m.lookup(3).is_none(), "{code}: nothing may change");
        assert_eq!(m.lookup(1).unwrap().id, id1);
        assert_eq!(m.lookup(2).unwrap().id, id2);
    }

    // Key 1 unchanged keeps its entry, 2 is resized, 3 created; then a map
    // without 1 and 2 deletes them; qsize 0 in a spec means absent.
    let r = m
        .apply(&[(1, val(64)), (2, val(128)), (3, val(32))])
        .unwrap();
    assert_eq!(
        r,
        ApplyReport {
            created: 1,
            replaced: 1,
            deleted: 0,
            unchanged: 1
        }
    );
    assert_eq!(m.lookup(1).unwrap().id, id1);
    assert_ne!(m.lookup(2).unwrap().id, id2);
    assert_eq!(m.lookup(2).unwrap().qsize, 128);
    let r = m.apply(&[(3, val(32)), (2, val(0))]).unwrap();
    assert_eq!((r.deleted, r.unchanged), (2, 1));
    assert_eq!(m.dump().iter().map(|e| e.key).collect::<Vec<_>>(), vec![3]);
    assert_eq!(m.update_counts(), (4, 4));
}

#[test]
fn a_reader_sees_a_whole_applied_map_or_the_previous_one() {
    let m = map3();
    let a: &[(u32, EntryValue)] = &[(1, val(16)), (2, val(16))];
    let b: &[(u32, EntryValue)] = &[(3, val(16))];
    m.apply(a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let reader = {
        let (m, stop, seen) = (m.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut r = m.reader().unwrap();
            while !stop.load(Ordering::Relaxed) {
                r.refresh();
                let has = |k| r.entry(TargetId(k)).is_some();
                let which = match (has(1), has(2), has(3)) {
                    (true, true, false) => 0,
                    (false, false, true) => 1,
                    other => panic!("half-applied map seen: keys 1,2,3 present = {other:?}"),
                };
                seen[which].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // At least 2000 switches, and on until the reader has seen both maps.
    let mut i = 0u32;
    while i < 2000 || seen.iter().any(|s| s.load(Ordering::Relaxed) == 0) {
        assert!(i < 1_000_000, "reader never saw both maps");
        m.apply(if i.is_multiple_of(2) { b } else { a }).unwrap();
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
}
