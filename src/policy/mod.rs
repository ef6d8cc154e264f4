//! The access policy and the decision engine.
//!
//! The engine is pure: [`Policy::decide`] takes the facts of one request
//! (rack, operation, app, service, command, and the process the rack reported
//! when the decision needs it) and returns a [`Verdict`] with a reason that
//! names the rule and where it lives. No I/O happens here, so the same code
//! serves requests, answers `rack-gateway can`, runs the policy tests, and is
//! unit- and property-tested.
//!
//! Rules, in order:
//! 1. Default deny: an operation is allowed only by a role granted on a
//!    scope (rack glob / app glob) that covers the request.
//! 2. Deny always wins: the global blocked list (gateway.yaml), a user's own
//!    `deny`, and any role's `deny` on any matching grant override every
//!    allow. Only a named exception lets a role use a blocked operation.
//! 3. `run` and `exec` also need the command (split into words exactly as
//!    the rack splits it) to match an allowed pattern for the service, and
//!    no denied pattern.
//! 4. App `system` is the rack itself: only a grant naming it literally
//!    covers it.
//! 5. Exec, stop and file transfers are decided on the exact process the
//!    rack reports ([`process`]); an attached run's placeholder belongs to
//!    its creator only ([`placeholder`]).

pub mod access;
pub mod can;
pub mod command;
pub mod conditions;
pub mod diff;
pub mod env;
pub mod explain;
pub mod forms;
pub mod glob;
pub mod load;
pub mod placeholder;
pub mod process;
pub mod reach;
pub mod tunnel;
pub(crate) mod wording;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use command::{is_run_placeholder, split, CommandPattern};
pub use conditions::{Auth, Requirement};
use glob::Glob;
use placeholder::Owner;

use crate::rack::routes;

/// Where a rule is written: `roles/deployer.yaml:14`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub file: Arc<str>,
    pub line: u64,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A set of operations, as bits indexed by [`op_index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSet(u128);

impl OpSet {
    pub fn contains(self, i: usize) -> bool {
        self.0 & (1u128 << i) != 0
    }
    pub fn insert(&mut self, i: usize) {
        self.0 |= 1u128 << i;
    }
    pub(crate) fn union(self, o: OpSet) -> OpSet {
        OpSet(self.0 | o.0)
    }
    pub(crate) fn minus(self, o: OpSet) -> OpSet {
        OpSet(self.0 & !o.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = &'static str> {
        operations()
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.contains(*i))
            .map(|(_, n)| *n)
    }
}

/// Every operation name, sorted; an operation's index is its position.
pub fn operations() -> &'static [&'static str] {
    static OPS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        let ops = routes::operations();
        assert!(ops.len() <= 128, "OpSet holds at most 128 operations");
        ops
    })
}

pub(crate) fn op_index(name: &str) -> Option<usize> {
    operations().binary_search(&name).ok()
}

/// All operations an operation pattern (`apps *`, `*`, `run`) matches.
pub(crate) fn ops_matching(pattern: &str) -> OpSet {
    let g = Glob::new(pattern);
    let mut set = OpSet::default();
    for (i, op) in operations().iter().enumerate() {
        if g.matches(op) {
            set.insert(i);
        }
    }
    set
}

/// Operations a grant scoped to particular apps still covers although they
/// name no app: the CLI's `GET /system` version probe precedes build,
/// deploy and env changes, and `login` only checks credentials.
const APP_SCOPED_RACK_OPS: &[&str] = &["rack", "login", "probe"];

/// The app name the rack resolves to its own namespace (rack-semantics.md
/// §1.4).
const SYSTEM_APP: &str = "system";

/// Run headers the stock CLI never sends but the rack honours (§8); a role
/// must grant each one explicitly.
pub(crate) const RESTRICTED_RUN_HEADERS: &[&str] = &[
    "image",
    "volumes",
    "environment",
    "privileged",
    "node-labels",
    "system-critical",
];

/// Permissions that are not operations, granted with a role's
/// `permissions:` list: `secrets read` (see secret values in release env,
/// resource URLs and key rolls instead of placeholders), `env protected`
/// (change or remove protected env keys), `builds external` (external
/// builds, whose flow hands the client a registry credential), `gateway
/// status` (read `/_gateway/status` and `/_gateway/metrics` from another
/// host; loopback may always read them), `secrets stream` (the streams the
/// gateway cannot mask: logs, object and file downloads, build and database
/// exports; see `rack::mask::STREAMS`).
pub(crate) const PERMISSIONS: &[&str] = &[
    "secrets read",
    "secrets stream",
    "env protected",
    "builds external",
    "gateway status",
];

/// Env keys of matching apps that only identities with `env protected` may
/// change or remove (gateway.yaml `policy.protected_env`).
#[derive(Debug, Clone)]
pub struct ProtectedEnv {
    pub rack: Glob,
    pub app: Glob,
    pub keys: Vec<Glob>,
    pub at: RuleRef,
}

/// What an identity may do with secrets for one request, from the roles
/// that allow its operation on the request's scope.
#[derive(Debug, Clone, Default)]
pub struct SecretAccess {
    pub read: bool,
    /// `secrets stream`: may receive the unmaskable streams.
    pub stream: bool,
    pub env_protected: bool,
    pub builds_external: bool,
    /// Env key patterns the identity may change; `None` is any key.
    pub env_keys: Option<Vec<Glob>>,
}

/// A command rule: service glob + command pattern, and where it is written.
#[derive(Debug, Clone)]
pub struct CommandRule {
    pub service: Glob,
    pub pattern: CommandPattern,
    pub at: RuleRef,
}

/// A role with inheritance already applied.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub file: Arc<str>,
    pub description: String,
    pub allow: OpSet,
    /// For each operation index: the rule that allows it.
    pub allow_at: Vec<Option<RuleRef>>,
    pub deny: OpSet,
    pub deny_at: Vec<Option<RuleRef>>,
    pub commands_allow: Vec<CommandRule>,
    pub commands_deny: Vec<CommandRule>,
    /// Restricted run headers (lower-case) this role may send.
    pub run_headers: Vec<(String, RuleRef)>,
    /// Permissions beyond operations ([`PERMISSIONS`]).
    pub permissions: Vec<(&'static str, RuleRef)>,
    /// Env key patterns this role may change on `releases create`; `None`
    /// is any key.
    pub env_keys: Option<Vec<(Glob, RuleRef)>>,
    /// What the caller's login must satisfy for this role to count
    /// (step-up), merged with inherited roles' requirements.
    pub require: Option<Requirement>,
    /// The roles this one names in `inherits:` (their rules are merged in
    /// above; kept so `can --explain` can say which role a rule came from).
    pub inherits: Vec<String>,
}

impl Role {
    fn denies(&self, op: usize) -> Option<&RuleRef> {
        if self.deny.contains(op) {
            self.deny_at[op].as_ref()
        } else {
            None
        }
    }
}

/// A role granted on a scope.
#[derive(Debug, Clone)]
pub struct Grant {
    pub role: usize,
    pub rack: Glob,
    pub app: Glob,
    pub at: RuleRef,
    /// After this (unix seconds) the grant counts for nothing.
    pub expires: Option<i64>,
    /// Why the grant exists (break-glass ticket), shown by `whoami`.
    pub reason: Option<String>,
    /// What the caller's login or CI token must satisfy for the grant to
    /// count.
    pub require: Option<Requirement>,
}

impl Grant {
    pub fn scope(&self) -> String {
        format!("{}/{}", self.rack.as_str(), self.app.as_str())
    }

    /// Whether this grant's scope covers a request for `op` on `rack` and
    /// `app` (`None`: a rack-level request); the one scope rule that
    /// [`Policy::decide`] and the access review share.
    pub fn covers(&self, rack: &str, app: Option<&str>, op: &str) -> bool {
        self.rack.matches(rack)
            && match app {
                // App `system` is the rack itself (its API pods):
                // never covered by `*` or another glob.
                Some(SYSTEM_APP) => self.app.as_str() == SYSTEM_APP,
                Some(app) => self.app.matches(app),
                None => self.app.is_any() || APP_SCOPED_RACK_OPS.contains(&op),
            }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    User,
    Ci,
}

/// A person (users.yaml) or CI identity (ci.yaml) with grants.
#[derive(Debug, Clone)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
    pub grants: Vec<Grant>,
    pub deny: OpSet,
    pub deny_at: Vec<Option<RuleRef>>,
    /// Gateway tokens issued before this (unix seconds) are refused.
    pub valid_after: Option<i64>,
    /// After this (unix seconds) every grant of the identity counts for
    /// nothing.
    pub expires: Option<i64>,
    pub reason: Option<String>,
    pub at: RuleRef,
}

/// An exception to the global blocked list for one role.
#[derive(Debug, Clone)]
pub struct Exception {
    pub role: usize,
    pub ops: OpSet,
    pub at: RuleRef,
}

/// The compiled, validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub roles: Vec<Role>,
    pub role_index: HashMap<String, usize>,
    /// Users by lower-cased email.
    pub users: HashMap<String, Subject>,
    /// Domain rules by lower-cased domain: anyone with a verified email
    /// there, when not listed in `users`.
    pub domains: HashMap<String, Subject>,
    pub ci: HashMap<String, Subject>,
    pub blocked: OpSet,
    /// Per operation: the entry of gateway.yaml's `policy.blocked` that
    /// blocks it (empty for the built-in default list).
    pub blocked_at: Vec<Option<RuleRef>>,
    pub exceptions: Vec<Exception>,
    pub protected_env: Vec<ProtectedEnv>,
    /// `amr` values that count as multi-factor (gateway.yaml
    /// `policy.mfa_amr`; [`conditions::DEFAULT_MFA_AMR`] when unset).
    pub mfa_amr: Vec<String>,
}

/// The process an exec or stop targets, as the rack reports it
/// (`GET /apps/{app}/processes/{pid}`): never derived from the pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub service: String,
    pub command: String,
}

/// The facts of one request the policy decides on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub rack: &'a str,
    pub operation: &'a str,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub command: Option<&'a str>,
    /// The command as reasons may quote it: redacted by the proxy, so a
    /// refusal never carries a secret typed into the command; `None`
    /// quotes `command` itself (offline `can`, policy tests).
    pub command_shown: Option<&'a str>,
    pub process: Option<&'a Process>,
    /// Restricted run headers present on the request (lower-case).
    pub run_headers: &'a [&'a str],
    /// The time of the request (unix seconds), for expiring grants and
    /// `max_auth_age`; `None` (unknown) lets no expiring grant count.
    pub now: Option<i64>,
    /// How the caller authenticated; `None` satisfies no requirement.
    pub auth: Option<&'a Auth>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    /// The decision depends on the target process: ask the rack, then
    /// decide again with [`Facts::process`] set.
    NeedProcess,
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Allow(r) | Verdict::Deny(r) => r,
            Verdict::NeedProcess => "needs the target process",
        }
    }
}

fn quote(cmd: &str) -> String {
    let mut s = String::with_capacity(cmd.len() + 2);
    s.push('"');
    for c in cmd.chars().take(200) {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        if c.is_control() {
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    s.push('"');
    s
}

/// `; alice@example.com's entry users.yaml:4` for a refusal that no grant
/// decided: the identity's own entry is the rule to edit. Empty for an
/// identity the config does not list.
fn entry_at(subject: &Subject) -> String {
    if subject.at.file.is_empty() {
        return String::new();
    }
    format!("; {}'s entry {}", subject.name, subject.at)
}

/// How many grants a "granted there" refusal lists before "+N more",
/// so the line stays under the refusal limit.
const GRANTS_SHOWN: usize = 3;

impl Policy {
    /// `viewer users.yaml:5, runner users.yaml:6`: each grant a refusal
    /// considered, with where it is written.
    fn grants_considered(&self, grants: &[&Grant]) -> String {
        let mut shown: Vec<String> = grants
            .iter()
            .take(GRANTS_SHOWN)
            .map(|g| format!("{} {}", self.roles[g.role].name, g.at))
            .collect();
        if grants.len() > GRANTS_SHOWN {
            shown.push(format!("+{} more", grants.len() - GRANTS_SHOWN));
        }
        shown.join(", ")
    }

    pub fn subject(&self, kind: SubjectKind, name: &str) -> Option<&Subject> {
        match kind {
            SubjectKind::User => self.person(name),
            SubjectKind::Ci => self.ci.get(name),
        }
    }

    /// The person an email belongs to: the user entry, else the rule of
    /// the email's domain.
    pub fn person(&self, email: &str) -> Option<&Subject> {
        // Token subjects are already lower-case: skip the allocation then.
        let lower;
        let email = if email.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = email.to_ascii_lowercase();
            lower.as_str()
        } else {
            email
        };
        self.users.get(email).or_else(|| {
            let (_, domain) = email.rsplit_once('@')?;
            self.domains.get(domain)
        })
    }

    /// Looks an identity up by name: a user email first, then a CI name.
    pub(crate) fn find_subject(&self, name: &str) -> Option<&Subject> {
        self.person(name)
            .or_else(|| self.subject(SubjectKind::Ci, name))
    }

    /// Decides one request for `subject`. A target process given here is
    /// hypothetical (offline questions): a `sleep N` placeholder stands
    /// for the caller's own run. The request path decides on the rack's
    /// process with [`Policy::decide_for`].
    pub fn decide(&self, subject: &Subject, f: &Facts<'_>) -> Verdict {
        self.decide_for(subject, f, Owner::AssumedCaller)
    }

    /// Decides a hypothetical request (`can`, policy tests): when the
    /// engine needs the target process, `process` stands in for what the
    /// rack would report.
    pub(crate) fn decide_assuming(
        &self,
        subject: &Subject,
        facts: &Facts<'_>,
        process: &Process,
    ) -> Verdict {
        match self.decide(subject, facts) {
            Verdict::NeedProcess => self.decide(
                subject,
                &Facts {
                    process: Some(process),
                    ..*facts
                },
            ),
            v => v,
        }
    }

    /// The grants of `subject` whose scope covers this request.
    fn applicable<'p>(&'p self, subject: &'p Subject, f: &Facts<'_>, op: &str) -> Vec<&'p Grant> {
        subject
            .grants
            .iter()
            .filter(|g| conditions::live(g.expires, f.now) && g.covers(f.rack, f.app, op))
            .collect()
    }

    fn decide_op(&self, subject: &Subject, op: &str, f: &Facts<'_>) -> Verdict {
        let (i, grants, allowing) = match self.op_check(subject, op, f) {
            Ok(x) => x,
            Err(reason) => return Verdict::Deny(reason),
        };
        if op == "run" || op == "exec" {
            return self.decide_command(subject, op, f, &grants, &allowing);
        }
        let first = allowing[0];
        let role = &self.roles[first.role];
        let at = role.allow_at[i].as_ref().unwrap_or(&first.at);
        Verdict::Allow(format!(
            "allowed: {} ({at}) on {}",
            role.name,
            first.scope()
        ))
    }

    /// The operation-level checks (scope, blocked list, denies, allows),
    /// without the command: the operation's index, the grants covering the
    /// request, and the non-empty list of those whose role allows it.
    #[allow(clippy::type_complexity)]
    fn op_check<'p>(
        &'p self,
        subject: &'p Subject,
        op: &str,
        f: &Facts<'_>,
    ) -> Result<(usize, Vec<&'p Grant>, Vec<&'p Grant>), String> {
        // Only denials name the scope; don't format it on the allow path.
        let scope = || match f.app {
            Some(app) => format!("{}/{}", f.rack, app),
            None => f.rack.to_string(),
        };
        let Some(i) = op_index(op) else {
            return Err(format!("denied: unknown operation \"{op}\""));
        };
        if op == "run" && f.service == Some("build") {
            return Err(
                "denied: \"run\" on service build is refused for everyone (it accepts privileged options)".into(),
            );
        }
        if !conditions::live(subject.expires, f.now) {
            return Err(conditions::expired_reason(subject));
        }
        let grants = self.applicable(subject, f, op);
        if grants.is_empty() && f.app == Some(SYSTEM_APP) {
            return Err(format!(
                "denied: {} may not \"{op}\" on {}: app \"system\" is the rack itself (its API pods), covered only by a grant naming system literally",
                subject.name,
                scope()
            ));
        }
        if grants.is_empty() {
            return Err(format!(
                "denied: {} may not \"{op}\" on {} (no grant there{})",
                subject.name,
                scope(),
                entry_at(subject)
            ));
        }
        let met: Vec<&Grant> = grants
            .iter()
            .copied()
            .filter(|g| self.requirement_unmet(g, f).is_none())
            .collect();
        if self.blocked.contains(i) {
            let excepted = met.iter().any(|g| {
                self.exceptions
                    .iter()
                    .any(|e| e.role == g.role && e.ops.contains(i))
                    && self.roles[g.role].allow.contains(i)
            });
            if !excepted {
                let at = self
                    .blocked_at
                    .get(i)
                    .and_then(Option::as_ref)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_else(|| " (built-in default)".into());
                return Err(format!(
                    "denied: \"{op}\" is blocked for everyone by the gateway policy{at}"
                ));
            }
        }
        if subject.deny.contains(i) {
            let at = subject.deny_at[i].as_ref().unwrap_or(&subject.at);
            return Err(format!(
                "denied: {} is denied \"{op}\" ({at})",
                subject.name
            ));
        }
        for g in &grants {
            let role = &self.roles[g.role];
            if let Some(at) = role.denies(i) {
                return Err(format!("denied: {} denies \"{op}\" ({at})", role.name));
            }
        }
        let allowing: Vec<&Grant> = met
            .iter()
            .copied()
            .filter(|g| self.roles[g.role].allow.contains(i))
            .collect();
        if allowing.is_empty() {
            if let Some(why) = grants
                .iter()
                .filter(|g| self.roles[g.role].allow.contains(i))
                .find_map(|g| self.requirement_unmet(g, f))
            {
                return Err(why);
            }
            return Err(format!(
                "denied: {} may not \"{op}\" on {} (granted there: {})",
                subject.name,
                scope(),
                self.grants_considered(&grants)
            ));
        }
        Ok((i, grants, allowing))
    }

    fn decide_command(
        &self,
        subject: &Subject,
        op: &str,
        f: &Facts<'_>,
        grants: &[&Grant],
        allowing: &[&Grant],
    ) -> Verdict {
        let Some(service) = f.service else {
            return Verdict::Deny(format!("denied: \"{op}\" needs a service"));
        };
        let Some(cmd) = f.command else {
            return Verdict::Deny(format!("denied: \"{op}\" without a command is refused"));
        };
        let shown = f.command_shown.unwrap_or(cmd);
        let argv = match split(cmd) {
            Ok(w) if !w.is_empty() => w,
            Ok(_) => {
                return Verdict::Deny(format!("denied: \"{op}\" without a command is refused"))
            }
            Err(e) => {
                return Verdict::Deny(format!("denied: \"{op}\" of command {}: {e}", quote(shown)))
            }
        };
        if op == "run" && placeholder::imitates_tag(&argv) {
            return Verdict::Deny(format!(
                "denied: \"run\" of command {} imitates the gateway's run placeholder tag (a sleep with a {}-digit fraction)",
                quote(shown),
                placeholder::TAG_DIGITS
            ));
        }
        // Restricted headers need an explicit grant from a role that allows run.
        for h in f.run_headers {
            let ok = allowing
                .iter()
                .any(|g| self.roles[g.role].run_headers.iter().any(|(n, _)| n == h));
            if !ok {
                return Verdict::Deny(format!(
                    "denied: the {h} header on \"run\" is not granted to {} (roles may allow it with run_headers)",
                    subject.name
                ));
            }
        }
        for g in grants {
            let role = &self.roles[g.role];
            if let Some(rule) = role
                .commands_deny
                .iter()
                .find(|r| r.service.matches(service) && r.pattern.matches(&argv))
            {
                return Verdict::Deny(format!(
                    "denied: \"{op}\" of {} on service {service}: {} forbids \"{}\" ({})",
                    quote(shown),
                    role.name,
                    rule.pattern.source,
                    rule.at
                ));
            }
        }
        let placeholder = op == "run" && is_run_placeholder(&argv);
        for g in allowing {
            let role = &self.roles[g.role];
            let mut rules = role
                .commands_allow
                .iter()
                .filter(|r| r.service.matches(service));
            let found = if placeholder {
                rules.next()
            } else {
                rules.find(|r| r.pattern.matches(&argv))
            };
            if let Some(rule) = found {
                let what = if placeholder {
                    format!("may run on service {service} (attached run; the command is checked at exec)")
                } else {
                    format!("allows \"{}\" on service {service}", rule.pattern.source)
                };
                return Verdict::Allow(format!("allowed: {} ({}) {what}", role.name, rule.at));
            }
        }
        // Denied: explain what the first allowing role would accept here.
        let role = &self.roles[allowing[0].role];
        let rules: Vec<&CommandRule> = role
            .commands_allow
            .iter()
            .filter(|r| r.service.matches(service))
            .collect();
        match rules.first() {
            None => Verdict::Deny(format!(
                "denied: {} may not \"{op}\" on service {service} ({})",
                role.name, role.file
            )),
            Some(first) => {
                let list: Vec<&str> = rules.iter().map(|r| r.pattern.source.as_str()).collect();
                Verdict::Deny(format!(
                    "denied: \"{op}\" of {} on service {service}: {} may {op} only {} ({})",
                    quote(shown),
                    role.name,
                    list.join(", "),
                    first.at
                ))
            }
        }
    }

    /// Whether any role of `subject` carries `permission`, whatever the
    /// scope: gateway-wide permissions (`gateway status`) name no rack.
    /// Expired grants and grants with a `require:` (decided per request
    /// on a rack) never give it.
    pub(crate) fn has_permission(&self, subject: &Subject, permission: &str, now: i64) -> bool {
        if !conditions::live(subject.expires, Some(now)) {
            return false;
        }
        subject.grants.iter().any(|g| {
            conditions::live(g.expires, Some(now))
                && g.require.is_none()
                && self.roles[g.role].require.is_none()
                && self.roles[g.role]
                    .permissions
                    .iter()
                    .any(|(n, _)| *n == permission)
        })
    }

    /// The secret permissions of `subject` for an allowed operation: the
    /// union over the grants covering the request whose role allows `op`.
    pub(crate) fn secret_access(&self, subject: &Subject, f: &Facts<'_>) -> SecretAccess {
        let mut out = SecretAccess::default();
        let Some(i) = op_index(f.operation) else {
            return out;
        };
        let mut any_unrestricted = false;
        let mut keys = Vec::new();
        if !conditions::live(subject.expires, f.now) {
            return out;
        }
        for g in self.applicable(subject, f, f.operation) {
            let role = &self.roles[g.role];
            if !role.allow.contains(i) || self.requirement_unmet(g, f).is_some() {
                continue;
            }
            let has = |p: &str| role.permissions.iter().any(|(n, _)| *n == p);
            out.read |= has("secrets read");
            out.stream |= has("secrets stream");
            out.env_protected |= has("env protected");
            out.builds_external |= has("builds external");
            match &role.env_keys {
                None => any_unrestricted = true,
                Some(k) => keys.extend(k.iter().map(|(g, _)| g.clone())),
            }
        }
        out.env_keys = (!any_unrestricted).then_some(keys);
        out
    }

    /// Whether `key` is a protected env key of `rack`/`app`.
    pub(crate) fn is_protected_env(&self, rack: &str, app: &str, key: &str) -> bool {
        self.protected_env.iter().any(|p| {
            p.rack.matches(rack) && p.app.matches(app) && p.keys.iter().any(|k| k.matches(key))
        })
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
