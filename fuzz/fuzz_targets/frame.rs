//! Any bytes as a received frame: the header views, every built-in mode's
//! classifier, the remote programs and the checksum completion must not
//! panic, and a redirect must name one of the configured targets.
#![no_main]

use cpumapd::filter::{Filter, Mode, RemoteProg, RemoteRunner, Verdict};
use cpumapd::frame::Pool;
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
    // The built-in remote programs through a target's runner, on the frame
    // as a buffer holds it (frames longer than a buffer are refused at RX).
    let mut pool = Pool::new("fuzz", 2, 128, 2048).expect("a small pool");
    let mut f = pool.alloc().expect("a buffer");
    if f.copy_from(data).is_ok() {
        let mut runner = RemoteRunner::new(1, false);
        for (prog, want) in [(RemoteProg::Pass, Verdict::Pass), (RemoteProg::Drop, Verdict::Drop)] {
            runner.select(&prog);
            assert_eq!(runner.run(&prog, &mut f), want);
        }
    }
    drop(f);
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
