//! The target lcore loop (the kernel's `cpu_map_kthread_run`): dequeue a
//! burst from this target's entries, run the entry's remote program, hand
//! the survivors to the exception path.
//!
//! Context: everything here runs on one target lcore and touches only its
//! own state; shared accesses are ring dequeues, frame frees and one load of
//! the map generation per loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::PollLoop;
use super::idle::Backoff;
use super::idle::{MAX_BLOCK_MS, Streak, block_on, target_fds};
use super::reverse::{REVERSE_EVERY, Reverse, reverse_pass};
use crate::config::IdlePolicy;
use crate::counters::stages::{Laps, StageClock, TargetStage};
use crate::counters::{TargetCounters, TargetDropReason, TargetStats};
use crate::cpumap::TargetView;
use crate::cpumap::Waker;
use crate::exception::ExceptionSink;
use crate::filter::{RemoteProg, RemoteRunner, Verdict};
use crate::frame::free_burst;
use crate::frame::{Burst, MAX_BURST};
use crate::port::devtx::DevTx;

pub(super) struct TargetLcore {
    pub view: TargetView,
    /// This target's sleep/wake handle (the view's, kept at hand).
    pub waker: Arc<Waker>,
    /// `--idle`.
    pub idle: IdlePolicy,
    pub sink: Box<dyn ExceptionSink>,
    pub stats: Arc<TargetStats>,
    /// The reverse direction, when the exception path has one (TAP).
    pub reverse: Option<Reverse>,
    /// Runs the entry's remote program (its eBPF instance is made when the
    /// entry first hands over a burst with that program: a map update is
    /// rare, a burst is not).
    pub remote: RemoteRunner,
    /// `--latency`: record each dequeued frame's time since its RX stamp.
    pub latency: bool,
    /// `--stage-cycles`: the clock the loop's stages are timed with.
    pub stage_clock: Option<StageClock>,
    /// Where the entry's program's redirects to interfaces leave.
    pub devtx: DevTx,
}

impl PollLoop for TargetLcore {
    fn timed(&self) -> bool {
        self.stage_clock.is_some()
    }

    /// Runs until `stop` is set (only after every RX lcore has exited) and
    /// every entry is drained.
    fn poll_loop<const TIMED: bool>(mut self, stop: &AtomicBool) -> Self {
        let mut batch = Burst::new();
        let mut deliver = Burst::new();
        let mut dropped = Burst::new();
        let mut backoff = Backoff::new();
        let mut streak = Streak::new(self.idle);
        let mut fds = target_fds(self.waker.fd(), self.sink.wait_fd());
        let mut rev = Burst::new();
        let mut loops = 0u32;
        // A sleep just ended: the TAP may be what woke it.
        let mut woke = false;
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
                && ((taken.count == 0 && (!streak.blocks() || woke))
                    || loops.is_multiple_of(REVERSE_EVERY))
                && let Some(m) =
                    reverse_pass(self.sink.as_mut(), &mut r.pool, r.tx.as_mut(), &mut rev)
            {
                c.reverse_rx.add(m.rx);
                c.reverse_tx.add(m.tx);
                c.reverse_drops.add(m.drops);
                backoff.reset();
                streak.busy();
            }
            woke = false;
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
                c.idle_polls.add(1);
                if !streak.blocks() {
                    if backoff.idle() {
                        c.sched.add(1);
                    }
                } else if streak.idle() {
                    woke = self.rest(stop, &mut fds);
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            backoff.reset();
            streak.busy();
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
            if let Some(prog) = &taken.prog {
                self.remote.select(prog);
            }
            laps.lap(TargetStage::Other as usize);
            match taken.prog {
                None => std::mem::swap(&mut batch, &mut deliver),
                Some(prog) => {
                    run_remote(
                        &mut self.remote,
                        &mut self.devtx,
                        c,
                        &prog,
                        &mut batch,
                        &mut deliver,
                        &mut dropped,
                    );
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

impl TargetLcore {
    /// Idle long enough: announce the sleep, re-check the rings (and the
    /// map and the stop flag), then wait for a flush's wake-up or the
    /// kernel's reverse traffic. Returns true when it blocked and
    /// something became readable. Context: the target lcore.
    #[cold]
    fn rest(&self, stop: &AtomicBool, fds: &mut [libc::pollfd]) -> bool {
        let c = &self.stats.counters;
        self.waker.prepare_sleep();
        if !self.view.is_empty() || self.view.changed() || stop.load(Ordering::Acquire) {
            self.waker.cancel();
            return false;
        }
        let readable = block_on(fds, MAX_BLOCK_MS);
        let woke = self.waker.woken();
        c.sleeps.add(1);
        c.sched.add(1);
        c.wakeups.add(woke as u64);
        readable
    }
}

/// The entry's program over a burst (the kernel's
/// `cpu_map_bpf_prog_run_xdp`): passes go to `deliver`, redirects to
/// an interface leave through the transmit leg (flushed once, at the
/// burst's end, as the devmap bulk queue is), the rest into `dropped`.
/// Drops by reason are tallied here and published once per burst (the
/// counters' own rule: no store per packet). Context: the target lcore.
#[inline]
fn run_remote(
    remote: &mut RemoteRunner,
    devtx: &mut DevTx,
    c: &TargetCounters,
    prog: &RemoteProg,
    batch: &mut Burst,
    deliver: &mut Burst,
    dropped: &mut Burst,
) {
    let mut drops = [0u64; TargetDropReason::ALL.len()];
    for mut f in batch.drain(..) {
        let reason = match remote.run(prog, &mut f) {
            Verdict::Pass => {
                deliver.push(f);
                continue;
            }
            Verdict::RedirectDev(ifindex) => {
                devtx.push(f, ifindex);
                continue;
            }
            Verdict::Drop => TargetDropReason::RemoteDrop,
            Verdict::Aborted => TargetDropReason::RemoteAborted,
            Verdict::EgressDrop => TargetDropReason::EgressDrop,
            // XDP_TX and a redirect into the cpumap are not for a
            // target, as in the kernel's cpumap.
            Verdict::Tx | Verdict::Redirect(_) => TargetDropReason::RemoteUnsupported,
        };
        drops[reason as usize] += 1;
        dropped.push(f);
    }
    if !devtx.is_empty() {
        let r = devtx.flush();
        c.remote_redirect.add(r.sent);
        drops[TargetDropReason::RedirectFailed as usize] += r.failed;
    }
    for (r, n) in TargetDropReason::ALL.into_iter().zip(drops) {
        c.drop_counter(r).add(n);
    }
}
