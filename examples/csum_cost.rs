//! What verifying a TCP checksum costs per frame: cpumapd's
//! `checksum_state` (the DATA_VALID check GRO makes for frames whose port
//! said nothing about it) against etherparse's checksum of the same
//! segment, a peer measured in the same run.
//!
//! `cargo run --release --example csum_cost [FRAMES] [PAYLOAD]`
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut a = std::env::args().skip(1);
    let n: u32 = a.next().and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let payload: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(1448);
    let body: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .ack(5)
        .write(&mut frame, &body)
        .unwrap();
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..])
        .unwrap()
        .to_header();
    let tcp = etherparse::TcpHeaderSlice::from_slice(&frame[34..])
        .unwrap()
        .to_header();
    for round in 1..=3 {
        let t = Instant::now();
        let mut ok = 0u32;
        for _ in 0..n {
            ok += matches!(
                cpumapd::wire::checksum_state(black_box(&frame)),
                Some(cpumapd::wire::CsumState::Valid)
            ) as u32;
        }
        let ours = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let c = black_box(&tcp)
                .calc_checksum_ipv4(black_box(&ip), black_box(&frame[54..]))
                .unwrap();
            ok += (c == tcp.checksum) as u32;
        }
        let peer = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(ok, 2 * n);
        println!(
            "round {round}: {}-byte frame: cpumapd {ours:.1} ns, etherparse {peer:.1} ns, ratio {:.2}",
            frame.len(),
            ours / peer
        );
    }
}
