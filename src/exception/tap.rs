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
//! `write(2)`, its virtio-net header put into the frame's headroom (a GRO
//! super-frame is one `writev(2)` over its members). A device cpumapd
//! creates gets a queue-steering program (`steer=hash`), which also stops
//! tun from hashing every frame written into it. `--kernel-mac rewrite` (default) sets the destination MAC of
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

use super::gro::{Emit, Gro};
pub use super::spec::{KernelMac, Steer, TAP_KEYS, TapSpec};
use super::{Delivery, ExceptionError, ExceptionSink, ReverseRx};
use crate::frame::{Burst, Frame, MAX_BURST};
use crate::frame::{Pool, free_burst};
use crate::port::netdev;
use crate::wire::vnet::{F_DATA_VALID, F_NEEDS_CSUM, HDR_LEN as VNET_HDR_LEN, VnetHdr};
use crate::wire::{CsumState, checksum_state};

/// Opens one queue of the multi-queue TAP `name` (creating the device if it
/// does not exist). Errors name the device and the fix.
fn open_queue(name: &str, vnet: bool, napi: bool) -> Result<OwnedFd, ExceptionError> {
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
    let vnet = if vnet { libc::IFF_VNET_HDR } else { 0 };
    let napi = if napi { libc::IFF_NAPI } else { 0 };
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | vnet | napi) as libc::c_short;
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

/// Attaches the `steer=hash` program to the device behind `fd`: `r0 =
/// skb->hash; exit` (tun takes the result modulo its queues). tun holds the
/// program from then on; it goes with the device.
fn attach_steering(fd: &OwnedFd) -> io::Result<()> {
    use crate::port::bpf::{insn, prog_load};
    // BPF_LDX | BPF_MEM | BPF_W r0 = *(u32 *)(r1 + hash); BPF_JMP | BPF_EXIT.
    let insns = [
        insn(0x61, 0, 1, crate::bpf_abi::SK_BUFF_HASH, 0),
        insn(0x95, 0, 0, 0, 0),
    ];
    let prog = prog_load(
        crate::bpf_abi::PROG_TYPE_SOCKET_FILTER,
        0,
        &insns,
        "cpumapd_steer",
    )?;
    let prog_fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads one int (the program's fd) through
    // the pointer, which points at `prog_fd` for the call.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETSTEERINGEBPF,
            &prog_fd as *const libc::c_int,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The offloads cpumapd asks the TAP for (TUNSETOFFLOAD: what the kernel
/// may hand us on the reverse direction), most first; the kernel refuses
/// what it lacks (USO before 6.2), so each is tried in turn.
const OFFLOAD_TRIES: [libc::c_uint; 3] = [
    libc::TUN_F_CSUM
        | libc::TUN_F_TSO4
        | libc::TUN_F_TSO6
        | libc::TUN_F_TSO_ECN
        | libc::TUN_F_USO4
        | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
    libc::TUN_F_CSUM,
];

/// Names of TUN_F_* bits, for the log line.
fn offload_names(f: libc::c_uint) -> String {
    let names = [
        (libc::TUN_F_CSUM, "csum"),
        (libc::TUN_F_TSO4, "tso4"),
        (libc::TUN_F_TSO6, "tso6"),
        (libc::TUN_F_TSO_ECN, "tso_ecn"),
        (libc::TUN_F_USO4, "uso4"),
        (libc::TUN_F_USO6, "uso6"),
    ];
    let v: Vec<_> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// ioctl(fd, req, &arg) for the TUN int/uint requests.
fn tun_ioctl(fd: &OwnedFd, req: libc::Ioctl, arg: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer;
    // TUNSETOFFLOAD takes its argument by value (the pointer form is not
    // used for it, see set_offloads).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &arg as *const libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// TUNSETOFFLOAD takes the flags as the argument itself.
fn set_offloads(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD reads no memory: the flags are the argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What the device was set up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapOffloads {
    /// Frames carry a virtio-net header both ways.
    pub vnet: bool,
    /// TUN_F_* the kernel took.
    pub flags: u32,
    /// GRO on delivery.
    pub gro: bool,
}

/// The shared part: the device, its MAC, and the first queue (opened while
/// preparing, to create and configure the device before any lcore starts).
pub struct TapDevice {
    spec: TapSpec,
    kernel_mac: KernelMac,
    mac: [u8; 6],
    created: bool,
    offloads: TapOffloads,
    first: Mutex<Option<OwnedFd>>,
}

impl TapDevice {
    /// Creates or attaches, negotiates the virtio-net header and offloads,
    /// sets the MAC and brings the interface up. `reverse_gso`: the port
    /// the kernel's frames leave on takes GSO super-frames and partial
    /// checksums (else the TAP is given no offloads, so the kernel
    /// finishes every frame before handing it back).
    /// Context: control thread, before lcores start.
    pub fn prepare(
        spec: &TapSpec,
        kernel_mac: KernelMac,
        reverse_gso: bool,
    ) -> Result<Self, ExceptionError> {
        let name = &spec.ifname;
        let created = !netdev::exists(name);
        let (first, offloads) = Self::open_first(spec, reverse_gso)?;
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
        // A device cpumapd did not create is left with the steering it has
        // (a program would stay on it after cpumapd exits).
        if spec.steer == Steer::Hash
            && created
            && let Err(e) = attach_steering(&first)
        {
            eprintln!(
                "cpumapd: TAP {name}: no steering program ({e}); tun hashes every frame written (steer=flow)"
            );
        }
        Ok(Self {
            spec: spec.clone(),
            kernel_mac,
            mac,
            created,
            offloads,
            first: Mutex::new(Some(first)),
        })
    }

    /// Opens the first queue with the virtio-net header when asked (falling
    /// back to plain frames, with one log line, if the kernel refuses) and
    /// negotiates the offloads.
    fn open_first(
        spec: &TapSpec,
        reverse_gso: bool,
    ) -> Result<(OwnedFd, TapOffloads), ExceptionError> {
        let name = &spec.ifname;
        let plain = TapOffloads {
            vnet: false,
            flags: 0,
            gro: false,
        };
        if !spec.offload {
            return Ok((open_queue(name, false, spec.napi)?, plain));
        }
        let fd = match open_queue(name, true, spec.napi) {
            Ok(fd) => fd,
            Err(e) => {
                let fd = open_queue(name, false, spec.napi)?;
                eprintln!(
                    "cpumapd: TAP {name}: no virtio-net header ({e}); GSO frames will be counted as gso_unsupported, partial checksums finished in software"
                );
                return Ok((fd, plain));
            }
        };
        if let Err(e) = tun_ioctl(&fd, libc::TUNSETVNETHDRSZ, VNET_HDR_LEN as libc::c_int) {
            return Err(ExceptionError::Tap(format!(
                "TAP {name}: TUNSETVNETHDRSZ {VNET_HDR_LEN}: {e}"
            )));
        }
        let tries: &[libc::c_uint] = if reverse_gso { &OFFLOAD_TRIES } else { &[] };
        let mut flags = 0;
        for &want in tries {
            if set_offloads(&fd, want).is_ok() {
                flags = want;
                break;
            }
        }
        if reverse_gso && flags != OFFLOAD_TRIES[0] {
            eprintln!(
                "cpumapd: TAP {name}: the kernel took offloads {} of {}",
                offload_names(flags),
                offload_names(OFFLOAD_TRIES[0])
            );
        }
        if flags == 0 {
            // No offloads at all: the kernel hands back finished frames.
            let _ = set_offloads(&fd, 0);
        }
        Ok((
            fd,
            TapOffloads {
                vnet: true,
                flags,
                gro: spec.gro,
            },
        ))
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

    /// What the device was set up with.
    pub fn offloads(&self) -> TapOffloads {
        self.offloads
    }

    /// A queue for one lcore: the one opened while preparing, then new ones.
    pub fn open_sink(&self) -> Result<TapSink, ExceptionError> {
        let fd = match self.first.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(fd) => fd,
            None => open_queue(&self.spec.ifname, self.offloads.vnet, self.spec.napi)?,
        };
        Ok(TapSink {
            file: File::from(fd),
            mac: self.mac,
            rewrite: self.kernel_mac == KernelMac::Rewrite,
            vnet: self.offloads.vnet,
            gro: self.offloads.gro.then(Box::<Gro>::default),
            scratch: None,
        })
    }
}

/// One TAP queue, owned by one lcore.
pub struct TapSink {
    file: File,
    mac: [u8; 6],
    rewrite: bool,
    vnet: bool,
    gro: Option<Box<Gro>>,
    /// A large buffer kept between reverse reads (reads land in it, small
    /// frames are copied out, so the large class is not used up by ACKs).
    scratch: Option<Frame>,
}

impl AsRawFd for TapSink {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Records what cpumapd knows of a plain frame's checksum: `DATA_VALID`
/// when it verifies, `NEEDS_CSUM` when the field holds the pseudo-header
/// seed a sender's offload left (a veth peer's frames over AF_XDP), nothing
/// for a corrupt one (the kernel counts it).
#[inline]
fn classify(f: &mut Frame) {
    match checksum_state(f.data()) {
        Some(CsumState::Valid) => f.set_offload(VnetHdr {
            flags: F_DATA_VALID,
            ..Default::default()
        }),
        Some(CsumState::Partial(l4)) => f.set_offload(VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: l4.offset as u16,
            csum_offset: l4.csum_field as u16,
            ..Default::default()
        }),
        _ => {}
    }
}

/// How many frames ahead deliver_burst prefetches metadata and data.
const PREFETCH_META: usize = 4;
const PREFETCH_DATA: usize = 2;

/// Counts a refused write of `n` frames by errno.
fn refused(d: &mut Delivery, n: usize, errno: Option<i32>, offloaded: bool) {
    match errno {
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => d.busy += n,
        Some(libc::EIO) | Some(libc::ENETDOWN) => d.down += n,
        Some(libc::EINVAL) if offloaded => d.offload_refused += n,
        _ => d.failed += n,
    }
}

impl TapSink {
    /// Prepares a frame for a TAP without the virtio-net header: finishes a
    /// partial checksum; false for a GSO frame, which cannot go.
    fn plain(f: &mut Frame) -> bool {
        let o = f.offload();
        if o.is_gso() {
            return false;
        }
        if o.flags & F_NEEDS_CSUM != 0 {
            crate::wire::complete_l4_checksum(f.data_mut());
        }
        true
    }

    /// One write: `members[0]` whole with its virtio-net header (when the
    /// device has them), then the other members' bytes from `hdr_len`.
    fn write(&self, frames: &mut [Frame], e: &Emit, d: &mut Delivery) {
        let first = &mut frames[e.members[0] as usize];
        let o = first.offload();
        let k = e.members.len();
        // A super-frame of GRO's own is built to fit; anything else with
        // offload metadata is checked here, so what the kernel would take
        // and drop unseen is counted instead.
        if self.vnet && k == 1 && !o.is_empty() && o.check_frame(first.data()).is_err() {
            d.offload_refused += 1;
            return;
        }
        let hdr = o.to_bytes();
        let r = if k == 1 {
            self.write_one(first, self.vnet.then_some(&hdr))
        } else {
            self.write_gathered(frames, e, &hdr)
        };
        if r >= 0 {
            d.delivered += k;
            if k > 1 {
                d.gro_segments += k;
                d.gro_frames += 1;
            }
            return;
        }
        let errno = io::Error::last_os_error().raw_os_error();
        refused(d, k, errno, !o.is_empty());
    }

    /// One frame, one write(2): the virtio-net header goes into the
    /// frame's headroom in front of its data (the frame is freed after
    /// this), so the kernel copies one contiguous buffer and imports no
    /// iovec. A raw system call: glibc's write() is a cancellation point
    /// and wraps each call in two cancellation-state changes.
    #[inline]
    fn write_one(&self, f: &mut Frame, hdr: Option<&[u8; VNET_HDR_LEN]>) -> isize {
        if let Some(h) = hdr {
            if f.adjust_head(-(VNET_HDR_LEN as isize)).is_err() {
                // No headroom (never for cpumapd's pools): gather instead.
                return self.writev_raw(&[iovec(h), iovec(f.data())]);
            }
            f.data_mut()[..VNET_HDR_LEN].copy_from_slice(h);
        }
        let data = f.data();
        // SAFETY: `data` is this frame's initialised bytes, alive for the
        // call; write(2) only reads them.
        unsafe {
            libc::syscall(
                libc::SYS_write,
                self.file.as_raw_fd(),
                data.as_ptr(),
                data.len(),
            ) as isize
        }
    }

    /// A GRO super-frame: the header, the first member whole, the others'
    /// payloads, gathered by one writev(2).
    fn write_gathered(&self, frames: &[Frame], e: &Emit, hdr: &[u8; VNET_HDR_LEN]) -> isize {
        // SAFETY: a zeroed iovec is valid plain data (null base, length 0).
        let mut iov: [libc::iovec; MAX_BURST + 1] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if self.vnet {
            iov[0] = iovec(hdr);
            n = 1;
        }
        iov[n] = iovec(frames[e.members[0] as usize].data());
        n += 1;
        for &m in &e.members[1..] {
            iov[n] = iovec(&frames[m as usize].data()[e.hdr_len..]);
            n += 1;
        }
        self.writev_raw(&iov[..n])
    }

    /// writev(2) as a raw system call (see [`write_one`](Self::write_one)).
    fn writev_raw(&self, iov: &[libc::iovec]) -> isize {
        // SAFETY: every iovec describes live, initialised bytes (the caller's
        // header and frames) for the call; writev(2) only reads them.
        unsafe {
            libc::syscall(
                libc::SYS_writev,
                self.file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
            ) as isize
        }
    }
}

/// An iovec over bytes a system call will only read.
#[inline(always)]
fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

impl ExceptionSink for TapSink {
    /// Context: the owning lcore. One write(2) per frame or per GRO
    /// super-frame, gathered from the frames' own buffers; no allocation.
    fn deliver_burst(&mut self, frames: &mut Burst) -> Delivery {
        let mut d = Delivery::default();
        // The frames were written on another lcore: start their lines on
        // the way here ahead of use (metadata 4 frames ahead, data 2).
        for f in frames.iter().take(PREFETCH_META) {
            f.prefetch_meta();
        }
        for f in frames.iter().take(PREFETCH_DATA) {
            f.prefetch_data();
        }
        let mut i = 0;
        while i < frames.len() {
            if let Some(f) = frames.get(i + PREFETCH_META) {
                f.prefetch_meta();
            }
            if let Some(f) = frames.get(i + PREFETCH_DATA) {
                f.prefetch_data();
            }
            let f = &mut frames[i];
            if self.rewrite {
                crate::wire::set_unicast_dst(f.data_mut(), self.mac);
            }
            if self.vnet {
                if f.offload().is_empty() {
                    classify(f);
                }
            } else if !Self::plain(f) {
                d.gso_unsupported += 1;
                drop(frames.remove(i));
                continue;
            }
            i += 1;
        }
        match self.gro.take() {
            Some(mut gro) => {
                gro.plan(frames);
                for e in &gro.emits {
                    self.write(frames.as_mut_slice(), e, &mut d);
                }
                self.gro = Some(gro);
            }
            None => {
                for k in 0..frames.len() {
                    let mut e = Emit::default();
                    e.members.push(k as u8);
                    self.write(frames.as_mut_slice(), &e, &mut d);
                }
            }
        }
        free_burst(frames);
        d
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }

    /// Reads what the kernel transmitted out of this queue, up to a burst,
    /// with its offload metadata. Context: the owning lcore; non-blocking.
    fn receive_burst(&mut self, pool: &mut Pool, out: &mut Burst) -> ReverseRx {
        let mut rx = ReverseRx::default();
        let fd = self.file.as_raw_fd();
        let small = pool.data_room();
        while out.len() < MAX_BURST {
            let Some(mut f) = self
                .scratch
                .take()
                .or_else(|| pool.alloc_large())
                .or_else(|| pool.alloc())
            else {
                rx.no_buffer = true;
                break;
            };
            let room = f.room();
            if f.set_len(room).is_err() {
                break;
            }
            let mut hdr = [0u8; VNET_HDR_LEN];
            let buf = f.data_mut();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: if self.vnet { VNET_HDR_LEN } else { 0 },
                },
                libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                },
            ];
            // SAFETY: both iovecs describe writable buffers alive for the call.
            let r = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
            let got = r - iov[0].iov_len as isize;
            if r <= 0 || got <= 0 {
                // EAGAIN: nothing more now. Keep a large buffer for the next
                // read; a small one goes home on drop.
                if room > small {
                    self.scratch = Some(f);
                }
                break;
            }
            let got = got as usize;
            let _ = f.set_len(got);
            let v = VnetHdr::parse(&hdr);
            let f = if room > small && got <= small {
                // A small frame in the large buffer: copy it out, keep the
                // large one for the next read.
                let Some(mut c) = pool.alloc() else {
                    self.scratch = Some(f);
                    rx.no_buffer = true;
                    break;
                };
                let _ = c.copy_from(f.data());
                self.scratch = Some(f);
                c
            } else {
                f
            };
            let mut f = f;
            if self.vnet && v.check(got).is_ok() {
                f.set_offload(v);
            }
            out.push(f);
            rx.frames += 1;
        }
        rx
    }
}
