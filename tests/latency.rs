//! The measurement flags.
//! `--latency`: RX lcores stamp bursts, targets record every frame they
//! dequeue; the summary's percentiles cover exactly the frames processed.
//! `--stage-cycles`: every lcore times its loop's stages; the summary's
//! cycles per packet cover exactly the frames each lcore handled.

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

#[test]
fn stage_cycles_cover_every_frame_and_add_up_to_the_total() {
    use cpumapd::counters::stages::{RxStage, TargetStage};
    let s = run_to_end(
        "--lcores 0@0,1@1,2@1 --vdev net_gen0,count=200000,flows=64 -- --cpu 1,2 \
         --mode l4-hash --remote-action drop --stage-cycles --metrics off --control off",
    );
    s.check_identities(true).unwrap();
    assert!(s.tsc_ghz.is_some_and(|g| g > 0.0), "{:?}", s.tsc_ghz);
    let check = |st: &cpumapd::counters::stages::StageSummary, names: &[&str], packets: u64| {
        assert_eq!(st.packets, packets);
        assert!(st.busy_cycles > 0, "{st:?}");
        let keys: Vec<&str> = st.cycles_per_packet.keys().copied().collect();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(keys, want);
        let sum: f64 = st.cycles_per_packet.values().sum();
        assert!(
            (sum - st.total_per_packet).abs() < 1e-6 * sum.max(1.0),
            "{st:?}"
        );
        assert!(st.ns_per_packet > 0.0, "{st:?}");
    };
    for r in &s.rx_lcores {
        let st = r.stages.as_ref().expect("RX stages");
        check(st, &RxStage::NAMES, r.rx);
        // Every stage of a busy poll ran.
        for k in ["rx", "filter", "enqueue", "flush"] {
            assert!(st.cycles_per_packet[k] > 0.0, "{k}: {st:?}");
        }
    }
    for t in &s.targets {
        let st = t.stages.as_ref().expect("target stages");
        check(st, &TargetStage::NAMES, t.processed);
        for k in ["dequeue", "remote", "sink"] {
            assert!(st.cycles_per_packet[k] > 0.0, "{k}: {st:?}");
        }
    }
    // Without the flag: nothing measured, nothing reported.
    let s = run_to_end(
        "--lcores 0@0,1@1 --vdev net_gen0,count=10000 -- --cpu 1 --metrics off --control off",
    );
    assert!(s.tsc_ghz.is_none());
    assert!(s.rx_lcores.iter().all(|r| r.stages.is_none()));
    assert!(s.targets.iter().all(|t| t.stages.is_none()));
    // The binary prints one line per lcore, stages in loop order.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .args(common::args(
            "--lcores 0@0,1@1 --vdev net_gen0,count=20000 -- --cpu 1 --stage-cycles \
             --interval 0 --metrics off --control off",
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stage cycles/packet lcore0 (RX): poll ")
            && text.contains("stage cycles/packet lcore1 (target): dequeue "),
        "{text}"
    );
}

#[test]
fn stage_cycles_are_exported_to_prometheus_and_match_the_summary() {
    use cpumapd::config::Plan;
    use cpumapd::telemetry::exporter::{registry, render};
    let scrape = |stages: bool| -> (String, cpumapd::telemetry::Summary) {
        let plan = Plan::from_args(&common::args(&format!(
            "--lcores 0@0,1@1 --vdev net_gen0,count=50000 -- --cpu 1 --remote-action drop \
             --metrics off --control off{}",
            if stages { " --stage-cycles" } else { "" }
        )))
        .unwrap();
        let running = cpumapd::lcore::start(&plan).unwrap();
        // At rest: the generator ran out and the target drained.
        common::wait_drained(&running);
        // Scraped after shutdown (the registry keeps the counter blocks):
        // every counter is final, so scrape and summary must agree exactly.
        let reg = registry(running.stats().clone()).unwrap();
        let s = cpumapd::telemetry::Summary::at_shutdown(running).unwrap();
        (render(&reg).unwrap(), s)
    };
    let sample = |text: &str, lcore: &str, role: &str, stage: &str| -> Option<f64> {
        let key = format!(
            "cpumapd_lcore_stage_cycles_total{{lcore=\"{lcore}\",role=\"{role}\",stage=\"{stage}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map(|v| v.trim().parse().unwrap())
    };
    let (text, s) = scrape(true);
    let busy = |role: &str, lcore: &str, names: &[&str]| -> f64 {
        names
            .iter()
            .map(|st| {
                sample(&text, lcore, role, st).unwrap_or_else(|| panic!("{lcore} {st}: {text}"))
            })
            .sum()
    };
    use cpumapd::counters::stages::{RxStage, TargetStage};
    let rx_busy = busy("rx", "lcore0", &RxStage::NAMES);
    let tg_busy = busy("target", "lcore1", &TargetStage::NAMES);
    assert_eq!(
        rx_busy as u64,
        s.rx_lcores[0].stages.as_ref().unwrap().busy_cycles
    );
    assert_eq!(
        tg_busy as u64,
        s.targets[0].stages.as_ref().unwrap().busy_cycles
    );
    assert!(sample(&text, "lcore0", "rx", "filter").unwrap() > 0.0);
    assert!(sample(&text, "lcore1", "target", "idle").is_some());
    // Without the flag the family has no samples.
    let (text, _) = scrape(false);
    assert!(
        !text.contains("cpumapd_lcore_stage_cycles_total{"),
        "{text}"
    );
}
