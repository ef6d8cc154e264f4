//! Form parsing (`rack::form`, `rack::inputs::check_form_pairs`): encoding
//! parsed pairs and parsing them again is the identity, and a body plus
//! query the check accepts is, to Go's `url.ParseQuery` (modelled here on
//! bytes, as Go's strings are), free of errors, of repeated keys and of
//! empty values for inspected keys.
//!
//! Input: the body, then optionally a NUL and the query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rack_gateway::rack::form::{encode_form, parse_form};
use rack_gateway::rack::inputs::check_form_pairs;

const INSPECTED: &[&str] = &["app", "command", "env"];

/// Go's `QueryUnescape`: `+` is a space, `%XX` a byte (two hex digits:
/// Go's `ishex`), any other `%` an error.
fn go_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let hex_value = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let (hi, lo) = (*s.get(i + 1)?, *s.get(i + 2)?);
                out.push(u8::try_from(hex_value(hi)? * 16 + hex_value(lo)?).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `ParseQuery`: pairs in order, or `None` where Go reports an error.
fn go_parse(s: &str) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for p in s.split('&').filter(|p| !p.is_empty()) {
        if p.contains(';') {
            return None;
        }
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        pairs.push((go_unescape(k.as_bytes())?, go_unescape(v.as_bytes())?));
    }
    Some(pairs)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (body, query) = match s.split_once('\0') {
        Some((b, q)) => (b, Some(q)),
        None => (s, None),
    };
    let pairs = parse_form(body);
    assert_eq!(
        parse_form(&encode_form(&pairs)),
        pairs,
        "round trip of {body:?}"
    );
    if check_form_pairs(body, query, INSPECTED).is_err() {
        return;
    }
    let mut all = go_parse(body).unwrap_or_else(|| panic!("accepted body Go refuses: {body:?}"));
    if let Some(q) = query {
        all.extend(go_parse(q).unwrap_or_else(|| panic!("accepted query Go refuses: {q:?}")));
    }
    for (i, (k, v)) in all.iter().enumerate() {
        assert!(
            !all[i + 1..].iter().any(|(k2, _)| k2 == k),
            "accepted a repeated key {k:?} in {s:?}"
        );
        assert!(
            !(v.is_empty() && INSPECTED.iter().any(|n| n.as_bytes() == k.as_slice())),
            "accepted an empty inspected key {k:?}"
        );
    }
});
