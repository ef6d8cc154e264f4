//! Hot reload of the config repository: fetch → read the files → parse →
//! validate → run the policy tests → swap atomically.
//!
//! A bad config never replaces a good one: every failure (unreachable
//! remote, invalid YAML, a failing policy test, a refused commit) keeps the
//! current config serving, is logged and audited with its reason and
//! version, shows in `/_gateway/status`, and is retried with backoff.
//! Requests in flight keep the snapshot they started with (`arc-swap`), so
//! no request fails because of a reload.
//!
//! Layout: [`fetch`] holds where versions come from (a directory, a Git
//! repository), [`git`] the Git side itself, and this module the reloader,
//! its status and the webhook check.

mod fetch;
pub mod git;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::audit::{self, Decision};
use crate::clock::unix_now;
use crate::config::{self, Env};
use crate::gateway::{Gateway, Runtime};

pub use fetch::{DirFetch, Fetch, FetchError, Fetched, GitFetch};

/// The outcome of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new version went live.
    Swapped(String),
    /// Nothing changed (or the same failing version was seen again).
    Unchanged,
    /// The current config stays; the message says why.
    Failed(String),
}

/// Drives reloads for one gateway from one source.
pub struct Reloader {
    gateway: Arc<Gateway>,
    fetch: Arc<dyn Fetch>,
    env: Env,
    poll: Duration,
    /// The last version that failed validation: not re-validated until the
    /// source moves on (or a reload is forced).
    failed: Option<String>,
}

/// First retry delay after a failure; doubles up to the poll interval.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Quiet time after a file-system event before reading, so an editor's or
/// `git checkout`'s burst of writes is read once, complete.
const DEBOUNCE: Duration = Duration::from_millis(250);

impl Reloader {
    pub fn new(gateway: Arc<Gateway>, fetch: Arc<dyn Fetch>, env: Env, poll: Duration) -> Self {
        gateway.reload.lock().source = fetch.describe();
        Reloader {
            gateway,
            fetch,
            env,
            poll,
            failed: None,
        }
    }

    /// Marks `version` as what the gateway started with (loaded by the
    /// caller before serving).
    pub fn started_with(&self, first: &Fetched, policy_cases: usize) {
        let version = first.version.as_str();
        self.gateway
            .metrics
            .set_config(version, &self.fetch.describe(), unix_now());
        let mut s = self.gateway.reload.lock();
        s.version = Some(version.to_string());
        s.loaded_at = Some(unix_now());
        s.policy_cases = policy_cases;
        s.signature = Some(first.signature.clone());
        s.summary = first.summary.clone();
        s.last_check_at = s.loaded_at;
    }

    /// One attempt: fetch, validate, swap. `force` re-validates a version
    /// that failed before (SIGHUP: the environment or secret files may have
    /// been fixed).
    pub async fn reload_once(&mut self, force: bool) -> Outcome {
        let current = self.gateway.reload.lock().version.clone();
        let fetch = self.fetch.clone();
        let fetched =
            match tokio::task::spawn_blocking(move || fetch.fetch(current.as_deref())).await {
                Ok(r) => r,
                Err(_) => Err(FetchError {
                    message: "the fetch task failed".into(),
                    version: None,
                }),
            };
        self.gateway.reload.lock().last_check_at = Some(unix_now());
        let f = match fetched {
            Ok(None) => return self.unchanged(),
            Ok(Some(f)) => f,
            Err(e) => return self.failed(e.message, e.version),
        };
        if !force && self.failed.as_deref() == Some(f.version.as_str()) {
            return Outcome::Unchanged;
        }
        let env = self.env.clone();
        let files = f.files;
        let loaded = tokio::task::spawn_blocking(move || config::load(&files, &env)).await;
        let cfg = match loaded {
            Ok(Ok(cfg)) => cfg,
            Ok(Err(errors)) => return self.failed(one_line(&errors), Some(f.version)),
            Err(_) => return self.failed("the validation task failed".into(), Some(f.version)),
        };
        let mut rt = match Runtime::from_config(&cfg) {
            Ok(rt) => rt,
            Err(errors) => return self.failed(one_line(&errors), Some(f.version)),
        };
        rt.version = f.version.clone();
        self.gateway.swap(rt);
        self.fetch.loaded(&f.version);
        let metrics = &self.gateway.metrics;
        metrics.reload(true);
        metrics.set_config(&f.version, &self.fetch.describe(), unix_now());
        metrics.set_last_reload_error(false);
        self.failed = None;
        {
            let mut s = self.gateway.reload.lock();
            s.version = Some(f.version.clone());
            s.summary = f.summary.clone();
            s.loaded_at = Some(unix_now());
            s.signature = Some(f.signature.clone());
            s.policy_cases = cfg.policy_cases;
            s.consecutive_failures = 0;
            s.reloads_ok += 1;
        }
        // After the status says what serves: a session closed as revoked
        // names a version that /_gateway/status already reports.
        self.revoke_sessions();
        tracing::info!(
            version = %f.version,
            source = %self.fetch.describe(),
            policy_cases = cfg.policy_cases,
            "configuration loaded"
        );
        audit_reload(
            &self.gateway.audit,
            Decision::Allow,
            &f.version,
            "configuration loaded",
        );
        Outcome::Swapped(f.version)
    }

    /// Closes the open sessions the config just swapped in no longer
    /// allows (each is told why in-band and audited as it ends).
    fn revoke_sessions(&self) {
        let Some(rt) = self.gateway.runtime() else {
            return;
        };
        let n = self.gateway.sessions.revoke(&rt);
        if n > 0 {
            tracing::info!(
                version = %rt.version,
                sessions = n,
                "closing sessions the new configuration no longer allows"
            );
        }
    }

    fn unchanged(&mut self) -> Outcome {
        // The source went back to the loaded version: if it moves to the
        // version that failed before, that is a new failure to report.
        self.failed = None;
        let mut s = self.gateway.reload.lock();
        // The source is readable and still at the loaded version: a fetch
        // failure before this one is over.
        if s.version.is_some() {
            s.consecutive_failures = 0;
            self.gateway.metrics.set_last_reload_error(false);
        }
        Outcome::Unchanged
    }

    fn failed(&mut self, message: String, version: Option<String>) -> Outcome {
        {
            let mut s = self.gateway.reload.lock();
            s.last_error = Some(message.clone());
            s.last_error_at = Some(unix_now());
            s.last_error_version = version.clone();
            s.consecutive_failures += 1;
            s.reloads_failed += 1;
        }
        if version.is_some() {
            self.failed = version.clone();
        }
        self.gateway.metrics.reload(false);
        self.gateway.metrics.set_last_reload_error(true);
        let v = version.as_deref().unwrap_or("-");
        tracing::error!(
            version = v,
            source = %self.fetch.describe(),
            error = %message,
            "reload failed; keeping the current configuration"
        );
        audit_reload(&self.gateway.audit, Decision::Error, v, &message);
        Outcome::Failed(message)
    }

    /// Reloads until `stop`: on every trigger (SIGHUP, webhook), on changes
    /// under `watch` (debounced), and on a timer — file events can be
    /// missed (network file systems, a directory replaced wholesale), so
    /// the timer is what guarantees a change is eventually seen. Failures
    /// retry with exponential backoff up to the poll interval.
    pub async fn run(mut self, watch: Option<PathBuf>, mut stop: watch::Receiver<bool>) {
        let (tx, mut events) = mpsc::channel::<()>(1);
        let _watcher = watch.as_deref().and_then(|dir| start_watcher(dir, tx));
        let gateway = self.gateway.clone();
        let mut backoff = BACKOFF_START;
        let mut force = false;
        loop {
            let delay = match self.reload_once(force).await {
                Outcome::Failed(_) => {
                    let d = backoff.min(self.poll);
                    backoff = (backoff * 2).min(self.poll);
                    d
                }
                _ => {
                    backoff = BACKOFF_START;
                    self.poll
                }
            };
            force = false;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = gateway.reload.trigger.notified() => force = true,
                Some(()) = events.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Watches `dir` recursively; events are coalesced into one pending
/// signal. `None` (logged) if the watcher can't start: the timer still
/// picks changes up.
fn start_watcher(dir: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(e) = res {
            if !e.kind.is_access() {
                let _ = tx.try_send(());
            }
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config directory; polling only");
            return None;
        }
    };
    if let Err(e) = w.watch(dir, notify::RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; polling only");
        return None;
    }
    Some(w)
}

fn one_line(errors: &config::ConfigErrors) -> String {
    let all: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    let mut s = all.join("; ");
    if s.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push_str(" …");
    }
    s
}

fn audit_reload(auditor: &audit::Auditor, decision: Decision, version: &str, reason: &str) {
    auditor.emit(&audit::Record {
        event: "config-reload",
        decision: Some(decision),
        reason,
        config_version: Some(version),
        ..Default::default()
    });
}

/// Checks a GitHub-style `X-Hub-Signature-256: sha256=<hex>` header: an
/// HMAC-SHA256 of the exact body with the shared secret, compared in
/// constant time.
pub(crate) fn webhook_signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(sig) = crate::hex::decode(hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "sha256={}",
            crate::hex::encode(ring::hmac::sign(&key, body).as_ref())
        )
    }

    #[test]
    fn webhook_signature_checks_body_secret_and_format() {
        let good = sign(b"s3cret-s3cret-s3", b"{\"ref\":\"main\"}");
        assert!(webhook_signature_ok(
            b"s3cret-s3cret-s3",
            b"{\"ref\":\"main\"}",
            Some(&good)
        ));
        assert!(!webhook_signature_ok(
            b"other-secret-xxx",
            b"{\"ref\":\"main\"}",
            Some(&good)
        ));
        assert!(!webhook_signature_ok(
            b"s3cret-s3cret-s3",
            b"{\"ref\":\"dev\"}",
            Some(&good)
        ));
        assert!(!webhook_signature_ok(
            b"s3cret-s3cret-s3",
            b"{\"ref\":\"main\"}",
            None
        ));
        let upper = good.to_uppercase().replace("SHA256=", "sha256=");
        assert!(webhook_signature_ok(
            b"s3cret-s3cret-s3",
            b"{\"ref\":\"main\"}",
            Some(&upper)
        ));
        for bad in ["sha1=abcd", "sha256=zz", "sha256=abc", "", "sha256="] {
            assert!(!webhook_signature_ok(b"k", b"", Some(bad)), "{bad}");
        }
    }

    #[test]
    fn git_settings_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("git.yaml.example");
        let env = Env::from_pairs([
            ("RACK_GATEWAY_GIT_TOKEN", "ghp_example"),
            ("RACK_GATEWAY_WEBHOOK_SECRET", "0123456789abcdef0123"),
            ("STATE_DIRECTORY", "/var/lib/rack-gateway"),
        ]);
        let s = config::load_git_serve(&path, &env).unwrap();
        assert_eq!(s.repo.reference, config::RepoRef::Branch("main".into()));
        assert_eq!(
            s.repo.cache_dir,
            Path::new("/var/lib/rack-gateway/config.git")
        );
        assert_eq!(s.repo.poll_interval, Duration::from_secs(60));
        assert!(!s.repo.allow_non_descendant);
        // Without the token's variable, the error names the file and line.
        let env = Env::from_pairs([("STATE_DIRECTORY", "/x")]);
        let e = config::load_git_serve(&path, &env).unwrap_err().to_string();
        assert!(
            e.contains("git.yaml.example:") && e.contains("RACK_GATEWAY_GIT_TOKEN"),
            "{e}"
        );
    }
}
