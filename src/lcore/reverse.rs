//! The reverse direction: frames the kernel sends back through an
//! exception sink (a TAP's replies) read into an lcore's own pool and
//! transmitted on a port. RX and target lcores both run it between their
//! polls ([`REVERSE_EVERY`]); with `egress=kernel` ports the kernel sends
//! replies itself and this path stays empty.

use crate::exception::ExceptionSink;
use crate::frame::{Burst, Pool};
use crate::port::{PortQueue, free_all};

/// What a target needs to send the kernel's frames out: its own small pool
/// and a transmit-only queue on the first port (None: nowhere to send, the
/// frames are counted as reverse drops).
pub(super) struct Reverse {
    pub pool: Pool,
    pub tx: Option<Box<dyn PortQueue>>,
}

/// Loops between reverse-direction reads while busy (always when idle).
pub(super) const REVERSE_EVERY: u32 = 8;

/// What one reverse pass moved: frames the kernel sent back through an
/// exception sink, those a port took, those dropped (refused, or no port).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ReverseMoved {
    pub rx: u64,
    pub tx: u64,
    pub drops: u64,
}

/// The reverse direction, for RX and target lcores alike: reads what the
/// kernel sent back through `sink` into buffers of `pool` and transmits it
/// on `tx`. Returns None when there was nothing.
/// Context: the lcore owning `sink`, `pool` and `tx`.
#[inline]
pub(super) fn reverse_pass(
    sink: &mut dyn ExceptionSink,
    pool: &mut Pool,
    tx: Option<&mut Box<dyn PortQueue>>,
    rev: &mut Burst,
) -> Option<ReverseMoved> {
    let rx = sink.receive_burst(pool, rev).frames as u64;
    if rx == 0 {
        return None;
    }
    let tx = match tx {
        Some(q) => q.tx_burst(rev) as u64,
        None => 0,
    };
    Some(ReverseMoved {
        rx,
        tx,
        drops: free_all(rev),
    })
}
