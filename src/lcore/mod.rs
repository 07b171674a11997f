//! Launching lcores, running the pipeline, and shutting it down in order.
//!
//! # General idea
//!
//! One OS thread per lcore, named `lcoreN` and pinned to the CPUs the EAL
//! arguments gave it (`--lcores 2@0` runs lcore 2 on CPU 0); in a DPDK run
//! each lcore is the EAL's own worker (`rte_eal_remote_launch`, pinned by
//! the EAL) and the main lcore is the control thread ([`start_dpdk`]). RX lcores own
//! their port queues, pool, filter, bulk queues and map reader; target
//! lcores own their view of the map and their exception sink. The control
//! thread (the caller) only reads counters and changes the map.
//!
//! Start: targets first (so entries have a consumer), then RX lcores, each
//! building its pool after pinning (first touch on its own NUMA node) and
//! reporting ready. Stop: RX lcores finish their poll (flush) and go
//! offline; after they are joined, targets drain every ring to empty and
//! exit; then pools are checked full and the summary is taken.

mod build;
#[cfg(feature = "dpdk")]
mod dpdk_env;
mod idle;
mod reverse;
mod rx;
mod stats;
mod target;

pub use stats::{PortQueueStats, StatsSet};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

use crate::config::Plan;
use crate::cpumap::{CpuMap, MapError};
use crate::exception::ExceptionError;
use crate::filter::{FilterError, Mode};
use crate::frame::FrameError;
use crate::ids::LcoreId;
use crate::port::PortError;

use rx::RxLcore;
use target::TargetLcore;

#[derive(Debug, Error)]
/// Building, running or stopping the lcores failed.
pub enum LcoreError {
    #[error(transparent)]
    /// A port could not be opened.
    Port(#[from] PortError),
    #[error(transparent)]
    /// A pool could not be built.
    Frame(#[from] FrameError),
    #[error(transparent)]
    /// The map refused an entry.
    Map(#[from] MapError),
    #[error(transparent)]
    /// The filter could not be built.
    Filter(#[from] FilterError),
    #[error(transparent)]
    /// The exception path could not be opened.
    Exception(#[from] ExceptionError),
    #[error("{lcore}: cannot pin to cpus {cpus:?}: {why}")]
    /// An lcore could not be pinned to its CPUs.
    Pin {
        /// The lcore.
        lcore: LcoreId,
        /// Its CPUs.
        cpus: Vec<usize>,
        /// Why.
        why: String,
    },
    #[error("{0}: thread failed to start: {1}")]
    /// An lcore's thread could not start.
    Spawn(LcoreId, String),
    #[error("{0} panicked")]
    /// An lcore panicked.
    Panicked(LcoreId),
    #[error("at exit: {0}")]
    /// A port or sink could not be flushed at exit.
    Flush(String),
    #[error("{0}")]
    /// A DPDK step failed.
    Dpdk(String),
}

/// An lcore's loop (RX or target), built twice: timed (`--stage-cycles`)
/// and not, so the untimed build carries no check at all.
trait PollLoop: Sized {
    /// True when the loop's stages are timed.
    fn timed(&self) -> bool;

    /// The loop itself, until `stop` (and whatever the role adds).
    fn poll_loop<const TIMED: bool>(self, stop: &AtomicBool) -> Self;

    /// Runs the build of the loop this lcore asked for. Returns self so the
    /// caller keeps what the lcore owned until shutdown is done with it.
    fn run(self, stop: &AtomicBool) -> Self {
        if self.timed() {
            self.poll_loop::<true>(stop)
        } else {
            self.poll_loop::<false>(stop)
        }
    }
}

/// A running lcore: an OS thread (native) or an EAL worker lcore (DPDK).
enum Worker<T> {
    Thread(JoinHandle<T>),
    #[cfg(feature = "dpdk")]
    Eal(crate::dpdk::Launched<T>),
}

impl<T> Worker<T> {
    /// The lcore's result; `None` when it panicked.
    fn join(self) -> Option<T> {
        match self {
            Worker::Thread(h) => h.join().ok(),
            #[cfg(feature = "dpdk")]
            Worker::Eal(l) => l.join(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Worker::Thread(h) => h.is_finished(),
            #[cfg(feature = "dpdk")]
            Worker::Eal(l) => l.is_finished(),
        }
    }
}

/// Starts `f` as lcore `lcore`: on its EAL worker in a DPDK run, else on a
/// new thread named after it, pinned to `cpus` when `pin`.
fn launch<T: Send + 'static>(
    #[cfg(feature = "dpdk")] eal: Option<&crate::dpdk::Eal>,
    lcore: LcoreId,
    cpus: Vec<usize>,
    pin_it: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Worker<T>, LcoreError> {
    #[cfg(feature = "dpdk")]
    if let Some(eal) = eal {
        return eal
            .launch(lcore, f)
            .map(Worker::Eal)
            .map_err(|e| LcoreError::Spawn(lcore, e.to_string()));
    }
    std::thread::Builder::new()
        .name(lcore.to_string())
        .spawn(move || {
            if pin_it {
                // Pinning failure is reported, not fatal: the loop is
                // correct unpinned, only slower.
                if let Err(e) = pin(lcore, &cpus) {
                    eprintln!("cpumapd: warning: {e}");
                }
            }
            f()
        })
        .map(Worker::Thread)
        .map_err(|e| LcoreError::Spawn(lcore, e.to_string()))
}

fn pin(lcore: LcoreId, cpus: &[usize]) -> Result<(), LcoreError> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| LcoreError::Pin {
            lcore,
            cpus: cpus.to_vec(),
            why: e.to_string(),
        })?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| {
        LcoreError::Pin {
            lcore,
            cpus: cpus.to_vec(),
            why: e.to_string(),
        }
    })
}

/// What the control plane, the metrics endpoint and the live table reach
/// while the pipeline runs. Shared (`Arc`) with their threads; the lcores
/// never touch it.
pub struct Handle {
    prog: Option<Arc<crate::filter::ebpf::Program>>,
    stats: Arc<StatsSet>,
}

impl Handle {
    /// The map (control-plane updates, dumps).
    pub fn map(&self) -> &Arc<CpuMap> {
        &self.stats.map
    }

    /// Every counter block, for readers that label per lcore.
    pub fn stats(&self) -> &Arc<StatsSet> {
        &self.stats
    }

    /// The RX filter's current mode.
    pub fn mode(&self) -> Mode {
        self.stats.mode.get()
    }

    /// `mode set`: every RX lcore switches at the start of its next poll.
    pub fn set_mode(&self, mode: Mode) {
        self.stats.mode.set(mode);
    }

    /// Time since the lcores started.
    pub fn uptime(&self) -> Duration {
        self.stats.started.elapsed()
    }

    /// The RX filter's eBPF program (`--prog`), if any.
    pub fn rx_program(&self) -> Option<&Arc<crate::filter::ebpf::Program>> {
        self.prog.as_ref()
    }

    /// Loaded eBPF programs: the RX filter's, then every cpumap entry's
    /// remote program (each once).
    pub fn programs(&self) -> Vec<Arc<crate::filter::ebpf::Program>> {
        let mut v: Vec<Arc<crate::filter::ebpf::Program>> = self.prog.iter().cloned().collect();
        for p in self.map().remote_programs() {
            if !v.iter().any(|x| Arc::ptr_eq(x, &p)) {
                v.push(p);
            }
        }
        v
    }
}

/// The lcore threads and their stop flags. Dropped without `shutdown` (an
/// error path), it still stops and joins every lcore it started, so no
/// thread is left spinning.
struct Threads {
    stop_rx: Arc<AtomicBool>,
    stop_targets: Arc<AtomicBool>,
    /// None from a thread whose setup failed (reported at start).
    rx: Vec<(LcoreId, Worker<Option<RxLcore>>)>,
    targets: Vec<(LcoreId, Worker<TargetLcore>)>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop_rx.store(true, Ordering::Relaxed);
        for (_, h) in self.rx.drain(..) {
            let _ = h.join();
        }
        self.stop_targets.store(true, Ordering::Release);
        for (_, h) in self.targets.drain(..) {
            let _ = h.join();
        }
    }
}

/// A running pipeline.
pub struct Running {
    handle: Arc<Handle>,
    threads: Threads,
    #[cfg(feature = "dpdk")]
    dpdk: Option<dpdk_env::DpdkEnv>,
}

/// Starts every lcore of a native `plan` and creates the map entries of its
/// targets.
pub fn start(plan: &Plan) -> Result<Running, LcoreError> {
    if plan.dpdk.is_some() {
        return Err(LcoreError::Dpdk(
            "a DPDK plan starts with lcore::start_dpdk".into(),
        ));
    }
    build::start_inner(plan, None)
}

/// Starts a DPDK run: `eal` is the initialised EAL the plan was resolved
/// against. Pools, ports and the exception device are set up here; the
/// lcores are EAL worker lcores. [`Running::shutdown_with`] closes the ports
/// and cleans the EAL up.
#[cfg(feature = "dpdk")]
pub fn start_dpdk(plan: &Plan, eal: crate::dpdk::Eal) -> Result<Running, LcoreError> {
    let reverse = match plan.exception {
        crate::exception::ExceptionSpec::Tap(_)
        | crate::exception::ExceptionSpec::VirtioUser(_) => plan.targets.len() as u16,
        _ => 0,
    };
    let env = dpdk_env::DpdkEnv::start(eal, plan, reverse)?;
    build::start_inner(plan, Some(env))
}

impl Running {
    /// The map (control-plane updates).
    pub fn map(&self) -> &Arc<CpuMap> {
        self.handle.map()
    }

    /// The shared view for the control plane and metrics threads.
    pub fn handle(&self) -> Arc<Handle> {
        self.handle.clone()
    }

    /// The registry of the run's counters (`telemetry::Summary::now` reads it).
    pub fn stats(&self) -> &Arc<StatsSet> {
        &self.handle.stats
    }

    /// True once every RX lcore has stopped on its own (finite sources).
    pub fn rx_finished(&self) -> bool {
        self.threads.rx.iter().all(|(_, h)| h.is_finished())
    }

    /// Stops RX, drains every target, closes queues and sinks, then hands
    /// the final counters and the run's length to `read` (the summary is
    /// `telemetry::Summary::at_shutdown`). In a DPDK run it then closes every
    /// port and cleans up the EAL: `read` runs while the mempools it reads
    /// are still there.
    pub fn shutdown_with<R>(
        mut self,
        read: impl FnOnce(&StatsSet, f64) -> R,
    ) -> Result<R, LcoreError> {
        let mut err = None;
        let t = &mut self.threads;
        t.stop_rx.store(true, Ordering::Relaxed);
        let mut rx_done = Vec::new();
        for (lcore, h) in std::mem::take(&mut t.rx) {
            match h.join() {
                Some(Some(lc)) => rx_done.push(lc),
                Some(None) => {} // setup failed; start() reported it
                None => {
                    err.get_or_insert(LcoreError::Panicked(lcore));
                }
            }
        }
        // S1: Release; pairs with S2 in the target loop.
        t.stop_targets.store(true, Ordering::Release);
        // Sleeping targets see it now, not at their wait's timeout.
        self.handle.stats.map.wake_all();
        let mut targets_done = Vec::new();
        for (lcore, h) in std::mem::take(&mut t.targets) {
            match h.join() {
                Some(mut t) => {
                    if let Err(e) = t.sink.flush() {
                        err.get_or_insert(LcoreError::Flush(format!(
                            "{lcore} exception path: {e}"
                        )));
                    }
                    targets_done.push(t);
                }
                None => {
                    err.get_or_insert(LcoreError::Panicked(lcore));
                }
            }
        }
        let duration = self.handle.stats.started.elapsed().as_secs_f64();
        for lc in rx_done.iter_mut() {
            for q in lc.queues.iter_mut() {
                if let Err(e) = q.flush() {
                    err.get_or_insert(LcoreError::Flush(format!("port tx: {e}")));
                }
            }
            if let Err(e) = lc.sink.flush() {
                err.get_or_insert(LcoreError::Flush(format!("exception path: {e}")));
            }
        }
        // Queues, sinks and pools go now: a DPDK port still holds mbufs in
        // its RX descriptors until it is stopped, which happens when its
        // last queue handle is dropped. Native pools' statistics outlive
        // their pools, so every frame is seen home.
        drop(rx_done);
        drop(targets_done);
        #[cfg(feature = "dpdk")]
        let env = self.dpdk.take().map(|mut env| {
            env.ports.clear();
            env
        });
        let summary = read(&self.handle.stats, duration);
        #[cfg(feature = "dpdk")]
        if let Some(env) = env {
            // The mempools go with the last statistics handle; the EAL is
            // cleaned up only if that was ours (nobody else holds one).
            let Running { handle, .. } = self;
            if Arc::strong_count(&handle) == 1 {
                drop(handle);
                env.cleanup();
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}
