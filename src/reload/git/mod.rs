//! The policy repository as a Git remote: fetch one ref into a bare cache
//! repository the gateway owns, check the commit it points to, and read the
//! policy files straight out of that commit's tree.
//!
//! Why it is shaped this way:
//! - **No working tree.** Files are read as blobs from the commit, so nothing
//!   on the local disk (a symlink's target, a stale checkout) can end up in
//!   the policy, and a half-finished checkout can never be loaded.
//! - **Checks before reading.** The commit's SSH signature (when signers are
//!   configured) and its ancestry (unless allowed) are verified before a
//!   single file is read, so an untrusted commit is never parsed.
//! - **Force-pushes are seen, then refused.** The refspec is forced, so the
//!   cache always reflects what the remote says; the ancestry check is what
//!   refuses a rewritten or rolled-back history, with a message naming both
//!   commits, instead of the fetch silently keeping the old one.
//! - **A damaged cache repairs itself.** The cache is only a copy of the
//!   remote: when it stops opening, or its objects or refs are corrupt
//!   (every object read is hash-checked), the fetch is tried once more into
//!   a fresh cache beside it, which replaces the damaged one only if that
//!   fetch succeeds and passes the same checks. The damaged copy is kept as
//!   `<cache>.damaged` (one, the latest) for a post-mortem. If the fresh
//!   fetch fails too (the remote is down, the commit really is refused),
//!   the first error stands and nothing is swapped.
//! - **Blocking on purpose.** libgit2 is synchronous; callers run [`fetch`]
//!   in `tokio::task::spawn_blocking`.
//!
//! Only SSH commit signatures (`gpg.format = ssh`) are supported; OpenPGP and
//! X.509 signatures are reported as unsupported, never as valid.
//!
//! Layout: this module fetches and checks; [`signers`] parses the allowed
//! signers file and verifies signatures; [`tree`] reads a commit's files.

mod signers;
mod tree;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, Oid, RemoteCallbacks,
    RemoteRedirect, Repository, RepositoryInitOptions,
};

use crate::config::Secret;

pub use signers::AllowedSigners;
use signers::SigProblem;
use tree::read_files;

/// Largest policy file read from a commit.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Largest total of all policy files read from a commit.
pub(crate) const MAX_TOTAL_BYTES: u64 = 16 << 20;

/// The only signature namespace accepted: what `git commit -S` uses with
/// `gpg.format = ssh`. A signature made for another purpose (`file`, `email`)
/// over the same bytes must not count as a commit signature.
const NAMESPACE: &str = "git";

/// The folders read one level deep, like the directory loader does.
const FOLDERS: [&str; 2] = ["roles", "tests"];

/// Which commit to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// The ref's full name on the remote.
    fn remote_name(&self) -> String {
        match self {
            GitRef::Branch(b) => format!("refs/heads/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    /// Where the ref lands in the cache repository.
    fn local_name(&self) -> String {
        match self {
            GitRef::Branch(b) => format!("refs/remotes/origin/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    /// Forced (`+`), so a force-push is seen and refused by the ancestry
    /// check rather than silently ignored by the fetch.
    fn refspec(&self) -> String {
        format!("+{}:{}", self.remote_name(), self.local_name())
    }

    fn validate(&self) -> Result<(), GitError> {
        let (kind, name) = match self {
            GitRef::Branch(b) => ("branch", b),
            GitRef::Tag(t) => ("tag", t),
        };
        // `is_valid_name` rejects `*`, `:`, `..`, spaces and control
        // characters, so the name cannot change the refspec's meaning.
        if name.is_empty() || !git2::Reference::is_valid_name(&self.remote_name()) {
            return Err(GitError::InvalidSettings(format!(
                "`{name}` is not a valid {kind} name"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch `{b}`"),
            GitRef::Tag(t) => write!(f, "tag `{t}`"),
        }
    }
}

/// How to authenticate to the remote.
#[derive(Debug, Clone)]
pub enum GitAuth {
    None,
    /// HTTPS: sent as Basic auth, username `x-access-token`, password the token.
    Token(Secret),
    /// SSH with a private key file (optional passphrase).
    SshKey {
        private_key: PathBuf,
        passphrase: Option<Secret>,
    },
}

/// Where the policy repository lives and what a commit must satisfy.
#[derive(Debug, Clone)]
pub struct GitSettings {
    pub url: String,
    pub reference: GitRef,
    pub auth: GitAuth,
    /// A bare repository the gateway owns (created if missing).
    pub cache_dir: PathBuf,
    /// When set, only commits signed (SSH signature, namespace "git") by a
    /// key in this allowed-signers list are loaded. Only the tip is checked:
    /// each loaded commit was verified when it became the tip, and commits
    /// in between are never loaded.
    pub allowed_signers: Option<AllowedSigners>,
    /// Accept a commit that is not a descendant of the one currently loaded.
    /// Off by default: a force-push or a rollback to an older commit is
    /// refused (an attacker with push access could otherwise replay an old,
    /// more permissive policy).
    pub allow_non_descendant: bool,
}

/// A commit's policy files, read after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The 40-hex commit id.
    pub commit: String,
    /// The first line of the commit message (at most 100 characters).
    pub summary: String,
    /// Committer time, unix seconds.
    pub committed_at: i64,
    /// Relative path (`gateway.yaml`, `roles/admin.yaml`) to contents.
    pub files: BTreeMap<String, String>,
    pub signature: SignatureStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No allowed signers are configured.
    NotRequired,
    Verified {
        /// The principals field of the allowed_signers line that matched.
        principal: String,
        /// `SHA256:…`, as `ssh-keygen -l` prints it.
        key_fingerprint: String,
    },
}

/// Why a fetch did not produce a snapshot. Messages are one line and never
/// contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("invalid git source settings: {0}")]
    InvalidSettings(String),
    #[error("git cache repository {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
    #[error("cannot reach git remote {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("authentication to git remote {url} failed: {message}")]
    AuthFailed { url: String, message: String },
    #[error("git remote {url} is not trusted (TLS certificate or SSH host key): {message}")]
    RemoteNotTrusted { url: String, message: String },
    #[error("fetching from git remote {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("{reference} not found on git remote {url}")]
    RefNotFound { url: String, reference: String },
    #[error("{reference} points at {id}, which is not a commit")]
    NotACommit { reference: String, id: String },
    #[error("commit {commit}: corrupt or missing objects in the cache repository: {message}")]
    Corrupt { commit: String, message: String },
    #[error(
        "commit {new} is not a descendant of the loaded commit {current}{}: refusing a \
         force-push or rollback (allow_non_descendant accepts it)",
        if *.current_known { "" } else { " (which the cache repository does not have)" }
    )]
    NotDescendant {
        current: String,
        new: String,
        current_known: bool,
    },
    #[error("commit {commit} is not signed, and allowed signers are configured")]
    Unsigned { commit: String },
    #[error("commit {commit} has {kind} signature; only SSH signatures are supported")]
    UnsupportedSignature { commit: String, kind: &'static str },
    #[error("commit {commit}: bad signature: {reason}")]
    BadSignature { commit: String, reason: String },
    #[error(
        "commit {commit} is signed by key {fingerprint}, which the allowed signers do not \
         trust for git"
    )]
    UntrustedSigner { commit: String, fingerprint: String },
    #[error("commit {commit}: {path} is {size} bytes, more than the {MAX_FILE_BYTES}-byte limit")]
    FileTooLarge {
        commit: String,
        path: String,
        size: u64,
    },
    #[error("commit {commit}: the policy files total more than {MAX_TOTAL_BYTES} bytes")]
    TreeTooLarge { commit: String },
    #[error("commit {commit}: {path} is not valid UTF-8")]
    NotUtf8 { commit: String, path: String },
}

impl GitError {
    /// Whether the cache repository itself may be what failed, so that a
    /// fresh copy of the remote could succeed: it does not open, an object
    /// is corrupt, the fetch failed in a way that is not the network's, the
    /// remote's or the commit's (e.g. a corrupt ref), or the loaded commit
    /// is missing from a cache that should have it.
    fn cache_may_be_damaged(&self) -> bool {
        matches!(
            self,
            GitError::Cache { .. }
                | GitError::Corrupt { .. }
                | GitError::Fetch { .. }
                | GitError::NotDescendant {
                    current_known: false,
                    ..
                }
        )
    }

    /// The commit the failure is about, if any (for the audit log).
    pub fn commit(&self) -> Option<&str> {
        match self {
            GitError::Corrupt { commit, .. }
            | GitError::Unsigned { commit }
            | GitError::UnsupportedSignature { commit, .. }
            | GitError::BadSignature { commit, .. }
            | GitError::UntrustedSigner { commit, .. }
            | GitError::FileTooLarge { commit, .. }
            | GitError::TreeTooLarge { commit }
            | GitError::NotUtf8 { commit, .. } => Some(commit),
            GitError::NotDescendant { new, .. } => Some(new),
            GitError::InvalidSettings(_)
            | GitError::Cache { .. }
            | GitError::Unreachable { .. }
            | GitError::AuthFailed { .. }
            | GitError::RemoteNotTrusted { .. }
            | GitError::Fetch { .. }
            | GitError::RefNotFound { .. }
            | GitError::NotACommit { .. } => None,
        }
    }
}

/// Must run once in `main()` before any thread starts: git2's first use
/// probes for OpenSSL certificates and *sets environment variables*
/// (openssl-probe), which is only sound while the process is single-threaded.
///
/// The options set here are libgit2's defaults, stated explicitly because
/// they matter: every object read is hash-checked (a corrupt cache is an
/// error, not a different policy), and objects written must be valid.
///
/// Network timeouts are *not* set: `git2::opts::set_server_*_timeout_*` are
/// `unsafe fn`s and this crate forbids unsafe code. libgit2's default is no
/// timeout, so a remote that stalls mid-transfer holds the blocking thread.
pub fn init() {
    git2::opts::strict_hash_verification(true);
    git2::opts::strict_object_creation(true);
}

/// A revision's policy files read straight from its tree, with the same
/// limits as git mode (for `rack-gateway diff --repo`): the 40-hex commit
/// id and the files. `rev` is anything `git rev-parse` accepts.
pub fn read_revision(
    repo: &Repository,
    rev: &str,
) -> Result<(String, BTreeMap<String, String>), String> {
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| format!("revision `{rev}`: {}", e.message()))?;
    let files = read_files(repo, &commit).map_err(|e| e.to_string())?;
    Ok((commit.id().to_string(), files))
}

/// Fetches the ref from the remote into the bare cache repository and returns
/// the snapshot of the commit it points to, or `Ok(None)` when that is still
/// `current` (a reload that changes nothing does nothing).
///
/// The signature (when required) and the ancestry (unless allowed) are
/// verified before any file is read. An unchanged commit is not checked
/// again, so after changing `allowed_signers` pass `current = None` (with
/// `allow_non_descendant` as before) to re-check the loaded commit.
pub fn fetch(settings: &GitSettings, current: Option<&str>) -> Result<Option<Snapshot>, GitError> {
    settings.reference.validate()?;
    match fetch_into(&settings.cache_dir, settings, current) {
        Err(e) if e.cache_may_be_damaged() && settings.cache_dir.exists() => {
            rebuild(settings, current, e)
        }
        r => r,
    }
}

/// [`fetch`] again into a fresh cache beside the damaged one, swapped in
/// only when that succeeds; otherwise `damage` (the first error) stands.
fn rebuild(
    settings: &GitSettings,
    current: Option<&str>,
    damage: GitError,
) -> Result<Option<Snapshot>, GitError> {
    let cache = &settings.cache_dir;
    let sibling = |suffix: &str| {
        let mut name = cache.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (fresh, damaged) = (sibling(".rebuild"), sibling(".damaged"));
    // Left over from an earlier attempt that was cut short.
    let _ = std::fs::remove_dir_all(&fresh);
    let result = match fetch_into(&fresh, settings, current) {
        Ok(r) => r,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(damage);
        }
    };
    let swap = || -> std::io::Result<()> {
        match std::fs::remove_dir_all(&damaged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(cache, &damaged)?;
        std::fs::rename(&fresh, cache)
    };
    if let Err(e) = swap() {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(GitError::Cache {
            path: cache.clone(),
            message: format!("{damage}; rebuilt it from the remote but could not swap it in: {e}"),
        });
    }
    tracing::warn!(
        cache = %cache.display(),
        damaged = %damaged.display(),
        error = %damage,
        "the git cache repository was damaged; rebuilt it from the remote"
    );
    Ok(result)
}

/// One fetch into the cache repository at `dir`.
fn fetch_into(
    dir: &Path,
    settings: &GitSettings,
    current: Option<&str>,
) -> Result<Option<Snapshot>, GitError> {
    let repo = open_cache(dir)?;
    let tip = fetch_ref(&repo, settings)?;
    let commit = peel_to_commit(&repo, tip, &settings.reference)?;
    let id = commit.id();
    if current == Some(id.to_string().as_str()) {
        return Ok(None);
    }
    let signature = match &settings.allowed_signers {
        None => SignatureStatus::NotRequired,
        Some(signers) => verify_commit(&repo, id, signers)?,
    };
    if let (Some(current), false) = (current, settings.allow_non_descendant) {
        check_descendant(&repo, id, current)?;
    }
    let files = read_files(&repo, &commit)?;
    Ok(Some(Snapshot {
        commit: id.to_string(),
        summary: summary(commit.message_bytes()),
        committed_at: commit.time().seconds(),
        files,
        signature,
    }))
}

// ---------------------------------------------------------------------------
// Fetching

/// Opens the cache repository, creating it (bare) when it does not exist.
fn open_cache(dir: &Path) -> Result<Repository, GitError> {
    let err = |e: git2::Error| GitError::Cache {
        path: dir.to_path_buf(),
        message: e.message().to_string(),
    };
    match Repository::open_bare(dir) {
        Ok(repo) => Ok(repo),
        Err(e) if e.code() == ErrorCode::NotFound => {
            Repository::init_opts(dir, RepositoryInitOptions::new().bare(true).mkpath(true))
                .map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

/// Fetches just the wanted ref and returns the id the remote advertised for
/// it (for a tag, possibly a tag object).
fn fetch_ref(repo: &Repository, settings: &GitSettings) -> Result<Oid, GitError> {
    let url = redact_url(&settings.url);
    let mut remote = repo
        .remote_anonymous(&settings.url)
        .map_err(|e| GitError::InvalidSettings(format!("git url {url}: {}", e.message())))?;
    let auth = Credentials::new(&settings.auth);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|u, user, allowed| auth.get(u, user, allowed));
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false)
        // Off-site redirects would carry the token to another host.
        .follow_redirects(RemoteRedirect::None);
    let fetched = remote.fetch(&[settings.reference.refspec()], Some(&mut options), None);
    drop(options);
    fetched.map_err(|e| auth.classify(e, &url, &settings.url))?;

    // The advertised refs stay available after the fetch disconnects. They
    // decide whether the ref exists *now*: a local copy from an earlier
    // fetch must not stand in for a ref the remote has deleted.
    let wanted = settings.reference.remote_name();
    let heads = remote.list().map_err(|e| GitError::Fetch {
        url: url.clone(),
        message: e.message().to_string(),
    })?;
    heads
        .iter()
        .find(|h| h.name() == wanted)
        .map(|h| h.oid())
        .ok_or_else(|| GitError::RefNotFound {
            url,
            reference: settings.reference.to_string(),
        })
}

/// Hands out the configured credentials at most once per fetch.
///
/// libgit2 calls the credentials callback again every time the server
/// rejects what it got, forever; the second call therefore fails the fetch
/// with "authentication failed" instead of looping.
struct Credentials<'a> {
    auth: &'a GitAuth,
    attempts: Cell<u32>,
    /// Set when the callback refused: why authentication failed.
    refused: RefCell<Option<String>>,
}

impl<'a> Credentials<'a> {
    fn new(auth: &'a GitAuth) -> Self {
        Credentials {
            auth,
            attempts: Cell::new(0),
            refused: RefCell::new(None),
        }
    }

    fn get(
        &self,
        _url: &str,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = username_from_url.unwrap_or("git");
        // SSH first asks for the user name alone; that is not an attempt.
        if allowed == CredentialType::USERNAME {
            return Cred::username(user);
        }
        let attempt = self.attempts.get();
        self.attempts.set(attempt + 1);
        if attempt > 0 {
            return self.refuse("the remote rejected the configured credentials");
        }
        match self.auth {
            GitAuth::Token(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext("x-access-token", token.expose())
            }
            GitAuth::SshKey { private_key, .. }
                if allowed.contains(CredentialType::SSH_KEY) && !private_key.is_file() =>
            {
                // libssh2's own message for this is obscure.
                self.refuse(&format!(
                    "SSH private key {} is not a readable file",
                    private_key.display()
                ))
            }
            GitAuth::SshKey {
                private_key,
                passphrase,
            } if allowed.contains(CredentialType::SSH_KEY) => Cred::ssh_key(
                user,
                None,
                private_key,
                passphrase.as_ref().map(Secret::expose),
            ),
            GitAuth::None => self.refuse("the remote requires credentials and none are configured"),
            GitAuth::Token(_) => self.refuse("the remote does not accept a token here"),
            GitAuth::SshKey { .. } => self.refuse("the remote does not accept an SSH key here"),
        }
    }

    fn refuse(&self, why: &str) -> Result<Cred, git2::Error> {
        *self.refused.borrow_mut() = Some(why.to_string());
        Err(git2::Error::from_str(why))
    }

    /// Maps a failed fetch to an error that says what to fix.
    fn classify(&self, e: git2::Error, url: &str, raw_url: &str) -> GitError {
        let message = self.scrub(e.message());
        let url = url.to_string();
        if is_missing_local_path(raw_url) {
            // libgit2 says "unsupported URL protocol" for these.
            return GitError::Unreachable {
                url,
                message: "no such local path".into(),
            };
        }
        if let Some(why) = self.refused.borrow().clone() {
            return GitError::AuthFailed { url, message: why };
        }
        match (e.code(), e.class()) {
            (ErrorCode::Auth, _) => GitError::AuthFailed { url, message },
            (ErrorCode::Certificate, _) => GitError::RemoteNotTrusted { url, message },
            (_, ErrorClass::Net | ErrorClass::Os) => GitError::Unreachable { url, message },
            // A local path that does not exist (or is not a repository).
            (ErrorCode::NotFound, ErrorClass::Repository) => GitError::Unreachable { url, message },
            _ => GitError::Fetch { url, message },
        }
    }

    /// libgit2 does not echo credentials, but a message is logged, so make
    /// sure of it.
    fn scrub(&self, message: &str) -> String {
        let secret = match self.auth {
            GitAuth::Token(t) => Some(t.expose()),
            GitAuth::SshKey { passphrase, .. } => passphrase.as_ref().map(Secret::expose),
            GitAuth::None => None,
        };
        match secret {
            Some(s) if !s.is_empty() => message.replace(s, "[redacted]"),
            _ => message.to_string(),
        }
    }
}

/// A remote given as a local path (absolute or `./`, `../`) that does not
/// exist.
fn is_missing_local_path(url: &str) -> bool {
    let local = url.starts_with('/') || url.starts_with("./") || url.starts_with("../");
    local && !Path::new(url).exists()
}

/// The URL for messages: a password in its userinfo is replaced.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:[redacted]@{host}{path}")
        }
        _ => url.to_string(),
    }
}

fn peel_to_commit<'r>(
    repo: &'r Repository,
    id: Oid,
    reference: &GitRef,
) -> Result<git2::Commit<'r>, GitError> {
    let object = repo.find_object(id, None).map_err(|e| GitError::Corrupt {
        commit: id.to_string(),
        message: e.message().to_string(),
    })?;
    object.peel_to_commit().map_err(|_| GitError::NotACommit {
        reference: reference.to_string(),
        id: id.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Checks

/// Refuses `new` unless it descends from `current`. A `current` the cache
/// does not know (the cache was wiped, or the id is garbage) cannot be
/// proven an ancestor, so it is refused too: fail closed.
fn check_descendant(repo: &Repository, new: Oid, current: &str) -> Result<(), GitError> {
    let known = Oid::from_str(current)
        .ok()
        .filter(|_| current.len() == 40)
        .filter(|oid| repo.find_commit(*oid).is_ok());
    let descends = match known {
        Some(cur) => repo
            .graph_descendant_of(new, cur)
            .map_err(|e| GitError::Corrupt {
                commit: new.to_string(),
                message: e.message().to_string(),
            })?,
        None => false,
    };
    if descends {
        Ok(())
    } else {
        Err(GitError::NotDescendant {
            current: current.to_string(),
            new: new.to_string(),
            current_known: known.is_some(),
        })
    }
}

/// Verifies the tip commit's SSH signature against the allowed signers.
///
/// Only the tip is checked, not the history between the loaded commit and
/// it: every commit the gateway loads is verified at the moment it becomes
/// the tip, and commits in between are never loaded, so their contents never
/// take effect. (An unsigned intermediate commit can only matter through the
/// tip's tree, which the tip's signature covers.)
fn verify_commit(
    repo: &Repository,
    id: Oid,
    signers: &AllowedSigners,
) -> Result<SignatureStatus, GitError> {
    let commit = id.to_string();
    let (signature, signed) = match repo.extract_signature(&id, None) {
        Ok(parts) => parts,
        Err(e) if e.code() == ErrorCode::NotFound => return Err(GitError::Unsigned { commit }),
        Err(e) => {
            return Err(GitError::Corrupt {
                commit,
                message: e.message().to_string(),
            })
        }
    };
    match signers.verify(&signature, &signed) {
        Ok((principal, key_fingerprint)) => Ok(SignatureStatus::Verified {
            principal,
            key_fingerprint,
        }),
        Err(SigProblem::Unsupported(kind)) => Err(GitError::UnsupportedSignature { commit, kind }),
        Err(SigProblem::Bad(reason)) => Err(GitError::BadSignature { commit, reason }),
        Err(SigProblem::Untrusted(fingerprint)) => Err(GitError::UntrustedSigner {
            commit,
            fingerprint,
        }),
    }
}

/// The first line of a commit message, with control characters replaced
/// (it goes into logs) and cut to 100 characters.
fn summary(message: &[u8]) -> String {
    const MAX: usize = 100;
    let message = String::from_utf8_lossy(message);
    let line = message.lines().next().unwrap_or("").trim();
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX {
        clean
    } else {
        let mut cut: String = clean.chars().take(MAX - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_passwords() {
        assert_eq!(
            redact_url("https://me:hunter2@example.com/policy.git"),
            "https://me:[redacted]@example.com/policy.git"
        );
        assert_eq!(
            redact_url("https://example.com/policy.git"),
            "https://example.com/policy.git"
        );
        assert_eq!(
            redact_url("git@example.com:policy.git"),
            "git@example.com:policy.git"
        );
    }

    #[test]
    fn summary_is_first_line_without_controls_and_capped() {
        assert_eq!(summary(b"Add role\n\nbody"), "Add role");
        assert_eq!(summary(b"a\x1b[31mred\n"), "a [31mred");
        let long = "x".repeat(150);
        let s = summary(long.as_bytes());
        assert_eq!(s.chars().count(), 100);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn ref_names_that_could_change_the_refspec_are_refused() {
        for bad in ["", "a:b", "a*", "a..b", "a b", "-x/.."] {
            let e = GitRef::Branch(bad.into()).validate().unwrap_err();
            assert!(
                e.to_string().starts_with("invalid git source settings:"),
                "{bad}: {e}"
            );
        }
        GitRef::Branch("release/v1".into()).validate().unwrap();
        GitRef::Tag("v1.2.3".into()).validate().unwrap();
    }
}
