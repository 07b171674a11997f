//! `net_pcap`: replays a pcap file (`rx_pcap=FILE`, once, or endlessly with
//! `infinite_rx=1`) and writes transmitted frames to `tx_pcap=FILE`.
//!
//! The whole file is read and validated when the port opens (like DPDK's
//! `infinite_rx`), so the RX path copies from memory and makes no syscall.
//! Records larger than a buffer are dropped and counted as `ierrors`.
//! Without `tx_pcap`, a Tx verdict has nowhere to go: `tx_burst` refuses the
//! frames and the RX lcore frees them and counts `tx_drops`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

use super::{Burst, PortError, PortQueue, VdevSpec, free_all};
use crate::counters::PortQueueCounters;
use crate::frame::Pool;
use crate::ids::PortId;

/// libpcap's MAXIMUM_SNAPLEN.
const MAX_CAPLEN: u32 = 262_144;

/// Every record of a pcap file, back to back, with their lengths.
pub struct PcapTrace {
    /// Every record's bytes, back to back.
    pub bytes: Vec<u8>,
    /// (offset, length) of each record in `bytes`.
    pub records: Vec<(usize, usize)>,
}

impl PcapTrace {
    /// Reads and validates a whole Ethernet pcap file. Like libpcap (and so
    /// DPDK's net_pcap), a record longer than the file's snap length is
    /// accepted; a capture length over 256 KiB or a record cut off by the
    /// end of the file is an error naming the record.
    pub fn load(path: &str) -> Result<Self, String> {
        // Checked before opening: opening a FIFO would block.
        if !std::fs::metadata(path)
            .map_err(|e| e.to_string())?
            .is_file()
        {
            return Err("not a regular file".into());
        }
        let file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len == 0 {
            return Err("empty file, not a pcap capture".into());
        }
        Self::from_reader(std::io::BufReader::new(file))
    }

    /// As `load`, from any reader (the fuzz target feeds it bytes).
    pub fn from_reader<R: std::io::Read>(r: R) -> Result<Self, String> {
        let mut reader = PcapReader::new(r)
            .map_err(|e| format!("not a pcap capture (bad global header: {e})"))?;
        let link = reader.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(format!("link type {link:?} is not Ethernet (linktype 1)"));
        }
        let mut trace = Self {
            bytes: Vec::new(),
            records: Vec::new(),
        };
        let mut i = 0usize;
        while let Some(pkt) = reader.next_raw_packet() {
            let pkt = pkt.map_err(|e| format!("record {i}: {e}"))?;
            if pkt.incl_len > MAX_CAPLEN {
                return Err(format!(
                    "record {i}: capture length {} exceeds {MAX_CAPLEN}",
                    pkt.incl_len
                ));
            }
            trace.records.push((trace.bytes.len(), pkt.data.len()));
            trace.bytes.extend_from_slice(&pkt.data);
            i += 1;
        }
        if trace.records.is_empty() {
            return Err("the capture holds no packets".into());
        }
        Ok(trace)
    }

    /// Record `i`'s bytes.
    pub fn record(&self, i: usize) -> &[u8] {
        let (off, len) = self.records[i];
        &self.bytes[off..off + len]
    }
}

struct PcapQueue {
    port: u16,
    trace: PcapTrace,
    next: usize,
    infinite: bool,
    tx: Option<PcapWriter<BufWriter<File>>>,
    counters: Arc<PortQueueCounters>,
}

pub(super) fn open(spec: &VdevSpec, port: PortId) -> Result<Vec<Box<dyn PortQueue>>, PortError> {
    let name = format!("{port} ({})", spec.name);
    let rx = spec.get("rx_pcap").ok_or_else(|| PortError::BadVdev {
        vdev: spec.name.clone(),
        why: "rx_pcap=FILE is required".into(),
    })?;
    let trace = PcapTrace::load(rx).map_err(|why| PortError::Pcap {
        port: name.clone(),
        file: rx.into(),
        why,
    })?;
    let infinite = match spec.get("infinite_rx").unwrap_or("0") {
        "0" => false,
        "1" => true,
        v => {
            return Err(PortError::BadVdev {
                vdev: spec.name.clone(),
                why: format!("infinite_rx={v}: expected 0 or 1"),
            });
        }
    };
    let tx = match spec.get("tx_pcap") {
        None => None,
        Some(path) => {
            let io = |source| PortError::Io {
                port: name.clone(),
                file: path.into(),
                source,
            };
            let f = File::create(path).map_err(io)?;
            let header = pcap_file::pcap::PcapHeader {
                datalink: DataLink::ETHERNET,
                ..Default::default()
            };
            Some(
                PcapWriter::with_header(BufWriter::new(f), header).map_err(|e| {
                    PortError::Pcap {
                        port: name.clone(),
                        file: path.into(),
                        why: e.to_string(),
                    }
                })?,
            )
        }
    };
    Ok(vec![Box::new(PcapQueue {
        port: port.0,
        trace,
        next: 0,
        infinite,
        tx,
        counters: Arc::default(),
    })])
}

impl PortQueue for PcapQueue {
    fn rx_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> usize {
        let mut got = 0;
        while !out.is_full() {
            if self.next == self.trace.records.len() {
                if !self.infinite {
                    break;
                }
                self.next = 0;
            }
            let Some(mut f) = pool.alloc() else {
                // Keep the record for the next poll: a replay loses nothing.
                self.counters.rx_nombuf.add(1);
                break;
            };
            let rec = self.trace.record(self.next);
            self.next += 1;
            if f.copy_from(rec).is_err() {
                self.counters.ierrors.add(1);
                continue; // `f` goes back to the pool here
            }
            f.set_rx_meta(self.port, 0, 0);
            self.counters.ibytes.add(rec.len() as u64);
            out.push(f);
            got += 1;
        }
        self.counters.ipackets.add(got as u64);
        got
    }

    fn tx_burst(&mut self, frames: &mut Burst) -> usize {
        let Some(w) = self.tx.as_mut() else {
            // No wire: refuse them all; the caller frees and counts them
            // (the RX lcore's tx_drops), as with a full DPDK TX queue.
            return 0;
        };
        let mut sent = 0;
        for f in frames.iter() {
            let pkt = PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f.data());
            if w.write_packet(&pkt).is_err() {
                break;
            }
            sent += 1;
            self.counters.obytes.add(f.len() as u64);
        }
        let mut done: Burst = frames.drain(..sent).collect();
        free_all(&mut done);
        self.counters.opackets.add(sent as u64);
        sent
    }

    fn exhausted(&self) -> bool {
        !self.infinite && self.next == self.trace.records.len()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The writer has no flush of its own: take it apart (no more Tx
        // happens after shutdown flushes).
        match self.tx.take() {
            Some(w) => w.into_writer().flush(),
            None => Ok(()),
        }
    }

    fn counters(&self) -> &Arc<PortQueueCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Pool;
    use crate::port::{Burst, open};

    fn write_capture(path: &std::path::Path, frames: &[&[u8]]) {
        let header = pcap_file::pcap::PcapHeader {
            datalink: DataLink::ETHERNET,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
        for f in frames {
            w.write_packet(&PcapPacket::new(
                std::time::Duration::ZERO,
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
    }

    #[test]
    fn replays_then_transmits_to_tx_pcap_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (rx, tx) = (dir.path().join("rx.pcap"), dir.path().join("tx.pcap"));
        write_capture(&rx, &[&[1u8; 60], &[2u8; 70], &[3u8; 3000]]);
        let spec = VdevSpec::parse(&format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            rx.display(),
            tx.display()
        ))
        .unwrap();
        let mut q = open(&spec, PortId(0), 1).unwrap().remove(0);
        let mut pool = Pool::new("p", 8, 128, 2048).unwrap();
        let mut burst = Burst::new();
        assert_eq!(
            q.rx_burst(&mut pool, &mut burst),
            2,
            "the 3000-byte record does not fit a buffer"
        );
        assert!(q.exhausted());
        assert_eq!(q.counters().ierrors.get(), 1);
        assert_eq!(q.tx_burst(&mut burst), 2);
        q.flush().unwrap();
        assert_eq!(pool.in_use(), 0);
        let back = PcapTrace::load(tx.to_str().unwrap()).unwrap();
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.record(1), &[2u8; 70][..]);
        assert_eq!(q.counters().opackets.get(), 2);
    }

    #[test]
    fn without_tx_pcap_transmits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rx = dir.path().join("rx.pcap");
        write_capture(&rx, &[&[1u8; 60]]);
        let spec =
            VdevSpec::parse(&format!("net_pcap0,rx_pcap={},infinite_rx=1", rx.display())).unwrap();
        let mut q = open(&spec, PortId(0), 1).unwrap().remove(0);
        let mut pool = Pool::new("p", 64, 128, 2048).unwrap();
        let mut burst = Burst::new();
        assert_eq!(
            q.rx_burst(&mut pool, &mut burst),
            32,
            "infinite_rx loops the one record"
        );
        assert!(!q.exhausted());
        assert_eq!(q.tx_burst(&mut burst), 0);
        assert_eq!(
            burst.len(),
            32,
            "refused frames stay with the caller, who counts them"
        );
        crate::frame::free_burst(&mut burst);
        assert_eq!((q.counters().opackets.get(), pool.in_use()), (0, 0));
    }
}
