//! Request canonicalization: the one place that decides what an incoming
//! request head *means* before anything routes, authorizes or forwards it.
//!
//! The rack routes with gorilla/mux on the *decoded* `URL.Path` and with
//! `SkipClean(true)`, so `//`, `..` and `%2F` reach its router verbatim and
//! match in ways that are hard to mirror exactly. Instead of imitating that,
//! this module rejects anything ambiguous (dot and empty segments, encoded
//! delimiters, malformed escapes, control bytes, invalid UTF-8, repeated
//! security-relevant headers) and never normalises it.
//!
//! The rule is "canonicalize once, authorize exactly what is forwarded": the
//! gateway authorizes [`Canonical::segments`] and forwards the path rebuilt
//! from those same segments by [`Canonical::path_from`], so the path the rack
//! sees is byte-for-byte the path that was checked. The query is kept raw and
//! forwarded as received.
//!
//! Everything here is pure: no I/O and no state, so it is cheap to test
//! exhaustively.

use http::header::{
    HeaderName, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes kept literal when re-encoding a segment: RFC 3986 `unreserved` plus
/// the `sub-delims`, `:` and `@` that `pchar` allows. Everything else, `%`
/// and all non-ASCII bytes included, is percent-encoded with upper-case hex,
/// so each segment list has exactly one spelling.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Headers that must appear at most once. The rack takes the *first* value
/// of a repeated header while other components may take the last, so a
/// repeat lets a client authorize one value and have another acted on.
static SINGLE_VALUED: [(HeaderName, &str); 9] = [
    (AUTHORIZATION, "Authorization"),
    (HeaderName::from_static("command"), "Command"),
    (UPGRADE, "Upgrade"),
    (CONTENT_LENGTH, "Content-Length"),
    (TRANSFER_ENCODING, "Transfer-Encoding"),
    (CONTENT_TYPE, "Content-Type"),
    (SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
    (SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
    (ORIGIN, "Origin"),
];

/// What kind of protocol upgrade the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// No `Upgrade` header.
    None,
    /// `Upgrade: websocket` exactly (case-sensitive, because the rack's route
    /// matcher is) together with a `Connection` header carrying the token
    /// `upgrade` (case-insensitive). Only GET survives [`canonicalize`].
    Websocket,
    /// Any other `Upgrade` value, or `Upgrade: websocket` without
    /// `Connection: upgrade`. Carries the header value (lossily decoded) so
    /// the caller can decide; the rack has no route for these.
    Other(String),
}

/// The single interpretation of a request that the gateway acts on.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// Decoded, validated path segments; the root path `/` is an empty list.
    /// None is empty, `.` or `..`, and none contains `/`, `\`, `?`, `#`, a
    /// control character or invalid UTF-8.
    pub segments: Vec<String>,
    /// The raw query exactly as received: `None` when the target had no `?`,
    /// `Some("")` for the bare trailing `?` the CLI appends to every REST call.
    pub query: Option<String>,
    /// The protocol upgrade requested, if any.
    pub upgrade: Upgrade,
}

impl Canonical {
    /// Canonical encoding of `segments[from..]` as an absolute path. Used to
    /// build the upstream path so that it is exactly what was authorized;
    /// `from` drops a gateway path prefix. A `from` at or past the end gives
    /// `/`.
    ///
    /// The segments must satisfy the invariants [`canonicalize`] guarantees
    /// (in particular no `.` or `..` segment), otherwise the result is not a
    /// canonical path.
    pub(crate) fn path_from(&self, from: usize) -> String {
        let rest = self.segments.get(from..).unwrap_or_default();
        if rest.is_empty() {
            return "/".to_owned();
        }
        let mut path = String::new();
        for segment in rest {
            path.push('/');
            path.extend(utf8_percent_encode(segment, SEGMENT));
        }
        path
    }

    /// [`Canonical::path_from`] followed by `?` and the raw query when the
    /// request had one (including an empty one, so `GET /apps?` stays
    /// `/apps?`). Public for the fuzz target's idempotence check.
    pub fn target_from(&self, from: usize) -> String {
        let mut target = self.path_from(from);
        if let Some(query) = &self.query {
            target.push('?');
            target.push_str(query);
        }
        target
    }
}

/// Why a request was refused. `Display` is one short line fit to send to the
/// client; it never includes header values, which may carry credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// `GET http://host/x`: a proxy request, not one addressed to us.
    #[error("request target must be a path, not an absolute url")]
    AbsoluteForm,
    /// `CONNECT host:port`.
    #[error("request target must be a path, not an authority")]
    AuthorityForm,
    /// `OPTIONS *`.
    #[error("request target must be a path, not '*'")]
    AsteriskForm,
    /// The target does not start with `/` (for example a bare `?x`).
    #[error("request path must start with '/'")]
    PathNotAbsolute,
    /// A `.` or `..` segment, raw or percent-encoded.
    #[error("path contains a dot segment")]
    DotSegment,
    /// `//`, or a trailing `/` on anything but the root.
    #[error("path contains an empty segment")]
    EmptySegment,
    /// `%2F`, `%5C`, `%2E` or `%23` in any case, anywhere in the path.
    #[error("path contains an encoded '/', '\\', '.' or '#'")]
    EncodedDelimiter,
    /// A raw `\`, which some servers treat as `/`.
    #[error("path contains a backslash")]
    Backslash,
    /// A `%` not followed by two hex digits.
    #[error("path contains a malformed percent escape")]
    MalformedEscape,
    /// A control character (C0, DEL or C1) after decoding.
    #[error("path contains a control character")]
    ControlCharacter,
    /// The decoded bytes of a segment are not UTF-8 (includes overlong forms).
    #[error("path is not valid utf-8 after decoding")]
    InvalidUtf8,
    /// A decoded `?` or `#` inside a segment.
    #[error("path segment contains an encoded '?' or '#'")]
    EncodedQueryOrFragment,
    /// No `Host` header.
    #[error("missing Host header")]
    MissingHost,
    /// A header that must be single-valued appears more than once.
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    /// Both framings at once (or repeated `Content-Length`): the classic
    /// request-smuggling setup.
    #[error(
        "ambiguous framing: Content-Length with Transfer-Encoding, or repeated Content-Length"
    )]
    ContentLengthWithTransferEncoding,
    /// Any `Transfer-Encoding` other than exactly `chunked`.
    #[error("unsupported Transfer-Encoding (only chunked is accepted)")]
    UnsupportedTransferEncoding,
    /// `Content-Length` that is not a plain decimal number.
    #[error("invalid Content-Length header")]
    InvalidContentLength,
    /// A websocket upgrade with a method other than GET.
    #[error("websocket upgrade must use GET")]
    WebsocketMethod,
    /// A websocket upgrade with a query string, even an empty one: the rack
    /// would read `?command=` in preference to the authorized `Command`
    /// header, and the CLI never sends a query on websockets.
    #[error("websocket upgrade must not have a query string")]
    WebsocketQuery,
    /// A websocket upgrade without `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key header")]
    WebsocketMissingKey,
    /// A websocket upgrade whose `Sec-WebSocket-Version` is not `13`.
    #[error("unsupported Sec-WebSocket-Version (only 13 is accepted)")]
    WebsocketVersion,
    /// A websocket upgrade that declares a request body.
    #[error("websocket upgrade must not have a body")]
    WebsocketBody,
    /// A `Command` header the CLI could not have sent.
    #[error("invalid Command header: {0}")]
    InvalidCommand(&'static str),
}

/// Turns a request head into its canonical form, or says why it is refused.
///
/// Checks the request target (origin-form only, strict path decoding), the
/// headers that must be unique or consistent, and the websocket handshake
/// rules the gateway relies on.
pub fn canonicalize(parts: &http::request::Parts) -> Result<Canonical, Reject> {
    let (segments, query) = canonical_target(&parts.uri)?;
    // hyper keeps only one framing header of an ambiguous pair; the
    // connection's raw-head observer (crate::http::sniff) marks such requests.
    if parts
        .extensions
        .get::<crate::http::sniff::AmbiguousFraming>()
        .is_some()
    {
        return Err(Reject::ContentLengthWithTransferEncoding);
    }
    check_headers(&parts.headers)?;
    let upgrade = classify_upgrade(&parts.headers);
    if upgrade == Upgrade::Websocket {
        check_websocket(&parts.method, query.as_deref(), &parts.headers)?;
    }
    Ok(Canonical {
        segments,
        query,
        upgrade,
    })
}

/// Origin-form check plus segment decoding. Note that `http` has already
/// dropped any `#fragment` and refused raw control bytes and raw invalid
/// UTF-8 by the time we see the URI; the forwarded path is rebuilt from
/// segments, so a dropped fragment can't reach the rack either.
fn canonical_target(uri: &http::Uri) -> Result<(Vec<String>, Option<String>), Reject> {
    if uri.scheme().is_some() {
        return Err(Reject::AbsoluteForm);
    }
    if uri.authority().is_some() {
        return Err(Reject::AuthorityForm);
    }
    let raw = uri.path_and_query().map_or("", |pq| pq.as_str());
    if raw == "*" {
        return Err(Reject::AsteriskForm);
    }
    if !raw.starts_with('/') {
        return Err(Reject::PathNotAbsolute);
    }
    let path = uri.path();
    let segments = if path == "/" {
        Vec::new()
    } else {
        path[1..]
            .split('/')
            .map(decode_segment)
            .collect::<Result<_, _>>()?
    };
    Ok((segments, uri.query().map(str::to_owned)))
}

/// Strictly percent-decodes one raw segment and validates the result.
fn decode_segment(raw: &str) -> Result<String, Reject> {
    if raw.is_empty() {
        return Err(Reject::EmptySegment);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut encoded_delimiter = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Reject::MalformedEscape);
                };
                let byte = hi << 4 | lo;
                encoded_delimiter |= matches!(byte, b'/' | b'\\' | b'.' | b'#');
                out.push(byte);
                i += 3;
            }
            b'\\' => return Err(Reject::Backslash),
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    // Dot segments first so `%2e%2E` is reported as what it is.
    if out == b"." || out == b".." {
        return Err(Reject::DotSegment);
    }
    if encoded_delimiter {
        return Err(Reject::EncodedDelimiter);
    }
    let segment = String::from_utf8(out).map_err(|_| Reject::InvalidUtf8)?;
    for c in segment.chars() {
        if c.is_control() {
            return Err(Reject::ControlCharacter);
        }
        if c == '?' || c == '#' {
            return Err(Reject::EncodedQueryOrFragment);
        }
    }
    Ok(segment)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Header rules that apply to every request. `hyper` already rejects some of
/// these while parsing; they are checked again so this function alone is
/// enough.
fn check_headers(headers: &HeaderMap) -> Result<(), Reject> {
    match headers.get_all(HOST).iter().count() {
        0 => return Err(Reject::MissingHost),
        1 => {}
        _ => return Err(Reject::DuplicateHeader("Host")),
    }
    for (name, label) in SINGLE_VALUED.iter() {
        if headers.get_all(name).iter().count() > 1 {
            return Err(Reject::DuplicateHeader(label));
        }
    }
    let transfer_encoding = headers.get(TRANSFER_ENCODING);
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        if transfer_encoding.is_some() {
            return Err(Reject::ContentLengthWithTransferEncoding);
        }
        parse_content_length(length.as_bytes())?;
    }
    if let Some(te) = transfer_encoding {
        if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::UnsupportedTransferEncoding);
        }
    }
    if let Some(command) = headers.get("command") {
        check_command(command.as_bytes())?;
    }
    Ok(())
}

fn parse_content_length(value: &[u8]) -> Result<u64, Reject> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Reject::InvalidContentLength);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or(Reject::InvalidContentLength)
}

/// The `Command` header is what run/exec policy is checked against. `http`
/// cannot represent CR, LF or NUL in a header value, so the first check is
/// defence in depth; non-UTF-8 (obs-text) can arrive.
fn check_command(value: &[u8]) -> Result<(), Reject> {
    if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Reject::InvalidCommand("contains a line break or nul"));
    }
    if std::str::from_utf8(value).is_err() {
        return Err(Reject::InvalidCommand("not valid utf-8"));
    }
    Ok(())
}

fn classify_upgrade(headers: &HeaderMap) -> Upgrade {
    let Some(value) = headers.get(UPGRADE) else {
        return Upgrade::None;
    };
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if value.as_bytes() == b"websocket" && connection_upgrade {
        Upgrade::Websocket
    } else {
        Upgrade::Other(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

fn check_websocket(
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Reject> {
    if method != Method::GET {
        return Err(Reject::WebsocketMethod);
    }
    if query.is_some() {
        return Err(Reject::WebsocketQuery);
    }
    if !headers.contains_key(SEC_WEBSOCKET_KEY) {
        return Err(Reject::WebsocketMissingKey);
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Reject::WebsocketVersion);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(Reject::WebsocketBody);
    }
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        if parse_content_length(length.as_bytes())? > 0 {
            return Err(Reject::WebsocketBody);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
