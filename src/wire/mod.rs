//! Zero-copy header views used by filters.
//!
//! Each view is built with `new_checked`, which verifies every length an
//! accessor relies on; after that, no accessor can panic or read out of
//! bounds (smoltcp's pattern). Views borrow the frame; nothing is copied.
//! [`parse`] walks Ethernet -> up to two VLAN tags -> IPv4/IPv6 -> TCP/UDP
//! and never panics on any byte sequence (fuzzed in fuzz/).

use std::net::{Ipv4Addr, Ipv6Addr};

mod csum;
pub use csum::complete_l4_checksum;

pub const ETH_HDR_LEN: usize = 14;
pub const VLAN_HDR_LEN: usize = 4;
pub const ETH_P_802_3_MIN: u16 = 0x0600;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An Ethernet II header.
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<'a> {
    buf: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// Checks that a full 14-byte header is present.
    #[inline]
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= ETH_HDR_LEN).then_some(Self { buf })
    }
    pub fn dst(&self) -> [u8; 6] {
        [
            self.buf[0],
            self.buf[1],
            self.buf[2],
            self.buf[3],
            self.buf[4],
            self.buf[5],
        ]
    }
    pub fn src(&self) -> [u8; 6] {
        [
            self.buf[6],
            self.buf[7],
            self.buf[8],
            self.buf[9],
            self.buf[10],
            self.buf[11],
        ]
    }
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, 12)
    }
}

/// An IPv4 header: version 4, IHL >= 5, the whole header present, and a
/// total length that covers at least the header. The total length may
/// exceed the frame (captures cut at a snap length).
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    #[inline]
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        if buf.len() < 20 || buf[0] >> 4 != 4 {
            return None;
        }
        let ihl = (buf[0] & 0x0f) as usize * 4;
        let total = be16(buf, 2) as usize;
        (ihl >= 20 && buf.len() >= ihl && total >= ihl).then_some(Self { buf })
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buf[0] & 0x0f) as usize * 4
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }
    /// True for any fragment but an unfragmented packet (MF set or offset
    /// non-zero): ports are then not reliably present.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x3fff != 0
    }
    /// Source and destination as raw network-order bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        [self.buf[12], self.buf[13], self.buf[14], self.buf[15]]
    }
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        [self.buf[16], self.buf[17], self.buf[18], self.buf[19]]
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }
    /// Bytes after the header (as present in the frame).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }
}

/// A fixed IPv6 header (40 bytes, version 6). Extension headers are not
/// walked: like xdp-bench, `next_header` is the first one.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv6Packet<'a> {
    #[inline]
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= 40 && buf[0] >> 4 == 6).then_some(Self { buf })
    }
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[6]
    }
    #[inline]
    pub fn src_bytes(&self) -> &'a [u8] {
        &self.buf[8..24]
    }
    #[inline]
    pub fn dst_bytes(&self) -> &'a [u8] {
        &self.buf[24..40]
    }
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.src_bytes());
        Ipv6Addr::from(a)
    }
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[40..]
    }
}

/// Source and destination ports of a TCP (20-byte header present) or UDP
/// (8-byte header present) segment.
#[inline]
pub fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    let need = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    (l4.len() >= need).then(|| (be16(l4, 0), be16(l4, 2)))
}

/// The network layer of a parsed frame.
#[derive(Clone, Copy, Debug)]
pub enum L3<'a> {
    Ipv4(Ipv4Packet<'a>),
    Ipv6(Ipv6Packet<'a>),
    /// A valid L2 header with another (or an invalid/truncated IP) payload.
    Other(u16),
}

/// Result of the L2 walk: the inner ethertype and where L3 starts.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    pub ethertype: u16,
    pub l3_offset: usize,
    pub l3: L3<'a>,
}

impl<'a> Parsed<'a> {
    /// L4 protocol number for IPv4/IPv6, None for anything else.
    #[inline]
    pub fn ip_proto(&self) -> Option<u8> {
        match self.l3 {
            L3::Ipv4(ip) => Some(ip.protocol()),
            L3::Ipv6(ip) => Some(ip.next_header()),
            L3::Other(_) => None,
        }
    }

    /// TCP/UDP (source, destination) ports when present and not an IPv4
    /// fragment.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l3 {
            L3::Ipv4(ip) if !ip.is_fragment() => l4_ports(ip.protocol(), ip.payload()),
            L3::Ipv6(ip) => l4_ports(ip.next_header(), ip.payload()),
            _ => None,
        }
    }
}

/// Parses Ethernet, up to two 802.1Q/802.1ad tags and the IP header, the way
/// xdp-bench's `parse_eth` does. Returns None where xdp-bench's parse fails
/// (short frame, 802.3 length field instead of an ethertype, truncated tag).
#[inline]
pub fn parse(frame: &[u8]) -> Option<Parsed<'_>> {
    let eth = EthernetFrame::new_checked(frame)?;
    let mut ethertype = eth.ethertype();
    if ethertype < ETH_P_802_3_MIN {
        return None;
    }
    let mut off = ETH_HDR_LEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        if frame.len() < off + VLAN_HDR_LEN {
            return None;
        }
        ethertype = be16(frame, off + 2);
        off += VLAN_HDR_LEN;
    }
    let rest = &frame[off..];
    let l3 = match ethertype {
        ETH_P_IPV4 => Ipv4Packet::new_checked(rest).map_or(L3::Other(ethertype), L3::Ipv4),
        ETH_P_IPV6 => Ipv6Packet::new_checked(rest).map_or(L3::Other(ethertype), L3::Ipv6),
        t => L3::Other(t),
    };
    Some(Parsed {
        ethertype,
        l3_offset: off,
        l3,
    })
}

/// Frame builders for tests across the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn udp4_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0x02; 12];
        f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    pub(crate) fn ipv6_frame(src: [u8; 16], dst: [u8; 16], next: u8) -> Vec<u8> {
        let mut f = vec![0x02; 12];
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, next, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[0, 80, 0, 81, 0, 8, 0, 0]);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn udp4(vlans: &[u16], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        for v in vlans {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        f.extend_from_slice(&[
            0x45,
            0,
            0,
            28,
            0,
            0,
            0,
            0,
            64,
            IPPROTO_UDP,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    #[test]
    fn parses_udp_through_two_vlan_tags() {
        for tags in [&[][..], &[5], &[5, 6]] {
            let f = udp4(tags, 1234, 9);
            let p = parse(&f).unwrap();
            assert_eq!(p.l3_offset, 14 + 4 * tags.len());
            assert_eq!(p.ip_proto(), Some(IPPROTO_UDP));
            assert_eq!(p.ports(), Some((1234, 9)));
        }
    }

    #[test]
    fn third_vlan_tag_is_not_walked() {
        let f = udp4(&[1, 2, 3], 1, 2);
        let p = parse(&f).unwrap();
        assert_eq!(p.ethertype, ETH_P_8021Q);
        assert!(matches!(p.l3, L3::Other(ETH_P_8021Q)));
    }

    #[test]
    fn short_and_8023_frames_do_not_parse() {
        assert!(parse(&[0; 13]).is_none());
        let mut f = vec![0; 14];
        f[12..14].copy_from_slice(&0x05dcu16.to_be_bytes());
        assert!(parse(&f).is_none());
        let mut g = udp4(&[7], 1, 2);
        g.truncate(16);
        assert!(parse(&g).is_none(), "truncated VLAN tag");
    }

    #[test]
    fn broken_ip_headers_are_other() {
        let mut f = udp4(&[], 1, 2);
        f[14] = 0x44; // IHL 4
        assert!(matches!(parse(&f).unwrap().l3, L3::Other(ETH_P_IPV4)));
        f[14] = 0x4f; // IHL 15 = 60 bytes, frame too short
        assert!(matches!(parse(&f).unwrap().l3, L3::Other(ETH_P_IPV4)));
        f[14] = 0x45;
        f[16..18].copy_from_slice(&19u16.to_be_bytes()); // total length < header
        assert!(matches!(parse(&f).unwrap().l3, L3::Other(ETH_P_IPV4)));
        let mut g = udp4(&[], 1, 2);
        g[14 + 6] = 0x20; // MF set
        assert_eq!(parse(&g).unwrap().ports(), None, "fragment: no ports");
        g.truncate(14 + 20 + 4);
        g[14 + 6] = 0;
        assert_eq!(parse(&g).unwrap().ports(), None, "UDP header cut short");
    }

    #[test]
    fn every_prefix_of_a_frame_parses_without_panic() {
        let f = udp4(&[1, 2], 80, 443);
        for n in 0..=f.len() {
            let _ = parse(&f[..n]).map(|p| (p.ip_proto(), p.ports()));
        }
    }
}
