//! The `policy:` block of gateway.yaml: operations blocked for everyone,
//! the role exceptions to that, env keys protected per rack and app, and
//! the `amr` values that count as multi-factor. It names roles, so it is
//! compiled after them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::raw::{RawException, RawPolicySection};
use super::{Ctx, DEFAULT_BLOCKED};
use crate::policy::glob::Glob;
use crate::policy::{ops_matching, Exception, OpSet, Policy, ProtectedEnv, RuleRef};

/// Compiles `section` into `policy`; `display` names gateway.yaml in errors.
pub(super) fn compile(
    ctx: &mut Ctx,
    policy: &mut Policy,
    display: &str,
    section: &RawPolicySection,
) {
    blocked(ctx, policy, display, section.blocked.as_ref());
    exceptions(ctx, policy, display, section.exceptions.as_deref());
    protected_env(ctx, policy, display, section.protected_env.as_ref());
    policy.mfa_amr = mfa_amr(ctx, display, section.mfa_amr.as_ref());
}

/// `blocked:`, or [`DEFAULT_BLOCKED`] when it is absent.
fn blocked(
    ctx: &mut Ctx,
    policy: &mut Policy,
    display: &str,
    list: Option<&Spanned<Vec<Spanned<String>>>>,
) {
    match list {
        None => {
            for op in DEFAULT_BLOCKED {
                policy.blocked = policy.blocked.union(ops_matching(op));
            }
        }
        Some(list) => {
            let (set, at) = ctx.ops(display, "gateway.yaml", &list.value, "policy.blocked");
            policy.blocked = set;
            policy.blocked_at = at;
        }
    }
}

/// `exceptions:`: blocked operations a defined role may still perform.
fn exceptions(
    ctx: &mut Ctx,
    policy: &mut Policy,
    display: &str,
    list: Option<&[Spanned<RawException>]>,
) {
    for e in list.into_iter().flatten() {
        let Some(&role) = policy.role_index.get(&e.value.role) else {
            ctx.err(
                display,
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
                    display,
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
}

/// `protected_env:`: key globs per `<rack glob>/<app glob>` scope.
fn protected_env(
    ctx: &mut Ctx,
    policy: &mut Policy,
    display: &str,
    scopes: Option<&BTreeMap<String, Spanned<Vec<String>>>>,
) {
    for (scope, keys) in scopes.into_iter().flatten() {
        let Some((rack, app)) = scope.split_once('/') else {
            ctx.err(
                display,
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
                display,
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
}

/// `mfa_amr:`, or the default multi-factor `amr` values when it is absent.
fn mfa_amr(ctx: &mut Ctx, display: &str, list: Option<&Spanned<Vec<String>>>) -> Vec<String> {
    match list {
        None => crate::policy::conditions::DEFAULT_MFA_AMR
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(list) => {
            if list.value.is_empty() || list.value.iter().any(|a| a.trim().is_empty()) {
                ctx.err(
                    display,
                    Some(list.referenced),
                    "policy.mfa_amr must list amr values (RFC 8176, e.g. mfa, otp, hwk)",
                );
            }
            list.value.iter().map(|a| a.trim().to_string()).collect()
        }
    }
}
