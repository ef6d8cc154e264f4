//! The semantic access diff behind `rack-gateway diff`: what a config
//! change does to each identity's effective access ([`super::access`]),
//! plus the gateway-wide rules (blocked list and its exceptions,
//! protected env keys, rate limits). Pure: the CLI loads both configs and
//! renders the result ([`crate::cli::review`]).
//!
//! An identity whose grants, roles and the global rules they meet are
//! unchanged cannot have changed access (the engine is pure), so only the
//! others are evaluated; a renamed role still goes through the full
//! evaluation and, with identical access, reports nothing.

use std::collections::BTreeSet;

pub mod conditions;
pub use conditions::ConditionChange;

use super::access::{effective_pair, nobody, Fact, FactSet, Item, Side, Universe, OTHER_APP};
use super::{Auth, Policy, Role, Subject, SubjectKind};
use crate::config::Config;

/// What happened to an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Added,
    Removed,
    Changed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Removed => "removed",
            Status::Changed => "changed",
        }
    }
}

/// One gained or lost fact.
#[derive(Debug, Clone)]
pub struct Change {
    pub gained: bool,
    pub fact: Fact,
    /// The rule that allows it (in NEW when gained, in OLD when lost).
    pub rule: String,
    pub risks: Vec<&'static str>,
}

/// The changes of one identity, risky ones first.
#[derive(Debug, Clone)]
pub struct IdentityDiff {
    /// `user`, `domain` or `ci`.
    pub kind: &'static str,
    pub name: String,
    pub status: Status,
    pub changes: Vec<Change>,
    /// Expiries and step-up requirements added, changed or removed,
    /// risky ones first ([`conditions`]).
    pub conditions: Vec<ConditionChange>,
}

impl IdentityDiff {
    pub fn gains(&self) -> bool {
        self.changes.iter().any(|c| c.gained)
    }
    pub fn loses(&self) -> bool {
        self.changes.iter().any(|c| !c.gained)
    }
}

/// A change to a gateway-wide rule.
#[derive(Debug, Clone)]
pub struct GlobalChange {
    /// `blocked`, `exception`, `protected_env`, `rate_limits`.
    pub section: &'static str,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    pub item: String,
    pub risks: Vec<&'static str>,
}

/// The whole review.
#[derive(Debug, Clone, Default)]
pub struct AccessDiff {
    pub identities: Vec<IdentityDiff>,
    pub global: Vec<GlobalChange>,
}

impl AccessDiff {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.global.is_empty()
    }

    /// "2 identities gain access, 1 loses"
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no change to anyone's access".into();
        }
        let gain = self.identities.iter().filter(|i| i.gains()).count();
        let lose = self.identities.iter().filter(|i| i.loses()).count();
        let plural = |n: usize| if n == 1 { "identity" } else { "identities" };
        let mut parts = Vec::new();
        if gain > 0 {
            parts.push(format!(
                "{gain} {} {}",
                plural(gain),
                if gain == 1 {
                    "gains access"
                } else {
                    "gain access"
                }
            ));
        }
        if lose > 0 {
            let verb = if lose == 1 { "loses" } else { "lose" };
            parts.push(if gain > 0 {
                format!("{lose} {verb}")
            } else {
                format!("{lose} {} {verb} access", plural(lose))
            });
        }
        let terms = self
            .identities
            .iter()
            .filter(|i| !i.conditions.is_empty())
            .count();
        if terms > 0 {
            parts.push(format!(
                "expiry or step-up changes for {terms} {}",
                plural(terms)
            ));
        }
        if !self.global.is_empty() {
            let n = self.global.len();
            parts.push(format!(
                "{n} gateway-wide rule{} changed",
                if n == 1 { "" } else { "s" }
            ));
        }
        let risky = self
            .identities
            .iter()
            .flat_map(|i| &i.changes)
            .filter(|c| c.gained && !c.risks.is_empty())
            .count()
            + self
                .identities
                .iter()
                .flat_map(|i| &i.conditions)
                .filter(|c| !c.risks.is_empty())
                .count()
            + self.global.iter().filter(|g| !g.risks.is_empty()).count();
        let mut s = parts.join(", ");
        if risky > 0 {
            s.push_str(&format!(" ({risky} risky)"));
        }
        s
    }
}

/// Compares the effective access of every identity and the global rules.
pub fn diff(old: &Config, new: &Config, now: i64) -> AccessDiff {
    let old_racks: BTreeSet<String> = old.racks.keys().cloned().collect();
    let new_racks: BTreeSet<String> = new.racks.keys().cloned().collect();
    let universe = Universe::of(
        &[&old.policy, &new.policy],
        old_racks.union(&new_racks).cloned().collect(),
    );
    let globals_same = old_racks == new_racks
        && old.policy.blocked == new.policy.blocked
        && old.policy.protected_env.len() == new.policy.protected_env.len();
    let mut identities = Vec::new();
    for (kind, label) in [
        (Kind::User, "user"),
        (Kind::Domain, "domain"),
        (Kind::Ci, "ci"),
    ] {
        let (a, b) = (kind.map(&old.policy), kind.map(&new.policy));
        let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for name in names {
            let sk = if kind == Kind::Ci {
                SubjectKind::Ci
            } else {
                SubjectKind::User
            };
            let empty = nobody(sk, name);
            let (os, ns) = (a.get(name.as_str()), b.get(name.as_str()));
            let status = match (os, ns) {
                (None, Some(_)) => Status::Added,
                (Some(_), None) => Status::Removed,
                _ => Status::Changed,
            };
            let (os, ns) = (os.unwrap_or(&empty), ns.unwrap_or(&empty));
            let credential = |c: &Config| {
                let token = c
                    .ci_tokens
                    .iter()
                    .find(|t| &t.name == name)
                    .map(|t| t.expires);
                let federated = || {
                    c.federated
                        .iter()
                        .find(|f| &f.name == name)
                        .map(|f| f.expires)
                };
                (kind == Kind::Ci)
                    .then(|| token.or_else(federated))
                    .flatten()
            };
            let conditions = conditions::compare(
                &conditions::Who {
                    policy: &old.policy,
                    subject: os,
                    credential_expires: credential(old),
                },
                &conditions::Who {
                    policy: &new.policy,
                    subject: ns,
                    credential_expires: credential(new),
                },
            );
            if status == Status::Changed
                && globals_same
                && conditions.is_empty()
                && same_inputs(&old.policy, os, &new.policy, ns)
            {
                continue;
            }
            let (old_login, new_login) = (login(&old.policy, sk, now), login(&new.policy, sk, now));
            let (fa, fb) = effective_pair(
                &universe,
                &Side {
                    policy: &old.policy,
                    racks: &old_racks,
                    subject: os,
                    now,
                    auth: &old_login,
                },
                &Side {
                    policy: &new.policy,
                    racks: &new_racks,
                    subject: ns,
                    now,
                    auth: &new_login,
                },
            );
            let changes = compare(&fa, &fb);
            if changes.is_empty() && conditions.is_empty() && status == Status::Changed {
                continue;
            }
            identities.push(IdentityDiff {
                kind: label,
                name: name.clone(),
                status,
                changes,
                conditions,
            });
        }
    }
    identities.sort_by_key(|i| std::cmp::Reverse(risk_score(i)));
    AccessDiff {
        identities,
        global: global_changes(old, new),
    }
}

/// The login access is evaluated with: a person who just logged in with
/// multi-factor (step-up requirements are compared as written, in
/// [`conditions`]), or a CI token carrying no approval claims.
fn login(p: &Policy, kind: SubjectKind, now: i64) -> Auth {
    match kind {
        SubjectKind::User => Auth {
            amr: p.mfa_amr.first().cloned().into_iter().collect(),
            auth_time: Some(now),
            ..Auth::default()
        },
        SubjectKind::Ci => Auth {
            ci: true,
            ..Auth::default()
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Domain,
    Ci,
}

impl Kind {
    fn map(self, p: &Policy) -> &std::collections::HashMap<String, Subject> {
        match self {
            Kind::User => &p.users,
            Kind::Domain => &p.domains,
            Kind::Ci => &p.ci,
        }
    }
}

fn risk_score(i: &IdentityDiff) -> usize {
    let changes = &i.changes;
    (changes
        .iter()
        .filter(|c| c.gained)
        .map(|c| c.risks.len())
        .sum::<usize>()
        + i.conditions.iter().map(|c| c.risks.len()).sum::<usize>())
        * 2
        + changes.iter().map(|c| c.risks.len()).sum::<usize>()
}

/// Gained and lost facts, risky first.
fn compare(old: &FactSet, new: &FactSet) -> Vec<Change> {
    let mut out = Vec::new();
    for (fact, rule) in new {
        if !old.contains_key(fact) {
            out.push(change(true, fact, rule));
        }
    }
    for (fact, rule) in old {
        if !new.contains_key(fact) {
            out.push(change(false, fact, rule));
        }
    }
    out.sort_by(|a, b| {
        b.risks
            .len()
            .cmp(&a.risks.len())
            .then(b.gained.cmp(&a.gained))
            .then(a.fact.cmp(&b.fact))
    });
    out
}

fn change(gained: bool, fact: &Fact, rule: &str) -> Change {
    Change {
        gained,
        fact: fact.clone(),
        rule: rule.to_string(),
        risks: risks(fact, rule),
    }
}

/// Operations that administer the rack itself rather than an app.
fn is_admin_op(op: &str) -> bool {
    op.starts_with("rack ")
        || op.starts_with("instances")
        || op.starts_with("registries")
        || op.starts_with("certs")
        || op == "apps delete"
        || op == "*"
}

/// Why a fact deserves a reviewer's attention.
fn risks(fact: &Fact, rule: &str) -> Vec<&'static str> {
    let mut r = Vec::new();
    match &fact.item {
        Item::Permission(p) if p.starts_with("secrets") || p == "env protected" => {
            r.push("secrets")
        }
        Item::EnvKey(_) => r.push("secrets"),
        Item::Command { .. } | Item::RunHeader(_) => r.push("exec/run"),
        Item::Op { op, .. } if op == "run" || op == "exec" || op.starts_with("files") => {
            r.push("exec/run")
        }
        Item::Op { op, .. } if is_admin_op(op) => r.push("admin"),
        _ => {}
    }
    if rule.contains("admin") && !r.contains(&"admin") {
        r.push("admin");
    }
    if fact.rack.contains("prod") {
        r.push("production");
    }
    if fact.apps.iter().any(|a| a == OTHER_APP) {
        r.push("* scope");
    }
    r
}

/// Whether `os` in `old` and `ns` in `new` meet exactly the same rules:
/// same grants (role name and scope), same denies, same compiled roles and
/// exceptions for those roles.
fn same_inputs(old: &Policy, os: &Subject, new: &Policy, ns: &Subject) -> bool {
    if os.deny != ns.deny || os.grants.len() != ns.grants.len() {
        return false;
    }
    os.grants.iter().zip(&ns.grants).all(|(a, b)| {
        let (ra, rb) = (&old.roles[a.role], &new.roles[b.role]);
        ra.name == rb.name
            && a.rack == b.rack
            && a.app == b.app
            && same_role(ra, rb)
            && exceptions_of(old, a.role) == exceptions_of(new, b.role)
    })
}

fn exceptions_of(p: &Policy, role: usize) -> Vec<super::OpSet> {
    p.exceptions
        .iter()
        .filter(|e| e.role == role)
        .map(|e| e.ops)
        .collect()
}

fn same_role(a: &Role, b: &Role) -> bool {
    let rules = |v: &[super::CommandRule]| -> Vec<(String, String)> {
        v.iter()
            .map(|c| (c.service.as_str().to_string(), c.pattern.source.clone()))
            .collect()
    };
    let cmds = |r: &Role| (rules(&r.commands_allow), rules(&r.commands_deny));
    let names =
        |v: &[(String, super::RuleRef)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let perms = |r: &Role| r.permissions.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    let keys = |r: &Role| {
        r.env_keys.as_ref().map(|k| {
            k.iter()
                .map(|(g, _)| g.as_str().to_string())
                .collect::<Vec<_>>()
        })
    };
    a.allow == b.allow
        && a.deny == b.deny
        && cmds(a) == cmds(b)
        && names(&a.run_headers) == names(&b.run_headers)
        && perms(a) == perms(b)
        && keys(a) == keys(b)
}

/// The gateway-wide rules: blocked list, exceptions, protected env keys,
/// rate limits.
fn global_changes(old: &Config, new: &Config) -> Vec<GlobalChange> {
    let mut out = Vec::new();
    let (ob, nb) = (old.policy.blocked, new.policy.blocked);
    for op in ob.minus(nb).iter() {
        out.push(global(
            "blocked",
            "removed",
            format!("`{op}` is no longer blocked for everyone"),
            vec!["blocked list shrinks"],
        ));
    }
    for op in nb.minus(ob).iter() {
        out.push(global(
            "blocked",
            "added",
            format!("`{op}` is now blocked for everyone"),
            vec![],
        ));
    }
    let exceptions = |p: &Policy| -> BTreeSet<(String, String)> {
        p.exceptions
            .iter()
            .flat_map(|e| {
                e.ops
                    .iter()
                    .map(move |op| (p.roles[e.role].name.clone(), op.to_string()))
            })
            .collect()
    };
    let (oe, ne) = (exceptions(&old.policy), exceptions(&new.policy));
    for (role, op) in ne.difference(&oe) {
        out.push(global(
            "exception",
            "added",
            format!("role {role} may use blocked `{op}`"),
            vec!["blocked list shrinks"],
        ));
    }
    for (role, op) in oe.difference(&ne) {
        out.push(global(
            "exception",
            "removed",
            format!("role {role} may no longer use blocked `{op}`"),
            vec![],
        ));
    }
    let protected = |p: &Policy| -> BTreeSet<String> {
        p.protected_env
            .iter()
            .flat_map(|e| {
                e.keys
                    .iter()
                    .map(move |k| format!("{}/{} {}", e.rack.as_str(), e.app.as_str(), k.as_str()))
            })
            .collect()
    };
    let (op, np) = (protected(&old.policy), protected(&new.policy));
    for k in np.difference(&op) {
        out.push(global(
            "protected_env",
            "added",
            format!("env key {k} is protected"),
            vec![],
        ));
    }
    for k in op.difference(&np) {
        out.push(global(
            "protected_env",
            "removed",
            format!("env key {k} is no longer protected"),
            vec!["secrets"],
        ));
    }
    out.extend(rate_changes(&old.rate_limits, &new.rate_limits));
    out.sort_by_key(|g| g.risks.is_empty());
    out
}

fn global(
    section: &'static str,
    change: &'static str,
    item: String,
    risks: Vec<&'static str>,
) -> GlobalChange {
    GlobalChange {
        section,
        change,
        item,
        risks,
    }
}

fn rate_changes(
    old: &crate::ratelimit::RateSettings,
    new: &crate::ratelimit::RateSettings,
) -> Vec<GlobalChange> {
    use crate::ratelimit::Rate;
    let show = |r: &Rate| format!("{}/{} burst {}", r.amount, r.per.unit(), r.burst);
    let mut out = Vec::new();
    let mut one = |what: String, a: Option<&Rate>, b: Option<&Rate>| {
        let (change, item) = match (a, b) {
            (Some(a), Some(b)) if a == b => return,
            (Some(a), Some(b)) => ("changed", format!("{what}: {} → {}", show(a), show(b))),
            (None, Some(b)) => ("added", format!("{what}: {}", show(b))),
            (Some(a), None) => (
                "removed",
                format!("{what}: {} (falls back to the default)", show(a)),
            ),
            (None, None) => return,
        };
        out.push(global("rate_limits", change, item, vec![]));
    };
    one("default".into(), Some(&old.default), Some(&new.default));
    one("ci".into(), Some(&old.ci), Some(&new.ci));
    one(
        "expensive".into(),
        Some(&old.expensive),
        Some(&new.expensive),
    );
    one(
        "auth_failures".into(),
        Some(&old.auth_failures),
        Some(&new.auth_failures),
    );
    for (label, a, b) in [
        ("role", &old.roles, &new.roles),
        ("person", &old.persons, &new.persons),
        ("ci", &old.ci_identities, &new.ci_identities),
    ] {
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            one(format!("{label} {k}"), a.get(k), b.get(k));
        }
    }
    if old.expensive_operations != new.expensive_operations {
        let (a, b) = (&old.expensive_operations, &new.expensive_operations);
        let list = |s: std::collections::btree_set::Difference<'_, String>| {
            s.map(String::as_str).collect::<Vec<_>>().join(", ")
        };
        out.push(global(
            "rate_limits",
            "changed",
            format!(
                "expensive operations: +[{}] -[{}]",
                list(b.difference(a)),
                list(a.difference(b))
            ),
            vec![],
        ));
    }
    out
}

/// The apps of a fact as reports show them: `staging/api, web`.
pub fn scope_label(fact: &Fact) -> String {
    if fact.rack.is_empty() {
        return "gateway".into();
    }
    if fact.apps.is_empty() {
        return format!("{} (rack-level)", fact.rack);
    }
    let apps: Vec<&str> = fact.apps.iter().map(String::as_str).collect();
    let shown = if apps.len() > 6 {
        format!("{} and {} more", apps[..5].join(", "), apps.len() - 5)
    } else {
        apps.join(", ")
    };
    format!("{}/{}", fact.rack, shown)
}
