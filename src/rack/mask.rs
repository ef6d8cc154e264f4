//! Secrets in rack responses: which responses carry them, and masking
//! their values for identities without the `secrets read` permission.
//!
//! Why here and not in the rack: the rack has no notion of "read but not
//! secrets" (convox-api.md §8). A release GET returns the whole env in
//! cleartext, a resource GET the database URL with its password, an external
//! build the rack password itself. So the gateway buffers exactly those small
//! JSON responses (capped, never other routes) and replaces the values with
//! [`PLACEHOLDER`] for identities without the `secrets read` permission.
//! Masked reads must not break writes: see `policy::forms` for the env
//! round-trip that turns the placeholder back into the real value.
//!
//! Everything here is pure (no I/O), so it is unit-tested directly.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

/// What a masked value is replaced with. `convox env` shows `KEY=******`.
pub const PLACEHOLDER: &str = "******";

/// The largest rack response the gateway buffers to mask it; larger ones are
/// refused (502) rather than passed through unmasked.
pub const MAX_MASKED_RESPONSE: usize = 4 << 20;

/// Which secret-bearing response shape an operation returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masking {
    /// Release JSON (or a list of them): the `env` field.
    Releases,
    /// Resource JSON (or a list): the `url` field's password.
    Resources,
    /// `instances keyroll`: every field whose name mentions a private key.
    Keyroll,
    /// Build JSON (or a list): `repository` holds the rack password for
    /// external builds; masked for everyone.
    Builds,
}

impl Masking {
    /// The masking an operation's response needs, if any.
    pub fn for_operation(op: &str) -> Option<Masking> {
        match op {
            "releases" | "releases info" | "releases create" => Some(Masking::Releases),
            "resources" | "resources info" | "rack resources" | "rack resources info" => {
                Some(Masking::Resources)
            }
            "instances keyroll" => Some(Masking::Keyroll),
            "build" | "builds" | "builds info" | "builds import" | "builds update" => {
                Some(Masking::Builds)
            }
            _ => None,
        }
    }
}

/// What `can` adds to an allowed operation whose response carries secrets:
/// whether this identity sees them or gets them masked, decided by the same
/// `secret_access` the proxy masks with.
pub fn can_note(
    policy: &crate::policy::Policy,
    subject: &crate::policy::Subject,
    f: &crate::policy::Facts<'_>,
) -> Option<&'static str> {
    Masking::for_operation(f.operation)?;
    Some(if policy.secret_access(subject, f).read {
        "secrets shown (`secrets read`)"
    } else {
        "secrets masked (no `secrets read`)"
    })
}

/// Why a response could not be masked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error("the rack's answer is not JSON, so its secrets cannot be masked")]
    NotJson,
}

/// Masks a JSON response body. `reveal` is the `secrets read` permission;
/// the rack password is replaced everywhere regardless.
pub fn mask_body(
    kind: Masking,
    body: &[u8],
    reveal: bool,
    rack_password: &str,
) -> Result<Vec<u8>, MaskError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|_| MaskError::NotJson)?;
    match &mut v {
        Value::Array(items) => items.iter_mut().for_each(|i| mask_item(kind, i, reveal)),
        other => mask_item(kind, other, reveal),
    }
    scrub_value(&mut v, rack_password);
    let mut out = serde_json::to_vec(&v).expect("a JSON value serializes");
    out.push(b'\n');
    Ok(out)
}

fn mask_item(kind: Masking, item: &mut Value, reveal: bool) {
    let Value::Object(map) = item else { return };
    match kind {
        Masking::Releases if !reveal => {
            if let Some(Value::String(env)) = map.get_mut("env") {
                *env = mask_env(env);
            }
        }
        Masking::Resources if !reveal => {
            if let Some(Value::String(url)) = map.get_mut("url") {
                *url = mask_url(url);
            }
        }
        Masking::Keyroll if !reveal => {
            for (k, v) in map.iter_mut() {
                if k.to_ascii_lowercase().contains("private") {
                    *v = Value::String(PLACEHOLDER.into());
                }
            }
        }
        Masking::Builds => {
            if let Some(Value::String(repo)) = map.get_mut("repository") {
                *repo = mask_url(repo);
            }
        }
        _ => {}
    }
}

/// Replaces every occurrence of the rack password (raw or percent-encoded)
/// in every string of a JSON value.
fn scrub_value(v: &mut Value, password: &str) {
    match v {
        Value::String(s) => *s = scrub(s, password),
        Value::Array(a) => a.iter_mut().for_each(|i| scrub_value(i, password)),
        Value::Object(m) => m.values_mut().for_each(|i| scrub_value(i, password)),
        _ => {}
    }
}

/// `text` with the rack password (raw or percent-encoded) replaced.
pub fn scrub(text: &str, password: &str) -> String {
    if password.is_empty() {
        return text.to_string();
    }
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    text.replace(password, PLACEHOLDER)
        .replace(&encoded, PLACEHOLDER)
}

/// `KEY=value` lines with every value replaced; keys and order kept.
pub fn mask_env(env: &str) -> String {
    env.split('\n')
        .map(|line| match line.split_once('=') {
            Some((k, _)) => format!("{k}={PLACEHOLDER}"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A URL with the password of its userinfo replaced
/// (`postgres://u:******@db:5432/x`). A URL that is not
/// `scheme://user:password@…` is replaced whole when it has userinfo at all.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{PLACEHOLDER}@{host}{tail}"),
        None => format!("{scheme}://{PLACEHOLDER}@{host}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "rack-pw-1";

    #[test]
    fn env_values_are_masked_keys_kept() {
        assert_eq!(
            mask_env("A=1\nSECRET_KEY=s3cr3t\nURL=x=y"),
            "A=******\nSECRET_KEY=******\nURL=******"
        );
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://u:dbsecret@db:5432/x"),
            "postgres://u:******@db:5432/x"
        );
        assert_eq!(mask_url("redis://:pw@h:6379"), "redis://:******@h:6379");
        assert_eq!(mask_url("https://tok@h/p"), "https://******@h/p");
        assert_eq!(mask_url("https://h/p@x"), "https://h/p@x");
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn release_lists_and_the_rack_password_are_masked() {
        let body = br#"[{"id":"R1","env":"K=v\nS=s3cr3t"},{"id":"R2","env":"","description":"pw rack-pw-1 and rack%2Dpw%2D1"}]"#;
        let out = mask_body(Masking::Releases, body, false, PW).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""env":"K=******\nS=******""#), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("rack-pw-1"),
            "{text}"
        );
        assert!(!text.contains("rack%2Dpw%2D1"), "{text}");
        let revealed = mask_body(Masking::Releases, body, true, PW).unwrap();
        let text = String::from_utf8(revealed).unwrap();
        assert!(
            text.contains("s3cr3t") && !text.contains("rack-pw-1"),
            "{text}"
        );
    }

    #[test]
    fn builds_mask_the_repository_for_everyone() {
        let body = br#"{"id":"B1","repository":"https://convox:rack-pw-1@api.x/app"}"#;
        let out = mask_body(Masking::Builds, body, true, "other").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("https://convox:******@api.x/app"), "{text}");
    }

    #[test]
    fn keyroll_private_keys_are_masked() {
        let body = br#"{"name":"k","private-key":"-----BEGIN"}"#;
        let text =
            String::from_utf8(mask_body(Masking::Keyroll, body, false, PW).unwrap()).unwrap();
        assert!(
            !text.contains("BEGIN") && text.contains("\"name\":\"k\""),
            "{text}"
        );
    }

    #[test]
    fn non_json_is_an_error() {
        assert_eq!(
            mask_body(Masking::Releases, b"<html>", false, PW),
            Err(MaskError::NotJson)
        );
    }
}
