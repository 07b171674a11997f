//! The virtio-net header (`struct virtio_net_hdr`,
//! include/uapi/linux/virtio_net.h): the offload metadata that travels in
//! front of a frame through a TAP with `IFF_VNET_HDR`, an AF_PACKET socket
//! with `PACKET_VNET_HDR` and virtio/vhost rings.
//!
//! # General idea
//!
//! Ten bytes: flags (`NEEDS_CSUM`: the L4 checksum is left to finish, from
//! `csum_start` with the result at `csum_start + csum_offset`;
//! `DATA_VALID`: the checksum is known good), the GSO type and segment size
//! of a super-frame the receiver segments (or keeps whole), and the length
//! of its headers. Fields are little-endian (legacy virtio on a
//! little-endian host, which is what TAP and AF_PACKET use without
//! `TUNSETVNETBE`). Offsets count from the start of the Ethernet header.
//!
//! [`VnetHdr::check`] is the one validation of a header against its frame
//! (what the kernel's `virtio_net_hdr_to_skb` would refuse), so a malformed
//! header from a port is counted there and never reaches a device.

/// Bytes of `struct virtio_net_hdr`.
pub const HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: finish the checksum from `csum_start`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO, IP fragmentation; refused by new kernels).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO: UDP segmentation, one datagram per
/// segment).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP super-frame carries CWR.
pub const GSO_ECN: u8 = 0x80;

/// One virtio-net header, host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, with `GSO_ECN` or'ed in.
    pub gso_type: u8,
    /// Bytes of headers (Ethernet to the end of L4) of a super-frame.
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-frame.
    pub gso_size: u16,
    /// Where the checksum starts (`F_NEEDS_CSUM`).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a virtio-net header does not fit its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// Unknown flag bits.
    #[error("unknown virtio-net header flags {0:#x}")]
    Flags(u8),
    /// A GSO type the kernel does not take (UFO, or unknown).
    #[error("GSO type {0:#x} is not accepted (TCPv4, TCPv6 and UDP_L4 are)")]
    GsoType(u8),
    /// A super-frame without a segment size or checksum offload.
    #[error("GSO frame without a segment size or NEEDS_CSUM")]
    GsoIncomplete,
    /// The checksum position is outside the frame.
    #[error("checksum at {start}+{offset} is outside the {len}-byte frame")]
    CsumOutside {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// The frame's length.
        len: usize,
    },
    /// A GSO type that does not match the frame's L4 protocol, or a
    /// checksum start that is not its L4 header.
    #[error("GSO type {gso_type:#x} does not fit the frame (L4 at {l4:?}, protocol {proto:?})")]
    GsoMismatch {
        /// `gso_type`.
        gso_type: u8,
        /// Where the frame's L4 header is.
        l4: Option<usize>,
        /// Its protocol.
        proto: Option<u8>,
    },
    /// The header length is beyond the frame.
    #[error("header length {hdr_len} exceeds the {len}-byte frame")]
    HdrLen {
        /// `hdr_len`.
        hdr_len: u16,
        /// The frame's length.
        len: usize,
    },
}

impl VnetHdr {
    /// Reads a header from its ten bytes.
    #[inline]
    pub fn parse(b: &[u8; HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Its ten bytes.
    #[inline]
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// The GSO type without the ECN bit.
    #[inline]
    pub fn gso(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// True for a super-frame the receiver segments.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso() != GSO_NONE
    }

    /// True when the header says nothing (a plain frame).
    #[inline]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the header against a frame of `len` bytes, as the kernel's
    /// `virtio_net_hdr_to_skb` would before taking it.
    pub fn check(&self, len: usize) -> Result<(), VnetError> {
        if self.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(VnetError::Flags(self.flags));
        }
        if self.flags & F_NEEDS_CSUM != 0 {
            let end = self.csum_start as usize + self.csum_offset as usize + 2;
            if end > len {
                return Err(VnetError::CsumOutside {
                    start: self.csum_start,
                    offset: self.csum_offset,
                    len,
                });
            }
        }
        match self.gso() {
            GSO_NONE => return Ok(()),
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {}
            _ => return Err(VnetError::GsoType(self.gso_type)),
        }
        if self.gso_size == 0 || self.flags & F_NEEDS_CSUM == 0 {
            return Err(VnetError::GsoIncomplete);
        }
        if self.hdr_len as usize > len {
            return Err(VnetError::HdrLen {
                hdr_len: self.hdr_len,
                len,
            });
        }
        Ok(())
    }
}

impl VnetHdr {
    /// [`check`](Self::check), and for a super-frame also that its GSO
    /// type fits the frame (TCP over IPv4 / IPv6, UDP) and the checksum
    /// starts at its L4 header: what the kernel would otherwise take and
    /// drop later, uncounted.
    pub fn check_frame(&self, frame: &[u8]) -> Result<(), VnetError> {
        self.check(frame.len())?;
        if !self.is_gso() {
            return Ok(());
        }
        let p = super::parse(frame);
        let l4 = p.and_then(|p| match p.l3 {
            super::L3::Ipv4(ip) => Some((p.l3_offset + ip.header_len(), ip.protocol(), false)),
            super::L3::Ipv6(ip) => Some((p.l3_offset + 40, ip.next_header(), true)),
            super::L3::Other(_) => None,
        });
        let fits = matches!(
            (self.gso(), l4),
            (GSO_TCPV4, Some((_, super::IPPROTO_TCP, false)))
                | (GSO_TCPV6, Some((_, super::IPPROTO_TCP, true)))
                | (GSO_UDP_L4, Some((_, super::IPPROTO_UDP, _)))
        );
        if fits && l4.is_some_and(|(off, _, _)| off == self.csum_start as usize) {
            return Ok(());
        }
        Err(VnetError::GsoMismatch {
            gso_type: self.gso_type,
            l4: l4.map(|l| l.0),
            proto: l4.map(|l| l.1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_little_endian() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), h);
        assert_eq!(h.gso(), GSO_TCPV4);
        assert!(h.is_gso() && !h.is_empty());
        assert!(VnetHdr::default().is_empty());
    }

    #[test]
    fn a_gso_type_must_fit_the_frame() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 1000)
            .write(&mut f, &[0; 1000])
            .unwrap();
        let tso = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 500,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(tso.check_frame(&f), Ok(()));
        for bad in [
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..tso
            },
            VnetHdr {
                gso_type: GSO_UDP_L4,
                csum_offset: 6,
                ..tso
            },
            VnetHdr {
                csum_start: 30,
                ..tso
            },
        ] {
            assert!(
                matches!(bad.check_frame(&f), Err(VnetError::GsoMismatch { .. })),
                "{bad:?}"
            );
        }
        assert!(tso.check_frame(&f[..20]).is_err());
    }

    #[test]
    fn checks_what_the_kernel_refuses() {
        let ok = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 86,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(ok.check(3000), Ok(()));
        assert_eq!(
            ok.check(60),
            Err(VnetError::CsumOutside {
                start: 54,
                offset: 16,
                len: 60
            })
        );
        let ufo = VnetHdr {
            gso_type: GSO_UDP,
            ..ok
        };
        assert_eq!(ufo.check(3000), Err(VnetError::GsoType(GSO_UDP)));
        let no_size = VnetHdr { gso_size: 0, ..ok };
        assert_eq!(no_size.check(3000), Err(VnetError::GsoIncomplete));
        let no_csum = VnetHdr { flags: 0, ..ok };
        assert_eq!(no_csum.check(3000), Err(VnetError::GsoIncomplete));
        let bad_flags = VnetHdr { flags: 0x10, ..ok };
        assert_eq!(bad_flags.check(3000), Err(VnetError::Flags(0x10)));
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..Default::default()
        };
        assert_eq!(valid.check(60), Ok(()));
        // Never panics on any header.
        for b in 0..=255u8 {
            let h = VnetHdr::parse(&[b, b, b, b, b, b, b, b, b, b]);
            let _ = h.check(b as usize);
        }
    }
}
