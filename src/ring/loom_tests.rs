//! Model checking of the MPSC protocol: `RUSTFLAGS="--cfg loom" cargo test
//! --release --lib ring::loom_tests`.

use arrayvec::ArrayVec;
use loom::thread;

use super::*;

/// Two producers, one consumer, a ring smaller than what is sent so that
/// the full path (burst partial, bulk refused) is explored. Checks: nothing
/// lost, nothing duplicated, per-producer FIFO.
fn two_producers_one_consumer(bulk: bool) {
    loom::model(move || {
        let (p, mut c) = mpsc::<u32>(2).unwrap();
        let producers: Vec<_> = (0..2u32)
            .map(|id| {
                let p = p.clone();
                thread::spawn(move || {
                    let mut src: ArrayVec<u32, 2> = ArrayVec::new();
                    src.push(id * 10);
                    src.push(id * 10 + 1);
                    let mut sent = 0;
                    // At most a few attempts so the model stays finite; what
                    // did not fit is returned, as a tail drop would be.
                    for _ in 0..2 {
                        sent += if bulk {
                            if p.enqueue_bulk(&mut src) { 2 } else { 0 }
                        } else {
                            p.enqueue_burst(&mut src)
                        };
                        if src.is_empty() {
                            break;
                        }
                        thread::yield_now();
                    }
                    sent
                })
            })
            .collect();
        let mut seen: Vec<u32> = Vec::new();
        let mut out = ArrayVec::<u32, 4>::new();
        c.dequeue_burst(&mut out);
        seen.extend(out.drain(..));
        let sent: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
        c.dequeue_burst(&mut out);
        seen.extend(out.drain(..));
        assert_eq!(seen.len(), sent, "every enqueued item is dequeued once: {seen:?}");
        for id in 0..2 {
            let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 10 == id).collect();
            let expect: Vec<u32> = (0..mine.len() as u32).map(|i| id * 10 + i).collect();
            assert_eq!(mine, expect, "producer {id} FIFO");
        }
    });
}

#[test]
fn mpsc_burst_2p_1c() {
    two_producers_one_consumer(false);
}

#[test]
fn mpsc_bulk_2p_1c() {
    two_producers_one_consumer(true);
}
