//! Every mode over the real captures in ../shared/pcaps, through the whole
//! pipeline (net_pcap -> RX lcore -> bulk queues -> rings -> 3 targets ->
//! pcap exception path). Checks the accounting identities, that each target
//! got exactly what the mode implies, and that what the exception path
//! wrote is exactly those frames.

mod common;

use std::collections::HashMap;

use common::*;
use cpumapd::filter::{Filter, Mode, Verdict};
use cpumapd::ids::TargetId;
use cpumapd::telemetry::Summary;

const TARGETS: [u32; 3] = [1, 2, 3];

/// Records a default buffer (2048 bytes of data room) holds; the port drops
/// the rest and counts them as ierrors.
fn fitting(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.len() <= cpumapd::frame::DEFAULT_DATA_ROOM as usize)
        .cloned()
        .collect()
}

fn run_mode(mode: Mode, dir: &std::path::Path, input: &std::path::Path) -> Summary {
    let out = dir.join(format!("{mode}.pcap"));
    run_to_end(&format!(
        "--lcores 0@0,1@0,2@0,3@0 --vdev net_pcap0,rx_pcap={} -- --rx (0,0,0) --cpu 1,2,3 --qsize 16384 \
         --mode {mode} --exception pcap:{} --no-pin",
        input.display(),
        out.display()
    ))
}

/// What the built-in program decides for each record, computed apart from
/// the pipeline (same program, no rings, no threads).
fn expected(mode: Mode, records: &[Vec<u8>]) -> (HashMap<u32, Vec<Vec<u8>>>, u64, u64, u64) {
    let targets: Vec<TargetId> = TARGETS.iter().map(|&t| TargetId(t)).collect();
    let mut f = Filter::new(mode, &targets).unwrap();
    let (mut per, mut pass, mut drop, mut aborted) = (HashMap::new(), 0, 0, 0);
    for r in records {
        match f.run(r) {
            Verdict::Redirect(t) => per.entry(t.0).or_insert_with(Vec::new).push(r.clone()),
            Verdict::Pass => pass += 1,
            Verdict::Drop => drop += 1,
            Verdict::Aborted => aborted += 1,
            Verdict::Tx | Verdict::RedirectDev(_) | Verdict::EgressDrop => {
                panic!("no built-in mode transmits")
            }
        }
    }
    (per, pass, drop, aborted)
}

#[test]
fn every_mode_over_the_shared_captures() {
    let records = all_shared_records();
    assert!(
        records.len() > 500,
        "the shared captures hold {} records",
        records.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("all.pcap");
    write_pcap(&input, &records);

    let fit = fitting(&records);
    let oversize = (records.len() - fit.len()) as u64;
    assert!(oversize > 0, "the GSO captures hold frames over 2048 bytes");
    for mode in Mode::ALL {
        let s = run_mode(mode, dir.path(), &input);
        s.check_identities(true)
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let (per, pass, drop, aborted) = expected(mode, &fit);
        assert_eq!(
            s.rx,
            fit.len() as u64,
            "{mode}: every record that fits a buffer received"
        );
        assert_eq!(
            s.ports[0].ierrors, oversize,
            "{mode}: oversize records counted at the port"
        );
        assert_eq!(
            (s.pass, s.drop, s.aborted),
            (pass, drop, aborted),
            "{mode}: verdict counts"
        );
        assert_eq!(
            s.enqueue_drops, 0,
            "{mode}: qsize 16384 holds the whole capture"
        );
        for t in &s.targets {
            let want = per.get(&t.target.0).map_or(&[][..], |v| v.as_slice());
            assert_eq!(
                t.delivered,
                want.len() as u64,
                "{mode}: {} delivered",
                t.target
            );
            // The exception path wrote exactly these frames, in order.
            let file = dir.path().join(format!("{mode}-lcore{}.pcap", t.target.0));
            assert_eq!(
                read_pcap(&file),
                want,
                "{mode}: contents delivered to {}",
                t.target
            );
        }
        // Pass verdicts on the RX lcore go to its own exception instance.
        assert_eq!(
            read_pcap(&dir.path().join(format!("{mode}-lcore0.pcap"))).len() as u64,
            pass,
            "{mode}: pass"
        );
        if matches!(mode, Mode::RoundRobin | Mode::L4Hash | Mode::L4Proto) {
            let used = s.targets.iter().filter(|t| t.delivered > 0).count();
            assert!(used >= 2, "{mode}: spreads over targets: {:?}", s.targets);
        }
    }
}

/// l4-proto against an independent parser (etherparse): TCP to the first
/// target, UDP to the second, ICMP/ICMPv6 to the third, other IP and non-IP
/// to the first, frames without a valid L2 header passed.
#[test]
fn l4_proto_matches_an_independent_parse() {
    use etherparse::{
        Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice,
    };

    let all = all_shared_records();
    let records = fitting(&all);
    let mut want = [0u64; 3];
    let mut want_pass = 0;
    for r in &records {
        let idx = (|| {
            let eth = Ethernet2HeaderSlice::from_slice(r).ok()?;
            let mut et = eth.ether_type().0;
            if et < 0x0600 {
                return None;
            }
            let mut off = 14;
            for _ in 0..2 {
                if et == 0x8100 || et == 0x88a8 {
                    et = SingleVlanHeaderSlice::from_slice(&r[off..])
                        .ok()?
                        .ether_type()
                        .0;
                    off += 4;
                }
            }
            let proto = match et {
                0x0800 => Ipv4HeaderSlice::from_slice(&r[off..])
                    .ok()
                    .map(|h| h.protocol().0),
                0x86dd => Ipv6HeaderSlice::from_slice(&r[off..])
                    .ok()
                    .map(|h| h.next_header().0),
                _ => None,
            };
            Some(match proto {
                Some(17) => 1,
                Some(1) | Some(58) => 2,
                _ => 0,
            })
        })();
        match idx {
            Some(i) => want[i] += 1,
            None => want_pass += 1,
        }
    }
    assert!(
        want.iter().all(|&n| n > 0),
        "the captures hold TCP, UDP and ICMP: {want:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("all.pcap");
    write_pcap(&input, &all);
    let s = run_mode(Mode::L4Proto, dir.path(), &input);
    s.check_identities(true).unwrap();
    let got: Vec<u64> = s.targets.iter().map(|t| t.delivered).collect();
    assert_eq!(got, want, "per-target counts: TCP/other, UDP, ICMP");
    assert_eq!(s.pass, want_pass);
}
