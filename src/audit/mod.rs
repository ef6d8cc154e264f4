//! The audit trail: one structured record per decision, emitted through
//! `tracing` under the `audit` target so it can be routed to its own sink.
//!
//! Records carry names and decisions, never secrets: no header values, no
//! bodies, no query strings (they may carry file names or form values).

pub mod file;

use std::net::IpAddr;

use crate::identity::credentials::Identity;

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
    /// The client: the socket's peer, or the address a trusted proxy
    /// reported in `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// The socket's peer, when it differs from `client_ip` (a proxy).
    pub via: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub rack: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub pid: Option<&'a str>,
    /// The run/exec command, after the configured redactions.
    pub command: Option<&'a str>,
    pub decision: Option<Decision>,
    /// Why, including the deciding rule's file:line.
    pub reason: &'a str,
    /// Env key names a release creation added, changed or removed (never
    /// values): `add:A change:B remove:C kept:D`.
    pub env_changes: Option<&'a str>,
    /// The config version (commit) that decided the request.
    pub config_version: Option<&'a str>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Body bytes from the client to the rack, and back.
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    /// A run/exec session's exit code, on its end record.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

impl Record<'_> {
    /// The record as the JSON object written to the audit file.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                m.insert(k.to_string(), v);
            }
        };
        put("time", Value::from(rfc3339_now()));
        put("event", Value::from(self.event));
        put("request_id", opt_str(Some(self.request_id)));
        put(
            "identity_kind",
            opt_str(self.identity.map(|i| i.kind.as_str())),
        );
        put("identity", opt_str(self.identity.map(|i| i.name.as_str())));
        put(
            "client_ip",
            opt_str(self.client_ip.map(|ip| ip.to_string()).as_deref()),
        );
        put("via", opt_str(self.via.map(|ip| ip.to_string()).as_deref()));
        put("method", opt_str(Some(self.method)));
        put("path", opt_str(Some(self.path)));
        put("rack", opt_str(self.rack));
        put("operation", opt_str(self.operation));
        put("app", opt_str(self.app));
        put("service", opt_str(self.service));
        put("pid", opt_str(self.pid));
        put("command", opt_str(self.command));
        put("decision", opt_str(self.decision.map(Decision::as_str)));
        put("reason", opt_str(Some(self.reason)));
        put("env_changes", opt_str(self.env_changes));
        put("config", opt_str(self.config_version));
        if self.status != 0 {
            put("status", Value::from(self.status));
        }
        put(
            "upstream_status",
            self.upstream_status.map(Value::from).unwrap_or_default(),
        );
        put(
            "bytes_in",
            self.bytes_in.map(Value::from).unwrap_or_default(),
        );
        put(
            "bytes_out",
            self.bytes_out.map(Value::from).unwrap_or_default(),
        );
        put(
            "exit_code",
            self.exit_code.map(Value::from).unwrap_or_default(),
        );
        put("duration_ms", Value::from(self.duration_ms));
        m
    }
}

fn opt_str(s: Option<&str>) -> serde_json::Value {
    match s {
        Some(s) if !s.is_empty() => serde_json::Value::from(s),
        _ => serde_json::Value::Null,
    }
}

/// The current UTC time as `2026-11-22T10:11:12.345Z`.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, d, h, mi, s) = crate::clock::civil(now.as_secs() as i64);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

/// The hash-chained audit file, when `serve --audit-file` set one up.
static FILE: std::sync::OnceLock<crate::audit::file::Sink> = std::sync::OnceLock::new();

/// Sends every later record to `sink` as well (once per process).
pub fn install_file(sink: crate::audit::file::Sink) {
    let _ = FILE.set(sink);
}

/// False when requests must be refused because their records could not be
/// written (fail-closed mode with the audit file failing).
pub fn recording() -> bool {
    FILE.get().is_none_or(|s| !s.fail_closed() || s.healthy())
}

/// The audit file's counters, for metrics: (written, dropped, healthy).
pub fn file_counters() -> Option<(u64, u64, bool)> {
    FILE.get().map(|s| (s.written(), s.dropped(), s.healthy()))
}

/// Writes out queued records (at shutdown); false if `limit` passed first.
pub fn flush(limit: std::time::Duration) -> bool {
    FILE.get().is_none_or(|s| s.flush_timeout(limit))
}

pub fn emit(r: &Record<'_>) {
    if let Some(sink) = FILE.get() {
        sink.submit(r.to_json());
    }
    tracing::info!(
        target: TARGET,
        event = r.event,
        request_id = r.request_id,
        identity_kind = r.identity.map(|i| i.kind.as_str()),
        identity = r.identity.map(|i| i.name.as_str()),
        client_ip = r.client_ip.map(|ip| ip.to_string()),
        via = r.via.map(|ip| ip.to_string()),
        method = r.method,
        path = r.path,
        rack = r.rack,
        operation = r.operation,
        app = r.app,
        service = r.service,
        pid = r.pid,
        command = r.command,
        decision = r.decision.map(Decision::as_str),
        reason = r.reason,
        env_changes = r.env_changes,
        config = r.config_version,
        status = r.status,
        upstream_status = r.upstream_status,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        exit_code = r.exit_code,
        duration_ms = r.duration_ms,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_has_the_right_shape() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
        assert_eq!(&t[10..11], "T");
    }
}
