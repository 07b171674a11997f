use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrayvec::ArrayVec;
use proptest::prelude::*;

use super::*;

#[test]
fn capacity_is_exact_not_rounded() {
    let (p, mut c) = mpsc::<u32>(5).unwrap();
    let mut src: ArrayVec<u32, 8> = (0..8).collect();
    assert_eq!(
        p.enqueue_burst(&mut src),
        5,
        "ring of 5 takes 5 even though storage is 8"
    );
    assert_eq!(src.as_slice(), &[5, 6, 7], "the rest stays with the caller");
    assert_eq!(p.len(), 5);
    let mut out = ArrayVec::<u32, 8>::new();
    assert_eq!(c.dequeue_burst(&mut out), 5);
    assert_eq!(out.as_slice(), &[0, 1, 2, 3, 4]);
}

#[test]
fn bulk_is_all_or_nothing() {
    let (p, mut c) = mpsc::<u32>(4).unwrap();
    let mut a: ArrayVec<u32, 8> = (0..3).collect();
    assert!(p.enqueue_bulk(&mut a));
    assert!(a.is_empty());
    let mut b: ArrayVec<u32, 8> = (10..12).collect();
    assert!(!p.enqueue_bulk(&mut b), "2 do not fit in the 1 free slot");
    assert_eq!(b.as_slice(), &[10, 11], "nothing was taken");
    let mut out = ArrayVec::<u32, 8>::new();
    assert_eq!(c.dequeue_up_to(&mut out, 2), 2);
    assert!(p.enqueue_bulk(&mut b));
    out.clear();
    c.dequeue_burst(&mut out);
    assert_eq!(out.as_slice(), &[2, 10, 11]);
}

#[test]
fn indices_wrap_around_u32() {
    // Drive the free-running indices through many laps of a tiny ring.
    let (mut p, mut c) = spsc::<u64>(3).unwrap();
    let mut next = 0u64;
    let mut expect = 0u64;
    for _ in 0..if cfg!(miri) { 300 } else { 10_000 } {
        let mut src: ArrayVec<u64, 4> = (next..next + 2).collect();
        let k = p.enqueue_burst(&mut src) as u64;
        next += k;
        let mut out = ArrayVec::<u64, 4>::new();
        c.dequeue_burst(&mut out);
        for v in out {
            assert_eq!(v, expect);
            expect += 1;
        }
    }
    assert!(expect > if cfg!(miri) { 250 } else { 9_000 });
}

#[test]
fn rejects_bad_sizes() {
    assert_eq!(mpsc::<u8>(0).err(), Some(RingError::Empty));
    assert_eq!(
        mpsc::<u8>(MAX_RING_SIZE + 1).err(),
        Some(RingError::TooLarge(MAX_RING_SIZE + 1))
    );
}

/// Counts drops so the test can see the ring frees what it still holds.
struct Tracked(Arc<AtomicUsize>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn dropping_the_ring_drops_items_left_in_it_exactly_once() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let (p, mut c) = mpsc::<Tracked>(8).unwrap();
    let mut src: ArrayVec<Tracked, 8> = (0..6).map(|_| Tracked(dropped.clone())).collect();
    assert_eq!(p.enqueue_burst(&mut src), 6);
    let mut out = ArrayVec::<Tracked, 8>::new();
    c.dequeue_up_to(&mut out, 2);
    drop(out);
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    drop(p);
    drop(c);
    assert_eq!(dropped.load(Ordering::Relaxed), 6);
}

#[test]
fn two_producers_one_consumer_across_threads_keep_per_producer_order() {
    const PER: u64 = if cfg!(miri) { 500 } else { 200_000 };
    let (p, mut c) = mpsc::<u64>(64).unwrap();
    let handles: Vec<_> = (0..2u64)
        .map(|id| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < PER {
                    let mut src: ArrayVec<u64, 8> =
                        (i..(i + 8).min(PER)).map(|v| (id << 32) | v).collect();
                    while !src.is_empty() {
                        let k = p.enqueue_burst(&mut src) as u64;
                        i += k;
                        if k == 0 {
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; 2];
    let mut got = 0;
    while got < 2 * PER {
        let mut out = ArrayVec::<u64, 32>::new();
        if c.dequeue_burst(&mut out) == 0 {
            std::thread::yield_now();
        }
        for v in out {
            let id = (v >> 32) as usize;
            assert_eq!(v & 0xffff_ffff, next[id], "producer {id} out of order");
            next[id] += 1;
            got += 1;
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(c.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Burst(u8),
    Bulk(u8),
    Dequeue(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..=9).prop_map(Op::Burst),
        (0u8..=9).prop_map(Op::Bulk),
        (0u8..=12).prop_map(Op::Dequeue)
    ]
}

#[test]
fn mpsc_indices_cross_the_u32_wrap() {
    // Start 100 items before the wrap and move 10,000 items through a ring
    // of 8, in bursts, checking FIFO order and exact counts on the way.
    let (p, mut c) = mpsc_at::<u64>(8, u32::MAX - 100).unwrap();
    let (mut next, mut expect) = (0u64, 0u64);
    while expect < 10_000 {
        let mut src: ArrayVec<u64, 8> = (next..next + 5).collect();
        next += p.enqueue_burst(&mut src) as u64;
        assert!(p.len() <= 8);
        let mut out = ArrayVec::<u64, 8>::new();
        c.dequeue_up_to(&mut out, 3);
        for v in out {
            assert_eq!(v, expect);
            expect += 1;
        }
    }
    // The producers' tail copy followed across the wrap: with the ring empty
    // a full burst fits at once.
    let mut rest = ArrayVec::<u64, 8>::new();
    c.dequeue_burst(&mut rest);
    let mut src: ArrayVec<u64, 8> = (0..8).collect();
    assert!(p.enqueue_bulk(&mut src));
    let copy = p
        .ring
        .prod_head
        .cached_cons_tail
        .load(std::sync::atomic::Ordering::Relaxed);
    let tail = p.ring.cons_tail.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        copy.wrapping_sub(tail) as i32 >= -8 && copy.wrapping_sub(tail) as i32 <= 0,
        "copy {copy} tail {tail}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]
    /// Any sequence of operations behaves like a VecDeque bounded at `cap`.
    #[test]
    fn matches_bounded_vecdeque_model(cap in 1u32..20, ops in proptest::collection::vec(op(), 1..200), single in any::<bool>(), start in prop_oneof![Just(0u32), (u32::MAX - 300)..=u32::MAX]) {
        let (mp, mut c) = mpsc_at::<u32>(cap, start).unwrap();
        let (mut sp, mut sc) = spsc::<u32>(cap).unwrap();
        let mut model = VecDeque::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::Burst(n) | Op::Bulk(n) => {
                    let bulk = matches!(op, Op::Bulk(_));
                    let mut src: ArrayVec<u32, 16> = (next..next + n as u32).collect();
                    let free = cap as usize - model.len();
                    let expect = if bulk { if (n as usize) <= free { n as usize } else { 0 } } else { (n as usize).min(free) };
                    let moved = match (single, bulk) {
                        (false, false) => mp.enqueue_burst(&mut src),
                        (false, true) => if mp.enqueue_bulk(&mut src) { n as usize } else { 0 },
                        (true, false) => sp.enqueue_burst(&mut src),
                        (true, true) => if sp.enqueue_bulk(&mut src) { n as usize } else { 0 },
                    };
                    prop_assert_eq!(moved, expect);
                    prop_assert_eq!(src.len(), n as usize - moved);
                    for v in next..next + moved as u32 { model.push_back(v); }
                    next += n as u32;
                }
                Op::Dequeue(n) => {
                    let mut out = ArrayVec::<u32, 16>::new();
                    let got = if single { sc.dequeue_up_to(&mut out, n as usize) } else { c.dequeue_up_to(&mut out, n as usize) };
                    let want: Vec<u32> = (0..(n as usize).min(model.len())).map(|_| model.pop_front().unwrap()).collect();
                    prop_assert_eq!(got, want.len());
                    prop_assert_eq!(out.as_slice(), want.as_slice());
                }
            }
            let len = if single { sc.len() } else { c.len() };
            prop_assert_eq!(len, model.len());
        }
    }
}
