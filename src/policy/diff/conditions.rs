//! What the access diff cannot see by deciding at one instant: expiries
//! and step-up. `diff` decides at the current time with no login, so a
//! grant that gains `expires:` (still live) decides the same, and a grant
//! whose `require:` changes never counts on either side. Both are
//! compared here as written, per identity and grant (role and scope),
//! with the effective requirement of each grant (its own merged with its
//! role's, inherited requirements included).
//!
//! A relaxed requirement (removed, `mfa` dropped, a longer or no
//! `max_auth_age`, a CI claim dropped or changed) is risky; an added or
//! stricter one, and a new or changed expiry, are not. An expiry removed
//! makes temporary access permanent: risky.

use std::collections::BTreeMap;

use super::super::conditions::{duration, Requirement};
use super::super::{Grant, Policy, RuleRef, Subject};
use crate::clock::rfc3339;

/// One changed expiry or step-up requirement.
#[derive(Debug, Clone)]
pub struct ConditionChange {
    /// `expiry` or `step_up`.
    pub kind: &'static str,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The grant (`admin on production/*`), or `None` for the identity's
    /// own expiry.
    pub grant: Option<String>,
    /// As written in OLD and NEW (`None`: not set).
    pub old: Option<String>,
    pub new: Option<String>,
    /// Where it is written (in NEW; in OLD when removed).
    pub rule: String,
    pub risks: Vec<&'static str>,
}

impl ConditionChange {
    /// `expiry of grant admin on production/*`
    pub fn what(&self) -> String {
        let kind = if self.kind == "expiry" {
            "expiry"
        } else {
            "step-up"
        };
        match &self.grant {
            Some(g) => format!("{kind} of grant {g}"),
            None => format!("{kind} of the identity"),
        }
    }

    /// `2026-12-01T14:00:00Z → (none)`
    pub fn values(&self) -> String {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        format!("{} → {}", show(&self.old), show(&self.new))
    }
}

/// A grant's effective requirement: its own and its role's.
fn requirement(p: &Policy, g: &Grant) -> Option<Requirement> {
    match (&g.require, &p.roles[g.role].require) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (Some(a), Some(b)) => {
            let mut r = a.clone();
            r.merge(b);
            Some(r)
        }
    }
}

/// `mfa, max_auth_age 12h, claim environment=production`
fn show(r: &Requirement) -> String {
    let mut parts = Vec::new();
    if r.mfa {
        parts.push("mfa".to_string());
    }
    if let Some(a) = r.max_auth_age {
        parts.push(format!("max_auth_age {}", duration(a)));
    }
    let mut claims: Vec<String> = r
        .claims
        .iter()
        .map(|(n, g)| format!("claim {n}={}", g.as_str()))
        .collect();
    claims.sort();
    parts.extend(claims);
    parts.join(", ")
}

/// Whether `new` asks less than `old` in any respect.
fn relaxed(old: &Requirement, new: &Requirement) -> bool {
    let age = match (old.max_auth_age, new.max_auth_age) {
        (Some(_), None) => true,
        (Some(a), Some(b)) => b > a,
        _ => false,
    };
    let claim_dropped = old.claims.iter().any(|c| !new.claims.contains(c));
    (old.mfa && !new.mfa) || age || claim_dropped
}

fn change_of<T>(old: &Option<T>, new: &Option<T>) -> &'static str {
    match (old, new) {
        (None, _) => "added",
        (_, None) => "removed",
        _ => "changed",
    }
}

fn at_of(r: Option<&Requirement>, g: &Grant) -> RuleRef {
    r.and_then(|r| r.at.clone()).unwrap_or_else(|| g.at.clone())
}

/// One side of an identity's comparison.
pub struct Who<'a> {
    pub policy: &'a Policy,
    pub subject: &'a Subject,
    /// A CI identity's credential expiry (ci.yaml `expires`, kept with the
    /// token rather than in the policy).
    pub credential_expires: Option<i64>,
}

/// The expiry and step-up changes of one identity between OLD and NEW.
/// Grants are matched by role name and scope, in order; a grant only in
/// NEW reports its conditions as added, one only in OLD reports nothing
/// here (its access is gone).
pub fn compare(a: &Who<'_>, b: &Who<'_>) -> Vec<ConditionChange> {
    let (old, os, new, ns) = (a.policy, a.subject, b.policy, b.subject);
    let mut out = Vec::new();
    let time = |e: Option<i64>| e.map(rfc3339);
    let (oe, ne) = (
        os.expires.or(a.credential_expires),
        ns.expires.or(b.credential_expires),
    );
    if oe != ne && !ns.at.file.is_empty() {
        out.push(expiry(None, time(oe), time(ne), &ns.at));
    }
    let by_key = |p: &'_ Policy, s: &'_ Subject| {
        let mut m: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, g) in s.grants.iter().enumerate() {
            m.entry((p.roles[g.role].name.clone(), g.scope()))
                .or_default()
                .push(i);
        }
        m
    };
    let olds = by_key(old, os);
    for ((role, scope), idx) in by_key(new, ns) {
        let before = olds.get(&(role.clone(), scope.clone()));
        for (k, &i) in idx.iter().enumerate() {
            let g = &ns.grants[i];
            let og = before.and_then(|b| b.get(k)).map(|&j| &os.grants[j]);
            let name = Some(format!("{role} on {scope}"));
            let (oe, ne) = (og.and_then(|o| o.expires), g.expires);
            if oe != ne {
                out.push(expiry(name.clone(), time(oe), time(ne), &g.at));
            }
            let orq = og.and_then(|o| requirement(old, o));
            let nrq = requirement(new, g);
            if orq == nrq || orq.as_ref().map(show) == nrq.as_ref().map(show) {
                continue;
            }
            let risky = match (&orq, &nrq) {
                (Some(_), None) => true,
                (Some(a), Some(b)) => relaxed(a, b),
                _ => false,
            };
            let rule = match (&nrq, og) {
                (None, Some(o)) => at_of(orq.as_ref(), o),
                _ => at_of(nrq.as_ref(), g),
            };
            out.push(ConditionChange {
                kind: "step_up",
                change: change_of(&orq, &nrq),
                grant: name,
                old: orq.as_ref().map(show),
                new: nrq.as_ref().map(show),
                rule: rule.to_string(),
                risks: if risky {
                    vec!["step-up relaxed"]
                } else {
                    vec![]
                },
            });
        }
    }
    out.sort_by_key(|c| c.risks.is_empty());
    out
}

fn expiry(
    grant: Option<String>,
    old: Option<String>,
    new: Option<String>,
    at: &RuleRef,
) -> ConditionChange {
    let risks = if old.is_some() && new.is_none() {
        vec!["no longer expires"]
    } else {
        vec![]
    };
    ConditionChange {
        kind: "expiry",
        change: change_of(&old, &new),
        grant,
        old,
        new,
        rule: at.to_string(),
        risks,
    }
}
