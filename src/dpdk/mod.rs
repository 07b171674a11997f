//! The DPDK backend (cargo feature `dpdk`): the only module that touches
//! DPDK's C API. Everything outside sees safe types. Its sizing constants
//! are here in every build (`--check-config` sizes DPDK profiles without
//! the feature); the rest exists only with the feature.
//!
//! # General idea
//!
//! * [`eal`]: `rte_eal_init` with the user's EAL arguments unchanged;
//!   cpumapd's RX and target lcores are EAL worker lcores started with
//!   `rte_eal_remote_launch`; the main lcore is the control thread.
//! * [`mbuf`]: with DPDK a `Frame` is an `rte_mbuf` (tagged pointer in
//!   `frame/`), allocated from per-socket `rte_pktmbuf_pool`s; the ring
//!   carries the pointer, so a packet is never copied from `rx_burst` to
//!   the exception path.
//! * [`ethdev`]: every probed port, configured with N RX/TX queues and RSS
//!   (IP + L4) when it has several; per-queue bursts; stats and xstats.
//!
//! Each port queue is owned by exactly one lcore (l3fwd's
//! `(port,queue,lcore)`), so the burst calls need no lock; mempools are
//! DPDK's own MP/MC structure.
//!
//! Bindings: build.rs runs bindgen over shim.h (allowlisted) and compiles
//! shim.c, exported wrappers for DPDK's static-inline fast-path functions.
#![allow(unsafe_code)]

/// RX descriptors per ethdev queue.
pub const RX_DESC: u16 = 1024;
/// TX descriptors per ethdev queue.
pub const TX_DESC: u16 = 1024;
/// Mbufs each lcore keeps in the per-lcore cache of each mempool.
pub const MEMPOOL_CACHE: u32 = 256;

#[cfg(feature = "dpdk")]
pub mod eal;
#[cfg(feature = "dpdk")]
pub mod ethdev;
#[cfg(feature = "dpdk")]
mod ffi;
#[cfg(feature = "dpdk")]
pub mod mbuf;
#[cfg(feature = "dpdk")]
pub mod ring;

#[cfg(feature = "dpdk")]
use thiserror::Error;

#[cfg(feature = "dpdk")]
pub use eal::{Eal, Launched};
#[cfg(feature = "dpdk")]
pub use ethdev::{EthPort, PortInfo};
#[cfg(feature = "dpdk")]
pub use mbuf::{Mbuf, Mempool};

/// Errors of the DPDK backend.
#[cfg(feature = "dpdk")]
#[derive(Debug, Error)]
pub enum DpdkError {
    /// `rte_eal_init` or another EAL call failed.
    #[error("EAL: {0}")]
    Eal(String),
    #[error("mempool '{name}': {why}")]
    /// A mempool could not be created.
    Mempool {
        /// The pool.
        name: String,
        /// What failed.
        why: String,
    },
    /// An ethdev step failed.
    #[error("port{port} ({name}): {why}")]
    Port {
        /// The port id.
        port: u16,
        /// Its name.
        name: String,
        /// What failed.
        why: String,
    },
    /// A device could not be created or found.
    #[error("{0}")]
    Device(String),
}

/// `rte_errno` of this thread, with its text.
#[cfg(feature = "dpdk")]
pub(crate) fn rte_error() -> String {
    // SAFETY: reads this thread's rte_errno.
    let e = unsafe { ffi::cpumapd_errno() };
    format!("{} (rte_errno {e})", eal::strerror(e))
}

/// Text for a negative return code of an ethdev call.
#[cfg(feature = "dpdk")]
pub(crate) fn rc_error(rc: i32) -> String {
    format!("{} ({rc})", eal::strerror(-rc))
}

/// TSC cycles now (`rte_get_tsc_cycles`).
#[cfg(feature = "dpdk")]
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: reads the time-stamp counter; no state.
    unsafe { ffi::cpumapd_tsc() }
}

/// TSC frequency in Hz. Needs the EAL.
#[cfg(feature = "dpdk")]
pub fn tsc_hz(_eal: &Eal) -> u64 {
    // SAFETY: EAL is initialised (proved by the argument).
    unsafe { ffi::rte_get_tsc_hz() }
}
