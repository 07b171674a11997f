//! Frame ownership on every path: each run drives frames down a different
//! set of drop and delivery paths and checks that the identities balance
//! and every pool is full at exit (a frame returned twice would overflow
//! its pool's free ring and trip a debug assertion; one never returned
//! shows up as pool_in_use).

mod common;

use common::*;
use cpumapd::telemetry::Summary;

/// A capture with something for every verdict of touch, l4-proto and
/// l4-filter: runts, an 802.3 frame, UDP to port 9, UDP and TCP.
fn mixed_capture(dir: &std::path::Path) -> std::path::PathBuf {
    let mut frames = Vec::new();
    for i in 0..200u16 {
        frames.push(match i % 5 {
            0 => vec![0xaa; 5], // runt: touch aborts, l4 passes
            1 => [vec![0xff; 12], vec![0x00, 0x40], vec![0; 50]].concat(), // 802.3 length
            2 => udp4([10, 0, 0, (i % 7) as u8], [10, 0, 1, 1], 1000 + i, 9), // pktgen port
            3 => udp4([10, 0, 2, (i % 11) as u8], [10, 0, 1, 1], 2000 + i, 53),
            _ => {
                let mut f = udp4([10, 0, 3, (i % 13) as u8], [10, 0, 1, 1], 3000 + i, 80);
                f[14 + 9] = 6; // TCP
                f.extend_from_slice(&[0; 12]); // full 20-byte TCP header
                f
            }
        });
    }
    let path = dir.join("mixed.pcap");
    write_pcap(&path, &frames);
    path
}

fn run(input: &std::path::Path, app: &str) -> Summary {
    let s = run_to_end(&format!(
        "--lcores 0@0,1@0,2@0 --vdev net_pcap0,rx_pcap={} -- --rx (0,0,0) --cpu 1,2 --no-pin {app}",
        input.display()
    ));
    s.check_identities(true)
        .unwrap_or_else(|e| panic!("{app}: {e}"));
    assert_eq!(s.pool_in_use, 0, "{app}: every buffer back in its pool");
    s
}

#[test]
fn touch_mode_aborts_runts_and_drops_8023() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(&mixed_capture(dir.path()), "--mode touch --qsize 4096");
    assert_eq!((s.rx, s.aborted, s.drop, s.redirect), (200, 40, 40, 120));
}

#[test]
fn l4_filter_drops_port_9_and_passes_what_it_cannot_parse() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(&mixed_capture(dir.path()), "--mode l4-filter --qsize 4096");
    // runts and 802.3 frames: no L2 parse -> pass; UDP to port 9 -> drop.
    assert_eq!((s.pass, s.drop, s.redirect), (80, 40, 80));
    assert_eq!(s.delivered, 80);
}

#[test]
fn remote_drop_counts_every_frame_at_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(
        &mixed_capture(dir.path()),
        "--mode no-touch --qsize 4096 --remote-action drop",
    );
    assert_eq!(s.target_processed, 200);
    assert_eq!((s.delivered, s.target_drops), (0, 200));
    let reason: u64 = s
        .targets
        .iter()
        .map(|t| t.drop_reasons["remote_drop"])
        .sum();
    assert_eq!(reason, 200);
}

#[test]
fn a_tiny_ring_tail_drops_and_counts_at_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(&mixed_capture(dir.path()), "--mode no-touch --qsize 1");
    assert_eq!(s.redirect, 200);
    assert!(
        s.enqueue_drops > 0,
        "a ring of 1 cannot take bulks of 8: {s:?}"
    );
    assert_eq!(s.enqueued + s.enqueue_drops, 200);
    assert!(
        s.targets[0].bulk_avg > 1.0,
        "frames were flushed in bulks: {}",
        s.targets[0].bulk_avg
    );
}

#[test]
fn a_dry_pool_delays_a_replay_but_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = run(
        &mixed_capture(dir.path()),
        "--mode round-robin --qsize 4096 --pool-size 64 --bulk-size 1",
    );
    assert_eq!(s.rx, 200);
    assert_eq!(s.delivered, 200);
}

#[test]
fn pass_verdicts_reach_the_rx_lcores_exception_path() {
    // The RX lcore's Pass verdicts go to its own exception instance: with
    // pcap they land in out-lcore0.pcap.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pcap");
    let s = run(
        &mixed_capture(dir.path()),
        &format!(
            "--mode l4-proto --qsize 4096 --exception pcap:{}",
            out.display()
        ),
    );
    let passed = read_pcap(&dir.path().join("out-lcore0.pcap"));
    assert_eq!(passed.len() as u64, s.pass);
    assert!(
        passed.iter().all(|f| f.len() < 14 || f[12] == 0x00),
        "only unparsable frames were passed"
    );
}
