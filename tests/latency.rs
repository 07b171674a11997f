//! `--latency`: RX lcores stamp bursts, targets record every frame they
//! dequeue; the summary's percentiles cover exactly the frames processed.

mod common;

use common::run_to_end;

#[test]
fn latency_percentiles_cover_every_processed_frame() {
    let s = run_to_end(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,count=60000,rate=300000,flows=64 -- --cpu 1,2 \
         --latency --metrics off --control off",
    );
    s.check_identities(true).unwrap();
    for t in &s.targets {
        let l = t
            .latency
            .unwrap_or_else(|| panic!("no latency for {:?}", t.target));
        assert_eq!(l.samples, t.processed, "{t:?}");
        assert!(
            0 < l.p50_ns && l.p50_ns <= l.p99_ns && l.p99_ns <= l.p999_ns && l.p999_ns <= l.max_ns,
            "{l:?}"
        );
        // A frame crosses one ring: well under a second even on a busy VM.
        assert!(l.p50_ns < 1_000_000_000, "{l:?}");
    }
    // Any port: the pcap replay is stamped by the RX lcore too.
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("u.pcap");
    let frames: Vec<Vec<u8>> = (0..500u16)
        .map(|i| common::udp4([10, 0, 0, 1], [10, 0, 0, 2], 1000 + i, 53))
        .collect();
    common::write_pcap(&pcap, &frames);
    let s = run_to_end(&format!(
        "--lcores 0@0,1@1 --vdev net_pcap0,rx_pcap={} -- --cpu 1 --latency --metrics off --control off",
        pcap.display()
    ));
    assert_eq!(s.targets[0].latency.map(|l| l.samples), Some(500));
}

#[test]
fn without_the_flag_nothing_is_recorded() {
    let s = run_to_end(
        "--lcores 0@0,1@1 --vdev net_gen0,count=10000 -- --cpu 1 --metrics off --control off",
    );
    s.check_identities(true).unwrap();
    assert!(
        s.targets.iter().all(|t| t.latency.is_none()),
        "{:?}",
        s.targets
    );
}
