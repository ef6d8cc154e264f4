//! Secrets in transit: masking secret values in the few rack responses that
//! carry them, the `env` round-trip of `POST /apps/{app}/releases`, and the
//! form checks that close the build side doors.
//!
//! Why here and not in the rack: the rack has no notion of "read but not
//! secrets" (convox-api.md §8). A release GET returns the whole env in
//! cleartext, a resource GET the database URL with its password, an external
//! build the rack password itself. So the gateway buffers exactly those small
//! JSON responses (capped, never other routes) and replaces the values with
//! [`PLACEHOLDER`] for identities without the `secrets read` permission.
//!
//! Masked reads must not break writes: `convox env set` posts the *entire*
//! env it read. A value equal to the placeholder therefore means "unchanged"
//! and is replaced with the real value from the parent release before the
//! request is forwarded; the diff against the parent is also where protected
//! keys and per-role key patterns are enforced.
//!
//! Everything here is pure (no I/O), so it is unit-tested directly.

use std::collections::BTreeMap;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// What a masked value is replaced with. `convox env` shows `KEY=******`.
pub const PLACEHOLDER: &str = "******";

/// The largest rack response the gateway buffers to mask it; larger ones are
/// refused (502) rather than passed through unmasked.
pub const MAX_MASKED_RESPONSE: usize = 4 << 20;

/// The largest form body the gateway reads to check or rewrite it.
pub const MAX_FORM_BODY: usize = 1 << 20;

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

// ---------------------------------------------------------------------------
// Forms

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
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// Go's `strconv.ParseBool` true values.
fn go_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// What a build request asks for, from its form body and query string
/// (the rack reads form values from both).
#[derive(Debug, PartialEq, Eq)]
pub struct BuildForm {
    pub external: bool,
}

/// Checks `POST /apps/{app}/builds`: every `url` must be
/// `object://{app}/<key>` (no `dir://`, no other app, no other scheme).
pub fn check_build(app: &str, fields: &[(String, String)]) -> Result<BuildForm, String> {
    let prefix = format!("object://{app}/");
    for (k, v) in fields {
        if k == "url" && !(v.starts_with(&prefix) && v.len() > prefix.len()) {
            let shown: String = v.chars().take(80).collect();
            return Err(format!(
                "the build source url must be {prefix}<key> (an object uploaded to this app); got \"{shown}\""
            ));
        }
    }
    Ok(BuildForm {
        external: fields.iter().any(|(k, v)| k == "external" && go_true(v)),
    })
}

// ---------------------------------------------------------------------------
// The env round-trip

/// Who may change what in an app's env.
pub struct EnvRules<'a> {
    /// Whether a key is protected in this app.
    pub protected: &'a dyn Fn(&str) -> bool,
    /// The identity may change and remove protected keys.
    pub may_change_protected: bool,
    /// Key patterns the identity may change; `None` is any key.
    pub allowed_key: Option<&'a dyn Fn(&str) -> bool>,
}

/// The key names (never values) a release creation changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Protected keys left out of the post and kept.
    pub kept: Vec<String>,
}

impl EnvChanges {
    /// `add:A,B change:C remove:D kept:E` (empty parts left out).
    pub fn summary(&self) -> String {
        [
            ("add", &self.added),
            ("change", &self.changed),
            ("remove", &self.removed),
            ("kept", &self.kept),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| format!("{n}:{}", v.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// Why a posted env is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("env line {0} is not KEY=VALUE")]
    Malformed(usize),
    #[error("{0}={PLACEHOLDER} keeps a value, but the parent release has no {0}")]
    PlaceholderWithoutValue(String),
    #[error(
        "env key {0} is protected in this app; changing it needs the `env protected` permission"
    )]
    Protected(String),
    #[error("env key {key} may not be changed by this identity (it may change only {allowed})")]
    KeyNotAllowed { key: String, allowed: String },
}

/// Parses `KEY=VALUE` lines (blank lines ignored), later keys winning.
pub fn parse_env(env: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for (i, line) in env.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(EnvError::Malformed(i + 1)),
        }
    }
    Ok(out)
}

/// The env to forward for a posted env and the parent release's env:
/// placeholders restored, protected and per-key rules applied. `allowed`
/// describes the key patterns for the error message.
pub fn merge_env(
    posted: &str,
    parent: &str,
    rules: &EnvRules<'_>,
    allowed: &str,
) -> Result<(String, EnvChanges), EnvError> {
    let posted = parse_env(posted)?;
    let parent = parse_env(parent)?;
    let mut out = BTreeMap::new();
    let mut changes = EnvChanges::default();
    let may_touch = |key: &str| -> Result<(), EnvError> {
        if (rules.protected)(key) && !rules.may_change_protected {
            return Err(EnvError::Protected(key.to_string()));
        }
        if let Some(ok) = rules.allowed_key {
            if !ok(key) {
                return Err(EnvError::KeyNotAllowed {
                    key: key.to_string(),
                    allowed: allowed.to_string(),
                });
            }
        }
        Ok(())
    };
    for (k, v) in posted {
        let old = parent.get(&k);
        let value = if v == PLACEHOLDER {
            match old {
                Some(o) => o.clone(),
                None => return Err(EnvError::PlaceholderWithoutValue(k)),
            }
        } else {
            v
        };
        match old {
            Some(o) if *o == value => {}
            Some(_) => {
                may_touch(&k)?;
                changes.changed.push(k.clone());
            }
            None => {
                may_touch(&k)?;
                changes.added.push(k.clone());
            }
        }
        out.insert(k, value);
    }
    for (k, v) in parent {
        if out.contains_key(&k) {
            continue;
        }
        if (rules.protected)(&k) && !rules.may_change_protected {
            changes.kept.push(k.clone());
            out.insert(k, v);
            continue;
        }
        may_touch(&k)?;
        changes.removed.push(k);
    }
    let env = out
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok((env, changes))
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

    #[test]
    fn build_urls_must_name_the_app() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_build("myapp", &f(&[("url", "object://myapp/tmp/a.tgz")])).is_ok());
        for bad in [
            "object://other/tmp/a.tgz",
            "dir:///etc",
            "object://myapp/",
            "object://myapp",
            "object://myapp.evil/x",
            "https://x/y",
        ] {
            assert!(check_build("myapp", &f(&[("url", bad)])).is_err(), "{bad}");
        }
        assert!(check_build(
            "myapp",
            &f(&[("url", "object://myapp/a"), ("url", "dir:///x")])
        )
        .is_err());
        assert!(
            check_build("myapp", &f(&[("external", "TRUE")]))
                .unwrap()
                .external
        );
        assert!(
            !check_build("myapp", &f(&[("external", "false")]))
                .unwrap()
                .external
        );
    }

    fn rules<'a>(
        protected: &'a dyn Fn(&str) -> bool,
        may: bool,
        allowed: Option<&'a dyn Fn(&str) -> bool>,
    ) -> EnvRules<'a> {
        EnvRules {
            protected,
            may_change_protected: may,
            allowed_key: allowed,
        }
    }

    const PARENT: &str = "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=1\nSECRET_KEY=s3cr3t";

    #[test]
    fn placeholders_keep_values_and_missing_keys_are_removed() {
        let none = |_: &str| false;
        let (env, ch) = merge_env(
            "DATABASE_URL=******\nFEATURE_X=2\nNEW=n",
            PARENT,
            &rules(&none, false, None),
            "",
        )
        .unwrap();
        assert_eq!(
            env,
            "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=2\nNEW=n"
        );
        assert_eq!(ch.added, ["NEW"]);
        assert_eq!(ch.changed, ["FEATURE_X"]);
        assert_eq!(ch.removed, ["SECRET_KEY"]);
        assert_eq!(ch.summary(), "add:NEW change:FEATURE_X remove:SECRET_KEY");
    }

    #[test]
    fn protected_keys_are_kept_or_refused_unless_permitted() {
        let prot = |k: &str| k == "DATABASE_URL";
        let (env, ch) = merge_env(
            "FEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, false, None),
            "",
        )
        .unwrap();
        assert!(
            env.contains("DATABASE_URL=postgres://u:dbsecret@db/x"),
            "{env}"
        );
        assert_eq!(ch.kept, ["DATABASE_URL"]);
        assert_eq!(
            merge_env(
                "DATABASE_URL=x\nFEATURE_X=1\nSECRET_KEY=******",
                PARENT,
                &rules(&prot, false, None),
                ""
            ),
            Err(EnvError::Protected("DATABASE_URL".into()))
        );
        let (env, ch) = merge_env(
            "DATABASE_URL=x\nFEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, true, None),
            "",
        )
        .unwrap();
        assert!(env.starts_with("DATABASE_URL=x\n"), "{env}");
        assert_eq!(ch.changed, ["DATABASE_URL"]);
        let (env, _) = merge_env(
            "FEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, true, None),
            "",
        )
        .unwrap();
        assert!(!env.contains("DATABASE_URL"), "{env}");
    }

    #[test]
    fn key_patterns_limit_changes() {
        let none = |_: &str| false;
        let feature = |k: &str| k.starts_with("FEATURE_");
        let r = rules(&none, false, Some(&feature));
        assert!(merge_env(
            "DATABASE_URL=******\nFEATURE_X=0\nFEATURE_Y=1\nSECRET_KEY=******",
            PARENT,
            &r,
            "FEATURE_*"
        )
        .is_ok());
        let err = merge_env(
            "DATABASE_URL=******\nFEATURE_X=0\nSECRET_KEY=new",
            PARENT,
            &r,
            "FEATURE_*",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "env key SECRET_KEY may not be changed by this identity (it may change only FEATURE_*)"
        );
        assert!(matches!(
            merge_env("FEATURE_X=1", PARENT, &r, "FEATURE_*"),
            Err(EnvError::KeyNotAllowed { .. })
        ));
    }

    #[test]
    fn malformed_and_orphan_placeholders_are_refused() {
        let none = |_: &str| false;
        assert_eq!(
            merge_env("A=1\njunk", "", &rules(&none, false, None), ""),
            Err(EnvError::Malformed(2))
        );
        assert_eq!(
            merge_env("NEW=******", PARENT, &rules(&none, false, None), ""),
            Err(EnvError::PlaceholderWithoutValue("NEW".into()))
        );
    }
}
