//! The exception path: where a target (or an RX lcore's Pass verdict) hands
//! frames to "the kernel".
//!
//! # General idea
//!
//! Each delivering lcore owns its own [`ExceptionSink`] instance (one TAP
//! queue, one file), so sinks need no synchronisation. A sink takes a burst;
//! what it could not deliver it frees and reports, and the caller counts
//! those as target drops with reason `exception_error`.
//!
//! Backends in the native build: `drop` (a null stack: frames are delivered
//! and freed) and `pcap:FILE` (each lcore writes `FILE` with `-lcoreN`
//! before the extension). The TAP and DPDK backends implement the same trait.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use thiserror::Error;

use crate::frame::free_burst;
use crate::ids::LcoreId;
use crate::port::Burst;

#[derive(Debug, Error)]
pub enum ExceptionError {
    #[error(
        "unknown exception path '{0}': expected drop or pcap:FILE (tap:IFNAME and virtio-user need the kernel-path and DPDK backends)"
    )]
    Unknown(String),
    #[error(
        "KNI was removed from DPDK in 23.11; use --exception tap:IFNAME (or virtio-user with the DPDK backend)"
    )]
    Kni,
    #[error("exception path '{0}' is not available in this build")]
    NotBuilt(String),
    #[error("pcap exception file {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Which backend, parsed from `--exception`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExceptionSpec {
    Drop,
    Pcap(PathBuf),
}

impl ExceptionSpec {
    pub fn parse(s: &str) -> Result<Self, ExceptionError> {
        match s {
            "drop" => Ok(Self::Drop),
            "kni" => Err(ExceptionError::Kni),
            _ if s.starts_with("kni:") => Err(ExceptionError::Kni),
            _ if s.starts_with("pcap:") && s.len() > 5 => Ok(Self::Pcap(PathBuf::from(&s[5..]))),
            _ if s.starts_with("tap:") || s.starts_with("virtio-user:") => {
                Err(ExceptionError::NotBuilt(s.into()))
            }
            _ => Err(ExceptionError::Unknown(s.into())),
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Pcap(_) => "pcap",
        }
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

    /// Opens the sink instance of one lcore.
    pub fn open(&self, lcore: LcoreId) -> Result<Box<dyn ExceptionSink>, ExceptionError> {
        match self {
            Self::Drop => Ok(Box::new(DropSink)),
            Self::Pcap(base) => {
                let path = Self::pcap_path_for(base, lcore);
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

/// A per-lcore exception path instance.
pub trait ExceptionSink: Send {
    /// Delivers every frame of `frames` it can, frees them all, and returns
    /// how many were delivered; the rest were refused.
    /// Context: the owning lcore.
    fn deliver_burst(&mut self, frames: &mut Burst) -> usize;

    /// Flushes buffered output; called at shutdown.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The null stack: every frame is accepted and freed.
pub struct DropSink;

impl ExceptionSink for DropSink {
    #[inline]
    fn deliver_burst(&mut self, frames: &mut Burst) -> usize {
        let n = frames.len();
        free_burst(frames);
        n
    }
}

/// Writes delivered frames to a pcap file.
pub struct PcapSink {
    w: Option<PcapWriter<BufWriter<File>>>,
}

impl ExceptionSink for PcapSink {
    fn deliver_burst(&mut self, frames: &mut Burst) -> usize {
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
        ok
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
        assert!(
            ExceptionSpec::parse("tap:cpumap0")
                .unwrap_err()
                .to_string()
                .contains("not available")
        );
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
