//! What configuration is loaded, the last reload failure, and the way to
//! ask for a reload now (SIGHUP, the webhook): process state the reloader
//! writes and `/_gateway/status`, readyz and the webhook read. It lives
//! here, not in `reload`, so that the reloader depends on the gateway and
//! never the other way round.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::Secret;

/// The reload state the gateway exposes, and the way to ask for a reload
/// now (SIGHUP, the webhook).
#[derive(Default)]
pub struct Control {
    status: Mutex<Status>,
    pub(crate) trigger: Notify,
    webhook_secret: std::sync::OnceLock<Secret>,
}

/// What `/_gateway/status` reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Status {
    pub source: String,
    /// The version serving requests; `None` until one is valid.
    pub version: Option<String>,
    pub summary: Option<String>,
    pub loaded_at: Option<i64>,
    pub signature: Option<String>,
    pub policy_cases: usize,
    pub last_check_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_error_version: Option<String>,
    pub consecutive_failures: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

impl Control {
    /// The current failure, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        let s = self.lock();
        (s.consecutive_failures > 0)
            .then(|| s.last_error.clone())
            .flatten()
    }

    pub fn status(&self) -> Status {
        self.lock().clone()
    }

    /// Asks the reloader to fetch now instead of at the next poll.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    pub(crate) fn set_webhook_secret(&self, secret: Secret) {
        let _ = self.webhook_secret.set(secret);
    }

    pub fn webhook_secret(&self) -> Option<&Secret> {
        self.webhook_secret.get()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}
