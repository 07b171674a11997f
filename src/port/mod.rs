//! Ports: where frames come from and where `Tx` verdicts go.
//!
//! # General idea
//!
//! A port is opened from a DPDK-style vdev string (`net_gen0,flows=64`,
//! `net_pcap0,rx_pcap=in.pcap`, `net_null0`), so one command line works with
//! and without DPDK. Opening gives one [`PortQueue`] per configured queue;
//! each queue is owned by exactly one RX lcore (l3fwd's `(port,queue,lcore)`),
//! so queue state needs no synchronisation. Each queue has its own
//! [`PortQueueCounters`] (single writer: that lcore).
//!
//! The DPDK ethdev backend implements the same trait.

mod af_packet;
mod af_xdp;
pub mod bpf;
pub mod devtx;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod egress;
pub mod fault;
mod generator;
pub mod netdev;
mod null;
mod pcap;

use std::io;
use std::sync::Arc;

use thiserror::Error;

use crate::counters::PortQueueCounters;
use crate::frame::Pool;
use crate::ids::PortId;
use crate::kv::{self, Key};

pub use generator::{GenConfig, GenProto};
pub use pcap::PcapTrace;

pub use crate::frame::{Burst, MAX_BURST};

#[derive(Debug, Error)]
/// A port that cannot be opened or is misconfigured.
pub enum PortError {
    /// A vdev argument that is malformed or does not fit.
    #[error("bad vdev '{vdev}': {why}")]
    BadVdev {
        /// The vdev.
        vdev: String,
        /// What is wrong.
        why: String,
    },
    #[error(
        "vdev '{0}' needs the DPDK backend (cargo feature `dpdk`), which this build does not include; natively available: net_gen, net_pcap, net_null, net_af_packet, net_af_xdp"
    )]
    /// A vdev only DPDK has.
    NeedsDpdk(String),
    #[error("{port}: {file}: {why}")]
    /// A pcap file that cannot be read.
    Pcap {
        /// The port.
        port: String,
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// A queue count the port cannot give.
    #[error("{port}: {why}")]
    Queues {
        /// The port.
        port: String,
        /// What is wrong.
        why: String,
    },
    #[error("{port}: {file}: {source}")]
    /// A file the port cannot open.
    Io {
        /// The port.
        port: String,
        /// The file.
        file: String,
        /// The error.
        source: io::Error,
    },
}

/// One RX/TX queue of a port, owned by one lcore.
pub trait PortQueue: Send {
    /// Receives up to `out`'s spare capacity frames into buffers from
    /// `pool`. Returns the count. Context: the owning lcore; no allocation.
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize;

    /// Transmits frames from the front of `frames`; returns how many were
    /// taken. Frames left in `frames` were refused: the caller frees and
    /// counts them.
    fn tx_burst(&mut self, frames: &mut Burst) -> usize;

    /// True when a finite source (pcap without `infinite_rx`, generator with
    /// `count`) has nothing more to give.
    fn exhausted(&self) -> bool {
        false
    }

    /// Flushes buffered output (a tx pcap). Called at shutdown.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// How an idle lcore may wait for this queue (`--idle`).
    fn idle_wait(&self) -> IdleWait {
        IdleWait::Never
    }

    /// Arms (`on`) or disarms the queue's RX interrupt, for a queue whose
    /// [`PortQueue::idle_wait`] is [`IdleWait::Interrupt`].
    fn set_interrupt(&mut self, _on: bool) {}

    /// The queue's counters.
    fn counters(&self) -> &Arc<PortQueueCounters>;
}

/// How an idle RX lcore may wait for a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleWait {
    /// Never: the queue always has work or is paced by its own clock (the
    /// generator, pcap, null).
    Never,
    /// poll(2) this descriptor for POLLIN (AF_XDP's socket, AF_PACKET's
    /// ring).
    Fd(std::os::fd::RawFd),
    /// An RX interrupt's event descriptor (a DPDK queue whose PMD has RX
    /// interrupts): armed with [`PortQueue::set_interrupt`] before the lcore
    /// blocks on it, disarmed when work returns.
    Interrupt(std::os::fd::RawFd),
    /// No descriptor to block on (a DPDK PMD without RX interrupts): nap
    /// in growing steps instead.
    Nap,
}

/// A parsed `--vdev` argument: driver, instance name and key=value args.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdevSpec {
    /// The instance name (`net_gen0`).
    pub name: String,
    /// The driver.
    pub driver: Driver,
    /// `key=value` arguments, in order.
    pub args: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// The native drivers.
pub enum Driver {
    /// `net_gen`: the built-in generator.
    Gen,
    /// `net_pcap`: a capture replayed.
    Pcap,
    /// `net_null`: endless frames, never written.
    Null,
    /// `net_af_packet`: a Linux interface through a TPACKET_V2 or V3 ring.
    AfPacket,
    /// `net_af_xdp`: a Linux interface's queues through AF_XDP.
    AfXdp,
}

const fn key(name: &'static str, value: &'static str, help: &'static str) -> Key {
    Key { name, value, help }
}

impl Driver {
    /// Every native driver.
    pub const ALL: [Driver; 5] = [
        Driver::Gen,
        Driver::Pcap,
        Driver::Null,
        Driver::AfPacket,
        Driver::AfXdp,
    ];

    /// The vdev name without its number (`net_gen`).
    pub fn name(self) -> &'static str {
        match self {
            Driver::Gen => "net_gen",
            Driver::Pcap => "net_pcap",
            Driver::Null => "net_null",
            Driver::AfPacket => "net_af_packet",
            Driver::AfXdp => "net_af_xdp",
        }
    }

    /// What the driver is, one line.
    pub fn about(self) -> &'static str {
        match self {
            Driver::Gen => "built-in generator (testpmd txonly as a port); count= makes it finite",
            Driver::Pcap => "replay a capture once (or endlessly); Tx verdicts to tx_pcap",
            Driver::Null => "DPDK's null PMD: endless frames, not written",
            Driver::AfPacket => {
                "a Linux interface through TPACKET rings, PACKET_FANOUT_HASH across queues (CAP_NET_RAW)"
            }
            Driver::AfXdp => {
                "a Linux interface's queues through AF_XDP, cpumapd's own XSKMAP program (root)"
            }
        }
    }

    /// The keys the driver takes (besides [`fault::FAULT_KEYS`]).
    pub fn keys(self) -> &'static [Key] {
        match self {
            Driver::Gen => {
                const {
                    &[
                        key("flows", "N", "distinct flows (default 64)"),
                        key("size", "B", "frame size (default 64)"),
                        key(
                            "rate",
                            "PPS",
                            "pace to this many frames per second (default: unpaced)",
                        ),
                        key("count", "N", "stop after N frames (0: endless)"),
                        key("proto", "udp|tcp|mix", "L4 protocol (default udp)"),
                        key("dport", "P", "destination port (default 9)"),
                    ]
                }
            }
            Driver::Pcap => {
                const {
                    &[
                        key("rx_pcap", "FILE", "the capture to replay"),
                        key("tx_pcap", "FILE", "where Tx verdicts go"),
                        key("infinite_rx", "0|1", "replay endlessly"),
                    ]
                }
            }
            Driver::Null => const { &[key("size", "B", "frame size (default 64)")] },
            Driver::AfPacket => {
                const {
                    &[
                        key("iface", "IF", "the interface"),
                        key(
                            "qpairs",
                            "N",
                            "RX queues: one socket each, fanned out by hash",
                        ),
                        key(
                            "ring",
                            "v2|v3",
                            "v2 (default): a status word per frame, slots sized to the MTU, 8 MiB; v3: 1 MiB blocks, 1 ms retire timer",
                        ),
                        key("blocksz", "B", "ring block size"),
                        key("framesz", "B", "ring frame (slot) size"),
                        key("framecnt", "N", "ring frames"),
                        key("qdisc_bypass", "0|1", "TX around the qdisc (default 1)"),
                        key(
                            "vnet_hdr",
                            "0|1",
                            "read virtio-net headers: GSO and checksum state (default 1)",
                        ),
                        key("egress", "cpumapd|kernel", EGRESS_HELP),
                    ]
                }
            }
            Driver::AfXdp => {
                const {
                    &[
                        key("iface", "IF", "the interface"),
                        key("start_queue", "Q", "first queue (default 0)"),
                        key("queue_count", "N", "queues, one socket each (default 1)"),
                        key("force_copy", "0|1", "copy mode even where zero-copy works"),
                        key("egress", "cpumapd|kernel", EGRESS_HELP),
                    ]
                }
            }
        }
    }
}

/// The `egress=` key of ports over a Linux interface.
const EGRESS_HELP: &str = "who sends the kernel's replies out of the interface: cpumapd (default, the exception path's reverse direction) or kernel (routed out of it; docs/DATAPLANE.md)";

/// Drivers DPDK has that the native build does not.
const DPDK_ONLY: &[&str] = &[
    "net_tap",
    "net_memif",
    "net_ring",
    "net_vhost",
    "net_virtio_user",
    "virtio_user",
    "net_bonding",
    "net_kni",
];

impl VdevSpec {
    /// Parses `DRIVERN[,key=value...]`.
    pub fn parse(s: &str) -> Result<Self, PortError> {
        let bad = |why: &str| PortError::BadVdev {
            vdev: s.to_string(),
            why: why.to_string(),
        };
        let name = s.split(',').next().unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(bad("empty device name"));
        }
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let base = if base == "eth_af_packet" {
            "net_af_packet"
        } else {
            base
        };
        let driver = match Driver::ALL.into_iter().find(|d| d.name() == base) {
            Some(d) => d,
            None if DPDK_ONLY.contains(&base) => {
                return Err(PortError::NeedsDpdk(s.to_string()));
            }
            None => {
                return Err(bad(
                    "unknown driver: expected net_gen<N>, net_pcap<N>, net_null<N>, net_af_packet<N> or net_af_xdp<N>",
                ));
            }
        };
        let rest = s.split_once(',').map_or("", |(_, r)| r);
        let args = kv::parse(rest, &[driver.keys(), fault::FAULT_KEYS])
            .map_err(|e| bad(&e.to_string()))?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Self { name, driver, args })
    }

    /// The value of argument `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, PortError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| PortError::BadVdev {
                vdev: self.name.clone(),
                why: format!("{key}={v} is not a valid number"),
            }),
        }
    }

    /// The most RX queues this port can have (pcap replays one file: 1).
    pub fn max_queues(&self) -> u16 {
        match self.driver {
            Driver::Pcap => 1,
            Driver::Gen | Driver::Null => 64,
            // DPDK's net_af_packet: qpairs sockets (default 1).
            Driver::AfPacket => self.num("qpairs", 1u16).unwrap_or(1).clamp(1, 64),
            // DPDK's net_af_xdp: queue_count queues from start_queue.
            Driver::AfXdp => self.num("queue_count", 1u16).unwrap_or(1).clamp(1, 64),
        }
    }

    /// True for a source that ends by itself.
    pub fn is_finite(&self) -> bool {
        match self.driver {
            Driver::Pcap => self.get("infinite_rx") != Some("1"),
            Driver::Gen => self.get("count").is_some_and(|c| c != "0"),
            Driver::Null | Driver::AfPacket | Driver::AfXdp => false,
        }
    }
}

/// Ports whose Linux ifindex [`ifindex`] knows.
const IFINDEX_PORTS: usize = 256;

/// Each port's Linux interface index (0: none), written when the port
/// opens, read per frame by eBPF programs (`ingress_ifindex`).
static IFINDEX: [std::sync::atomic::AtomicU32; IFINDEX_PORTS] =
    [const { std::sync::atomic::AtomicU32::new(0) }; IFINDEX_PORTS];

/// Records that `port` is the Linux interface `ifindex` (AF_PACKET and
/// AF_XDP ports, DPDK ports bound to a kernel interface).
pub fn set_ifindex(port: PortId, ifindex: u32) {
    if let Some(slot) = IFINDEX.get(port.0 as usize) {
        slot.store(ifindex, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The Linux ifindex of `port`, or 0 for a port with no interface
/// (generator, pcap, null, most DPDK devices). No locks; one load.
#[inline(always)]
pub fn ifindex(port: u16) -> u32 {
    IFINDEX
        .get(port as usize)
        .map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed))
}

/// Opens a port with `nb_queues` queues (each to be owned by one lcore).
pub fn open(
    spec: &VdevSpec,
    port: PortId,
    nb_queues: u16,
) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    if nb_queues == 0 || nb_queues > spec.max_queues() {
        return Err(PortError::Queues {
            port: format!("{port} ({})", spec.name),
            why: format!(
                "{nb_queues} queues requested, this driver has 1 to {}",
                spec.max_queues()
            ),
        });
    }
    let faults = fault::PortFaults::from_vdev(spec)?;
    if matches!(spec.driver, Driver::AfPacket | Driver::AfXdp) {
        let index = spec.get("iface").and_then(netdev::index).unwrap_or(0);
        set_ifindex(port, index);
    }
    let queues = match spec.driver {
        Driver::Gen => generator::open(spec, port, nb_queues),
        Driver::Null => null::open(spec, port, nb_queues),
        Driver::Pcap => pcap::open(spec, port),
        Driver::AfPacket => af_packet::open(spec, port, nb_queues),
        Driver::AfXdp => af_xdp::open(spec, port, nb_queues),
    }?;
    Ok(match faults {
        None => queues,
        Some(f) => queues
            .into_iter()
            .enumerate()
            .map(|(q, inner)| {
                let seed = (port.0 as u64) << 16 | q as u64 | 0x9e37_79b9_0000_0000;
                Box::new(fault::FaultQueue::wrap(inner, f, seed)) as Box<dyn PortQueue>
            })
            .collect(),
    })
}

/// A transmit-only queue on a port, for an lcore that sends (a target's
/// reverse direction) without owning one of its RX queues. None for ports
/// with no wire to send on.
pub fn open_tx(spec: &VdevSpec, port: PortId) -> Result<Option<Box<dyn PortQueue>>, PortError> {
    match spec.driver {
        // An AF_XDP queue belongs to the socket bound to it; a second sender
        // on the interface uses a packet socket.
        Driver::AfPacket | Driver::AfXdp => af_packet::open_tx(spec, port).map(Some),
        Driver::Gen | Driver::Null | Driver::Pcap => Ok(None),
    }
}

/// True when the vdev's queues transmit frames with offload metadata as
/// they are (GSO super-frames, partial checksums): net_af_packet with its
/// virtio-net header (`vnet_hdr=1`, the default). The exception path offers
/// the kernel offloads only when every port the kernel's frames may leave
/// on does.
pub fn takes_offloads(spec: &VdevSpec) -> bool {
    spec.driver == Driver::AfPacket && af_packet::vnet_hdr(spec)
}

/// Validates a vdev's arguments and files without keeping anything open
/// (AF_XDP: without attaching its program).
pub fn check(spec: &VdevSpec, port: PortId) -> Result<(), PortError> {
    match spec.driver {
        Driver::AfXdp => af_xdp::check(spec).map(drop),
        _ => open(spec, port, 1).map(drop),
    }
}

/// Transmit of a port with no wire (null, generator): every frame counts as
/// sent and goes back to its pool.
#[inline]
pub(crate) fn tx_to_nowhere(counters: &PortQueueCounters, frames: &mut Burst) -> usize {
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    let n = free_all(frames);
    counters.opackets.add(n);
    counters.obytes.add(bytes as u64);
    n as usize
}

/// Frees every frame in `frames` and returns the count (for tx drops).
#[inline]
pub(crate) fn free_all(frames: &mut Burst) -> u64 {
    let n = frames.len() as u64;
    crate::frame::free_burst(frames);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_strings_parse_like_dpdk() {
        let v = VdevSpec::parse("net_pcap0,rx_pcap=a.pcap,infinite_rx=1").unwrap();
        assert_eq!((v.name.as_str(), v.driver), ("net_pcap0", Driver::Pcap));
        assert_eq!(v.get("rx_pcap"), Some("a.pcap"));
        assert!(!v.is_finite());
        assert!(VdevSpec::parse("net_gen1,count=10").unwrap().is_finite());
        assert!(!VdevSpec::parse("net_null0").unwrap().is_finite());
    }

    #[test]
    fn bad_vdevs_name_the_problem() {
        let e = VdevSpec::parse("net_tap0,iface=x").unwrap_err().to_string();
        assert!(e.contains("needs the DPDK backend"), "{e}");
        let e = VdevSpec::parse("net_memif0,role=server")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the DPDK backend"), "{e}");
        let e = VdevSpec::parse("net_af_xdp0,iface=x,zero_copy=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option 'zero_copy'"), "{e}");
        let e = VdevSpec::parse("net_bogus0").unwrap_err().to_string();
        assert!(e.contains("unknown driver"), "{e}");
        let e = VdevSpec::parse("net_gen0,flows").unwrap_err().to_string();
        assert!(e.contains("not key=value"), "{e}");
        let e = VdevSpec::parse("net_gen0,speed=9").unwrap_err().to_string();
        assert!(e.contains("unknown option 'speed'"), "{e}");
        let e = check(&VdevSpec::parse("net_gen0,flows=lots").unwrap(), PortId(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("flows=lots is not a valid number"), "{e}");
    }
}
