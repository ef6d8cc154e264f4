//! Basic credential parsing (`identity::credentials::basic_token`): an
//! accepted token is non-empty and within the size cap, and any such token
//! encoded the way the CLI does (`convox:<percent-encoded token>`) parses
//! back to itself.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rack_gateway::identity::credentials::{basic_token, MAX_TOKEN_LEN};

fn header(value: &[u8]) -> Option<http::HeaderMap> {
    let value = http::HeaderValue::from_bytes(value).ok()?;
    let mut h = http::HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, value);
    Some(h)
}

fn encode(token: &str) -> String {
    let userinfo = format!("convox:{}", utf8_percent_encode(token, NON_ALPHANUMERIC));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userinfo)
    )
}

fn round_trip(token: &str) {
    let h = header(encode(token).as_bytes()).expect("base64 is a valid header value");
    assert_eq!(basic_token(&h).as_deref(), Ok(token), "{token:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Some(h) = header(rest) else { return };
        if let Ok(token) = basic_token(&h) {
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
            round_trip(&token);
        }
    } else if let Ok(token) = std::str::from_utf8(rest) {
        if !token.is_empty() && token.len() <= MAX_TOKEN_LEN {
            round_trip(token);
        }
    }
});
