//! The target lcore loop (the kernel's `cpu_map_kthread_run`): dequeue a
//! burst from this target's entries, run the entry's remote program, hand
//! the survivors to the exception path.
//!
//! Context: everything here runs on one target lcore and touches only its
//! own state; shared accesses are ring dequeues, frame frees and one load of
//! the map generation per loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::counters::stages::{Laps, StageClock, TargetStage};
use crate::counters::{TargetCounters, TargetDropReason, TargetStats};
use crate::cpumap::TargetView;
use crate::exception::ExceptionSink;
use crate::filter::ebpf::Instance;
use crate::filter::{RemoteProg, Verdict};
use crate::frame::{Pool, free_burst};
use crate::port::{Burst, MAX_BURST, PortQueue, free_all};

pub(super) struct TargetLcore {
    pub view: TargetView,
    pub sink: Box<dyn ExceptionSink>,
    pub stats: Arc<TargetStats>,
    /// The reverse direction, when the exception path has one (TAP).
    pub reverse: Option<Reverse>,
    /// This target's instance of its entry's eBPF remote program, made when
    /// the entry first hands it a burst with that program (a map update
    /// is rare; a burst is not).
    pub remote: Option<Instance>,
    /// JIT-compile remote programs (`--jit`).
    pub jit: bool,
    /// `--latency`: record each dequeued frame's time since its RX stamp.
    pub latency: bool,
    /// `--stage-cycles`: the clock the loop's stages are timed with.
    pub stage_clock: Option<StageClock>,
}

/// What a target needs to send the kernel's frames out: its own small pool
/// and a transmit-only queue on the first port (None: nowhere to send, the
/// frames are counted as reverse drops).
pub(super) struct Reverse {
    pub pool: Pool,
    pub tx: Option<Box<dyn PortQueue>>,
}

/// Loops between reverse-direction reads while busy (always when idle).
pub(super) const REVERSE_EVERY: u32 = 8;

/// Spin, then yield, then sleep while idle; each give-up of the CPU counts
/// as a `sched`, like the kthread's schedule() when its ring is empty.
struct Backoff {
    idle: u32,
}

impl Backoff {
    const SPINS: u32 = 256;
    const YIELDS: u32 = 64;

    fn reset(&mut self) {
        self.idle = 0;
    }

    /// Returns true if the CPU was given up.
    fn idle(&mut self) -> bool {
        self.idle = self.idle.saturating_add(1);
        if self.idle <= Self::SPINS {
            std::hint::spin_loop();
            false
        } else if self.idle <= Self::SPINS + Self::YIELDS {
            std::thread::yield_now();
            true
        } else {
            std::thread::sleep(Duration::from_micros(50));
            true
        }
    }
}

impl TargetLcore {
    /// Runs until `stop` is set (only after every RX lcore has exited) and
    /// every entry is drained.
    pub(super) fn run(self, stop: &AtomicBool) -> Self {
        // Two builds of the loop: timed (`--stage-cycles`) and not.
        if self.stage_clock.is_some() {
            self.poll_loop::<true>(stop)
        } else {
            self.poll_loop::<false>(stop)
        }
    }

    fn poll_loop<const TIMED: bool>(mut self, stop: &AtomicBool) -> Self {
        let mut batch = Burst::new();
        let mut deliver = Burst::new();
        let mut dropped = Burst::new();
        let mut backoff = Backoff { idle: 0 };
        let mut rev = Burst::new();
        let mut loops = 0u32;
        let mut laps = Laps::<{ TargetStage::N }, TIMED>::new(self.stage_clock.take());
        let c = &self.stats.counters;
        loop {
            laps.start();
            loops = loops.wrapping_add(1);
            // S2: Acquire; pairs with S1, the Release store after the RX lcores
            // were joined: once set, every enqueue is visible below.
            let stopping = stop.load(Ordering::Acquire);
            self.view.refresh();
            let taken = self.view.poll(&mut batch, MAX_BURST);
            laps.lap(TargetStage::Dequeue as usize);
            if let Some(r) = self.reverse.as_mut()
                && (taken.count == 0 || loops.is_multiple_of(REVERSE_EVERY))
                && reverse_pass(self.sink.as_mut(), r, &mut rev, c)
            {
                backoff.reset();
            }
            if taken.count == 0 {
                laps.publish(TargetStage::Other as usize, false, &c.stages);
                if stopping {
                    // RX is gone and the control plane stopped: adopt
                    // whatever is still in the mailbox, then finish only
                    // when every ring is empty.
                    self.view.adopt_all();
                    if self.view.is_empty() {
                        break;
                    }
                    continue;
                }
                if backoff.idle() {
                    c.sched.add(1);
                }
                continue;
            }
            backoff.reset();
            c.bursts.add(1);
            c.processed.add(taken.count as u64);
            if self.latency {
                // One clock read per burst; unstamped frames (0) are skipped.
                let now = crate::counters::latency::now_ns();
                for f in batch.iter() {
                    let ts = f.timestamp_ns();
                    if ts != 0 {
                        c.latency.record(now.saturating_sub(ts));
                    }
                }
            }
            let lcore = self.stats.target.0;
            if let Some(RemoteProg::Bpf(p)) = &taken.prog
                && self
                    .remote
                    .as_ref()
                    .is_none_or(|i| !Arc::ptr_eq(i.program(), p))
            {
                // Cold: the entry's program changed. A JIT failure falls
                // back to the interpreter (counted as nothing lost).
                self.remote = Instance::new(p.clone(), lcore, self.jit)
                    .or_else(|_| Instance::new(p.clone(), lcore, false))
                    .ok();
            }
            laps.lap(TargetStage::Other as usize);
            match taken.prog {
                None => std::mem::swap(&mut batch, &mut deliver),
                Some(prog) => {
                    for mut f in batch.drain(..) {
                        let v = match (&prog, self.remote.as_mut()) {
                            // A remote program cannot redirect into the cpumap.
                            (RemoteProg::Bpf(_), Some(inst)) => inst.run(&mut f, &|_| false),
                            (p, _) => p.run(f.data()),
                        };
                        let reason = match v {
                            Verdict::Pass => {
                                deliver.push(f);
                                continue;
                            }
                            Verdict::Drop => TargetDropReason::RemoteDrop,
                            Verdict::Aborted => TargetDropReason::RemoteAborted,
                            Verdict::Tx | Verdict::Redirect(_) => {
                                TargetDropReason::RemoteUnsupported
                            }
                        };
                        c.drop_counter(reason).add(1);
                        dropped.push(f);
                    }
                    laps.lap(TargetStage::Remote as usize);
                    free_burst(&mut dropped);
                }
            }
            if !deliver.is_empty() {
                self.sink.deliver_burst(&mut deliver).count(c);
            }
            laps.lap(TargetStage::Sink as usize);
            laps.publish(TargetStage::Other as usize, true, &c.stages);
        }
        self
    }
}

/// Reads what the kernel sent back through the sink and transmits it.
/// Returns true if there was anything.
fn reverse_pass(
    sink: &mut dyn ExceptionSink,
    r: &mut Reverse,
    rev: &mut Burst,
    c: &TargetCounters,
) -> bool {
    let got = sink.receive_burst(&mut r.pool, rev).frames as u64;
    if got == 0 {
        return false;
    }
    c.reverse_rx.add(got);
    let sent = match r.tx.as_mut() {
        Some(q) => q.tx_burst(rev) as u64,
        None => 0,
    };
    c.reverse_tx.add(sent);
    c.reverse_drops.add(free_all(rev));
    true
}
