//! The peer of the DPDK pipeline benchmark (scripts/bench-dpdk.sh): the
//! naive RX -> rte_ring -> worker loop every DPDK tutorial starts from. One
//! RX lcore moves whole bursts from port 0 into an MP/SC `rte_ring`; one
//! worker lcore dequeues bursts and frees them. No filter, no bulk queue,
//! no accounting beyond two counters: the floor cpumapd's pipeline is
//! compared against.
//!
//!   dpdk_naive [EAL args] -- SECONDS
//!
//! The EAL needs three lcores: main, RX, worker (e.g. --lcores 0@0,1@0,2@1).
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpumapd::dpdk::ethdev::{self, EthPort, PortSetup};
use cpumapd::dpdk::ring::RteRing;
use cpumapd::dpdk::{Eal, Mbuf, Mempool};
use cpumapd::ids::LcoreId;

const BURST: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let secs: f64 = args
        .get(split + 1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let eal = Eal::init(&args[..split]).unwrap_or_else(|e| panic!("{e}"));
    let workers: Vec<LcoreId> = eal
        .lcores()
        .into_iter()
        .filter(|&l| l != eal.main_lcore())
        .collect();
    assert!(workers.len() >= 2, "needs lcores: main, RX, worker");
    let info = ethdev::ports(&eal).into_iter().next().expect("one port");
    let pool = Arc::new(Mempool::new("naive", 16383, 128, 2048, 0).unwrap());
    let port = EthPort::start(
        info,
        PortSetup {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rx_pools: vec![pool.clone()],
            tx_l4_csum: false,
            tx_tso: false,
            // A benchmark loop: it never sleeps.
            rx_intr: false,
        },
    )
    .unwrap();
    let ring = Arc::new(RteRing::new(&eal, "naive_ring", 2048).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (rx_n, wk_n, ring_full) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );

    let mut q = port.queue(Some(0), None);
    let (r, s, n, full) = (ring.clone(), stop.clone(), rx_n.clone(), ring_full.clone());
    let rx = eal
        .launch(workers[0], move || {
            let mut raw = [None::<Mbuf>; BURST];
            let mut ptrs = [std::ptr::null_mut::<c_void>(); BURST];
            let (mut got, mut dropped) = (0u64, 0u64);
            while !s.load(Ordering::Relaxed) {
                let k = q.rx_burst(&mut raw);
                if k == 0 {
                    continue;
                }
                for (p, m) in ptrs.iter_mut().zip(raw[..k].iter().flatten()) {
                    *p = m.as_raw().as_ptr().cast();
                }
                let sent = r.mp_enqueue_burst(&ptrs[..k]);
                if sent < k {
                    let mut rest: arrayvec::ArrayVec<Mbuf, BURST> =
                        raw[sent..k].iter().flatten().copied().collect();
                    // SAFETY: the ring refused these; this lcore owns them.
                    unsafe { Mbuf::free_bulk(&mut rest) };
                    dropped += (k - sent) as u64;
                }
                got += k as u64;
            }
            n.store(got, Ordering::Relaxed);
            full.store(dropped, Ordering::Relaxed);
        })
        .unwrap();
    // The worker stops only after RX has (so the ring is empty for good).
    let rx_done = Arc::new(AtomicBool::new(false));
    let (r, s, n) = (ring.clone(), rx_done.clone(), wk_n.clone());
    let wk = eal
        .launch(workers[1], move || {
            let mut ptrs = [std::ptr::null_mut::<c_void>(); BURST];
            let mut done = 0u64;
            loop {
                // A2: Acquire; pairs with A1. Read before the dequeue: once
                // RX is done, an empty dequeue means empty for good.
                let rx_finished = s.load(Ordering::Acquire);
                let k = r.sc_dequeue_burst(&mut ptrs);
                if k == 0 {
                    if rx_finished {
                        break;
                    }
                    continue;
                }
                let mut ms = [None::<Mbuf>; BURST];
                for (m, p) in ms.iter_mut().zip(&ptrs[..k]) {
                    // SAFETY: every pointer in the ring is an mbuf the RX
                    // lcore gave up; this lcore owns it now.
                    *m = std::ptr::NonNull::new(p.cast()).map(|p| unsafe { Mbuf::from_raw(p) });
                }
                let mut owned: arrayvec::ArrayVec<Mbuf, BURST> =
                    ms[..k].iter().flatten().copied().collect();
                // SAFETY: as above; freed once.
                unsafe { Mbuf::free_bulk(&mut owned) };
                done += k as u64;
            }
            n.store(done, Ordering::Relaxed);
        })
        .unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    rx.join();
    // A1: Release; pairs with A2 in the worker: it then sees every enqueue
    // RX made.
    rx_done.store(true, Ordering::Release);
    wk.join();
    let d = t0.elapsed().as_secs_f64();
    let (rx, wk, full) = (
        rx_n.load(Ordering::Relaxed),
        wk_n.load(Ordering::Relaxed),
        ring_full.load(Ordering::Relaxed),
    );
    println!(
        "{{\"rx_mpps\": {:.3}, \"worker_mpps\": {:.3}, \"ring_full_drops\": {full}, \"seconds\": {d:.3}}}",
        rx as f64 / d / 1e6,
        wk as f64 / d / 1e6
    );
    drop(port);
    drop(ring);
    drop(pool);
}
