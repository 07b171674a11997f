//! The maps an eBPF object declares, in userspace: ARRAY, PERCPU_ARRAY
//! (one copy per lcore), HASH and PERCPU_HASH with kernel semantics, the
//! object's global data (`.rodata`, `.data`, `.bss`: one-element ARRAYs, as
//! libbpf makes them, `.rodata` read-only to programs), DEVMAP and
//! DEVMAP_HASH as storage (ifindex values the control plane can read and
//! write), and CPUMAP, whose entries are the dataplane's: a program sees
//! only whether a key has one (the `has` of [`Instance::run`](crate::Instance::run)).
//!
//! # General idea
//!
//! Storage is allocated once at load, as words (`AtomicU64`), so every lcore
//! running the program can read and write values without a lock and without
//! a data race: a program's byte-sized load or store is a relaxed atomic on
//! the word holding it (a store of part of a word is a compare-exchange
//! loop). Like the kernel, two lcores updating the same shared value
//! concurrently can interleave (use PERCPU_ARRAY for counters); nothing is
//! ever torn below a byte. Programs hold value pointers: storage is never
//! moved or freed while the program is loaded. A deleted HASH slot is
//! reused by a later insert, as the kernel's preallocated hash maps reuse
//! their elements at once: a program still holding a deleted entry's value
//! pointer writes into whatever entry owns the slot now, as in the kernel.
//!
//! The HASH map is open addressing over `2 * max_entries` slots (a power of
//! two), each a state word, the key and the value. The state word holds the
//! slot's state (empty, being written, full, deleted), an LRU reference bit
//! and a generation bumped each time the slot is claimed. An insert claims
//! the first empty or deleted slot from the key's home with one
//! compare-exchange; a lookup compares the key of a full slot and then
//! checks that the state word did not change meanwhile (a seqlock: a slot
//! deleted and reused under the reader is not mistaken for the key). A
//! lookup probes at most as far from home as any insert ever placed a key
//! (`max_disp`), so deleted slots never make a miss scan the table. A
//! delete is one compare-exchange from the full state it saw: of two
//! racing deletes (or a delete and an LRU eviction) one wins and the entry
//! count stays exact. LRU_HASH / LRU_PERCPU_HASH never refuse an insert for
//! being full: a clock hand sweeps the slots, clearing the reference bit a
//! lookup set, and evicts the first full slot whose bit is clear (the
//! kernel's LRU is a list per CPU; which entry goes first differs, that one
//! goes is the same). No allocation after load.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use crate::abi::errno::{E2BIG, EEXIST, EINVAL, ENOENT};
use crate::abi::{map_type, update};

/// Map types (the kernel's `BPF_MAP_TYPE_*` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`: one copy per lcore.
    PerCpuArray,
    /// `BPF_MAP_TYPE_PERCPU_HASH`: one value per lcore under each key.
    PerCpuHash,
    /// `BPF_MAP_TYPE_DEVMAP`: index -> `struct bpf_devmap_val`, stored like
    /// an ARRAY (redirecting into it is refused at load).
    DevMap,
    /// `BPF_MAP_TYPE_DEVMAP_HASH`: the same, keyed like a HASH.
    DevMapHash,
    /// `BPF_MAP_TYPE_LPM_TRIE`: keys `{u32 prefixlen; u8 data[]}`, a lookup
    /// finds the longest stored prefix of the key. Stored as a HASH of
    /// masked prefixes plus the set of prefix lengths present; a lookup
    /// probes the present lengths, longest first (at most 8 * data + 1).
    LpmTrie,
    /// `BPF_MAP_TYPE_CPUMAP`: cpumapd's own map.
    CpuMap,
    /// `BPF_MAP_TYPE_LRU_HASH`: a HASH that evicts the least recently used
    /// entry (approximately: a clock) instead of refusing when full.
    LruHash,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`: the same, one value per lcore.
    LruPerCpuHash,
    /// `BPF_MAP_TYPE_PROG_ARRAY`: index -> a program of the same object for
    /// `bpf_tail_call`, stored like an ARRAY of u32 (0: empty, n: the
    /// object's tail program n - 1). Filled at load (`--prog-array`);
    /// programs may only tail-call through it.
    ProgArray,
    /// `BPF_MAP_TYPE_QUEUE`: FIFO of values (no keys), `bpf_map_push_elem`
    /// / `pop` / `peek`; see [`Map::push`].
    Queue,
    /// `BPF_MAP_TYPE_STACK`: the same, LIFO.
    Stack,
}

impl MapKind {
    /// The kind of a kernel map type number (None: not supported).
    pub fn from_kernel(t: u32) -> Option<MapKind> {
        match t {
            map_type::HASH => Some(MapKind::Hash),
            map_type::ARRAY => Some(MapKind::Array),
            map_type::PERCPU_ARRAY => Some(MapKind::PerCpuArray),
            map_type::PERCPU_HASH => Some(MapKind::PerCpuHash),
            map_type::DEVMAP => Some(MapKind::DevMap),
            map_type::DEVMAP_HASH => Some(MapKind::DevMapHash),
            map_type::LPM_TRIE => Some(MapKind::LpmTrie),
            map_type::CPUMAP => Some(MapKind::CpuMap),
            map_type::LRU_HASH => Some(MapKind::LruHash),
            map_type::LRU_PERCPU_HASH => Some(MapKind::LruPerCpuHash),
            map_type::PROG_ARRAY => Some(MapKind::ProgArray),
            map_type::QUEUE => Some(MapKind::Queue),
            map_type::STACK => Some(MapKind::Stack),
            _ => None,
        }
    }

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::Array => "array",
            MapKind::PerCpuArray => "percpu_array",
            MapKind::PerCpuHash => "percpu_hash",
            MapKind::DevMap => "devmap",
            MapKind::DevMapHash => "devmap_hash",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::CpuMap => "cpumap",
            MapKind::LruHash => "lru_hash",
            MapKind::LruPerCpuHash => "lru_percpu_hash",
            MapKind::ProgArray => "prog_array",
            MapKind::Queue => "queue",
            MapKind::Stack => "stack",
        }
    }

    /// Indexed by a u32 below max_entries, every element always there.
    fn is_array(self) -> bool {
        matches!(
            self,
            MapKind::Array | MapKind::PerCpuArray | MapKind::DevMap | MapKind::ProgArray
        )
    }

    /// Open-addressed keys.
    fn is_hash(self) -> bool {
        matches!(
            self,
            MapKind::Hash
                | MapKind::PerCpuHash
                | MapKind::DevMapHash
                | MapKind::LpmTrie
                | MapKind::LruHash
                | MapKind::LruPerCpuHash
        )
    }

    /// Values only, pushed and popped (no keys).
    pub fn is_queue_or_stack(self) -> bool {
        matches!(self, MapKind::Queue | MapKind::Stack)
    }

    /// Evicts instead of refusing when full.
    pub fn is_lru(self) -> bool {
        matches!(self, MapKind::LruHash | MapKind::LruPerCpuHash)
    }

    /// One value per lcore (MAX_LCORES copies).
    pub fn per_cpu(self) -> bool {
        matches!(
            self,
            MapKind::PerCpuArray | MapKind::PerCpuHash | MapKind::LruPerCpuHash
        )
    }
}

/// Copies of a PERCPU map: one per lcore id below this.
pub const MAX_LCORES: usize = 128;
/// Largest value a map may hold.
pub const MAX_VALUE_SIZE: u32 = 4096;
/// Largest storage a map may take (words).
const MAX_WORDS: usize = 1 << 25;

/// Map file descriptors as programs see them (`ld_imm64` of a map): our
/// index plus this base.
pub const MAP_FD_BASE: i32 = 0x4000;

#[derive(Clone, Debug, PartialEq, Eq)]
/// A map as the object declares it.
pub struct MapDef {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: MapKind,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Entries.
    pub max_entries: u32,
    /// Programs may not write it (`.rodata`, libbpf's BPF_F_RDONLY_PROG).
    pub readonly: bool,
    /// The object's `map_flags` as declared (BPF_F_MMAPABLE and the like;
    /// kept to describe the map, e.g. to create its twin in the kernel).
    pub flags: u32,
    /// Declared with `pinning = LIBBPF_PIN_BY_NAME`: shared by name with
    /// the run's other objects.
    pub pinned: bool,
    /// Initial contents of element 0 (a global data section's bytes, after
    /// the values set before load); empty for other maps.
    pub init: Vec<u8>,
    /// A map of a type cpumapd does not have, declared by an object: why.
    /// It keeps its place (its fd) in the object's map list as a one-entry
    /// array no program may reference, so the object's other programs
    /// still load.
    pub unsupported: Option<String>,
}

impl MapDef {
    /// A map with no initial contents, writable.
    pub fn new(
        name: &str,
        kind: MapKind,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Self {
        MapDef {
            name: name.into(),
            kind,
            key_size,
            value_size,
            max_entries,
            readonly: false,
            flags: 0,
            pinned: false,
            init: Vec::new(),
            unsupported: None,
        }
    }
}

// A HASH slot's state word: bits 0-1 the state, bit 2 the LRU reference
// bit, the rest a generation bumped each time the slot is claimed.
const EMPTY: u64 = 0;
const BUSY: u64 = 1;
const FULL: u64 = 2;
const DELETED: u64 = 3;
const STATE: u64 = 3;
const REF: u64 = 4;
const GEN_ONE: u64 = 8;

/// One map's storage.
pub struct Map {
    /// Its declaration.
    pub def: MapDef,
    words: Box<[AtomicU64]>,
    /// Words per value (and per key, for HASH).
    vw: usize,
    kw: usize,
    /// Values per element: MAX_LCORES for PERCPU kinds, else 1.
    copies: usize,
    /// HASH: slots (a power of two) and live entries; QUEUE/STACK: slots
    /// (max_entries rounded up to a power of two).
    slots: usize,
    len: AtomicU32,
    /// HASH: the farthest from its home slot any insert placed a key (a
    /// lookup probes no farther).
    max_disp: AtomicUsize,
    /// LRU: the clock hand (a slot index, taken modulo `slots`).
    hand: AtomicUsize,
    /// LPM_TRIE: bit n set when a prefix of length n was ever stored.
    lengths: Box<[AtomicU64]>,
}

/// A held QUEUE/STACK spinlock; released on drop.
struct QsGuard<'a>(&'a AtomicU64);

impl Drop for QsGuard<'_> {
    fn drop(&mut self) {
        // Q2: Release; pairs with Q1 (the next holder sees the ends and
        // values written under the lock).
        self.0.store(0, Ordering::Release);
    }
}

/// Largest LPM_TRIE key data (an IPv6 address and then some).
const LPM_MAX_DATA: usize = 32;

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map").field("def", &self.def).finish()
    }
}

fn words_for(bytes: u32) -> usize {
    (bytes as usize).div_ceil(8)
}

/// Reads `out.len()` bytes at byte offset `off` of `w` (little-endian words).
pub fn read_bytes(w: &[AtomicU64], off: usize, out: &mut [u8]) -> Option<()> {
    let end = off.checked_add(out.len())?;
    if end > w.len() * 8 {
        return None;
    }
    let mut i = 0;
    while i < out.len() {
        let (wi, bi) = ((off + i) / 8, (off + i) % 8);
        let bytes = w[wi].load(Ordering::Relaxed).to_le_bytes();
        let n = (8 - bi).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[bi..bi + n]);
        i += n;
    }
    Some(())
}

/// Writes `src` at byte offset `off` of `w`; whole words are stored, parts
/// of words are merged with a compare-exchange loop.
pub fn write_bytes(w: &[AtomicU64], off: usize, src: &[u8]) -> Option<()> {
    let end = off.checked_add(src.len())?;
    if end > w.len() * 8 {
        return None;
    }
    let mut i = 0;
    while i < src.len() {
        let (wi, bi) = ((off + i) / 8, (off + i) % 8);
        let n = (8 - bi).min(src.len() - i);
        if n == 8 {
            let v = u64::from_le_bytes(src[i..i + 8].try_into().expect("8 bytes"));
            w[wi].store(v, Ordering::Relaxed);
        } else {
            let _ = w[wi].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let mut b = old.to_le_bytes();
                b[bi..bi + n].copy_from_slice(&src[i..i + n]);
                Some(u64::from_le_bytes(b))
            });
        }
        i += n;
    }
    Some(())
}

/// Calls `f` with `len` zeroed scratch bytes (a helper's copy of a value):
/// a 64-byte buffer for the usual sizes, a MAX_VALUE_SIZE one (out of
/// line) otherwise; None past that.
#[inline(always)]
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if len <= 64 {
        let mut b = [0u8; 64];
        Some(f(&mut b[..len]))
    } else {
        with_large_scratch(len, f)
    }
}

/// Kept out of line and cold: a 4 KiB buffer in a helper's own frame made
/// every JIT helper call probe the stack page by page (two thirds of a JIT
/// run's time when it was inline).
#[cold]
#[inline(never)]
fn with_large_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let mut b = [0u8; MAX_VALUE_SIZE as usize];
    Some(f(b.get_mut(..len)?))
}

/// Zeroes the bits of `data` past its first `plen` (an LPM prefix).
fn mask_prefix(data: &mut [u8], plen: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        let keep = plen.saturating_sub(i * 8).min(8);
        *b &= (0xff00u16 >> keep) as u8;
    }
}

fn hash_key(key: &[u8]) -> u64 {
    // FNV-1a: keys are small; the table is sized at twice the entries.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Map {
    /// Allocates the map's storage once (no allocation after load).
    pub fn new(def: MapDef) -> Result<Map, String> {
        let name = def.name.clone();
        let bad = |why: String| Err(format!("map '{name}': {why}"));
        if def.max_entries == 0 {
            return bad("max_entries is 0".into());
        }
        if def.kind != MapKind::CpuMap && (def.value_size == 0 || def.value_size > MAX_VALUE_SIZE) {
            return bad(format!(
                "value size {} is not in 1..={MAX_VALUE_SIZE}",
                def.value_size
            ));
        }
        if def.kind == MapKind::ProgArray && def.value_size != 4 {
            return bad(format!(
                "prog_array values are 4 bytes (a program), not {}",
                def.value_size
            ));
        }
        let (vw, kw) = (words_for(def.value_size), words_for(def.key_size));
        let copies = if def.kind.per_cpu() { MAX_LCORES } else { 1 };
        let (words, slots) = if def.kind.is_queue_or_stack() {
            if def.key_size != 0 {
                return bad(format!(
                    "{} maps have no keys: key size must be 0, not {}",
                    def.kind.name(),
                    def.key_size
                ));
            }
            if def.max_entries > 1 << 30 {
                return bad(format!("max_entries {} is above 2^30", def.max_entries));
            }
            // The lock word, the ends word, the values; slots a power of
            // two (a mask, not a division, finds one).
            let slots = (def.max_entries as usize).next_power_of_two();
            (2 + slots * vw, slots)
        } else if def.kind.is_array() {
            if def.key_size != 4 {
                return bad(format!(
                    "{} keys are 4 bytes, not {}",
                    def.kind.name(),
                    def.key_size
                ));
            }
            (def.max_entries as usize * vw * copies, 0)
        } else if def.kind.is_hash() {
            if def.key_size == 0 || def.key_size > 512 {
                return bad(format!("key size {} is not in 1..=512", def.key_size));
            }
            let slots = (def.max_entries as usize * 2).next_power_of_two();
            (slots * (1 + kw + vw * copies), slots)
        } else {
            (0, 0)
        };
        if def.kind == MapKind::LpmTrie && !(5..=4 + LPM_MAX_DATA as u32).contains(&def.key_size) {
            return bad(format!(
                "lpm_trie keys are a 4-byte prefix length and 1 to {LPM_MAX_DATA} bytes of data, not {} bytes",
                def.key_size
            ));
        }
        if !def.init.is_empty()
            && (!def.kind.is_array() || def.init.len() > def.value_size as usize)
        {
            return bad(format!(
                "{} bytes of initial data for a {} of {}-byte values",
                def.init.len(),
                def.kind.name(),
                def.value_size
            ));
        }
        if words > MAX_WORDS {
            return bad(format!(
                "{} entries of {} bytes need {} MiB, more than the {} MiB a map may take",
                def.max_entries,
                def.value_size,
                (words * 8) >> 20,
                (MAX_WORDS * 8) >> 20
            ));
        }
        let words: Box<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        write_bytes(&words, 0, &def.init);
        let lengths = (0..(LPM_MAX_DATA * 8 + 1).div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Map {
            def,
            words,
            vw,
            kw,
            copies,
            slots,
            len: AtomicU32::new(0),
            max_disp: AtomicUsize::new(0),
            hand: AtomicUsize::new(0),
            lengths,
        })
    }

    // QUEUE and STACK, as the kernel's queue_stack_maps.c: a ring of
    // `slots` values (max_entries rounded up to a power of two) with its
    // head (the oldest, low 32 bits of words[1]) and tail (one past the
    // newest, high 32), under a per-map spinlock (words[0]) held for one
    // value's copy. The kernel takes a raw spinlock here too; it is the one
    // lock on a program's path, and only programs that use these maps take
    // it. A lock-free ring does not fit a STACK: its positions are reused
    // at once (pop, then push at the same place), and a thread that read
    // the ends before the pop and the push cannot tell. A thread preempted
    // holding the lock stalls the others for its time slice (the kernel
    // disables preemption; pinned lcores on their own CPUs rarely are).

    fn qs_lock(&self) -> QsGuard<'_> {
        // Q1: Acquire; pairs with Q2 (what the last holder wrote).
        while self.words[0]
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        QsGuard(&self.words[0])
    }

    fn qs_ends(&self) -> (u32, u32) {
        let e = self.words[1].load(Ordering::Relaxed);
        (e as u32, (e >> 32) as u32)
    }

    fn qs_set_ends(&self, h: u32, t: u32) {
        self.words[1].store(h as u64 | (t as u64) << 32, Ordering::Relaxed);
    }

    fn qs_value(&self, pos: u32) -> &[AtomicU64] {
        let at = 2 + (pos as usize & (self.slots - 1)) * self.vw;
        &self.words[at..at + self.vw]
    }

    /// `bpf_map_push_elem`: 0, -E2BIG when full (unless `flags` is
    /// BPF_EXIST: the oldest element makes room), -EINVAL for other flags
    /// or a value of the wrong size.
    /// Context: any lcore; allocates nothing; takes the map's spinlock.
    pub fn push(&self, value: &[u8], flags: u64) -> i64 {
        use crate::abi::{errno, update};
        if flags & update::NOEXIST != 0
            || flags > update::EXIST
            || value.len() != self.def.value_size as usize
            || !self.def.kind.is_queue_or_stack()
        {
            return -errno::EINVAL;
        }
        let _g = self.qs_lock();
        let (mut h, t) = self.qs_ends();
        if t.wrapping_sub(h) >= self.def.max_entries {
            if flags & update::EXIST == 0 {
                return -errno::E2BIG;
            }
            // The oldest makes room, for both kinds (as the kernel).
            h = h.wrapping_add(1);
        }
        write_bytes(self.qs_value(t), 0, value);
        self.qs_set_ends(h, t.wrapping_add(1));
        0
    }

    /// `bpf_map_pop_elem`: the oldest (QUEUE) or newest (STACK) value into
    /// `out`, removed; -ENOENT when empty.
    /// Context: any lcore; allocates nothing; takes the map's spinlock.
    pub fn pop(&self, out: &mut [u8]) -> i64 {
        self.qs_take(out, true)
    }

    /// `bpf_map_peek_elem`: the value pop would return, left in place;
    /// -ENOENT when empty.
    /// Context: any lcore; allocates nothing; takes the map's spinlock.
    pub fn peek(&self, out: &mut [u8]) -> i64 {
        self.qs_take(out, false)
    }

    fn qs_take(&self, out: &mut [u8], remove: bool) -> i64 {
        if out.len() != self.def.value_size as usize || !self.def.kind.is_queue_or_stack() {
            return -crate::abi::errno::EINVAL;
        }
        let _g = self.qs_lock();
        let (h, t) = self.qs_ends();
        if h == t {
            return -crate::abi::errno::ENOENT;
        }
        let lifo = self.def.kind == MapKind::Stack;
        let pos = if lifo { t.wrapping_sub(1) } else { h };
        read_bytes(self.qs_value(pos), 0, out);
        if remove {
            if lifo {
                self.qs_set_ends(h, pos);
            } else {
                self.qs_set_ends(h.wrapping_add(1), t);
            }
        }
        0
    }

    /// QUEUE/STACK: the values held, oldest first (control plane, tests).
    pub fn queued(&self) -> Vec<Vec<u8>> {
        let _g = self.qs_lock();
        let (h, t) = self.qs_ends();
        (0..t.wrapping_sub(h))
            .map(|k| {
                let mut v = vec![0u8; self.def.value_size as usize];
                read_bytes(self.qs_value(h.wrapping_add(k)), 0, &mut v);
                v
            })
            .collect()
    }

    /// The whole storage, for address translation by the interpreter.
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }

    /// ARRAY / PERCPU_ARRAY: word index of element 0 of copy `cpu`, and
    /// words per element (what an inlined lookup computes from). None for
    /// other kinds.
    pub fn array_layout(&self, cpu: usize) -> Option<(usize, usize)> {
        let copy = match self.def.kind {
            MapKind::Array | MapKind::DevMap => 0,
            MapKind::PerCpuArray => cpu.min(MAX_LCORES - 1),
            _ => return None,
        };
        Some((copy * self.def.max_entries as usize * self.vw, self.vw))
    }

    /// Word index of the value for `key` (ARRAY / PERCPU_ARRAY copy `cpu`).
    fn array_index(&self, key: &[u8], cpu: usize) -> Option<usize> {
        let k = u32::from_le_bytes(key.get(..4)?.try_into().ok()?);
        if k >= self.def.max_entries {
            return None;
        }
        Some((self.copy_of(cpu) * self.def.max_entries as usize + k as usize) * self.vw)
    }

    fn slot_base(&self, s: usize) -> usize {
        s * (1 + self.kw + self.vw * self.copies)
    }

    /// Word index of copy `cpu` of the value in slot `s`.
    fn slot_value(&self, s: usize, cpu: usize) -> usize {
        self.slot_base(s) + 1 + self.kw + self.copy_of(cpu) * self.vw
    }

    /// Which copy of a value lcore `cpu` uses: its own in a PERCPU map.
    fn copy_of(&self, cpu: usize) -> usize {
        if self.copies > 1 {
            cpu.min(MAX_LCORES - 1)
        } else {
            0
        }
    }

    fn key_matches(&self, s: usize, key: &[u8]) -> bool {
        let at = (self.slot_base(s) + 1) * 8;
        if key.len() <= 64 {
            let mut buf = [0u8; 64];
            let k = &mut buf[..key.len()];
            read_bytes(&self.words, at, k).is_some() && k == key
        } else {
            let mut buf = [0u8; 512];
            let k = &mut buf[..key.len()];
            read_bytes(&self.words, at, k).is_some() && k == key
        }
    }

    /// HASH: the slot holding `key`, if any.
    fn hash_find(&self, key: &[u8]) -> Option<usize> {
        let mask = self.slots - 1;
        let mut s = hash_key(key) as usize & mask;
        // D1: Acquire; pairs with D0 in claim_slot (a key placed farther
        // than before is published before its slot is).
        let reach = self.max_disp.load(Ordering::Acquire).min(mask);
        for _ in 0..=reach {
            let st = &self.words[self.slot_base(s)];
            let w = st.load(Ordering::Acquire);
            match w & STATE {
                EMPTY => return None,
                FULL if self.key_matches(s, key) => {
                    // Seqlock read: the key bytes are read before the state
                    // is read again (S1 pairs with S0 in claim_slot); the
                    // same state and generation mean the key was stable.
                    fence(Ordering::Acquire);
                    if (st.load(Ordering::Relaxed) ^ w) & !REF == 0 {
                        return Some(s);
                    }
                }
                _ => {}
            }
            s = (s + 1) & mask;
        }
        None
    }

    /// LRU: marks slot `s` used (one load when it already is).
    #[inline]
    fn touch(&self, s: usize) {
        let st = &self.words[self.slot_base(s)];
        if st.load(Ordering::Relaxed) & REF == 0 {
            st.fetch_or(REF, Ordering::Relaxed);
        }
    }

    /// `bpf_map_lookup_elem`: the word index of the value, or None.
    /// Context: any lcore; `cpu` picks the PERCPU copy.
    pub fn lookup(&self, key: &[u8], cpu: usize) -> Option<usize> {
        if self.def.kind == MapKind::LpmTrie {
            return self.lpm_lookup(key);
        }
        if self.def.kind.is_array() {
            self.array_index(key, cpu)
        } else if self.def.kind.is_hash() {
            let s = self.hash_find(key)?;
            if self.def.kind.is_lru() {
                self.touch(s);
            }
            Some(self.slot_value(s, cpu))
        } else {
            None
        }
    }

    /// The LPM key `key` with its data masked to its prefix length, or None
    /// when the length exceeds the data.
    fn lpm_masked(&self, key: &[u8], out: &mut [u8; 4 + LPM_MAX_DATA]) -> Option<usize> {
        let data = key.len().checked_sub(4)?;
        let plen = u32::from_le_bytes(key[..4].try_into().ok()?) as usize;
        if plen > data * 8 || data > LPM_MAX_DATA {
            return None;
        }
        out[..key.len()].copy_from_slice(key);
        mask_prefix(&mut out[4..key.len()], plen);
        Some(key.len())
    }

    /// LPM_TRIE lookup: the longest stored prefix of `key`'s data no longer
    /// than its prefix length. Allocation-free: at most 8 * data + 1 probes
    /// of the lengths present.
    fn lpm_lookup(&self, key: &[u8]) -> Option<usize> {
        let data = key.len().checked_sub(4)?;
        let max = (u32::from_le_bytes(key.get(..4)?.try_into().ok()?) as usize).min(data * 8);
        if data > LPM_MAX_DATA {
            return None;
        }
        let mut probe = [0u8; 4 + LPM_MAX_DATA];
        for plen in (0..=max).rev() {
            if self.lengths[plen / 64].load(Ordering::Acquire) & (1 << (plen % 64)) == 0 {
                continue;
            }
            probe[..4].copy_from_slice(&(plen as u32).to_le_bytes());
            probe[4..key.len()].copy_from_slice(&key[4..]);
            mask_prefix(&mut probe[4..key.len()], plen);
            if let Some(s) = self.hash_find(&probe[..key.len()]) {
                return Some(self.slot_value(s, 0));
            }
        }
        None
    }

    /// DEVMAP / DEVMAP_HASH: the ifindex stored under `key` (the first
    /// field of `struct bpf_devmap_val`), None when absent or 0. The
    /// kernel checks at update time that the interface exists; cpumapd
    /// finds out when it transmits (a counted redirect failure).
    pub fn devmap_ifindex(&self, key: u32) -> Option<u32> {
        self.devmap_entry(key).map(|(ifindex, _)| ifindex)
    }

    /// DEVMAP / DEVMAP_HASH: the ifindex under `key` and the entry's egress
    /// program (the second field of an 8-byte `struct bpf_devmap_val`, as
    /// cpumapd stores it: 0 none, n the object's egress program n - 1).
    #[inline]
    pub fn devmap_entry(&self, key: u32) -> Option<(u32, u32)> {
        if !matches!(self.def.kind, MapKind::DevMap | MapKind::DevMapHash) {
            return None;
        }
        let w = self.lookup(&key.to_le_bytes(), 0)?;
        let v = self.words[w].load(Ordering::Relaxed);
        let (ifindex, prog) = (v as u32, (v >> 32) as u32);
        let prog = if self.def.value_size >= 8 { prog } else { 0 };
        (ifindex != 0).then_some((ifindex, prog))
    }

    /// PROG_ARRAY: the tail program stored under `key` (an index into the
    /// object's tail programs), None when empty or out of range.
    #[inline]
    pub fn prog_slot(&self, key: u32) -> Option<u32> {
        if self.def.kind != MapKind::ProgArray || key >= self.def.max_entries {
            return None;
        }
        let v = self.words[key as usize * self.vw].load(Ordering::Acquire) as u32;
        v.checked_sub(1)
    }

    /// `bpf_map_update_elem`: 0 or a negative errno.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> i64 {
        if flags > update::EXIST || value.len() != self.def.value_size as usize {
            return -EINVAL;
        }
        if self.def.kind == MapKind::LpmTrie {
            let mut masked = [0u8; 4 + LPM_MAX_DATA];
            let Some(n) = self.lpm_masked(key, &mut masked) else {
                return -EINVAL;
            };
            let rc = self.hash_update(&masked[..n], value, flags, 0);
            if rc == 0 {
                let plen = u32::from_le_bytes(key[..4].try_into().expect("4")) as usize;
                // L1: Release; pairs with the Acquire in lpm_lookup (the
                // entry is published by H2 before the length is).
                self.lengths[plen / 64].fetch_or(1 << (plen % 64), Ordering::Release);
            }
            return rc;
        }
        if self.def.kind.is_array() {
            if flags == update::NOEXIST {
                return -EEXIST; // every array element exists
            }
            return match self.array_index(key, cpu) {
                Some(i) => {
                    write_bytes(&self.words, i * 8, value);
                    0
                }
                None => -E2BIG,
            };
        }
        if !self.def.kind.is_hash() {
            return -EINVAL;
        }
        self.hash_update(key, value, flags, cpu)
    }

    /// HASH-style insert or replace of `key` (copy `cpu` of the value).
    fn hash_update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> i64 {
        if let Some(s) = self.hash_find(key) {
            if flags == update::NOEXIST {
                return -EEXIST;
            }
            write_bytes(&self.words, self.slot_value(s, cpu) * 8, value);
            if self.def.kind.is_lru() {
                self.touch(s);
            }
            return 0;
        }
        if flags == update::EXIST {
            return -ENOENT;
        }
        // Reserve an entry first, so racing inserts never exceed
        // max_entries; an LRU map makes room instead of refusing.
        while self.len.fetch_add(1, Ordering::Relaxed) >= self.def.max_entries {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if !self.def.kind.is_lru() || !self.evict_one() {
                return -E2BIG;
            }
        }
        match self.claim_slot(key) {
            Some(s) => {
                write_bytes(&self.words, self.slot_value(s, cpu) * 8, value);
                // H2: Release; pairs with the Acquire in hash_find.
                let st = &self.words[self.slot_base(s)];
                st.store(
                    (st.load(Ordering::Relaxed) & !STATE) | FULL,
                    Ordering::Release,
                );
                0
            }
            None => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                -E2BIG
            }
        }
    }

    /// Claims the first empty or deleted slot from `key`'s home (state
    /// BUSY, generation bumped), writes the key, zeroes every copy of the
    /// value of a reused slot, and returns it. None only if every slot is
    /// taken, which the entry count rules out.
    fn claim_slot(&self, key: &[u8]) -> Option<usize> {
        let mask = self.slots - 1;
        let home = hash_key(key) as usize & mask;
        for d in 0..self.slots {
            let s = (home + d) & mask;
            let st = &self.words[self.slot_base(s)];
            let w = st.load(Ordering::Relaxed);
            let state = w & STATE;
            if state != EMPTY && state != DELETED {
                continue;
            }
            let busy = ((w & !(STATE | REF)) + GEN_ONE) | BUSY;
            // H1: claim; Acquire orders the writes below after it.
            if st
                .compare_exchange(w, busy, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // S0: Release fence; pairs with S1 in hash_find: a reader that
            // sees the new key bytes sees BUSY (or later) on its re-check.
            fence(Ordering::Release);
            // D0: Release; pairs with D1 in hash_find.
            self.max_disp.fetch_max(d, Ordering::Release);
            if state == DELETED {
                let base = self.slot_base(s) + 1 + self.kw;
                for w in &self.words[base..base + self.vw * self.copies] {
                    w.store(0, Ordering::Relaxed);
                }
            }
            write_bytes(&self.words, (self.slot_base(s) + 1) * 8, key);
            return Some(s);
        }
        None
    }

    /// Deletes slot `s` if its state word is still `w` (full): one
    /// compare-exchange, so of two racing deletes or evictions one wins.
    fn remove_slot(&self, s: usize, w: u64) -> bool {
        let gone = (w & !(STATE | REF)) | DELETED;
        let ok = self.words[self.slot_base(s)]
            .compare_exchange(w, gone, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }

    /// LRU: moves the clock hand until it evicts a full slot not used
    /// since the hand last passed (clearing reference bits on the way).
    /// False if two turns found nothing to evict (every slot busy).
    fn evict_one(&self) -> bool {
        for _ in 0..2 * self.slots {
            let s = self.hand.fetch_add(1, Ordering::Relaxed) & (self.slots - 1);
            let st = &self.words[self.slot_base(s)];
            let w = st.load(Ordering::Relaxed);
            if w & STATE != FULL {
                continue;
            }
            if w & REF != 0 {
                st.fetch_and(!REF, Ordering::Relaxed);
            } else if self.remove_slot(s, w) {
                return true;
            }
        }
        false
    }

    /// `bpf_map_delete_elem`: 0 or a negative errno.
    pub fn delete(&self, key: &[u8]) -> i64 {
        let mut masked = [0u8; 4 + LPM_MAX_DATA];
        let key = if self.def.kind == MapKind::LpmTrie {
            // The exact prefix only (the kernel's trie_delete_elem).
            match self.lpm_masked(key, &mut masked) {
                Some(n) => &masked[..n],
                None => return -EINVAL,
            }
        } else if self.def.kind.is_hash() {
            key
        } else {
            // Array elements cannot be deleted (kernel: EINVAL).
            return -EINVAL;
        };
        loop {
            let Some(s) = self.hash_find(key) else {
                return -ENOENT;
            };
            let w = self.words[self.slot_base(s)].load(Ordering::Acquire);
            if w & STATE == FULL && self.remove_slot(s, w) {
                return 0;
            }
            // Deleted or reused under us: look again.
        }
    }

    /// Every entry: key bytes and, per copy (PERCPU: per lcore), value bytes.
    /// Context: control plane; racy against running programs, like
    /// `bpftool map dump`.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let vs = self.def.value_size as usize;
        let mut out = Vec::new();
        if self.def.kind.is_array() {
            for k in 0..self.def.max_entries {
                let key = k.to_le_bytes();
                let vals = (0..self.copies)
                    .map(|c| {
                        let mut v = vec![0u8; vs];
                        let i = self.array_index(&key, c).expect("k < max_entries");
                        read_bytes(&self.words, i * 8, &mut v);
                        v
                    })
                    .collect();
                out.push((key.to_vec(), vals));
            }
        } else if self.def.kind.is_hash() {
            for s in 0..self.slots {
                if self.words[self.slot_base(s)].load(Ordering::Acquire) & STATE != FULL {
                    continue;
                }
                let mut k = vec![0u8; self.def.key_size as usize];
                read_bytes(&self.words, (self.slot_base(s) + 1) * 8, &mut k);
                let vals = (0..self.copies)
                    .map(|c| {
                        let mut v = vec![0u8; vs];
                        read_bytes(&self.words, self.slot_value(s, c) * 8, &mut v);
                        v
                    })
                    .collect();
                out.push((k, vals));
            }
        } else if self.def.kind.is_queue_or_stack() {
            // No keys: the position from the oldest, as `bpftool map dump`
            // cannot show them at all.
            for (i, v) in self.queued().into_iter().enumerate() {
                out.push(((i as u32).to_le_bytes().to_vec(), vec![v]));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(kind: MapKind, key: u32, value: u32, n: u32) -> MapDef {
        MapDef::new("m", kind, key, value, n)
    }

    #[test]
    fn byte_access_over_words_round_trips() {
        let w: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        write_bytes(&w, 5, &[1, 2, 3, 4, 5, 6, 7]).unwrap();
        let mut out = [0u8; 7];
        read_bytes(&w, 5, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7]);
        assert!(read_bytes(&w, 30, &mut out).is_none(), "past the end");
        assert!(write_bytes(&w, usize::MAX, &[1]).is_none(), "overflow");
    }

    #[test]
    fn array_and_percpu_follow_the_kernel() {
        let a = Map::new(def(MapKind::Array, 4, 8, 4)).unwrap();
        assert_eq!(a.update(&1u32.to_le_bytes(), &[7; 8], update::ANY, 0), 0);
        assert_eq!(
            a.update(&1u32.to_le_bytes(), &[7; 8], update::NOEXIST, 0),
            -EEXIST
        );
        assert_eq!(
            a.update(&9u32.to_le_bytes(), &[7; 8], update::ANY, 0),
            -E2BIG
        );
        assert_eq!(a.delete(&1u32.to_le_bytes()), -EINVAL);
        assert!(a.lookup(&4u32.to_le_bytes(), 0).is_none());
        let p = Map::new(def(MapKind::PerCpuArray, 4, 8, 2)).unwrap();
        p.update(&0u32.to_le_bytes(), &5u64.to_le_bytes(), update::ANY, 3);
        let d = p.dump();
        assert_eq!(d[0].1[3], 5u64.to_le_bytes().to_vec(), "lcore 3's copy");
        assert_eq!(d[0].1[2], vec![0; 8], "lcore 2's copy untouched");
    }

    #[test]
    fn hash_inserts_finds_deletes_and_fills_up() {
        let h = Map::new(def(MapKind::Hash, 4, 8, 3)).unwrap();
        for k in 0..3u32 {
            assert_eq!(
                h.update(&k.to_le_bytes(), &[k as u8; 8], update::NOEXIST, 0),
                0
            );
        }
        assert_eq!(
            h.update(&9u32.to_le_bytes(), &[0; 8], update::ANY, 0),
            -E2BIG
        );
        assert_eq!(
            h.update(&1u32.to_le_bytes(), &[0; 8], update::NOEXIST, 0),
            -EEXIST
        );
        assert_eq!(
            h.update(&7u32.to_le_bytes(), &[0; 8], update::EXIST, 0),
            -ENOENT
        );
        assert!(h.lookup(&2u32.to_le_bytes(), 0).is_some());
        assert_eq!(h.delete(&2u32.to_le_bytes()), 0);
        assert!(h.lookup(&2u32.to_le_bytes(), 0).is_none());
        assert_eq!(h.delete(&2u32.to_le_bytes()), -ENOENT);
        assert_eq!(h.dump().len(), 2);
        assert!(
            Map::new(def(MapKind::Array, 8, 8, 4)).is_err(),
            "array keys are u32"
        );
    }

    #[test]
    fn percpu_hash_keeps_a_value_per_lcore_under_each_key() {
        let h = Map::new(def(MapKind::PerCpuHash, 8, 8, 4)).unwrap();
        let k = 0x1122u64.to_le_bytes();
        assert!(h.lookup(&k, 0).is_none());
        assert_eq!(h.update(&k, &5u64.to_le_bytes(), update::ANY, 3), 0);
        assert_eq!(
            h.update(&k, &9u64.to_le_bytes(), update::NOEXIST, 1),
            -EEXIST
        );
        assert_eq!(h.update(&k, &7u64.to_le_bytes(), update::EXIST, 1), 0);
        let (at3, at1, at0) = (
            h.lookup(&k, 3).unwrap(),
            h.lookup(&k, 1).unwrap(),
            h.lookup(&k, 0).unwrap(),
        );
        assert!(at3 != at1 && at1 != at0, "every lcore has its own value");
        let d = h.dump();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.len(), MAX_LCORES);
        assert_eq!(d[0].1[3], 5u64.to_le_bytes().to_vec());
        assert_eq!(d[0].1[1], 7u64.to_le_bytes().to_vec());
        assert_eq!(d[0].1[0], vec![0; 8], "the others start at zero");
        assert_eq!(h.delete(&k), 0);
        assert!(h.lookup(&k, 3).is_none());
    }

    #[test]
    fn global_data_starts_with_its_bytes_and_devmaps_store_ifindexes() {
        let mut d = def(MapKind::Array, 4, 10, 1);
        d.init = vec![1, 2, 3];
        let m = Map::new(d).unwrap();
        assert_eq!(m.dump()[0].1[0], vec![1, 2, 3, 0, 0, 0, 0, 0, 0, 0]);
        let mut too_big = def(MapKind::Array, 4, 2, 1);
        too_big.init = vec![0; 3];
        assert!(
            Map::new(too_big)
                .unwrap_err()
                .contains("3 bytes of initial data")
        );
        let dev = Map::new(def(MapKind::DevMap, 4, 8, 2)).unwrap();
        assert_eq!(
            dev.update(
                &1u32.to_le_bytes(),
                &[4, 0, 0, 0, 0, 0, 0, 0],
                update::ANY,
                0
            ),
            0
        );
        assert_eq!(dev.dump()[1].1[0][0], 4);
        let dh = Map::new(def(MapKind::DevMapHash, 4, 4, 2)).unwrap();
        assert_eq!(
            dh.update(&7u32.to_le_bytes(), &[3, 0, 0, 0], update::ANY, 0),
            0
        );
        assert_eq!(dh.dump().len(), 1);
    }

    #[test]
    fn lpm_trie_finds_the_longest_prefix() {
        let t = Map::new(def(MapKind::LpmTrie, 8, 4, 8)).unwrap();
        let k = |plen: u32, a: [u8; 4]| {
            let mut v = plen.to_le_bytes().to_vec();
            v.extend_from_slice(&a);
            v
        };
        let val = |m: &Map, key: &[u8]| {
            m.lookup(key, 0).map(|i| {
                let mut b = [0u8; 4];
                read_bytes(m.words(), i * 8, &mut b).unwrap();
                u32::from_le_bytes(b)
            })
        };
        assert_eq!(t.update(&k(8, [10, 9, 9, 9]), &1u32.to_le_bytes(), 0, 0), 0);
        assert_eq!(
            t.update(&k(24, [10, 1, 2, 77]), &2u32.to_le_bytes(), 0, 0),
            0
        );
        assert_eq!(t.update(&k(0, [0; 4]), &3u32.to_le_bytes(), 0, 0), 0);
        assert_eq!(t.update(&k(33, [0; 4]), &3u32.to_le_bytes(), 0, 0), -EINVAL);
        assert_eq!(val(&t, &k(32, [10, 1, 2, 3])), Some(2), "the /24");
        assert_eq!(val(&t, &k(32, [10, 1, 3, 3])), Some(1), "the /8");
        assert_eq!(val(&t, &k(32, [11, 0, 0, 1])), Some(3), "the default route");
        assert_eq!(
            val(&t, &k(16, [10, 1, 2, 3])),
            Some(1),
            "no longer than the key's length"
        );
        assert_eq!(
            t.delete(&k(24, [10, 1, 2, 0])),
            0,
            "masked like the stored key"
        );
        assert_eq!(t.delete(&k(24, [10, 1, 2, 0])), -ENOENT);
        assert_eq!(val(&t, &k(32, [10, 1, 2, 3])), Some(1));
        let d = t.dump();
        assert_eq!(d.len(), 2);
        assert!(
            d.iter().any(|(key, _)| key == &k(8, [10, 0, 0, 0])),
            "stored masked"
        );
        assert!(Map::new(def(MapKind::LpmTrie, 4, 4, 8)).is_err(), "no data");
    }

    #[test]
    fn concurrent_hash_inserts_lose_nothing() {
        let h = std::sync::Arc::new(Map::new(def(MapKind::Hash, 4, 8, 4000)).unwrap());
        let ts: Vec<_> = (0..4u32)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for k in (t * 1000)..(t * 1000 + 1000) {
                        assert_eq!(h.update(&k.to_le_bytes(), &[1; 8], update::NOEXIST, 0), 0);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(h.dump().len(), 4000);
    }

    #[test]
    fn deleted_slots_are_reused_so_churn_never_fills_a_map() {
        // Before slots were reused, a 4-entry map refused its 9th distinct
        // key with E2BIG although it held at most 4.
        let h = Map::new(def(MapKind::Hash, 4, 8, 4)).unwrap();
        for k in 0..20_000u32 {
            assert_eq!(
                h.update(&k.to_le_bytes(), &[k as u8; 8], update::NOEXIST, 0),
                0,
                "key {k}"
            );
            if k >= 3 {
                assert_eq!(h.delete(&(k - 3).to_le_bytes()), 0);
                assert!(h.lookup(&(k - 3).to_le_bytes(), 0).is_none());
            }
        }
        assert_eq!(h.dump().len(), 3);
        assert_eq!(h.len.load(Ordering::Relaxed), 3);
        assert!(h.lookup(&19_999u32.to_le_bytes(), 0).is_some());
        // A miss probes at most max_disp + 1 slots, however many deletes.
        assert!(h.max_disp.load(Ordering::Relaxed) < h.slots);
    }

    #[test]
    fn a_reused_percpu_slot_starts_with_zeroed_copies() {
        let h = Map::new(def(MapKind::PerCpuHash, 4, 8, 1)).unwrap();
        assert_eq!(
            h.update(&1u32.to_le_bytes(), &5u64.to_le_bytes(), update::ANY, 3),
            0
        );
        assert_eq!(h.delete(&1u32.to_le_bytes()), 0);
        assert_eq!(
            h.update(&2u32.to_le_bytes(), &7u64.to_le_bytes(), update::ANY, 1),
            0
        );
        let d = h.dump();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 2u32.to_le_bytes().to_vec());
        assert_eq!(d[0].1[1], 7u64.to_le_bytes().to_vec());
        assert_eq!(
            d[0].1[3],
            vec![0; 8],
            "lcore 3's copy of the old key is gone"
        );
    }

    #[test]
    fn lru_hash_evicts_an_entry_not_used_since_the_hand_passed() {
        for kind in [MapKind::LruHash, MapKind::LruPerCpuHash] {
            let h = Map::new(def(kind, 4, 8, 4)).unwrap();
            for k in 0..4u32 {
                assert_eq!(h.update(&k.to_le_bytes(), &[1; 8], update::NOEXIST, 0), 0);
            }
            assert_eq!(
                h.update(&7u32.to_le_bytes(), &[0; 8], update::EXIST, 0),
                -ENOENT
            );
            let has = |k: u32| h.dump().iter().any(|(key, _)| key[..] == k.to_le_bytes());
            for k in 4..1000u32 {
                // Key 0 is used before every insert and the new keys are
                // not: key 0 is never the one evicted.
                assert!(
                    h.lookup(&0u32.to_le_bytes(), 0).is_some(),
                    "{kind:?} key 0 at {k}"
                );
                assert_eq!(
                    h.update(&k.to_le_bytes(), &[2; 8], update::NOEXIST, 0),
                    0,
                    "{kind:?} never full"
                );
                assert!(has(k), "{kind:?} key {k} is in");
                assert_eq!(h.dump().len(), 4, "{kind:?} holds max_entries");
            }
            assert_eq!(h.len.load(Ordering::Relaxed), 4);
        }
        let h = Map::new(def(MapKind::Hash, 4, 8, 2)).unwrap();
        h.update(&1u32.to_le_bytes(), &[0; 8], update::ANY, 0);
        h.update(&2u32.to_le_bytes(), &[0; 8], update::ANY, 0);
        assert_eq!(
            h.update(&3u32.to_le_bytes(), &[0; 8], update::ANY, 0),
            -E2BIG,
            "a plain HASH still refuses"
        );
    }

    #[test]
    fn concurrent_churn_keeps_the_count_exact() {
        let h = std::sync::Arc::new(Map::new(def(MapKind::Hash, 4, 8, 16)).unwrap());
        let lru = std::sync::Arc::new(Map::new(def(MapKind::LruHash, 4, 8, 64)).unwrap());
        let ts: Vec<_> = (0..4u32)
            .map(|t| {
                let (h, lru) = (h.clone(), lru.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let k = (t << 24 | i).to_le_bytes();
                        assert_eq!(h.update(&k, &[1; 8], update::NOEXIST, 0), 0);
                        // Every thread also deletes a key another may be deleting.
                        let shared = (0xffff_0000 | (i % 8)).to_le_bytes();
                        h.update(&shared, &[2; 8], update::ANY, 0);
                        h.delete(&shared);
                        assert_eq!(h.delete(&k), 0);
                        assert_eq!(lru.update(&k, &[3; 8], update::ANY, 0), 0);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(h.len.load(Ordering::Relaxed) as usize, h.dump().len());
        assert!(h.dump().len() <= 8, "only shared keys may remain");
        assert_eq!(lru.len.load(Ordering::Relaxed) as usize, lru.dump().len());
        assert!(lru.dump().len() <= 64);
    }

    #[test]
    fn queue_is_fifo_stack_is_lifo_and_exist_drops_the_oldest() {
        use crate::abi::errno::{E2BIG, EINVAL, ENOENT};
        let v = |x: u32| x.to_le_bytes();
        for kind in [MapKind::Queue, MapKind::Stack] {
            let m = Map::new(def(kind, 0, 4, 3)).unwrap();
            let mut out = [0u8; 4];
            assert_eq!(m.pop(&mut out), -ENOENT);
            assert_eq!(m.peek(&mut out), -ENOENT);
            for x in 1..=3 {
                assert_eq!(m.push(&v(x), 0), 0);
            }
            assert_eq!(m.push(&v(4), 0), -E2BIG, "{kind:?}: full");
            assert_eq!(m.push(&v(4), 1), -EINVAL, "BPF_NOEXIST is refused");
            assert_eq!(m.push(&v(4), 3), -EINVAL);
            // BPF_EXIST: the oldest (1) makes room, for both kinds.
            assert_eq!(m.push(&v(4), 2), 0);
            assert_eq!(
                m.queued(),
                vec![v(2).to_vec(), v(3).to_vec(), v(4).to_vec()]
            );
            let order: &[u32] = if kind == MapKind::Queue {
                &[2, 3, 4]
            } else {
                &[4, 3, 2]
            };
            for &want in order {
                assert_eq!(m.peek(&mut out), 0);
                assert_eq!(u32::from_le_bytes(out), want, "{kind:?} peek");
                assert_eq!(m.pop(&mut out), 0);
                assert_eq!(u32::from_le_bytes(out), want, "{kind:?} pop");
            }
            assert_eq!(m.pop(&mut out), -ENOENT);
            // Around the ring many times.
            for x in 0..1000u32 {
                assert_eq!(m.push(&v(x), 0), 0);
                assert_eq!(m.push(&v(x + 1), 0), 0);
                assert_eq!(m.pop(&mut out), 0);
                let want = if kind == MapKind::Queue { x } else { x + 1 };
                assert_eq!(u32::from_le_bytes(out), want);
                assert_eq!(m.pop(&mut out), 0);
            }
        }
        assert!(
            Map::new(def(MapKind::Queue, 4, 4, 3)).is_err(),
            "keys are refused"
        );
    }

    #[test]
    fn queue_under_four_threads_loses_and_duplicates_nothing() {
        // Two producers push distinct values, two consumers pop (peeking
        // in between); every value comes out exactly once, whole.
        for kind in [MapKind::Queue, MapKind::Stack] {
            let m = std::sync::Arc::new(Map::new(def(kind, 0, 16, 64)).unwrap());
            const N: u64 = 20_000;
            let producers: Vec<_> = (0..2u64)
                .map(|p| {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        for i in 0..N {
                            let x = p * N + i;
                            let mut val = [0u8; 16];
                            val[..8].copy_from_slice(&x.to_le_bytes());
                            val[8..].copy_from_slice(&(!x).to_le_bytes());
                            while m.push(&val, 0) != 0 {
                                std::hint::spin_loop();
                            }
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        let mut out = [0u8; 16];
                        let mut idle = 0;
                        while idle < 2_000_000 {
                            if m.peek(&mut out) == 0 {
                                let x = u64::from_le_bytes(out[..8].try_into().unwrap());
                                let y = u64::from_le_bytes(out[8..].try_into().unwrap());
                                assert_eq!(y, !x, "a peek saw a torn value");
                            }
                            if m.pop(&mut out) == 0 {
                                let x = u64::from_le_bytes(out[..8].try_into().unwrap());
                                let y = u64::from_le_bytes(out[8..].try_into().unwrap());
                                assert_eq!(y, !x, "a pop saw a torn value");
                                got.push(x);
                                idle = 0;
                            } else {
                                idle += 1;
                            }
                        }
                        got
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            let mut all: Vec<u64> = consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..2 * N).collect::<Vec<_>>(), "{kind:?}");
        }
    }
}
