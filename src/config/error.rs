//! The leaves every config reader shares: the error type that points at
//! `file:line`, the strict YAML parser, durations and [`Secret`].
//!
//! Why a separate module: the policy loader and the rate-limit settings
//! parse their own parts of the config repository with these, while the
//! loader in [`crate::config`] calls them back; keeping the leaves here
//! (importing nothing from the crate) is what keeps that from being a cycle.

use std::fmt;
use std::time::Duration;

/// One problem in the configuration, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// One line whatever the message quotes: a YAML value (or a file name
    /// from a Git tree) may hold a newline or another control character,
    /// and those are written escaped (`\n`) so the error stays one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, message) = (OneLine(&self.file), OneLine(&self.message));
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{file}:{l}:{c}: {message}"),
            (Some(l), None) => write!(f, "{file}:{l}: {message}"),
            _ => write!(f, "{file}: {message}"),
        }
    }
}

/// Writes a string with its control characters escaped.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// All problems found while loading a config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Parses one YAML document strictly (duplicate keys and unknown fields are
/// errors, booleans must be `true`/`false`), with a one-line error.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let render = serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        };
        let mut message = e.render_with_options(render);
        let loc = e.location();
        if let Some(l) = loc {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
        }
        ConfigError {
            file: file.to_string(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message: message.lines().next().unwrap_or("invalid YAML").to_string(),
        }
    })
}

/// Parses durations like `500ms`, `10s`, `15m`, `2h`, `1d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{s}` needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (expected e.g. 30s, 15m, 2h)"))?;
    let mult_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit in `{s}` (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(mult_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn an_error_quoting_a_multi_line_value_stays_one_line() {
        let e = ConfigError {
            file: "gateway.yaml".into(),
            line: Some(6),
            column: Some(9),
            message: "listen `1.2.3.4:1#\nnext` is not an address\r\u{1b}[2J".into(),
        };
        assert_eq!(
            e.to_string(),
            "gateway.yaml:6:9: listen `1.2.3.4:1#\\nnext` is not an address\\r\\u{1b}[2J"
        );
        let plain = ConfigError {
            message: "a `quoted` value".into(),
            ..e
        };
        assert_eq!(plain.to_string(), "gateway.yaml:6:9: a `quoted` value");
    }
}
