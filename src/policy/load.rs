//! Loading the policy files of a config repository — `roles/*.yaml`,
//! `users.yaml`, `ci.yaml`, the `policy:` block of gateway.yaml and the
//! policy tests in `tests/*.yaml` — into a compiled [`Policy`], collecting
//! every problem with its file and line.
//!
//! Layout: [`raw`] holds the serde types, [`roles`] the role files,
//! [`section`] the `policy:` block, [`identities`] users.yaml and ci.yaml,
//! [`cases`] the policy tests; this module holds the shared error
//! collector and helpers and runs the steps in order.

mod cases;
mod identities;
mod raw;
mod roles;
mod section;

use std::sync::Arc;

use serde_saphyr::Spanned;

use super::glob::Glob;
use super::{operations, ops_matching, OpSet, Policy, Requirement, RuleRef};
use crate::config::error::{parse_yaml, ConfigError};

pub use identities::{CiToken, FederatedIdentity};
pub(crate) use raw::RawPolicySection;

/// Operations blocked for everyone unless a role is given an exception:
/// rack updates and parameter changes (`PUT /system`), rack JWT minting and
/// key rotation, the kube-API, registry and in-cluster HTTP proxies, and
/// instance key rolls and shells.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "rack update",
    "rack access",
    "rack access key rotate",
    "kubernetes",
    "registry proxy",
    "proxy http",
    "instances keyroll",
    "instances ssh",
    // Build pods send events in-cluster; through the gateway it can only
    // forge (signed) webhook events (rack-semantics.md §6 rule 13).
    "events send",
];

/// A file's text, as read from a config source.
pub(crate) struct File {
    /// Path relative to the config root (`roles/deployer.yaml`).
    pub rel: String,
    /// How to name it in messages.
    pub display: String,
    pub text: String,
}

/// Everything the policy needs from a config repository.
pub(crate) struct Inputs<'a> {
    pub gateway_display: &'a str,
    pub policy_section: Option<RawPolicySection>,
    pub roles: Vec<File>,
    pub users: Option<File>,
    pub ci: Option<File>,
    pub tests: Vec<File>,
    pub racks: Vec<String>,
}

/// The compiled policy plus the CI token table, or every problem found.
pub(crate) struct Loaded {
    pub policy: Policy,
    pub ci_tokens: Vec<CiToken>,
    pub federated: Vec<FederatedIdentity>,
    /// How many policy test cases ran.
    pub cases: usize,
}

/// Collects every problem found while loading, in the order found.
struct Ctx {
    errors: Vec<ConfigError>,
}

impl Ctx {
    /// Ends the load with every problem so far, if there is any.
    fn stop_if_errors(&mut self) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.errors))
        }
    }

    fn err(&mut self, file: &str, loc: Option<serde_saphyr::Location>, msg: impl Into<String>) {
        self.errors.push(ConfigError {
            file: file.to_string(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message: msg.into(),
        });
    }

    /// Resolves operation patterns; `file` names the file in errors, `rel`
    /// in the rule references that reasons quote.
    fn ops(
        &mut self,
        file: &str,
        rel: &str,
        pats: &[Spanned<String>],
        what: &str,
    ) -> (OpSet, Vec<Option<RuleRef>>) {
        let mut set = OpSet::default();
        let mut at = vec![None; operations().len()];
        let rel: Arc<str> = Arc::from(rel);
        for p in pats {
            let m = ops_matching(p.value.trim());
            if m.is_empty() {
                self.err(
                    file,
                    Some(p.referenced),
                    format!(
                        "{what}: `{}` matches no operation (see `rack-gateway routes`)",
                        p.value
                    ),
                );
                continue;
            }
            for (i, slot) in at.iter_mut().enumerate() {
                if m.contains(i) && slot.is_none() {
                    *slot = Some(RuleRef {
                        file: rel.clone(),
                        line: p.referenced.line(),
                    });
                }
            }
            set = set.union(m);
        }
        (set, at)
    }
}

fn parse<T: serde::de::DeserializeOwned + Default>(ctx: &mut Ctx, f: &File) -> Option<T> {
    if f.text.trim().is_empty() {
        return Some(T::default());
    }
    match parse_yaml::<T>(&f.display, &f.text) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.errors.push(e);
            None
        }
    }
}

/// Valid role and CI names.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time
/// (`2026-12-01T14:00:00Z`, `2026-12-01T15:00:00.5+01:00`) to unix seconds.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time, offset) = match s.split_once(['T', 't']) {
        Some((d, t)) => {
            let (t, off) = if let Some(t) = t.strip_suffix(['Z', 'z']) {
                (t, 0)
            } else {
                let i = t.rfind(['+', '-'])?;
                let (h, m) = t[i + 1..].split_once(':')?;
                let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
                if h > 23 || m > 59 || t.len() - i != 6 {
                    return None;
                }
                let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
                (&t[..i], sign * (h * 3600 + m * 60))
            };
            // Fractions of a second are dropped.
            let t = match t.split_once('.') {
                Some((t, frac)) if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) => {
                    t
                }
                Some(_) => return None,
                None => t,
            };
            (d, Some(t), off)
        }
        None => (s, None, 0),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    if d.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let h: i64 = p.next()?.parse().ok()?;
            let mi: i64 = p.next()?.parse().ok()?;
            let se: i64 = p.next()?.parse().ok()?;
            if p.next().is_some() || h > 23 || mi > 59 || se > 60 {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + secs - offset)
}

/// Compiles a `require:` block; `None` (with an error recorded) when it is
/// invalid or empty.
fn requirement(
    ctx: &mut Ctx,
    display: &str,
    rel: &str,
    raw: &Spanned<raw::RawRequire>,
) -> Option<Requirement> {
    let loc = Some(raw.referenced);
    let max_auth_age = match &raw.value.max_auth_age {
        None => None,
        Some(a) => match super::conditions::parse_duration(a) {
            Some(secs) => Some(secs),
            None => {
                ctx.err(
                    display,
                    loc,
                    format!("require.max_auth_age: `{a}` is not a duration (e.g. 12h, 30m, 1d)"),
                );
                return None;
            }
        },
    };
    let claims: Vec<(String, Glob)> = raw
        .value
        .claims
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Glob::new(v)))
        .collect();
    if raw
        .value
        .claims
        .iter()
        .flatten()
        .any(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
    {
        ctx.err(
            display,
            loc,
            "require.claims: claim names and patterns must not be empty",
        );
        return None;
    }
    let r = Requirement {
        mfa: raw.value.mfa.unwrap_or(false),
        max_auth_age,
        claims,
        at: Some(RuleRef {
            file: Arc::from(rel),
            line: raw.referenced.line(),
        }),
    };
    if !r.needs_login() && r.claims.is_empty() {
        ctx.err(
            display,
            loc,
            "require: needs mfa: true, max_auth_age or claims (or remove it)",
        );
        return None;
    }
    Some(r)
}

/// Compiles and validates the policy, then runs the policy tests against it.
pub(crate) fn compile(mut inputs: Inputs<'_>) -> Result<Loaded, Vec<ConfigError>> {
    let mut ctx = Ctx { errors: Vec::new() };
    let mut policy = Policy::default();
    roles::compile(&mut ctx, &mut policy, &inputs.roles);
    let section = inputs.policy_section.take().unwrap_or_default();
    section::compile(&mut ctx, &mut policy, inputs.gateway_display, &section);
    let (ci_tokens, federated) = identities::compile(&mut ctx, &mut policy, &inputs);
    ctx.stop_if_errors()?;
    // Policy tests run only against a policy that loaded cleanly.
    let cases = cases::run_cases(&mut ctx, &policy, &inputs.tests);
    ctx.stop_if_errors()?;
    Ok(Loaded {
        policy,
        ci_tokens,
        federated,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(parse_time("2027-06-30"), Some(1_814_313_600));
        assert_eq!(parse_time("2027-13-01"), None);
        assert_eq!(parse_time("2027-06-30T12:00:00"), None);
        assert_eq!(
            parse_time("2026-12-01T15:00:00+01:00"),
            parse_time("2026-12-01T14:00:00Z")
        );
        assert_eq!(
            parse_time("2026-12-01T09:30:00.250-04:30"),
            parse_time("2026-12-01T14:00:00Z")
        );
        assert_eq!(parse_time("2026-12-01T14:00:00+0100"), None);
        assert_eq!(parse_time("2026-12-01T14:00:00.Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
