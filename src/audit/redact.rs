//! Redaction for audit records: [`CommandRedactor`] masks secrets in the
//! run/exec commands records carry, and [`is_sensitive_field`] names the
//! form, query, header and JSON fields whose values are never recorded.
//! Records carry names and decisions, never secrets; these are the rules
//! that keep a command line or a field from smuggling one in.

/// Redacts run/exec commands before they are audited.
///
/// * Operator patterns (`audit.redact_commands`): each is a glob matched
///   against the **whole** command, where `*` matches any run of
///   characters (including none) and every other character matches itself
///   (case-sensitive). A matching command is replaced entirely by
///   `[redacted: matches <i>]`, `<i>` being the 0-based index of the first
///   matching pattern.
/// * Built-in rules, applied to every other command, replace a value by
///   `[redacted]`:
///   - assignments `NAME=value` at the start of a word (also after `;`,
///     `&`, `|`, `(`, a quote or a backtick) whose name, uppercased,
///     contains `PASSWORD`, `PASSWD`, `SECRET`, `TOKEN`, `CREDENTIAL` or
///     `PRIVATE`, or ends with `KEY`, `PASS` or `PWD` (but not `PWD` and
///     `OLDPWD` themselves);
///   - long flags `--name=value`, `--name value`, `-name=value` and
///     `-name value` (names of two or more characters; `_` and `-` alike)
///     whose name contains `password`, `passwd`, `secret`, `token`,
///     `credential` or `private`, ends with `key` or `pass`, or is `pwd`,
///     `auth`, `authorization` or `cookie`; in the separated form the next
///     word is the value unless it starts with `-`;
///   - the word after `Bearer` or `Basic` (any case): HTTP credentials;
///   - the password in URL user info: `scheme://user:[redacted]@host`.
///
///   A value runs to the next whitespace or `;`, `&`, `|`, `(`, `)`, quote
///   or backtick; a value that starts with a quote runs to the matching
///   quote. Short flags (`-p secret`) are not recognized: add a pattern.
#[derive(Debug, Clone)]
pub struct CommandRedactor {
    patterns: Vec<String>,
}

impl CommandRedactor {
    /// Compiles the patterns; an empty pattern is an error.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        for (i, p) in patterns.iter().enumerate() {
            if p.is_empty() {
                return Err(format!("audit.redact_commands[{i}]: empty pattern"));
            }
        }
        Ok(CommandRedactor {
            patterns: patterns.to_vec(),
        })
    }

    /// The command as it may be recorded.
    pub fn apply(&self, command: &str) -> String {
        if let Some(i) = self
            .patterns
            .iter()
            .position(|p| glob_match(p.as_bytes(), command.as_bytes()))
        {
            return format!("[redacted: matches {i}]");
        }
        mask_url_passwords(&mask_values(command))
    }
}

/// Whole-string glob with `*` wildcards, byte by byte.
///
/// Not [`crate::policy::glob::glob_match`]: there `?` matches any one
/// character, here it matches itself, and commands are full of literal
/// `?` (URLs with queries, shell globs), so an operator pattern such as
/// `curl *?token=*` would start matching other commands. Only `*` is a
/// wildcard, as the [`CommandRedactor`] documentation promises.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == s[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// Characters after which a new word starts.
fn is_break(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b';' | b'&' | b'|' | b'(' | b')' | b'\'' | b'"' | b'`')
}

fn sensitive_env_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("KEY")
        || n.ends_with("PASS")
        || (n.ends_with("PWD") && n != "PWD" && n != "OLDPWD")
}

fn sensitive_flag_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("key")
        || n.ends_with("pass")
        || matches!(n.as_str(), "pwd" | "auth" | "authorization" | "cookie")
}

/// The end of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
        let q = b[j];
        j += 1;
        while j < b.len() && b[j] != q {
            j += 1;
        }
        return (j + 1).min(b.len());
    }
    while j < b.len() && !is_break(b[j]) {
        j += 1;
    }
    j
}

/// Appends `[redacted]` for a non-empty value at `i`; returns where the
/// scan continues.
fn redact_value(b: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let end = value_end(b, i);
    if end > i {
        out.extend_from_slice(b"[redacted]");
    }
    end
}

/// The built-in assignment, flag and HTTP credential rules.
fn mask_values(command: &str) -> String {
    let b = command.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut word_start = true;
    while i < b.len() {
        let c = b[i];
        if is_break(c) {
            out.push(c);
            i += 1;
            word_start = true;
            continue;
        }
        if word_start {
            word_start = false;
            // Word characters: [A-Za-z0-9_-].
            let word_end = |from: usize| {
                let mut j = from;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                j
            };
            if c == b'-' {
                let dashes = if b.get(i + 1) == Some(&b'-') { 2 } else { 1 };
                let name_start = i + dashes;
                let name_end = word_end(name_start);
                let name = &command[name_start..name_end];
                if name.len() >= 2
                    && name.as_bytes()[0].is_ascii_alphanumeric()
                    && sensitive_flag_name(name)
                {
                    out.extend_from_slice(&b[i..name_end]);
                    i = name_end;
                    if b.get(i) == Some(&b'=') {
                        out.push(b'=');
                        i = redact_value(b, i + 1, &mut out);
                        continue;
                    }
                    if i < b.len() && !b[i].is_ascii_whitespace() {
                        continue;
                    }
                    let mut j = i;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j < b.len() && b[j] != b'-' && !matches!(b[j], b';' | b'&' | b'|' | b')') {
                        out.extend_from_slice(&b[i..j]);
                        i = redact_value(b, j, &mut out);
                    }
                    continue;
                }
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let name_end = word_end(i);
                let name = &command[i..name_end];
                if b.get(name_end) == Some(&b'=') && !name.contains('-') && sensitive_env_name(name)
                {
                    out.extend_from_slice(&b[i..=name_end]);
                    i = redact_value(b, name_end + 1, &mut out);
                    continue;
                }
                if (name.eq_ignore_ascii_case("bearer") || name.eq_ignore_ascii_case("basic"))
                    && b.get(name_end).is_some_and(|c| *c == b' ' || *c == b'\t')
                {
                    let mut j = name_end;
                    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                        j += 1;
                    }
                    out.extend_from_slice(&b[i..j]);
                    i = redact_value(b, j, &mut out);
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII was cut or inserted, at ASCII boundaries.
    String::from_utf8(out).unwrap_or_else(|_| "[redacted: not UTF-8]".into())
}

/// `scheme://user:secret@host` -> `scheme://user:[redacted]@host`.
fn mask_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let auth_len = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || "'\"`;&|()".contains(c)
            })
            .unwrap_or(tail.len());
        let authority = &tail[..auth_len];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let colon = authority[..at].find(':').expect("checked");
                out.push_str(&authority[..=colon]);
                out.push_str("[redacted]");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[auth_len..];
    }
    out.push_str(rest);
    out
}

/// Whether a form, query, header or JSON field's value must never be
/// recorded. Case-insensitive; `_` and `-` are the same. Sensitive:
/// * names containing `password`, `passwd`, `secret`, `token`,
///   `credential`, `cookie`, `private` or `authorization`;
/// * names ending in `key` (`key`, `api-key`, `X-Api-Key`, `apiKey`);
/// * names with a `-`-separated word `pass`, `pwd`, `auth`, `creds`,
///   `session` or `signature` (`src-creds-pass`, `x-auth-user`);
/// * the value-carrying convox fields `value`, `values`, `env`,
///   `environment` and `params`.
pub fn is_sensitive_field(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    if [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "cookie",
        "private",
        "authorization",
    ]
    .iter()
    .any(|w| n.contains(w))
    {
        return true;
    }
    if n.ends_with("key") {
        return true;
    }
    if n.split('-').any(|w| {
        matches!(
            w,
            "pass" | "pwd" | "auth" | "creds" | "session" | "signature"
        )
    }) {
        return true;
    }
    matches!(
        n.as_str(),
        "value" | "values" | "env" | "environment" | "params"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"psql*", b"psql -h db"));
        assert!(glob_match(b"*secret*", b"echo secret stuff"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(!glob_match(b"psql", b"psql -h db"));
        assert!(!glob_match(b"*psql", b"psql -h db"));
        // `?` is not a wildcard here (see glob_match).
        assert!(glob_match(b"curl *?token=*", b"curl https://h/x?token=abc"));
        assert!(!glob_match(b"a?c", b"abc"));
    }
}
