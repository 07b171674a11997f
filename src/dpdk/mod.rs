//! The DPDK backend (cargo feature `dpdk`): the only module that touches
//! DPDK's C API. Everything outside sees safe types.
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

pub mod eal;
pub mod ethdev;
mod ffi;
pub mod mbuf;
pub mod ring;

use thiserror::Error;

pub use eal::{Eal, Launched};
pub use ethdev::{EthPort, PortInfo};
pub use mbuf::{Mbuf, Mempool};

#[derive(Debug, Error)]
pub enum DpdkError {
    #[error("EAL: {0}")]
    Eal(String),
    #[error("mempool '{name}': {why}")]
    Mempool { name: String, why: String },
    #[error("port{port} ({name}): {why}")]
    Port {
        port: u16,
        name: String,
        why: String,
    },
    #[error("{0}")]
    Device(String),
}

/// `rte_errno` of this thread, with its text.
pub(crate) fn rte_error() -> String {
    // SAFETY: reads this thread's rte_errno.
    let e = unsafe { ffi::cpumapd_errno() };
    format!("{} (rte_errno {e})", eal::strerror(e))
}

/// Text for a negative return code of an ethdev call.
pub(crate) fn rc_error(rc: i32) -> String {
    format!("{} ({rc})", eal::strerror(-rc))
}

/// TSC cycles now (`rte_get_tsc_cycles`).
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: reads the time-stamp counter; no state.
    unsafe { ffi::cpumapd_tsc() }
}

/// TSC frequency in Hz. Needs the EAL.
pub fn tsc_hz(_eal: &Eal) -> u64 {
    // SAFETY: EAL is initialised (proved by the argument).
    unsafe { ffi::rte_get_tsc_hz() }
}
