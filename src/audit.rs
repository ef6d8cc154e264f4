//! The audit trail: one structured record per decision, emitted through
//! `tracing` under the `audit` target so it can be routed to its own sink.
//!
//! Records carry names and decisions, never secrets: no header values, no
//! bodies, no query strings (they may carry file names or form values).

use std::net::IpAddr;

use crate::auth::Identity;

/// The tracing target audit records use.
pub const TARGET: &str = "audit";

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Authorized and forwarded to the rack.
    Allow,
    /// Authenticated (or not) and refused by policy or authentication.
    Deny,
    /// Refused before routing: malformed or ambiguous request.
    Reject,
    /// Answered by the gateway itself.
    Local,
    /// Authorized, but the rack could not be reached.
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Reject => "reject",
            Decision::Local => "local",
            Decision::Error => "error",
        }
    }
}

/// One audit record; fields are optional where the request never got that
/// far (a rejected request has no operation).
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub event: &'a str,
    pub request_id: &'a str,
    pub identity: Option<&'a Identity>,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub rack: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub pid: Option<&'a str>,
    pub decision: Option<Decision>,
    pub reason: &'a str,
    /// Env key names a release creation added, changed or removed (never
    /// values): `add:A change:B remove:C kept:D`.
    pub env_changes: Option<&'a str>,
    /// The config version (commit) that decided the request.
    pub config_version: Option<&'a str>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub duration_ms: u64,
}

pub fn emit(r: &Record<'_>) {
    tracing::info!(
        target: TARGET,
        event = r.event,
        request_id = r.request_id,
        identity_kind = r.identity.map(|i| i.kind.as_str()),
        identity = r.identity.map(|i| i.name.as_str()),
        client_ip = r.client_ip.map(|ip| ip.to_string()),
        method = r.method,
        path = r.path,
        rack = r.rack,
        operation = r.operation,
        app = r.app,
        service = r.service,
        pid = r.pid,
        decision = r.decision.map(Decision::as_str),
        reason = r.reason,
        env_changes = r.env_changes,
        config = r.config_version,
        status = r.status,
        upstream_status = r.upstream_status,
        duration_ms = r.duration_ms,
    );
}
