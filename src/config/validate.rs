//! Raw → validated: turns the serde types of [`super::raw`] into a
//! [`Config`] whose fields cannot be invalid, resolving secrets and running
//! the policy loader and the rate-limit checks. Every problem is collected
//! with its `file:line` rather than stopping at the first, so an operator
//! sees them all at once and nothing is half-applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::{parse_duration, ConfigError, ConfigErrors, Secret};
use super::raw::{RawGateway, RawIdentity, RawRack, RawSecretRef, RawServerTls};
use super::source::Source;
use super::{
    Config, Env, IdentityConfig, OidcConfig, RackConfig, ServerTls, Timeouts, UpstreamTls,
    WebsocketLimits, DEFAULT_LISTEN, MAX_SESSIONS_PER_IDENTITY,
};

/// Valid rack names: what a URL path segment and a policy glob can carry
/// without escaping.
pub(crate) fn valid_rack_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

pub(super) struct Validator<'a> {
    dir: &'a Path,
    file: String,
    pub(super) env: &'a Env,
    src: &'a dyn Source,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(dir: &'a Path, file: String, env: &'a Env, src: &'a dyn Source) -> Self {
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

    pub(super) fn err_at(
        &mut self,
        loc: Option<serde_saphyr::Location>,
        message: impl Into<String>,
    ) {
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

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub(super) fn duration(&mut self, v: &Option<Spanned<String>>, default: Duration) -> Duration {
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

    /// `websocket.max_sessions_per_identity`: at least 1 (0 would refuse
    /// every session), at most [`MAX_SESSIONS_PER_IDENTITY`].
    pub(super) fn session_cap(&mut self, v: &Option<Spanned<u64>>, default: usize) -> usize {
        let Some(s) = v else {
            return default;
        };
        if !(1..=MAX_SESSIONS_PER_IDENTITY).contains(&s.value) {
            self.err_at(
                Some(s.referenced),
                format!(
                    "websocket.max_sessions_per_identity must be between 1 and {MAX_SESSIONS_PER_IDENTITY}"
                ),
            );
            return default;
        }
        s.value as usize
    }

    /// The listener settings shared by gateway.yaml and the git-mode
    /// settings file: address, TLS, and the plaintext guard.
    pub(super) fn serving(
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

    pub(super) fn gateway(mut self, raw: RawGateway) -> Result<Config, ConfigErrors> {
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
            max_sessions_per_identity: self
                .session_cap(&w.max_sessions_per_identity, dw.max_sessions_per_identity),
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
    /// A CA bundle serve would load must be a readable file holding at
    /// least one PEM certificate (not checked offline, like secrets).
    fn check_ca_file(&mut self, path: Option<&Path>, what: &str, loc: serde_saphyr::Location) {
        let Some(path) = path.filter(|_| !self.env.secrets_optional) else {
            return;
        };
        let problem = match std::fs::read_to_string(path) {
            Err(e) => Some(format!("cannot read {}: {e}", path.display())),
            Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
                Some(format!("{} holds no PEM certificate", path.display()))
            }
            Ok(_) => None,
        };
        if let Some(p) = problem {
            self.err_at(Some(loc), format!("{what}: {p}"));
        }
    }

    pub(super) fn secret(
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
            // Both are resolved before either failure returns: every
            // missing secret is reported in one run.
            let client_id = self.secret(&o.client_id, "identity.oidc.client_id", oloc);
            let client_secret = o
                .client_secret
                .as_ref()
                .map(|s| self.secret(s, "identity.oidc.client_secret", oloc));
            let client_id = client_id?;
            let client_secret = client_secret.map(|s| s.ok_or(())).transpose().ok()?;
            if signing_key.is_none() {
                self.err_at(Some(oloc), "identity.oidc needs identity.signing_key: the gateway signs the tokens it issues after login");
            }
            // Issuers compare as exact strings (OIDC Discovery §4.3): keep any trailing `/`.
            let issuer = o.issuer.clone();
            if !(issuer.starts_with("https://") || issuer.starts_with("http://127.0.0.1") || issuer.starts_with("http://localhost")) {
                self.err_at(Some(oloc), format!("identity.oidc.issuer `{issuer}` must be an https:// URL"));
            }
            let ca_file = o.ca_file.as_deref().map(|f| self.resolve(f));
            self.check_ca_file(ca_file.as_deref(), "identity.oidc.ca_file", oloc);
            Some(OidcConfig {
                issuer,
                client_id: client_id.expose().to_string(),
                client_secret,
                ca_file,
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
            match crate::hex::decode32(&pin.replace(':', "")) {
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
            let ca_file = r.ca_file.as_deref().map(|f| self.resolve(f));
            self.check_ca_file(ca_file.as_deref(), &format!("rack `{name}`: ca_file"), loc);
            UpstreamTls::Verify { ca_file }
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
pub(super) fn split_userinfo(url: &str) -> (String, Option<String>) {
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
