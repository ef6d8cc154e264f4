//! Request-head canonicalization (`http::canon`): whatever is accepted is
//! in canonical form, and canonicalizing the forwarded target again gives
//! the same request (idempotent, re-serializes to the same bytes).
//!
//! Input: first line `METHOD TARGET`, then `name: value` header lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rack_gateway::http::canon::{canonicalize, Canonical};

fn build(method: &str, target: &str, headers: &[(&str, &[u8])]) -> Option<http::request::Parts> {
    let mut b = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).ok().map(|r| r.into_parts().0)
}

fn check_segments(c: &Canonical) {
    for s in &c.segments {
        assert!(!s.is_empty() && s != "." && s != "..", "bad segment {s:?}");
        assert!(
            !s.chars()
                .any(|ch| matches!(ch, '/' | '\\' | '?' | '#') || ch.is_control()),
            "bad character in segment {s:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(first) = lines.next() else { return };
    let Ok(first) = std::str::from_utf8(first) else {
        return;
    };
    let Some((method, target)) = first.split_once(' ') else {
        return;
    };
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..i]) else {
            continue;
        };
        let value = line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]);
        headers.push((name, value));
    }
    let Some(parts) = build(method, target, &headers) else {
        return;
    };
    let Ok(first) = canonicalize(&parts) else {
        return;
    };
    check_segments(&first);
    let forwarded = first.target_from(0);
    let again = build(method, &forwarded, &headers)
        .unwrap_or_else(|| panic!("forwarded target {forwarded:?} does not parse"));
    let second = canonicalize(&again)
        .unwrap_or_else(|e| panic!("forwarded target {forwarded:?} refused: {e}"));
    assert_eq!(first.segments, second.segments);
    assert_eq!(first.query, second.query);
    assert_eq!(first.upgrade, second.upgrade);
    assert_eq!(forwarded, second.target_from(0));
});
