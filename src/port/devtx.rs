//! A target's transmit leg for remote redirects (the kernel's devmap bulk
//! queue, `bq_enqueue` / `bq_xmit_all`): frames a cpumap entry's program
//! redirected out of an interface (`bpf_redirect_map` into a DEVMAP,
//! `bpf_redirect`, `--remote-action redirect:IF`) are sent from the target
//! lcore, one `sendmmsg(2)` per interface per dequeued burst, on a
//! transmit-only packet socket per interface that the target owns.
//!
//! # General idea
//!
//! Each target owns one [`DevTx`], so nothing here is shared and nothing
//! locks. During a burst the target queues frames with their ifindex; at
//! the burst's end [`DevTx::flush`] sends them grouped by interface and
//! frees them all. A socket is opened on the first frame to an interface
//! (cold: one socket and one bind per interface per run, `PACKET_QDISC_BYPASS`
//! as DPDK's net_af_packet sets it); a failure is remembered, said once on
//! stderr, and every frame to that interface is then a counted
//! `redirect_failed`, as is a frame the kernel refuses to send (too long
//! for the MTU, interface down). The kernel transmits from its own
//! devmap without an skb (`ndo_xdp_xmit`); a packet socket builds one per
//! frame.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use arrayvec::ArrayVec;

use crate::frame::{Burst, Frame, MAX_BURST, free_burst};

/// Interfaces one target sends on at most (more are counted as failures,
/// said once).
pub const MAX_DEVS: usize = 8;

struct Dev {
    ifindex: u32,
    /// None: opening failed (said once).
    fd: Option<OwnedFd>,
}

/// One target's transmit leg. Context: the owning target lcore.
pub struct DevTx {
    devs: ArrayVec<Dev, MAX_DEVS>,
    /// Said once: more interfaces than MAX_DEVS.
    full_said: bool,
    queued: Burst,
    to: [u32; MAX_BURST],
    /// What a flush forced by a full queue did, reported by the next
    /// [`flush`](DevTx::flush).
    carried: DevTxResult,
    /// For the log lines.
    lcore: u32,
}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevTxResult {
    /// Frames the kernel took.
    pub sent: u64,
    /// Frames that could not be sent (counted as `redirect_failed`).
    pub failed: u64,
}

/// Opens a transmit-only packet socket bound to `ifindex`.
fn open_tx(ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use. Protocol 0:
    // the socket receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: PACKET_QDISC_BYPASS reads one int; best effort (old kernels).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    Ok(fd)
}

/// The interface's name for a log line ("ifindex N" if it has none).
fn if_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    format!("{} (ifindex {ifindex})", name.to_string_lossy())
}

impl DevTx {
    /// An empty transmit leg for target lcore `lcore`.
    pub fn new(lcore: u32) -> Self {
        Self {
            devs: ArrayVec::new(),
            full_said: false,
            queued: Burst::new(),
            to: [0; MAX_BURST],
            carried: DevTxResult::default(),
            lcore,
        }
    }

    /// True when nothing is queued.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Queues `f` to go out of `ifindex` at the next flush. A burst holds
    /// at most MAX_BURST frames, so the queue never overflows when flushed
    /// once per burst; if it is full anyway it is sent first, and the next
    /// flush reports that too. Context: the owning target lcore.
    #[inline]
    pub fn push(&mut self, f: Frame, ifindex: u32) {
        if self.queued.is_full() {
            let r = self.send();
            self.carried.sent += r.sent;
            self.carried.failed += r.failed;
        }
        self.to[self.queued.len()] = ifindex;
        self.queued.push(f);
    }

    /// The socket for `ifindex`, opening it on first use (cold).
    fn dev(&mut self, ifindex: u32) -> Option<libc::c_int> {
        if let Some(d) = self.devs.iter().find(|d| d.ifindex == ifindex) {
            return d.fd.as_ref().map(|f| f.as_raw_fd());
        }
        self.open(ifindex)
    }

    #[cold]
    #[inline(never)]
    fn open(&mut self, ifindex: u32) -> Option<libc::c_int> {
        if self.devs.is_full() {
            if !self.full_said {
                self.full_said = true;
                eprintln!(
                    "cpumapd: target lcore{}: redirects to more than {MAX_DEVS} interfaces; frames to {} and further ones are counted as redirect_failed",
                    self.lcore,
                    if_name(ifindex)
                );
            }
            return None;
        }
        let fd = match open_tx(ifindex) {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!(
                    "cpumapd: target lcore{}: cannot send on {}: {e}; frames redirected there are counted as redirect_failed",
                    self.lcore,
                    if_name(ifindex)
                );
                None
            }
        };
        let raw = fd.as_ref().map(|f| f.as_raw_fd());
        self.devs.push(Dev { ifindex, fd });
        raw
    }

    /// Sends every queued frame, one `sendmmsg(2)` per interface, and frees
    /// them; the result includes what [`push`](Self::push) had to send
    /// early. Context: the owning target lcore, at the end of a burst.
    pub fn flush(&mut self) -> DevTxResult {
        let mut r = self.send();
        let early = std::mem::take(&mut self.carried);
        r.sent += early.sent;
        r.failed += early.failed;
        r
    }

    /// Sends and frees the queue.
    fn send(&mut self) -> DevTxResult {
        let mut r = DevTxResult::default();
        let n = self.queued.len();
        let mut done = [false; MAX_BURST];
        // Each interface's group fills these from the start; a message's
        // other fields stay zero (no address, no control data).
        // SAFETY: a zeroed iovec array is valid plain data.
        let mut iov: [libc::iovec; MAX_BURST] = unsafe { std::mem::zeroed() };
        // SAFETY: a zeroed mmsghdr array is valid plain data.
        let mut msgs: [libc::mmsghdr; MAX_BURST] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            if done[i] {
                continue;
            }
            let ifindex = self.to[i];
            let mut k = 0;
            for (j, d) in done.iter_mut().enumerate().take(n).skip(i) {
                if !*d && self.to[j] == ifindex {
                    *d = true;
                    let d = self.queued[j].data();
                    iov[k] = libc::iovec {
                        iov_base: d.as_ptr() as *mut libc::c_void,
                        iov_len: d.len(),
                    };
                    k += 1;
                }
            }
            for (m, v) in msgs.iter_mut().zip(iov.iter_mut()).take(k) {
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            let Some(fd) = self.dev(ifindex) else {
                r.failed += k as u64;
                continue;
            };
            let mut at = 0;
            while at < k {
                // SAFETY: msgs[at..k] point at iovecs over the queued
                // frames' bytes, alive until free_burst below.
                let sent = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs[at..].as_mut_ptr(),
                        (k - at) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if sent <= 0 {
                    // The first unsent frame failed (EMSGSIZE, ENETDOWN,
                    // ENOBUFS...): count it and go on with the rest.
                    r.failed += 1;
                    at += 1;
                } else {
                    r.sent += sent as u64;
                    at += sent as usize;
                }
            }
        }
        free_burst(&mut self.queued);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Pool;

    #[test]
    fn frames_to_an_interface_that_does_not_exist_are_counted_failed_and_freed() {
        let mut pool = Pool::new("devtx", 8, 128, 256).unwrap();
        let mut tx = DevTx::new(1);
        for _ in 0..3 {
            let mut f = pool.alloc().unwrap();
            f.copy_from(&[0u8; 60]).unwrap();
            // No interface has this ifindex (or the socket is refused
            // without privileges): either way a counted failure.
            tx.push(f, 0x7fff_fff0);
        }
        assert_eq!(pool.in_use(), 3);
        let r = tx.flush();
        assert_eq!(r, DevTxResult { sent: 0, failed: 3 });
        assert!(tx.is_empty());
        assert_eq!(pool.in_use(), 0, "every frame freed");
        // The failure is remembered: no second open.
        let mut f = pool.alloc().unwrap();
        f.copy_from(&[0u8; 60]).unwrap();
        tx.push(f, 0x7fff_fff0);
        assert_eq!(tx.flush().failed, 1);
        assert_eq!(tx.devs.len(), 1);
        // More than a burst between flushes: the early send is reported by
        // the next flush, once.
        let mut big = Pool::new("devtx2", 64, 128, 256).unwrap();
        for _ in 0..MAX_BURST + 3 {
            let mut f = big.alloc().unwrap();
            f.copy_from(&[0u8; 60]).unwrap();
            tx.push(f, 0x7fff_fff0);
        }
        assert_eq!(tx.flush().failed, MAX_BURST as u64 + 3);
        assert_eq!(tx.flush(), DevTxResult::default());
        assert_eq!(big.in_use(), 0);
    }
}
