//! The trace behind `rack-gateway can --explain`: which grants of the
//! identity cover the request and why the others do not, what each
//! covering role (and every role it inherits) says about the operation,
//! unmet step-up requirements, the blocked list and its exceptions, the
//! command rules of run and exec, and the rule that won.
//!
//! It walks the compiled [`Policy`] in the order [`Policy::decide`] does
//! and reaches its own conclusion, so a reviewer sees every rule that was
//! looked at, not only the one a refusal names; a unit test holds the
//! conclusion to the engine's verdict. Pure, like the engine.

use super::command::{is_run_placeholder, split};
use super::placeholder::{imitates_tag, is_placeholder, untagged};
use super::{conditions, op_index, Facts, Grant, Policy, Process, Role, Subject, SYSTEM_APP};
use crate::clock::rfc3339;

/// The trace of one hypothetical request.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub allowed: bool,
    /// One step a line; the last one says what decided.
    pub lines: Vec<String>,
}

/// Explains `f` for `subject`; `process` stands for what the rack would
/// report as the target of exec, `ps stop` and file transfers (the
/// caller's own run placeholder when its command is `sleep N`), as
/// [`Policy::decide_assuming`] assumes.
pub fn explain(
    policy: &Policy,
    subject: &Subject,
    f: &Facts<'_>,
    process: &Process,
) -> Explanation {
    let mut t = Trace {
        p: policy,
        s: subject,
        lines: Vec::new(),
    };
    t.identity(f);
    let outcome = match f.operation {
        "exec" => t.exec(f, process),
        "ps stop" => t.stop(f, process),
        "files download" | "files upload" | "files delete" => t.files(f, process),
        op => t.operation(op, f),
    };
    let (allowed, rule) = match outcome {
        Ok(rule) => (true, rule),
        Err(rule) => (false, rule),
    };
    t.lines.push(format!(
        "decided: {} by {rule}",
        if allowed { "allow" } else { "deny" }
    ));
    Explanation {
        allowed,
        lines: t.lines,
    }
}

/// Ok: what allows; Err: what refuses.
type Outcome = Result<String, String>;

struct Trace<'a> {
    p: &'a Policy,
    s: &'a Subject,
    lines: Vec<String>,
}

fn scope_of(f: &Facts<'_>) -> String {
    match f.app {
        Some(app) => format!("{}/{app}", f.rack),
        None => format!("{} (rack-level)", f.rack),
    }
}

impl<'a> Trace<'a> {
    fn line(&mut self, s: String) {
        self.lines.push(s);
    }

    /// The identity's entry and every grant, covering the request or not.
    fn identity(&mut self, f: &Facts<'_>) {
        let s = self.s;
        let expiry = match s.expires {
            None => "no expiry".to_string(),
            Some(e) if conditions::live(Some(e), f.now) => format!("expires {}", rfc3339(e)),
            Some(e) => format!("EXPIRED at {}", rfc3339(e)),
        };
        let reason = s
            .reason
            .as_deref()
            .map(|r| format!(", reason: {r}"))
            .unwrap_or_default();
        self.line(format!("identity {} ({}): {expiry}{reason}", s.name, s.at));
        if s.grants.is_empty() {
            self.line("  no grants".into());
        }
        for g in &s.grants {
            let role = &self.p.roles[g.role].name;
            let why = self.coverage(g, f);
            self.line(format!("  grant {role} on {} ({}): {why}", g.scope(), g.at));
        }
    }

    /// Whether `g` covers the request, and why not.
    fn coverage(&self, g: &Grant, f: &Facts<'_>) -> String {
        if let Some(e) = g.expires.filter(|e| !conditions::live(Some(*e), f.now)) {
            return format!("does not count: expired at {}", rfc3339(e));
        }
        let expiry = g
            .expires
            .map(|e| format!(" (expires {})", rfc3339(e)))
            .unwrap_or_default();
        if g.covers(f.rack, f.app, f.operation) {
            return format!("covers {}{expiry}", scope_of(f));
        }
        let why = if !g.rack.matches(f.rack) {
            format!("rack {} is outside {}", f.rack, g.rack.as_str())
        } else {
            match f.app {
                Some(SYSTEM_APP) => "app system is covered only by a grant naming it".to_string(),
                Some(app) => format!("app {app} is outside {}", g.app.as_str()),
                None => format!(
                    "a rack-level request needs app scope *, not {}",
                    g.app.as_str()
                ),
            }
        };
        format!("does not cover {}: {why}{expiry}", scope_of(f))
    }

    /// What `role` and the roles it inherits say about operation `i`.
    fn role_lines(&mut self, role: &Role, i: usize, op: &str, depth: usize) {
        let says = if let Some(at) = role
            .deny
            .contains(i)
            .then(|| role.deny_at[i].as_ref())
            .flatten()
        {
            format!("denies \"{op}\" ({at})")
        } else if role.allow.contains(i) {
            match role.allow_at[i].as_ref() {
                Some(at) => format!("allows \"{op}\" ({at})"),
                None => format!("allows \"{op}\""),
            }
        } else {
            format!("neither allows nor denies \"{op}\"")
        };
        let pad = "  ".repeat(depth + 2);
        let verb = if depth == 0 { "role" } else { "inherits" };
        self.line(format!("{pad}{verb} {} ({}): {says}", role.name, role.file));
        // Bounded: a loaded config has no inheritance cycles.
        if depth < 16 {
            for parent in &role.inherits {
                if let Some(&j) = self.p.role_index.get(parent) {
                    self.role_lines(&self.p.roles[j], i, op, depth + 1);
                }
            }
        }
    }

    /// The operation-level checks, in the engine's order: the covering
    /// grants, and those whose role allows `op` and whose step-up is met.
    #[allow(clippy::type_complexity)]
    fn op_level(
        &mut self,
        op: &str,
        f: &Facts<'_>,
    ) -> Result<(Vec<&'a Grant>, Vec<&'a Grant>), String> {
        let (p, s) = (self.p, self.s);
        let Some(i) = op_index(op) else {
            return Err(format!("the unknown operation \"{op}\""));
        };
        if op == "run" && f.service == Some("build") {
            return Err("the built-in refusal of \"run\" on service build".into());
        }
        if !conditions::live(s.expires, f.now) {
            return Err(format!("the expiry of {}'s entry ({})", s.name, s.at));
        }
        let grants: Vec<&Grant> = s
            .grants
            .iter()
            .filter(|g| conditions::live(g.expires, f.now) && g.covers(f.rack, f.app, op))
            .collect();
        if grants.is_empty() {
            let why = if f.app == Some(SYSTEM_APP) {
                " (app system needs a grant naming it)"
            } else {
                ""
            };
            return Err(format!(
                "no grant covering {}{why}: {}'s entry ({})",
                scope_of(f),
                s.name,
                s.at
            ));
        }
        self.line(format!("  operation \"{op}\":"));
        for g in &grants {
            self.role_lines(&p.roles[g.role], i, op, 0);
        }
        let mut met = Vec::new();
        for g in &grants {
            match p.requirement_unmet(g, f) {
                Some(why) => self.line(format!(
                    "    step-up unmet: {}",
                    why.strip_prefix("denied: ").unwrap_or(&why)
                )),
                None => met.push(*g),
            }
        }
        if p.blocked.contains(i) {
            let at = p
                .blocked_at
                .get(i)
                .and_then(Option::as_ref)
                .map(ToString::to_string)
                .unwrap_or_else(|| "built-in default".into());
            self.line(format!("    blocked list: \"{op}\" is blocked ({at})"));
            let mut excepted = false;
            for e in p.exceptions.iter().filter(|e| e.ops.contains(i)) {
                let role = &p.roles[e.role];
                let applies = role.allow.contains(i) && met.iter().any(|g| g.role == e.role);
                excepted |= applies;
                self.line(format!(
                    "    exception for {} ({}): {}",
                    role.name,
                    e.at,
                    if applies {
                        "applies"
                    } else {
                        "does not apply (no counting grant of it allows the operation)"
                    }
                ));
            }
            if !excepted {
                return Err(format!("the blocked list ({at})"));
            }
        }
        if s.deny.contains(i) {
            let at = s.deny_at[i].as_ref().unwrap_or(&s.at);
            return Err(format!("{}'s own deny ({at})", s.name));
        }
        for g in &grants {
            let role = &p.roles[g.role];
            if let Some(at) = role
                .deny
                .contains(i)
                .then(|| role.deny_at[i].as_ref())
                .flatten()
            {
                return Err(format!(
                    "{}'s deny ({at}), granted on {}",
                    role.name,
                    g.scope()
                ));
            }
        }
        let allowing: Vec<&Grant> = met
            .iter()
            .copied()
            .filter(|g| p.roles[g.role].allow.contains(i))
            .collect();
        if allowing.is_empty() {
            if let Some(g) = grants.iter().find(|g| p.roles[g.role].allow.contains(i)) {
                return Err(format!(
                    "the unmet step-up of {} on {} ({})",
                    p.roles[g.role].name,
                    g.scope(),
                    g.at
                ));
            }
            return Err(format!(
                "default deny: no role granted on {} allows \"{op}\"",
                scope_of(f)
            ));
        }
        Ok((grants, allowing))
    }

    /// An operation decided on its name (and, for run and exec, its command).
    fn operation(&mut self, op: &str, f: &Facts<'_>) -> Outcome {
        let (grants, allowing) = self.op_level(op, f)?;
        if op == "run" || op == "exec" {
            return self.command(op, f, &grants, &allowing);
        }
        let g = allowing[0];
        let role = &self.p.roles[g.role];
        let at = op_index(op)
            .and_then(|i| role.allow_at[i].as_ref())
            .unwrap_or(&g.at);
        Ok(format!("{} ({at}) on {}", role.name, g.scope()))
    }

    /// The command rules of run and exec.
    fn command(
        &mut self,
        op: &str,
        f: &Facts<'_>,
        grants: &[&Grant],
        allowing: &[&Grant],
    ) -> Outcome {
        let p = self.p;
        let Some(service) = f.service else {
            return Err(format!("\"{op}\" without a service"));
        };
        let Some(cmd) = f.command else {
            return Err(format!("\"{op}\" without a command"));
        };
        let argv = match split(cmd) {
            Ok(w) if !w.is_empty() => w,
            Ok(_) => return Err(format!("\"{op}\" without a command")),
            Err(e) => return Err(format!("the command's syntax: {e}")),
        };
        if op == "run" && imitates_tag(&argv) {
            return Err("a command imitating the gateway's run placeholder tag".into());
        }
        for h in f.run_headers {
            let ok = allowing
                .iter()
                .any(|g| p.roles[g.role].run_headers.iter().any(|(n, _)| n == h));
            if !ok {
                return Err(format!("the {h} header, which no allowing role grants"));
            }
        }
        let header = format!("    command rules on service {service}:");
        self.line(header.clone());
        let mut denied = None;
        for g in grants {
            let role = &p.roles[g.role];
            for r in role
                .commands_deny
                .iter()
                .filter(|r| r.service.matches(service))
            {
                let hit = r.pattern.matches(&argv);
                self.line(format!(
                    "      {} forbids \"{}\" ({}): {}",
                    role.name,
                    r.pattern.source,
                    r.at,
                    if hit { "matches" } else { "does not match" }
                ));
                if hit && denied.is_none() {
                    denied = Some(format!(
                        "{}'s forbidden \"{}\" ({})",
                        role.name, r.pattern.source, r.at
                    ));
                }
            }
        }
        if let Some(d) = denied {
            return Err(d);
        }
        let placeholder = op == "run" && is_run_placeholder(&argv);
        let mut found = None;
        for g in allowing {
            let role = &p.roles[g.role];
            for r in role
                .commands_allow
                .iter()
                .filter(|r| r.service.matches(service))
            {
                let hit = placeholder || r.pattern.matches(&argv);
                self.line(format!(
                    "      {} allows \"{}\" ({}): {}",
                    role.name,
                    r.pattern.source,
                    r.at,
                    if placeholder {
                        "an attached run (the command is checked at exec)"
                    } else if hit {
                        "matches"
                    } else {
                        "does not match"
                    }
                ));
                if hit && found.is_none() {
                    found = Some(format!(
                        "{} ({}) allowing \"{}\"",
                        role.name, r.at, r.pattern.source
                    ));
                }
            }
        }
        if self.lines.last() == Some(&header) {
            self.line("      none for this service".into());
        }
        found.ok_or_else(|| {
            format!(
                "default deny: no command rule of an allowing role matches on service {service}"
            )
        })
    }

    /// Exec: into the caller's own run placeholder `run` covers it (else
    /// exec); into any other process, exec of the command.
    fn exec(&mut self, f: &Facts<'_>, process: &Process) -> Outcome {
        let facts = Facts {
            service: Some(&process.service),
            process: Some(process),
            ..*f
        };
        if split(&process.command).is_ok_and(|w| is_placeholder(&w)) {
            self.line(
                "  the target is an attached run's placeholder: run covers exec into it".into(),
            );
            let as_run = self.operation("run", &facts);
            if as_run.is_ok() {
                return as_run;
            }
            return self.operation("exec", &facts).or(as_run);
        }
        self.operation("exec", &facts)
    }

    /// `ps stop`, or `run` of the command of the caller's own placeholder.
    fn stop(&mut self, f: &Facts<'_>, process: &Process) -> Outcome {
        let direct = self.operation("ps stop", f);
        if direct.is_ok() {
            return direct;
        }
        let Some(plain) = split(&process.command).ok().and_then(|w| untagged(&w)) else {
            return direct;
        };
        self.line(
            "  the target is an attached run's placeholder: run of its command may stop it".into(),
        );
        let facts = Facts {
            service: Some(&process.service),
            command: Some(&plain),
            command_shown: None,
            run_headers: &[],
            ..*f
        };
        self.operation("run", &facts).or(direct)
    }

    /// File transfers: their operation, and exec (or, into the caller's
    /// placeholder, run) of any command on the process's service.
    fn files(&mut self, f: &Facts<'_>, process: &Process) -> Outcome {
        let direct = self.operation(f.operation, f)?;
        self.line("  files are exec-class: they also need exec of any command there".into());
        let facts = Facts {
            service: Some(&process.service),
            command: None,
            command_shown: None,
            run_headers: &[],
            ..*f
        };
        let mut v = self.any_command("exec", &facts);
        if v.is_err() && split(&process.command).is_ok_and(|w| is_placeholder(&w)) {
            let as_run = self.any_command("run", &facts);
            if as_run.is_ok() {
                v = as_run;
            }
        }
        v.map(|r| format!("{direct}; {r}"))
    }

    /// `op` of every command on the service: a `**` rule, no forbidden one.
    fn any_command(&mut self, op: &str, f: &Facts<'_>) -> Outcome {
        let (grants, allowing) = self.op_level(op, f)?;
        let p = self.p;
        let service = f.service.unwrap_or_default();
        for g in &grants {
            let role = &p.roles[g.role];
            if let Some(r) = role
                .commands_deny
                .iter()
                .find(|r| r.service.matches(service))
            {
                self.line(format!(
                    "    {} forbids \"{}\" on {service} ({})",
                    role.name, r.pattern.source, r.at
                ));
                return Err(format!(
                    "{}'s forbidden \"{}\" ({})",
                    role.name, r.pattern.source, r.at
                ));
            }
        }
        for g in &allowing {
            let role = &p.roles[g.role];
            if let Some(r) = role
                .commands_allow
                .iter()
                .find(|r| r.service.matches(service) && r.pattern.matches_anything())
            {
                return Ok(format!(
                    "{} ({}) allowing \"{}\"",
                    role.name, r.at, r.pattern.source
                ));
            }
        }
        Err(format!(
            "default deny: no `**` command rule for {op} on service {service}"
        ))
    }
}

#[cfg(test)]
mod tests;
