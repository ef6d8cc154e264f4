//! Where config versions come from: a local directory (snapshotted, so
//! one reload sees one consistent set of files) or a Git repository (read
//! straight from a checked commit's tree). The [`Reloader`](super::Reloader)
//! only sees the [`Fetch`] trait.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{self, MemSource};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
