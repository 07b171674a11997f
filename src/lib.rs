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
//!  [target lcore t]   remote program (drop | pass)        lcore/target.rs
//!     v
//!  exception path: drop | pcap | TAP | DPDK net_tap | virtio-user  exception/
//! ```
//!
//! The map ([`cpumap::CpuMap`]) is updated while traffic flows with the
//! kernel's error contract; entries are swapped atomically and the old one
//! is drained by its target after every RX lcore has passed a quiescent
//! point. Frames ([`frame::Frame`]) are owned: each has one owner at a time
//! and returns to its pool exactly once. Counters ([`metrics`]) are per
//! lcore, single writer, summed when read; the accounting identities are
//! checked by [`metrics::Summary::check_identities`].
//!
//! Modules: [`config`] (CLI, TOML, validated [`config::Plan`]), [`lcore`]
//! (threads or EAL lcores, loops, shutdown), [`ids`] (`LcoreId`, `PortId`,
//! `TargetId`), and with the `dpdk` feature `dpdk` (the only module that
//! calls DPDK: bindings, EAL, mbufs, ethdev). With DPDK a frame is an
//! `rte_mbuf` end to end and pools are per-socket mempools.
//! `unsafe` lives only in `ring/`, `frame/`, `dpdk/`, and the system-call
//! and driver edges in `port/` and `exception/`.
#![deny(unsafe_code)]

pub mod bpf_abi;
pub mod config;
pub mod control;
pub mod counters;
pub mod cpumap;
pub mod dpdk;
pub mod exception;
pub mod filter;
pub mod frame;
pub mod ids;
pub mod lcore;
pub mod port;
pub mod ring;
mod sync;
pub mod telemetry;
pub mod wire;
