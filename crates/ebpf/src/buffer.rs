//! What a program runs on and what it decides: the engine's interface to
//! a dataplane. The dataplane implements [`XdpBuffer`] for its packet type
//! and maps [`Action`] to its own verdicts; [`VecBuffer`] is a plain
//! implementation for tools and tests.

/// A packet an XDP program runs on: one contiguous buffer with headroom
/// in front of the data (where `bpf_xdp_adjust_head` and
/// `bpf_xdp_adjust_meta` grow into) and tailroom after it
/// (`bpf_xdp_adjust_tail`), plus the receive metadata `struct xdp_md`
/// shows. Context: the thread running the [`Instance`](crate::Instance).
pub trait XdpBuffer {
    /// The whole buffer (headroom, data, tailroom), the data's offset in
    /// it and the data's length.
    fn xdp_buffer_whole(&mut self) -> (&mut [u8], usize, usize);
    /// Moves the start of the data by `delta` bytes (negative: into the
    /// headroom). False, and nothing changed, when it would leave the
    /// buffer or the data.
    fn xdp_adjust_head(&mut self, delta: isize) -> bool;
    /// Sets the data's length. False, and nothing changed, past the
    /// buffer's end.
    fn xdp_set_len(&mut self, len: usize) -> bool;
    /// Bytes of metadata just in front of the data (`data_meta`).
    fn xdp_meta_len(&self) -> usize;
    /// Sets [`xdp_meta_len`](Self::xdp_meta_len); the buffer may cap it
    /// (at the headroom, or to 0 where it carries none).
    fn xdp_set_meta_len(&mut self, n: usize);
    /// `xdp_md.ingress_ifindex`: the Linux interface the packet came in
    /// on, 0 when none.
    fn ingress_ifindex(&self) -> u32;
    /// `xdp_md.rx_queue_index`.
    fn rx_queue_index(&self) -> u32;
    /// The NIC's RSS hash (`bpf_xdp_metadata_rx_hash`), 0 when none.
    fn rx_hash(&self) -> u32;
}

/// What a program decided (XDP's actions, with where a redirect goes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `XDP_ABORTED`, a fault, an unknown return value, or `XDP_REDIRECT`
    /// without a redirect helper before it.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT` into the cpumap entry with this key.
    Redirect(u32),
    /// `XDP_REDIRECT` out of the interface with this ifindex (a DEVMAP
    /// entry or `bpf_redirect`), after its egress program passed it.
    RedirectDev(u32),
    /// `XDP_REDIRECT` to a DEVMAP entry whose egress program did not
    /// return `XDP_PASS`.
    EgressDrop,
}

/// An [`XdpBuffer`] in a `Vec`: for tools, tests and doctests.
#[derive(Clone, Debug)]
pub struct VecBuffer {
    buf: Vec<u8>,
    off: usize,
    len: usize,
    meta: usize,
    /// `xdp_md.ingress_ifindex`.
    pub ingress_ifindex: u32,
    /// `xdp_md.rx_queue_index`.
    pub rx_queue_index: u32,
    /// The RSS hash.
    pub rx_hash: u32,
}

impl VecBuffer {
    /// `data` after `headroom` bytes of headroom, with no tailroom.
    pub fn new(headroom: usize, data: &[u8]) -> VecBuffer {
        VecBuffer::with_tailroom(headroom, data, 0)
    }

    /// `data` between `headroom` and `tailroom` bytes of room.
    pub fn with_tailroom(headroom: usize, data: &[u8], tailroom: usize) -> VecBuffer {
        let mut buf = vec![0; headroom + data.len() + tailroom];
        buf[headroom..headroom + data.len()].copy_from_slice(data);
        VecBuffer {
            buf,
            off: headroom,
            len: data.len(),
            meta: 0,
            ingress_ifindex: 0,
            rx_queue_index: 0,
            rx_hash: 0,
        }
    }

    /// The packet's data.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl XdpBuffer for VecBuffer {
    fn xdp_buffer_whole(&mut self) -> (&mut [u8], usize, usize) {
        (&mut self.buf, self.off, self.len)
    }
    fn xdp_adjust_head(&mut self, delta: isize) -> bool {
        let off = self.off as isize + delta;
        let len = self.len as isize - delta;
        if off < 0 || len < 0 {
            return false;
        }
        (self.off, self.len) = (off as usize, len as usize);
        self.meta = self.meta.min(self.off);
        true
    }
    fn xdp_set_len(&mut self, len: usize) -> bool {
        let fits = self.off + len <= self.buf.len();
        if fits {
            self.len = len;
        }
        fits
    }
    fn xdp_meta_len(&self) -> usize {
        self.meta
    }
    fn xdp_set_meta_len(&mut self, n: usize) {
        self.meta = n.min(self.off);
    }
    fn ingress_ifindex(&self) -> u32 {
        self.ingress_ifindex
    }
    fn rx_queue_index(&self) -> u32 {
        self.rx_queue_index
    }
    fn rx_hash(&self) -> u32 {
        self.rx_hash
    }
}

#[cfg(test)]
mod tests {
    use super::{VecBuffer, XdpBuffer};

    #[test]
    fn a_vec_buffer_moves_its_head_and_tail_only_within_itself() {
        let mut b = VecBuffer::with_tailroom(4, &[1, 2, 3], 2);
        assert!(b.xdp_adjust_head(-4));
        assert_eq!(b.data(), &[0, 0, 0, 0, 1, 2, 3]);
        assert!(!b.xdp_adjust_head(-1), "past the headroom");
        assert!(!b.xdp_adjust_head(8), "past the data");
        assert!(b.xdp_adjust_head(4));
        assert!(b.xdp_set_len(5));
        assert!(!b.xdp_set_len(6), "past the tailroom");
        assert_eq!(b.data().len(), 5);
        b.xdp_set_meta_len(9);
        assert_eq!(b.xdp_meta_len(), 4, "capped at the headroom");
    }
}
