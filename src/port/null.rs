//! `net_null`: DPDK's null PMD. RX hands out `size`-byte frames without
//! writing them (as fast as the pool allows); TX frees what it is given.

use std::sync::Arc;

use super::{Burst, PortError, PortQueue, VdevSpec, free_all, tx_to_nowhere};
use crate::counters::PortQueueCounters;
use crate::frame::Pool;
use crate::ids::PortId;

struct NullQueue {
    port: u16,
    queue: u16,
    size: usize,
    counters: Arc<PortQueueCounters>,
}

pub(super) fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let size: usize = spec.num("size", 64)?;
    if size > u16::MAX as usize {
        return Err(PortError::BadVdev {
            vdev: spec.name.clone(),
            why: format!("size={size} is too large"),
        });
    }
    Ok((0..nb_queues)
        .map(|q| {
            Box::new(NullQueue {
                port: port.0,
                queue: q,
                size,
                counters: Arc::default(),
            }) as Box<dyn PortQueue>
        })
        .collect())
}

impl PortQueue for NullQueue {
    #[inline]
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        let start = out.len();
        let want = out.remaining_capacity();
        let got = pool.alloc_burst(out, want);
        let mut dropped = 0;
        for f in out[start..].iter_mut() {
            if f.set_len(self.size).is_err() {
                dropped += 1;
            }
            f.set_rx_meta(self.port, self.queue, 0);
        }
        if dropped > 0 {
            // A size larger than the buffer: every frame is an rx error.
            self.counters.ierrors.add(dropped);
            let mut bad: Burst = out.drain(start..).collect();
            free_all(&mut bad);
            return 0;
        }
        self.counters.rx_nombuf.add((want - got) as u64);
        self.counters.ipackets.add(got as u64);
        self.counters.ibytes.add((got * self.size) as u64);
        got
    }

    #[inline]
    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        tx_to_nowhere(&self.counters, frames)
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}
