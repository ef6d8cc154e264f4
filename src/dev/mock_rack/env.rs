//! The rack's env parser, `structs.Environment.Load` (rack-semantics §3.1),
//! public so the gateway's own parser can be property-tested against it.
//!
//! bufio line splitting (`\n`, one `\r` before it dropped, a lone `\r`
//! kept), a line of 64 KiB or more fails, split at the first `=`, the key
//! trimmed with Go's `strings.TrimSpace` (Unicode White_Space, NBSP
//! included, which is exactly Rust's `char::is_whitespace`), the value
//! kept as-is, lines without `=` and empty keys ignored, the last
//! duplicate wins.

use std::collections::BTreeMap;

/// `bufio.MaxScanTokenSize`: a line (without its `\n`) this long or longer
/// makes `Load` fail.
pub const MAX_ENV_LINE: usize = 64 * 1024;

/// Why `Load` failed; the message is the rack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bufio.Scanner: token too long")]
pub struct EnvTooLong;

/// Parses a release env exactly as the rack does; the map is Go's
/// (unordered, last duplicate wins).
pub fn parse_env(raw: &str) -> Result<BTreeMap<String, String>, EnvTooLong> {
    let mut env = BTreeMap::new();
    for line in scan_lines(raw)? {
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() {
                env.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(env)
}

/// `bufio.ScanLines` over the whole input.
fn scan_lines(raw: &str) -> Result<Vec<&str>, EnvTooLong> {
    let mut lines = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if line.len() >= MAX_ENV_LINE {
            return Err(EnvTooLong);
        }
        lines.push(line.strip_suffix('\r').unwrap_or(line));
        rest = next;
    }
    Ok(lines)
}
