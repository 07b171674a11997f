//! The runtime cpumap: `target -> { qsize, remote program }`, its entries'
//! rings, the RX lcores' bulk queues, and the targets' view of their entries.
//!
//! # General idea
//!
//! * **Map** ([`CpuMap`], shared): one slot per key holding the current
//!   [`Entry`] (`ArcSwapOption`; a loom mutex under `--cfg loom`, where
//!   `loom_tests` model-checks the swap), a generation counter bumped by every
//!   change, and the kernel's update/delete/lookup/get_next_key contract.
//!   Writers (control plane) are serialised by a mutex; the dataplane never
//!   takes it.
//! * **Entry**: an MPSC ring of frames (producers: every RX lcore; consumer:
//!   the target lcore whose id is the key) and its remote program. An entry
//!   is immutable; an update builds a new one and swaps it in.
//! * **RX side** ([`MapReader`] + [`BulkQueues`], one per RX lcore, no
//!   sharing): the reader caches `Arc`s of the entries and refreshes them at
//!   the start of a poll only when the generation moved — a QSBR read side:
//!   between polls an RX lcore holds no frame for any entry (invariant 1), so
//!   the refresh is its quiescent point, which it publishes. A redirect
//!   appends the frame to the bulk queue of its target (8 slots); a full
//!   queue, and every non-empty queue at the end of the poll, is flushed with
//!   one `enqueue_burst` into the entry's ring; what does not fit is dropped
//!   and counted as an enqueue drop.
//! * **Target side** ([`TargetView`], one per target lcore): entries are
//!   handed to their target through a per-key mailbox (so even an entry that
//!   lived for a microsecond is drained), and the target polls every entry it
//!   holds, oldest first.
//! * **Swap and teardown** (kernel: xchg + call_rcu + kthread_stop): the
//!   writer builds the new entry, posts it to the target's mailbox, swaps it
//!   into the slot, bumps the generation to `g` and stamps the old entry
//!   "replaced at `g`" — then returns, without waiting (like call_rcu). The
//!   old entry's grace period ends when every online RX lcore has published
//!   a quiescent state at or past `g`: from then on no bulk queue can point
//!   at it. The target checks that, drains the entry to empty, and only then
//!   lets go of it. Nothing in flight is lost: every frame is delivered or
//!   counted where it dropped.
//!
//! ```
//! use std::sync::Arc;
//! use arrayvec::ArrayVec;
//! use cpumapd::counters::RxStats;
//! use cpumapd::cpumap::{BPF_ANY, CpuMap, EntryValue, Redirector, CPU_MAP_BULK_SIZE};
//! use cpumapd::frame::{Frame, Pool};
//! use cpumapd::ids::{LcoreId, TargetId};
//!
//! // A map of 8 keys; target lcore 1 may be an entry; one RX lcore reads it.
//! let map = CpuMap::new(8, &[TargetId(1)], 1).unwrap();
//! map.update(1, EntryValue { qsize: 4, prog: None }, BPF_ANY).unwrap();
//!
//! // The RX lcore: its side of the map (reader, bulk queues, counters)
//! // and its pool.
//! let stats = Arc::new(RxStats::new(LcoreId(0), 8));
//! let mut rx = Redirector::new(map.reader().unwrap(), 8, CPU_MAP_BULK_SIZE, stats.clone());
//! let mut pool = Pool::new("rx0", 16, 128, 2048).unwrap();
//! rx.reader().refresh(); // a poll starts: the quiescent point
//! for _ in 0..6 {
//!     let frame = pool.alloc().unwrap();
//!     rx.enqueue(TargetId(1), frame, &mut pool).unwrap();
//! }
//! // No entry under key 2: the frame comes back (the caller counts an abort).
//! let f = pool.alloc().unwrap();
//! assert!(rx.enqueue(TargetId(2), f, &mut pool).is_err());
//! rx.flush(&mut pool); // the poll ends: into the ring
//! let c = &stats.enqueue[1];
//! assert_eq!((c.enqueued.get(), c.drops.get()), (4, 2)); // qsize 4: 2 tail drops
//!
//! // The target lcore drains its entries in bursts.
//! let mut view = map.target_view(TargetId(1));
//! view.refresh();
//! let mut out: ArrayVec<Frame, 32> = ArrayVec::new();
//! assert_eq!(view.poll(&mut out, 32).count, 4);
//! drop(out); // delivered (here: freed)
//! assert_eq!(pool.in_use(), 0, "every buffer home");
//! ```

mod qsbr;
pub mod wake;

use std::collections::VecDeque;
use std::sync::Arc;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;
use serde::Serialize;
use thiserror::Error;

use crate::counters::RxStats;
use crate::filter::RemoteProg;
use crate::frame::{Frame, Pool};
use crate::ids::TargetId;
use crate::ring::{self, Consumer, MpProducer};

use crate::sync::{AtomicU64, Mutex, Ordering, Slot};
pub use qsbr::QsbrError;
use qsbr::{Qsbr, ReaderSlot};
pub use wake::Waker;

/// Frames per bulk queue by default (the kernel's `CPU_MAP_BULK_SIZE`).
pub const CPU_MAP_BULK_SIZE: usize = 8;
/// Largest configurable bulk size.
pub const MAX_BULK: usize = 32;
/// The kernel's sanity limit on a cpumap entry's queue size.
pub const MAX_QSIZE: u32 = 16384;

/// The update flags under their uapi names: `BPF_ANY` creates or replaces,
/// `BPF_EXIST` replaces, `BPF_NOEXIST` is refused by cpumap (every key of an
/// array map exists).
pub use crate::bpf_abi::update::{ANY as BPF_ANY, EXIST as BPF_EXIST, NOEXIST as BPF_NOEXIST};

/// Map errors, with the kernel's errno for each case.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MapError {
    #[error("EINVAL: {0}")]
    /// A malformed request (EINVAL).
    Invalid(String),
    /// The key is not below max_entries (E2BIG).
    #[error("E2BIG: key {key} >= max_entries {max_entries}")]
    KeyTooBig {
        /// The key.
        key: u32,
        /// The map's size.
        max_entries: u32,
    },
    /// BPF_NOEXIST on a key that exists, as every cpumap key does (EEXIST).
    #[error("EEXIST: cpumap keys always exist; BPF_NOEXIST cannot create key {key}")]
    Exists {
        /// The key.
        key: u32,
    },
    /// A queue size over the kernel's limit (EOVERFLOW).
    #[error("EOVERFLOW: qsize {qsize} > {MAX_QSIZE}")]
    QsizeOverflow {
        /// The requested size.
        qsize: u32,
    },
    /// The key is not a target lcore this run serves (ENODEV).
    #[error("ENODEV: key {key} is not an available target lcore ({why})")]
    NoDevice {
        /// The key.
        key: u32,
        /// Why it cannot serve.
        why: String,
    },
    /// `get_next_key` after the last key (ENOENT).
    #[error("ENOENT: key {key} is the last key")]
    NoNextKey {
        /// The key asked after.
        key: u32,
    },
    #[error("ENOMEM: {0}")]
    /// The ring could not be allocated (ENOMEM).
    NoMemory(String),
}

impl MapError {
    /// The errno name, as `bpftool` would print it.
    pub fn code(&self) -> &'static str {
        match self {
            MapError::Invalid(_) => "EINVAL",
            MapError::KeyTooBig { .. } => "E2BIG",
            MapError::Exists { .. } => "EEXIST",
            MapError::QsizeOverflow { .. } => "EOVERFLOW",
            MapError::NoDevice { .. } => "ENODEV",
            MapError::NoNextKey { .. } => "ENOENT",
            MapError::NoMemory(_) => "ENOMEM",
        }
    }
}

/// The value of a cpumap entry (`struct bpf_cpumap_val`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryValue {
    /// Ring size (0 deletes).
    pub qsize: u32,
    /// Remote program run by the target.
    pub prog: Option<RemoteProg>,
}

/// One cpumap entry: a ring into its target and the target's program.
pub struct Entry {
    id: u64,
    target: TargetId,
    qsize: u32,
    prog: Option<RemoteProg>,
    producer: MpProducer<Frame>,
    /// The target's sleep/wake word: a flush that moved frames in notifies it.
    waker: Arc<Waker>,
    /// Taken once by the target when it adopts the entry.
    consumer: Mutex<Option<Consumer<Frame>>>,
    /// Generation at which this entry was replaced or deleted (0 while it is
    /// in its slot). Once every RX lcore is quiescent at or past it, no RX
    /// lcore will enqueue again, so empty means drained for good.
    replaced_at: AtomicU64,
}

impl Entry {
    /// A unique id of this entry (a replaced entry gets a new one).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The target that serves it.
    pub fn target(&self) -> TargetId {
        self.target
    }
    /// Its ring's size.
    pub fn qsize(&self) -> u32 {
        self.qsize
    }
    /// Its remote program.
    pub fn prog(&self) -> Option<&RemoteProg> {
        self.prog.as_ref()
    }
    /// Frames waiting in the ring now.
    pub fn ring_len(&self) -> usize {
        self.producer.len()
    }

    fn info(&self, key: u32) -> EntryInfo {
        EntryInfo {
            key,
            qsize: self.qsize,
            prog: self.prog.as_ref().map(RemoteProg::name),
            id: self.id,
            ring_len: self.ring_len(),
        }
    }
}

/// What `lookup` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    /// The key.
    pub key: u32,
    /// Ring size.
    pub qsize: u32,
    /// Remote program's name.
    pub prog: Option<String>,
    /// Unique per created entry: changes on every update.
    pub id: u64,
    /// Frames in its ring now.
    pub ring_len: usize,
}

/// One immutable version of the whole map: the entry of every key. Writers
/// build a new table and swap it in as a unit, so a reader sees every change
/// of one update (or of one `apply`) or none of them.
struct Table {
    entries: Box<[Option<Arc<Entry>>]>,
}

/// A whole map for [`CpuMap::apply`]: `(key, value)` pairs; keys not listed
/// are deleted.
pub type MapSpec = [(u32, EntryValue)];

/// Why `apply` refused a map, naming the key.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("key {key}: {error}")]
pub struct ApplyError {
    /// The entry's key.
    pub key: u32,
    /// Why it was refused.
    pub error: MapError,
}

/// What `apply` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Entries created.
    pub created: u32,
    /// Entries replaced.
    pub replaced: u32,
    /// Entries deleted.
    pub deleted: u32,
    /// Entries left as they were.
    pub unchanged: u32,
}

/// The runtime cpumap.
pub struct CpuMap {
    max_entries: u32,
    table: Slot<Table>,
    mailboxes: Box<[Mutex<VecDeque<Arc<Entry>>>]>,
    available: Box<[bool]>,
    /// One per served target key (None for keys no target serves).
    wakers: Box<[Option<Arc<Waker>>]>,
    generation: CachePadded<AtomicU64>,
    qsbr: Qsbr,
    writer: Mutex<()>,
    next_id: AtomicU64,
    updates_ok: AtomicU64,
    updates_failed: AtomicU64,
}

impl std::fmt::Debug for CpuMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuMap")
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl CpuMap {
    /// A map of `max_entries` keys whose valid targets are `targets`, read by
    /// up to `rx_readers` RX lcores.
    pub fn new(
        max_entries: u32,
        targets: &[TargetId],
        rx_readers: usize,
    ) -> Result<Arc<Self>, MapError> {
        if max_entries == 0 {
            return Err(MapError::Invalid("max_entries must be at least 1".into()));
        }
        let mut available = vec![false; max_entries as usize].into_boxed_slice();
        for t in targets {
            if t.0 >= max_entries {
                return Err(MapError::KeyTooBig {
                    key: t.0,
                    max_entries,
                });
            }
            available[t.index()] = true;
        }
        let wakers = available
            .iter()
            .map(|&a| {
                a.then(|| {
                    Waker::new()
                        .map(Arc::new)
                        .map_err(|e| MapError::NoMemory(format!("eventfd for a target: {e}")))
                })
                .transpose()
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Arc::new(Self {
            wakers,
            max_entries,
            table: Slot::from_pointee(Table {
                entries: (0..max_entries).map(|_| None).collect(),
            }),
            mailboxes: (0..max_entries)
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            available,
            generation: CachePadded::new(AtomicU64::new(1)),
            qsbr: Qsbr::new(rx_readers),
            writer: Mutex::new(()),
            next_id: AtomicU64::new(1),
            updates_ok: AtomicU64::new(0),
            updates_failed: AtomicU64::new(0),
        }))
    }

    /// Keys in the map.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// (successful, failed) update/delete calls so far.
    pub fn update_counts(&self) -> (u64, u64) {
        (
            self.updates_ok.load(Ordering::Relaxed),
            self.updates_failed.load(Ordering::Relaxed),
        )
    }

    fn tally(&self, ok: bool) {
        let c = if ok {
            &self.updates_ok
        } else {
            &self.updates_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn count<T>(&self, r: Result<T, MapError>) -> Result<T, MapError> {
        self.tally(r.is_ok());
        r
    }

    /// `bpf_map_update_elem`: checks in the kernel's order (flags, key,
    /// NOEXIST, qsize, device), then creates, replaces, or — qsize 0 —
    /// deletes. Does not wait for the RX side: the old entry's target drains
    /// it once its grace period has passed.
    /// Context: control plane. Never blocks on an lcore.
    pub fn update(&self, key: u32, value: EntryValue, flags: u64) -> Result<(), MapError> {
        let r = self.update_inner(key, value, flags);
        self.count(r)
    }

    fn update_inner(&self, key: u32, value: EntryValue, flags: u64) -> Result<(), MapError> {
        if flags > BPF_EXIST {
            return Err(MapError::Invalid(format!(
                "unknown update flags {flags:#x} (BPF_ANY=0, BPF_EXIST=2)"
            )));
        }
        if key >= self.max_entries {
            return Err(MapError::KeyTooBig {
                key,
                max_entries: self.max_entries,
            });
        }
        if flags == BPF_NOEXIST {
            return Err(MapError::Exists { key });
        }
        self.check_value(key, &value)?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let new = self.build(key, value)?;
        if let Some(e) = &new {
            self.post(e);
        }
        self.commit(&mut [(key, new)]);
        Ok(())
    }

    /// The value checks of `cpu_map_update_elem` after the flags and key:
    /// qsize (EOVERFLOW), then the target (ENODEV).
    fn check_value(&self, key: u32, value: &EntryValue) -> Result<(), MapError> {
        if value.qsize > MAX_QSIZE {
            return Err(MapError::QsizeOverflow { qsize: value.qsize });
        }
        if !self.available[key as usize] {
            return Err(MapError::NoDevice {
                key,
                why: format!("lcore{key} does not run a target loop"),
            });
        }
        Ok(())
    }

    /// A new entry for `key` (None for qsize 0). Caller holds `writer`.
    fn build(&self, key: u32, value: EntryValue) -> Result<Option<Arc<Entry>>, MapError> {
        if value.qsize == 0 {
            return Ok(None);
        }
        let (producer, consumer) =
            ring::mpsc::<Frame>(value.qsize).map_err(|e| MapError::NoMemory(e.to_string()))?;
        Ok(Some(Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            target: TargetId(key),
            qsize: value.qsize,
            prog: value.prog,
            producer,
            waker: self.wakers[key as usize]
                .clone()
                .expect("check_value: the key is a served target"),
            consumer: Mutex::new(Some(consumer)),
            replaced_at: AtomicU64::new(0),
        })))
    }

    /// Hands a new entry to its target's mailbox, before it is published, so
    /// the target holds every entry an RX lcore can enqueue into.
    fn post(&self, e: &Arc<Entry>) {
        self.mailboxes[e.target.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(e.clone());
    }

    /// `map apply`: replaces the whole map in one swap. Every entry is
    /// checked (in the order of `update`, and keys must be unique) and every
    /// ring allocated before anything is published: either all listed keys
    /// switch together and every unlisted key is deleted, or nothing
    /// changes. Keys whose value is unchanged keep their entry (and the
    /// frames in its ring).
    /// Context: control plane. Never blocks on an lcore.
    pub fn apply(&self, spec: &MapSpec) -> Result<ApplyReport, ApplyError> {
        let r = self.apply_inner(spec);
        self.tally(r.is_ok());
        r
    }

    fn apply_inner(&self, spec: &MapSpec) -> Result<ApplyReport, ApplyError> {
        let mut wanted: Vec<Option<EntryValue>> = vec![None; self.max_entries as usize];
        for (key, value) in spec {
            let (key, value) = (*key, value.clone());
            let err = |error| ApplyError { key, error };
            if key >= self.max_entries {
                return Err(err(MapError::KeyTooBig {
                    key,
                    max_entries: self.max_entries,
                }));
            }
            if wanted[key as usize].is_some() {
                return Err(err(MapError::Invalid(format!(
                    "key {key} appears twice in the map"
                ))));
            }
            self.check_value(key, &value).map_err(err)?;
            wanted[key as usize] = Some(value).filter(|v| v.qsize > 0);
        }
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self
            .table
            .load_full()
            .expect("the table slot is never empty");
        let mut report = ApplyReport::default();
        let mut changes = Vec::new();
        for (key, want) in wanted.into_iter().enumerate() {
            let key = key as u32;
            let cur = current.entries[key as usize].as_ref();
            match (cur, want) {
                (None, None) => {}
                (Some(e), Some(v)) if e.qsize == v.qsize && e.prog == v.prog => {
                    report.unchanged += 1;
                }
                (Some(_), None) => {
                    report.deleted += 1;
                    changes.push((key, None));
                }
                (cur, Some(v)) => {
                    let new = self
                        .build(key, v)
                        .map_err(|error| ApplyError { key, error })?;
                    if cur.is_some() {
                        report.replaced += 1;
                    } else {
                        report.created += 1;
                    }
                    changes.push((key, new));
                }
            }
        }
        for (_, e) in &changes {
            if let Some(e) = e {
                self.post(e);
            }
        }
        if !changes.is_empty() {
            self.commit(&mut changes);
        }
        Ok(report)
    }

    /// `bpf_map_delete_elem`: key >= max_entries is EINVAL (not E2BIG, as in
    /// the kernel); deleting an empty key succeeds.
    pub fn delete(&self, key: u32) -> Result<(), MapError> {
        let r = if key >= self.max_entries {
            Err(MapError::Invalid(format!(
                "key {key} >= max_entries {}",
                self.max_entries
            )))
        } else {
            let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            self.commit(&mut [(key, None)]);
            Ok(())
        };
        self.count(r)
    }

    /// Builds the next table with `changes`, swaps it in, bumps the
    /// generation and stamps every entry it displaced. Caller holds `writer`.
    fn commit(&self, changes: &mut [(u32, Option<Arc<Entry>>)]) {
        let current = self
            .table
            .load_full()
            .expect("the table slot is never empty");
        let mut entries = current.entries.clone();
        let mut displaced = Vec::with_capacity(changes.len());
        for (key, new) in changes.iter_mut() {
            let old = std::mem::replace(&mut entries[*key as usize], new.take());
            displaced.extend(old);
        }
        drop(current);
        self.table.swap(Some(Arc::new(Table { entries })));
        // G0: SeqCst; pairs with G1 in the readers' refresh (and orders the
        // bump against Qsbr::online's store-then-check).
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        for old in displaced {
            old.replaced_at.store(generation, Ordering::Release);
        }
        // After the bump: a target that went to sleep before it sees it in
        // its re-check, or is woken here (W3: SeqCst swap in Waker::wake).
        self.wake_all();
    }

    /// Wakes every sleeping target (map changes, shutdown).
    /// Context: control thread.
    pub fn wake_all(&self) {
        for w in self.wakers.iter().flatten() {
            w.wake();
        }
    }

    /// The sleep/wake handle of target `t` (None: not a served target).
    pub fn waker(&self, t: TargetId) -> Option<&Arc<Waker>> {
        self.wakers.get(t.index())?.as_ref()
    }

    /// The map's generation (bumped by every change).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Waits until every RX lcore has let go of everything replaced so far
    /// (synchronize_rcu). Tests and tools use it; updates do not need it.
    pub fn synchronize(&self) {
        self.qsbr
            .synchronize(self.generation.load(Ordering::SeqCst));
    }

    /// `bpf_map_lookup_elem`.
    pub fn lookup(&self, key: u32) -> Option<EntryInfo> {
        let table = self.table.load_full()?;
        Some(table.entries.get(key as usize)?.as_ref()?.info(key))
    }

    /// `bpf_map_get_next_key`: walks like an array.
    pub fn next_key(&self, key: Option<u32>) -> Result<u32, MapError> {
        match key {
            None => Ok(0),
            Some(k) if k >= self.max_entries => Ok(0),
            Some(k) if k == self.max_entries - 1 => Err(MapError::NoNextKey { key: k }),
            Some(k) => Ok(k + 1),
        }
    }

    /// Every key with an entry, in key order, from one version of the map.
    /// The eBPF remote programs of the current entries.
    pub fn remote_programs(&self) -> Vec<Arc<crate::filter::ebpf::Program>> {
        let t = self
            .table
            .load_full()
            .expect("the table slot is never empty");
        t.entries
            .iter()
            .flatten()
            .filter_map(|e| match &e.prog {
                Some(RemoteProg::Bpf(p)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every live entry, in key order.
    pub fn dump(&self) -> Vec<EntryInfo> {
        let Some(table) = self.table.load_full() else {
            return Vec::new();
        };
        table
            .entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| e.as_ref().map(|e| e.info(k as u32)))
            .collect()
    }

    /// Registers an RX lcore as a reader. Each of the `rx_readers` slots is
    /// handed out once.
    pub fn reader(self: &Arc<Self>) -> Result<MapReader, QsbrError> {
        let slot = self.qsbr.register()?;
        let mut r = MapReader {
            map: self.clone(),
            slot,
            generation: 0,
            entries: (0..self.max_entries).map(|_| None).collect(),
        };
        r.online();
        Ok(r)
    }

    /// The view of target `t`'s entries, for its lcore.
    pub fn target_view(self: &Arc<Self>, t: TargetId) -> TargetView {
        TargetView {
            map: self.clone(),
            target: t,
            generation: 0,
            entries: Vec::with_capacity(4),
        }
    }
}

/// An RX lcore's cached view of the map (the QSBR read side).
pub struct MapReader {
    map: Arc<CpuMap>,
    slot: ReaderSlot,
    generation: u64,
    entries: Box<[Option<Arc<Entry>>]>,
}

impl MapReader {
    /// Copies the current table's entries (Arc clones: no allocation).
    fn load_all(&mut self) {
        let table = self
            .map
            .table
            .load_full()
            .expect("the table slot is never empty");
        for (mine, e) in self.entries.iter_mut().zip(table.entries.iter()) {
            mine.clone_from(e);
        }
    }

    /// Comes online: publishes a quiescent state no writer can miss, then
    /// loads the entries.
    fn online(&mut self) {
        let g = self.map.qsbr.online(&self.slot, &self.map.generation);
        self.load_all();
        self.generation = g;
    }

    /// The quiescent point: call at the start of every poll, with every bulk
    /// queue empty. Reloads the entries only when the map changed.
    /// Context: owning RX lcore, between polls. One shared load when idle.
    #[inline(always)]
    pub fn refresh(&mut self) {
        // G1: Acquire; pairs with G0 (the SeqCst bump in CpuMap::commit), so the
        // slot loads below see the swapped-in entry.
        let g = self.map.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.load_all();
            self.generation = g;
            self.map.qsbr.quiescent(&self.slot, g);
        }
    }

    /// Before the RX lcore blocks on its ports: quiescent for as long as it
    /// sleeps, so no map change waits for it. Its bulk queues are empty.
    pub fn sleep(&mut self) {
        self.map.qsbr.offline(&self.slot);
    }

    /// After a sleep: back online, with the entries reloaded.
    pub fn wake(&mut self) {
        self.online();
    }

    /// Goes offline for good (RX lcore exit): drops every cached entry.
    pub fn offline(&mut self) {
        for e in self.entries.iter_mut() {
            *e = None;
        }
        self.map.qsbr.offline(&self.slot);
    }

    #[inline(always)]
    /// The entry of `t` as of the last refresh.
    pub fn entry(&self, t: TargetId) -> Option<&Arc<Entry>> {
        self.entries.get(t.index())?.as_ref()
    }

    /// Keys in the map.
    pub fn max_entries(&self) -> u32 {
        self.map.max_entries
    }
}

impl Drop for MapReader {
    fn drop(&mut self) {
        self.offline();
    }
}

/// An RX lcore's bulk queues, one per key, and the set needing a flush.
pub struct BulkQueues {
    queues: Box<[ArrayVec<Frame, MAX_BULK>]>,
    bulk_size: usize,
    pending: Box<[u64]>,
}

impl BulkQueues {
    /// `bulk_size` in 1..=MAX_BULK (checked by config).
    pub fn new(max_entries: u32, bulk_size: usize) -> Self {
        let bulk_size = bulk_size.clamp(1, MAX_BULK);
        Self {
            queues: (0..max_entries).map(|_| ArrayVec::new()).collect(),
            bulk_size,
            pending: vec![0u64; (max_entries as usize).div_ceil(64)].into_boxed_slice(),
        }
    }

    /// Queues `frame` for target `t` (the kernel's `bq_enqueue`). Flushes
    /// the queue first if it is full. Gives the frame back when `t` has no
    /// entry (the caller counts the redirect as aborted).
    /// Context: owning RX lcore, inside one poll.
    #[inline]
    pub fn enqueue(
        &mut self,
        reader: &MapReader,
        t: TargetId,
        frame: Frame,
        stats: &RxStats,
        pool: &mut Pool,
    ) -> Result<(), Frame> {
        let Some(entry) = reader.entry(t) else {
            return Err(frame);
        };
        let i = t.index();
        if self.queues[i].len() >= self.bulk_size {
            Self::flush_one(&mut self.queues[i], entry, stats, pool);
        }
        self.queues[i].push(frame);
        self.pending[i / 64] |= 1 << (i % 64);
        Ok(())
    }

    /// Moves one bulk queue into its entry's ring with one producer-path
    /// call; frames that do not fit are tail-dropped, returned to the RX
    /// lcore's pool and counted (the kernel's `bq_flush_to_queue`).
    #[inline]
    fn flush_one(
        q: &mut ArrayVec<Frame, MAX_BULK>,
        entry: &Entry,
        stats: &RxStats,
        pool: &mut Pool,
    ) {
        let n = q.len() as u64;
        let moved = entry.producer.enqueue_burst(q) as u64;
        if moved > 0 {
            // After the ring's tail store: wake the target if it sleeps.
            entry.waker.notify();
        }
        let c = &stats.enqueue[entry.target.index()];
        c.enqueued.add(moved);
        c.flushes.add(1);
        if moved < n {
            c.drops.add(n - moved);
            pool.recycle_burst(q);
        }
    }

    /// Flushes every non-empty queue (the kernel's `__cpu_map_flush` at the
    /// end of the NAPI poll). After it, this lcore holds no frame for any
    /// entry.
    /// Context: owning RX lcore, end of the poll.
    #[inline]
    pub fn flush(&mut self, reader: &MapReader, stats: &RxStats, pool: &mut Pool) {
        for w in 0..self.pending.len() {
            let mut bits = self.pending[w];
            self.pending[w] = 0;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let q = &mut self.queues[i];
                if q.is_empty() {
                    continue;
                }
                match reader.entry(TargetId(i as u32)) {
                    Some(entry) => Self::flush_one(q, entry, stats, pool),
                    // Cannot happen: the reader is refreshed only between
                    // polls. Were it to, the frames are tail drops of their
                    // key, so `redirect = enqueued + enqueue_drops` holds.
                    None => {
                        stats.enqueue[i].drops.add(q.len() as u64);
                        pool.recycle_burst(q);
                    }
                }
            }
        }
    }

    /// True when no queue holds a frame.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|&w| w == 0)
    }
}

/// An RX lcore's side of the map, as one value: its reader (the entries it
/// may redirect to, and its QSBR slot), its bulk queues, and the counters
/// both keep. What the kernel's `cpu_map_enqueue` and `__cpu_map_flush`
/// reach through per-CPU data. Context: the owning RX lcore.
pub struct Redirector {
    reader: MapReader,
    bulk: BulkQueues,
    stats: Arc<RxStats>,
}

impl Redirector {
    /// `max_entries` bulk queues of `bulk_size` over `reader`, counting into
    /// `stats`.
    pub fn new(reader: MapReader, max_entries: u32, bulk_size: usize, stats: Arc<RxStats>) -> Self {
        Redirector {
            reader,
            bulk: BulkQueues::new(max_entries, bulk_size),
            stats,
        }
    }

    /// Queues `frame` for target `t` ([`BulkQueues::enqueue`]); gives it
    /// back when `t` has no entry.
    #[inline(always)]
    pub fn enqueue(&mut self, t: TargetId, frame: Frame, pool: &mut Pool) -> Result<(), Frame> {
        self.bulk.enqueue(&self.reader, t, frame, &self.stats, pool)
    }

    /// Moves every queue holding frames into its entry's ring
    /// ([`BulkQueues::flush`]): at the end of each poll.
    #[inline]
    pub fn flush(&mut self, pool: &mut Pool) {
        self.bulk.flush(&self.reader, &self.stats, pool);
    }

    /// The reader: which keys have an entry, and the lcore's quiescent
    /// points ([`MapReader::refresh`], offline, sleep and wake).
    #[inline(always)]
    pub fn reader(&mut self) -> &mut MapReader {
        &mut self.reader
    }

    /// The entry of `t` as of the last refresh ([`MapReader::entry`]).
    #[inline(always)]
    pub fn entry(&self, t: TargetId) -> Option<&Arc<Entry>> {
        self.reader.entry(t)
    }
}

/// A target lcore's entries: every entry ever posted to its key that is not
/// yet drained and retired, oldest first.
pub struct TargetView {
    map: Arc<CpuMap>,
    target: TargetId,
    generation: u64,
    entries: Vec<(Arc<Entry>, Consumer<Frame>)>,
}

/// One burst taken from an entry's ring.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Frames taken.
    pub count: usize,
    /// The remote program of the entry they came from.
    pub prog: Option<RemoteProg>,
}

impl TargetView {
    /// The target.
    pub fn target(&self) -> TargetId {
        self.target
    }

    /// Adopts newly posted entries if the map changed.
    /// Context: owning target lcore. One shared load when nothing changed.
    #[inline(always)]
    pub fn refresh(&mut self) {
        let g = self.map.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.refresh_changed(g);
        }
    }

    /// The map changed: take what its mailbox holds. Out of line, so the
    /// hot loop carries only the generation check.
    #[cold]
    #[inline(never)]
    fn refresh_changed(&mut self, g: u64) {
        // try_lock: never wait behind a writer; retry on the next loop.
        let Ok(mut mailbox) = self.map.mailboxes[self.target.index()].try_lock() else {
            return;
        };
        Self::adopt(&mut self.entries, &mut mailbox);
        self.generation = g;
    }

    /// Adopts every posted entry, waiting for the mailbox if a writer holds
    /// it. Context: target lcore at shutdown (not the hot loop).
    pub fn adopt_all(&mut self) {
        let mut mailbox = self.map.mailboxes[self.target.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Self::adopt(&mut self.entries, &mut mailbox);
    }

    fn adopt(entries: &mut Vec<(Arc<Entry>, Consumer<Frame>)>, mailbox: &mut VecDeque<Arc<Entry>>) {
        while let Some(e) = mailbox.pop_front() {
            let consumer = e.consumer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(c) = consumer {
                entries.push((e, c));
            }
        }
    }

    /// Dequeues one burst from the oldest entry that has frames, and drops
    /// entries that are retired and empty. Returns the count and the program
    /// of the entry the frames came from.
    /// Context: owning target lcore.
    #[inline(always)]
    pub fn poll<const N: usize>(&mut self, out: &mut ArrayVec<Frame, N>, max: usize) -> Taken {
        let mut i = 0;
        while i < self.entries.len() {
            let (entry, cons) = &mut self.entries[i];
            // Checked before the dequeue: if the grace period is over, the
            // reader states it read (Q2, pairing with Q1 in each RX lcore's
            // quiescent store) make every enqueue into this entry visible.
            let replaced_at = entry.replaced_at.load(Ordering::Acquire);
            let retired = replaced_at != 0 && self.map.qsbr.passed(replaced_at);
            let n = cons.dequeue_up_to(out, max);
            if n > 0 {
                return Taken {
                    count: n,
                    prog: entry.prog.clone(),
                };
            }
            if retired {
                // Drained for good: the entry's last reference goes away here
                // or with the map slot, whichever is later.
                self.entries.remove(i);
                continue;
            }
            i += 1;
        }
        Taken {
            count: 0,
            prog: None,
        }
    }

    /// This target's sleep/wake handle.
    pub fn waker(&self) -> &Arc<Waker> {
        self.map
            .waker(self.target)
            .expect("a target view exists only for a served target")
    }

    /// True when the map changed since the last refresh (the sleeper's
    /// re-check: a new entry may hold frames).
    pub fn changed(&self) -> bool {
        self.map.generation.load(Ordering::SeqCst) != self.generation
    }

    /// True when every entry's ring is empty (racy unless RX has stopped).
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|(_, c)| c.is_empty())
    }

    /// Entries held (current plus draining).
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
