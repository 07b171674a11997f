//! Building a run from a plan: pools, ports, the exception path, the map
//! entries, and the lcores' threads launched and waiting until each has
//! reported ready. What runs afterwards is in [`super::rx`] and
//! [`super::target`]; the handle on a running pipeline is
//! [`super::Running`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use crate::config::{Plan, PortSpec};
use crate::counters::stages::StageClock;
use crate::counters::{RxStats, TargetStats};
use crate::cpumap::{BPF_ANY, CpuMap, EntryValue, MapError, Redirector};
use crate::exception::{Exception, ExceptionSink};
use crate::filter::{Filter, FilterError, ModeSwitch, RemoteRunner};
use crate::frame::{Pool, PoolStats};
use crate::ids::{LcoreId, PortId, TargetId};
use crate::port::{self, PortQueue};

#[cfg(feature = "dpdk")]
use super::dpdk_env;
use super::reverse::Reverse;
use super::rx::RxLcore;
use super::stats::{PortQueueStats, StatsSet};
use super::target::TargetLcore;
use super::{Handle, LcoreError, PollLoop, Running, Threads, launch, pin};

/// Buffers of a target's reverse-direction pool (frames the kernel sends
/// back through the TAP; they leave at once, so a few bursts suffice).
const REVERSE_POOL: u32 = 256;
/// Large buffers (a whole GSO super-frame each) beside a target's reverse
/// pool: the TAP's reads land in one, small frames are copied out.
const REVERSE_LARGE: u32 = 64;
/// Large buffers beside each native RX pool, for GSO super-frames from a
/// port (AF_PACKET with virtio-net headers): 16 MiB of address space, of
/// which only what super-frames use is ever touched.
const RX_LARGE: u32 = 256;

/// The DPDK environment of a run being built (None natively), so the
/// building steps below have one signature with and without the feature.
#[cfg(feature = "dpdk")]
type Env = Option<dpdk_env::DpdkEnv>;
#[cfg(not(feature = "dpdk"))]
type Env = Option<std::convert::Infallible>;

/// A DPDK run's mempool for an RX lcore (none natively).
#[cfg(feature = "dpdk")]
type EnvPool = Arc<crate::dpdk::Mempool>;
#[cfg(not(feature = "dpdk"))]
type EnvPool = std::convert::Infallible;

#[cfg(feature = "dpdk")]
fn pool_of(mp: EnvPool) -> Pool {
    Pool::from_mempool(mp)
}

#[cfg(not(feature = "dpdk"))]
fn pool_of(mp: EnvPool) -> Pool {
    match mp {}
}

/// What one RX lcore is given before its thread starts (its pool is built
/// on the lcore itself).
struct RxSetup {
    lcore: LcoreId,
    queues: Vec<Box<dyn PortQueue>>,
    filter: Filter,
    redirect: Redirector,
    sink: Box<dyn ExceptionSink>,
    stats: Arc<RxStats>,
    /// Targets placed on a CPU this lcore also runs on.
    colocated: Vec<TargetId>,
}

pub(super) fn start_inner(plan: &Plan, dpdk: Env) -> Result<Running, LcoreError> {
    // Objects loaded while this pipeline runs (ctl map update --prog)
    // load as its own did.
    crate::filter::ebpf::globals::set_options(plan.load.clone());
    let rx_lcores = plan.rx_lcores();
    let target_ids: Vec<TargetId> = plan.targets.iter().map(|&l| l.into()).collect();
    let map = CpuMap::new(plan.max_entries, &target_ids, rx_lcores.len())?;
    for t in &target_ids {
        let value = EntryValue {
            qsize: plan.qsize,
            prog: plan.remote.clone(),
        };
        map.update(t.0, value, BPF_ANY)?;
    }
    let (queues, port_stats) = open_ports(plan, &dpdk)?;
    let mut stats = StatsSet {
        rx: Vec::new(),
        targets: Vec::new(),
        ports: port_stats,
        pools: Vec::new(),
        map: map.clone(),
        mode: Arc::new(ModeSwitch::new(plan.mode)),
        exception: plan.exception.backend().to_string(),
        backend: if plan.dpdk.is_some() {
            "dpdk"
        } else {
            "native"
        },
        devices: Vec::new(),
        started: Instant::now(),
    };
    // Everything fallible that does not need the lcore's own thread is
    // opened before any thread starts.
    let exception = prepare_exception(plan, &dpdk, &mut stats, target_ids.len(), rx_lcores.len())?;
    let targets = target_lcores(plan, &dpdk, &target_ids, &exception, &mut stats)?;
    let rx = rx_setups(
        plan,
        &rx_lcores,
        &target_ids,
        queues,
        &exception,
        &mut stats,
    )?;

    let mut threads = Threads {
        stop_rx: Arc::new(AtomicBool::new(false)),
        stop_targets: Arc::new(AtomicBool::new(false)),
        rx: Vec::new(),
        targets: Vec::new(),
    };
    launch_targets(plan, &dpdk, targets, &mut threads)?;
    let pools = launch_rx(plan, &dpdk, rx, &stats.mode, &mut threads)?;
    stats.pools.extend(pools);
    stats.started = Instant::now();
    Ok(Running {
        handle: Arc::new(Handle {
            prog: plan.prog.clone(),
            stats: Arc::new(stats),
        }),
        threads,
        #[cfg(feature = "dpdk")]
        dpdk,
    })
}

/// Opens every port's queues on the control thread (validation errors
/// surface before any lcore starts), each tagged with the RX lcore that
/// will own it.
#[allow(clippy::type_complexity)]
fn open_ports(
    plan: &Plan,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] dpdk: &Env,
) -> Result<(Vec<(LcoreId, Box<dyn PortQueue>)>, Vec<PortQueueStats>), LcoreError> {
    let mut queues = Vec::new();
    let mut port_stats = Vec::new();
    for (p, spec) in plan.ports.iter().enumerate() {
        let mine: Vec<_> = plan.rx.iter().filter(|r| r.port.0 as usize == p).collect();
        let opened = match spec {
            PortSpec::Native(v) => port::open(v, PortId(p as u16), mine.len() as u16)?,
            #[cfg(feature = "dpdk")]
            PortSpec::Dpdk(_) => dpdk
                .as_ref()
                .expect("a DPDK port comes with a DPDK environment")
                .port_queues(p),
            PortSpec::Declared(d) => {
                return Err(LcoreError::Dpdk(format!(
                    "port{p} ({}) is a device only the EAL can open: this plan was resolved for --check-config, not to run",
                    d.name
                )));
            }
        };
        for (q, pq) in opened.into_iter().enumerate() {
            let lcore = mine
                .iter()
                .find(|r| r.queue as usize == q)
                .map(|r| r.lcore)
                .expect("queues checked by plan");
            port_stats.push(PortQueueStats {
                port: PortId(p as u16),
                queue: q as u16,
                lcore,
                counters: pq.counters().clone(),
            });
            queues.push((lcore, pq));
        }
    }
    Ok((queues, port_stats))
}

/// Opens the exception path (one queue per delivering lcore: `targets`
/// targets, whose sinks are opened first, then `rx` RX lcores) and
/// registers the DPDK devices and mempools the run's readers watch.
fn prepare_exception(
    plan: &Plan,
    dpdk: &Env,
    stats: &mut StatsSet,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] targets: usize,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] rx: usize,
) -> Result<Exception, LcoreError> {
    let Some(env) = dpdk else {
        let reverse_gso = !plan.ports.is_empty()
            && plan
                .ports
                .iter()
                .all(|p| matches!(p, PortSpec::Native(v) if port::takes_offloads(v)));
        return Ok(plan.exception.prepare(plan.kernel_mac, reverse_gso)?);
    };
    #[cfg(feature = "dpdk")]
    {
        use crate::counters::DeviceStats;
        stats.devices.extend(
            env.ports
                .iter()
                .map(|p| Arc::downgrade(&(p.clone() as Arc<dyn DeviceStats>))),
        );
        stats.pools.extend(env.pool_stats());
        // Every RX lcore transmits on its own port queue; a target only
        // where port 0 had a TX queue left for it.
        let senders: Vec<bool> = (0..targets)
            .map(|i| env.has_reverse_tx(i as u16))
            .chain(std::iter::repeat_n(true, rx))
            .collect();
        let pool = env.exception_pool(plan, senders.len())?;
        stats
            .pools
            .push(crate::frame::Pool::from_mempool(pool.clone()).stats());
        let ex = plan
            .exception
            .prepare_dpdk(&env.eal, plan.kernel_mac, &senders, pool)?;
        if let Some(dev) = ex.dpdk() {
            let p: Arc<dyn DeviceStats> = dev.port().clone();
            stats.devices.push(Arc::downgrade(&p));
        }
        Ok(ex)
    }
    #[cfg(not(feature = "dpdk"))]
    {
        let _ = stats;
        match *env {}
    }
}

/// Builds every target lcore's state: its map view, sink, counters and,
/// where the exception path talks back, its reverse direction.
fn target_lcores(
    plan: &Plan,
    dpdk: &Env,
    target_ids: &[TargetId],
    exception: &Exception,
    stats: &mut StatsSet,
) -> Result<Vec<TargetLcore>, LcoreError> {
    let mut out = Vec::new();
    for (i, &t) in target_ids.iter().enumerate() {
        let block = Arc::new(TargetStats::new(t));
        stats.targets.push(block.clone());
        let reverse = if exception.has_reverse() {
            Some(reverse_for(plan, dpdk, t, i as u16, stats)?)
        } else {
            None
        };
        let view = stats.map.target_view(t);
        out.push(TargetLcore {
            waker: view.waker().clone(),
            view,
            idle: plan.idle,
            sink: exception.open(t.lcore())?,
            stats: block,
            reverse,
            remote: RemoteRunner::new(t.0, plan.jit),
            latency: plan.latency,
            stage_clock: plan.stage_cycles.then(|| StageClock::shared().clone()),
            devtx: crate::port::devtx::DevTx::new(t.0),
        });
    }
    Ok(out)
}

/// The reverse direction of the `i`th target: the DPDK reverse queue and
/// mempool, or natively its own small pool and a transmit-only queue on
/// port 0.
fn reverse_for(
    plan: &Plan,
    dpdk: &Env,
    t: TargetId,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] i: u16,
    stats: &mut StatsSet,
) -> Result<Reverse, LcoreError> {
    #[cfg(feature = "dpdk")]
    if let Some(env) = dpdk {
        return Ok(Reverse {
            pool: Pool::from_mempool(env.first_pool()),
            tx: env.reverse_tx(i),
        });
    }
    #[cfg(not(feature = "dpdk"))]
    let _ = dpdk;
    let name = format!("{}_reverse", t.lcore());
    let r = Reverse {
        pool: Pool::new(&name, REVERSE_POOL, plan.headroom, plan.data_room)?
            .with_large(REVERSE_LARGE)?,
        tx: match plan.ports.first() {
            Some(PortSpec::Native(spec)) => port::open_tx(spec, PortId(0))?,
            _ => None,
        },
    };
    stats.pools.push(r.pool.stats());
    Ok(r)
}

/// Builds every RX lcore's state but its pool: its queues (taken from
/// `queues`), filter, map reader, bulk queues, sink and counters.
fn rx_setups(
    plan: &Plan,
    rx_lcores: &[LcoreId],
    target_ids: &[TargetId],
    mut queues: Vec<(LcoreId, Box<dyn PortQueue>)>,
    exception: &Exception,
    stats: &mut StatsSet,
) -> Result<Vec<RxSetup>, LcoreError> {
    let mut out = Vec::new();
    for &lcore in rx_lcores {
        let (mine, rest): (Vec<_>, Vec<_>) = queues.into_iter().partition(|(l, _)| *l == lcore);
        queues = rest;
        let block = Arc::new(RxStats::new(lcore, plan.max_entries));
        stats.rx.push(block.clone());
        let mut filter = Filter::new(plan.mode, target_ids)?;
        if let Some(p) = &plan.prog {
            let inst = crate::filter::ebpf::Instance::new(p.clone(), lcore.0, plan.jit)
                .map_err(|e| FilterError::Ebpf(e.to_string()))?;
            filter.set_program(inst);
        }
        let reader = stats
            .map
            .reader()
            .map_err(|e| LcoreError::Map(MapError::Invalid(e.to_string())))?;
        out.push(RxSetup {
            lcore,
            queues: mine.into_iter().map(|(_, q)| q).collect(),
            filter,
            redirect: Redirector::new(reader, plan.max_entries, plan.bulk_size, block.clone()),
            sink: exception.open(lcore)?,
            stats: block,
            colocated: plan
                .targets
                .iter()
                .filter(|&&t| {
                    let mine = plan.cpus_of(lcore);
                    plan.cpus_of(t).iter().any(|c| mine.contains(c))
                })
                .map(|&t| t.into())
                .collect(),
        });
    }
    Ok(out)
}

/// The EAL of a DPDK run, for [`launch`].
#[cfg(feature = "dpdk")]
fn eal_of(dpdk: &Env) -> Option<&crate::dpdk::Eal> {
    dpdk.as_ref().map(|e| &e.eal)
}

/// Starts the target lcores first, so every entry has a consumer.
fn launch_targets(
    plan: &Plan,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] dpdk: &Env,
    targets: Vec<TargetLcore>,
    threads: &mut Threads,
) -> Result<(), LcoreError> {
    for ctx in targets {
        let lcore = ctx.stats.target.lcore();
        let stop = threads.stop_targets.clone();
        let w = launch(
            #[cfg(feature = "dpdk")]
            eal_of(dpdk),
            lcore,
            plan.cpus_of(lcore).to_vec(),
            plan.pin,
            move || ctx.run(&stop),
        )?;
        threads.targets.push((lcore, w));
    }
    Ok(())
}

/// Starts the RX lcores and waits until each has built its pool (or
/// failed). Returns the pools to watch (a DPDK mempool is listed once, by
/// [`prepare_exception`], as the socket's lcores share it).
fn launch_rx(
    plan: &Plan,
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))] dpdk: &Env,
    rx: Vec<RxSetup>,
    mode: &Arc<ModeSwitch>,
    threads: &mut Threads,
) -> Result<Vec<PoolStats>, LcoreError> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<PoolStats, LcoreError>>();
    let n = rx.len();
    for setup in rx {
        let lcore = setup.lcore;
        let (stop, ready, mode) = (threads.stop_rx.clone(), ready_tx.clone(), mode.clone());
        #[cfg(feature = "dpdk")]
        let mempool = dpdk.as_ref().map(|e| e.pool_for(lcore));
        #[cfg(not(feature = "dpdk"))]
        let mempool: Option<EnvPool> = None;
        let env = RxEnv {
            pool_n: plan.pool_size,
            headroom: plan.headroom,
            data_room: plan.data_room,
            cpus: plan.pin.then(|| plan.cpus_of(lcore).to_vec()),
            stamp: plan.latency,
            stage_clock: plan.stage_cycles.then(|| StageClock::shared().clone()),
            idle: plan.idle,
        };
        let body = move || env.run(setup, mempool, mode, ready, &stop);
        // The body pins itself (a failure is fatal for RX, unlike targets).
        let w = launch(
            #[cfg(feature = "dpdk")]
            eal_of(dpdk),
            lcore,
            Vec::new(),
            false,
            body,
        )?;
        threads.rx.push((lcore, w));
    }
    drop(ready_tx);
    let mut pools = Vec::new();
    let mut first_err = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(pool)) if plan.dpdk.is_none() => pools.push(pool),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    match first_err {
        // The caller drops `threads`, which stops and joins what started.
        Some(e) => Err(e),
        None => Ok(pools),
    }
}

/// What an RX lcore's thread needs from the plan to build its pool and loop.
struct RxEnv {
    pool_n: u32,
    headroom: u16,
    data_room: u16,
    /// CPUs to pin to (None: `--no-pin`).
    cpus: Option<Vec<usize>>,
    stamp: bool,
    stage_clock: Option<StageClock>,
    idle: crate::config::IdlePolicy,
}

impl RxEnv {
    /// The RX lcore's thread: pin, build the pool, report ready, loop until
    /// `stop`. Context: the RX lcore itself.
    #[cfg_attr(not(feature = "dpdk"), allow(unused_variables))]
    fn run(
        self,
        s: RxSetup,
        mempool: Option<EnvPool>,
        mode: Arc<ModeSwitch>,
        ready: mpsc::Sender<Result<PoolStats, LcoreError>>,
        stop: &AtomicBool,
    ) -> Option<RxLcore> {
        if let Some(cpus) = &self.cpus
            && let Err(e) = pin(s.lcore, cpus)
        {
            let _ = ready.send(Err(e));
            return None;
        }
        // A native pool is built here, on the lcore (after pinning), so its
        // memory is first touched on this lcore's NUMA node.
        let pool = match mempool {
            Some(mp) => Ok(pool_of(mp)),
            None => Pool::new(
                &format!("{}_pool", s.lcore),
                self.pool_n,
                self.headroom,
                self.data_room,
            )
            .and_then(|p| p.with_large(RX_LARGE)),
        };
        let pool = match pool {
            Ok(pool) => pool,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return None;
            }
        };
        let _ = ready.send(Ok(pool.stats()));
        let lc = RxLcore {
            queues: s.queues,
            pool,
            filter: s.filter,
            mode,
            redirect: s.redirect,
            sink: s.sink,
            stats: s.stats,
            colocated: s.colocated,
            stamp: self.stamp,
            stage_clock: self.stage_clock,
            idle: self.idle,
        };
        Some(lc.run(stop))
    }
}
