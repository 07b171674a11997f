//! Zero-copy header views used by filters.
//!
//! Each view is built with `new_checked`, which verifies every length an
//! accessor relies on; after that, no accessor can panic or read out of
//! bounds (smoltcp's pattern). Views borrow the frame; nothing is copied.
//! [`parse`] walks Ethernet -> up to two VLAN tags -> IPv4/IPv6 -> TCP/UDP
//! and never panics on any byte sequence (fuzzed in fuzz/).

use std::net::{Ipv4Addr, Ipv6Addr};

mod csum;
pub mod vnet;
pub use csum::{
    CsumState, L4Span, checksum_state, complete_l4_checksum, ipv4_header_checksum, l4_span,
    partial_checksum, pseudo_seed,
};

/// Ethernet header length.
pub const ETH_HDR_LEN: usize = 14;
/// 802.1Q / 802.1ad tag length.
pub const VLAN_HDR_LEN: usize = 4;
/// EtherTypes start here (below: an 802.3 length).
pub const ETH_P_802_3_MIN: u16 = 0x0600;
/// IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Byte ranges of the headers' fields (smoltcp's `field` modules): every
/// accessor and setter below reads or writes through these names.
pub mod field {
    use std::ops::Range;

    /// A field's bytes.
    pub type Field = Range<usize>;

    /// Ethernet II.
    pub mod eth {
        use super::Field;
        /// Destination address.
        pub const DST: Field = 0..6;
        /// Source address.
        pub const SRC: Field = 6..12;
        /// EtherType (or an 802.3 length).
        pub const ETHERTYPE: Field = 12..14;
    }

    /// An 802.1Q / 802.1ad tag, after the addresses.
    pub mod vlan {
        use super::Field;
        /// Tag control information (PCP, DEI, VID), relative to the tag.
        pub const TCI: Field = 0..2;
        /// The inner EtherType, relative to the tag.
        pub const ETHERTYPE: Field = 2..4;
    }

    /// IPv4 (RFC 791).
    pub mod ipv4 {
        use super::Field;
        /// Version (high nibble) and header length in words (low nibble).
        pub const VER_IHL: usize = 0;
        /// Total length.
        pub const LENGTH: Field = 2..4;
        /// Flags and fragment offset.
        pub const FLG_OFF: Field = 6..8;
        /// Time to live.
        pub const TTL: usize = 8;
        /// Protocol of the payload.
        pub const PROTOCOL: usize = 9;
        /// Header checksum.
        pub const CHECKSUM: Field = 10..12;
        /// Source address.
        pub const SRC: Field = 12..16;
        /// Destination address.
        pub const DST: Field = 16..20;
        /// Header length without options.
        pub const MIN_HEADER_LEN: usize = 20;
    }

    /// IPv6 fixed header (RFC 8200).
    pub mod ipv6 {
        use super::Field;
        /// Payload length.
        pub const LENGTH: Field = 4..6;
        /// Next header.
        pub const NXT_HDR: usize = 6;
        /// Hop limit.
        pub const HOP_LIMIT: usize = 7;
        /// Source address.
        pub const SRC: Field = 8..24;
        /// Destination address.
        pub const DST: Field = 24..40;
        /// Header length.
        pub const HEADER_LEN: usize = 40;
    }

    /// UDP (RFC 768) and the port fields TCP shares.
    pub mod udp {
        use super::Field;
        /// Source port (TCP's too).
        pub const SRC_PORT: Field = 0..2;
        /// Destination port (TCP's too).
        pub const DST_PORT: Field = 2..4;
        /// Checksum.
        pub const CHECKSUM: Field = 6..8;
        /// Header length.
        pub const HEADER_LEN: usize = 8;
    }

    /// TCP (RFC 9293).
    pub mod tcp {
        use super::Field;
        /// Checksum.
        pub const CHECKSUM: Field = 16..18;
        /// Header length without options.
        pub const MIN_HEADER_LEN: usize = 20;
    }
}

fn addr6(b: &[u8]) -> [u8; 6] {
    let mut a = [0u8; 6];
    a.copy_from_slice(b);
    a
}

/// An Ethernet II header over any buffer; setters where the buffer is
/// writable.
#[derive(Clone, Copy, Debug)]
pub struct EthernetFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks that a full 14-byte header is present.
    #[inline]
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= ETH_HDR_LEN).then_some(Self { buf })
    }
    /// The destination address.
    pub fn dst(&self) -> [u8; 6] {
        addr6(&self.buf.as_ref()[field::eth::DST])
    }
    /// The source address.
    pub fn src(&self) -> [u8; 6] {
        addr6(&self.buf.as_ref()[field::eth::SRC])
    }
    /// The EtherType (below 0x0600: an 802.3 length).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), field::eth::ETHERTYPE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::eth::DST].copy_from_slice(&mac);
    }
    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buf.as_mut()[field::eth::SRC].copy_from_slice(&mac);
    }
    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buf.as_mut()[field::eth::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }
}

/// Points a unicast frame at `mac`: its destination address becomes `mac`.
/// Multicast and broadcast frames, and frames too short to hold a
/// destination address, are left as they are. This is `--kernel-mac
/// rewrite` on every exception path, so the stack takes the frame as its
/// own. Context: any; never panics.
#[inline(always)]
pub fn set_unicast_dst(frame: &mut [u8], mac: [u8; 6]) {
    if let Some(dst) = frame.get_mut(field::eth::DST)
        && dst[0] & 1 == 0
    {
        dst.copy_from_slice(&mac);
    }
}

/// An IPv4 header: version 4, IHL >= 5, the whole header present, and a
/// total length that covers at least the header. The total length may
/// exceed the frame (captures cut at a snap length).
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, header length and total length against `buf`.
    #[inline]
    pub fn new_checked(buf: T) -> Option<Self> {
        use field::ipv4::*;
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || b[VER_IHL] >> 4 != 4 {
            return None;
        }
        let ihl = (b[VER_IHL] & 0x0f) as usize * 4;
        let total = be16(b, LENGTH.start) as usize;
        (ihl >= MIN_HEADER_LEN && b.len() >= ihl && total >= ihl).then_some(Self { buf })
    }
    /// Header length in bytes (options included).
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buf.as_ref()[field::ipv4::VER_IHL] & 0x0f) as usize * 4
    }
    /// Total length (header and payload) as the header says.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::ipv4::LENGTH.start)
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::ipv4::TTL]
    }
    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::ipv4::PROTOCOL]
    }
    /// True for any fragment but an unfragmented packet (MF set or offset
    /// non-zero): ports are then not reliably present.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buf.as_ref(), field::ipv4::FLG_OFF.start) & 0x3fff != 0
    }
    /// Source as raw network-order bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::ipv4::SRC]);
        a
    }
    /// Destination as raw network-order bytes.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::ipv4::DST]);
        a
    }
    /// The source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }
    /// The destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// Bytes after the header (as present in the frame).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf.as_mut()[field::ipv4::TTL] = ttl;
    }
    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buf.as_mut()[field::ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::ipv4::SRC].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::ipv4::DST].copy_from_slice(&a.octets());
    }
}

/// A fixed IPv6 header (40 bytes, version 6). Extension headers are not
/// walked: like xdp-bench, `next_header` is the first one.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks that a 40-byte header of version 6 is present.
    #[inline]
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        (b.len() >= field::ipv6::HEADER_LEN && b[0] >> 4 == 6).then_some(Self { buf })
    }
    /// The first next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::ipv6::NXT_HDR]
    }
    /// Payload length as the header says.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::ipv6::LENGTH.start)
    }
    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::ipv6::HOP_LIMIT]
    }
    /// The source address.
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::ipv6::SRC]);
        Ipv6Addr::from(a)
    }
}

impl<'a> Ipv6Packet<&'a [u8]> {
    /// Source as raw network-order bytes.
    #[inline]
    pub fn src_bytes(&self) -> &'a [u8] {
        &self.buf[field::ipv6::SRC]
    }
    /// Destination as raw network-order bytes.
    #[inline]
    pub fn dst_bytes(&self) -> &'a [u8] {
        &self.buf[field::ipv6::DST]
    }
    /// Bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[field::ipv6::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buf.as_mut()[field::ipv6::HOP_LIMIT] = h;
    }
    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[field::ipv6::SRC].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[field::ipv6::DST].copy_from_slice(&a.octets());
    }
}

/// Source and destination ports of a TCP (20-byte header present) or UDP
/// (8-byte header present) segment.
#[inline]
pub fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    let need = match proto {
        IPPROTO_TCP => field::tcp::MIN_HEADER_LEN,
        IPPROTO_UDP => field::udp::HEADER_LEN,
        _ => return None,
    };
    (l4.len() >= need).then(|| {
        (
            be16(l4, field::udp::SRC_PORT.start),
            be16(l4, field::udp::DST_PORT.start),
        )
    })
}

/// The network layer of a parsed frame.
#[derive(Clone, Copy, Debug)]
pub enum L3<'a> {
    /// An IPv4 header that passed its checks.
    Ipv4(Ipv4Packet<&'a [u8]>),
    /// An IPv6 fixed header that passed its checks.
    Ipv6(Ipv6Packet<&'a [u8]>),
    /// A valid L2 header with another (or an invalid/truncated IP) payload.
    Other(u16),
}

/// Result of the L2 walk: the inner ethertype and where L3 starts.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// The innermost EtherType.
    pub ethertype: u16,
    /// Where the network header starts.
    pub l3_offset: usize,
    /// The network header.
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
        ethertype = be16(frame, off + field::vlan::ETHERTYPE.start);
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

/// True when an IPv4/IPv6 frame is shorter than its IP header says: a
/// driver cut it (DPDK's net_af_packet keeps the first ring-frame's worth
/// of a kernel GSO super-frame, as it has no virtio-net header to take it
/// whole). Context: any; allocates nothing, never panics.
pub fn cut_short(frame: &[u8]) -> bool {
    let Some(p) = parse(frame) else {
        return false;
    };
    let at = p.l3_offset;
    let ip_len = match p.ethertype {
        ETH_P_IPV4 if frame.len() >= at + 4 => be16(frame, at + 2) as usize,
        ETH_P_IPV6 if frame.len() >= at + 6 => {
            be16(frame, at + 4) as usize + field::ipv6::HEADER_LEN
        }
        _ => return false,
    };
    at + ip_len > frame.len()
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
    fn setters_write_through_the_named_fields() {
        let mut f = udp4(&[], 7, 9);
        let mut eth = EthernetFrame::new_checked(&mut f[..]).unwrap();
        eth.set_dst([2, 0, 0, 0, 0, 1]);
        eth.set_src([2, 0, 0, 0, 0, 2]);
        assert_eq!(eth.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.src(), [2, 0, 0, 0, 0, 2]);
        eth.set_ethertype(ETH_P_IPV4);
        let mut ip = Ipv4Packet::new_checked(&mut f[ETH_HDR_LEN..]).unwrap();
        ip.set_ttl(3);
        ip.set_src(Ipv4Addr::new(192, 0, 2, 1));
        ip.set_dst(Ipv4Addr::new(192, 0, 2, 2));
        ip.set_checksum(0xbeef);
        assert_eq!(ip.ttl(), 3);
        assert_eq!(&f[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12], &[0xbe, 0xef]);
        let p = parse(&f).unwrap();
        let L3::Ipv4(ip) = p.l3 else { panic!("ipv4") };
        assert_eq!(
            (ip.src(), ip.dst()),
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
        );
        assert_eq!(ip.total_len(), 28);
        assert_eq!(p.ports(), Some((7, 9)));

        let mut g = tests_support::ipv6_frame([1; 16], [2; 16], IPPROTO_UDP);
        let mut ip6 = Ipv6Packet::new_checked(&mut g[ETH_HDR_LEN..]).unwrap();
        ip6.set_hop_limit(9);
        ip6.set_src(Ipv6Addr::LOCALHOST);
        ip6.set_dst(Ipv6Addr::UNSPECIFIED);
        assert_eq!(ip6.hop_limit(), 9);
        let p = parse(&g).unwrap();
        let L3::Ipv6(ip6) = p.l3 else { panic!("ipv6") };
        assert_eq!(ip6.src(), Ipv6Addr::LOCALHOST);
        assert_eq!(ip6.dst_bytes(), &[0; 16]);
        assert_eq!(ip6.payload_len(), 8);
    }

    #[test]
    fn unicast_dst_rewrite_leaves_group_and_short_frames() {
        let mac = [2, 0, 0, 0, 0, 0x42];
        let mut uni = udp4(&[], 1, 2);
        uni[0] = 0x02;
        set_unicast_dst(&mut uni, mac);
        assert_eq!(uni[..6], mac);
        let mut bcast = udp4(&[], 1, 2); // ff:ff:..: broadcast
        set_unicast_dst(&mut bcast, mac);
        assert_eq!(bcast[..6], [0xff; 6]);
        let mut short = [0u8; 5];
        set_unicast_dst(&mut short, mac);
        assert_eq!(short, [0; 5]);
    }

    #[test]
    fn every_prefix_of_a_frame_parses_without_panic() {
        let f = udp4(&[1, 2], 80, 443);
        for n in 0..=f.len() {
            let _ = parse(&f[..n]).map(|p| (p.ip_proto(), p.ports()));
            // Every proper prefix past the IP length field (two tags: the
            // IP header starts at 22) is cut short.
            assert_eq!(cut_short(&f[..n]), n >= 26 && n < f.len(), "{n}");
        }
        let v6 = tests_support::ipv6_frame([1; 16], [2; 16], IPPROTO_UDP);
        assert!(!cut_short(&v6));
        assert!(cut_short(&v6[..v6.len() - 1]));
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!cut_short(&arp));
    }
}
