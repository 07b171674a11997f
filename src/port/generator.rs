//! `net_gen`: a built-in traffic generator (testpmd's txonly, as a port).
//!
//! Each queue cycles over its own `flows` prebuilt frames: Ethernet + IPv4 +
//! UDP (or TCP, or a UDP/TCP/ICMP mix) with source address and port varying
//! per flow, so l4-hash and the port modes spread them. `rate` (frames per
//! second per queue) is enforced with a token bucket on the monotonic clock
//! (vDSO, no syscall); `count` makes the source finite. A frame carries its
//! generation time in the frame metadata (for latency measurements).
//!
//! Arguments: `flows` (64), `size` (64 bytes, >= 60), `rate` (0 = unlimited),
//! `count` (0 = endless, per queue), `proto` (udp|tcp|mix), `dport` (9, the
//! pktgen discard port that l4-filter drops).

use std::sync::Arc;
use std::time::Instant;

use super::{Burst, PortError, PortQueue, VdevSpec, free_all, tx_to_nowhere};
use crate::counters::PortQueueCounters;
use crate::frame::Pool;
use crate::ids::PortId;
use crate::wire::{ETH_P_IPV4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Generator settings, parsed from the vdev arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Flows (distinct source ports).
    pub flows: u32,
    /// Frame size in bytes.
    pub size: usize,
    /// Frames per second (0: as fast as possible).
    pub rate: u64,
    /// Frames to send (0: endless).
    pub count: u64,
    /// Protocol of the frames.
    pub proto: GenProto,
    /// Destination port.
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// What the generator sends.
pub enum GenProto {
    /// UDP datagrams.
    Udp,
    /// TCP segments.
    Tcp,
    /// UDP, TCP and ICMP in turn.
    Mix,
}

impl GenConfig {
    /// Reads the settings from the vdev's arguments.
    pub fn from_spec(spec: &VdevSpec) -> Result<Self, PortError> {
        let bad = |why: String| PortError::BadVdev {
            vdev: spec.name.clone(),
            why,
        };
        let flows: u32 = spec.num("flows", 64)?;
        let size: usize = spec.num("size", 64)?;
        let proto = match spec.get("proto").unwrap_or("udp") {
            "udp" => GenProto::Udp,
            "tcp" => GenProto::Tcp,
            "mix" => GenProto::Mix,
            p => return Err(bad(format!("proto={p}: expected udp, tcp or mix"))),
        };
        if !(1..=65536).contains(&flows) {
            return Err(bad(format!("flows={flows}: expected 1 to 65536")));
        }
        if !(60..=9000).contains(&size) {
            return Err(bad(format!("size={size}: expected 60 to 9000 bytes")));
        }
        Ok(Self {
            flows,
            size,
            rate: spec.num("rate", 0)?,
            count: spec.num("count", 0)?,
            proto,
            dport: spec.num("dport", 9)?,
        })
    }

    /// The frame for flow `f` (also used by tests to predict classification).
    pub fn frame(&self, f: u32) -> Vec<u8> {
        let proto = match self.proto {
            GenProto::Udp => IPPROTO_UDP,
            GenProto::Tcp => IPPROTO_TCP,
            GenProto::Mix => [IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP][(f % 3) as usize],
        };
        let mut b = vec![0u8; self.size];
        b[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        b[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        b[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let ip_len = (self.size - 14) as u16;
        let ip = &mut b[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40; // DF, as a Linux UDP/TCP sender sets it
        ip[8] = 64;
        ip[9] = proto;
        // 198.18.0.0/15 is the benchmarking range (RFC 2544).
        ip[12..16].copy_from_slice(&[198, 18, (f >> 8) as u8, f as u8]);
        ip[16..20].copy_from_slice(&[198, 19, 0, 1]);
        let csum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let l4 = &mut b[34..];
        let sport = 1024 + (f % 64512) as u16;
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&self.dport.to_be_bytes());
        match proto {
            IPPROTO_UDP => l4[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes()),
            IPPROTO_TCP => l4[12] = 0x50,
            _ => {
                l4[0] = 8; // echo request
                l4[1] = 0;
            }
        }
        b
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in h.chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct GenQueue {
    port: u16,
    queue: u16,
    size: usize,
    flows: u32,
    /// `flows` frames of `size` bytes, back to back.
    templates: Box<[u8]>,
    next_flow: u32,
    rate: u64,
    remaining: Option<u64>,
    start: Instant,
    sent: u64,
    counters: Arc<PortQueueCounters>,
}

pub(super) fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let cfg = GenConfig::from_spec(spec)?;
    Ok((0..nb_queues)
        .map(|q| {
            // Each queue gets its own flow range, as RSS would give it.
            let base = q as u32 * cfg.flows;
            let templates: Vec<u8> = (0..cfg.flows).flat_map(|f| cfg.frame(base + f)).collect();
            Box::new(GenQueue {
                port: port.0,
                queue: q,
                size: cfg.size,
                flows: cfg.flows,
                templates: templates.into_boxed_slice(),
                next_flow: 0,
                rate: cfg.rate,
                remaining: (cfg.count > 0).then_some(cfg.count),
                start: Instant::now(),
                sent: 0,
                counters: Arc::default(),
            }) as Box<dyn PortQueue>
        })
        .collect())
}

impl GenQueue {
    /// How many frames the rate and count allow now.
    #[inline]
    fn budget(&self, want: usize) -> usize {
        let mut n = want as u64;
        if self.rate > 0 {
            let allowed =
                (self.start.elapsed().as_nanos() as u64).saturating_mul(self.rate) / 1_000_000_000;
            n = n.min(allowed.saturating_sub(self.sent));
        }
        if let Some(r) = self.remaining {
            n = n.min(r);
        }
        n as usize
    }
}

impl PortQueue for GenQueue {
    #[inline]
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        let want = self.budget(out.remaining_capacity());
        if want == 0 {
            return 0;
        }
        let start = out.len();
        let got = pool.alloc_burst(out, want);
        self.counters.rx_nombuf.add((want - got) as u64);
        let now = self.start.elapsed().as_nanos() as u64;
        let mut bad = 0;
        for f in out[start..].iter_mut() {
            let off = self.next_flow as usize * self.size;
            self.next_flow = if self.next_flow + 1 == self.flows {
                0
            } else {
                self.next_flow + 1
            };
            if f.copy_from(&self.templates[off..off + self.size]).is_err() {
                bad += 1;
            }
            f.set_rx_meta(self.port, self.queue, self.next_flow);
            f.set_timestamp_ns(now);
        }
        if bad > 0 {
            // size larger than the pool's buffers: the frames never existed.
            let mut b: Burst = out.drain(start..).collect();
            free_all(&mut b);
            self.counters.ierrors.add(bad);
            return 0;
        }
        self.sent += got as u64;
        if let Some(r) = self.remaining.as_mut() {
            *r -= got as u64;
        }
        self.counters.ipackets.add(got as u64);
        self.counters.ibytes.add((got * self.size) as u64);
        got
    }

    #[inline]
    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        tx_to_nowhere(&self.counters, frames)
    }

    fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Pool;

    #[test]
    fn generated_frames_parse_as_what_they_claim() {
        let spec = VdevSpec::parse("net_gen0,flows=6,proto=mix,dport=53").unwrap();
        let cfg = GenConfig::from_spec(&spec).unwrap();
        for f in 0..6 {
            let b = cfg.frame(f);
            let p = etherparse::SlicedPacket::from_ethernet(&b).unwrap();
            let ip = match p.net.unwrap() {
                etherparse::NetSlice::Ipv4(ip) => ip,
                _ => panic!("not ipv4"),
            };
            assert_eq!(ip.header().source(), [198, 18, 0, f as u8]);
            assert_eq!(
                ip.header().header_checksum(),
                ip.header().to_header().calc_header_checksum()
            );
        }
    }

    #[test]
    fn count_makes_the_source_finite_and_counts_are_exact() {
        let spec = VdevSpec::parse("net_gen0,count=100,flows=3").unwrap();
        let mut q = open(&spec, PortId(0), 1).unwrap().remove(0);
        let mut pool = Pool::new("g", 64, 128, 2048).unwrap();
        let mut total = 0;
        let mut out = Burst::new();
        while !q.exhausted() {
            total += q.rx_burst(&mut pool, &mut out);
            crate::frame::free_burst(&mut out);
        }
        assert_eq!(total, 100);
        assert_eq!(q.counters().ipackets.get(), 100);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn bad_arguments_are_errors() {
        for (v, want) in [
            ("net_gen0,size=20", "size=20"),
            ("net_gen0,proto=sctp", "proto=sctp"),
            ("net_gen0,flows=0", "flows=0"),
        ] {
            let e = GenConfig::from_spec(&VdevSpec::parse(v).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
