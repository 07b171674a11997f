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
mod spec;
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
use spec::Fault;
pub use spec::{ExceptionSpec, FAULT_KEYS, FaultSpec, VIRTIO_KEYS, VirtioSpec};
use tap::{KernelMac, TapDevice};

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
    fn pcap_files_are_per_lcore() {
        let p = ExceptionSpec::pcap_path_for(Path::new("/d/out.pcap"), LcoreId(3));
        assert_eq!(p, PathBuf::from("/d/out-lcore3.pcap"));
    }
}
