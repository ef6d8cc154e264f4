//! App env as the rack reads it, and the decision on what a release
//! creation does to it (rack-semantics.md §3).
//!
//! The rack parses env with `structs.Environment.Load`: lines split like
//! `bufio.ScanLines`, each at its first `=`, the key TrimSpace'd, the value
//! kept as is, lines without `=` ignored, the last duplicate winning. A
//! gateway that compared raw keys would let `DATABASE_URL =evil` overwrite
//! a protected key while the audit said `add:DATABASE_URL `. So a posted
//! env is parsed strictly (anything the rack could read two ways is
//! refused) and the decision is taken on the env the rack will end up
//! with, diffed against the **active** release: with `env` absent the rack
//! copies the parent (or newest) release, so a rollback that restores old
//! protected values is a change like any other.

use std::collections::BTreeMap;

use crate::rack::mask::PLACEHOLDER;

/// `bufio.Scanner`'s token limit: a line this long makes the rack fail.
const MAX_LINE: usize = 64 * 1024;

/// Who may change what in an app's env.
pub(crate) struct EnvRules<'a> {
    /// Whether a key is protected in this app.
    pub protected: &'a dyn Fn(&str) -> bool,
    /// The identity may change and remove protected keys.
    pub may_change_protected: bool,
    /// Key patterns the identity may change; `None` is any key.
    pub allowed_key: Option<&'a dyn Fn(&str) -> bool>,
    /// The patterns, for messages.
    pub allowed_desc: &'a str,
}

/// The key names (never values) a release creation changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EnvChanges {
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

/// Why an env (or a change to it) is refused.
/// Public (with [`rack_env`] and [`posted_env`]) for the fuzz targets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("env line {0} is not KEY=VALUE")]
    Malformed(usize),
    #[error("env line {0} contains a carriage return (the rack would read it differently)")]
    CarriageReturn(usize),
    #[error("env line {0} is 64 KiB or longer (the rack refuses it)")]
    TooLong(usize),
    #[error("env line {line}: key `{key}` has surrounding whitespace (the rack would read `{}`)", key.trim())]
    Whitespace { line: usize, key: String },
    #[error("env line {line}: key `{key}` is not a valid name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadKey { line: usize, key: String },
    #[error("env key {0} is given more than once (the rack would keep only the last)")]
    Duplicate(String),
    #[error("{0}={PLACEHOLDER} keeps a value, but the parent release has no {0}")]
    PlaceholderWithoutValue(String),
    #[error(
        "env key {0} is protected in this app; changing it needs the `env protected` permission"
    )]
    Protected(String),
    #[error("env key {key} may not be changed by this identity (it may change only {allowed})")]
    KeyNotAllowed { key: String, allowed: String },
}

impl EnvError {
    /// A refusal by policy (403) rather than a malformed env (400).
    pub(crate) fn is_denial(&self) -> bool {
        matches!(
            self,
            EnvError::Protected(_) | EnvError::KeyNotAllowed { .. }
        )
    }
}

/// The lines of `env` as `bufio.ScanLines` yields them: split at `\n`,
/// one `\r` before it (or at the end) dropped; a lone `\r` is no break.
fn scan_lines(env: &str) -> impl Iterator<Item = &str> {
    let body = env.strip_suffix('\n').unwrap_or(env);
    let empty = env.is_empty();
    body.split('\n')
        .filter(move |_| !empty)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// The env exactly as the rack reads it (`Environment.Load`).
pub fn rack_env(env: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for (i, line) in scan_lines(env).enumerate() {
        if line.len() >= MAX_LINE {
            return Err(EnvError::TooLong(i + 1));
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        // Go's strings.TrimSpace trims Unicode White_Space, as str::trim.
        let k = k.trim();
        if !k.is_empty() {
            out.insert(k.to_string(), v.to_string());
        }
    }
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A posted env, refused wherever the rack could read it differently than
/// a plain `KEY=VALUE` per line: a `\r`, a line without `=` (blank lines
/// are fine), a key with surrounding whitespace or outside
/// `[A-Za-z_][A-Za-z0-9_]*`, a key given twice, a line of 64 KiB or more.
pub fn posted_env(env: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for (i, line) in env.split('\n').enumerate() {
        let n = i + 1;
        if line.contains('\r') {
            return Err(EnvError::CarriageReturn(n));
        }
        if line.len() >= MAX_LINE - 1 {
            return Err(EnvError::TooLong(n));
        }
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(EnvError::Malformed(n));
        };
        if k.trim() != k {
            return Err(EnvError::Whitespace {
                line: n,
                key: k.to_string(),
            });
        }
        if !valid_key(k) {
            return Err(EnvError::BadKey {
                line: n,
                key: k.chars().take(40).collect(),
            });
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(EnvError::Duplicate(k.to_string()));
        }
    }
    Ok(out)
}

/// The releases a release creation's env is decided against.
pub(crate) struct Releases<'a> {
    /// The env the rack forks from: `parent-release`'s, else the newest
    /// release's. It is what `convox env` showed (masked), so placeholders
    /// are restored from it, and what the rack copies when no `env` is
    /// posted.
    pub base: &'a str,
    /// The env of the active release, which the result is diffed against.
    pub active: &'a str,
}

/// Decides what a release creation does to the env: `posted` (the form's
/// `env`; `Some("")` removes everything) or, when absent, the base env the
/// rack copies. Returns the env to forward (when one was posted:
/// placeholders restored, protected keys the identity may not remove
/// kept) and the key names that change against the active release. Every
/// changed, added or removed key must be allowed by `rules`.
pub(crate) fn release_env(
    posted: Option<&str>,
    releases: Releases<'_>,
    rules: &EnvRules<'_>,
) -> Result<(Option<String>, EnvChanges), EnvError> {
    let base = rack_env(releases.base)?;
    let active = rack_env(releases.active)?;
    let may_touch = |key: &str| -> Result<(), EnvError> {
        if (rules.protected)(key) && !rules.may_change_protected {
            return Err(EnvError::Protected(key.to_string()));
        }
        if let Some(ok) = rules.allowed_key {
            if !ok(key) {
                return Err(EnvError::KeyNotAllowed {
                    key: key.to_string(),
                    allowed: rules.allowed_desc.to_string(),
                });
            }
        }
        Ok(())
    };
    let (result, forward) = match posted {
        Some(text) => {
            let mut out = BTreeMap::new();
            for (k, v) in posted_env(text)? {
                let value = if v == PLACEHOLDER {
                    match base.get(&k) {
                        Some(o) => o.clone(),
                        None => return Err(EnvError::PlaceholderWithoutValue(k)),
                    }
                } else {
                    v
                };
                out.insert(k, value);
            }
            (out, true)
        }
        None => (base.clone(), false),
    };
    let mut out = result;
    let mut changes = EnvChanges::default();
    for (k, v) in &out {
        match active.get(k) {
            Some(o) if o == v => {}
            Some(_) => {
                may_touch(k)?;
                changes.changed.push(k.clone());
            }
            None => {
                may_touch(k)?;
                changes.added.push(k.clone());
            }
        }
    }
    for k in active.keys() {
        if out.contains_key(k) {
            continue;
        }
        if forward && (rules.protected)(k) && !rules.may_change_protected {
            changes.kept.push(k.clone());
            continue;
        }
        may_touch(k)?;
        changes.removed.push(k.clone());
    }
    for k in &changes.kept {
        out.insert(k.clone(), active[k].clone());
    }
    let env = forward.then(|| {
        out.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok((env, changes))
}

#[cfg(test)]
mod tests;
