//! The TAP exception path: frames written into a multi-queue TAP device
//! enter the Linux stack as if they had arrived on that interface (what the
//! kernel cpumap's kthread does with `netif_receive_skb`).
//!
//! # General idea
//!
//! `--exception tap:IFNAME[,mac=02:..][,up=0]` creates IFNAME (or attaches
//! to an existing multi-queue TAP) with `IFF_TAP | IFF_NO_PI |
//! IFF_MULTI_QUEUE`. Every delivering lcore (each target, and each RX lcore
//! for its pass verdicts) gets its own queue, so no two lcores share a file
//! descriptor and a write needs no lock. A device we created is not
//! persistent: it disappears when cpumapd closes its last queue, at exit or
//! on a crash. An existing persistent device is attached to and left as it
//! was found (except `up` and `mac` if asked).
//!
//! Delivery writes each frame straight from its buffer (no copy) with one
//! `write(2)`. `--kernel-mac rewrite` (default) sets the destination MAC of
//! unicast frames to the TAP's own, so `eth_type_trans` classifies them as
//! PACKET_HOST and the stack accepts them; broadcast and multicast frames
//! are left alone. A write the kernel refuses is counted by reason: busy
//! (EAGAIN, ENOBUFS), down (EIO: the interface is down) or error.
//!
//! Reverse direction: frames the kernel transmits out of the TAP (ARP
//! replies, ICMP, anything routed there) are read from the same queue
//! (non-blocking) by its lcore, which sends them out of a port.
//!
//! Why write() per frame and not io_uring or writev: writev gathers iovecs
//! into ONE frame, and io_uring submitting a burst of 32 writes per kernel
//! entry was not faster than the plain loop here (examples/tap_bench.rs, table
//! in docs/PERFORMANCE.md): a TAP write is mostly the stack's receive work,
//! which io_uring does not batch.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use super::{Delivery, ExceptionError, ExceptionSink, ReverseRx};
use crate::frame::{Burst, MAX_BURST};
use crate::frame::{Pool, free_burst};
use crate::port::netdev;

/// What to do with the destination MAC of unicast frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelMac {
    /// Set it to the TAP's MAC so the stack takes the frame as its own.
    #[default]
    Rewrite,
    /// Leave frames as they are (the stack drops unicast for other MACs).
    Keep,
}

impl std::str::FromStr for KernelMac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rewrite" => Ok(Self::Rewrite),
            "keep" => Ok(Self::Keep),
            _ => Err(format!("--kernel-mac '{s}': expected rewrite or keep")),
        }
    }
}

/// `tap:IFNAME[,mac=..][,up=0|1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapSpec {
    /// The interface name.
    pub ifname: String,
    /// A MAC to set (None: keep the kernel's).
    pub mac: Option<[u8; 6]>,
    /// Bring the interface up.
    pub up: bool,
}

impl TapSpec {
    /// Parses `IFNAME[,mac=..][,up=0|1]`.
    pub fn parse(rest: &str) -> Result<Self, ExceptionError> {
        let bad = |why: String| ExceptionError::Tap(format!("--exception tap:{rest}: {why}"));
        let mut parts = rest.split(',');
        let ifname = parts.next().unwrap_or("").to_string();
        netdev::check_name(&ifname).map_err(bad)?;
        let mut spec = TapSpec {
            ifname,
            mac: None,
            up: true,
        };
        for kv in parts {
            match kv.split_once('=') {
                Some(("mac", m)) => spec.mac = Some(netdev::parse_mac(m).map_err(bad)?),
                Some(("up", "1")) => spec.up = true,
                Some(("up", "0")) => spec.up = false,
                _ => {
                    return Err(bad(format!(
                        "unknown option '{kv}' (expected mac=02:..:.., up=0|1)"
                    )));
                }
            }
        }
        Ok(spec)
    }
}

/// Opens one queue of the multi-queue TAP `name` (creating the device if it
/// does not exist). Errors name the device and the fix.
fn open_queue(name: &str) -> Result<OwnedFd, ExceptionError> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| {
            ExceptionError::Tap(match e.kind() {
                io::ErrorKind::NotFound => "TAP exception path: /dev/net/tun does not exist; load the tun module (modprobe tun) or create the node (mknod /dev/net/tun c 10 200)".to_string(),
                io::ErrorKind::PermissionDenied => format!("TAP {name}: cannot open /dev/net/tun: {e}; run as root or with CAP_NET_ADMIN"),
                _ => format!("TAP {name}: cannot open /dev/net/tun: {e}"),
            })
        })?;
    let mut ifr = netdev::ifreq(name);
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and updates) one struct ifreq, `ifr`.
    let r = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => format!(
                "TAP {name}: {e}: creating or attaching a TAP needs CAP_NET_ADMIN (run as root, setcap cap_net_admin+ep, or systemd AmbientCapabilities=CAP_NET_ADMIN)"
            ),
            Some(libc::EINVAL) | Some(libc::EBUSY) => format!(
                "TAP {name}: {e}: the interface exists but is not a multi-queue TAP, or all its queues are taken; use another name or recreate it (ip tuntap add dev {name} mode tap multi_queue)"
            ),
            _ => format!("TAP {name}: TUNSETIFF: {e}"),
        };
        return Err(ExceptionError::Tap(why));
    }
    Ok(OwnedFd::from(tun))
}

/// The shared part: the device, its MAC, and the first queue (opened while
/// preparing, to create and configure the device before any lcore starts).
pub struct TapDevice {
    spec: TapSpec,
    kernel_mac: KernelMac,
    mac: [u8; 6],
    created: bool,
    first: Mutex<Option<OwnedFd>>,
}

impl TapDevice {
    /// Creates or attaches, sets the MAC and brings the interface up.
    /// Context: control thread, before lcores start.
    pub fn prepare(spec: &TapSpec, kernel_mac: KernelMac) -> Result<Self, ExceptionError> {
        let name = &spec.ifname;
        let created = !netdev::exists(name);
        let first = open_queue(name)?;
        let cfg = |what: &str, e: io::Error| {
            ExceptionError::Tap(format!("TAP {name}: cannot {what}: {e}"))
        };
        if let Some(m) = spec.mac {
            netdev::set_mac(name, m).map_err(|e| cfg("set its MAC", e))?;
        }
        if spec.up {
            netdev::set_up(name).map_err(|e| cfg("bring it up", e))?;
        }
        let mac = netdev::mac(name).map_err(|e| cfg("read its MAC", e))?;
        Ok(Self {
            spec: spec.clone(),
            kernel_mac,
            mac,
            created,
            first: Mutex::new(Some(first)),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.spec.ifname
    }

    /// The interface's MAC.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// True if cpumapd created the device (it goes away with the last queue).
    pub fn created(&self) -> bool {
        self.created
    }

    /// A queue for one lcore: the one opened while preparing, then new ones.
    pub fn open_sink(&self) -> Result<TapSink, ExceptionError> {
        let fd = match self.first.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(fd) => fd,
            None => open_queue(&self.spec.ifname)?,
        };
        Ok(TapSink {
            file: File::from(fd),
            mac: self.mac,
            rewrite: self.kernel_mac == KernelMac::Rewrite,
        })
    }
}

/// One TAP queue, owned by one lcore.
pub struct TapSink {
    file: File,
    mac: [u8; 6],
    rewrite: bool,
}

impl AsRawFd for TapSink {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl ExceptionSink for TapSink {
    /// Context: the owning lcore. One write(2) per frame, from the frame's
    /// own buffer; no allocation.
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let mut d = Delivery::default();
        let fd = self.file.as_raw_fd();
        for f in frames.iter_mut() {
            if self.rewrite {
                crate::wire::set_unicast_dst(f.data_mut(), self.mac);
            }
            let pkt = f.data();
            // SAFETY: pkt is a valid, initialised byte slice for the call.
            let r = unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) };
            if r >= 0 {
                d.delivered += 1;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => d.busy += 1,
                Some(libc::EIO) | Some(libc::ENETDOWN) => d.down += 1,
                _ => d.failed += 1,
            }
        }
        free_burst(frames);
        d
    }

    /// Reads what the kernel transmitted out of this queue, up to a burst.
    /// Context: the owning lcore; non-blocking.
    fn receive_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> ReverseRx {
        let mut rx = ReverseRx::default();
        let fd = self.file.as_raw_fd();
        while out.len() < MAX_BURST {
            let Some(mut f) = pool.alloc() else {
                rx.no_buffer = true;
                break;
            };
            let room = f.room();
            if f.set_len(room).is_err() {
                break;
            }
            let buf = f.data_mut();
            // SAFETY: buf is a valid writable slice of `room` bytes.
            let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                break; // EAGAIN: nothing more now (the frame goes home on drop)
            }
            // r <= room: read(2) never returns more than asked.
            let _ = f.set_len(r as usize);
            out.push(f);
            rx.frames += 1;
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_specs_parse_with_clear_errors() {
        let s = TapSpec::parse("cpumap0,mac=02:00:00:00:00:01,up=0").unwrap();
        assert_eq!(s.ifname, "cpumap0");
        assert_eq!(s.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(!s.up);
        let e = TapSpec::parse("x,speed=fast").unwrap_err().to_string();
        assert!(e.contains("unknown option 'speed=fast'"), "{e}");
        let e = TapSpec::parse("").unwrap_err().to_string();
        assert!(e.contains("interface name"), "{e}");
        let e = TapSpec::parse("t0,mac=01:00:00:00:00:01")
            .unwrap_err()
            .to_string();
        assert!(e.contains("multicast"), "{e}");
        assert_eq!("keep".parse::<KernelMac>().unwrap(), KernelMac::Keep);
        assert!("sometimes".parse::<KernelMac>().is_err());
    }
}
