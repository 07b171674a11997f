//! Completing the TCP/UDP checksum of a frame whose sender left it to
//! checksum offload (a veth peer on the same host: AF_PACKET marks such
//! frames TP_STATUS_CSUMNOTREADY). The stack behind the TAP would otherwise
//! drop them as InCsumErrors.

use super::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, L3, field, parse};

/// One's-complement sum of 16-bit big-endian words (odd byte padded).
fn sum(bytes: &[u8], mut acc: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        acc += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Computes and stores the TCP or UDP checksum of an unfragmented
/// IPv4/IPv6 frame (up to two VLAN tags). Returns false, leaving the frame
/// unchanged, for anything else or a truncated segment.
/// Context: any; allocates nothing, never panics.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Some(p) = parse(frame) else {
        return false;
    };
    let (l4_off, l4_len, proto, pseudo) = match (p.ethertype, p.l3) {
        (ETH_P_IPV4, L3::Ipv4(ip)) if !ip.is_fragment() => {
            let hl = ip.header_len();
            let total = ip.total_len() as usize;
            let Some(len) = total.checked_sub(hl) else {
                return false;
            };
            let pseudo = sum(&ip.src_bytes(), 0)
                + sum(&ip.dst_bytes(), 0)
                + ip.protocol() as u32
                + len as u32;
            (p.l3_offset + hl, len, ip.protocol(), pseudo)
        }
        (ETH_P_IPV6, L3::Ipv6(ip)) => {
            let len = ip.payload_len() as usize;
            let pseudo = sum(ip.src_bytes(), 0)
                + sum(ip.dst_bytes(), 0)
                + ip.next_header() as u32
                + (len as u32 >> 16)
                + (len as u32 & 0xffff);
            (
                p.l3_offset + field::ipv6::HEADER_LEN,
                len,
                ip.next_header(),
                pseudo,
            )
        }
        _ => return false,
    };
    let at = match proto {
        IPPROTO_TCP if l4_len >= field::tcp::MIN_HEADER_LEN => field::tcp::CHECKSUM,
        IPPROTO_UDP if l4_len >= field::udp::HEADER_LEN => field::udp::CHECKSUM,
        _ => return false,
    };
    let Some(seg) = frame.get_mut(l4_off..l4_off + l4_len) else {
        return false;
    };
    seg[at.clone()].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum(seg, pseudo));
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff; // 0 means "no checksum" for UDP
    }
    seg[at].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// Frames with correct checksums from etherparse; zeroing and completing
    /// must give the same bytes back.
    fn check(frame: Vec<u8>, csum_at: usize) {
        let mut broken = frame.clone();
        broken[csum_at] = 0x12;
        broken[csum_at + 1] = 0x34;
        assert!(complete_l4_checksum(&mut broken));
        assert_eq!(broken, frame);
    }

    #[test]
    fn completes_udp_and_tcp_over_ipv4_and_ipv6() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 9)
            .write(&mut f, b"hello, odd payload")
            .unwrap();
        check(f, 14 + 20 + 6);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(4000, 80, 1, 1000)
            .write(&mut f, b"GET / HTTP/1.0\r\n\r\n")
            .unwrap();
        check(f, 14 + 20 + 16);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(4000, 9)
            .write(&mut f, b"v6")
            .unwrap();
        check(f, 14 + 40 + 6);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .single_vlan(7.try_into().unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, &[0xff; 33])
            .unwrap();
        check(f, 18 + 20 + 6);
    }

    #[test]
    fn leaves_other_and_truncated_frames_alone() {
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        assert!(!complete_l4_checksum(&mut arp));
        assert_eq!(arp, before);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 9)
            .write(&mut f, &[1; 40])
            .unwrap();
        f.truncate(f.len() - 10); // total length says more than is there
        assert!(!complete_l4_checksum(&mut f));
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            let _ = complete_l4_checksum(&mut g);
        }
    }
}
