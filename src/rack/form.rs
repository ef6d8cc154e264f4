//! Forms as the rack reads them: `application/x-www-form-urlencoded`
//! bodies and query strings, parsed into ordered pairs and encoded back the
//! way Go's `url.Values.Encode` does.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The largest form body the gateway reads to check or rewrite it.
pub(crate) const MAX_FORM_BODY: usize = 1 << 20;

/// The characters left unescaped by Go's `url.Values.Encode`.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Parses `application/x-www-form-urlencoded` (also a query string) into
/// pairs, in order, duplicates kept.
pub fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes pairs the way Go's `url.Values.Encode` does (space as `+`).
pub fn encode_form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, FORM).to_string().replace("%20", "+"),
                utf8_percent_encode(v, FORM).to_string().replace("%20", "+")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a Content-Type is a urlencoded form (what the rack parses
/// besides multipart, which the gateway never accepts on checked routes).
pub(crate) fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip() {
        let pairs = parse_form("env=A%3D1%0AB%3Dva%3Dlue%0AS%3Da+b%26c&parent-release=R1");
        assert_eq!(pairs[0].1, "A=1\nB=va=lue\nS=a b&c");
        assert_eq!(pairs[1], ("parent-release".into(), "R1".into()));
        assert_eq!(parse_form(&encode_form(&pairs)), pairs);
        assert_eq!(
            encode_form(&[("env".into(), "S=a b&c".into())]),
            "env=S%3Da+b%26c"
        );
    }

    mod model {
        //! The gateway's reading of every form it forwards equals the
        //! rack's (Go's `url.ParseQuery`, modelled by the mock rack), on
        //! generated inputs: whatever `rack::inputs` lets through reads the
        //! same on both sides.
        use super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "a", "b", "=", "&", "%", "%2", "%41", "%2B", "+", ";", "x", "%zz", " ", "é",
                "%C3%A9", "%0A", "env", "url",
            ])
            .prop_map(str::to_string)
        }

        proptest! {
            #[test]
            fn accepted_forms_read_the_same(parts in prop::collection::vec(piece(), 0..16)) {
                let body: String = parts.concat();
                if crate::rack::inputs::check_form_pairs(&body, None, &[]).is_ok() {
                    let rack = crate::dev::mock_rack::form::parse_query(&body);
                    prop_assert_eq!(parse_form(&body), rack);
                }
            }
        }
    }
}
