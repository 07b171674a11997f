//! Model checking of the MPSC protocol: `RUSTFLAGS="--cfg loom" cargo test
//! --release --lib ring::loom_tests`.
//!
//! Each model runs two producers and a consumer concurrently; the consumer
//! polls until it has seen every item the producers report as enqueued.
//! Checks: nothing lost, nothing duplicated, per-producer FIFO, and (loom's
//! own check) no slot is read before its write is visible.

use std::sync::Arc;

use arrayvec::ArrayVec;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use super::*;

fn model(capacity: u32, per_producer: u32, bulk: bool) {
    let mut builder = loom::model::Builder::new();
    // Bugs in this protocol need at most a couple of preemptions; the bound
    // keeps the model finite with three threads (loom's recommended use).
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let (p, mut c) = mpsc::<u32>(capacity).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..2u32)
            .map(|id| {
                let (p, sent, done) = (p.clone(), sent.clone(), done.clone());
                thread::spawn(move || {
                    let mut src: ArrayVec<u32, 2> =
                        (0..per_producer).map(|i| id * 10 + i).collect();
                    // One attempt: what did not fit stays with the caller,
                    // as a tail drop would.
                    let k = if bulk {
                        if p.enqueue_bulk(&mut src) {
                            per_producer as usize
                        } else {
                            0
                        }
                    } else {
                        p.enqueue_burst(&mut src)
                    };
                    sent.fetch_add(k, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut seen: Vec<u32> = Vec::new();
        let mut out = ArrayVec::<u32, 4>::new();
        // Poll concurrently with the producers (where races live) ...
        for _ in 0..2 {
            c.dequeue_burst(&mut out);
            seen.extend(out.drain(..));
            if done.load(Ordering::SeqCst) == 2 {
                break;
            }
            thread::yield_now();
        }
        for h in producers {
            h.join().unwrap();
        }
        // ... then take the rest.
        c.dequeue_burst(&mut out);
        seen.extend(out.drain(..));
        assert_eq!(
            seen.len(),
            sent.load(Ordering::SeqCst),
            "nothing lost: {seen:?}"
        );
        for id in 0..2 {
            let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 10 == id).collect();
            let expect: Vec<u32> = (0..mine.len() as u32).map(|i| id * 10 + i).collect();
            assert_eq!(mine, expect, "producer {id} FIFO, no duplicates");
        }
        assert!(c.is_empty());
    });
}

#[test]
fn mpsc_burst_2p_1c_room_for_all() {
    model(4, 2, false);
}

#[test]
fn mpsc_burst_2p_1c_ring_full() {
    model(3, 2, false);
}

#[test]
fn mpsc_bulk_2p_1c_ring_full() {
    model(3, 2, true);
}

/// A one-slot ring: every enqueue after the first reuses the slot the
/// consumer just read, which is where the consumer -> producer ordering
/// (R2/A1, and R6/A6 through the producers' cached copy) matters.
#[test]
fn mpsc_one_slot_ring_reuses_slots() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let (p, mut c) = mpsc::<u32>(1).unwrap();
        let producers: Vec<_> = (0..2u32)
            .map(|id| {
                let p = p.clone();
                thread::spawn(move || {
                    let mut sent = 0;
                    for i in 0..2 {
                        if p.enqueue_one(id * 10 + i).is_ok() {
                            sent += 1;
                        }
                        thread::yield_now();
                    }
                    sent
                })
            })
            .collect();
        let mut seen = Vec::new();
        let mut out = ArrayVec::<u32, 1>::new();
        for _ in 0..3 {
            c.dequeue_burst(&mut out);
            seen.extend(out.drain(..));
            thread::yield_now();
        }
        let sent: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
        c.dequeue_burst(&mut out);
        seen.extend(out.drain(..));
        assert_eq!(seen.len(), sent, "nothing lost: {seen:?}");
    });
}
