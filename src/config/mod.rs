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
//!
//! Layout: [`error`] holds the leaves the policy loader and the rate limits
//! share (errors, strict YAML, durations, secrets; it imports nothing from
//! the crate, which keeps those loaders from importing this module back);
//! [`raw`] the serde types; [`validate`] raw → [`Config`]; [`source`] where
//! the files come from; [`serve`] git mode's local settings. This module
//! holds the validated types and the entry points.

pub(crate) mod error;
mod raw;
mod serve;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors, Secret};
pub use serve::{load_git_serve, GitServeConfig, RepoConfig, RepoRef};
pub use source::{content_id, snapshot_dir, DirSource, MemSource, Source};
pub(crate) use validate::valid_rack_name;

use error::parse_yaml;
use raw::RawGateway;
use validate::Validator;

/// The file every config directory holds.
pub(crate) const GATEWAY_FILE: &str = "gateway.yaml";

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
    pub(crate) fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Env {
            vars,
            secrets_optional: false,
        }
    }

    /// The same environment, for validating a config without its secrets.
    pub(crate) fn secrets_optional(mut self) -> Self {
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
    /// Concurrent sessions one identity may hold; one viewer with hundreds
    /// of log streams would otherwise hold as many rack connections.
    pub max_sessions_per_identity: usize,
}

/// Upper bound of `websocket.max_sessions_per_identity`.
pub(crate) const MAX_SESSIONS_PER_IDENTITY: u64 = 10_000;

impl Default for WebsocketLimits {
    fn default() -> Self {
        WebsocketLimits {
            idle_timeout: Duration::from_secs(60 * 60),
            max_session: Duration::from_secs(12 * 60 * 60),
            max_sessions_per_identity: 20,
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
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

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
}
