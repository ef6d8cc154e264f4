//! Decisions about one existing process: exec into it, stop it, and move
//! files in or out of it (rack-semantics.md §5.3, §6 rules 9 and 11).
//!
//! The rack reads `{pid}` as a service name first and picks a random
//! running pod of that service, so only an exact pod name that is not a
//! service name says which pod a request reaches; these checks are pure
//! and the proxy runs them with the service list it fetched. File
//! transfers read and write any path in the pod (`/proc/1/environ` holds
//! the rack password), so they are decided like exec of any command. An
//! attached run's placeholder is exec-able and stoppable with `run` only
//! by its creator ([`super::placeholder`]).

use percent_encoding::percent_decode_str;

use super::command::split;
use super::placeholder::{is_placeholder, untagged, Owner};
use super::{Facts, Policy, Subject, Verdict};

/// Operations whose route names a process by `{pid}`.
pub(crate) fn targets_pod(op: &str) -> bool {
    matches!(op, "exec" | "ps stop") || is_files(op)
}

fn is_files(op: &str) -> bool {
    matches!(op, "files download" | "files upload" | "files delete")
}

/// A `{pid}` must be a pod name: anything else is a selector or a
/// service name to the rack.
pub(crate) fn check_pid(pid: &str) -> Result<(), String> {
    let b = pid.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let ok = match (b.first(), b.last()) {
        (Some(f), Some(l)) => *f != b'-' && *l != b'-' && b.iter().all(inner),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "process id {pid:?} is not a pod name (lower-case letters, digits and inner dashes); \
             the rack would read it as a service name or a label selector"
        ))
    }
}

/// A `{pid}` equal to a service name reaches a random running pod of that
/// service (another person's run, a build pod holding registry
/// credentials), not the pod the decision was made on.
pub(crate) fn check_not_service(pid: &str, services: &[String]) -> Result<(), String> {
    if services.iter().any(|s| s == pid) {
        return Err(format!(
            "process id {pid:?} is a service name: the rack would pick any running pod of \
             service {pid}; name the exact pod (see `convox ps`)"
        ));
    }
    Ok(())
}

/// The query values naming files (`file` on download, the comma list
/// `files` on delete) must not start with `-`: the rack hands them to
/// `tar` without `--`, so they would be read as options.
pub(crate) fn check_file_values(op: &str, query: Option<&str>) -> Result<(), String> {
    let key = match op {
        "files download" => "file",
        "files delete" => "files",
        _ => return Ok(()),
    };
    for pair in query.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        if decode(k) != key {
            continue;
        }
        let value = decode(v);
        let items: Vec<&str> = if key == "files" {
            value.split(',').collect()
        } else {
            vec![value.as_str()]
        };
        if let Some(bad) = items.iter().find(|i| i.starts_with('-')) {
            return Err(format!(
                "the {key} value {bad:?} starts with \"-\": the rack passes it to tar, which \
                 would read it as an option"
            ));
        }
    }
    Ok(())
}

/// Whether an exec's `Entrypoint` header makes the rack prepend the
/// build's entrypoint to the command (k/process.go:61-85). The rack reads
/// only `true`; any value but `false` is taken as set, so a refusal never
/// depends on how the rack parses it.
pub(crate) fn entrypoint_set(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| v != b"false")
}

const NOT_THEIRS: &str =
    "the process is an attached run's placeholder not created by this identity";

impl Policy {
    /// Decides a request whose target process the rack reported, knowing
    /// whether that process is the caller's run placeholder. The request
    /// path calls this after its look-ups; [`Policy::decide`] is this with
    /// [`Owner::AssumedCaller`], for offline questions.
    pub(crate) fn decide_for(&self, subject: &Subject, f: &Facts<'_>, owner: Owner) -> Verdict {
        match f.operation {
            "exec" => self.decide_exec(subject, f, owner),
            "ps stop" => self.decide_stop(subject, f, owner),
            op if is_files(op) => self.decide_files(subject, f, owner),
            op => self.decide_op(subject, op, f),
        }
    }

    /// An exec with `Entrypoint` runs the build's entrypoint words before
    /// the command, which the command rules never saw. That is what an
    /// attached `convox run` asks for on the caller's own placeholder (a
    /// run's command is the entrypoint's arguments too); elsewhere it needs
    /// exec of any command on the process's service. `f.process` is the
    /// target the rack reported.
    pub(crate) fn check_exec_entrypoint(
        &self,
        subject: &Subject,
        f: &Facts<'_>,
        owner: Owner,
    ) -> Result<(), String> {
        let Some(p) = f.process else {
            return Err("the target process is unknown".into());
        };
        let placeholder = split(&p.command).is_ok_and(|w| is_placeholder(&w));
        if placeholder && owner != Owner::Other {
            return Ok(());
        }
        let facts = Facts {
            service: Some(&p.service),
            command: None,
            command_shown: None,
            ..*f
        };
        match self.decide_any_command(subject, "exec", &facts) {
            Verdict::Allow(_) => Ok(()),
            Verdict::Deny(r) => Err(format!(
                "{r}: the Entrypoint header makes the rack run the build's entrypoint before \
                 the command, so it needs exec of any command (`convox exec` never sends it)"
            )),
            Verdict::NeedProcess => Err("the target process is unknown".into()),
        }
    }

    /// Without the process: deny when neither `exec` nor (for the
    /// caller's placeholder) `run` could allow it, else ask for it.
    fn exec_or_run_possible(&self, subject: &Subject, f: &Facts<'_>) -> Verdict {
        match (
            self.op_check(subject, "exec", f),
            self.op_check(subject, "run", f),
        ) {
            (Err(reason), Err(_)) => Verdict::Deny(reason),
            _ => Verdict::NeedProcess,
        }
    }

    /// Exec into the caller's own `sleep N` placeholder is the second half
    /// of an attached `convox run`, so `run` permission covers it;
    /// otherwise `exec`.
    fn decide_exec(&self, subject: &Subject, f: &Facts<'_>, owner: Owner) -> Verdict {
        let Some(p) = f.process else {
            return self.exec_or_run_possible(subject, f);
        };
        let facts = Facts {
            service: Some(&p.service),
            ..*f
        };
        let placeholder = split(&p.command).is_ok_and(|w| is_placeholder(&w));
        if placeholder && owner != Owner::Other {
            let as_run = self.decide_op(subject, "run", &facts);
            if as_run.is_allow() {
                return as_run;
            }
            let as_exec = self.decide_op(subject, "exec", &facts);
            return if as_exec.is_allow() { as_exec } else { as_run };
        }
        match self.decide_op(subject, "exec", &facts) {
            Verdict::Deny(r) if placeholder => Verdict::Deny(format!("{r} ({NOT_THEIRS})")),
            v => v,
        }
    }

    /// Stopping needs `ps stop`, except for the caller's own `sleep N`
    /// placeholder: its cleanup needs only run permission on the
    /// process's service.
    fn decide_stop(&self, subject: &Subject, f: &Facts<'_>, owner: Owner) -> Verdict {
        let direct = self.decide_op(subject, "ps stop", f);
        if direct.is_allow() {
            return direct;
        }
        let Some(p) = f.process else {
            return if self.op_check(subject, "run", f).is_ok() {
                Verdict::NeedProcess
            } else {
                direct
            };
        };
        let Some(plain) = split(&p.command).ok().and_then(|w| untagged(&w)) else {
            return direct;
        };
        if owner == Owner::Other {
            return match direct {
                Verdict::Deny(r) => Verdict::Deny(format!("{r} ({NOT_THEIRS})")),
                v => v,
            };
        }
        let facts = Facts {
            service: Some(&p.service),
            command: Some(&plain),
            command_shown: None,
            run_headers: &[],
            ..*f
        };
        match self.decide_op(subject, "run", &facts) {
            Verdict::Allow(r) => {
                Verdict::Allow(format!("{r} (stopping a `convox run` placeholder process)"))
            }
            _ => direct,
        }
    }

    /// File transfers need their own operation and, on the process the
    /// rack reported, what exec of any command there needs (or `run` of
    /// any command, on the caller's own placeholder).
    fn decide_files(&self, subject: &Subject, f: &Facts<'_>, owner: Owner) -> Verdict {
        let direct = self.decide_op(subject, f.operation, f);
        let Verdict::Allow(direct) = direct else {
            return direct;
        };
        let exec_class = |r: String| {
            Verdict::Deny(format!(
                "{r} (files in a process are exec-class: reading or writing any path is as good as any command)"
            ))
        };
        let Some(p) = f.process else {
            return match self.exec_or_run_possible(subject, f) {
                Verdict::Deny(r) => exec_class(r),
                v => v,
            };
        };
        let facts = Facts {
            service: Some(&p.service),
            command: None,
            command_shown: None,
            run_headers: &[],
            ..*f
        };
        let placeholder = split(&p.command).is_ok_and(|w| is_placeholder(&w));
        let mut v = self.decide_any_command(subject, "exec", &facts);
        if !v.is_allow() && placeholder && owner != Owner::Other {
            let as_run = self.decide_any_command(subject, "run", &facts);
            if as_run.is_allow() {
                v = as_run;
            }
        }
        match v {
            Verdict::Allow(r) => Verdict::Allow(format!("{direct}; {r}")),
            Verdict::Deny(r) => exec_class(r),
            v => v,
        }
    }

    /// `op` (exec or run) of any command on the process's service: a
    /// command rule `**` there, and no command denied there.
    fn decide_any_command(&self, subject: &Subject, op: &str, f: &Facts<'_>) -> Verdict {
        let (_, grants, allowing) = match self.op_check(subject, op, f) {
            Ok(x) => x,
            Err(reason) => return Verdict::Deny(reason),
        };
        let service = f.service.unwrap_or_default();
        for g in &grants {
            let role = &self.roles[g.role];
            if let Some(rule) = role
                .commands_deny
                .iter()
                .find(|r| r.service.matches(service))
            {
                return Verdict::Deny(format!(
                    "denied: {} ({}) forbids \"{}\" on service {service}, so not every command may {op} there",
                    role.name, rule.at, rule.pattern.source
                ));
            }
        }
        for g in &allowing {
            let role = &self.roles[g.role];
            if let Some(rule) = role
                .commands_allow
                .iter()
                .find(|r| r.service.matches(service) && r.pattern.matches_anything())
            {
                return Verdict::Allow(format!(
                    "{op} of any command on service {service}: {} ({})",
                    role.name, rule.at
                ));
            }
        }
        Verdict::Deny(format!(
            "denied: {} may not {op} every command on service {service} (no `**` command rule there)",
            subject.name
        ))
    }
}
