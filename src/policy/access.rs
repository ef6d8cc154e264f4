//! The effective access of one identity, as a set of facts computed with
//! the same pure [`Policy::decide`] that serves requests: which operations
//! it may perform on which rack and app, which run/exec commands on which
//! service, its secret permissions, run headers and env key rules.
//!
//! Apps are open-ended, so the model evaluates a finite [`Universe`]: the
//! configured racks, the app names written in either config's scopes, one
//! representative per app glob, and one "any other app". Apps that every
//! grant of the identity (old and new) treats alike form one class and are
//! decided once, which keeps a 1,000-user review fast. `rack-gateway diff`
//! ([`super::diff`]) compares two such fact sets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::glob::Glob;
use super::{operations, Auth, Facts, Policy, Process, Subject, Verdict, RESTRICTED_RUN_HEADERS};

/// The label of the representative of every app no scope names.
pub const OTHER_APP: &str = "(any other app)";
/// The label of the representative of every service no rule names.
pub const OTHER_SERVICE: &str = "(any other service)";

/// One app to evaluate: the name given to the engine and how reports show it.
#[derive(Debug, Clone)]
pub struct AppRep {
    pub name: String,
    pub label: String,
}

/// One run/exec command to evaluate: a concrete command matching a
/// pattern written in either config, on a service matching its glob.
#[derive(Debug, Clone)]
struct CommandRep {
    service: String,
    service_label: String,
    command: String,
    pattern: String,
}

/// What the review evaluates: the same for the old and the new config.
#[derive(Debug, Clone)]
pub struct Universe {
    pub racks: Vec<String>,
    pub apps: Vec<AppRep>,
    commands: Vec<CommandRep>,
    services: Vec<AppRep>,
}

/// One thing an identity may do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// An operation; `service` only for process operations (stop, files),
    /// which are decided on the target process's service.
    Op {
        op: String,
        service: Option<String>,
    },
    /// `run` or `exec` of a command pattern on a service.
    Command {
        op: &'static str,
        service: String,
        pattern: String,
    },
    Permission(String),
    RunHeader(String),
    /// An env key pattern the identity may change (`*`: any key).
    EnvKey(String),
}

impl Item {
    /// How reports show it.
    pub fn describe(&self) -> String {
        match self {
            Item::Op { op, service: None } => format!("operation `{op}`"),
            Item::Op {
                op,
                service: Some(s),
            } => format!("operation `{op}` on service {s}"),
            Item::Command {
                op,
                service,
                pattern,
            } => format!("{op} `{pattern}` on service {service}"),
            Item::Permission(p) => format!("permission `{p}`"),
            Item::RunHeader(h) => format!("run header `{h}`"),
            Item::EnvKey(k) => format!("may change env keys `{k}`"),
        }
    }

    /// The short kind used in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Op { .. } => "operation",
            Item::Command { .. } => "command",
            Item::Permission(_) => "permission",
            Item::RunHeader(_) => "run_header",
            Item::EnvKey(_) => "env_key",
        }
    }
}

/// Where a fact holds: a rack (empty: gateway-wide) and the apps of one
/// class (empty: rack-level requests, which name no app).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fact {
    pub rack: String,
    pub apps: Arc<[String]>,
    pub item: Item,
}

/// Which grants (old, new) cover an app: apps with equal keys are decided
/// alike.
type ClassKey = (Vec<bool>, Vec<bool>);

/// Facts with the allow reason (naming the rule, file:line) of each.
pub type FactSet = BTreeMap<Fact, String>;

/// A synthetic name that a glob matches (`billing-*` → `billing-x`).
fn instance_of(glob: &str) -> String {
    glob.replace(['*', '?'], "x")
}

/// A name that none of `globs` matches except those matching everything.
fn other_name(base: &str, globs: &BTreeSet<String>) -> String {
    let specific: Vec<Glob> = globs
        .iter()
        .map(|g| Glob::new(g))
        .filter(|g| !g.is_any() && !g.matches(""))
        .collect();
    for n in 0..64 {
        let name = format!("{base}{n}");
        if !specific.iter().any(|g| g.matches(&name)) {
            return name;
        }
    }
    format!("{base}-unmatched")
}

/// Literal names and representatives of globs, plus "any other".
fn reps(globs: &BTreeSet<String>, other_base: &str, other_label: &str) -> Vec<AppRep> {
    let mut out: Vec<AppRep> = Vec::new();
    for g in globs {
        if g == "*" {
            continue;
        }
        let name = if g.contains(['*', '?']) {
            instance_of(g)
        } else {
            g.clone()
        };
        if !out.iter().any(|r| r.name == name) {
            out.push(AppRep {
                name,
                label: g.clone(),
            });
        }
    }
    out.push(AppRep {
        name: other_name(other_base, globs),
        label: other_label.to_string(),
    });
    out
}

impl Universe {
    /// The universe of the given policies over `racks` (every rack either
    /// config defines).
    pub fn of(policies: &[&Policy], racks: BTreeSet<String>) -> Universe {
        let mut app_globs = BTreeSet::new();
        let mut service_globs = BTreeSet::new();
        let mut patterns = BTreeSet::new();
        for p in policies {
            let subjects = p
                .users
                .values()
                .chain(p.domains.values())
                .chain(p.ci.values());
            for s in subjects {
                for g in &s.grants {
                    app_globs.insert(g.app.as_str().to_string());
                }
            }
            for r in &p.roles {
                for c in r.commands_allow.iter().chain(&r.commands_deny) {
                    service_globs.insert(c.service.as_str().to_string());
                    patterns.insert((c.service.as_str().to_string(), c.pattern.source.clone()));
                }
            }
        }
        let apps = reps(&app_globs, "zz-other-app-", OTHER_APP);
        let services = reps(&service_globs, "zz-other-service-", OTHER_SERVICE);
        let commands = patterns
            .into_iter()
            .filter_map(|(service, pattern)| {
                let words = super::command::split(&pattern).ok()?;
                let concrete: Vec<String> = words
                    .iter()
                    .map(|w| {
                        if w == "**" {
                            "x".into()
                        } else {
                            instance_of(w)
                        }
                    })
                    .map(|w| if w.is_empty() { "x".into() } else { w })
                    .collect();
                let service_rep = if service == "*" {
                    services.last().map(|r| r.name.clone()).unwrap_or_default()
                } else if service.contains(['*', '?']) {
                    instance_of(&service)
                } else {
                    service.clone()
                };
                Some(CommandRep {
                    service: service_rep,
                    service_label: service,
                    command: concrete.join(" "),
                    pattern,
                })
            })
            .collect();
        Universe {
            racks: racks.into_iter().collect(),
            apps,
            commands,
            services,
        }
    }
}

/// The empty identity: someone the config does not list (all denied).
pub fn nobody(kind: super::SubjectKind, name: &str) -> Subject {
    Subject {
        kind,
        name: name.to_string(),
        grants: Vec::new(),
        deny: super::OpSet::default(),
        deny_at: vec![None; operations().len()],
        valid_after: None,
        expires: None,
        reason: None,
        at: super::RuleRef {
            file: Arc::from(""),
            line: 0,
        },
    }
}

/// One side of a comparison: a policy, the racks it defines, the subject.
pub struct Side<'a> {
    pub policy: &'a Policy,
    pub racks: &'a BTreeSet<String>,
    pub subject: &'a Subject,
    /// When access is evaluated (unix seconds): expiring grants count
    /// until then.
    pub now: i64,
    /// The login access is evaluated with (step-up requirements).
    pub auth: &'a Auth,
}

/// The facts of both sides over app classes shared by both, so equal
/// access yields equal facts.
pub fn effective_pair(u: &Universe, old: &Side<'_>, new: &Side<'_>) -> (FactSet, FactSet) {
    let mut a = FactSet::new();
    let mut b = FactSet::new();
    let gateway_wide: Arc<[String]> = Arc::from(Vec::new());
    for (side, out) in [(old, &mut a), (new, &mut b)] {
        if side
            .policy
            .has_permission(side.subject, "gateway status", side.now)
        {
            out.insert(
                Fact {
                    rack: String::new(),
                    apps: gateway_wide.clone(),
                    item: Item::Permission("gateway status".into()),
                },
                permission_rule(side.policy, side.subject, "", None, "gateway status"),
            );
        }
    }
    for rack in &u.racks {
        // Rack-level requests first, then one decision per app class.
        let rack_level: Arc<[String]> = Arc::from(Vec::new());
        for (side, out) in [(old, &mut a), (new, &mut b)] {
            if side.racks.contains(rack) {
                facts_at(u, side, rack, None, &rack_level, out);
            }
        }
        let mut classes: BTreeMap<ClassKey, (String, Vec<String>)> = BTreeMap::new();
        for app in &u.apps {
            let mask = |s: &Subject| -> Vec<bool> {
                s.grants
                    .iter()
                    .map(|g| g.covers(rack, Some(&app.name), ""))
                    .collect()
            };
            let key = (mask(old.subject), mask(new.subject));
            if !key.0.iter().chain(&key.1).any(|c| *c) {
                continue;
            }
            classes
                .entry(key)
                .or_insert_with(|| (app.name.clone(), Vec::new()))
                .1
                .push(app.label.clone());
        }
        for (rep, labels) in classes.into_values() {
            let labels: Arc<[String]> = Arc::from(labels);
            for (side, out) in [(old, &mut a), (new, &mut b)] {
                if side.racks.contains(rack) {
                    facts_at(u, side, rack, Some(&rep), &labels, out);
                }
            }
        }
    }
    (a, b)
}

/// Every fact of `side` on `rack` / `app`.
fn facts_at(
    u: &Universe,
    side: &Side<'_>,
    rack: &str,
    app: Option<&str>,
    labels: &Arc<[String]>,
    out: &mut FactSet,
) {
    let (p, s) = (side.policy, side.subject);
    if !s.grants.iter().any(|g| g.rack.matches(rack)) {
        return;
    }
    let mut put = |item: Item, reason: String| {
        out.insert(
            Fact {
                rack: rack.to_string(),
                apps: labels.clone(),
                item,
            },
            reason,
        );
    };
    let base = Facts {
        rack,
        app,
        now: Some(side.now),
        auth: Some(side.auth),
        ..Facts::default()
    };
    let mut allowed_ops = Vec::new();
    for op in operations() {
        if app.is_none() && names_app(op) {
            continue;
        }
        match *op {
            "run" | "exec" => continue,
            "ps stop" | "files download" | "files upload" | "files delete" => {
                for svc in &u.services {
                    let process = Process {
                        service: svc.name.clone(),
                        command: "-".into(),
                    };
                    let f = Facts {
                        operation: op,
                        service: Some(&svc.name),
                        ..base
                    };
                    if let Verdict::Allow(r) = p.decide_assuming(s, &f, &process) {
                        put(
                            Item::Op {
                                op: op.to_string(),
                                service: Some(svc.label.clone()),
                            },
                            r,
                        );
                    }
                }
            }
            _ => {
                let f = Facts {
                    operation: op,
                    ..base
                };
                if let Verdict::Allow(r) = p.decide(s, &f) {
                    allowed_ops.push(*op);
                    put(
                        Item::Op {
                            op: op.to_string(),
                            service: None,
                        },
                        r,
                    );
                }
            }
        }
    }
    let mut run_allowed: Option<&CommandRep> = None;
    let commands = if app.is_some() { &u.commands[..] } else { &[] };
    for c in commands {
        for op in ["run", "exec"] {
            let process = Process {
                service: c.service.clone(),
                command: "-".into(),
            };
            let f = Facts {
                operation: op,
                service: Some(&c.service),
                command: Some(&c.command),
                ..base
            };
            if let Verdict::Allow(r) = p.decide_assuming(s, &f, &process) {
                if op == "run" && run_allowed.is_none() {
                    run_allowed = Some(c);
                }
                put(
                    Item::Command {
                        op,
                        service: c.service_label.clone(),
                        pattern: c.pattern.clone(),
                    },
                    r,
                );
            }
        }
    }
    if let Some(c) = run_allowed {
        for h in RESTRICTED_RUN_HEADERS {
            let headers = [*h];
            let f = Facts {
                operation: "run",
                service: Some(&c.service),
                command: Some(&c.command),
                run_headers: &headers,
                ..base
            };
            if let Verdict::Allow(r) = p.decide(s, &f) {
                put(Item::RunHeader(h.to_string()), r);
            }
        }
    }
    let mut perms = BTreeSet::new();
    for op in &allowed_ops {
        let a = p.secret_access(
            s,
            &Facts {
                operation: op,
                ..base
            },
        );
        for (has, name) in [
            (a.read, "secrets read"),
            (a.stream, "secrets stream"),
            (a.env_protected, "env protected"),
            (a.builds_external, "builds external"),
        ] {
            if has {
                perms.insert(name);
            }
        }
        if *op == "releases create" {
            match a.env_keys {
                None => put(Item::EnvKey("*".into()), "releases create".into()),
                Some(keys) => {
                    for k in keys {
                        put(
                            Item::EnvKey(k.as_str().to_string()),
                            "releases create".into(),
                        );
                    }
                }
            }
        }
    }
    for name in perms {
        put(
            Item::Permission(name.into()),
            permission_rule(p, s, rack, app, name),
        );
    }
}

/// The role and line that grant `permission` to `s` on `rack`/`app`
/// (gateway-wide when `rack` is empty).
fn permission_rule(
    p: &Policy,
    s: &Subject,
    rack: &str,
    app: Option<&str>,
    permission: &str,
) -> String {
    s.grants
        .iter()
        .filter(|g| rack.is_empty() || g.covers(rack, app, "releases"))
        .find_map(|g| {
            let role = &p.roles[g.role];
            let (_, at) = role.permissions.iter().find(|(n, _)| *n == permission)?;
            Some(format!("{} ({at}) on {}", role.name, g.scope()))
        })
        .unwrap_or_else(|| format!("permission `{permission}`"))
}

/// Whether every route of `op` names an app: then a rack-level request
/// for it cannot exist, and the review does not list it there.
fn names_app(op: &str) -> bool {
    let mut routes = crate::rack::routes::ROUTES
        .iter()
        .filter(|r| r.operation == op)
        .peekable();
    routes.peek().is_some() && routes.all(|r| r.pattern.contains("{app}"))
}
