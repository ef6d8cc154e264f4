//! The audit trail: one structured record per decision, emitted through
//! `tracing` under the `audit` target so it can be routed to its own sink,
//! and sealed into the hash-chained audit file when one is configured.
//! [`Auditor`] is the emitter; the submodules are the record, the chain,
//! the file sink, its verifier and the redaction rules.
//!
//! With `--audit-fsync`, [`Auditor::emit`] hands back a [`Ticket`] and
//! [`Auditor::durable`] resolves once that record is on disk: whoever
//! answers a client awaits it before the answer ends, so every answer the
//! client saw has its record even if the process is killed right after.
//!
//! Records carry names and decisions, never secrets: no header values, no
//! bodies, no query strings (they may carry file names or form values).

pub mod chain;
pub mod file;
mod record;
pub mod redact;
pub mod verify;

pub use record::{Decision, Record};

use std::future::Future;
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

    /// Writes one record to the log and queues it for the file; the ticket
    /// says what [`Auditor::durable`] has to wait for.
    pub fn emit(&self, r: &Record<'_>) -> Ticket {
        let ticket = match &self.file {
            Some(sink) => match (sink.submit(r.to_json()), sink.fsync()) {
                (_, false) => Ticket::Now,
                (Some(n), true) => Ticket::Queued(n),
                (None, true) => Ticket::Dropped,
            },
            None => Ticket::Now,
        };
        r.log();
        ticket
    }

    /// Resolves once the ticket's record is on disk: at once without an
    /// audit file or without fsync. When it cannot be (the file is failing,
    /// or the record was lost to overflow) it does not wait for recovery:
    /// fail-closed gives [`Unrecorded`], so the answer fails; fail-open lets
    /// the answer go and counts it ([`Auditor::file_counters`]).
    pub(crate) fn durable(
        &self,
        ticket: Ticket,
    ) -> impl Future<Output = Result<(), Unrecorded>> + Send + 'static {
        let wait = match ticket {
            Ticket::Now => None,
            Ticket::Queued(n) => self.file.clone().map(|s| (s, Some(n))),
            Ticket::Dropped => self.file.clone().map(|s| (s, None)),
        };
        async move {
            let Some((sink, n)) = wait else {
                return Ok(());
            };
            let on_disk = match n {
                Some(n) => sink.durable(n).await,
                None => false,
            };
            if on_disk {
                Ok(())
            } else if sink.fail_closed() {
                Err(Unrecorded)
            } else {
                sink.count_unconfirmed();
                Ok(())
            }
        }
    }

    /// True when answers wait for their records ([`Auditor::durable`]
    /// can be pending): an audit file with fsync.
    pub(crate) fn waits(&self) -> bool {
        self.file.as_ref().is_some_and(Sink::fsync)
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

    /// With fsync: answers released (fail-open) without their record
    /// confirmed on disk.
    pub(crate) fn unconfirmed(&self) -> Option<u64> {
        self.file
            .as_ref()
            .filter(|s| s.fsync())
            .map(Sink::unconfirmed)
    }

    /// Writes out queued records (at shutdown); false if `limit` passed first.
    pub fn flush(&self, limit: Duration) -> bool {
        self.file.as_ref().is_none_or(|s| s.flush_timeout(limit))
    }
}

/// What to wait for before an answer may end ([`Auditor::durable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// Nothing: no audit file, or no fsync.
    Now,
    /// The record with this number in the file's queue.
    Queued(u64),
    /// The record was lost to a full queue: it will never be on disk.
    Dropped,
}

/// Fail-closed: the record of an answer could not be made durable, so the
/// answer must fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unrecorded;
