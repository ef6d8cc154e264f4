//! Git mode's local settings (`serve --git <file>`): the listener and the
//! repository to serve, validated like gateway.yaml (every problem at
//! `file:line`). The file stays on the gateway host, outside Git.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::error::{parse_yaml, ConfigError, ConfigErrors, Secret};
use super::raw::{RawSecretRef, RawServerTls};
use super::source::DirSource;
use super::validate::{split_userinfo, Validator};
use super::{Env, ServerTls, Timeouts};

/// Git mode's local settings (`serve --git <file>`): how to listen, and
/// where the config repository comes from. This file stays on the gateway
/// host, outside Git, so whoever controls the Git host cannot change which
/// keys sign the config or where it is fetched from.
#[derive(Debug, Clone)]
pub struct GitServeConfig {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    pub allow_plaintext: bool,
    pub header_read: Duration,
    pub shutdown_grace: Duration,
    pub repo: RepoConfig,
}

/// Which commit of which repository to serve, and how to trust it.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    pub url: String,
    pub reference: RepoRef,
    pub token: Option<Secret>,
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase: Option<Secret>,
    pub poll_interval: Duration,
    pub cache_dir: PathBuf,
    pub webhook_secret: Option<Secret>,
    pub allowed_signers: Option<PathBuf>,
    pub allow_non_descendant: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRef {
    Branch(String),
    Tag(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitServe {
    listen: Option<Spanned<String>>,
    tls: Option<Spanned<RawServerTls>>,
    allow_plaintext: Option<bool>,
    timeouts: Option<RawServeTimeouts>,
    repository: Spanned<RawRepository>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServeTimeouts {
    header_read: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: String,
    branch: Option<String>,
    tag: Option<String>,
    token: Option<RawSecretRef>,
    ssh_key: Option<String>,
    ssh_key_passphrase: Option<RawSecretRef>,
    poll_interval: Option<Spanned<String>>,
    cache_dir: Option<String>,
    webhook_secret: Option<RawSecretRef>,
    allowed_signers: Option<String>,
    allow_non_descendant: Option<bool>,
}

/// Shortest webhook secret accepted: GitHub suggests a high-entropy value.
const MIN_WEBHOOK_SECRET: usize = 16;

/// Loads and validates git mode's local settings file.
pub fn load_git_serve(path: &Path, env: &Env) -> Result<GitServeConfig, ConfigErrors> {
    let display = path.display().to_string();
    let one = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: None,
            column: None,
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| one(format!("cannot read: {e}")))?;
    let raw: RawGitServe = parse_yaml(&display, &text).map_err(|e| ConfigErrors(vec![e]))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let src = DirSource(base.clone());
    let mut v = Validator::new(&base, display.clone(), env, &src);
    let (listen, tls, allow_plaintext) = v.serving(&raw.listen, &raw.tls, raw.allow_plaintext);
    let d = Timeouts::default();
    let t = raw.timeouts.unwrap_or_default();
    let header_read = v.duration(&t.header_read, d.header_read);
    let shutdown_grace = v.duration(&t.shutdown_grace, d.shutdown_grace);
    let repo = v.repository(raw.repository);
    match (v.errors.is_empty(), repo) {
        (true, Some(repo)) => Ok(GitServeConfig {
            file: path.to_path_buf(),
            listen,
            tls,
            allow_plaintext,
            header_read,
            shutdown_grace,
            repo,
        }),
        _ => Err(ConfigErrors(v.errors)),
    }
}

impl Validator<'_> {
    /// The `repository:` block: URL, ref, credentials, cache and trust.
    fn repository(&mut self, raw: Spanned<RawRepository>) -> Option<RepoConfig> {
        let loc = raw.referenced;
        let r = raw.value;
        let before = self.errors.len();
        let url = r.url.trim().to_string();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let ssh_like = match scheme.as_deref() {
            Some("ssh") => true,
            Some("https" | "http" | "git" | "file") => false,
            Some(other) => {
                self.err_at(
                    Some(loc),
                    format!("repository.url: unsupported scheme `{other}` (use https, ssh, git or file)"),
                );
                false
            }
            // scp-like `git@host:org/repo.git`, or a local path.
            None => url.contains('@') && url.contains(':'),
        };
        if url.is_empty() {
            self.err_at(Some(loc), "repository.url is empty");
        }
        if !ssh_like && split_userinfo(&url).1.is_some() {
            self.err_at(
                Some(loc),
                "repository.url must not carry a password; use `token: {env: ...}`",
            );
        }
        let reference = match (r.branch, r.tag) {
            (Some(_), Some(_)) => {
                self.err_at(Some(loc), "repository: set branch or tag, not both");
                RepoRef::Branch(String::new())
            }
            (None, Some(t)) => RepoRef::Tag(t),
            (Some(b), None) => RepoRef::Branch(b),
            (None, None) => RepoRef::Branch("main".into()),
        };
        let (RepoRef::Branch(n) | RepoRef::Tag(n)) = &reference;
        let bad = n.starts_with(['-', '/'])
            || n.contains("..")
            || n.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
        if bad {
            self.err_at(
                Some(loc),
                format!("repository: `{n}` is not a valid ref name"),
            );
        }
        let token = r
            .token
            .as_ref()
            .and_then(|t| self.secret(t, "repository.token", loc));
        if token.is_some() && ssh_like {
            self.err_at(
                Some(loc),
                "repository.token is for https URLs; ssh URLs use ssh_key",
            );
        }
        let ssh_key = r.ssh_key.as_deref().map(|p| self.resolve(p));
        if ssh_key.is_some() && !ssh_like {
            self.err_at(
                Some(loc),
                "repository.ssh_key is for ssh URLs; https URLs use token",
            );
        }
        let ssh_key_passphrase = r
            .ssh_key_passphrase
            .as_ref()
            .and_then(|t| self.secret(t, "repository.ssh_key_passphrase", loc));
        let poll_interval = self.duration(&r.poll_interval, Duration::from_secs(60));
        let cache_dir = match (r.cache_dir, self.env.get("STATE_DIRECTORY")) {
            (Some(d), _) => self.resolve(&d),
            (None, Some(state)) => {
                Path::new(state.split(':').next().unwrap_or(state)).join("config.git")
            }
            (None, None) => {
                self.err_at(
                    Some(loc),
                    "repository.cache_dir is needed (a directory the gateway may write; under systemd StateDirectory= provides one)",
                );
                PathBuf::new()
            }
        };
        let webhook_secret = r
            .webhook_secret
            .as_ref()
            .and_then(|t| self.secret(t, "repository.webhook_secret", loc));
        if let Some(s) = &webhook_secret {
            if !self.env.secrets_optional && s.expose().len() < MIN_WEBHOOK_SECRET {
                self.err_at(
                    Some(loc),
                    format!("repository.webhook_secret must be at least {MIN_WEBHOOK_SECRET} characters"),
                );
            }
        }
        let allowed_signers = r.allowed_signers.as_deref().map(|p| self.resolve(p));
        if self.errors.len() > before {
            return None;
        }
        Some(RepoConfig {
            url,
            reference,
            token,
            ssh_key,
            ssh_key_passphrase,
            poll_interval,
            cache_dir,
            webhook_secret,
            allowed_signers,
            allow_non_descendant: r.allow_non_descendant.unwrap_or(false),
        })
    }
}
