//! Ring throughput, cross-thread: a producer pinned to CPU 0 moves items in
//! bulks to a consumer pinned to CPU 1 (the RX lcore -> target hop). Our
//! MPSC and SPSC rings against crossbeam-channel, crossbeam ArrayQueue and
//! rtrb, and with `--features dpdk` DPDK's own rte_ring (MP enqueue, SC
//! dequeue, the burst calls), measured in the same run. Reported per
//! element.
//!
//! `cargo bench --bench ring` (criterion); a quick pass:
//! `cargo bench --bench ring -- --warm-up-time 1 --measurement-time 3`;
//! with the rte_ring peer: `cargo bench --features dpdk --bench ring`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const CAP: u32 = 2048;
const MIN_ITEMS: u64 = 1 << 20;

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Runs `produce` on CPU 0 and `consume` on CPU 1 until `n` items crossed.
fn cross<P, C>(n: u64, produce: P, consume: C) -> Duration
where
    P: FnOnce(u64) + Send,
    C: FnOnce(u64) + Send + 'static,
{
    let consumer = thread::spawn(move || {
        pin(1);
        consume(n)
    });
    pin(0);
    let t0 = Instant::now();
    produce(n);
    consumer.join().unwrap();
    t0.elapsed()
}

/// Our rings: `enqueue` is the producer's burst enqueue; the consumer
/// dequeues up to 32 at a time.
fn ours<E>(n: u64, bulk: usize, mut enqueue: E, mut c: cpumapd::ring::Consumer<u64>) -> Duration
where
    E: FnMut(&mut ArrayVec<u64, 32>) -> usize + Send,
{
    cross(
        n,
        move |n| {
            let mut sent = 0;
            let mut buf = ArrayVec::<u64, 32>::new();
            while sent < n {
                while buf.len() < bulk {
                    buf.push(sent + buf.len() as u64);
                }
                sent += enqueue(&mut buf) as u64;
                buf.clear();
            }
        },
        move |n| {
            let mut got = 0;
            let mut out = ArrayVec::<u64, 32>::new();
            while got < n {
                got += c.dequeue_burst(&mut out) as u64;
                out.clear();
            }
        },
    )
}

fn ours_mpsc(n: u64, bulk: usize) -> Duration {
    let (p, c) = cpumapd::ring::mpsc::<u64>(CAP).unwrap();
    ours(n, bulk, move |b| p.enqueue_burst(b), c)
}

fn ours_spsc(n: u64, bulk: usize) -> Duration {
    let (mut p, c) = cpumapd::ring::spsc::<u64>(CAP).unwrap();
    ours(n, bulk, move |b| p.enqueue_burst(b), c)
}

/// Peers without a bulk API: a bulk is `bulk` single sends; `send` and
/// `recv` return whether one item moved.
fn one_by_one<S, R>(n: u64, bulk: usize, mut send: S, mut recv: R) -> Duration
where
    S: FnMut(u64) -> bool + Send,
    R: FnMut() -> bool + Send + 'static,
{
    cross(
        n,
        move |n| {
            let mut sent = 0;
            while sent < n {
                for i in 0..bulk as u64 {
                    if send(sent + i) {
                        sent += 1;
                    }
                }
            }
        },
        move |n| {
            let mut got = 0;
            while got < n {
                if recv() {
                    got += 1;
                }
            }
        },
    )
}

fn crossbeam_channel(n: u64, bulk: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP as usize);
    one_by_one(
        n,
        bulk,
        move |v| tx.try_send(v).is_ok(),
        move || rx.try_recv().is_ok(),
    )
}

fn array_queue(n: u64, bulk: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(CAP as usize));
    let qc = q.clone();
    one_by_one(
        n,
        bulk,
        move |v| q.push(v).is_ok(),
        move || qc.pop().is_some(),
    )
}

fn rtrb(n: u64, bulk: usize) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(CAP as usize);
    cross(
        n,
        move |n| {
            let mut sent = 0;
            while sent < n {
                if let Ok(chunk) = p.write_chunk_uninit(bulk) {
                    sent += chunk.fill_from_iter(sent..) as u64;
                }
            }
        },
        move |n| {
            let mut got = 0;
            while got < n {
                let avail = c.slots().min(32);
                if avail > 0
                    && let Ok(chunk) = c.read_chunk(avail)
                {
                    got += chunk.into_iter().count() as u64;
                }
            }
        },
    )
}

/// DPDK's rte_ring, MP enqueue burst / SC dequeue burst of pointers, from
/// two plain threads (the burst calls need no lcore id). The EAL comes up
/// once, without hugepages or PCI.
#[cfg(feature = "dpdk")]
fn rte_ring(n: u64, bulk: usize) -> Duration {
    use std::ffi::c_void;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    use cpumapd::dpdk::Eal;
    use cpumapd::dpdk::ring::RteRing;

    static EAL: OnceLock<Eal> = OnceLock::new();
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let eal = EAL.get_or_init(|| {
        let args: Vec<String> = format!(
            "--no-huge --no-pci --no-shconf -m 64 --log-level 1 --lcores 0@0 --file-prefix bench-ring-{}",
            std::process::id()
        )
        .split_whitespace()
        .map(String::from)
        .collect();
        Eal::init(&args).expect("EAL for the rte_ring peer")
    });
    let name = format!("bench{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let ring = Arc::new(RteRing::new(eal, &name, CAP).expect("rte_ring_create"));
    let r2 = ring.clone();
    cross(
        n,
        move |n| {
            let mut sent = 0u64;
            let mut buf = [std::ptr::null_mut::<c_void>(); 32];
            while sent < n {
                for (i, p) in buf[..bulk].iter_mut().enumerate() {
                    *p = (sent as usize + i) as *mut c_void;
                }
                sent += ring.mp_enqueue_burst(&buf[..bulk]) as u64;
            }
        },
        move |n| {
            let mut got = 0u64;
            let mut buf = [std::ptr::null_mut::<c_void>(); 32];
            while got < n {
                got += r2.sc_dequeue_burst(&mut buf) as u64;
            }
        },
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_cross_thread");
    g.throughput(Throughput::Elements(1));
    for bulk in [1usize, 8, 32] {
        type F = fn(u64, usize) -> Duration;
        #[allow(unused_mut)]
        let mut impls: Vec<(&str, F)> = vec![
            ("cpumapd_mpsc", ours_mpsc),
            ("cpumapd_spsc", ours_spsc),
            ("crossbeam_channel", crossbeam_channel),
            ("crossbeam_arrayqueue", array_queue),
            ("rtrb", rtrb),
        ];
        #[cfg(feature = "dpdk")]
        impls.push(("dpdk_rte_ring_mp_sc", rte_ring));
        for (name, f) in impls {
            g.bench_with_input(BenchmarkId::new(name, bulk), &bulk, |b, &bulk| {
                // At least 1M items per sample so the thread spawn and
                // pinning in `cross` (tens of microseconds) stay noise.
                b.iter_custom(|iters| {
                    let n = iters.max(MIN_ITEMS);
                    f(n, bulk).mul_f64(iters as f64 / n as f64)
                })
            });
        }
    }
    g.finish();
}

// criterion_group! makes an undocumented `pub fn benches`; missing_docs is
// for the library's public items.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench);
}
use group::benches;
criterion_main!(benches);
