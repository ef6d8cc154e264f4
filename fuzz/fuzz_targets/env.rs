//! Env parsers (`policy::env`) against the mock rack's `parse_env`, the
//! reference model of the rack's `Environment.Load`: the gateway's reading
//! of a stored env is the rack's, and a posted env the gateway accepts
//! reads the same to the rack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rack_gateway::dev::mock_rack::parse_env;
use rack_gateway::policy::env::{posted_env, rack_env};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let reference = parse_env(s).ok();
    assert_eq!(rack_env(s).ok(), reference, "rack_env differs on {s:?}");
    if let Ok(posted) = posted_env(s) {
        assert_eq!(
            Some(posted),
            reference,
            "accepted env reads differently: {s:?}"
        );
    }
});
