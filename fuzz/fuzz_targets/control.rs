//! Any bytes as a control-socket request line: an error reply or a request
//! that serialises back to an equal request, never a panic.
#![no_main]

use cpumapd::control::proto::{self, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = proto::parse(data);
    if let Ok(req) = &r {
        let line = serde_json::to_vec(req).expect("requests serialise");
        assert_eq!(proto::parse(&line).as_ref(), Ok(req));
    }
    let reply = Reply::from_result(r.map(|_| serde_json::Value::Null));
    assert!(reply.to_line().ends_with('\n'));
});
