//! Who may sign policy commits: the OpenSSH `allowed_signers` file
//! (`principals [options] keytype base64 [comment]`), parsed strictly, and
//! the check of a commit's SSH signature against it.

use std::path::Path;

use ssh_key::{HashAlg, PublicKey, SshSig};

use super::NAMESPACE;
use crate::policy::glob::glob_match;

/// Who may sign policy commits, in the OpenSSH `allowed_signers` format
/// (what `gpg.ssh.allowedSignersFile` points at):
/// `principals [options] keytype base64 [comment]`.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    entries: Vec<Signer>,
}

#[derive(Debug, Clone)]
struct Signer {
    principals: String,
    /// The `namespaces="…"` pattern list, when present.
    namespaces: Option<String>,
    key: ssh_key::public::KeyData,
}

/// Why a signature did not verify, before the commit id is attached.
pub(super) enum SigProblem {
    Unsupported(&'static str),
    Bad(String),
    Untrusted(String),
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<Self, String> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{display}: cannot read: {e}"))?;
        Self::parse(&text, &display)
    }

    /// Parses the file's text; errors read `file:line: what is wrong`.
    pub fn parse(text: &str, display: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let signer = parse_signer(line).map_err(|e| format!("{display}:{}: {e}", i + 1))?;
            entries.push(signer);
        }
        if entries.is_empty() {
            return Err(format!(
                "{display}: no signers (every commit would be refused)"
            ));
        }
        Ok(AllowedSigners { entries })
    }

    /// Checks an armored signature over `signed`; on success returns the
    /// matching line's principals and the key's fingerprint.
    pub(super) fn verify(
        &self,
        signature: &[u8],
        signed: &[u8],
    ) -> Result<(String, String), SigProblem> {
        let text = std::str::from_utf8(signature)
            .map_err(|_| SigProblem::Bad("the signature is not text".into()))?;
        let text = text.trim();
        if text.starts_with("-----BEGIN PGP SIGNATURE-----") {
            return Err(SigProblem::Unsupported("an OpenPGP"));
        }
        if text.starts_with("-----BEGIN SIGNED MESSAGE-----") {
            return Err(SigProblem::Unsupported("an X.509"));
        }
        if !text.starts_with("-----BEGIN SSH SIGNATURE-----") {
            return Err(SigProblem::Unsupported("an unknown kind of"));
        }
        let sig = SshSig::from_pem(text)
            .map_err(|e| SigProblem::Bad(format!("malformed SSH signature: {e}")))?;
        if sig.namespace() != NAMESPACE {
            return Err(SigProblem::Bad(format!(
                "made for namespace `{}`, not `{NAMESPACE}`",
                sig.namespace()
            )));
        }
        let key = sig.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let signer = self
            .entries
            .iter()
            .find(|s| &s.key == key && s.allows_namespace(NAMESPACE))
            .ok_or_else(|| SigProblem::Untrusted(fingerprint.clone()))?;
        PublicKey::from(key.clone())
            .verify(NAMESPACE, signed, &sig)
            .map_err(|e| SigProblem::Bad(format!("does not verify: {e}")))?;
        Ok((signer.principals.clone(), fingerprint))
    }
}

impl Signer {
    fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|list| match_pattern_list(list, namespace))
    }
}

/// One `principals [options] keytype base64 [comment]` line.
fn parse_signer(line: &str) -> Result<Signer, String> {
    const SHAPE: &str = "expected `principals [options] keytype base64-key [comment]`";
    let (principals, rest) = next_field(line);
    let (second, rest) = next_field(rest);
    if second.is_empty() {
        return Err(SHAPE.into());
    }
    let (options, keytype, rest) = if is_key_type(second) {
        (None, second, rest)
    } else {
        let (keytype, rest) = next_field(rest);
        if !is_key_type(keytype) {
            // Either the options are followed by a bad key type, or there
            // are no options and the second field is the bad key type.
            let looks_like_options = second.contains('=') || second.contains(',');
            let bad = if looks_like_options || keytype.is_empty() {
                keytype
            } else {
                second
            };
            return Err(format!("unknown key type `{bad}`"));
        }
        (Some(second), keytype, rest)
    };
    let (base64, _comment) = next_field(rest);
    if keytype.is_empty() || base64.is_empty() {
        return Err(SHAPE.into());
    }
    let principals = unquote(principals);
    if principals.is_empty() {
        return Err("empty principals".into());
    }
    let namespaces = match options {
        Some(o) => parse_options(o)?,
        None => None,
    };
    let key = PublicKey::from_openssh(&format!("{keytype} {base64}"))
        .map_err(|e| format!("invalid {keytype} key: {e}"))?;
    if key.algorithm().as_str() != keytype {
        return Err(format!(
            "the key is {}, but the line says {keytype}",
            key.algorithm().as_str()
        ));
    }
    Ok(Signer {
        principals: principals.to_string(),
        namespaces,
        key: key.key_data().clone(),
    })
}

/// The options field: only `namespaces="…"` is understood. Anything else is
/// an error rather than ignored, because ignoring a restriction such as
/// `valid-before` would trust a key longer than its owner meant to.
fn parse_options(options: &str) -> Result<Option<String>, String> {
    let mut namespaces = None;
    for option in split_outside_quotes(options, ',') {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", _) => {
                return Err(
                    "cert-authority lines are not supported (commits signed with \
                            certificates are not verified); list the signing keys themselves"
                        .into(),
                )
            }
            ("namespaces", Some(v)) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                namespaces = Some(v[1..v.len() - 1].to_string());
            }
            ("namespaces", _) => {
                return Err("namespaces needs a quoted list, e.g. namespaces=\"git\"".into())
            }
            ("valid-after" | "valid-before", _) => {
                return Err(format!("option `{name}` is not supported"));
            }
            _ => return Err(format!("unknown option `{option}`")),
        }
    }
    Ok(namespaces)
}

fn is_key_type(s: &str) -> bool {
    s.parse::<ssh_key::Algorithm>().is_ok()
}

/// Splits off the first whitespace-separated field; double quotes protect
/// whitespace inside a field.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// OpenSSH pattern-list semantics: comma-separated `*`/`?` wildcards, a
/// leading `!` negates, and any matching negation wins.
///
/// The wildcards are the policy's own globs: OpenSSH matches bytes and
/// [`glob_match`] matches characters, which agree whenever the value is
/// ASCII, and the only value ever matched here is the namespace `git`.
fn match_pattern_list(list: &str, value: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',').map(str::trim) {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob_match(negated, value) {
                return false;
            }
        } else if glob_match(pattern, value) {
            matched = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINuWrxcwwAMbBpYO2B5mJvKomXxR4yxclvmHNWEZfX65";

    fn err(text: &str) -> String {
        AllowedSigners::parse(text, "signers").unwrap_err()
    }

    #[test]
    fn allowed_signers_parse_plain_and_with_namespaces() {
        let text = format!(
            "# policy signers\n\nalice@example.com {ED25519} alice laptop\n\
             \"bob@example.com,carol@example.com\" namespaces=\"file,git\" {ED25519}\n"
        );
        let s = AllowedSigners::parse(&text, "signers").unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].principals, "alice@example.com");
        assert_eq!(s.entries[0].namespaces, None);
        assert_eq!(s.entries[1].principals, "bob@example.com,carol@example.com");
        assert_eq!(s.entries[1].namespaces.as_deref(), Some("file,git"));
        assert!(s.entries[1].allows_namespace("git"));
    }

    #[test]
    fn allowed_signers_errors_name_file_and_line() {
        assert_eq!(
            err(&format!("# c\nalice cert-authority {ED25519}\n")),
            "signers:2: cert-authority lines are not supported (commits signed with \
             certificates are not verified); list the signing keys themselves"
        );
        assert_eq!(
            err("\n\nalice ssh-ed25519\n"),
            "signers:3: expected `principals [options] keytype base64-key [comment]`"
        );
        assert_eq!(
            err("alice ssh-ed25519 AAAA-not-base64\n"),
            "signers:1: invalid ssh-ed25519 key: Base64 encoding error: invalid Base64 encoding"
        );
        assert_eq!(
            err("alice ssh-ed2559 AAAA\n"),
            "signers:1: unknown key type `ssh-ed2559`"
        );
        assert_eq!(
            err(&format!("alice valid-before=\"20300101\" {ED25519}\n")),
            "signers:1: option `valid-before` is not supported"
        );
        assert_eq!(
            err(&format!("alice namespaces=git {ED25519}\n")),
            "signers:1: namespaces needs a quoted list, e.g. namespaces=\"git\""
        );
        assert_eq!(
            err(&format!("alice restrict {ED25519}\n")),
            "signers:1: unknown option `restrict`"
        );
        assert_eq!(
            err(&ED25519.replacen("ssh-ed25519", "alice ecdsa-sha2-nistp256", 1)),
            "signers:1: invalid ecdsa-sha2-nistp256 key: unknown algorithm"
        );
        assert_eq!(
            err("# only comments\n\n"),
            "signers: no signers (every commit would be refused)"
        );
    }

    #[test]
    fn namespace_pattern_lists_follow_openssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("file,g?t", "git"));
        assert!(match_pattern_list("*", "git"));
        assert!(!match_pattern_list("*,!git", "git"));
        assert!(!match_pattern_list("file", "git"));
        assert!(!match_pattern_list("gi", "git"));
    }
}
