//! The answer to "may this identity do that?" for `rack-gateway can`
//! (offline, from a config directory) and `POST /_gateway/can` (as the
//! logged-in identity): the same engine that decides requests, asked about
//! a hypothetical one, with the secrets note that masking uses.

use super::{Auth, Facts, Policy, Process, Subject};

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
    let process = Process {
        service: q.service.unwrap_or_default().to_string(),
        command: q.process_command.unwrap_or("-").to_string(),
    };
    let facts = Facts {
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
    };
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
