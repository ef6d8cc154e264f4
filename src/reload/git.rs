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
//! - **Blocking on purpose.** libgit2 is synchronous; callers run [`fetch`]
//!   in `tokio::task::spawn_blocking`.
//!
//! Only SSH commit signatures (`gpg.format = ssh`) are supported; OpenPGP and
//! X.509 signatures are reported as unsupported, never as valid.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, FileMode, ObjectType,
    Oid, RemoteCallbacks, RemoteRedirect, Repository, RepositoryInitOptions,
};
use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::config::Secret;

/// Largest policy file read from a commit.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Largest total of all policy files read from a commit.
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;

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
    let repo = open_cache(&settings.cache_dir)?;
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

// ---------------------------------------------------------------------------
// Allowed signers

/// Who may sign policy commits, in the OpenSSH `allowed_signers` format
/// (what `gpg.ssh.allowedSignersFile` points at):
/// `principals [options] keytype base64 [comment]`.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    entries: Vec<Signer>,
}

#[derive(Debug, Clone)]
struct Signer {
    principals: String,
    /// The `namespaces="…"` pattern list, when present.
    namespaces: Option<String>,
    key: ssh_key::public::KeyData,
}

/// Why a signature did not verify, before the commit id is attached.
enum SigProblem {
    Unsupported(&'static str),
    Bad(String),
    Untrusted(String),
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<Self, String> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{display}: cannot read: {e}"))?;
        Self::parse(&text, &display)
    }

    /// Parses the file's text; errors read `file:line: what is wrong`.
    pub fn parse(text: &str, display: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let signer = parse_signer(line).map_err(|e| format!("{display}:{}: {e}", i + 1))?;
            entries.push(signer);
        }
        if entries.is_empty() {
            return Err(format!(
                "{display}: no signers (every commit would be refused)"
            ));
        }
        Ok(AllowedSigners { entries })
    }

    /// Checks an armored signature over `signed`; on success returns the
    /// matching line's principals and the key's fingerprint.
    fn verify(&self, signature: &[u8], signed: &[u8]) -> Result<(String, String), SigProblem> {
        let text = std::str::from_utf8(signature)
            .map_err(|_| SigProblem::Bad("the signature is not text".into()))?;
        let text = text.trim();
        if text.starts_with("-----BEGIN PGP SIGNATURE-----") {
            return Err(SigProblem::Unsupported("an OpenPGP"));
        }
        if text.starts_with("-----BEGIN SIGNED MESSAGE-----") {
            return Err(SigProblem::Unsupported("an X.509"));
        }
        if !text.starts_with("-----BEGIN SSH SIGNATURE-----") {
            return Err(SigProblem::Unsupported("an unknown kind of"));
        }
        let sig = SshSig::from_pem(text)
            .map_err(|e| SigProblem::Bad(format!("malformed SSH signature: {e}")))?;
        if sig.namespace() != NAMESPACE {
            return Err(SigProblem::Bad(format!(
                "made for namespace `{}`, not `{NAMESPACE}`",
                sig.namespace()
            )));
        }
        let key = sig.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let signer = self
            .entries
            .iter()
            .find(|s| &s.key == key && s.allows_namespace(NAMESPACE))
            .ok_or_else(|| SigProblem::Untrusted(fingerprint.clone()))?;
        PublicKey::from(key.clone())
            .verify(NAMESPACE, signed, &sig)
            .map_err(|e| SigProblem::Bad(format!("does not verify: {e}")))?;
        Ok((signer.principals.clone(), fingerprint))
    }
}

impl Signer {
    fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|list| match_pattern_list(list, namespace))
    }
}

/// One `principals [options] keytype base64 [comment]` line.
fn parse_signer(line: &str) -> Result<Signer, String> {
    const SHAPE: &str = "expected `principals [options] keytype base64-key [comment]`";
    let (principals, rest) = next_field(line);
    let (second, rest) = next_field(rest);
    if second.is_empty() {
        return Err(SHAPE.into());
    }
    let (options, keytype, rest) = if is_key_type(second) {
        (None, second, rest)
    } else {
        let (keytype, rest) = next_field(rest);
        if !is_key_type(keytype) {
            // Either the options are followed by a bad key type, or there
            // are no options and the second field is the bad key type.
            let looks_like_options = second.contains('=') || second.contains(',');
            let bad = if looks_like_options || keytype.is_empty() {
                keytype
            } else {
                second
            };
            return Err(format!("unknown key type `{bad}`"));
        }
        (Some(second), keytype, rest)
    };
    let (base64, _comment) = next_field(rest);
    if keytype.is_empty() || base64.is_empty() {
        return Err(SHAPE.into());
    }
    let principals = unquote(principals);
    if principals.is_empty() {
        return Err("empty principals".into());
    }
    let namespaces = match options {
        Some(o) => parse_options(o)?,
        None => None,
    };
    let key = PublicKey::from_openssh(&format!("{keytype} {base64}"))
        .map_err(|e| format!("invalid {keytype} key: {e}"))?;
    if key.algorithm().as_str() != keytype {
        return Err(format!(
            "the key is {}, but the line says {keytype}",
            key.algorithm().as_str()
        ));
    }
    Ok(Signer {
        principals: principals.to_string(),
        namespaces,
        key: key.key_data().clone(),
    })
}

/// The options field: only `namespaces="…"` is understood. Anything else is
/// an error rather than ignored, because ignoring a restriction such as
/// `valid-before` would trust a key longer than its owner meant to.
fn parse_options(options: &str) -> Result<Option<String>, String> {
    let mut namespaces = None;
    for option in split_outside_quotes(options, ',') {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", _) => {
                return Err(
                    "cert-authority lines are not supported (commits signed with \
                            certificates are not verified); list the signing keys themselves"
                        .into(),
                )
            }
            ("namespaces", Some(v)) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                namespaces = Some(v[1..v.len() - 1].to_string());
            }
            ("namespaces", _) => {
                return Err("namespaces needs a quoted list, e.g. namespaces=\"git\"".into())
            }
            ("valid-after" | "valid-before", _) => {
                return Err(format!("option `{name}` is not supported"));
            }
            _ => return Err(format!("unknown option `{option}`")),
        }
    }
    Ok(namespaces)
}

fn is_key_type(s: &str) -> bool {
    s.parse::<ssh_key::Algorithm>().is_ok()
}

/// Splits off the first whitespace-separated field; double quotes protect
/// whitespace inside a field.
fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// OpenSSH pattern-list semantics: comma-separated `*`/`?` wildcards, a
/// leading `!` negates, and any matching negation wins.
fn match_pattern_list(list: &str, value: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',').map(str::trim) {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated.as_bytes(), value.as_bytes()) {
                return false;
            }
        } else if wildcard(pattern.as_bytes(), value.as_bytes()) {
            matched = true;
        }
    }
    matched
}

fn wildcard(pattern: &[u8], value: &[u8]) -> bool {
    match (pattern.first(), value.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard(&pattern[1..], value) || (!value.is_empty() && wildcard(pattern, &value[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard(&pattern[1..], &value[1..]),
        (Some(p), Some(v)) if p == v => wildcard(&pattern[1..], &value[1..]),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Reading the tree

/// Reads the policy files of a commit: `*.yaml` at the root and directly in
/// `roles/` and `tests/`. Symlinks and submodules are skipped: a symlink is
/// a path, and following it would read the local disk.
fn read_files(
    repo: &Repository,
    commit: &git2::Commit<'_>,
) -> Result<BTreeMap<String, String>, GitError> {
    let mut reader = TreeReader {
        repo,
        commit: commit.id().to_string(),
        total: 0,
        files: BTreeMap::new(),
    };
    let tree = commit.tree().map_err(|e| reader.corrupt(e))?;
    reader.read_folder(&tree, "")?;
    for folder in FOLDERS {
        let Some(entry) = tree.get_name(folder) else {
            continue;
        };
        if entry.filemode() != i32::from(FileMode::Tree) {
            continue;
        }
        let sub = repo.find_tree(entry.id()).map_err(|e| reader.corrupt(e))?;
        reader.read_folder(&sub, folder)?;
    }
    Ok(reader.files)
}

struct TreeReader<'r> {
    repo: &'r Repository,
    commit: String,
    total: u64,
    files: BTreeMap<String, String>,
}

impl TreeReader<'_> {
    fn read_folder(&mut self, tree: &git2::Tree<'_>, folder: &str) -> Result<(), GitError> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else { continue };
            if !name.ends_with(".yaml")
                || name.starts_with('.')
                || !is_regular_file(entry.filemode())
            {
                continue;
            }
            let path = match folder {
                "" => name.to_string(),
                f => format!("{f}/{name}"),
            };
            self.read_blob(path, entry.id())?;
        }
        Ok(())
    }

    /// Checks the size from the object header before loading the blob, so an
    /// oversized file is refused without being read into memory.
    fn read_blob(&mut self, path: String, id: Oid) -> Result<(), GitError> {
        let odb = self.repo.odb().map_err(|e| self.corrupt(e))?;
        let (size, kind) = odb.read_header(id).map_err(|e| self.corrupt(e))?;
        let size = size as u64;
        if kind != ObjectType::Blob {
            return Err(GitError::Corrupt {
                commit: self.commit.clone(),
                message: format!("{path} is a {kind}, not a blob"),
            });
        }
        if size > MAX_FILE_BYTES {
            return Err(GitError::FileTooLarge {
                commit: self.commit.clone(),
                path,
                size,
            });
        }
        self.total += size;
        if self.total > MAX_TOTAL_BYTES {
            return Err(GitError::TreeTooLarge {
                commit: self.commit.clone(),
            });
        }
        let blob = self.repo.find_blob(id).map_err(|e| self.corrupt(e))?;
        let text = String::from_utf8(blob.content().to_vec()).map_err(|_| GitError::NotUtf8 {
            commit: self.commit.clone(),
            path: path.clone(),
        })?;
        self.files.insert(path, text);
        Ok(())
    }

    fn corrupt(&self, e: git2::Error) -> GitError {
        GitError::Corrupt {
            commit: self.commit.clone(),
            message: e.message().to_string(),
        }
    }
}

/// Regular files only: not symlinks (0o120000), submodules (0o160000) or
/// trees.
fn is_regular_file(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob) || mode == i32::from(FileMode::BlobExecutable)
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

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINuWrxcwwAMbBpYO2B5mJvKomXxR4yxclvmHNWEZfX65";

    fn err(text: &str) -> String {
        AllowedSigners::parse(text, "signers").unwrap_err()
    }

    #[test]
    fn allowed_signers_parse_plain_and_with_namespaces() {
        let text = format!(
            "# policy signers\n\nalice@example.com {ED25519} alice laptop\n\
             \"bob@example.com,carol@example.com\" namespaces=\"file,git\" {ED25519}\n"
        );
        let s = AllowedSigners::parse(&text, "signers").unwrap();
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.entries[0].principals, "alice@example.com");
        assert_eq!(s.entries[0].namespaces, None);
        assert_eq!(s.entries[1].principals, "bob@example.com,carol@example.com");
        assert_eq!(s.entries[1].namespaces.as_deref(), Some("file,git"));
        assert!(s.entries[1].allows_namespace("git"));
    }

    #[test]
    fn allowed_signers_errors_name_file_and_line() {
        assert_eq!(
            err(&format!("# c\nalice cert-authority {ED25519}\n")),
            "signers:2: cert-authority lines are not supported (commits signed with \
             certificates are not verified); list the signing keys themselves"
        );
        assert_eq!(
            err("\n\nalice ssh-ed25519\n"),
            "signers:3: expected `principals [options] keytype base64-key [comment]`"
        );
        assert_eq!(
            err("alice ssh-ed25519 AAAA-not-base64\n"),
            "signers:1: invalid ssh-ed25519 key: Base64 encoding error: invalid Base64 encoding"
        );
        assert_eq!(
            err("alice ssh-ed2559 AAAA\n"),
            "signers:1: unknown key type `ssh-ed2559`"
        );
        assert_eq!(
            err(&format!("alice valid-before=\"20300101\" {ED25519}\n")),
            "signers:1: option `valid-before` is not supported"
        );
        assert_eq!(
            err(&format!("alice namespaces=git {ED25519}\n")),
            "signers:1: namespaces needs a quoted list, e.g. namespaces=\"git\""
        );
        assert_eq!(
            err(&format!("alice restrict {ED25519}\n")),
            "signers:1: unknown option `restrict`"
        );
        assert_eq!(
            err(&ED25519.replacen("ssh-ed25519", "alice ecdsa-sha2-nistp256", 1)),
            "signers:1: invalid ecdsa-sha2-nistp256 key: unknown algorithm"
        );
        assert_eq!(
            err("# only comments\n\n"),
            "signers: no signers (every commit would be refused)"
        );
    }

    #[test]
    fn namespace_pattern_lists_follow_openssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("file,g?t", "git"));
        assert!(match_pattern_list("*", "git"));
        assert!(!match_pattern_list("*,!git", "git"));
        assert!(!match_pattern_list("file", "git"));
        assert!(!match_pattern_list("gi", "git"));
    }

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
