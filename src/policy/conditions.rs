//! What a grant needs beyond its scope to count: not being past its
//! `expires:` (nor its identity past its own), and the caller's
//! authentication meeting the grant's and its role's `require:` (step-up:
//! a recent multi-factor login; deploy approvals: a CI token claim such as
//! GitHub's `environment`).
//!
//! Both are evaluated per request from [`Facts::now`] and [`Facts::auth`],
//! so a grant lapses without a reload and the engine stays pure: the
//! caller supplies the clock and the credential's facts.

use super::glob::Glob;
use super::{Facts, Grant, Policy, RuleRef, Subject};
use crate::clock::rfc3339;

/// RFC 8176 `amr` values that count as multi-factor unless gateway.yaml
/// `policy.mfa_amr` says otherwise.
pub const DEFAULT_MFA_AMR: &[&str] = &["mfa", "otp", "hwk", "swk", "fpt", "pop"];

/// A `require:` block of a role or grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// The login's `amr` must hold one of [`Policy::mfa_amr`].
    pub mfa: bool,
    /// The login (`auth_time`) must be at most this many seconds old.
    pub max_auth_age: Option<i64>,
    /// Claims of a federated CI token, each a string matching its glob.
    pub claims: Vec<(String, Glob)>,
    pub at: Option<RuleRef>,
}

impl Requirement {
    /// Adds what `other` requires (role inheritance): both must hold.
    pub(crate) fn merge(&mut self, other: &Requirement) {
        self.mfa |= other.mfa;
        self.max_auth_age = match (self.max_auth_age, other.max_auth_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for c in &other.claims {
            if !self.claims.contains(c) {
                self.claims.push(c.clone());
            }
        }
        if self.at.is_none() {
            self.at = other.at.clone();
        }
    }

    /// Whether it asks something of a person's login (never met by CI).
    pub(crate) fn needs_login(&self) -> bool {
        self.mfa || self.max_auth_age.is_some()
    }
}

/// How the caller authenticated, as the credential proved it.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// A CI identity: never satisfies `mfa` or `max_auth_age`.
    pub ci: bool,
    /// The gateway token's `amr` (copied from the ID token at login).
    pub amr: Vec<String>,
    /// The gateway token's `auth_time` (unix seconds).
    pub auth_time: Option<i64>,
    /// The string claims of a verified federated CI token.
    pub claims: Vec<(String, String)>,
    /// The gateway's public URL, for the `rack-gateway login` hint.
    pub login_url: Option<String>,
}

/// Whether something expiring at `expires` still counts at `now`; an
/// unknown clock lets nothing that expires count.
pub(crate) fn live(expires: Option<i64>, now: Option<i64>) -> bool {
    match expires {
        None => true,
        Some(e) => now.is_some_and(|n| n < e),
    }
}

pub(crate) fn expired_reason(s: &Subject) -> String {
    let when = s.expires.map(rfc3339).unwrap_or_default();
    let why = s
        .reason
        .as_deref()
        .map(|r| format!(", reason: {r}"))
        .unwrap_or_default();
    format!(
        "denied: the access of {} expired at {when} ({}{why})",
        s.name, s.at
    )
}

/// `12h`, `90m`, `2d`, `45s`: the largest unit that divides evenly.
pub(crate) fn duration(secs: i64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n && secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// Parses `12h`, `30m`, `2d`, `3600s` or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3_600),
        (i, 'd') => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: i64 = num.parse().ok()?;
    (n > 0).then(|| n.checked_mul(mult)).flatten()
}

impl Policy {
    /// Why `g` does not count for this request's caller, if it does not:
    /// the grant's and then its role's requirement.
    pub(crate) fn requirement_unmet(&self, g: &Grant, f: &Facts<'_>) -> Option<String> {
        let role = &self.roles[g.role];
        [g.require.as_ref(), role.require.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|r| self.unmet(r, g, f))
    }

    fn unmet(&self, r: &Requirement, g: &Grant, f: &Facts<'_>) -> Option<String> {
        let default = Auth::default();
        let auth = f.auth.unwrap_or(&default);
        let role = &self.roles[g.role];
        let at = r.at.as_ref().unwrap_or(&g.at);
        let head = format!("denied: {} on {} ({at})", role.name, g.scope());
        if r.needs_login() {
            let mfa_ok = !r.mfa
                || (!auth.ci && auth.amr.iter().any(|a| self.mfa_amr.iter().any(|m| m == a)));
            let age_ok = r.max_auth_age.is_none_or(|max| {
                !auth.ci && matches!((auth.auth_time, f.now), (Some(t), Some(n)) if n - t <= max)
            });
            if !(mfa_ok && age_ok) {
                let what = match (r.mfa, r.max_auth_age) {
                    (true, Some(a)) => format!("a login with MFA in the last {}", duration(a)),
                    (true, None) => "a login with MFA".to_string(),
                    (false, Some(a)) => format!("a login in the last {}", duration(a)),
                    (false, None) => String::new(),
                };
                if auth.ci {
                    return Some(format!(
                        "{head} needs {what}, which a CI identity never has"
                    ));
                }
                let url = auth.login_url.as_deref().unwrap_or("<gateway url>");
                return Some(format!(
                    "{head} needs {what}: run rack-gateway login {} {url}",
                    f.rack
                ));
            }
        }
        for (name, glob) in &r.claims {
            let ok = auth
                .claims
                .iter()
                .any(|(n, v)| n == name && glob.matches(v));
            if !ok {
                return Some(format!(
                    "{head} needs a CI token whose `{name}` claim matches `{}`",
                    glob.as_str()
                ));
            }
        }
        None
    }

    /// Grants and identities already expired at `now`, for `check`'s
    /// warnings: (where, message).
    pub fn expired(&self, now: i64) -> Vec<(RuleRef, String)> {
        let mut out = Vec::new();
        let subjects = self
            .users
            .values()
            .chain(self.domains.values())
            .chain(self.ci.values());
        for s in subjects {
            if let Some(e) = s.expires.filter(|e| *e <= now) {
                out.push((
                    s.at.clone(),
                    format!(
                        "{} expired at {} and counts for nothing",
                        s.name,
                        rfc3339(e)
                    ),
                ));
            }
            for g in &s.grants {
                if let Some(e) = g.expires.filter(|e| *e <= now) {
                    out.push((
                        g.at.clone(),
                        format!(
                            "grant {} on {} of {} expired at {} and counts for nothing",
                            self.roles[g.role].name,
                            g.scope(),
                            s.name,
                            rfc3339(e)
                        ),
                    ));
                }
            }
        }
        out.sort_by(|a, b| (&a.0.file, a.0.line).cmp(&(&b.0.file, b.0.line)));
        out
    }
}

#[cfg(test)]
mod tests;
