//! The answer to "may this identity do that?" for `rack-gateway can`
//! (offline, from a config directory) and `POST /_gateway/can` (as the
//! logged-in identity): the same engine that decides requests, asked about
//! a hypothetical one, with the secrets note that masking uses; and
//! `can --list`, everything an identity may do per grant.

use super::explain::Explanation;
use super::glob::Glob;
use super::{op_index, Auth, Facts, OpSet, Policy, Process, Subject};

/// A hypothetical request.
pub struct Question<'a> {
    pub rack: &'a str,
    pub operation: &'a str,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub command: Option<&'a str>,
    /// For exec / ps stop: the target process's command (`sleep 3600`
    /// for an attached run's process).
    pub process_command: Option<&'a str>,
    pub now: i64,
    /// How the identity logged in (`None` offline: satisfies no step-up).
    pub auth: Option<&'a Auth>,
}

/// Whether `subject` may, and why; for an allowed operation whose answer
/// carries secrets, whether they would be shown or masked.
pub fn answer(policy: &Policy, subject: &Subject, q: &Question<'_>) -> (bool, String) {
    let process = target(q);
    let facts = facts(q);
    let verdict = policy.decide_assuming(subject, &facts, &process);
    let allowed = verdict.is_allow();
    let note = allowed
        .then(|| crate::rack::mask::can_note(policy, subject, &facts))
        .flatten();
    let reason = match note {
        Some(note) => format!("{}; {note}", verdict.reason()),
        None => verdict.reason().to_string(),
    };
    (allowed, reason)
}

/// The trace of the same question, for `can --explain`.
pub fn explain(policy: &Policy, subject: &Subject, q: &Question<'_>) -> Explanation {
    super::explain::explain(policy, subject, &facts(q), &target(q))
}

/// The process the question assumes the rack would report.
fn target(q: &Question<'_>) -> Process {
    Process {
        service: q.service.unwrap_or_default().to_string(),
        command: q.process_command.unwrap_or("-").to_string(),
    }
}

fn facts<'a>(q: &Question<'a>) -> Facts<'a> {
    Facts {
        rack: q.rack,
        operation: q.operation,
        app: q.app,
        service: q.service,
        command: q.command,
        command_shown: None,
        process: None,
        run_headers: &[],
        now: Some(q.now),
        auth: q.auth,
    }
}

impl Policy {
    /// Everything a subject may do, per grant, for `can --list`.
    pub fn describe(&self, subject: &Subject) -> Vec<String> {
        let mut out = Vec::new();
        for g in &subject.grants {
            let role = &self.roles[g.role];
            let mut ops = role.allow.minus(role.deny).minus(subject.deny);
            let excepted = self
                .exceptions
                .iter()
                .filter(|e| e.role == g.role)
                .fold(OpSet::default(), |a, e| a.union(e.ops));
            ops = ops.minus(self.blocked.minus(excepted));
            // Deny wins across grants: a role's deny on another grant
            // whose scope covers this one removes the operation here; one
            // that covers only part of it is listed as an exception.
            let mut partly = Vec::new();
            for o in subject.grants.iter().filter(|o| !std::ptr::eq(*o, g)) {
                let denied = self.roles[o.role].deny;
                let hit = ops.minus(ops.minus(denied));
                if hit.is_empty() {
                    continue;
                }
                let overlaps = |a: &Glob, b: &Glob| a.matches(b.as_str()) || b.matches(a.as_str());
                if o.rack.matches(g.rack.as_str()) && o.app.matches(g.app.as_str()) {
                    ops = ops.minus(hit);
                } else if overlaps(&o.rack, &g.rack) && overlaps(&o.app, &g.app) {
                    partly.push((o, hit));
                }
            }
            out.push(format!("{} as {} ({}):", g.scope(), role.name, g.at));
            let list: Vec<&str> = ops.iter().collect();
            out.push(format!("  operations: {}", list.join(", ")));
            for (o, hit) in partly {
                let list: Vec<&str> = hit.iter().collect();
                out.push(format!(
                    "  but not on {}: {} (denied by {}, {})",
                    o.scope(),
                    list.join(", "),
                    self.roles[o.role].name,
                    o.at
                ));
            }
            if !role.permissions.is_empty() {
                let p: Vec<&str> = role.permissions.iter().map(|(n, _)| *n).collect();
                out.push(format!("  permissions: {}", p.join(", ")));
            }
            if let Some(k) = &role.env_keys {
                let k: Vec<&str> = k.iter().map(|(g, _)| g.as_str()).collect();
                out.push(format!("  env keys: {}", k.join(", ")));
            }
            if ops.contains(op_index("run").unwrap_or(0))
                || ops.contains(op_index("exec").unwrap_or(0))
            {
                for r in &role.commands_allow {
                    out.push(format!(
                        "  command on {}: {}",
                        r.service.as_str(),
                        r.pattern.source
                    ));
                }
                for r in &role.commands_deny {
                    out.push(format!(
                        "  never on {}: {}",
                        r.service.as_str(),
                        r.pattern.source
                    ));
                }
            }
        }
        out
    }
}
