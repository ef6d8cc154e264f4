//! Hot reload of the config repository: fetch → read the files → parse →
//! validate → run the policy tests → swap atomically.
//!
//! A bad config never replaces a good one: every failure (unreachable
//! remote, invalid YAML, a failing policy test, a refused commit) keeps the
//! current config serving, is logged and audited with its reason and
//! version, shows in `/_gateway/status`, and is retried with backoff.
//! Requests in flight keep the snapshot they started with (`arc-swap`), so
//! no request fails because of a reload.

pub mod git;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};

use crate::audit::{self, Decision};
use crate::clock::unix_now;
use crate::config::{self, Env, MemSource, Secret};
use crate::gateway::{Gateway, Runtime};

/// A set of config files and the version they are.
pub struct Fetched {
    /// A commit id (git) or a content digest (directory).
    pub version: String,
    pub files: MemSource,
    /// The commit's subject line, when there is one.
    pub summary: Option<String>,
    /// How the version's signature was checked, for the status endpoint.
    pub signature: String,
}

/// Why nothing could be fetched; `version` names the commit at fault.
#[derive(Debug, Clone)]
pub struct FetchError {
    pub message: String,
    pub version: Option<String>,
}

/// Where config versions come from. Implementations block (file system,
/// git2), so they run on blocking threads.
pub trait Fetch: Send + Sync + 'static {
    /// The newest version, or `Ok(None)` while it is still `current`.
    fn fetch(&self, current: Option<&str>) -> Result<Option<Fetched>, FetchError>;
    /// Called after `version` went live (git mode persists it for rollback
    /// protection across restarts).
    fn loaded(&self, _version: &str) {}
    /// How the source is named in status and logs.
    fn describe(&self) -> String;
}

/// A config directory on the local disk (a checkout managed elsewhere).
pub struct DirFetch(pub PathBuf);

impl Fetch for DirFetch {
    fn fetch(&self, current: Option<&str>) -> Result<Option<Fetched>, FetchError> {
        let files = config::snapshot_dir(&self.0).map_err(|e| FetchError {
            message: format!("cannot read {}: {e}", self.0.display()),
            version: None,
        })?;
        let version = config::content_id(&files.files);
        if current == Some(version.as_str()) {
            return Ok(None);
        }
        Ok(Some(Fetched {
            version,
            files,
            summary: None,
            signature: "not applicable (local directory)".into(),
        }))
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.0.display())
    }
}

/// A Git repository fetched with git2 into a bare cache; files are read
/// straight from the commit's tree.
pub struct GitFetch {
    settings: crate::reload::git::GitSettings,
    label: String,
    /// Relative paths in gateway.yaml (password files) resolve here: the
    /// settings file's directory, on the gateway host.
    base: PathBuf,
    /// Remembers the last loaded commit across restarts, so rollback
    /// protection also holds for the first fetch of a new process.
    state_file: PathBuf,
    previous: Mutex<Option<String>>,
}

impl GitFetch {
    pub fn new(repo: &config::RepoConfig, base: &Path) -> Result<GitFetch, String> {
        use crate::reload::git::{AllowedSigners, GitAuth, GitRef, GitSettings};
        let allowed_signers = match &repo.allowed_signers {
            Some(p) => Some(AllowedSigners::load(p)?),
            None => None,
        };
        let auth = match (&repo.token, &repo.ssh_key) {
            (Some(t), _) => GitAuth::Token(t.clone()),
            (None, Some(k)) => GitAuth::SshKey {
                private_key: k.clone(),
                passphrase: repo.ssh_key_passphrase.clone(),
            },
            (None, None) => GitAuth::None,
        };
        let (reference, name) = match &repo.reference {
            config::RepoRef::Branch(b) => (GitRef::Branch(b.clone()), format!("branch {b}")),
            config::RepoRef::Tag(t) => (GitRef::Tag(t.clone()), format!("tag {t}")),
        };
        std::fs::create_dir_all(&repo.cache_dir)
            .map_err(|e| format!("cannot create {}: {e}", repo.cache_dir.display()))?;
        let state_file = repo.cache_dir.join("rack-gateway-loaded-commit");
        // A damaged record must not silently switch rollback protection
        // off: refuse to start, saying which file to look at.
        let previous = match std::fs::read_to_string(&state_file) {
            Ok(s) => {
                let id = s.trim();
                if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "{} does not hold a commit id; restore it, or delete it to accept any commit once",
                        state_file.display()
                    ));
                }
                Some(id.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", state_file.display())),
        };
        Ok(GitFetch {
            settings: GitSettings {
                url: repo.url.clone(),
                reference,
                auth,
                cache_dir: repo.cache_dir.clone(),
                allowed_signers,
                allow_non_descendant: repo.allow_non_descendant,
            },
            label: format!("git:{} ({name})", repo.url),
            base: base.to_path_buf(),
            state_file,
            previous: Mutex::new(previous),
        })
    }

    fn read(&self, base: Option<&str>) -> Result<Option<Fetched>, FetchError> {
        let snap = crate::reload::git::fetch(&self.settings, base).map_err(|e| FetchError {
            version: e.commit().map(str::to_string),
            message: e.to_string(),
        })?;
        Ok(snap.map(|s| {
            let short = &s.commit[..s.commit.len().min(12)];
            Fetched {
                files: MemSource {
                    files: s.files,
                    label: format!("git:{short}:"),
                    base: self.base.clone(),
                },
                summary: Some(s.summary),
                signature: match s.signature {
                    crate::reload::git::SignatureStatus::NotRequired => "not required".into(),
                    crate::reload::git::SignatureStatus::Verified {
                        principal,
                        key_fingerprint,
                    } => format!("verified: {principal} ({key_fingerprint})"),
                },
                version: s.commit,
            }
        }))
    }
}

impl Fetch for GitFetch {
    fn fetch(&self, current: Option<&str>) -> Result<Option<Fetched>, FetchError> {
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (current, previous) {
            (Some(c), _) => self.read(Some(c)),
            // First load of this process: the tip must descend from what
            // the last process served; if it is that very commit, read it.
            (None, Some(p)) => match self.read(Some(&p))? {
                Some(f) => Ok(Some(f)),
                None => self.read(None),
            },
            (None, None) => self.read(None),
        }
    }

    fn loaded(&self, version: &str) {
        *self.previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(version.to_string());
        let tmp = self.state_file.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{version}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            tracing::warn!(file = %self.state_file.display(), error = %e, "cannot record the loaded commit; rollback protection will not survive a restart");
        }
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// The reload state the gateway exposes, and the way to ask for a reload
/// now (SIGHUP, the webhook).
#[derive(Default)]
pub struct Control {
    status: Mutex<Status>,
    trigger: Notify,
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

    pub fn set_webhook_secret(&self, secret: Secret) {
        let _ = self.webhook_secret.set(secret);
    }

    pub fn webhook_secret(&self) -> Option<&Secret> {
        self.webhook_secret.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
        tracing::info!(
            version = %f.version,
            source = %self.fetch.describe(),
            policy_cases = cfg.policy_cases,
            "configuration loaded"
        );
        audit_reload(Decision::Allow, &f.version, "configuration loaded");
        Outcome::Swapped(f.version)
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
        audit_reload(Decision::Error, v, &message);
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

fn audit_reload(decision: Decision, version: &str, reason: &str) {
    audit::emit(&audit::Record {
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
pub fn webhook_signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(sig) = decode_hex(hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &sig).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!(
            "sha256={}",
            config::hex(ring::hmac::sign(&key, body).as_ref())
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

    #[test]
    fn a_damaged_loaded_commit_record_refuses_to_start() {
        let cache = tempfile::tempdir().unwrap();
        let repo = config::RepoConfig {
            url: "file:///nonexistent".into(),
            reference: config::RepoRef::Branch("main".into()),
            token: None,
            ssh_key: None,
            ssh_key_passphrase: None,
            poll_interval: Duration::from_secs(60),
            cache_dir: cache.path().to_path_buf(),
            webhook_secret: None,
            allowed_signers: None,
            allow_non_descendant: false,
        };
        assert!(GitFetch::new(&repo, cache.path()).is_ok());
        let state = cache.path().join("rack-gateway-loaded-commit");
        std::fs::write(&state, "not a commit\n").unwrap();
        let e = GitFetch::new(&repo, cache.path()).err().unwrap();
        assert!(e.contains("does not hold a commit id"), "{e}");
        std::fs::write(&state, format!("{}\n", "ab".repeat(20))).unwrap();
        assert!(GitFetch::new(&repo, cache.path()).is_ok());
    }

    #[test]
    fn dir_fetch_reports_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gateway.yaml"), "racks: {}\n").unwrap();
        std::fs::create_dir(dir.path().join("roles")).unwrap();
        std::fs::write(dir.path().join("roles/a.yaml"), "x: 1\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let f = DirFetch(dir.path().to_path_buf());
        let first = f.fetch(None).unwrap().unwrap();
        assert_eq!(
            first.files.files.keys().collect::<Vec<_>>(),
            ["gateway.yaml", "roles/a.yaml"]
        );
        assert!(first.version.starts_with("sha256:"));
        assert!(f.fetch(Some(&first.version)).unwrap().is_none());
        std::fs::write(dir.path().join("notes.txt"), "still ignored").unwrap();
        assert!(f.fetch(Some(&first.version)).unwrap().is_none());
        std::fs::write(dir.path().join("roles/a.yaml"), "x: 2\n").unwrap();
        let second = f.fetch(Some(&first.version)).unwrap().unwrap();
        assert_ne!(second.version, first.version);
    }
}
