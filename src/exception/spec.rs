//! What `--exception` says, parsed and checked before any device is
//! opened: the forms (`drop`, `pcap:`, `tap:`, `fault:`, `virtio-user:`)
//! and their key=value options, whose tables ([`TAP_KEYS`],
//! [`VIRTIO_KEYS`], [`FAULT_KEYS`]) are what the parsers accept, what their
//! errors list and what `--help` prints. The devices live beside this
//! file ([`super::tap`], [`super::dpdk`]).

use std::path::PathBuf;

use super::ExceptionError;
use crate::kv::{self, Key};
use crate::port::netdev;

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
    pub(super) fn fault(&self, i: u64) -> Option<Fault> {
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

/// What one frame of a fault sink suffers.
pub(super) enum Fault {
    Busy,
    Down,
    Error,
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
}

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
    /// Virtio-net headers and offloads (`offload=on`, the default): GSO
    /// super-frames and partial checksums go into the kernel as they are.
    pub offload: bool,
    /// Coalesce TCP segments of a burst into super-frames (`gro=on`, the
    /// default; needs `offload=on`).
    pub gro: bool,
    /// Open the queues with IFF_NAPI (`napi=on`; default off): the kernel
    /// queues each write to a NAPI context and runs its own GRO there.
    /// A write(2) is never "more to come", so that NAPI poll sees one frame
    /// at a time and merges nothing; it is here for measuring that
    /// (docs/PERFORMANCE.md) and for kernels where it pays.
    pub napi: bool,
    /// Which queue the kernel's frames out of the TAP go to (`steer=`).
    pub steer: Steer,
}

/// How a multi-queue TAP picks the queue for a frame the kernel sends out
/// of it (`TUNSETSTEERINGEBPF`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Steer {
    /// `steer=hash` (default): a two-instruction steering program returns
    /// the packet's hash (a local socket's txhash), so each flow leaves on
    /// one queue. With a program attached, tun no longer computes a flow
    /// hash of every frame written into it and keeps no flow table: that
    /// hash (siphash over the flow dissector) was ~5% of a target's time
    /// writing 64-byte frames.
    #[default]
    Hash,
    /// `steer=flow`: tun's own automatic flow steering (hash every frame
    /// written, send a flow's replies to the queue that last wrote it).
    Flow,
}

/// The options of `--exception tap:IFNAME[,key=value...]`.
pub const TAP_KEYS: &[Key] = &[
    Key {
        name: "mac",
        value: "MAC",
        help: "the TAP's MAC address (default: the kernel's)",
    },
    Key {
        name: "up",
        value: "on|off",
        help: "bring the TAP up (default on)",
    },
    Key {
        name: "offload",
        value: "on|off",
        help: "virtio-net headers: checksum state and GSO to the kernel (default on)",
    },
    Key {
        name: "gro",
        value: "on|off",
        help: "merge a flow's segments into super-frames before the write (default on; needs offload)",
    },
    Key {
        name: "napi",
        value: "on|off",
        help: "IFF_NAPI: the kernel's GRO on the TAP's queues (default off)",
    },
    Key {
        name: "steer",
        value: "hash|flow",
        help: "replies to the queue of: the flow's hash (default), or the queue that last wrote the flow",
    },
];

impl TapSpec {
    /// Parses `IFNAME[,key=value...]` ([`TAP_KEYS`]).
    pub fn parse(rest: &str) -> Result<Self, ExceptionError> {
        let bad = |why: String| ExceptionError::Tap(format!("--exception tap:{rest}: {why}"));
        let (ifname, opts) = rest.split_once(',').unwrap_or((rest, ""));
        let ifname = ifname.to_string();
        netdev::check_name(&ifname).map_err(bad)?;
        let mut spec = TapSpec {
            ifname,
            mac: None,
            up: true,
            offload: true,
            gro: true,
            napi: false,
            steer: Steer::Hash,
        };
        let on_off = |k: &str, v: &str| kv::on_off(k, v).map_err(&bad);
        for (k, v) in kv::parse(opts, &[TAP_KEYS]).map_err(|e| bad(e.to_string()))? {
            match (k, v) {
                ("mac", m) => spec.mac = Some(netdev::parse_mac(m).map_err(bad)?),
                ("up", v) => spec.up = on_off("up", v)?,
                ("offload", v) => spec.offload = on_off("offload", v)?,
                ("gro", v) => spec.gro = on_off("gro", v)?,
                ("napi", v) => spec.napi = on_off("napi", v)?,
                ("steer", "hash") => spec.steer = Steer::Hash,
                ("steer", "flow") => spec.steer = Steer::Flow,
                (k, v) => return Err(bad(format!("{k}={v}: expected hash or flow"))),
            }
        }
        if spec.gro && !spec.offload {
            // GRO's super-frames need the virtio-net header.
            spec.gro = false;
        }
        Ok(spec)
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
    fn tap_specs_parse_with_clear_errors() {
        let s = TapSpec::parse("cpumap0,mac=02:00:00:00:00:01,up=0").unwrap();
        assert_eq!(s.ifname, "cpumap0");
        assert_eq!(s.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(!s.up);
        assert!(!s.napi, "NAPI is off by default");
        let s = TapSpec::parse("t0,napi=on,gro=off").unwrap();
        assert!(s.napi && !s.gro && s.offload);
        assert_eq!(s.steer, Steer::Hash, "the steering program by default");
        assert_eq!(TapSpec::parse("t0,steer=flow").unwrap().steer, Steer::Flow);
        let e = TapSpec::parse("t0,steer=rss").unwrap_err().to_string();
        assert!(e.contains("steer=rss: expected hash or flow"), "{e}");
        let e = TapSpec::parse("t0,napi=maybe").unwrap_err().to_string();
        assert!(e.contains("napi=maybe: expected on or off"), "{e}");
        let e = TapSpec::parse("x,speed=fast").unwrap_err().to_string();
        assert!(e.contains("unknown option 'speed'"), "{e}");
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
