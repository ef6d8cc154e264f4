//! The policy files as written: serde types for the `policy:` block of
//! gateway.yaml, `roles/*.yaml`, `users.yaml` and `ci.yaml`, rejecting
//! unknown keys. [`super::compile`] checks everything else.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicySection {
    pub(super) blocked: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) exceptions: Option<Vec<Spanned<RawException>>>,
    /// `"<rack glob>/<app glob>": [KEY globs]`.
    pub(super) protected_env: Option<BTreeMap<String, Spanned<Vec<String>>>>,
    /// `amr` values that count as multi-factor for `require: {mfa: true}`.
    pub(super) mfa_amr: Option<Spanned<Vec<String>>>,
}

/// `require:` of a role or grant: step-up and CI token claims.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequire {
    pub(super) mfa: Option<bool>,
    /// `12h`, `30m`, `2d`.
    pub(super) max_auth_age: Option<String>,
    /// Claim name → glob a federated CI token's claim must match.
    pub(super) claims: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawException {
    pub(super) role: String,
    pub(super) operations: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    pub(super) description: Option<String>,
    pub(super) inherits: Option<Vec<Spanned<String>>>,
    pub(super) allow: Option<Vec<Spanned<String>>>,
    pub(super) deny: Option<Vec<Spanned<String>>>,
    pub(super) commands: Option<RawCommands>,
    pub(super) run_headers: Option<Vec<Spanned<String>>>,
    pub(super) permissions: Option<Vec<Spanned<String>>>,
    pub(super) env_keys: Option<Vec<Spanned<String>>>,
    pub(super) require: Option<Spanned<RawRequire>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommands {
    pub(super) allow: Option<BTreeMap<String, Spanned<Vec<Spanned<String>>>>>,
    pub(super) deny: Option<BTreeMap<String, Spanned<Vec<Spanned<String>>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    pub(super) role: String,
    pub(super) scope: String,
    /// After this date or RFC 3339 time the grant counts for nothing.
    pub(super) expires: Option<Spanned<String>>,
    pub(super) reason: Option<String>,
    pub(super) require: Option<Spanned<RawRequire>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsersFile {
    pub(super) users: Option<BTreeMap<String, Spanned<RawUser>>>,
    /// Anyone with a verified email in the domain, with these grants.
    pub(super) domains: Option<BTreeMap<String, Spanned<RawUser>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    #[allow(dead_code)]
    pub(super) name: Option<String>,
    pub(super) grants: Vec<Spanned<RawGrant>>,
    pub(super) deny: Option<Vec<Spanned<String>>>,
    /// Tokens issued before this time are refused (revocation without a
    /// database): a date or UTC time.
    pub(super) tokens_valid_after: Option<Spanned<String>>,
    /// After this every grant of the person counts for nothing.
    pub(super) expires: Option<Spanned<String>>,
    pub(super) reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCiFile {
    pub(super) ci: Option<BTreeMap<String, Spanned<RawCi>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCi {
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    pub(super) token_sha256: Option<String>,
    pub(super) federated: Option<RawFederated>,
    pub(super) expires: Spanned<String>,
    pub(super) grants: Vec<Spanned<RawGrant>>,
    pub(super) deny: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFederated {
    pub(super) issuer: String,
    pub(super) audience: String,
    /// Claim name → glob the claim's string value must match.
    #[serde(default)]
    pub(super) claims: BTreeMap<String, String>,
}
