//! Loading the policy files of a config repository — `roles/*.yaml`,
//! `users.yaml`, `ci.yaml`, the `policy:` block of gateway.yaml and the
//! policy tests in `tests/*.yaml` — into a compiled [`Policy`], collecting
//! every problem with its file and line.
//!
//! Layout: [`raw`] holds the serde types, [`identities`] users.yaml and
//! ci.yaml, [`cases`] the policy tests; this module compiles roles and the
//! `policy:` block and drives the rest.

mod cases;
mod identities;
mod raw;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::command::CommandPattern;
use super::glob::Glob;
use super::{
    operations, ops_matching, CommandRule, Exception, OpSet, Policy, ProtectedEnv, Requirement,
    Role, RuleRef, PERMISSIONS, RESTRICTED_RUN_HEADERS,
};
use crate::config::error::{parse_yaml, ConfigError};
use raw::RawRole;

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

struct Ctx {
    errors: Vec<ConfigError>,
}

impl Ctx {
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
pub(crate) fn compile(inputs: Inputs<'_>) -> Result<Loaded, Vec<ConfigError>> {
    let mut ctx = Ctx { errors: Vec::new() };
    let mut policy = Policy::default();

    // Roles: parse each file, then resolve inheritance.
    let mut raw_roles: Vec<(String, &File, RawRole)> = Vec::new();
    for f in &inputs.roles {
        let stem = f
            .rel
            .rsplit('/')
            .next()
            .unwrap_or(&f.rel)
            .trim_end_matches(".yaml")
            .to_string();
        if !valid_name(&stem) {
            ctx.err(
                &f.display,
                None,
                format!("role file name `{stem}` must be lower-case letters, digits, - or _"),
            );
            continue;
        }
        if let Some(r) = parse::<RawRole>(&mut ctx, f) {
            raw_roles.push((stem, f, r));
        }
    }
    let names: HashMap<String, usize> = raw_roles
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.clone(), i))
        .collect();
    // Inheritance order: a depth-first walk that reports undefined parents
    // and cycles.
    let mut order: Vec<usize> = Vec::new();
    let mut state = vec![0u8; raw_roles.len()]; // 0 new, 1 visiting, 2 done
    fn visit(
        i: usize,
        raw: &[(String, &File, RawRole)],
        names: &HashMap<String, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        ctx: &mut Ctx,
    ) -> bool {
        match state[i] {
            2 => return true,
            1 | 3 => return false,
            _ => {}
        }
        state[i] = 1;
        let (name, file, role) = &raw[i];
        let mut ok = true;
        for p in role.inherits.iter().flatten() {
            match names.get(&p.value) {
                None => {
                    ctx.err(
                        &file.display,
                        Some(p.referenced),
                        format!("role `{name}` inherits undefined role `{}`", p.value),
                    );
                    ok = false;
                }
                Some(&j) => {
                    if !visit(j, raw, names, state, order, ctx) {
                        if state[j] == 1 {
                            ctx.err(
                                &file.display,
                                Some(p.referenced),
                                format!(
                                    "role `{name}` inherits `{}`, which forms a cycle",
                                    p.value
                                ),
                            );
                        }
                        ok = false;
                    }
                }
            }
        }
        state[i] = if ok { 2 } else { 3 };
        if ok {
            order.push(i);
        }
        ok
    }
    for i in 0..raw_roles.len() {
        visit(i, &raw_roles, &names, &mut state, &mut order, &mut ctx);
    }
    let mut compiled: Vec<Option<Role>> = vec![None; raw_roles.len()];
    for &i in &order {
        let (name, file, raw) = &raw_roles[i];
        let rel: Arc<str> = Arc::from(file.rel.as_str());
        let (mut allow, mut allow_at) = ctx.ops(
            &file.display,
            &file.rel,
            raw.allow.as_deref().unwrap_or(&[]),
            "allow",
        );
        let (mut deny, mut deny_at) = ctx.ops(
            &file.display,
            &file.rel,
            raw.deny.as_deref().unwrap_or(&[]),
            "deny",
        );
        let mut commands_allow = Vec::new();
        let mut commands_deny = Vec::new();
        if let Some(c) = &raw.commands {
            for (map, out) in [
                (&c.allow, &mut commands_allow),
                (&c.deny, &mut commands_deny),
            ] {
                for (service, list) in map.iter().flatten() {
                    if service.is_empty() {
                        ctx.err(
                            &file.display,
                            Some(list.referenced),
                            "empty service name in commands",
                        );
                    }
                    for p in &list.value {
                        match CommandPattern::parse(&p.value) {
                            Ok(pattern) => out.push(CommandRule {
                                service: Glob::new(service),
                                pattern,
                                at: RuleRef {
                                    file: rel.clone(),
                                    line: list.referenced.line(),
                                },
                            }),
                            Err(e) => ctx.err(
                                &file.display,
                                Some(p.referenced),
                                format!("command pattern `{}`: {e}", p.value),
                            ),
                        }
                    }
                }
            }
        }
        let mut run_headers = Vec::new();
        for h in raw.run_headers.iter().flatten() {
            let lower = h.value.to_ascii_lowercase();
            if !RESTRICTED_RUN_HEADERS.contains(&lower.as_str()) {
                ctx.err(
                    &file.display,
                    Some(h.referenced),
                    format!("run_headers: `{}` is not a restricted run header (one of Image, Volumes, Environment, Privileged, Node-Labels, System-Critical)", h.value),
                );
                continue;
            }
            run_headers.push((
                lower,
                RuleRef {
                    file: rel.clone(),
                    line: h.referenced.line(),
                },
            ));
        }
        let mut permissions: Vec<(&'static str, RuleRef)> = Vec::new();
        for p in raw.permissions.iter().flatten() {
            let name = p.value.trim();
            match PERMISSIONS.iter().find(|k| **k == name) {
                Some(k) => permissions.push((
                    k,
                    RuleRef {
                        file: rel.clone(),
                        line: p.referenced.line(),
                    },
                )),
                None => ctx.err(
                    &file.display,
                    Some(p.referenced),
                    format!(
                        "permissions: `{}` is not a permission (one of {})",
                        p.value,
                        PERMISSIONS.join(", ")
                    ),
                ),
            }
        }
        let mut env_keys: Option<Vec<(Glob, RuleRef)>> = raw.env_keys.as_ref().map(|list| {
            list.iter()
                .map(|k| {
                    (
                        Glob::new(k.value.trim()),
                        RuleRef {
                            file: rel.clone(),
                            line: k.referenced.line(),
                        },
                    )
                })
                .collect()
        });
        for k in raw.env_keys.iter().flatten() {
            if k.value.trim().is_empty() || k.value.contains(['=', '\n']) {
                ctx.err(
                    &file.display,
                    Some(k.referenced),
                    format!("env_keys: `{}` is not an env key pattern", k.value),
                );
            }
        }
        let mut require = raw
            .require
            .as_ref()
            .and_then(|r| requirement(&mut ctx, &file.display, &file.rel, r));
        for p in raw.inherits.iter().flatten() {
            let Some(parent) = names.get(&p.value).and_then(|&j| compiled[j].clone()) else {
                continue;
            };
            if let Some(pr) = &parent.require {
                require.get_or_insert_with(Requirement::default).merge(pr);
            }
            for k in 0..operations().len() {
                if allow_at[k].is_none() {
                    allow_at[k] = parent.allow_at[k].clone();
                }
                if deny_at[k].is_none() {
                    deny_at[k] = parent.deny_at[k].clone();
                }
            }
            allow = allow.union(parent.allow);
            deny = deny.union(parent.deny);
            commands_allow.extend(parent.commands_allow.iter().cloned());
            commands_deny.extend(parent.commands_deny.iter().cloned());
            run_headers.extend(parent.run_headers.iter().cloned());
            for perm in &parent.permissions {
                if !permissions.iter().any(|(n, _)| *n == perm.0) {
                    permissions.push(perm.clone());
                }
            }
            if let Some(pk) = &parent.env_keys {
                env_keys
                    .get_or_insert_with(Vec::new)
                    .extend(pk.iter().cloned());
            }
        }
        compiled[i] = Some(Role {
            name: name.clone(),
            file: rel,
            description: raw.description.clone().unwrap_or_default(),
            allow,
            allow_at,
            deny,
            deny_at,
            commands_allow,
            commands_deny,
            run_headers,
            permissions,
            env_keys,
            require,
            inherits: raw
                .inherits
                .iter()
                .flatten()
                .map(|p| p.value.clone())
                .collect(),
        });
    }
    for role in compiled.into_iter().flatten() {
        policy
            .role_index
            .insert(role.name.clone(), policy.roles.len());
        policy.roles.push(role);
    }

    // Globally blocked operations and exceptions.
    let section = inputs.policy_section.unwrap_or_default();
    match &section.blocked {
        None => {
            for op in DEFAULT_BLOCKED {
                policy.blocked = policy.blocked.union(ops_matching(op));
            }
        }
        Some(list) => {
            let (set, at) = ctx.ops(
                inputs.gateway_display,
                "gateway.yaml",
                &list.value,
                "policy.blocked",
            );
            policy.blocked = set;
            policy.blocked_at = at;
        }
    }
    for e in section.exceptions.iter().flatten() {
        let Some(&role) = policy.role_index.get(&e.value.role) else {
            ctx.err(
                inputs.gateway_display,
                Some(e.referenced),
                format!("policy.exceptions: undefined role `{}`", e.value.role),
            );
            continue;
        };
        let mut ops = OpSet::default();
        for o in &e.value.operations {
            let m = ops_matching(o);
            if m.is_empty() {
                ctx.err(
                    inputs.gateway_display,
                    Some(e.referenced),
                    format!("policy.exceptions: `{o}` matches no operation"),
                );
            }
            ops = ops.union(m);
        }
        policy.exceptions.push(Exception {
            role,
            ops,
            at: RuleRef {
                file: Arc::from("gateway.yaml"),
                line: e.referenced.line(),
            },
        });
    }

    for (scope, keys) in section.protected_env.iter().flatten() {
        let Some((rack, app)) = scope.split_once('/') else {
            ctx.err(
                inputs.gateway_display,
                Some(keys.referenced),
                format!("policy.protected_env: `{scope}` is not <rack glob>/<app glob>"),
            );
            continue;
        };
        if keys
            .value
            .iter()
            .any(|k| k.trim().is_empty() || k.contains('='))
        {
            ctx.err(
                inputs.gateway_display,
                Some(keys.referenced),
                format!("policy.protected_env: `{scope}` lists an empty key or one with `=`"),
            );
        }
        policy.protected_env.push(ProtectedEnv {
            rack: Glob::new(rack),
            app: Glob::new(app),
            keys: keys.value.iter().map(|k| Glob::new(k.trim())).collect(),
            at: RuleRef {
                file: Arc::from("gateway.yaml"),
                line: keys.referenced.line(),
            },
        });
    }

    policy.mfa_amr = match &section.mfa_amr {
        None => super::conditions::DEFAULT_MFA_AMR
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(list) => {
            if list.value.is_empty() || list.value.iter().any(|a| a.trim().is_empty()) {
                ctx.err(
                    inputs.gateway_display,
                    Some(list.referenced),
                    "policy.mfa_amr must list amr values (RFC 8176, e.g. mfa, otp, hwk)",
                );
            }
            list.value.iter().map(|a| a.trim().to_string()).collect()
        }
    };

    // Identities.
    let mut seen: HashSet<String> = HashSet::new();
    if let Some(f) = &inputs.users {
        identities::users(&mut ctx, &mut policy, f, &inputs.racks, &mut seen);
    }
    let (ci_tokens, federated) = match &inputs.ci {
        Some(f) => identities::ci(&mut ctx, &mut policy, f, &inputs.racks, &mut seen),
        None => (Vec::new(), Vec::new()),
    };
    identities::check_requirements(&mut ctx, &policy, &inputs.roles);

    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }

    // Policy tests run only against a policy that loaded cleanly.
    let cases = cases::run_cases(&mut ctx, &policy, &inputs.tests);
    if !ctx.errors.is_empty() {
        return Err(ctx.errors);
    }
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
