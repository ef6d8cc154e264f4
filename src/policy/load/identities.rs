//! The identities of a policy: people and domains from `users.yaml`, CI
//! identities (static tokens and federated) from `ci.yaml`, and the grants
//! they hold, each checked against the roles and the configured racks.

use std::collections::HashSet;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::raw::{RawCiFile, RawGrant, RawUser, RawUsersFile};
use super::{parse, parse_time, requirement, valid_name, Ctx, File, Inputs};
use crate::policy::glob::Glob;
use crate::policy::{Grant, Policy, RuleRef, Subject, SubjectKind};

/// A static CI token as the authenticator needs it.
#[derive(Debug, Clone)]
pub struct CiToken {
    pub name: String,
    pub sha256: [u8; 32],
    /// Unix seconds after which the token is refused.
    pub expires: i64,
}

/// A CI identity that authenticates with its CI system's own OIDC token.
#[derive(Debug, Clone)]
pub struct FederatedIdentity {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    /// Every listed claim must be a string matching its glob.
    pub claims: Vec<(String, Glob)>,
    pub expires: i64,
}

impl FederatedIdentity {
    /// Whether verified token claims satisfy every claim pattern.
    pub fn matches(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        self.claims.iter().all(|(name, glob)| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .is_some_and(|v| glob.matches(v))
        })
    }
}

/// Compiles users.yaml and ci.yaml, then refuses roles whose login
/// requirement only CI identities hold; returns what the authenticator
/// needs for CI.
pub(super) fn compile(
    ctx: &mut Ctx,
    policy: &mut Policy,
    inputs: &Inputs<'_>,
) -> (Vec<CiToken>, Vec<FederatedIdentity>) {
    let mut seen: HashSet<String> = HashSet::new();
    if let Some(f) = &inputs.users {
        users(ctx, policy, f, &inputs.racks, &mut seen);
    }
    let ci_identities = match &inputs.ci {
        Some(f) => ci(ctx, policy, f, &inputs.racks, &mut seen),
        None => (Vec::new(), Vec::new()),
    };
    check_requirements(ctx, policy, &inputs.roles);
    ci_identities
}

/// People and domain rules from users.yaml; `seen` collects identity
/// names across users.yaml and ci.yaml to refuse duplicates.
fn users(
    ctx: &mut Ctx,
    policy: &mut Policy,
    f: &File,
    racks: &[String],
    seen: &mut HashSet<String>,
) {
    if let Some(raw) = parse::<RawUsersFile>(ctx, f) {
        for (email, u) in raw.users.unwrap_or_default() {
            let key = email.trim().to_ascii_lowercase();
            let valid = key.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.contains('@')
            }) && !key.contains(char::is_whitespace);
            if !valid {
                ctx.err(
                    &f.display,
                    Some(u.referenced),
                    format!("user `{email}` is not an email address"),
                );
                continue;
            }
            if !seen.insert(key.clone()) {
                ctx.err(
                    &f.display,
                    Some(u.referenced),
                    format!("duplicate identity `{email}` (emails are case-insensitive)"),
                );
                continue;
            }
            let subject = person(ctx, policy, f, &key, &u, racks);
            policy.users.insert(key, subject);
        }
        for (domain, u) in raw.domains.unwrap_or_default() {
            let key = domain.trim().to_ascii_lowercase();
            if key.is_empty()
                || key.contains('@')
                || !key.contains('.')
                || key.contains(char::is_whitespace)
            {
                ctx.err(
                    &f.display,
                    Some(u.referenced),
                    format!("domain `{domain}` is not a domain name (e.g. example.com)"),
                );
                continue;
            }
            if policy.domains.contains_key(&key) {
                ctx.err(
                    &f.display,
                    Some(u.referenced),
                    format!("duplicate domain `{domain}`"),
                );
                continue;
            }
            let subject = person(ctx, policy, f, &format!("*@{key}"), &u, racks);
            policy.domains.insert(key, subject);
        }
    }
}

/// CI identities from ci.yaml, with the static-token table and the
/// federated identities the authenticator needs.
fn ci(
    ctx: &mut Ctx,
    policy: &mut Policy,
    f: &File,
    racks: &[String],
    seen: &mut HashSet<String>,
) -> (Vec<CiToken>, Vec<FederatedIdentity>) {
    let mut ci_tokens: Vec<CiToken> = Vec::new();
    let mut federated: Vec<FederatedIdentity> = Vec::new();
    if let Some(raw) = parse::<RawCiFile>(ctx, f) {
        for (name, c) in raw.ci.unwrap_or_default() {
            if !valid_name(&name) {
                ctx.err(
                    &f.display,
                    Some(c.referenced),
                    format!("CI identity name `{name}` must be lower-case letters, digits, - or _"),
                );
                continue;
            }
            if !seen.insert(name.clone()) {
                ctx.err(
                    &f.display,
                    Some(c.referenced),
                    format!("duplicate identity `{name}`"),
                );
                continue;
            }
            let Some(expires) = parse_time(&c.value.expires.value) else {
                ctx.err(
                    &f.display,
                    Some(c.value.expires.referenced),
                    "expires must be a date (2027-06-30) or UTC time (2027-06-30T12:00:00Z)",
                );
                continue;
            };
            if c.value.token_sha256.is_none() && c.value.federated.is_none() {
                ctx.err(
                        &f.display,
                        Some(c.referenced),
                        format!("CI identity `{name}` needs token_sha256 (a static token) or federated (its CI system's OIDC token)"),
                    );
            }
            if let Some(h) = &c.value.token_sha256 {
                match crate::hex::decode32(h) {
                        None => ctx.err(
                            &f.display,
                            Some(c.referenced),
                            format!("CI identity `{name}`: token_sha256 must be 64 hex digits (see `rack-gateway token generate`)"),
                        ),
                        Some(sha256) => {
                            if ci_tokens.iter().any(|t| t.sha256 == sha256) {
                                ctx.err(
                                    &f.display,
                                    Some(c.referenced),
                                    format!("CI identity `{name}` has the same token hash as another identity"),
                                );
                            }
                            ci_tokens.push(CiToken { name: name.clone(), sha256, expires });
                        }
                    }
            }
            if let Some(fed) = &c.value.federated {
                if !fed.issuer.starts_with("https://")
                    && !fed.issuer.starts_with("http://127.0.0.1")
                {
                    ctx.err(
                        &f.display,
                        Some(c.referenced),
                        format!("CI identity `{name}`: federated.issuer must be an https:// URL"),
                    );
                }
                if fed.audience.trim().is_empty() {
                    ctx.err(
                        &f.display,
                        Some(c.referenced),
                        format!("CI identity `{name}`: federated.audience must not be empty"),
                    );
                }
                if fed.claims.is_empty() {
                    ctx.err(
                            &f.display,
                            Some(c.referenced),
                            format!("CI identity `{name}`: federated.claims must pin at least one claim (e.g. repository), or every token of that issuer would match"),
                        );
                }
                federated.push(FederatedIdentity {
                    name: name.clone(),
                    issuer: fed.issuer.clone(),
                    audience: fed.audience.clone(),
                    claims: fed
                        .claims
                        .iter()
                        .map(|(k, v)| (k.clone(), Glob::new(v)))
                        .collect(),
                    expires,
                });
            }
            let grants = grants(ctx, policy, f, &c.value.grants, racks, SubjectKind::Ci);
            let (deny, deny_at) = ctx.ops(
                &f.display,
                &f.rel,
                c.value.deny.as_deref().unwrap_or(&[]),
                "deny",
            );
            policy.ci.insert(
                name.clone(),
                Subject {
                    kind: SubjectKind::Ci,
                    name,
                    grants,
                    deny,
                    deny_at,
                    valid_after: None,
                    // A CI identity's `expires` ends its credential.
                    expires: None,
                    reason: None,
                    at: RuleRef {
                        file: Arc::from(f.rel.as_str()),
                        line: c.referenced.line(),
                    },
                },
            );
        }
    }
    (ci_tokens, federated)
}

/// A person (or domain rule) from users.yaml.
fn person(
    ctx: &mut Ctx,
    policy: &Policy,
    f: &File,
    name: &str,
    u: &Spanned<RawUser>,
    racks: &[String],
) -> Subject {
    let grants = grants(ctx, policy, f, &u.value.grants, racks, SubjectKind::User);
    let (deny, deny_at) = ctx.ops(
        &f.display,
        &f.rel,
        u.value.deny.as_deref().unwrap_or(&[]),
        "deny",
    );
    let valid_after = u.value.tokens_valid_after.as_ref().and_then(|t| {
        let parsed = parse_time(&t.value);
        if parsed.is_none() {
            ctx.err(
                &f.display,
                Some(t.referenced),
                "tokens_valid_after must be a date (2026-11-01) or UTC time (2026-11-01T12:00:00Z)",
            );
        }
        parsed
    });
    let expires = u.value.expires.as_ref().and_then(|e| expiry(ctx, f, e));
    Subject {
        kind: SubjectKind::User,
        name: name.to_string(),
        grants,
        deny,
        deny_at,
        valid_after,
        expires,
        reason: u.value.reason.clone(),
        at: RuleRef {
            file: Arc::from(f.rel.as_str()),
            line: u.referenced.line(),
        },
    }
}

fn grants(
    ctx: &mut Ctx,
    policy: &Policy,
    f: &File,
    raw: &[Spanned<RawGrant>],
    racks: &[String],
    kind: SubjectKind,
) -> Vec<Grant> {
    let mut out = Vec::new();
    if raw.is_empty() {
        return out;
    }
    for g in raw {
        let Some(&role) = policy.role_index.get(&g.value.role) else {
            ctx.err(
                &f.display,
                Some(g.referenced),
                format!("undefined role `{}`", g.value.role),
            );
            continue;
        };
        let scope = g.value.scope.trim();
        let (rack, app) = match scope.split_once('/') {
            Some((r, a)) => (r, a),
            None if scope == "*" => ("*", "*"),
            None => (scope, "*"),
        };
        if rack.is_empty() || app.is_empty() || app.contains('/') {
            ctx.err(&f.display, Some(g.referenced), format!("scope `{scope}` must be <rack glob>/<app glob>, e.g. staging/* or production/billing"));
            continue;
        }
        let rack_glob = Glob::new(rack);
        if !racks.iter().any(|r| rack_glob.matches(r)) {
            ctx.err(
                &f.display,
                Some(g.referenced),
                format!(
                    "scope `{scope}` names no configured rack (racks: {})",
                    racks.join(", ")
                ),
            );
            continue;
        }
        let expires = g.value.expires.as_ref().and_then(|e| expiry(ctx, f, e));
        let require = g
            .value
            .require
            .as_ref()
            .and_then(|r| requirement(ctx, &f.display, &f.rel, r));
        if let Some(r) = &require {
            let loc = g.value.require.as_ref().map(|r| r.referenced);
            if kind == SubjectKind::Ci && r.needs_login() {
                ctx.err(&f.display, loc, "require: a CI identity never satisfies mfa or max_auth_age (they ask for a person's login); pin CI token claims instead");
            }
            if kind == SubjectKind::User && !r.claims.is_empty() {
                ctx.err(&f.display, loc, "require.claims: a person's login carries no CI token claims; use mfa or max_auth_age");
            }
        }
        out.push(Grant {
            role,
            rack: rack_glob,
            app: Glob::new(app),
            at: RuleRef {
                file: Arc::from(f.rel.as_str()),
                line: g.referenced.line(),
            },
            expires,
            reason: g.value.reason.clone(),
            require,
        });
    }
    out
}

/// An `expires:` value, or `None` with an error recorded.
fn expiry(ctx: &mut Ctx, f: &File, e: &Spanned<String>) -> Option<i64> {
    let parsed = parse_time(&e.value);
    if parsed.is_none() {
        ctx.err(
            &f.display,
            Some(e.referenced),
            "expires must be a date (2026-12-01) or RFC 3339 time (2026-12-01T14:00:00Z)",
        );
    }
    parsed
}

/// A role whose `require:` asks for a person's login but that only CI
/// identities hold could never count: an error, like a CI grant's.
fn check_requirements(ctx: &mut Ctx, policy: &Policy, roles: &[File]) {
    for (i, role) in policy.roles.iter().enumerate() {
        let Some(r) = role.require.as_ref().filter(|r| r.needs_login()) else {
            continue;
        };
        let held = |m: &std::collections::HashMap<String, crate::policy::Subject>| {
            m.values().any(|s| s.grants.iter().any(|g| g.role == i))
        };
        if held(&policy.ci) && !held(&policy.users) && !held(&policy.domains) {
            let display = roles
                .iter()
                .find(|f| *f.rel == *role.file)
                .map_or(role.file.to_string(), |f| f.display.clone());
            ctx.errors.push(crate::config::error::ConfigError {
                file: display,
                line: r.at.as_ref().map(|a| a.line),
                column: None,
                message: format!(
                    "role `{}` requires mfa or max_auth_age, but only CI identities hold it, and they never satisfy it",
                    role.name
                ),
            });
        }
    }
}
