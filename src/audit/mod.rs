//! The audit trail: one structured record per decision, emitted through
//! `tracing` under the `audit` target so it can be routed to its own sink,
//! and sealed into the hash-chained audit file when one is configured.
//! [`Auditor`] is the emitter; the submodules are the record, the chain,
//! the file sink, its verifier and the redaction rules.
//!
//! Records carry names and decisions, never secrets: no header values, no
//! bodies, no query strings (they may carry file names or form values).

pub mod chain;
pub mod file;
mod record;
pub mod redact;
pub mod verify;

pub use record::{Decision, Record};

use std::time::Duration;

use file::Sink;

/// The tracing target audit records use.
pub(crate) const TARGET: &str = "audit";

/// Where records go: the `audit` tracing target always, and the audit file
/// when `serve --audit-file` opened one. Cheap to clone (the sink is shared).
#[derive(Debug, Clone, Default)]
pub struct Auditor {
    file: Option<Sink>,
}

impl Auditor {
    /// Records to the log, and to `file` as well when given.
    pub fn new(file: Option<Sink>) -> Auditor {
        Auditor { file }
    }

    /// Writes one record to the log and queues it for the file.
    pub fn emit(&self, r: &Record<'_>) {
        if let Some(sink) = &self.file {
            sink.submit(r.to_json());
        }
        r.log();
    }

    /// False when requests must be refused because their records could not
    /// be written (fail-closed mode with the audit file failing).
    pub(crate) fn recording(&self) -> bool {
        self.file
            .as_ref()
            .is_none_or(|s| !s.fail_closed() || s.healthy())
    }

    /// The audit file's counters, for metrics: (written, dropped, healthy).
    pub(crate) fn file_counters(&self) -> Option<(u64, u64, bool)> {
        self.file
            .as_ref()
            .map(|s| (s.written(), s.dropped(), s.healthy()))
    }

    /// Writes out queued records (at shutdown); false if `limit` passed first.
    pub fn flush(&self, limit: Duration) -> bool {
        self.file.as_ref().is_none_or(|s| s.flush_timeout(limit))
    }
}
