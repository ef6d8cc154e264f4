//! How the rack reads its inputs (rack-semantics §1.1–§1.3): Go's form
//! parsing, header lookups and the stdapi accessors built on them.
//!
//! Every handler reads its request through [`Input`], so the mock sees
//! exactly what the rack would: the urlencoded body only for
//! POST/PUT/PATCH, multipart for every method, body before query before
//! multipart, malformed pairs dropped, the first value of anything
//! repeated, and `Value(n)`'s fall-through to the header `N`.

use http::header::HeaderMap;
use http::Method;
use percent_encoding::percent_decode;

/// One request's inputs, parsed once the way Go's `net/http` parses them.
pub(crate) struct Input {
    method: Method,
    headers: HeaderMap,
    /// `r.URL.Query()`.
    query: Vec<(String, String)>,
    /// `r.PostForm`: the urlencoded body, for POST/PUT/PATCH only.
    post_form: Vec<(String, String)>,
    /// Non-file multipart values (`r.MultipartForm.Value`), for any method.
    multipart: Vec<(String, String)>,
    /// The body parsed as urlencoded regardless of method, for the
    /// `formValue` DELETE work-around.
    delete_form: Option<Vec<(String, String)>>,
}

impl Input {
    pub(crate) fn new(
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Self {
        let content_type = header_value(headers, "content-type").unwrap_or_default();
        let media = media_type(&content_type);
        let mut post_form = Vec::new();
        let urlencoded = media == "application/x-www-form-urlencoded";
        if urlencoded && matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            let _ = parse_query_into(body, &mut post_form);
        }
        let mut multipart = Vec::new();
        if media == "multipart/form-data" {
            if let Some(boundary) = media_param(&content_type, "boundary") {
                multipart = parse_multipart(body, &boundary);
            }
        }
        let delete_form = (*method == Method::DELETE
            && content_type.starts_with("application/x-www-form-urlencoded"))
        .then(|| {
            let mut form = Vec::new();
            let _ = parse_query_into(body, &mut form);
            form
        });
        Input {
            method: method.clone(),
            headers: headers.clone(),
            query: parse_query(query.unwrap_or("")),
            post_form,
            multipart,
            delete_form,
        }
    }

    /// `r.Form` in Go's order: urlencoded body, then query, then multipart.
    pub(crate) fn form(&self) -> impl Iterator<Item = &(String, String)> {
        self.post_form
            .iter()
            .chain(&self.query)
            .chain(&self.multipart)
    }

    /// `c.Form(n)`: the first form value, `""` when absent.
    pub(crate) fn form_str(&self, name: &str) -> &str {
        self.param(name).unwrap_or("")
    }

    /// A `param:"n"` options field: the first form value, `None` only when
    /// the key is entirely absent (an empty value is still "given").
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        first(self.form(), name)
    }

    /// A `query:"n"` options field: the URL query only.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        first(self.query.iter(), name)
    }

    /// `c.Header(n)` and a `header:"N"` options field: the first value,
    /// trimmed; `None` when the header is absent.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }

    /// `c.Value(n)`: the form value if non-empty, else the header `N`.
    pub(crate) fn value(&self, name: &str) -> String {
        match self.form_str(name) {
            "" => self.header(name).unwrap_or_default(),
            v => v.to_owned(),
        }
    }

    /// `formValue(c, n)` (pkg/api/deprecation.go): a DELETE with a
    /// urlencoded body has that body hand-parsed into `r.Form`, which then
    /// hides the query and multipart values; otherwise `c.Value(n)`.
    pub(crate) fn form_value(&self, name: &str) -> String {
        match self.form_value_form(name) {
            "" => self.header(name).unwrap_or_default(),
            v => v.to_owned(),
        }
    }

    /// The form half of [`Input::form_value`], before the header fallback.
    pub(crate) fn form_value_form(&self, name: &str) -> &str {
        match (&self.method, &self.delete_form) {
            (&Method::DELETE, Some(form)) => first(form.iter(), name).unwrap_or(""),
            _ => self.form_str(name),
        }
    }

    /// A `*bool` `param` field: `true` only for exactly `true`; the default
    /// only when absent.
    pub(crate) fn param_bool(&self, name: &str, default: bool) -> bool {
        self.param(name).map_or(default, |v| v == "true")
    }

    /// A `*bool` `header` field.
    pub(crate) fn header_bool(&self, name: &str, default: bool) -> bool {
        self.header(name).map_or(default, |v| v == "true")
    }

    /// A `map[string]string` `param` field: `url.ParseQuery` of the first
    /// value, failing on any malformed pair as stdapi does.
    pub(crate) fn param_map(&self, name: &str) -> Result<Option<Vec<(String, String)>>, String> {
        let Some(raw) = self.param(name) else {
            return Ok(None);
        };
        let mut pairs = Vec::new();
        match parse_query_into(raw.as_bytes(), &mut pairs) {
            Ok(()) => {
                let mut firsts: Vec<(String, String)> = Vec::new();
                for (k, v) in pairs {
                    if !firsts.iter().any(|(seen, _)| *seen == k) {
                        firsts.push((k, v));
                    }
                }
                Ok(Some(firsts))
            }
            Err(err) => Err(err),
        }
    }
}

fn first<'a>(mut pairs: impl Iterator<Item = &'a (String, String)>, name: &str) -> Option<&'a str> {
    pairs.find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `r.Header.Get(n)`: canonical (case-insensitive) name, first value,
/// leading and trailing whitespace trimmed as Go's reader does.
pub(crate) fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim_matches([' ', '\t', '\r', '\n'])
            .to_owned()
    })
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for names made of token
/// characters: upper-case the first letter and each letter after `-`,
/// lower-case the rest (`ack_by` → `Ack_by`, `durationInHour` →
/// `Durationinhour`).
pub fn canonical_header_name(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The lower-cased media type of a Content-Type, parameters dropped.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// One parameter of a Content-Type (`boundary`), unquoted.
fn media_param(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// `url.ParseQuery`, keeping the pairs that parse; malformed ones are
/// dropped as `r.ParseForm` drops them.
pub(crate) fn parse_query(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let _ = parse_query_into(input.as_bytes(), &mut out);
    out
}

/// `url.ParseQuery`: pairs split at `&`; a pair with `;` or a bad escape is
/// skipped (the first such problem is returned after parsing the rest);
/// empty pairs are skipped; `+` is a space.
fn parse_query_into(input: &[u8], out: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut error = None;
    for pair in input.split(|b| *b == b'&') {
        if pair.contains(&b';') {
            error.get_or_insert_with(|| "invalid semicolon separator in query".to_owned());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        match (unescape(key), unescape(value)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => {
                error.get_or_insert_with(|| "invalid URL escape".to_owned());
            }
        }
    }
    error.map_or(Ok(()), Err)
}

/// `url.QueryUnescape`: `None` for a `%` not followed by two hex digits.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let ok = raw.len() > i + 2
                && raw[i + 1].is_ascii_hexdigit()
                && raw[i + 2].is_ascii_hexdigit();
            if !ok {
                return None;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    Some(percent_decode(&spaced).decode_utf8_lossy().into_owned())
}

/// The non-file values of a `multipart/form-data` body (parts without a
/// `filename`), in order; a malformed body yields what parsed before it.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, String)> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    let Some(start) = find(rest, delimiter.as_bytes()) else {
        return out;
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return out;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return out;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content = &rest[head_end + 4..];
        let close = format!("\r\n{delimiter}");
        let Some(end) = find(content, close.as_bytes()) else {
            return out;
        };
        if let Some(name) = part_name(&head) {
            out.push((name, String::from_utf8_lossy(&content[..end]).into_owned()));
        }
        rest = &content[end + close.len()..];
    }
}

/// The `name` of a form-data part, `None` for file parts.
fn part_name(head: &str) -> Option<String> {
    let disposition = head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let param = |wanted: &str| {
        disposition.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| v.trim().trim_matches('"').to_owned())
        })
    };
    if param("filename").is_some() {
        return None;
    }
    param("name")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
