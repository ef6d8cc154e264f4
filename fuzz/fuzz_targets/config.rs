//! The YAML config loader (`config::load` over a `MemSource`, raw →
//! validated): loading is deterministic, and a refusal lists at least one
//! problem, each pointing at a file of the source on one line.
//!
//! Input: NUL-separated `gateway.yaml`, `roles/fuzz.yaml`, `users.yaml`,
//! `ci.yaml`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rack_gateway::config::{load, Env, MemSource};

const FILES: [&str; 4] = ["gateway.yaml", "roles/fuzz.yaml", "users.yaml", "ci.yaml"];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let files: BTreeMap<String, String> = FILES
        .iter()
        .zip(s.split('\0'))
        .map(|(name, text)| ((*name).to_owned(), text.to_owned()))
        .collect();
    let src = MemSource {
        files,
        label: "fuzz:".into(),
        base: "/nonexistent/fuzz".into(),
    };
    let env = Env::from_pairs([("RACK_PASSWORD", "pw"), ("SIGNING_KEY", "k")]);
    let first = load(&src, &env);
    let second = load(&src, &env);
    match (&first, &second) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "two loads disagree");
            assert!(!a.0.is_empty(), "refused without a reason");
            for e in &a.0 {
                assert!(e.file.starts_with("fuzz:"), "error not at a file: {e}");
                assert!(!e.to_string().contains('\n'), "multi-line error: {e:?}");
            }
        }
        (Ok(_), Ok(_)) => {}
        _ => panic!("two loads disagree"),
    }
});
