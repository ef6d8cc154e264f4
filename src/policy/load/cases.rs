//! Policy test cases (`tests/*.yaml`): each names an identity, a request
//! and the expected verdict, and runs against the compiled policy while
//! loading, so a policy change that breaks an expectation never goes live.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Ctx, File};
use crate::config::error::parse_yaml;
use std::collections::BTreeMap;

use super::parse_time;
use crate::policy::{op_index, Auth, Facts, Policy, Process, SubjectKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    cases: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<String>,
    identity: String,
    rack: String,
    app: Option<String>,
    operation: String,
    service: Option<String>,
    command: Option<String>,
    /// For exec and ps stop: the target process's command as the rack
    /// reports it (e.g. `sleep 3600` for an attached run).
    process_command: Option<String>,
    #[serde(default)]
    headers: Vec<String>,
    expect: Expect,
    reason_contains: Option<String>,
    /// Pins the clock (date or RFC 3339 time) for expiring grants and
    /// `max_auth_age`; the real clock otherwise.
    at: Option<String>,
    /// The login's `amr` and `auth_time`, for step-up requirements.
    #[serde(default)]
    amr: Vec<String>,
    auth_time: Option<String>,
    /// A federated CI token's claims, for claim requirements.
    #[serde(default)]
    claims: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// Runs every case in `tests` against `policy`, recording failures in
/// `ctx`; returns how many cases ran.
pub(super) fn run_cases(ctx: &mut Ctx, policy: &Policy, tests: &[File]) -> usize {
    let mut cases = 0;
    for f in tests {
        let Some(raw) = (if f.text.trim().is_empty() {
            None
        } else {
            match parse_yaml::<RawCases>(&f.display, &f.text) {
                Ok(v) => Some(v),
                Err(e) => {
                    ctx.errors.push(e);
                    None
                }
            }
        }) else {
            continue;
        };
        for c in raw.cases {
            cases += 1;
            if let Err(msg) = run_case(policy, &c.value) {
                let label = c
                    .value
                    .name
                    .as_deref()
                    .map(|n| format!("test `{n}`: "))
                    .unwrap_or_default();
                ctx.err(&f.display, Some(c.referenced), format!("{label}{msg}"));
            }
        }
    }
    cases
}

fn run_case(policy: &Policy, c: &RawCase) -> Result<(), String> {
    if op_index(&c.operation).is_none() {
        return Err(format!("unknown operation `{}`", c.operation));
    }
    let Some(subject) = policy.find_subject(&c.identity) else {
        return Err(format!("unknown identity `{}`", c.identity));
    };
    let process = c.process_command.as_ref().map(|pc| Process {
        service: c.service.clone().unwrap_or_default(),
        command: pc.clone(),
    });
    let headers: Vec<String> = c.headers.iter().map(|h| h.to_ascii_lowercase()).collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let now = match &c.at {
        None => crate::clock::unix_now(),
        Some(at) => parse_time(at).ok_or_else(|| {
            format!("at: `{at}` is not a date (2026-12-01) or RFC 3339 time (2026-12-01T10:00:00Z)")
        })?,
    };
    let auth_time = match &c.auth_time {
        None => None,
        Some(t) => Some(
            parse_time(t)
                .ok_or_else(|| format!("auth_time: `{t}` is not a date or RFC 3339 time"))?,
        ),
    };
    let auth = Auth {
        ci: subject.kind == SubjectKind::Ci,
        amr: c.amr.clone(),
        auth_time,
        claims: c.claims.clone().into_iter().collect(),
        login_url: None,
    };
    let facts = Facts {
        rack: &c.rack,
        operation: &c.operation,
        app: c.app.as_deref(),
        service: c.service.as_deref(),
        command: c.command.as_deref(),
        command_shown: None,
        process: process.as_ref(),
        run_headers: &header_refs,
        now: Some(now),
        auth: Some(&auth),
    };
    // A case without process_command describes an ordinary process of the
    // named service.
    let ordinary = Process {
        service: c.service.clone().unwrap_or_default(),
        command: "-".into(),
    };
    let verdict = policy.decide_assuming(subject, &facts, &ordinary);
    let got = if verdict.is_allow() {
        Expect::Allow
    } else {
        Expect::Deny
    };
    if got != c.expect {
        return Err(format!(
            "expected {}, got {}: {}",
            if c.expect == Expect::Allow {
                "allow"
            } else {
                "deny"
            },
            if got == Expect::Allow {
                "allow"
            } else {
                "deny"
            },
            verdict.reason()
        ));
    }
    if let Some(want) = &c.reason_contains {
        if !verdict.reason().contains(want.as_str()) {
            return Err(format!(
                "reason {:?} does not contain {want:?}",
                verdict.reason()
            ));
        }
    }
    Ok(())
}
