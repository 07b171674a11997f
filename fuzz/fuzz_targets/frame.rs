//! Any bytes as a received frame: the header views, every built-in mode's
//! classifier, the remote programs and the checksum completion must not
//! panic, and a redirect must name one of the configured targets.
#![no_main]

use cpumapd::filter::{Filter, Mode, RemoteProg, Verdict};
use cpumapd::ids::TargetId;
use cpumapd::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let targets = [TargetId(1), TargetId(2), TargetId(5)];
    if let Some(p) = wire::parse(data) {
        let _ = p.ip_proto();
        let _ = p.ports();
    }
    for mode in Mode::ALL {
        let mut f = Filter::new(mode, &targets).expect("targets given");
        for _ in 0..2 {
            if let Verdict::Redirect(t) = f.run(data) {
                assert!(targets.contains(&t), "{mode}: redirect to {t}");
            }
        }
    }
    for prog in [RemoteProg::Pass, RemoteProg::Drop] {
        let _ = prog.run(data);
    }
    let mut copy = data.to_vec();
    if wire::complete_l4_checksum(&mut copy) {
        // Completing twice gives the same bytes.
        let once = copy.clone();
        assert!(wire::complete_l4_checksum(&mut copy));
        assert_eq!(once, copy);
    } else {
        assert_eq!(copy, data, "a refused frame is left unchanged");
    }
});
