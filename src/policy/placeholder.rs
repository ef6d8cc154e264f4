//! Run placeholders bound to their creator, without a database.
//!
//! An attached `convox run` creates a `sleep N` pod, then execs the real
//! command into it and stops it (convox-api.md §5.1). The rack records no
//! creator (rack-semantics.md §5.4), so without a binding anyone allowed
//! `run` on a service could exec into, or stop, anyone's placeholder.
//!
//! The gateway forwards the placeholder's `Command` as `sleep N.<tag>`: a
//! fractional duration whose 36 digits are a 12-digit nonce followed by 24
//! digits of HMAC-SHA256 over (rack, app, service, identity kind, identity
//! name, nonce). The rack stores the words as container args and reports
//! them back as `command` (`shellquote.Join`, a no-op on digits and dots),
//! so exec and stop can verify the tag against the caller. The key is
//! derived from the rack password, which only the gateway holds; a client
//! `run` whose command has a tag-shaped fraction is refused, so a valid tag
//! can only come from the gateway.
//!
//! The fraction adds under a second to the sleep. Checked by running
//! them under `time`: GNU coreutils 9.1 `sleep` and BusyBox 1.35.0 `sleep`
//! (Debian 12 builds; BusyBox parses fractions with `strtod` when built
//! with FEATURE_FLOAT_SLEEP, as distributions do) both accept
//! `sleep 1.<42 digits>` and sleep for one second, and both reject
//! trailing garbage (`0.5abc`). A `sleep` that takes integers only would
//! fail the placeholder; the attached run then fails visibly, not open.

use ring::hmac;
use ring::rand::SecureRandom;

use super::command::{is_run_placeholder, split};
use super::SubjectKind;

/// Digits of the nonce, then of the truncated MAC (about 80 bits).
const NONCE_DIGITS: usize = 12;
const MAC_DIGITS: usize = 24;
/// The length of a tag: the whole fractional part of the duration.
pub(crate) const TAG_DIGITS: usize = NONCE_DIGITS + MAC_DIGITS;

/// Domain separation for the key derived from the rack password.
const KEY_LABEL: &[u8] = b"rack-gateway run-placeholder tag v1";

/// The MAC key of one rack: HMAC-SHA256(rack password, [`KEY_LABEL`]).
pub(crate) struct TagKey(hmac::Key);

impl TagKey {
    pub(crate) fn from_rack_password(password: &str) -> TagKey {
        let root = hmac::Key::new(hmac::HMAC_SHA256, password.as_bytes());
        let derived = hmac::sign(&root, KEY_LABEL);
        TagKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

/// Who a placeholder is bound to, and where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub rack: &'a str,
    pub app: &'a str,
    pub service: &'a str,
    pub kind: SubjectKind,
    /// The identity's own name (a person's email, not a domain rule).
    pub identity: &'a str,
}

/// Whose placeholder a target process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Offline questions (`can`, policy test cases) have no tag: a
    /// `sleep N` process there stands for the caller's own attached run.
    AssumedCaller,
    /// The tag verifies for the caller.
    Caller,
    /// Untagged, or tagged for someone else (or not a placeholder).
    Other,
}

fn mac_digits(key: &TagKey, b: &Binding<'_>, nonce: &str) -> String {
    let kind = match b.kind {
        SubjectKind::User => "user",
        SubjectKind::Ci => "ci",
    };
    let mut ctx = hmac::Context::with_key(&key.0);
    // Length-prefixed, so no two field lists give the same message.
    for field in [b.rack, b.app, b.service, kind, b.identity, nonce] {
        ctx.update(&(field.len() as u32).to_be_bytes());
        ctx.update(field.as_bytes());
    }
    let mac = ctx.sign();
    let mut first = [0u8; 16];
    first.copy_from_slice(&mac.as_ref()[..16]);
    format!(
        "{:0width$}",
        u128::from_be_bytes(first) % 10u128.pow(MAC_DIGITS as u32),
        width = MAC_DIGITS
    )
}

/// A fresh nonce, below 10^12.
pub(crate) fn fresh_nonce() -> u64 {
    let mut b = [0u8; 8];
    // The system RNG failing is not recoverable in any useful way; a
    // fixed nonce still yields a valid (if linkable) tag.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_be_bytes(b) % 10u64.pow(NONCE_DIGITS as u32)
}

/// The `Command` to forward for a client's plain `sleep N` placeholder,
/// tagged for `binding`; `None` when `command` is not one.
pub(crate) fn tagged_command(
    key: &TagKey,
    binding: &Binding<'_>,
    command: &str,
    nonce: u64,
) -> Option<String> {
    let argv = split(command).ok()?;
    if !is_run_placeholder(&argv) {
        return None;
    }
    let nonce = format!("{nonce:0width$}", width = NONCE_DIGITS);
    let mac = mac_digits(key, binding, &nonce);
    Some(format!("sleep {}.{nonce}{mac}", argv[1]))
}

/// The nonce and MAC of a tagged placeholder `["sleep", "N.<tag>"]`.
fn parse_tagged(argv: &[String]) -> Option<(&str, &str)> {
    let [sleep, duration] = argv else {
        return None;
    };
    let (whole, tag) = duration.split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = sleep == "sleep"
        && !whole.is_empty()
        && whole.len() <= 9
        && digits(whole)
        && tag.len() == TAG_DIGITS
        && digits(tag);
    ok.then(|| tag.split_at(NONCE_DIGITS))
}

/// Equal lengths and bytes, in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a process's words are an attached run's placeholder, tagged
/// or not.
pub(crate) fn is_placeholder(argv: &[String]) -> bool {
    is_run_placeholder(argv) || parse_tagged(argv).is_some()
}

/// A placeholder's words without the tag: `sleep N`, as the client sent
/// it; `None` for anything that is not a placeholder.
pub(crate) fn untagged(argv: &[String]) -> Option<String> {
    if is_run_placeholder(argv) {
        return Some(format!("sleep {}", argv[1]));
    }
    parse_tagged(argv)?;
    let (whole, _) = argv[1].split_once('.')?;
    Some(format!("sleep {whole}"))
}

/// Whether a process whose `command` the rack reports is the placeholder
/// of `binding`'s identity.
pub(crate) fn owner(key: &TagKey, binding: &Binding<'_>, command: &str) -> Owner {
    let Ok(argv) = split(command) else {
        return Owner::Other;
    };
    match parse_tagged(&argv) {
        Some((nonce, mac)) if ct_eq(mac_digits(key, binding, nonce).as_bytes(), mac.as_bytes()) => {
            Owner::Caller
        }
        _ => Owner::Other,
    }
}

/// Whether a client command imitates a tag: `sleep` with an argument whose
/// fractional part has a tag's length of digits or more. Only the gateway
/// may create such a process.
pub(crate) fn imitates_tag(argv: &[String]) -> bool {
    let Some((first, args)) = argv.split_first() else {
        return false;
    };
    let sleep = first == "sleep" || first.ends_with("/sleep");
    sleep
        && args.iter().any(|a| {
            a.split('.')
                .skip(1)
                .any(|frac| frac.bytes().take_while(u8::is_ascii_digit).count() >= TAG_DIGITS)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Binding<'static> {
        Binding {
            rack: "staging",
            app: "myapp",
            service: "command",
            kind: SubjectKind::User,
            identity: "alice@example.com",
        }
    }

    fn words(s: &str) -> Vec<String> {
        split(s).unwrap()
    }

    #[test]
    fn tags_verify_only_for_their_binding() {
        let key = TagKey::from_rack_password("pw");
        let cmd = tagged_command(&key, &alice(), "sleep 3600", 42).unwrap();
        let (whole, tag) = cmd.strip_prefix("sleep ").unwrap().split_once('.').unwrap();
        assert_eq!(whole, "3600");
        assert_eq!(tag.len(), TAG_DIGITS);
        assert!(tag.starts_with("000000000042"), "{cmd}");
        assert!(is_placeholder(&words(&cmd)));
        assert_eq!(untagged(&words(&cmd)).as_deref(), Some("sleep 3600"));
        assert_eq!(untagged(&words("sleep 60")).as_deref(), Some("sleep 60"));
        assert_eq!(untagged(&words("sleep 60 x")), None);
        assert_eq!(owner(&key, &alice(), &cmd), Owner::Caller);
        // The rack's shellquote.Join leaves the words as they are; extra
        // spacing in a report still splits to the same words.
        assert_eq!(owner(&key, &alice(), &format!("  {cmd} ")), Owner::Caller);
        for other in [
            Binding {
                identity: "bob@example.com",
                ..alice()
            },
            Binding {
                kind: SubjectKind::Ci,
                ..alice()
            },
            Binding {
                service: "web",
                ..alice()
            },
            Binding {
                app: "billing",
                ..alice()
            },
            Binding {
                rack: "production",
                ..alice()
            },
        ] {
            assert_eq!(owner(&key, &other, &cmd), Owner::Other, "{other:?}");
        }
        // Another rack password, a changed digit, a plain placeholder.
        assert_eq!(
            owner(&TagKey::from_rack_password("pw2"), &alice(), &cmd),
            Owner::Other
        );
        let mut flipped = cmd.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(owner(&key, &alice(), &flipped), Owner::Other);
        assert_eq!(owner(&key, &alice(), "sleep 3600"), Owner::Other);
        assert_eq!(owner(&key, &alice(), &format!("{cmd} x")), Owner::Other);
    }

    #[test]
    fn nonces_differ_and_only_plain_placeholders_are_tagged() {
        let key = TagKey::from_rack_password("pw");
        let a = tagged_command(&key, &alice(), "sleep 60", fresh_nonce()).unwrap();
        let b = tagged_command(&key, &alice(), "sleep 60", fresh_nonce()).unwrap();
        assert_ne!(a, b);
        for not in ["bin/web", "sleep 1.5", "sleep 60 x", "'sleep 60'"] {
            assert_eq!(tagged_command(&key, &alice(), not, 1), None, "{not}");
        }
        assert!(tagged_command(&key, &alice(), "sleep '60'", 1).is_some());
    }

    #[test]
    fn imitations_are_recognised() {
        let tag = "1".repeat(TAG_DIGITS);
        for fake in [
            format!("sleep 3600.{tag}"),
            format!("sleep 0.{tag}9"),
            format!("/bin/sleep 5.{tag}"),
            format!("sleep 1 2.{tag}"),
        ] {
            assert!(imitates_tag(&words(&fake)), "{fake}");
        }
        for fine in [
            "sleep 3600".to_string(),
            "sleep 1.5".to_string(),
            format!("sleep 3.{}", &tag[1..]),
            format!("echo 1.{tag}"),
        ] {
            assert!(!imitates_tag(&words(&fine)), "{fine}");
        }
    }
}
