//! The gateway's configuration: `gateway.yaml` in a config directory, parsed
//! into raw serde types and validated into [`Config`], whose fields cannot be
//! invalid.
//!
//! Why the two layers: the raw types mirror the file (and reject unknown keys
//! and duplicate keys, with line and column), while every semantic problem is
//! collected into a list of [`ConfigError`]s, each pointing at `file:line`, so
//! an operator sees all problems at once and nothing is half-applied.
//!
//! Secrets (rack passwords) never live in the config directory, which is meant
//! to be a Git repository: they come from the environment, from files, or from
//! systemd credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The file every config directory holds.
pub const GATEWAY_FILE: &str = "gateway.yaml";

/// One problem in the configuration, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// All problems found while loading a config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The process environment as the loader sees it; injectable for tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Validate without the secrets (`check` in CI has no rack passwords):
    /// a missing password is not an error and loads as empty.
    secrets_optional: bool,
}

impl Env {
    /// The real process environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Env {
            vars,
            secrets_optional: false,
        }
    }

    /// The same environment, for validating a config without its secrets.
    pub fn secrets_optional(mut self) -> Self {
        self.secrets_optional = true;
        self
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            secrets_optional: false,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
}

// ---------------------------------------------------------------------------
// Raw file format

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Spanned<String>>,
    tls: Option<Spanned<RawServerTls>>,
    allow_plaintext: Option<bool>,
    timeouts: Option<RawTimeouts>,
    websocket: Option<RawWebsocket>,
    discover_racks_from_env: Option<bool>,
    racks: Option<BTreeMap<String, Spanned<RawRack>>>,
    policy: Option<crate::policy::load::RawPolicySection>,
    identity: Option<Spanned<RawIdentity>>,
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client.
    trusted_proxies: Option<Vec<Spanned<String>>>,
    audit: Option<RawAudit>,
    rate_limits: Option<crate::ratelimit::RawRateLimits>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    /// Run/exec commands matching one of these are recorded redacted.
    redact_commands: Option<Spanned<Vec<String>>>,
}

/// Where a secret comes from: exactly one of an environment variable, a
/// file, or a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    env: Option<String>,
    file: Option<String>,
    credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    url: String,
    token_ttl: Option<Spanned<String>>,
    signing_key: Option<RawSecretRef>,
    signing_key_id: Option<String>,
    #[serde(default)]
    verification_keys: Vec<RawVerificationKey>,
    oidc: Option<Spanned<RawOidc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerificationKey {
    id: String,
    #[serde(flatten)]
    source: RawSecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: String,
    client_id: RawSecretRef,
    client_secret: Option<RawSecretRef>,
    ca_file: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allowed_domains: Vec<String>,
    hosted_domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert_file: String,
    key_file: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
    header_read: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebsocket {
    idle_timeout: Option<Spanned<String>>,
    max_session: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRack {
    url: String,
    password_env: Option<String>,
    password_file: Option<String>,
    password_credential: Option<String>,
    ca_file: Option<String>,
    pin_sha256: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    allow_plaintext: bool,
}

// ---------------------------------------------------------------------------
// Validated config

/// Server certificate and key files for TLS termination.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Where the `tls:` block is, for errors found while loading the files.
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect to a rack.
    pub connect: Duration,
    /// Longest silence tolerated while waiting for a rack's response or
    /// between body chunks; there is deliberately no total timeout, because
    /// promote and app create can block for minutes and uploads are large.
    pub idle: Duration,
    /// Time a client has to send a complete request head.
    pub header_read: Duration,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(15 * 60),
            header_read: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebsocketLimits {
    /// A session with no bytes in either direction for this long is closed
    /// (the CLI pings every 5 s, so only dead peers hit it).
    pub idle_timeout: Duration,
    /// Hard cap on any session's length.
    pub max_session: Duration,
}

impl Default for WebsocketLimits {
    fn default() -> Self {
        WebsocketLimits {
            idle_timeout: Duration::from_secs(60 * 60),
            max_session: Duration::from_secs(12 * 60 * 60),
        }
    }
}

/// How the gateway checks a rack's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Verify against the bundled Mozilla roots, or only against `ca_file`.
    Verify { ca_file: Option<PathBuf> },
    /// Accept exactly the certificate whose DER SHA-256 is this.
    Pin([u8; 32]),
    /// Accept any certificate (the rack's self-signed one changes on restart).
    InsecureSkipVerify,
}

/// One rack the gateway fronts.
#[derive(Debug, Clone)]
pub struct RackConfig {
    pub name: String,
    /// Scheme, authority and optional base path of the rack API.
    pub url: http::Uri,
    pub password: Secret,
    pub tls: UpstreamTls,
    /// Where it was defined: `gateway.yaml:12` or `env RACK_URL_STAGING`.
    pub defined_at: String,
}

/// The gateway's own identity settings: the tokens it mints after a login,
/// and the OpenID Connect provider people log in with.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Public base URL of the gateway (issuer of its tokens, base of the
    /// login callback), without a trailing slash.
    pub url: String,
    pub token_ttl: Duration,
    /// (key id, Ed25519 private key PEM); `None` when no key is configured
    /// (then nobody can log in, and only CI identities work).
    pub signing_key: Option<(Option<String>, Secret)>,
    /// Older keys still accepted for verification (rotation): (id, PEM).
    pub verification_keys: Vec<(String, Secret)>,
    pub oidc: Option<OidcConfig>,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    /// Emails must be in one of these domains (empty: any).
    pub allowed_domains: Vec<String>,
    /// The ID token's `hd` claim must equal this (Google Workspace).
    pub hosted_domain: Option<String>,
}

/// Everything in a valid config directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    pub allow_plaintext: bool,
    pub timeouts: Timeouts,
    pub websocket: WebsocketLimits,
    pub racks: BTreeMap<String, RackConfig>,
    pub identity: Option<IdentityConfig>,
    /// The access policy: roles, users, CI identities, blocked operations.
    pub policy: crate::policy::Policy,
    /// Static CI tokens from ci.yaml, stored only as SHA-256.
    pub ci_tokens: Vec<crate::policy::load::CiToken>,
    /// CI identities that present their CI system's own OIDC token.
    pub federated: Vec<crate::policy::load::FederatedIdentity>,
    /// How many policy test cases passed while loading.
    pub policy_cases: usize,
    pub trusted_proxies: Vec<crate::http::clientip::Cidr>,
    pub rate_limits: crate::ratelimit::RateSettings,
    /// How run/exec commands are recorded in the audit trail.
    pub redactor: crate::audit::redact::CommandRedactor,
}

/// Default listen address: loopback, so a fresh install never exposes
/// plaintext HTTP by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// Where a config repository's files come from: a directory, or files
/// held in memory (the demo; a Git commit's tree).
pub trait Source {
    /// Reads a file by its path relative to the config root; `Ok(None)`
    /// when it does not exist.
    fn read(&self, rel: &str) -> std::io::Result<Option<String>>;
    /// The `*.yaml` files directly inside a folder, as relative paths, sorted.
    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>>;
    /// How to name a file in messages.
    fn display(&self, rel: &str) -> String;
    /// The local directory relative paths in gateway.yaml (TLS files,
    /// password files) resolve against.
    fn base_dir(&self) -> PathBuf;
}

/// A config repository checked out in a directory.
pub struct DirSource(pub PathBuf);

impl Source for DirSource {
    fn read(&self, rel: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.0.join(rel)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>> {
        let dir = self.0.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && !name.starts_with('.') && e.file_type()?.is_file() {
                out.push(format!("{folder}/{name}"));
            }
        }
        out.sort();
        Ok(out)
    }

    fn display(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }

    fn base_dir(&self) -> PathBuf {
        self.0.clone()
    }
}

/// Config files held in memory, keyed by relative path.
pub struct MemSource {
    pub files: BTreeMap<String, String>,
    /// Prefix for messages, including its separator: `demo:`,
    /// `git:abc1234:`, or a directory path ending in `/`.
    pub label: String,
    pub base: PathBuf,
}

impl Source for MemSource {
    fn read(&self, rel: &str) -> std::io::Result<Option<String>> {
        Ok(self.files.get(rel).cloned())
    }

    fn list_yaml(&self, folder: &str) -> std::io::Result<Vec<String>> {
        let prefix = format!("{folder}/");
        Ok(self
            .files
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/') && rest.ends_with(".yaml"))
            })
            .cloned()
            .collect())
    }

    fn display(&self, rel: &str) -> String {
        format!("{}{rel}", self.label)
    }

    fn base_dir(&self) -> PathBuf {
        self.base.clone()
    }
}

/// The folders (besides the root) whose `*.yaml` files make up a config
/// repository; a snapshot reads these and nothing else.
pub const CONFIG_FOLDERS: &[&str] = &["roles", "tests"];

/// Reads every file the loader can read from `dir` into memory, so one
/// reload validates and swaps one consistent set of files even while an
/// editor or `git pull` is rewriting them.
pub fn snapshot_dir(dir: &Path) -> std::io::Result<MemSource> {
    let disk = DirSource(dir.to_path_buf());
    let mut files = BTreeMap::new();
    let mut names = disk.list_yaml(".")?;
    for folder in CONFIG_FOLDERS {
        names.extend(disk.list_yaml(folder)?);
    }
    for name in names {
        let rel = name.strip_prefix("./").unwrap_or(&name).to_string();
        if let Some(text) = disk.read(&rel)? {
            files.insert(rel, text);
        }
    }
    let mut label = dir.display().to_string();
    if !label.ends_with('/') {
        label.push('/');
    }
    Ok(MemSource {
        files,
        label,
        base: dir.to_path_buf(),
    })
}

/// A short, stable id of a snapshot's contents (`sha256:` + 16 hex), the
/// directory-mode counterpart of a commit id.
pub fn content_id(files: &BTreeMap<String, String>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, text) in files {
        for part in [name.as_bytes(), text.as_bytes()] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
    }
    format!("sha256:{}", &hex(ctx.finish().as_ref())[..16])
}

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

/// Loads and validates the config repository in `dir`.
pub fn load_dir(dir: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    load(&DirSource(dir.to_path_buf()), env)
}

/// Loads and validates a config repository — gateway.yaml, roles, users,
/// CI identities — and runs its policy tests, reporting every problem.
pub fn load(src: &dyn Source, env: &Env) -> Result<Config, ConfigErrors> {
    let display = src.display(GATEWAY_FILE);
    let one = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: display.clone(),
            line: None,
            column: None,
            message,
        }])
    };
    let text = match src.read(GATEWAY_FILE) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(one("cannot read: not found".into())),
        Err(e) => return Err(one(format!("cannot read: {e}"))),
    };
    let raw: RawGateway = parse_yaml(&display, &text).map_err(|e| ConfigErrors(vec![e]))?;
    let base = src.base_dir();
    Validator::new(&base, display.clone(), env, src).gateway(raw)
}

/// Parses one YAML document strictly (duplicate keys and unknown fields are
/// errors, booleans must be `true`/`false`), with a one-line error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let render = serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        };
        let mut message = e.render_with_options(render);
        let loc = e.location();
        if let Some(l) = loc {
            let suffix = format!(" at line {}, column {}", l.line(), l.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        if let Some(i) = message.find(", set DuplicateKeyPolicy") {
            message.truncate(i);
        }
        ConfigError {
            file: file.to_string(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message: message.lines().next().unwrap_or("invalid YAML").to_string(),
        }
    })
}

/// Parses durations like `500ms`, `10s`, `15m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{s}` needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (expected e.g. 30s, 15m, 2h)"))?;
    let mult_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit in `{s}` (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(mult_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

/// Valid rack names: what a URL path segment and a policy glob can carry
/// without escaping.
pub fn valid_rack_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

struct Validator<'a> {
    dir: &'a Path,
    file: String,
    env: &'a Env,
    src: &'a dyn Source,
    errors: Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    fn new(dir: &'a Path, file: String, env: &'a Env, src: &'a dyn Source) -> Self {
        Validator {
            dir,
            file,
            env,
            src,
            errors: Vec::new(),
        }
    }

    fn file(&self, rel: &str) -> Result<Option<crate::policy::load::File>, ConfigError> {
        let display = self.src.display(rel);
        match self.src.read(rel) {
            Ok(Some(text)) => Ok(Some(crate::policy::load::File {
                rel: rel.to_string(),
                display,
                text,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(ConfigError {
                file: display,
                line: None,
                column: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    fn folder(&self, folder: &str) -> Result<Vec<crate::policy::load::File>, ConfigError> {
        let names = self.src.list_yaml(folder).map_err(|e| ConfigError {
            file: self.src.display(folder),
            line: None,
            column: None,
            message: format!("cannot list: {e}"),
        })?;
        let mut out = Vec::new();
        for n in names {
            if let Some(f) = self.file(&n)? {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn policy_inputs(
        &self,
        section: Option<crate::policy::load::RawPolicySection>,
        racks: Vec<String>,
    ) -> Result<crate::policy::load::Inputs<'_>, ConfigError> {
        Ok(crate::policy::load::Inputs {
            gateway_display: &self.file,
            policy_section: section,
            roles: self.folder("roles")?,
            users: self.file("users.yaml")?,
            ci: self.file("ci.yaml")?,
            tests: self.folder("tests")?,
            racks,
        })
    }

    fn err_at(&mut self, loc: Option<serde_saphyr::Location>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            message: message.into(),
        });
    }

    fn at(&self, loc: serde_saphyr::Location) -> String {
        format!("{}:{}", self.file, loc.line())
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(&s.value) {
                Ok(d) if d.is_zero() => {
                    self.err_at(Some(s.referenced), "duration must be greater than zero");
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.err_at(Some(s.referenced), e);
                    default
                }
            },
        }
    }

    /// The listener settings shared by gateway.yaml and the git-mode
    /// settings file: address, TLS, and the plaintext guard.
    fn serving(
        &mut self,
        listen: &Option<Spanned<String>>,
        tls: &Option<Spanned<RawServerTls>>,
        allow_plaintext: Option<bool>,
    ) -> (SocketAddr, Option<ServerTls>, bool) {
        let default: SocketAddr = DEFAULT_LISTEN
            .parse()
            .expect("default listen address parses");
        let addr = match listen {
            None => default,
            Some(s) => match s.value.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.err_at(
                        Some(s.referenced),
                        format!("listen `{}` is not an address like 0.0.0.0:8443", s.value),
                    );
                    default
                }
            },
        };
        let allow_plaintext = allow_plaintext.unwrap_or(false);
        let tls = tls.as_ref().map(|t| ServerTls {
            cert_file: self.resolve(&t.value.cert_file),
            key_file: self.resolve(&t.value.key_file),
            at: self.at(t.referenced),
        });
        if tls.is_none() && !addr.ip().is_loopback() && !allow_plaintext {
            let loc = listen.as_ref().map(|s| s.referenced);
            self.err_at(
                loc,
                format!(
                    "listen {addr} is not loopback but no `tls:` is configured; \
                     add tls.cert_file/key_file, or set `allow_plaintext: true` if a \
                     TLS-terminating proxy sits in front"
                ),
            );
        }
        (addr, tls, allow_plaintext)
    }

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

    fn gateway(mut self, raw: RawGateway) -> Result<Config, ConfigErrors> {
        let (listen, tls, allow_plaintext) =
            self.serving(&raw.listen, &raw.tls, raw.allow_plaintext);

        let d = Timeouts::default();
        let t = raw.timeouts.unwrap_or_default();
        let timeouts = Timeouts {
            connect: self.duration(&t.connect, d.connect),
            idle: self.duration(&t.idle, d.idle),
            header_read: self.duration(&t.header_read, d.header_read),
            shutdown_grace: self.duration(&t.shutdown_grace, d.shutdown_grace),
        };
        let dw = WebsocketLimits::default();
        let w = raw.websocket.unwrap_or_default();
        let websocket = WebsocketLimits {
            idle_timeout: self.duration(&w.idle_timeout, dw.idle_timeout),
            max_session: self.duration(&w.max_session, dw.max_session),
        };

        let mut racks = BTreeMap::new();
        let raw_racks = raw.racks.unwrap_or_default();
        let raw_rack_names: Vec<String> = raw_racks.keys().cloned().collect();
        for (name, rack) in raw_racks {
            if let Some(r) = self.rack(&name, rack) {
                racks.insert(name, r);
            }
        }
        if raw.discover_racks_from_env.unwrap_or(true) {
            for r in self.env_racks() {
                if racks.contains_key(&r.name) {
                    tracing::warn!(
                        rack = %r.name,
                        "rack defined in {} and by RACK_URL_*; using the file", self.file
                    );
                    continue;
                }
                racks.insert(r.name.clone(), r);
            }
        }

        let identity = raw.identity.and_then(|i| self.identity(i));
        let mut trusted_proxies = Vec::new();
        for p in raw.trusted_proxies.unwrap_or_default() {
            match crate::http::clientip::Cidr::parse(&p.value) {
                Ok(c) => trusted_proxies.push(c),
                Err(e) => self.err_at(Some(p.referenced), format!("trusted_proxies: {e}")),
            }
        }
        let redactor = match raw.audit.and_then(|a| a.redact_commands) {
            None => crate::audit::redact::CommandRedactor::new(&[]).expect("no patterns is valid"),
            Some(r) => match crate::audit::redact::CommandRedactor::new(&r.value) {
                Ok(c) => c,
                Err(e) => {
                    self.err_at(Some(r.referenced), e);
                    crate::audit::redact::CommandRedactor::new(&[]).expect("no patterns is valid")
                }
            },
        };
        let mut rack_names: Vec<String> = raw_rack_names;
        for r in racks.keys() {
            if !rack_names.contains(r) {
                rack_names.push(r.clone());
            }
        }
        let mut loaded = None;
        match self.policy_inputs(raw.policy, rack_names) {
            Ok(inputs) => match crate::policy::load::compile(inputs) {
                Ok(l) => loaded = Some(l),
                Err(errs) => self.errors.extend(errs),
            },
            Err(e) => self.errors.push(e),
        }

        let rate_limits = match crate::ratelimit::validate(
            raw.rate_limits,
            &self.file,
            loaded.as_ref().map(|l| &l.policy),
        ) {
            Ok(r) => r,
            Err(errs) => {
                self.errors.extend(errs);
                Default::default()
            }
        };

        if self.errors.is_empty() {
            Ok(Config {
                dir: self.dir.to_path_buf(),
                listen,
                tls,
                allow_plaintext,
                timeouts,
                websocket,
                racks,
                identity,
                policy: loaded
                    .as_ref()
                    .map(|l| l.policy.clone())
                    .unwrap_or_default(),
                ci_tokens: loaded
                    .as_ref()
                    .map(|l| l.ci_tokens.clone())
                    .unwrap_or_default(),
                federated: loaded
                    .as_ref()
                    .map(|l| l.federated.clone())
                    .unwrap_or_default(),
                policy_cases: loaded.map(|l| l.cases).unwrap_or(0),
                trusted_proxies,
                rate_limits,
                redactor,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    /// Resolves a secret reference; `what` names it in errors.
    fn secret(
        &mut self,
        r: &RawSecretRef,
        what: &str,
        loc: serde_saphyr::Location,
    ) -> Option<Secret> {
        let set = [&r.env, &r.file, &r.credential]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if set != 1 {
            self.err_at(
                Some(loc),
                format!("{what}: set exactly one of env, file, credential (secrets never live in this file)"),
            );
            return None;
        }
        if self.env.secrets_optional {
            return Some(Secret::new(""));
        }
        if let Some(var) = &r.env {
            match self.env.get(var).filter(|v| !v.is_empty()) {
                Some(v) => Some(Secret::new(v)),
                None => {
                    self.err_at(
                        Some(loc),
                        format!("{what}: environment variable {var} is not set"),
                    );
                    None
                }
            }
        } else if let Some(f) = &r.file {
            let path = self.resolve(f);
            self.read_secret_file(what, &path, loc)
        } else {
            let c = r.credential.as_deref().unwrap_or_default();
            match self.env.get("CREDENTIALS_DIRECTORY") {
                Some(dir) if !c.contains('/') => {
                    let path = Path::new(dir).join(c);
                    self.read_secret_file(what, &path, loc)
                }
                _ => {
                    self.err_at(
                        Some(loc),
                        format!("{what}: credential `{c}` needs systemd's CREDENTIALS_DIRECTORY (LoadCredential=) and a name without '/'"),
                    );
                    None
                }
            }
        }
    }

    fn identity(&mut self, raw: Spanned<RawIdentity>) -> Option<IdentityConfig> {
        let loc = raw.referenced;
        let r = raw.value;
        let before = self.errors.len();
        let url = r.url.trim_end_matches('/').to_string();
        match url.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("https"))
                    || (u.scheme_str() == Some("http")
                        && u.host().is_some_and(is_loopback_host)) => {}
            _ => self.err_at(
                Some(loc),
                format!(
                    "identity.url `{}` must be the gateway's public https:// URL",
                    r.url
                ),
            ),
        }
        let token_ttl = self.duration(&r.token_ttl, Duration::from_secs(30 * 86_400));
        let signing_key = r
            .signing_key
            .as_ref()
            .and_then(|k| self.secret(k, "identity.signing_key", loc))
            .map(|k| (r.signing_key_id.clone(), k));
        let mut verification_keys = Vec::new();
        for k in &r.verification_keys {
            if let Some(pem) = self.secret(
                &k.source,
                &format!("identity.verification_keys `{}`", k.id),
                loc,
            ) {
                verification_keys.push((k.id.clone(), pem));
            }
        }
        let oidc = r.oidc.and_then(|o| {
            let oloc = o.referenced;
            let o = o.value;
            let client_id = self.secret(&o.client_id, "identity.oidc.client_id", oloc)?;
            let client_secret = match &o.client_secret {
                Some(s) => Some(self.secret(s, "identity.oidc.client_secret", oloc)?),
                None => None,
            };
            if signing_key.is_none() {
                self.err_at(Some(oloc), "identity.oidc needs identity.signing_key: the gateway signs the tokens it issues after login");
            }
            // Issuers compare as exact strings (OIDC Discovery §4.3): keep any trailing `/`.
            let issuer = o.issuer.clone();
            if !(issuer.starts_with("https://") || issuer.starts_with("http://127.0.0.1") || issuer.starts_with("http://localhost")) {
                self.err_at(Some(oloc), format!("identity.oidc.issuer `{issuer}` must be an https:// URL"));
            }
            Some(OidcConfig {
                issuer,
                client_id: client_id.expose().to_string(),
                client_secret,
                ca_file: o.ca_file.as_deref().map(|f| self.resolve(f)),
                scopes: o.scopes,
                allowed_domains: o.allowed_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                hosted_domain: o.hosted_domain,
            })
        });
        if self.errors.len() != before {
            return None;
        }
        Some(IdentityConfig {
            url,
            token_ttl,
            signing_key,
            verification_keys,
            oidc,
        })
    }

    fn rack(&mut self, name: &str, raw: Spanned<RawRack>) -> Option<RackConfig> {
        let loc = raw.referenced;
        let r = raw.value;
        let before = self.errors.len();
        if !valid_rack_name(name) {
            self.err_at(
                Some(loc),
                format!("rack name `{name}` must be lower-case letters, digits and dashes"),
            );
        }
        let url = self.rack_url(name, &r.url, r.allow_plaintext, Some(loc));
        // The rack's flat password_* keys are the same secret reference as
        // identity's {env|file|credential}.
        let reference = RawSecretRef {
            env: r.password_env.clone(),
            file: r.password_file.clone(),
            credential: r.password_credential.clone(),
        };
        let password = self.secret(&reference, &format!("rack `{name}` password"), loc);
        let set = [
            r.ca_file.is_some(),
            r.pin_sha256.is_some(),
            r.insecure_skip_verify,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            self.err_at(
                Some(loc),
                format!("rack `{name}`: ca_file, pin_sha256 and insecure_skip_verify are mutually exclusive"),
            );
        }
        let tls = if r.insecure_skip_verify {
            UpstreamTls::InsecureSkipVerify
        } else if let Some(pin) = &r.pin_sha256 {
            match parse_hex32(&pin.replace(':', "")) {
                Some(p) => UpstreamTls::Pin(p),
                None => {
                    self.err_at(
                        Some(loc),
                        format!("rack `{name}`: pin_sha256 must be a SHA-256 fingerprint (64 hex digits, colons allowed)"),
                    );
                    UpstreamTls::InsecureSkipVerify
                }
            }
        } else {
            UpstreamTls::Verify {
                ca_file: r.ca_file.as_deref().map(|f| self.resolve(f)),
            }
        };
        if self.errors.len() != before {
            return None;
        }
        Some(RackConfig {
            name: name.to_string(),
            url: url?,
            password: password?,
            tls,
            defined_at: self.at(loc),
        })
    }

    fn read_secret_file(
        &mut self,
        what: &str,
        path: &Path,
        loc: serde_saphyr::Location,
    ) -> Option<Secret> {
        match std::fs::read_to_string(path) {
            Ok(s) => {
                let s = s.trim_end_matches(['\r', '\n']).to_string();
                if s.is_empty() {
                    self.err_at(
                        Some(loc),
                        format!("{what}: file {} is empty", path.display()),
                    );
                    None
                } else {
                    Some(Secret::new(s))
                }
            }
            Err(e) => {
                self.err_at(
                    Some(loc),
                    format!("{what}: cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// Validates a rack URL: https (or http to loopback, or explicitly
    /// allowed), no credentials, no query.
    fn rack_url(
        &mut self,
        name: &str,
        url: &str,
        allow_plaintext: bool,
        loc: Option<serde_saphyr::Location>,
    ) -> Option<http::Uri> {
        let uri: http::Uri = match url.parse() {
            Ok(u) => u,
            Err(_) => {
                self.err_at(
                    loc,
                    format!("rack `{name}`: url `{url}` is not a valid URL"),
                );
                return None;
            }
        };
        let Some(auth) = uri.authority() else {
            self.err_at(loc, format!("rack `{name}`: url `{url}` needs a host"));
            return None;
        };
        if auth.as_str().contains('@') {
            self.err_at(
                loc,
                format!("rack `{name}`: put the rack password in password_env/password_file, not in the url"),
            );
            return None;
        }
        if uri.query().is_some() {
            self.err_at(loc, format!("rack `{name}`: url must not have a query"));
            return None;
        }
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => {
                let loopback = is_loopback_host(auth.host());
                if !loopback && !allow_plaintext {
                    self.err_at(
                        loc,
                        format!(
                            "rack `{name}`: http:// would send the rack password in clear; \
                             use https, or set allow_plaintext: true on this rack"
                        ),
                    );
                    return None;
                }
            }
            _ => {
                self.err_at(loc, format!("rack `{name}`: url must start with https://"));
                return None;
            }
        }
        Some(uri)
    }

    /// Racks from `RACK_URL_<NAME>` / `RACK_TOKEN_<NAME>` pairs, the
    /// convention rack users already have.
    fn env_racks(&mut self) -> Vec<RackConfig> {
        let mut out = Vec::new();
        let pairs: Vec<(String, String)> = self
            .env
            .vars
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("RACK_URL_")?.to_string(), v.clone())))
            .collect();
        for (suffix, value) in pairs {
            let name = suffix.to_ascii_lowercase().replace('_', "-");
            let var = format!("RACK_URL_{suffix}");
            let before = self.errors.len();
            let file = std::mem::replace(&mut self.file, format!("env {var}"));
            if !valid_rack_name(&name) {
                self.err_at(None, format!("derived rack name `{name}` is not valid"));
            }
            // Accept the password embedded as userinfo (how RACK_URL is
            // usually written), or from RACK_TOKEN_<NAME>.
            let (url, embedded) = split_userinfo(&value);
            let token = self
                .env
                .get(&format!("RACK_TOKEN_{suffix}"))
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .or(embedded);
            let uri = self.rack_url(&name, &url, false, None);
            let token = token.or_else(|| self.env.secrets_optional.then(String::new));
            if token.is_none() {
                self.err_at(
                    None,
                    format!("rack `{name}`: set RACK_TOKEN_{suffix} to the rack password"),
                );
            }
            self.file = file;
            if self.errors.len() != before {
                continue;
            }
            if let (Some(url), Some(token)) = (uri, token) {
                out.push(RackConfig {
                    name,
                    url,
                    password: Secret::new(token),
                    tls: UpstreamTls::Verify { ca_file: None },
                    defined_at: format!("env {var}"),
                });
            }
        }
        out
    }
}

/// Splits `https://user:pass@host/x` into (`https://host/x`, Some(pass)).
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let (auth, path) = rest.split_at(auth_end);
    match auth.rsplit_once('@') {
        Some((userinfo, host)) => {
            let pass = userinfo.split_once(':').map(|(_, p)| p).unwrap_or(userinfo);
            let pass = percent_encoding::percent_decode_str(pass)
                .decode_utf8_lossy()
                .into_owned();
            (format!("{scheme}://{host}{path}"), Some(pass))
        }
        None => (url.to_string(), None),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GATEWAY_FILE), yaml).unwrap();
        load_dir(dir.path(), &Env::from_pairs(env.iter().copied()))
    }

    #[test]
    fn minimal_config_with_env_password() {
        let c = load(
            "racks:\n  staging:\n    url: https://rack.example.com\n    password_env: PW\n",
            &[("PW", "hunter2")],
        )
        .unwrap();
        let r = &c.racks["staging"];
        assert_eq!(r.password.expose(), "hunter2");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn reports_every_problem_with_lines() {
        let err = load(
            "listen: 0.0.0.0:80\nracks:\n  Bad_Name:\n    url: ftp://x\n    password_env: NOPE\ntimeouts:\n  idle: 5 parsecs\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("gateway.yaml:1:9: listen 0.0.0.0:80 is not loopback"),
            "{text}"
        );
        assert!(text.contains("rack name `Bad_Name`"), "{text}");
        assert!(text.contains("url must start with https://"), "{text}");
        assert!(text.contains("NOPE is not set"), "{text}");
        assert!(text.contains(":7:9: invalid duration"), "{text}");
    }

    #[test]
    fn duplicate_keys_and_unknown_fields_are_errors() {
        let e = load("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", &[]).unwrap_err();
        assert_eq!(e.0[0].line, Some(2));
        assert!(
            e.0[0].message.contains("duplicate mapping key: listen"),
            "{e}"
        );
        let e = load(
            "racks:\n  a:\n    url: https://x\n    pasword_env: X\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, Some(4));
        assert!(
            e.0[0].message.contains("unknown field `pasword_env`"),
            "{e}"
        );
    }

    #[test]
    fn env_discovery_with_embedded_or_separate_token() {
        let c = load(
            "",
            &[
                ("RACK_URL_US_EAST", "https://convox:p%40ss@rack.example.com"),
                ("RACK_URL_EU", "https://eu.example.com"),
                ("RACK_TOKEN_EU", "tok"),
            ],
        )
        .unwrap();
        assert_eq!(c.racks["us-east"].password.expose(), "p@ss");
        assert_eq!(
            c.racks["us-east"].url.to_string(),
            "https://rack.example.com/"
        );
        assert_eq!(c.racks["eu"].password.expose(), "tok");
        let e = load("", &[("RACK_URL_X", "https://x.example.com")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("env RACK_URL_X: rack `x`: set RACK_TOKEN_X"),
            "{e}"
        );
    }

    #[test]
    fn plaintext_upstream_only_to_loopback_or_opt_in() {
        let e = load(
            "racks:\n  a:\n    url: http://rack.example.com\n    password_env: P\n",
            &[("P", "x")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("send the rack password in clear"));
        load(
            "racks:\n  a:\n    url: http://127.0.0.1:5443\n    password_env: P\n",
            &[("P", "x")],
        )
        .unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1w").is_err());
    }
}
