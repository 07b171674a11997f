//! Quiescent-state-based reclamation for the map's RX readers (the idea of
//! DPDK's `rte_rcu_qsbr`, with the kernel's RCU grace period as the model).
//!
//! # General idea
//!
//! Each RX lcore owns one cache-padded slot holding the last map generation
//! at which it was quiescent (held no frame for, and no reference it will
//! use to enqueue into, an older entry), or `OFFLINE`. Whatever was replaced
//! at generation `g` is past its grace period once every slot is `OFFLINE`
//! or `>= g`: targets poll that ([`Qsbr::passed`]) instead of writers
//! waiting for it.
//! Readers write only their own slot, once per map change, so the hot path
//! shares no written line.

use crate::sync::{AtomicU64, Mutex, Ordering, yield_now};

use crossbeam_utils::CachePadded;
use thiserror::Error;

const OFFLINE: u64 = u64::MAX;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("all {0} map reader slots are taken (one per RX lcore)")]
/// Every reader slot is taken (the number of slots).
pub struct QsbrError(pub usize);

pub(super) struct Qsbr {
    readers: Box<[CachePadded<AtomicU64>]>,
    taken: Mutex<Vec<bool>>,
}

/// A registered reader's slot index; not Clone, so one owner.
pub(super) struct ReaderSlot(usize);

impl Qsbr {
    pub(super) fn new(n: usize) -> Self {
        Self {
            readers: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(OFFLINE)))
                .collect(),
            taken: Mutex::new(vec![false; n]),
        }
    }

    pub(super) fn register(&self) -> Result<ReaderSlot, QsbrError> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let i = taken
            .iter()
            .position(|t| !t)
            .ok_or(QsbrError(self.readers.len()))?;
        taken[i] = true;
        Ok(ReaderSlot(i))
    }

    /// Publishes a state no concurrent writer can miss and returns the
    /// generation the reader must load at: store, then re-check that the
    /// generation did not move (SeqCst on both sides orders the writer's
    /// bump-then-scan against this store-then-check).
    pub(super) fn online(&self, slot: &ReaderSlot, generation: &AtomicU64) -> u64 {
        loop {
            let g = generation.load(Ordering::SeqCst);
            self.readers[slot.0].store(g, Ordering::SeqCst);
            if generation.load(Ordering::SeqCst) == g {
                return g;
            }
        }
    }

    #[inline]
    pub(super) fn quiescent(&self, slot: &ReaderSlot, g: u64) {
        // Q1: SeqCst (a Release suffices for the pairing); pairs with Q2 in
        // passed() and the loads in synchronize(): everything this lcore did
        // with older entries happens-before their retirement.
        self.readers[slot.0].store(g, Ordering::SeqCst);
    }

    pub(super) fn offline(&self, slot: &ReaderSlot) {
        self.readers[slot.0].store(OFFLINE, Ordering::SeqCst);
    }

    /// True when every reader is offline or has been quiescent at `g` or
    /// later: the grace period of whatever was replaced at `g` is over.
    /// Context: any thread; reads only.
    #[inline]
    pub(super) fn passed(&self, g: u64) -> bool {
        // Q2: SeqCst load (Acquire suffices); pairs with Q1 in quiescent().
        self.readers.iter().all(|r| {
            let s = r.load(Ordering::SeqCst);
            s == OFFLINE || s >= g
        })
    }

    /// Waits until every online reader has been quiescent at `g` or later.
    /// Context: control plane (never an lcore).
    pub(super) fn synchronize(&self, g: u64) {
        for r in self.readers.iter() {
            let mut spins = 0u32;
            loop {
                let s = r.load(Ordering::SeqCst);
                if s == OFFLINE || s >= g {
                    break;
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    yield_now();
                }
            }
        }
    }
}
