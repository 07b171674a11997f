//! Completing the TCP/UDP checksum of a frame whose sender left it to
//! checksum offload (a veth peer on the same host: AF_PACKET marks such
//! frames TP_STATUS_CSUMNOTREADY). The stack behind the TAP would otherwise
//! drop them as InCsumErrors. Also: verifying one ([`checksum_state`], what
//! "DATA_VALID, verified by cpumapd" rests on) and telling a partial
//! checksum (the pseudo-header seed offload leaves) from a corrupt one.

use super::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, L3, field, parse};

/// One's-complement sum of 16-bit big-endian words (odd byte padded),
/// added to `acc`. RFC 1071's way: the sum does not depend on byte order
/// except for a final swap, so 32-bit native words are added into 64 bits
/// (carries kept; no overflow below 16 GiB), which the compiler
/// vectorises, then folded to 16 bits and swapped to big-endian. A
/// 1,500-byte frame costs a few dozen cycles, not one add per word.
fn sum(bytes: &[u8], acc: u32) -> u32 {
    let mut wide = 0u64;
    let mut words = bytes.chunks_exact(4);
    for w in &mut words {
        wide += u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    // The last 1-3 bytes, zero-padded: an odd byte is the high half of a
    // big-endian word, as the words before it started at even offsets.
    let mut tail = [0u8; 4];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    wide += u32::from_ne_bytes(tail) as u64;
    let half = (wide & 0xffff_ffff) + (wide >> 32);
    let half = (half & 0xffff_ffff) + (half >> 32);
    let native = fold(((half & 0xffff) + (half >> 16)) as u32);
    acc + u16::from_be(native) as u32
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Where a frame's TCP/UDP segment is and what its checksum covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Span {
    /// Offset of the IP header in the frame (the L2 length, VLAN tags
    /// included).
    pub l3_offset: usize,
    /// Offset of the L4 header in the frame.
    pub offset: usize,
    /// Bytes of L4 header and payload (from the IP length field).
    pub len: usize,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Offset of the checksum field inside the L4 header.
    pub csum_field: usize,
    /// The pseudo-header's unfolded sum.
    pub pseudo: u32,
    /// Over IPv6 (where UDP must carry a checksum).
    pub ipv6: bool,
}

/// Finds the TCP or UDP segment of an unfragmented IPv4/IPv6 frame (up to
/// two VLAN tags) whose IP length fits the frame. None for anything else.
/// Context: any; allocates nothing, never panics.
pub fn l4_span(frame: &[u8]) -> Option<L4Span> {
    let p = parse(frame)?;
    let (offset, len, proto, pseudo) = match (p.ethertype, p.l3) {
        (ETH_P_IPV4, L3::Ipv4(ip)) if !ip.is_fragment() => {
            let hl = ip.header_len();
            let len = (ip.total_len() as usize).checked_sub(hl)?;
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
        _ => return None,
    };
    let csum_field = match proto {
        IPPROTO_TCP if len >= field::tcp::MIN_HEADER_LEN => field::tcp::CHECKSUM.start,
        IPPROTO_UDP if len >= field::udp::HEADER_LEN => field::udp::CHECKSUM.start,
        _ => return None,
    };
    if offset + len > frame.len() {
        return None;
    }
    Some(L4Span {
        l3_offset: p.l3_offset,
        offset,
        len,
        proto,
        csum_field,
        pseudo,
        ipv6: p.ethertype == ETH_P_IPV6,
    })
}

/// What a frame's L4 checksum field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsumState {
    /// The checksum verifies (or UDP over IPv4 carries none, which is
    /// valid).
    Valid,
    /// The field holds the pseudo-header's sum: the sender left the rest
    /// to checksum offload (a veth peer; what `NEEDS_CSUM` describes).
    Partial(L4Span),
    /// Neither: corrupt (or a zero UDP checksum over IPv6).
    Other,
}

/// Verifies a frame's TCP/UDP checksum (None: not a TCP/UDP frame).
/// Context: any; allocates nothing, never panics.
pub fn checksum_state(frame: &[u8]) -> Option<CsumState> {
    let l4 = l4_span(frame)?;
    let seg = &frame[l4.offset..l4.offset + l4.len];
    let field = u16::from_be_bytes([seg[l4.csum_field], seg[l4.csum_field + 1]]);
    if l4.proto == IPPROTO_UDP && field == 0 {
        return Some(if l4.ipv6 {
            CsumState::Other
        } else {
            CsumState::Valid
        });
    }
    if fold(sum(seg, l4.pseudo)) == 0xffff {
        return Some(CsumState::Valid);
    }
    if field == fold(l4.pseudo) {
        return Some(CsumState::Partial(l4));
    }
    Some(CsumState::Other)
}

/// The TCP/UDP segment of a frame whose checksum field holds the
/// pseudo-header seed that a sender's checksum offload leaves, without
/// summing the payload (what a device with TX checksum offload needs to
/// know). A valid checksum that happens to equal the seed is also
/// returned; recomputing it from scratch gives the same value.
/// Context: any; allocates nothing, never panics.
pub fn partial_checksum(frame: &[u8]) -> Option<L4Span> {
    let l4 = l4_span(frame)?;
    let at = l4.offset + l4.csum_field;
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    (field == fold(l4.pseudo) && !(l4.proto == IPPROTO_UDP && field == 0)).then_some(l4)
}

/// The pseudo-header sum of `l4` folded: the seed a `NEEDS_CSUM` frame
/// carries in its checksum field.
pub fn pseudo_seed(l4: &L4Span) -> u16 {
    fold(l4.pseudo)
}

/// Computes and stores the TCP or UDP checksum of an unfragmented
/// IPv4/IPv6 frame (up to two VLAN tags). Returns false, leaving the frame
/// unchanged, for anything else or a truncated segment.
/// Context: any; allocates nothing, never panics.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Some(l4) = l4_span(frame) else {
        return false;
    };
    let seg = &mut frame[l4.offset..l4.offset + l4.len];
    let at = l4.csum_field..l4.csum_field + 2;
    seg[at.clone()].copy_from_slice(&[0, 0]);
    let mut c = !fold(sum(seg, l4.pseudo));
    if l4.proto == IPPROTO_UDP && c == 0 {
        c = 0xffff; // 0 means "no checksum" for UDP
    }
    seg[at].copy_from_slice(&c.to_be_bytes());
    true
}

/// The IPv4 header checksum of `hdr` (its checksum field is skipped).
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let mut acc = 0u32;
    for (i, w) in hdr.chunks_exact(2).enumerate() {
        if i != 5 {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
    }
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    /// RFC 1071 word by word: the reference the wide sum must equal.
    fn sum_words(bytes: &[u8], mut acc: u32) -> u32 {
        let mut chunks = bytes.chunks_exact(2);
        for w in &mut chunks {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        if let [last] = chunks.remainder() {
            acc += (*last as u32) << 8;
        }
        acc
    }

    #[test]
    fn the_wide_sum_equals_the_word_by_word_sum() {
        // Every length 0..300 and a jumbo, from every alignment, bytes that
        // carry often (0xff runs) and a pseudo-random mix.
        let mut x = 0x9e37_79b9u32;
        let data: Vec<u8> = (0..9100)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 7 < 3 { 0xff } else { x as u8 }
            })
            .collect();
        for start in 0..4 {
            for len in (0..300).chain([1500, 1501, 9000]) {
                let b = &data[start..start + len];
                for acc in [0, 0xffff, 0x1_2345] {
                    assert_eq!(
                        fold(sum(b, acc)),
                        fold(sum_words(b, acc)),
                        "start {start} len {len} acc {acc:#x}"
                    );
                }
            }
        }
        assert_eq!(
            fold(sum(&[0xff; 65535], 0)),
            fold(sum_words(&[0xff; 65535], 0))
        );
    }

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
    fn tells_valid_partial_and_corrupt_checksums_apart() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(4000, 80, 1, 1000)
            .write(&mut f, &[7; 100])
            .unwrap();
        assert_eq!(checksum_state(&f), Some(CsumState::Valid));
        let l4 = l4_span(&f).unwrap();
        assert_eq!((l4.offset, l4.len, l4.csum_field), (34, 120, 16));
        let at = 34 + 16;
        let mut partial = f.clone();
        partial[at..at + 2].copy_from_slice(&pseudo_seed(&l4).to_be_bytes());
        assert_eq!(checksum_state(&partial), Some(CsumState::Partial(l4)));
        assert_eq!(l4.l3_offset, 14);
        assert_eq!(partial_checksum(&partial), Some(l4));
        assert_eq!(partial_checksum(&f), None, "a full checksum is not partial");
        let mut bad = f.clone();
        bad[60] ^= 1;
        assert_eq!(checksum_state(&bad), Some(CsumState::Other));
        assert_eq!(partial_checksum(&bad), None);
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(checksum_state(&arp), None);
        let ip = &f[14..34];
        assert_eq!(ipv4_header_checksum(ip).to_be_bytes(), [ip[10], ip[11]]);
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
