//! # cpumapd
//!
//! Linux's BPF cpumap (kernel/bpf/cpumap.c) rebuilt as a DPDK-style
//! poll-mode dataplane.
//!
//! ```text
//!  port (net_gen / net_pcap / net_null / AF_PACKET / AF_XDP; DPDK ethdev)
//!     |  rx_burst (32)                                     port/
//!  [RX lcore] filter: Pass | Drop | Tx | Redirect(t) | Aborted   filter/ wire/
//!     |  Redirect(t): bulk queue of 8 for t, no lock      cpumap/ (BulkQueues)
//!     |  full, or end of poll -> one enqueue_burst
//!  [entry ring of t]  MPSC, rte_ring-like, tail drop      ring/
//!     |  dequeue_burst (32)
//!  [target lcore t]   remote program (drop | pass | redirect)  lcore/target.rs
//!     v                              \ RedirectDev(if): [egress prog], sendmmsg  port/devtx.rs
//!  exception path: drop | pcap | TAP | DPDK net_tap | virtio-user  exception/
//! ```
//!
//! The map ([`cpumap::CpuMap`]) is updated while traffic flows with the
//! kernel's error contract; entries are swapped atomically and the old one
//! is drained by its target after every RX lcore has passed a quiescent
//! point. Frames ([`frame::Frame`]) are owned: each has one owner at a time
//! and returns to its pool exactly once. Counters ([`counters`]) are per
//! lcore, single writer, summed when read; the accounting identities are
//! checked by [`telemetry::Summary::check_identities`].
//!
//! # Layers
//!
//! The dataplane crate, layered bottom up (L0 `ids`, `wire`, `counters`,
//! `kv`, ... to L7 `telemetry`, `control`, `cli`); a module uses its own
//! layer and those below, never one above. The eBPF engine is a crate of
//! its own (`crates/ebpf`, reached as [`filter::ebpf`]). The layer table, the invariants, the
//! accounting identities and the memory-ordering labels are in
//! docs/ARCHITECTURE.md, which `tests/architecture.rs` checks against the
//! code. With DPDK a frame is an `rte_mbuf` end to end and pools are
//! per-socket mempools. `unsafe` lives only in `ring/`, `frame/`, `dpdk/`,
//! the system-call and driver edges in `port/` and `exception/` (and, in
//! the engine's crate, the JIT's entry).
#![deny(unsafe_code)]

/// The kernel's BPF ABI numbers (the eBPF crate's `abi`).
pub use cpumapd_ebpf::abi as bpf_abi;
pub mod cli;
pub mod config;
pub mod control;
pub mod counters;
pub mod cpumap;
pub mod dpdk;
pub mod exception;
pub mod filter;
pub mod frame;
pub mod ids;
pub mod kv;
pub mod lcore;
pub mod port;
pub mod ring;
mod sync;
pub mod telemetry;
pub mod wire;
