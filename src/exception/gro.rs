//! GRO on the target: within one dequeued burst, TCP segments of one flow
//! become one super-frame with a virtio-net header (`GSO_TCPV4`/`TCPV6`),
//! and UDP datagrams of one flow one `GSO_UDP_L4` (USO) super-datagram,
//! so the kernel's stack walks its receive path once per super-frame
//! instead of once per segment (what NAPI GRO does before
//! `netif_receive_skb`).
//!
//! # General idea
//!
//! [`Gro::plan`] walks the burst in order and keeps up to [`OPEN`] open
//! groups, one per flow. A segment joins its flow's group under Linux's
//! `tcp_gro_receive` rules: same L2 header, addresses, ports, TOS/traffic
//! class, TTL/hop limit, DF and flow label; no IP options, extension
//! headers or fragments; only ACK (and PSH) set; same ACK number, window,
//! header length and options bytes; its sequence number continues the
//! group's; its payload is no larger than the group's segment size (the
//! first segment's); the IPv4 ID continues (or stays, with DF). A segment
//! shorter than the segment size, or with PSH, closes its group after
//! joining. Anything else closes its flow's group first and goes alone.
//! So a flow's bytes leave in the order they came; only frames of
//! different flows may change places (as with the kernel's GRO).
//!
//! UDP follows `udp_gro_receive_segment`: same flow and IP fields, every
//! datagram as long as the first but the last, which may be shorter and
//! closes the group. The kernel splits the super-datagram back into the
//! original datagrams before a socket without `UDP_GRO` sees it
//! (`udp_rcv_segment`), so receivers get the datagrams they were sent;
//! what is saved is the walk through the device, IP and routing layers per
//! datagram (and the write per datagram here).
//!
//! A merged group's first frame gets the merged IP length (and IPv4
//! header checksum), PSH if any member had it, the pseudo-header seed in
//! its TCP checksum field and a `NEEDS_CSUM` + GSO offload record; the
//! sink writes it with the other members' payloads behind it in one
//! `writev(2)`: no copy. Only segments whose checksum is known good or
//! left to offload (`DATA_VALID`, `NEEDS_CSUM`) are merged: a corrupt
//! segment goes alone, so the kernel still counts it.

use arrayvec::ArrayVec;

use crate::frame::{Frame, MAX_BURST};
use crate::wire::vnet::{F_DATA_VALID, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};
use crate::wire::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, L3, parse};

/// Groups open at once (flows merged in parallel within one burst).
pub const OPEN: usize = 8;

/// Largest IP datagram a super-frame may become.
const MAX_IP_LEN: usize = u16::MAX as usize;

#[cfg(test)]
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// A TCP segment's places, from [`segment`].
#[derive(Clone, Copy, Debug)]
struct Seg {
    l3: usize,
    l4: usize,
    /// Ethernet to the end of the TCP header.
    hdr_len: usize,
    payload: usize,
    v6: bool,
    /// A UDP datagram (USO) rather than a TCP segment.
    udp: bool,
    /// IPv4 don't-fragment.
    df: bool,
    seq: u32,
    flags: u8,
    ip_id: u16,
}

/// Parses a frame as a GRO candidate: an IPv4 (no options, no fragment)
/// or IPv6 (no extension header) TCP segment with payload and only ACK/PSH
/// set, or a UDP datagram with payload, exactly as long as its IP length
/// says.
fn segment(d: &[u8]) -> Option<Seg> {
    let p = parse(d)?;
    let (l4, v6, ip_id, ip_len, proto) = match (p.ethertype, p.l3) {
        (ETH_P_IPV4, L3::Ipv4(ip)) if ip.header_len() == 20 && !ip.is_fragment() => {
            let id = u16::from_be_bytes([d[p.l3_offset + 4], d[p.l3_offset + 5]]);
            let len = ip.total_len() as usize;
            (p.l3_offset + 20, false, id, len, ip.protocol())
        }
        (ETH_P_IPV6, L3::Ipv6(ip)) => {
            let len = 40 + ip.payload_len() as usize;
            (p.l3_offset + 40, true, 0, len, ip.next_header())
        }
        _ => return None,
    };
    if p.l3_offset + ip_len != d.len() {
        return None;
    }
    let base = Seg {
        l3: p.l3_offset,
        l4,
        hdr_len: 0,
        payload: 0,
        v6,
        udp: false,
        df: !v6 && d[p.l3_offset + 6] & 0x40 != 0,
        seq: 0,
        flags: 0,
        ip_id,
    };
    match proto {
        IPPROTO_TCP if d.len() >= l4 + 20 => {
            let doff = (d[l4 + 12] >> 4) as usize * 4;
            let flags = d[l4 + 13];
            let hdr_len = l4 + doff;
            if doff < 20
                || hdr_len >= d.len()
                || flags & !(TCP_ACK | TCP_PSH) != 0
                || flags & TCP_ACK == 0
            {
                return None;
            }
            Some(Seg {
                hdr_len,
                payload: d.len() - hdr_len,
                seq: u32::from_be_bytes([d[l4 + 4], d[l4 + 5], d[l4 + 6], d[l4 + 7]]),
                flags,
                ..base
            })
        }
        IPPROTO_UDP if d.len() > l4 + 8 => {
            let ulen = u16::from_be_bytes([d[l4 + 4], d[l4 + 5]]) as usize;
            if ulen != d.len() - l4 {
                return None;
            }
            Some(Seg {
                hdr_len: l4 + 8,
                payload: ulen - 8,
                udp: true,
                ..base
            })
        }
        _ => None,
    }
}

/// True when `b` belongs to the flow of `a` and may follow it in one
/// super-frame as far as headers go (everything but sequence and size).
fn same_flow_and_headers(a: &[u8], sa: &Seg, b: &[u8], sb: &Seg) -> bool {
    if sa.hdr_len != sb.hdr_len || sa.l4 != sb.l4 || sa.v6 != sb.v6 || sa.udp != sb.udp {
        return false;
    }
    let (l3, l4) = (sa.l3, sa.l4);
    let ip_same = if sa.v6 {
        // Version, traffic class, flow label; next header, hop limit; addresses.
        a[l3..l3 + 4] == b[l3..l3 + 4] && a[l3 + 6..l3 + 40] == b[l3 + 6..l3 + 40]
    } else {
        // Version/IHL, TOS; flags (DF); TTL, protocol; addresses.
        a[l3..l3 + 2] == b[l3..l3 + 2]
            && a[l3 + 6] & 0x40 == b[l3 + 6] & 0x40
            && a[l3 + 8..l3 + 10] == b[l3 + 8..l3 + 10]
            && a[l3 + 12..l3 + 20] == b[l3 + 12..l3 + 20]
    };
    let tcp_word = |d: &[u8]| {
        // Data offset, flags (PSH masked) and window: tcp_flag_word.
        let mut w = [d[l4 + 12], d[l4 + 13], d[l4 + 14], d[l4 + 15]];
        w[1] &= !TCP_PSH;
        w
    };
    if sa.udp {
        return a[..l3] == b[..l3] && ip_same && a[l4..l4 + 4] == b[l4..l4 + 4];
    }
    a[..l3] == b[..l3]
        && ip_same
        && a[l4..l4 + 4] == b[l4..l4 + 4]
        && a[l4 + 8..l4 + 12] == b[l4 + 8..l4 + 12]
        && tcp_word(a) == tcp_word(b)
        && a[l4 + 20..sa.hdr_len] == b[l4 + 20..sb.hdr_len]
}

/// The flow part alone (addresses, protocol and ports), to find a group a
/// non-candidate frame of the same flow (FIN, SYN, pure ACK, a datagram
/// whose checksum is unknown) must close first.
fn flow_of(d: &[u8]) -> Option<(usize, usize, bool, u8)> {
    let p = parse(d)?;
    match (p.ethertype, p.l3) {
        (ETH_P_IPV4, L3::Ipv4(ip)) => Some((
            p.l3_offset,
            p.l3_offset + ip.header_len(),
            false,
            ip.protocol(),
        )),
        (ETH_P_IPV6, L3::Ipv6(ip)) => Some((p.l3_offset, p.l3_offset + 40, true, ip.next_header())),
        _ => None,
    }
    .filter(|&(_, l4, _, proto)| {
        d.len() >= l4 + 4 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
    })
}

fn same_flow(a: &[u8], sa: &Seg, b: &[u8]) -> bool {
    let Some((l3, l4, v6, proto)) = flow_of(b) else {
        return false;
    };
    if l3 != sa.l3 || v6 != sa.v6 || (proto == IPPROTO_UDP) != sa.udp {
        return false;
    }
    let addrs = if v6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    };
    a[addrs.clone()] == b[addrs] && a[sa.l4..sa.l4 + 4] == b[l4..l4 + 4]
}

/// One open group: members (indices into the burst), its first segment's
/// places, the segment size and the bytes so far.
struct Group {
    members: ArrayVec<u8, MAX_BURST>,
    first: Seg,
    last: Seg,
    mss: usize,
    payload: usize,
}

/// One write the sink makes: `members[0]` whole, then the others' payloads
/// from `hdr_len` on.
#[derive(Debug, Default)]
pub struct Emit {
    /// Indices into the burst, in sequence order.
    pub members: ArrayVec<u8, MAX_BURST>,
    /// Where the payload of the members after the first starts.
    pub hdr_len: usize,
    /// A super-frame's offload record (also set on its first frame; an
    /// mbuf cannot keep it); empty for a frame that goes alone.
    pub gso: VnetHdr,
    /// Where a super-frame's IP header starts (0 for a frame alone).
    pub l3: usize,
}

/// GRO state of one target (reused across bursts; no allocation).
#[derive(Default)]
pub struct Gro {
    open: ArrayVec<Group, OPEN>,
    /// What the last [`plan`](Self::plan) decided, in write order.
    pub emits: ArrayVec<Emit, MAX_BURST>,
}

impl Gro {
    /// Plans the writes of `frames` (merging what may be merged, fixing the
    /// first frame of each merged group in place). Returns the number of
    /// super-frames made (groups of two or more).
    /// Context: the owning target lcore; allocates nothing.
    pub fn plan(&mut self, frames: &mut [Frame]) -> usize {
        self.plan_with(frames, true, |f| {
            let o = f.offload();
            !o.is_gso() && o.flags & (F_DATA_VALID | F_NEEDS_CSUM) != 0
        })
    }

    /// [`plan`](Self::plan) for a device whose own view of a frame's
    /// checksum is not its offload record (a DPDK mbuf keeps only
    /// `DATA_VALID`): `checked(f)` says the frame's checksum is known good
    /// or left to offload and it carries no GSO of its own; `udp` lets UDP
    /// datagrams merge (a device without USO takes TCP only).
    /// Context: the owning target lcore; allocates nothing.
    pub fn plan_with(
        &mut self,
        frames: &mut [Frame],
        udp: bool,
        checked: impl Fn(&Frame) -> bool,
    ) -> usize {
        self.emits.clear();
        self.open.clear();
        let mut supers = 0;
        for i in 0..frames.len() {
            let cand = segment(frames[i].data()).filter(|s| (udp || !s.udp) && checked(&frames[i]));
            let d = frames[i].data();
            let Some(s) = cand else {
                // Close this flow's group, if any, before it goes alone.
                if let Some(g) = self
                    .open
                    .iter()
                    .position(|g| same_flow(frames[g.members[0] as usize].data(), &g.first, d))
                {
                    supers += self.close(g, frames);
                }
                self.emit_alone(i);
                continue;
            };
            let found = self.open.iter().position(|g| {
                let first = frames[g.members[0] as usize].data();
                same_flow_and_headers(first, &g.first, d, &s)
            });
            let joined =
                match found {
                    Some(g) if self.fits(g, &s) => {
                        let grp = &mut self.open[g];
                        grp.members.push(i as u8);
                        grp.payload += s.payload;
                        grp.last = s;
                        Some(g)
                    }
                    Some(g) => {
                        supers += self.close(g, frames);
                        None
                    }
                    None => {
                        // Same flow, other headers (a window update): close it.
                        if let Some(g) = self.open.iter().position(|g| {
                            same_flow(frames[g.members[0] as usize].data(), &g.first, d)
                        }) {
                            supers += self.close(g, frames);
                        }
                        None
                    }
                };
            let g = match joined {
                Some(g) => g,
                None => {
                    if self.open.is_full() {
                        supers += self.close(0, frames);
                    }
                    let mut members = ArrayVec::new();
                    members.push(i as u8);
                    self.open.push(Group {
                        members,
                        first: s,
                        last: s,
                        mss: s.payload,
                        payload: s.payload,
                    });
                    self.open.len() - 1
                }
            };
            if s.payload < self.open[g].mss || s.flags & TCP_PSH != 0 {
                supers += self.close(g, frames);
            }
        }
        while !self.open.is_empty() {
            supers += self.close(0, frames);
        }
        supers
    }

    fn emit_alone(&mut self, i: usize) {
        let mut members = ArrayVec::new();
        members.push(i as u8);
        self.emits.push(Emit {
            members,
            ..Default::default()
        });
    }

    /// True when segment `s` may join open group `g`.
    fn fits(&self, g: usize, s: &Seg) -> bool {
        let grp = &self.open[g];
        let next_seq = grp.first.seq.wrapping_add(grp.payload as u32);
        let k = grp.members.len() as u16;
        // The IPv4 ID counts up per segment, or (DF set) may stay fixed.
        let id_ok = s.v6
            || s.ip_id == grp.first.ip_id.wrapping_add(k)
            || (s.df && s.ip_id == grp.first.ip_id);
        (s.udp || s.seq == next_seq)
            && s.payload <= grp.mss
            && id_ok
            && grp.first.hdr_len - grp.first.l3 + grp.payload + s.payload <= MAX_IP_LEN
            && !grp.members.is_full()
    }

    /// Closes open group `g`: a group of one goes out as it is; a larger
    /// one becomes a super-frame. Returns 1 for a super-frame.
    fn close(&mut self, g: usize, frames: &mut [Frame]) -> usize {
        let grp = self.open.remove(g);
        let hdr_len = grp.first.hdr_len;
        let merged = grp.members.len() > 1;
        let mut gso = VnetHdr::default();
        if merged {
            let psh = !grp.first.udp
                && grp
                    .members
                    .iter()
                    .any(|&m| frames[m as usize].data()[grp.first.l4 + 13] & TCP_PSH != 0);
            gso = fix_first(&mut frames[grp.members[0] as usize], &grp, psh);
        }
        self.emits.push(Emit {
            members: grp.members,
            hdr_len,
            gso,
            l3: if merged { grp.first.l3 } else { 0 },
        });
        merged as usize
    }
}

/// Rewrites the first frame of a merged group into the super-frame's
/// headers and records its offload (the others' payloads follow it);
/// returns that record.
fn fix_first(f: &mut Frame, grp: &Group, psh: bool) -> VnetHdr {
    let s = grp.first;
    let ip_len = s.hdr_len - s.l3 + grp.payload;
    let l4_len = ip_len - (s.l4 - s.l3);
    let d = f.data_mut();
    if s.v6 {
        d[s.l3 + 4..s.l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        d[s.l3 + 2..s.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let c = crate::wire::ipv4_header_checksum(&d[s.l3..s.l4]);
        d[s.l3 + 10..s.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let (proto, csum_offset, gso_type) = if s.udp {
        // The super-datagram's length; each segment gets its own back.
        d[s.l4 + 4..s.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        (IPPROTO_UDP, 6, GSO_UDP_L4)
    } else {
        if psh {
            d[s.l4 + 13] |= TCP_PSH;
        }
        (IPPROTO_TCP, 16, if s.v6 { GSO_TCPV6 } else { GSO_TCPV4 })
    };
    // The pseudo-header seed for the merged length: the kernel (or whoever
    // segments the super-frame again) finishes the checksum.
    let seed = {
        let mut acc = 0u32;
        let addrs = if s.v6 {
            s.l3 + 8..s.l3 + 40
        } else {
            s.l3 + 12..s.l3 + 20
        };
        for w in d[addrs].chunks_exact(2) {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        acc += proto as u32 + (l4_len as u32 >> 16) + (l4_len as u32 & 0xffff);
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    };
    let at = s.l4 + csum_offset;
    d[at..at + 2].copy_from_slice(&seed.to_be_bytes());
    let v = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: s.hdr_len as u16,
        gso_size: grp.mss as u16,
        csum_start: s.l4 as u16,
        csum_offset: csum_offset as u16,
    };
    f.set_offload(v);
    v
}

/// Turns a TCP super-frame's checksum seed (the pseudo-header sum with the
/// merged length, Linux's convention for `NEEDS_CSUM`) into DPDK's for TSO:
/// the same sum without the length, which the driver adds per segment.
/// `d` is the super-frame's first member after [`Gro::plan`] fixed it.
pub fn tso_seed(d: &mut [u8], e: &Emit) {
    let l4 = e.gso.csum_start as usize;
    let l4_len = if e.gso.gso_type == GSO_TCPV6 {
        u16::from_be_bytes([d[e.l3 + 4], d[e.l3 + 5]])
    } else {
        u16::from_be_bytes([d[e.l3 + 2], d[e.l3 + 3]]) - (l4 - e.l3) as u16
    };
    let at = l4 + e.gso.csum_offset as usize;
    let seed = u16::from_be_bytes([d[at], d[at + 1]]);
    // One's complement subtraction: add the complement, fold the carry.
    let mut acc = seed as u32 + !l4_len as u32;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    d[at..at + 2].copy_from_slice(&(acc as u16).to_be_bytes());
}

/// Copies a planned write into one contiguous byte vector (tests and
/// tools: what the kernel receives from the sink's `writev`).
pub fn flatten(frames: &[Frame], e: &Emit) -> Vec<u8> {
    let mut v = frames[e.members[0] as usize].data().to_vec();
    for &m in &e.members[1..] {
        v.extend_from_slice(&frames[m as usize].data()[e.hdr_len..]);
    }
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Pool;
    use crate::wire::{CsumState, checksum_state};
    use etherparse::PacketBuilder;

    /// A test flow: 10.0.0.1 (or [1; 16]) port `sport` to 10.0.0.2 (or
    /// [2; 16]) port 80.
    pub(crate) struct Flow {
        pub(crate) sport: u16,
        pub(crate) v6: bool,
    }

    /// One segment of `flow` (ACK 77, window 1000, DF, IPv4 ID `id`).
    pub(crate) fn tcp(flow: &Flow, seq: u32, payload: &[u8], psh: bool, id: u16) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if flow.v6 {
            b.ipv6([1; 16], [2; 16], 64)
        } else {
            let mut ip = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::TCP,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
            )
            .unwrap();
            ip.identification = id;
            ip.dont_fragment = true;
            b.ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        };
        let mut t = b.tcp(flow.sport, 80, seq, 1000).ack(77);
        if psh {
            t = t.psh();
        }
        t.write(&mut v, payload).unwrap();
        v
    }

    fn frames(pool: &mut Pool, raw: &[Vec<u8>]) -> Vec<Frame> {
        raw.iter()
            .map(|r| {
                let mut f = pool.alloc().unwrap();
                f.copy_from(r).unwrap();
                f.set_offload(VnetHdr {
                    flags: F_DATA_VALID,
                    ..Default::default()
                });
                f
            })
            .collect()
    }

    /// The payload bytes of every write, per flow, in write order.
    fn stream(frames: &[Frame], g: &Gro, sport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for e in &g.emits {
            let v = flatten(frames, e);
            let s = segment(&v).unwrap();
            if u16::from_be_bytes([v[s.l4], v[s.l4 + 1]]) == sport {
                out.extend_from_slice(&v[s.hdr_len..]);
            }
        }
        out
    }

    #[test]
    fn merges_one_flow_into_a_checksummed_super_frame() {
        for v6 in [false, true] {
            let mut pool = Pool::new("g", 64, 128, 2048).unwrap();
            let fl = Flow { sport: 5000, v6 };
            let raw: Vec<_> = (0..4u32)
                .map(|k| tcp(&fl, 100 + k * 100, &[k as u8; 100], k == 3, 9 + k as u16))
                .collect();
            let mut fs = frames(&mut pool, &raw);
            let mut g = Gro::default();
            assert_eq!(g.plan(&mut fs), 1);
            assert_eq!(g.emits.len(), 1);
            let e = &g.emits[0];
            assert_eq!(e.members.as_slice(), &[0, 1, 2, 3]);
            let o = fs[0].offload();
            assert_eq!(o.gso(), if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!((o.gso_size, o.flags), (100, F_NEEDS_CSUM));
            let mut v = flatten(&fs, e);
            assert_eq!(o.check(v.len()), Ok(()));
            // Finishing the checksum as the kernel would gives a valid frame
            // holding all four payloads, PSH set.
            assert!(crate::wire::complete_l4_checksum(&mut v));
            assert_eq!(checksum_state(&v), Some(CsumState::Valid));
            let s = segment(&v).unwrap();
            assert_eq!(s.payload, 400);
            assert_ne!(s.flags & TCP_PSH, 0);
            if !v6 {
                let ip = &v[14..34];
                assert_eq!(
                    crate::wire::ipv4_header_checksum(ip).to_be_bytes(),
                    [ip[10], ip[11]]
                );
            }
        }
    }

    fn udp(sport: u16, payload: &[u8], v6: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if v6 {
            b.ipv6([1; 16], [2; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        b.udp(sport, 53).write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn merges_udp_datagrams_of_one_flow_into_a_uso_super_datagram() {
        for v6 in [false, true] {
            let mut pool = Pool::new("g", 64, 128, 2048).unwrap();
            let mut raw: Vec<_> = (0..4u8).map(|k| udp(9, &[k; 100], v6)).collect();
            raw.push(udp(9, &[9; 40], v6)); // shorter: joins, closes
            raw.push(udp(9, &[8; 100], v6)); // a new group of one
            raw.push(udp(10, &[7; 100], v6)); // another flow
            let mut fs = frames(&mut pool, &raw);
            let mut g = Gro::default();
            assert_eq!(g.plan(&mut fs), 1, "{:?}", g.emits);
            assert_eq!(g.emits.len(), 3);
            assert_eq!(g.emits[0].members.as_slice(), &[0, 1, 2, 3, 4]);
            let o = fs[0].offload();
            assert_eq!((o.gso(), o.gso_size, o.csum_offset), (GSO_UDP_L4, 100, 6));
            let mut v = flatten(&fs, &g.emits[0]);
            assert_eq!(o.check(v.len()), Ok(()));
            assert!(crate::wire::complete_l4_checksum(&mut v));
            assert_eq!(checksum_state(&v), Some(CsumState::Valid));
            // Cut at gso_size, the payloads are the datagrams sent.
            let pay = &v[o.hdr_len as usize..];
            let cut: Vec<&[u8]> = pay.chunks(100).collect();
            assert_eq!(cut.len(), 5);
            for (k, c) in cut.iter().enumerate() {
                assert_eq!(*c, &raw[k][raw[k].len() - c.len()..]);
            }
        }
    }

    #[test]
    fn keeps_per_flow_order_across_interleaved_flows_and_gaps() {
        let mut pool = Pool::new("g", 64, 128, 2048).unwrap();
        let (a, b) = (
            Flow {
                sport: 1,
                v6: false,
            },
            Flow {
                sport: 2,
                v6: false,
            },
        );
        let mut raw = Vec::new();
        let mut want_a = Vec::new();
        let mut want_b = Vec::new();
        for k in 0..6u32 {
            let pa = vec![k as u8; 50];
            raw.push(tcp(&a, k * 50, &pa, false, k as u16));
            want_a.extend_from_slice(&pa);
            if k != 2 {
                let pb = vec![0x80 | k as u8; 60];
                // Flow B skips a segment: a hole (loss); no merge across it.
                raw.push(tcp(&b, k * 60, &pb, false, 100 + k as u16));
                want_b.extend_from_slice(&pb);
            }
        }
        let mut fs = frames(&mut pool, &raw);
        let mut g = Gro::default();
        let supers = g.plan(&mut fs);
        assert_eq!(supers, 3, "{:?}", g.emits);
        assert_eq!(stream(&fs, &g, 1), want_a);
        assert_eq!(stream(&fs, &g, 2), want_b);
        // Every frame is written exactly once.
        let mut all: Vec<u8> = g.emits.iter().flat_map(|e| e.members.clone()).collect();
        all.sort();
        assert_eq!(all, (0..fs.len() as u8).collect::<Vec<_>>());
    }

    #[test]
    fn never_merges_what_linux_would_not() {
        let mut pool = Pool::new("g", 64, 128, 2048).unwrap();
        let fl = Flow {
            sport: 7,
            v6: false,
        };
        let base = tcp(&fl, 0, &[1; 100], false, 1);
        let mut bigger = tcp(&fl, 100, &[2; 150], false, 2); // larger than mss
        let fin = {
            let mut v = tcp(&fl, 250, &[3; 10], false, 3);
            v[14 + 20 + 13] |= TCP_FIN;
            v
        };
        let mut fs = frames(&mut pool, &[base.clone(), bigger.clone(), fin]);
        let mut g = Gro::default();
        assert_eq!(g.plan(&mut fs), 0);
        assert_eq!(g.emits.len(), 3);
        // A corrupt segment (no DATA_VALID/NEEDS_CSUM) goes alone.
        bigger.truncate(14 + 20 + 20 + 100);
        let fix = |v: &mut Vec<u8>| {
            let l = (v.len() - 14) as u16;
            v[16..18].copy_from_slice(&l.to_be_bytes());
        };
        fix(&mut bigger);
        let mut fs = frames(&mut pool, &[base.clone(), bigger.clone()]);
        fs[1].set_offload(VnetHdr::default());
        assert_eq!(g.plan(&mut fs), 0);
        // The same two with good checksums merge.
        let mut fs = frames(&mut pool, &[base, bigger]);
        assert_eq!(g.plan(&mut fs), 1);
    }
}
