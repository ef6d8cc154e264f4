//! The config snapshot requests are decided with ([`Runtime`]), built from
//! a validated [`Config`] and swapped whole on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigErrors, Timeouts, WebsocketLimits};
use crate::identity::credentials::{self};
use crate::policy::Policy;
use crate::rack::upstream::Rack;

/// Everything a request is decided and forwarded with; swapped whole on
/// reload, so a request sees one consistent snapshot.
pub struct Runtime {
    pub racks: BTreeMap<String, Arc<Rack>>,
    pub policy: Policy,
    pub credentials: credentials::Credentials,
    pub identity: Option<crate::config::IdentityConfig>,
    pub timeouts: Timeouts,
    pub websocket: WebsocketLimits,
    /// The config version that decides requests: a commit id in git mode,
    /// a content digest in directory mode. Every audit record carries it.
    pub version: String,
    pub trusted_proxies: Vec<crate::http::clientip::Cidr>,
    pub redactor: crate::audit::redact::CommandRedactor,
    pub rate_limits: crate::ratelimit::RateSettings,
}

impl Runtime {
    /// Builds upstream clients for every rack; fails with config errors
    /// (file:line) when a rack's TLS material can't be loaded.
    pub fn from_config(cfg: &Config) -> Result<Runtime, ConfigErrors> {
        let mut racks = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, rc) in &cfg.racks {
            match Rack::new(rc, &cfg.timeouts) {
                Ok(r) => {
                    racks.insert(name.clone(), Arc::new(r));
                }
                Err(e) => errors.push(ConfigError {
                    file: rc.defined_at.clone(),
                    line: None,
                    column: None,
                    message: format!("rack `{name}`: {e}"),
                }),
            }
        }
        let keys = match &cfg.identity {
            Some(id) => match token_keys(id) {
                Ok(k) => k,
                Err(message) => {
                    errors.push(ConfigError {
                        file: cfg
                            .dir
                            .join(crate::config::GATEWAY_FILE)
                            .display()
                            .to_string(),
                        line: None,
                        column: None,
                        message,
                    });
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Runtime {
            racks,
            policy: cfg.policy.clone(),
            credentials: credentials::Credentials {
                ci_tokens: cfg.ci_tokens.clone(),
                federated: cfg.federated.clone(),
                keys,
                cache: crate::identity::token::VerifyCache::new(10_000),
            },
            identity: cfg.identity.clone(),
            timeouts: cfg.timeouts,
            websocket: cfg.websocket,
            version: String::from("unversioned"),
            trusted_proxies: cfg.trusted_proxies.clone(),
            redactor: cfg.redactor.clone(),
            rate_limits: cfg.rate_limits.clone(),
        })
    }

    /// With exactly one rack, `/` serves it without a `/racks/<name>` prefix.
    pub(crate) fn single_rack(&self) -> Option<&Arc<Rack>> {
        if self.racks.len() == 1 {
            self.racks.values().next()
        } else {
            None
        }
    }
}

/// The gateway's token keys from the identity settings: the signing key
/// (its id defaults to one derived from the key) and older verification keys.
fn token_keys(
    id: &crate::config::IdentityConfig,
) -> Result<Option<(crate::identity::token::Keys, String)>, String> {
    if id.signing_key.is_none() && id.verification_keys.is_empty() {
        return Ok(None);
    }
    let signing = match &id.signing_key {
        Some((kid, pem)) => {
            let kid = match kid {
                Some(k) => k.clone(),
                None => crate::identity::token::key_id(pem.expose())
                    .map_err(|e| format!("identity.signing_key: {e}"))?,
            };
            Some((kid, pem.expose().to_string()))
        }
        None => None,
    };
    let verifying = id
        .verification_keys
        .iter()
        .map(|(kid, pem)| (kid.clone(), pem.expose().to_string()))
        .collect();
    crate::identity::token::Keys::new(&id.url, credentials::AUDIENCE, signing, verifying)
        .map(|k| Some((k, id.url.clone())))
        .map_err(|e| format!("identity keys: {e}"))
}
