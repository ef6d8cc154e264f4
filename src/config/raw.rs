//! The raw file format of gateway.yaml: serde types that mirror the file
//! and reject unknown and duplicate keys (with line and column). Nothing
//! here is checked beyond its shape; [`super::validate`] turns these into
//! the validated types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawServerTls>>,
    pub(super) allow_plaintext: Option<bool>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) websocket: Option<RawWebsocket>,
    pub(super) discover_racks_from_env: Option<bool>,
    pub(super) racks: Option<BTreeMap<String, Spanned<RawRack>>>,
    pub(super) policy: Option<crate::policy::load::RawPolicySection>,
    pub(super) identity: Option<Spanned<RawIdentity>>,
    /// Proxies (load balancers) whose `X-Forwarded-For` names the client.
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) audit: Option<RawAudit>,
    pub(super) rate_limits: Option<crate::ratelimit::RawRateLimits>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    /// Run/exec commands matching one of these are recorded redacted.
    pub(super) redact_commands: Option<Spanned<Vec<String>>>,
}

/// Where a secret comes from: exactly one of an environment variable, a
/// file, or a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecretRef {
    pub(super) env: Option<String>,
    pub(super) file: Option<String>,
    pub(super) credential: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) url: String,
    pub(super) token_ttl: Option<Spanned<String>>,
    pub(super) signing_key: Option<RawSecretRef>,
    pub(super) signing_key_id: Option<String>,
    #[serde(default)]
    pub(super) verification_keys: Vec<RawVerificationKey>,
    pub(super) oidc: Option<Spanned<RawOidc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerificationKey {
    pub(super) id: String,
    #[serde(flatten)]
    pub(super) source: RawSecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub(super) issuer: String,
    pub(super) client_id: RawSecretRef,
    pub(super) client_secret: Option<RawSecretRef>,
    pub(super) ca_file: Option<String>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) allowed_domains: Vec<String>,
    pub(super) hosted_domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) cert_file: String,
    pub(super) key_file: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<Spanned<String>>,
    pub(super) idle: Option<Spanned<String>>,
    pub(super) header_read: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebsocket {
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_session: Option<Spanned<String>>,
    pub(super) max_sessions_per_identity: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRack {
    pub(super) url: String,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) password_credential: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) pin_sha256: Option<String>,
    #[serde(default)]
    pub(super) insecure_skip_verify: bool,
    #[serde(default)]
    pub(super) allow_plaintext: bool,
}
