//! The exception path: where a target (or an RX lcore's Pass verdict) hands
//! frames to "the kernel".
//!
//! # General idea
//!
//! Each delivering lcore owns its own [`ExceptionSink`] instance (one TAP
//! queue, one file), so sinks need no synchronisation. A sink takes a burst;
//! it frees every frame and reports how many it delivered and why it refused
//! the rest ([`Delivery`]); the caller counts those as drops by reason.
//!
//! Backends: `drop` (a null stack: frames are delivered and freed),
//! `pcap:FILE` (each lcore writes `FILE` with `-lcoreN` before the
//! extension) and `tap:IFNAME` (a multi-queue TAP, one queue per lcore, see
//! [`tap`]). A sink may also have a reverse direction: frames the kernel
//! sends back ([`ExceptionSink::receive_burst`]), which the lcore transmits
//! on a port. The DPDK backends implement the same trait.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod gro;
pub mod tap;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use thiserror::Error;

use std::sync::Arc;

use crate::counters::{TargetCounters, TargetDropReason};
use crate::frame::Burst;
use crate::frame::{Pool, free_burst};
use crate::ids::LcoreId;
use crate::kv::{self, Key};
use tap::{KernelMac, TapDevice, TapSpec};

#[derive(Debug, Error)]
/// An exception path that cannot be opened or is misconfigured.
pub enum ExceptionError {
    #[error(
        "unknown exception path '{0}': expected drop, pcap:FILE, tap:IFNAME, fault:busy=N,down=N,error=N,delay_us=N or (DPDK backend) virtio-user:/dev/vhost-net or virtio-user:VHOST_USER_SOCKET"
    )]
    /// An unknown `--exception` value.
    Unknown(String),
    #[error(
        "KNI was removed from DPDK in 23.11; use --exception tap:IFNAME (or virtio-user with the DPDK backend)"
    )]
    /// KNI, gone from DPDK.
    Kni,
    #[error("exception path '{0}' is not available in this build")]
    /// A backend this build lacks.
    NotBuilt(String),
    /// A pcap file that cannot be written.
    #[error("pcap exception file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    #[error("{0}")]
    /// The TAP device (or DPDK's net_tap / virtio-user) failed.
    Tap(String),
    #[error("{0}")]
    /// A bad `fault:` specification.
    Fault(String),
}

/// Which backend, parsed from `--exception`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExceptionSpec {
    /// The null stack: frames are delivered and freed.
    Drop,
    /// A pcap file per delivering lcore.
    Pcap(PathBuf),
    /// A multi-queue TAP.
    Tap(TapSpec),
    /// The null stack with injected refusals and delay.
    Fault(FaultSpec),
    /// `virtio-user:PATH[,gro=on|off]` (DPDK backend only).
    VirtioUser(VirtioSpec),
}

/// `virtio-user:PATH[,gro=on|off]`: `/dev/vhost-net` (vhost-kernel) or a
/// vhost-user backend's socket. `gro` (default on) merges each burst's TCP
/// segments into chained super-frames sent with TSO, where the backend
/// offers it (VIRTIO_NET_F_HOST_TSO4/6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioSpec {
    /// The vhost-net device or the vhost-user socket.
    pub path: PathBuf,
    /// Merge TCP segments into TSO super-frames.
    pub gro: bool,
}

/// The options of `--exception virtio-user:PATH[,key=value...]`.
pub const VIRTIO_KEYS: &[Key] = &[Key {
    name: "gro",
    value: "on|off",
    help: "merge TCP segments into TSO super-frames where the backend takes them (default on)",
}];

impl VirtioSpec {
    /// Parses `PATH[,gro=on|off]`.
    pub fn parse(rest: &str) -> Result<Self, ExceptionError> {
        let (path, opts) = rest.split_once(',').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(ExceptionError::Unknown(format!("virtio-user:{rest}")));
        }
        let bad =
            |why: String| ExceptionError::Tap(format!("--exception virtio-user:{rest}: {why}"));
        let mut spec = VirtioSpec {
            path: PathBuf::from(path),
            gro: true,
        };
        for (k, v) in kv::parse(opts, &[VIRTIO_KEYS]).map_err(|e| bad(e.to_string()))? {
            match k {
                "gro" => spec.gro = kv::on_off(k, v).map_err(bad)?,
                _ => unreachable!("kv::parse checked the key against VIRTIO_KEYS"),
            }
        }
        Ok(spec)
    }
}

/// `fault:busy=N,down=M,error=K,delay_us=D`: the null stack with injected
/// refusals, for tests and drills (smoltcp's FaultInjector, for the
/// exception path). Per sink, frame i (from 1) is refused as busy when N
/// divides i, else as down when M divides it, else as an error when K
/// divides it; 0 turns a fault off. `delay_us` sleeps that long per burst:
/// a slow kernel. `lcore=L` confines all of it to lcore L's sink (the
/// others are the plain null stack): one stalled target beside healthy ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSpec {
    /// Every Nth frame is refused as busy (0: never).
    pub busy: u64,
    /// Every Nth frame is refused as down (0: never).
    pub down: u64,
    /// Every Nth frame is refused with an error (0: never).
    pub error: u64,
    /// Microseconds each delivery sleeps.
    pub delay_us: u64,
    /// Only this lcore's sink injects (None: every sink).
    pub lcore: Option<u32>,
}

/// The options of `--exception fault:key=value,...`.
pub const FAULT_KEYS: &[Key] = &[
    Key {
        name: "busy",
        value: "N",
        help: "refuse every Nth frame as busy (0: never)",
    },
    Key {
        name: "down",
        value: "N",
        help: "refuse every Nth frame as down",
    },
    Key {
        name: "error",
        value: "N",
        help: "refuse every Nth frame with an error",
    },
    Key {
        name: "delay_us",
        value: "US",
        help: "sleep this long per burst, up to 1 s (a slow kernel)",
    },
    Key {
        name: "lcore",
        value: "L",
        help: "only lcore L's sink injects",
    },
];

impl FaultSpec {
    /// Parses `busy=N,down=N,error=N,delay_us=D[,lcore=L]`.
    pub fn parse(rest: &str) -> Result<Self, ExceptionError> {
        let mut f = FaultSpec::default();
        let bad = |why: String| ExceptionError::Fault(format!("--exception fault:{rest}: {why}"));
        for (k, v) in kv::parse(rest, &[FAULT_KEYS]).map_err(|e| bad(e.to_string()))? {
            let n: u64 = v
                .parse()
                .map_err(|_| bad(format!("{k}={v} is not a number")))?;
            match k {
                "busy" => f.busy = n,
                "down" => f.down = n,
                "error" => f.error = n,
                "delay_us" if n <= 1_000_000 => f.delay_us = n,
                "lcore" if n <= u32::MAX as u64 => f.lcore = Some(n as u32),
                _ => return Err(bad(format!("{k}={v} is out of range"))),
            }
        }
        Ok(f)
    }

    /// What frame `i` (from 1) of a sink suffers.
    fn fault(&self, i: u64) -> Option<Fault> {
        let hits = |n: u64| n != 0 && i.is_multiple_of(n);
        if hits(self.busy) {
            Some(Fault::Busy)
        } else if hits(self.down) {
            Some(Fault::Down)
        } else if hits(self.error) {
            Some(Fault::Error)
        } else {
            None
        }
    }
}

enum Fault {
    Busy,
    Down,
    Error,
}

/// The fault-injecting null stack of one lcore.
pub struct FaultSink {
    spec: FaultSpec,
    seen: u64,
}

impl ExceptionSink for FaultSink {
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let mut d = Delivery::default();
        for _ in frames.iter() {
            self.seen += 1;
            match self.spec.fault(self.seen) {
                None => d.delivered += 1,
                Some(Fault::Busy) => d.busy += 1,
                Some(Fault::Down) => d.down += 1,
                Some(Fault::Error) => d.failed += 1,
            }
        }
        free_burst(frames);
        if self.spec.delay_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(self.spec.delay_us));
        }
        d
    }
}

impl ExceptionSpec {
    /// Parses `--exception`: `drop`, `pcap:FILE`, `tap:IF[,..]`, `fault:..`, `virtio-user:PATH`.
    pub fn parse(s: &str) -> Result<Self, ExceptionError> {
        match s {
            "drop" => Ok(Self::Drop),
            "kni" => Err(ExceptionError::Kni),
            _ if s.starts_with("kni:") => Err(ExceptionError::Kni),
            _ if s.starts_with("pcap:") && s.len() > 5 => Ok(Self::Pcap(PathBuf::from(&s[5..]))),
            _ if s.starts_with("tap:") => Ok(Self::Tap(TapSpec::parse(&s[4..])?)),
            _ if s.starts_with("fault:") => Ok(Self::Fault(FaultSpec::parse(&s[6..])?)),
            _ if s.starts_with("virtio-user:") => {
                Ok(Self::VirtioUser(VirtioSpec::parse(&s[12..])?))
            }
            _ if s.starts_with("virtio-user") => Err(ExceptionError::Unknown(s.into())),
            _ => Err(ExceptionError::Unknown(s.into())),
        }
    }

    /// The backend's name (`drop`, `pcap`, `tap`, ...).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Pcap(_) => "pcap",
            Self::Tap(_) => "tap",
            Self::Fault(_) => "fault",
            Self::VirtioUser(_) => "virtio-user",
        }
    }

    /// Sets up what every lcore's sink shares (for TAP: creates or attaches
    /// the device and configures it). Context: control thread, before any
    /// lcore starts.
    /// `reverse_gso`: the port the kernel's frames leave on takes GSO
    /// super-frames and partial checksums (a TAP then offers the kernel
    /// its offloads).
    pub fn prepare(
        &self,
        kernel_mac: KernelMac,
        reverse_gso: bool,
    ) -> Result<Exception, ExceptionError> {
        let tap = match self {
            Self::Tap(spec) => Some(Arc::new(TapDevice::prepare(spec, kernel_mac, reverse_gso)?)),
            Self::VirtioUser(_) => {
                return Err(ExceptionError::NotBuilt(
                    "virtio-user (it needs the DPDK backend: build with --features dpdk; without DPDK use tap:IFNAME)".into(),
                ));
            }
            _ => None,
        };
        Ok(Exception {
            spec: self.clone(),
            tap,
            #[cfg(feature = "dpdk")]
            dpdk: None,
        })
    }

    /// Like [`prepare`](Self::prepare) for a DPDK run: `tap:IFNAME` becomes
    /// the net_tap PMD and `virtio-user:PATH` net_virtio_user, each with one
    /// queue pair per delivering lcore refilled from `pool`. `senders` has
    /// one entry per delivering lcore, in the order their sinks are opened:
    /// true where that lcore has a port TX queue for the kernel's frames.
    /// The RX queues of the others are polled by those that do.
    #[cfg(feature = "dpdk")]
    pub fn prepare_dpdk(
        &self,
        eal: &crate::dpdk::Eal,
        kernel_mac: KernelMac,
        senders: &[bool],
        pool: Arc<crate::dpdk::Mempool>,
    ) -> Result<Exception, ExceptionError> {
        let queues = senders.len() as u16;
        let dev = match self {
            Self::Tap(spec) => dpdk::DpdkException::tap(eal, spec, kernel_mac, queues, pool)?,
            Self::VirtioUser(spec) => {
                dpdk::DpdkException::virtio_user(eal, spec, kernel_mac, queues, pool)?
            }
            _ => return self.prepare(kernel_mac, false),
        };
        let dev = dev.with_senders(senders);
        Ok(Exception {
            spec: self.clone(),
            tap: None,
            dpdk: Some(Arc::new(dev)),
        })
    }

    /// The file a given lcore writes for `pcap:FILE`.
    pub fn pcap_path_for(base: &Path, lcore: LcoreId) -> PathBuf {
        let stem = base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match base.extension() {
            Some(ext) => format!("{stem}-{lcore}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{lcore}"),
        };
        base.with_file_name(name)
    }
}

/// A prepared exception path: opens one sink per delivering lcore.
pub struct Exception {
    spec: ExceptionSpec,
    tap: Option<Arc<TapDevice>>,
    #[cfg(feature = "dpdk")]
    dpdk: Option<Arc<dpdk::DpdkException>>,
}

impl Exception {
    /// The TAP device, for the TAP backend.
    pub fn tap(&self) -> Option<&Arc<TapDevice>> {
        self.tap.as_ref()
    }

    /// True when the kernel can send frames back through this path.
    pub fn has_reverse(&self) -> bool {
        #[cfg(feature = "dpdk")]
        if self.dpdk.is_some() {
            return true;
        }
        self.tap.is_some()
    }

    /// The DPDK exception device, in a DPDK run with tap or virtio-user.
    #[cfg(feature = "dpdk")]
    pub fn dpdk(&self) -> Option<&Arc<dpdk::DpdkException>> {
        self.dpdk.as_ref()
    }

    /// Opens the sink instance of one lcore.
    pub fn open(&self, lcore: LcoreId) -> Result<Box<dyn ExceptionSink>, ExceptionError> {
        #[cfg(feature = "dpdk")]
        if let Some(dev) = &self.dpdk {
            return Ok(Box::new(dev.open_sink()?));
        }
        match &self.spec {
            ExceptionSpec::VirtioUser(_) => unreachable!("prepare refuses virtio-user natively"),
            ExceptionSpec::Drop => Ok(Box::new(DropSink)),
            ExceptionSpec::Fault(spec) if spec.lcore.is_some_and(|l| l != lcore.0) => {
                Ok(Box::new(DropSink))
            }
            ExceptionSpec::Fault(spec) => Ok(Box::new(FaultSink {
                spec: spec.clone(),
                seen: 0,
            })),
            ExceptionSpec::Tap(_) => {
                let dev = self.tap.as_ref().expect("prepare opened the TAP device");
                Ok(Box::new(dev.open_sink()?))
            }
            ExceptionSpec::Pcap(base) => {
                let path = ExceptionSpec::pcap_path_for(base, lcore);
                let io = |source| ExceptionError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let f = File::create(&path).map_err(io)?;
                let header = PcapHeader {
                    datalink: DataLink::ETHERNET,
                    ..Default::default()
                };
                let w = PcapWriter::with_header(BufWriter::new(f), header)
                    .map_err(|e| io(io::Error::other(e.to_string())))?;
                Ok(Box::new(PcapSink { w: Some(w) }))
            }
        }
    }
}

/// The outcome of one delivery: every frame is in exactly one field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Frames the stack took.
    pub delivered: usize,
    /// The kernel had no room now (EAGAIN, ENOBUFS).
    pub busy: usize,
    /// The interface is down (EIO).
    pub down: usize,
    /// Any other refusal.
    pub failed: usize,
    /// The kernel refused the frame's offload metadata (EINVAL on a frame
    /// with a virtio-net header: a gso_type or checksum place it rejects).
    pub offload_refused: usize,
    /// A GSO super-frame for a path without virtio-net headers.
    pub gso_unsupported: usize,
    /// Of `delivered`: segments GRO merged into super-frames...
    pub gro_segments: usize,
    /// ...and the super-frames they became.
    pub gro_frames: usize,
}

impl Delivery {
    /// Counts this delivery on a target: delivered, and each refusal under
    /// its reason. Context: the owning target lcore.
    #[inline]
    pub fn count(&self, c: &TargetCounters) {
        c.delivered.add(self.delivered as u64);
        c.drop_counter(TargetDropReason::ExceptionBusy)
            .add(self.busy as u64);
        c.drop_counter(TargetDropReason::ExceptionDown)
            .add(self.down as u64);
        c.drop_counter(TargetDropReason::ExceptionError)
            .add(self.failed as u64);
        if self.offload_refused + self.gso_unsupported > 0 {
            c.drop_counter(TargetDropReason::OffloadRefused)
                .add(self.offload_refused as u64);
            c.drop_counter(TargetDropReason::GsoUnsupported)
                .add(self.gso_unsupported as u64);
        }
        if self.gro_frames > 0 {
            c.gro_segments.add(self.gro_segments as u64);
            c.gro_frames.add(self.gro_frames as u64);
        }
    }

    /// All `n` frames delivered.
    pub fn all(n: usize) -> Self {
        Self {
            delivered: n,
            ..Default::default()
        }
    }

    /// Frames refused for any reason.
    pub fn refused(&self) -> usize {
        self.busy + self.down + self.failed + self.offload_refused + self.gso_unsupported
    }
}

/// What one reverse-direction read pass got.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReverseRx {
    /// Frames read.
    pub frames: usize,
    /// The pool was empty: the kernel's frames wait in the queue (and the
    /// kernel drops what overflows it, counted on its interface).
    pub no_buffer: bool,
}

/// A per-lcore exception path instance.
pub trait ExceptionSink: Send {
    /// Delivers every frame of `frames` it can, frees them all, and reports
    /// how many were delivered and why the rest were refused.
    /// Context: the owning lcore.
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery;

    /// Reads frames the kernel sent back through this sink (reverse
    /// direction) into buffers from `pool`. Sinks without one return none.
    /// Context: the owning lcore; never blocks.
    fn receive_burst(&mut self, _pool: &mut Pool, _out: &mut Burst) -> ReverseRx {
        ReverseRx::default()
    }

    /// Flushes buffered output; called at shutdown.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// A descriptor that turns readable when the kernel sends frames back
    /// (the TAP queue), for an idle lcore to block on beside its own.
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// The null stack: every frame is accepted and freed.
pub struct DropSink;

impl ExceptionSink for DropSink {
    #[inline]
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let n = frames.len();
        free_burst(frames);
        Delivery::all(n)
    }
}

/// Writes delivered frames to a pcap file.
pub struct PcapSink {
    w: Option<PcapWriter<BufWriter<File>>>,
}

impl ExceptionSink for PcapSink {
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let n = frames.len();
        let mut ok = 0;
        if let Some(w) = self.w.as_mut() {
            for f in frames.iter() {
                let pkt = PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f.data());
                if w.write_packet(&pkt).is_err() {
                    break;
                }
                ok += 1;
            }
        }
        free_burst(frames);
        Delivery {
            delivered: ok,
            failed: n - ok,
            ..Default::default()
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.w.take() {
            Some(w) => w.into_writer().flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_kni_gets_a_clear_error() {
        assert_eq!(ExceptionSpec::parse("drop").unwrap(), ExceptionSpec::Drop);
        assert_eq!(
            ExceptionSpec::parse("pcap:/tmp/x.pcap").unwrap(),
            ExceptionSpec::Pcap("/tmp/x.pcap".into())
        );
        assert!(
            ExceptionSpec::parse("kni")
                .unwrap_err()
                .to_string()
                .contains("KNI was removed")
        );
        assert!(ExceptionSpec::parse("pcap:").is_err());
        assert!(matches!(
            ExceptionSpec::parse("tap:cpumap0").unwrap(),
            ExceptionSpec::Tap(_)
        ));
        let v = ExceptionSpec::parse("virtio-user:/dev/vhost-net").unwrap();
        assert_eq!(
            v,
            ExceptionSpec::VirtioUser(VirtioSpec {
                path: "/dev/vhost-net".into(),
                gro: true
            })
        );
        assert_eq!(
            ExceptionSpec::parse("virtio-user:/tmp/v.sock,gro=off").unwrap(),
            ExceptionSpec::VirtioUser(VirtioSpec {
                path: "/tmp/v.sock".into(),
                gro: false
            })
        );
        let e = ExceptionSpec::parse("virtio-user:/tmp/v.sock,tso=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'tso'") && e.contains("known: gro"), "{e}");
        // Switches read alike on every device (the TAP took 1|0, this on|off).
        assert!(!VirtioSpec::parse("/tmp/v.sock,gro=0").unwrap().gro);
        assert!(ExceptionSpec::parse("virtio-user:").is_err());
        assert!(ExceptionSpec::parse("virtio-user:,gro=on").is_err());
        // Natively it is refused when prepared, with the way out named.
        let e = v
            .prepare(KernelMac::Rewrite, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("needs the DPDK backend") && e.contains("tap:"),
            "{e}"
        );
        assert!(ExceptionSpec::parse("virtio-user").is_err());
        assert!(
            ExceptionSpec::parse("bogus")
                .unwrap_err()
                .to_string()
                .contains("unknown exception path")
        );
    }

    #[test]
    fn pcap_files_are_per_lcore() {
        let p = ExceptionSpec::pcap_path_for(Path::new("/d/out.pcap"), LcoreId(3));
        assert_eq!(p, PathBuf::from("/d/out-lcore3.pcap"));
    }
}
