//! Requests the rack would read differently than the gateway authorizes
//! them (rack-semantics.md §1, §2, §6; issue 13).
//!
//! The gateway decides on its own model of a routed request: the path,
//! the `Command` header, a few form fields. The rack reads more places
//! than that: form values fall back to same-named headers, multipart
//! bodies are parsed on every method, malformed form pairs are dropped
//! silently, the first of a repeated header wins, and some fields set
//! the actor it records. Each of those is a way for one request to be
//! authorized as one thing and acted on as another, so this module
//! refuses them (never strips: a stripped request is still not the one
//! the client meant). It is pure: it looks at the request head only.

use std::fmt;

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::form::is_form;

/// Why a request is refused: the status to answer and a one-line message
/// naming the offending field or header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    status: StatusCode,
    message: String,
}

impl InputError {
    fn bad(message: impl Into<String>) -> InputError {
        InputError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn media(message: impl Into<String>) -> InputError {
        InputError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: message.into(),
        }
    }

    /// 400, or 415 for a body of a media type the route does not take.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// Operations that forward to something behind the rack (kube API,
/// registry, in-cluster HTTP). The rack reads no form there, so their
/// bodies and queries belong to that backend and are not checked here.
const REVERSE_PROXIES: &[&str] = &["kubernetes", "registry proxy", "proxy http"];

/// Per operation, the parameters the rack reads with `c.Value` or
/// `formValue`, as the canonical header name it falls back to
/// (rack-semantics.md §2, ⚠HF rows). Lower-case, as `HeaderMap` keys are.
fn fallback_headers(operation: &str) -> &'static [&'static str] {
    match operation {
        "apps create" => &["name"],
        "budget set" | "budget clear" | "budget dismiss-recovery" => &["ack_by"],
        "budget reset" => &["force_clear_cooldown", "reset_period", "ack_by"],
        "configs set" => &["value"],
        "build" => &["url"],
        "builds import-image" => &["image"],
        "objects" => &["prefix"],
        "files delete" => &["files"],
        "files download" => &["file"],
        "services scale-override" => &["active", "ack_by"],
        "services triggers disable" => &["ack_by"],
        "services triggers enable" => &["opts", "ack_by"],
        "services triggers threshold-set" => &["type", "threshold", "ack_by"],
        "ssl update" => &["id"],
        "certs import" => &["pub", "key"],
        "certs generate" => &["domains"],
        "events send" => &["action"],
        "registries add" => &["server", "username", "password"],
        "rack access" => &["role", "durationinhour"],
        "rack resources create" => &["kind"],
        "rack resources link" => &["app"],
        _ => &[],
    }
}

/// Headers the rack reads as options (the `header:` struct tags of
/// st/process.go, st/log.go, st/object.go, st/instance.go, and the
/// proxy's `X-Host`/`X-Port`). The rack takes the first of a repeated
/// header, so a repeat could show the gateway one value and the rack
/// another.
const OPTION_HEADERS: &[&str] = &[
    "command",
    "cpu",
    "cpu-limit",
    "disable-stdin",
    "entrypoint",
    "environment",
    "filter",
    "follow",
    "gpu",
    "gpu-vendor",
    "height",
    "image",
    "maxlogrequests",
    "memory",
    "memory-limit",
    "node-labels",
    "prefix",
    "previous",
    "private-key",
    "privileged",
    "public",
    "release",
    "since",
    "system-critical",
    "tail",
    "tty",
    "use-service-volume",
    "volumes",
    "width",
    "x-host",
    "x-port",
];

/// The connection options `Connection` may name. Any other token would
/// make a hop-by-hop-stripping proxy drop an end-to-end header after the
/// gateway decided on it (or before the rack reads it).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "close",
    "proxy-connection",
];

/// The operations on which the request may set the actor the rack
/// records, with the form keys that do it (rack-semantics.md §6 rule 14,
/// dep:23-41, k/event.go:42-49). For `events send` the actor is the key
/// `actor` inside the urlencoded `data` map, written `data[actor]`.
pub(crate) fn actor_keys(operation: &str) -> &'static [&'static str] {
    match operation {
        "budget set"
        | "budget clear"
        | "budget reset"
        | "budget dismiss-recovery"
        | "services scale-override"
        | "services triggers disable"
        | "services triggers enable"
        | "services triggers threshold-set" => &["ack_by"],
        "events send" => &["data[actor]"],
        _ => &[],
    }
}

/// Checks a routed request's head: `operation` is the route's operation
/// name (`rack::routes`), `websocket` whether it is a websocket upgrade,
/// `query` the raw query string (`None` without a `?`). `Ok` means the
/// rack reads nothing here that the gateway does not see the same way;
/// the form body, when there is one, is for [`check_form_pairs`].
pub fn check(
    operation: &str,
    method: &Method,
    websocket: bool,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), InputError> {
    check_connection(headers)?;
    check_cross_site(headers)?;
    check_repeated(headers)?;
    check_fallback(operation, headers)?;
    if REVERSE_PROXIES.contains(&operation) {
        return Ok(());
    }
    check_body(operation, method, websocket, headers)?;
    if let Some(query) = query {
        let pairs = parse_pairs(query, "query")?;
        if let Some(key) = repeated_key(&pairs) {
            return Err(InputError::bad(format!(
                "the query gives `{}` more than once",
                shown(key)
            )));
        }
        if operation == "exec" && pairs.iter().any(|(k, _)| k == "command") {
            return Err(InputError::bad(
                "exec takes its command only from the Command header, not a `command` query key",
            ));
        }
        check_actor_pairs(operation, &pairs)?;
    }
    Ok(())
}

/// The form-side rule 4 of rack-semantics.md §6, for a urlencoded `body`
/// and the raw `query` the rack merges into one form: every key at most
/// once across both, no `;` pair or invalid `%`-escape in either, and no
/// empty value for a key in `inspected` (an empty form value makes the
/// rack fall through to the same-named header). Public for `fuzz/`.
pub fn check_form_pairs(
    body: &str,
    query: Option<&str>,
    inspected: &[&str],
) -> Result<(), InputError> {
    let mut pairs = parse_pairs(body, "form body")?;
    let body_len = pairs.len();
    if let Some(query) = query {
        pairs.extend(parse_pairs(query, "query")?);
    }
    for (i, (key, _)) in pairs.iter().enumerate() {
        if let Some(j) = pairs[i + 1..].iter().position(|(k, _)| k == key) {
            let where_ = match (i < body_len, i + 1 + j < body_len) {
                (true, true) => "the form body",
                (false, false) => "the query",
                _ => "the form body and the query",
            };
            return Err(InputError::bad(format!(
                "`{}` is given more than once in {where_}",
                shown(key)
            )));
        }
    }
    for (key, value) in &pairs {
        if value.is_empty() && inspected.contains(&key.as_str()) {
            return Err(InputError::bad(format!(
                "`{}` is empty (the rack would read a header instead)",
                shown(key)
            )));
        }
    }
    Ok(())
}

/// Refuses the pairs (body or query, decoded) that set the actor the
/// rack records on `operation` ([`actor_keys`]).
pub(crate) fn check_actor_pairs(
    operation: &str,
    pairs: &[(String, String)],
) -> Result<(), InputError> {
    let keys = actor_keys(operation);
    if keys.is_empty() {
        return Ok(());
    }
    for (key, value) in pairs {
        if keys.contains(&key.as_str()) {
            return Err(InputError::bad(format!(
                "`{key}` sets the actor the rack records; the gateway sets it"
            )));
        }
        if operation == "events send" && key == "data" {
            let data = parse_pairs(value, "`data` map")?;
            if data.iter().any(|(k, _)| k == "actor") {
                return Err(InputError::bad(
                    "`data[actor]` sets the actor the rack records; the gateway sets it",
                ));
            }
        }
    }
    Ok(())
}

/// Checks an object key (the path of `object://{app}/<key>` in a build
/// `url`, or of an object route): no empty, `.` or `..` segment, no
/// backslash, and no `%` (a build `url` is decoded once more by the
/// rack, so `%2e%2e` would become `..`). An empty key is refused too:
/// the rack would store under a random temporary key.
pub(crate) fn check_object_key(key: &str) -> Result<(), InputError> {
    if key.contains('\\') {
        return Err(InputError::bad(format!(
            "object key `{}` contains a backslash",
            shown(key)
        )));
    }
    if key.contains('%') {
        return Err(InputError::bad(format!(
            "object key `{}` contains a `%`",
            shown(key)
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(InputError::bad(format!(
            "object key `{}` contains a control character",
            shown(key)
        )));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(InputError::bad(format!(
            "object key `{}` has an empty, `.` or `..` segment",
            shown(key)
        )));
    }
    Ok(())
}

/// Rule 5 (issue 13 item 4): `Connection` may name only hop-by-hop
/// options.
fn check_connection(headers: &HeaderMap) -> Result<(), InputError> {
    for value in headers.get_all(CONNECTION) {
        for token in text(value).split(',') {
            let token = token.trim();
            if !token.is_empty() && !HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h)) {
                return Err(InputError::bad(format!(
                    "the Connection header names `{}`, which is not a hop-by-hop header",
                    shown(token)
                )));
            }
        }
    }
    Ok(())
}

/// Rule 6 (issue 13 item 10): a browser sent by another site. The check
/// mirrors the rack's websocket upgrader (Origin host[:port] equal to
/// `Host`, ASCII case-insensitively), which the stock CLI passes.
fn check_cross_site(headers: &HeaderMap) -> Result<(), InputError> {
    for value in headers.get_all("sec-fetch-site") {
        let site = text(value).trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(InputError::bad(format!(
                "Sec-Fetch-Site `{}` is a cross-site browser request",
                shown(&site)
            )));
        }
    }
    let host = headers.get(HOST).map(text);
    for value in headers.get_all(ORIGIN) {
        let origin = text(value);
        let same = origin_authority(origin.trim())
            .zip(host.as_deref())
            .is_some_and(|(a, h)| a.eq_ignore_ascii_case(h.trim()));
        if !same {
            return Err(InputError::bad(format!(
                "the Origin `{}` is not this gateway's Host",
                shown(&origin)
            )));
        }
    }
    Ok(())
}

/// The host[:port] of an Origin `scheme://host[:port]`; `None` for
/// `null`, userinfo or anything after the authority but a lone `/`.
fn origin_authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let bad = |c: char| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_whitespace();
    (!authority.is_empty() && !authority.contains(bad)).then_some(authority)
}

/// Rule 4 of §6 for headers: at most one of each option header. Most
/// requests repeat no header name at all, which the map's two counts show
/// without a lookup; otherwise only the names present are looked at.
fn check_repeated(headers: &HeaderMap) -> Result<(), InputError> {
    if headers.len() == headers.keys_len() {
        return Ok(());
    }
    for name in headers.keys() {
        if OPTION_HEADERS.contains(&name.as_str()) && headers.get_all(name).iter().nth(1).is_some()
        {
            return Err(InputError::bad(format!(
                "the {} header is given more than once",
                canonical(name.as_str())
            )));
        }
    }
    Ok(())
}

/// Rule 3 of §6: a header the rack would read in place of a form value.
fn check_fallback(operation: &str, headers: &HeaderMap) -> Result<(), InputError> {
    for name in fallback_headers(operation) {
        if headers.contains_key(*name) {
            return Err(InputError::bad(format!(
                "the {} header is not accepted on {operation}: the rack would read it as the `{name}` parameter",
                canonical(name)
            )));
        }
    }
    Ok(())
}

/// Rule 2 of §6: no multipart anywhere (the rack parses it on every
/// method, websocket upgrades included), and no body where the route
/// takes none (DELETE budget clear takes an urlencoded `ack_by`).
fn check_body(
    operation: &str,
    method: &Method,
    websocket: bool,
    headers: &HeaderMap,
) -> Result<(), InputError> {
    for value in headers.get_all(CONTENT_TYPE) {
        let media = text(value);
        let essence = media.split(';').next().unwrap_or("").trim();
        if essence
            .get(..10)
            .is_some_and(|m| m.eq_ignore_ascii_case("multipart/"))
        {
            return Err(InputError::media(format!(
                "a multipart body (Content-Type `{}`) is not accepted",
                shown(essence)
            )));
        }
    }
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|v| text(v).trim() != "0");
    if !has_body {
        return Ok(());
    }
    let what = if websocket {
        "a websocket upgrade"
    } else if *method == Method::DELETE && operation == "budget clear" {
        let content_type = headers.get(CONTENT_TYPE).map(text);
        if is_form(content_type.as_deref()) {
            return Ok(());
        }
        return Err(InputError::media(
            "budget clear accepts only an application/x-www-form-urlencoded body",
        ));
    } else if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) {
        method.as_str()
    } else {
        return Ok(());
    };
    Err(InputError::bad(format!(
        "{what} must not have a body (Content-Length or Transfer-Encoding)"
    )))
}

/// Parses urlencoded pairs the way Go's `url.ParseQuery` does, refusing
/// what it would silently drop (a `;` or an invalid `%`-escape) and
/// keys or values that are not UTF-8 once decoded (the gateway's own
/// form reader decodes lossily, the rack does not). `what` names the
/// source in messages.
fn parse_pairs(input: &str, what: &str) -> Result<Vec<(String, String)>, InputError> {
    let mut pairs = Vec::new();
    for raw in input.split('&').filter(|p| !p.is_empty()) {
        if raw.contains(';') {
            return Err(InputError::bad(format!(
                "the {what} pair `{}` contains a `;`",
                shown(raw)
            )));
        }
        let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
        let decode = |s: &str| {
            unescape(s).ok_or_else(|| {
                InputError::bad(format!(
                    "the {what} pair `{}` has an invalid %-escape or is not UTF-8",
                    shown(raw)
                ))
            })
        };
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(pairs)
}

/// Go's `QueryUnescape`: `+` is a space, `%` must be followed by two hex
/// digits. `None` for an invalid escape or a non-UTF-8 result.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
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
    String::from_utf8(out).ok()
}

/// The first key that occurs twice.
fn repeated_key(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .enumerate()
        .find(|(i, (k, _))| pairs[i + 1..].iter().any(|(other, _)| other == k))
        .map(|(_, (k, _))| k.as_str())
}

/// A header value as text; the rack (Go) would see the same bytes.
fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Go's canonical form of a lower-case header name (`ack_by` → `Ack_by`,
/// `cpu-limit` → `Cpu-Limit`), for messages.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// Client-supplied text for a one-line message: control characters
/// escaped, at most 80 characters.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(80) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
