//! Basic credential parsing (`identity::credentials::basic_token`): an
//! accepted token is non-empty and within the size cap, and any such token
//! encoded the way the CLI does (`convox:<percent-encoded token>`) parses
//! back to itself — unless its encoded form is longer than the header cap
//! (`MAX_TOKEN_LEN * 4 / 3 + 8` base64 characters), which is then refused
//! as invalid (a token of many escaped bytes can outgrow it).
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rack_gateway::identity::credentials::{basic_token, AuthError, MAX_TOKEN_LEN};

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
    let encoded = encode(token);
    let h = header(encoded.as_bytes()).expect("base64 is a valid header value");
    if encoded.len() - "Basic ".len() > MAX_TOKEN_LEN * 4 / 3 + 8 {
        assert_eq!(basic_token(&h), Err(AuthError::Invalid), "{token:?}");
    } else {
        assert_eq!(basic_token(&h).as_deref(), Ok(token), "{token:?}");
    }
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
