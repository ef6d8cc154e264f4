//! Secrets in rack responses: which responses carry them, masking their
//! values for identities without the `secrets read` permission, and which
//! streams cannot be masked at all and so need `secrets stream`.
//!
//! Why here and not in the rack: the rack has no notion of "read but not
//! secrets" (convox-api.md §8). A release returns the whole env in cleartext,
//! a resource the database URL with its password, a registry its password,
//! an external build the rack password itself (rack-semantics.md §4 lists
//! every such field). So the gateway buffers exactly those small JSON
//! responses (capped, never other routes), parses them and replaces the
//! secret values with [`PLACEHOLDER`]. A masked route whose answer is not
//! JSON of the expected shape fails closed (the proxy answers 502).
//! Masked reads must not break writes: see `policy::forms` for the env
//! round-trip that turns the placeholder back into the real value.
//!
//! Logs, object and file downloads, build and database exports are byte
//! streams the gateway cannot mask; they need the [`STREAM_PERMISSION`] on
//! top of the operation ([`stream_needs`]). `apps diagnose` is masked
//! instead (its log lines and event messages), so it stays readable.
//!
//! [`MASKED`] and [`STREAMS`] are the one table: masking, the stream check
//! and `can`'s notes are all read from it. Everything here is pure (no I/O),
//! so it is unit-tested directly.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::policy::SecretAccess;

/// What a masked value is replaced with. `convox env` shows `KEY=******`.
pub(crate) const PLACEHOLDER: &str = "******";

/// The largest rack response the gateway buffers to mask it; larger ones are
/// refused (502) rather than passed through unmasked.
pub(crate) const MAX_MASKED_RESPONSE: usize = 4 << 20;

/// The permission that unmaskable streams need on top of their operation.
pub(crate) const STREAM_PERMISSION: &str = "secrets stream";

/// Which secret-bearing response shape an operation returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Masking {
    /// Release JSON (or a list of them): `env` per line, `manifest` whole.
    Releases,
    /// App resource JSON (or a list): the `url` field's password.
    Resources,
    /// Rack resource JSON (or a list): `parameters.Url` whole (a webhook
    /// URL carries its token in the path), `url`'s password.
    RackResources,
    /// `instances keyroll`: every field whose name mentions a private key.
    Keyroll,
    /// Build JSON (or a list): `manifest` and `reason` whole; `repository`
    /// holds the rack password for external builds and is masked for
    /// everyone.
    Builds,
    /// App config JSON (or a list): `value` whole, except the CLI's
    /// `cli-env-mask`, which holds key names only.
    Configs,
    /// Registry JSON (or a list): `password`.
    Registries,
    /// `rack access`: the minted JWT `token`.
    Jwt,
    /// Process JSON (or a list): `command` whole (build pods carry
    /// `-build-args K=V`).
    Processes,
    /// `apps diagnose`: pod `logs`/`previousLogs` anywhere in the report,
    /// and the `message` of events.
    Diagnose,
    /// A manifest service: `environment` entries' defaults.
    ManifestService,
    /// `budget simulate-shutdown`: the at-cap `webhook-url`.
    BudgetSimulate,
}

/// Every operation whose response is masked, and how. Operation names are
/// those of `rack::routes::ROUTES` (a unit test checks it).
pub(crate) const MASKED: &[(&str, Masking)] = &[
    ("releases", Masking::Releases),
    ("releases info", Masking::Releases),
    ("releases create", Masking::Releases),
    ("rack releases", Masking::Releases),
    ("resources", Masking::Resources),
    ("resources info", Masking::Resources),
    ("rack resources", Masking::RackResources),
    ("rack resources info", Masking::RackResources),
    ("rack resources create", Masking::RackResources),
    ("instances keyroll", Masking::Keyroll),
    ("build", Masking::Builds),
    ("builds", Masking::Builds),
    ("builds info", Masking::Builds),
    ("builds import", Masking::Builds),
    ("builds update", Masking::Builds),
    ("configs", Masking::Configs),
    ("configs get", Masking::Configs),
    ("registries", Masking::Registries),
    ("registries add", Masking::Registries),
    ("rack access", Masking::Jwt),
    ("run", Masking::Processes),
    ("ps", Masking::Processes),
    ("ps info", Masking::Processes),
    ("rack ps", Masking::Processes),
    ("apps diagnose", Masking::Diagnose),
    ("apps manifest", Masking::ManifestService),
    ("budget simulate-shutdown", Masking::BudgetSimulate),
];

/// Operations that stream bytes the gateway cannot mask (logs of apps,
/// processes, services, builds and the rack; object fetch; build export;
/// resource data export; container file download): they need
/// [`STREAM_PERMISSION`].
pub(crate) const STREAMS: &[&str] = &[
    "logs",
    "builds logs",
    "rack logs",
    "objects fetch",
    "builds export",
    "resources export",
    "files download",
];

impl Masking {
    /// The masking an operation's response needs, if any.
    pub(crate) fn for_operation(op: &str) -> Option<Masking> {
        MASKED.iter().find(|(name, _)| *name == op).map(|(_, m)| *m)
    }
}

/// The permission an operation needs on top of being allowed, because its
/// stream cannot be masked.
pub(crate) fn stream_needs(op: &str) -> Option<&'static str> {
    STREAMS.contains(&op).then_some(STREAM_PERMISSION)
}

/// The refusal reason for an allowed operation whose stream this identity
/// may not see, from its [`SecretAccess`] for the request.
pub fn stream_refusal(op: &str, access: &SecretAccess) -> Option<String> {
    let permission = stream_needs(op)?;
    (!access.stream).then(|| {
        format!(
            "`{op}` streams data the gateway cannot mask: it needs the `{permission}` permission"
        )
    })
}

/// What `can` adds to an allowed operation whose response carries secrets:
/// whether this identity sees them, gets them masked, or is refused the
/// stream, decided by the same `secret_access` the proxy uses.
pub(crate) fn can_note(
    policy: &crate::policy::Policy,
    subject: &crate::policy::Subject,
    f: &crate::policy::Facts<'_>,
) -> Option<&'static str> {
    if stream_needs(f.operation).is_some() {
        return Some(if policy.secret_access(subject, f).stream {
            "secrets shown (`secrets stream`)"
        } else {
            "needs `secrets stream` permission"
        });
    }
    Masking::for_operation(f.operation)?;
    Some(if policy.secret_access(subject, f).read {
        "secrets shown (`secrets read`)"
    } else {
        "secrets masked (no `secrets read`)"
    })
}

/// Why a response could not be masked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MaskError {
    #[error("the rack's answer is not JSON, so its secrets cannot be masked")]
    NotJson,
    #[error("the rack's answer is not the expected JSON shape, so its secrets cannot be masked")]
    Shape,
}

/// Masks a JSON response body: an object, or a list of objects. `reveal` is
/// the `secrets read` permission; the rack password is replaced everywhere
/// regardless. The rack's bare `ok` (an action with no payload) carries
/// nothing to mask and passes as is.
pub(crate) fn mask_body(
    kind: Masking,
    body: &[u8],
    reveal: bool,
    rack_password: &str,
) -> Result<Vec<u8>, MaskError> {
    if body.trim_ascii() == b"ok" {
        return Ok(body.to_vec());
    }
    let mut v: Value = serde_json::from_slice(body).map_err(|_| MaskError::NotJson)?;
    match &mut v {
        Value::Array(items) => {
            for item in items {
                mask_item(kind, item, reveal)?;
            }
        }
        other => mask_item(kind, other, reveal)?,
    }
    scrub_value(&mut v, rack_password);
    let mut out = serde_json::to_vec(&v).expect("a JSON value serializes");
    out.push(b'\n');
    Ok(out)
}

fn mask_item(kind: Masking, item: &mut Value, reveal: bool) -> Result<(), MaskError> {
    let Value::Object(map) = item else {
        return Err(MaskError::Shape);
    };
    if kind == Masking::Builds {
        map_str(map, "repository", mask_url);
    }
    if reveal {
        return Ok(());
    }
    match kind {
        Masking::Releases => {
            map_str(map, "env", mask_env);
            blank_field(map, "manifest");
        }
        Masking::Resources => map_str(map, "url", mask_url),
        Masking::RackResources => {
            map_str(map, "url", mask_url);
            match map.get_mut("parameters") {
                Some(Value::Object(params)) => {
                    for (k, v) in params.iter_mut() {
                        if k.eq_ignore_ascii_case("url") {
                            blank(v);
                        }
                    }
                }
                Some(Value::Null) | None => {}
                Some(other) => blank(other),
            }
        }
        Masking::Keyroll => {
            for (k, v) in map.iter_mut() {
                if k.to_ascii_lowercase().contains("private") {
                    *v = Value::String(PLACEHOLDER.into());
                }
            }
        }
        Masking::Builds => {
            blank_field(map, "manifest");
            blank_field(map, "reason");
        }
        Masking::Configs => {
            if map.get("name").and_then(Value::as_str) != Some("cli-env-mask") {
                blank_field(map, "value");
            }
        }
        Masking::Registries => blank_field(map, "password"),
        Masking::Jwt => blank_field(map, "token"),
        Masking::Processes => blank_field(map, "command"),
        Masking::Diagnose => {
            for (k, v) in map.iter_mut() {
                mask_diagnose(k, v, false);
            }
        }
        Masking::ManifestService => match map.get_mut("environment") {
            Some(Value::Array(entries)) => entries.iter_mut().for_each(|e| match e {
                Value::String(s) => *s = mask_manifest_entry(s),
                other => blank(other),
            }),
            Some(other) => blank(other),
            None => {}
        },
        Masking::BudgetSimulate => {
            for (k, v) in map.iter_mut() {
                mask_webhooks(k, v);
            }
        }
    }
    Ok(())
}

/// Applies `f` to a string field; any other non-null value is blanked, so an
/// unexpected type never passes through.
fn map_str(map: &mut Map<String, Value>, key: &str, f: impl Fn(&str) -> String) {
    match map.get_mut(key) {
        Some(Value::String(s)) => *s = f(s),
        Some(other) => blank(other),
        None => {}
    }
}

fn blank_field(map: &mut Map<String, Value>, key: &str) {
    if let Some(v) = map.get_mut(key) {
        blank(v);
    }
}

/// Replaces every non-empty string inside `v` with [`PLACEHOLDER`], keeping
/// the structure (an empty string carries nothing and stays empty, so an
/// absent `reason` still reads as absent).
fn blank(v: &mut Value) {
    match v {
        Value::String(s) if !s.is_empty() => *s = PLACEHOLDER.into(),
        Value::Array(a) => a.iter_mut().for_each(blank),
        Value::Object(m) => m.values_mut().for_each(blank),
        _ => {}
    }
}

/// A field name lower-cased without `-`/`_`, so `previousLogs`,
/// `previous-logs` and `previous_logs` compare equal.
fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Diagnose reports carry pod logs at several depths (pods, init
/// containers); any `logs`/`previousLogs` is blanked, and `message` inside
/// `events`.
fn mask_diagnose(key: &str, v: &mut Value, in_events: bool) {
    let n = norm(key);
    if n == "logs" || n == "previouslogs" || (in_events && n == "message") {
        return blank(v);
    }
    let in_events = in_events || n == "events";
    match v {
        Value::Object(m) => m
            .iter_mut()
            .for_each(|(k, v)| mask_diagnose(k, v, in_events)),
        Value::Array(a) => a.iter_mut().for_each(|i| {
            if let Value::Object(m) = i {
                m.iter_mut()
                    .for_each(|(k, v)| mask_diagnose(k, v, in_events));
            }
        }),
        _ => {}
    }
}

/// Blanks any field named like a webhook URL, at any depth.
fn mask_webhooks(key: &str, v: &mut Value) {
    if norm(key).contains("webhookurl") {
        return blank(v);
    }
    match v {
        Value::Object(m) => m.iter_mut().for_each(|(k, v)| mask_webhooks(k, v)),
        Value::Array(a) => a.iter_mut().for_each(|i| {
            if let Value::Object(m) = i {
                m.iter_mut().for_each(|(k, v)| mask_webhooks(k, v));
            }
        }),
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
pub(crate) fn scrub(text: &str, password: &str) -> String {
    if password.is_empty() {
        return text.to_string();
    }
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
    text.replace(password, PLACEHOLDER)
        .replace(&encoded, PLACEHOLDER)
}

/// A release env with every value replaced, parsed line by line as the rack
/// does (rack-semantics.md §3.1): the key is what precedes the first `=`,
/// kept as written (` KEY =` stays ` KEY =`), every duplicate is masked, and
/// a `\r` before the line break is kept. A non-empty line without `=` is
/// ignored by the rack but still stored and returned, so it is replaced
/// whole (it may be a pasted secret).
fn mask_env(env: &str) -> String {
    env.split('\n')
        .map(|line| {
            let (body, cr) = match line.strip_suffix('\r') {
                Some(b) => (b, "\r"),
                None => (line, ""),
            };
            match body.split_once('=') {
                Some((k, _)) => format!("{k}={PLACEHOLDER}{cr}"),
                None if body.is_empty() => line.to_string(),
                None => format!("{PLACEHOLDER}{cr}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A manifest `environment` entry: `KEY=default` keeps its key, a bare
/// `KEY` (a required variable, no value) is kept as is.
fn mask_manifest_entry(entry: &str) -> String {
    match entry.split_once('=') {
        Some((k, _)) => format!("{k}={PLACEHOLDER}"),
        None => entry.to_string(),
    }
}

/// A URL with the password of its userinfo replaced
/// (`postgres://u:******@db:5432/x`). A URL that is not
/// `scheme://user:password@…` is replaced whole when it has userinfo at all.
fn mask_url(url: &str) -> String {
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
mod tests;
