//! [`FederationVerifier`]: a CI system's own OIDC ID token (GitHub Actions,
//! GitLab CI, CircleCI) as a credential. Verified with `jsonwebtoken`
//! against the issuer's discovered JWKS (cached per issuer), with the
//! algorithm pinned by the key rather than trusted from the token header,
//! then the audience and time claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{clip, IdpHttp, OidcError, LEEWAY_SECS, REFETCH_INTERVAL};
use crate::identity::jwt::{decode_segment, Jws};

/// Federation issuers are rediscovered after this long.
const FEDERATION_TTL: Duration = Duration::from_secs(60 * 60);
/// After a failed discovery, an issuer without usable keys fails fast for
/// this long instead of making every queued request wait for the timeout.
const FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// CI ID tokens are ~1-2 KiB; anything much larger is not one.
const MAX_FEDERATION_TOKEN: usize = 16 * 1024;
/// Signature algorithms a CI token may use. Never `none`, never HMAC: an
/// HMAC "signature" keyed with a public key proves nothing.
const FEDERATION_ALGS: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A verification key from an issuer's JWKS, with the algorithm it allows.
struct FedKey {
    kid: Option<String>,
    pin: AlgPin,
    key: DecodingKey,
}

/// The algorithm a key may verify, decided by the key (its `kty`, `crv`
/// and `alg`), never by the token.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AlgPin {
    Exactly(Algorithm),
    /// An RSA key without `alg`: any of our RSA algorithms.
    AnyRsa,
}

impl AlgPin {
    fn allows(self, alg: Algorithm) -> bool {
        match self {
            AlgPin::Exactly(pinned) => pinned == alg,
            AlgPin::AnyRsa => matches!(
                alg,
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
            ),
        }
    }
}

impl FedKey {
    /// `None` for keys we cannot or must not use (encryption keys, HMAC
    /// secrets, unsupported curves, malformed material).
    fn from_json(value: &Value) -> Option<FedKey> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgPin::AnyRsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => AlgPin::Exactly(Algorithm::ES256),
                EllipticCurve::P384 => AlgPin::Exactly(Algorithm::ES384),
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                // jsonwebtoken slices the first 32 bytes and panics on less.
                if URL_SAFE_NO_PAD.decode(&p.x).ok()?.len() != 32 {
                    return None;
                }
                AlgPin::Exactly(Algorithm::EdDSA)
            }
            _ => return None,
        };
        let pin = match &jwk.common.key_algorithm {
            None => by_type,
            Some(declared) => {
                let alg = federation_alg(declared)?;
                if !by_type.allows(alg) {
                    return None;
                }
                AlgPin::Exactly(alg)
            }
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(FedKey {
            kid: jwk.common.key_id.clone(),
            pin,
            key,
        })
    }
}

fn federation_alg(declared: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match declared {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn parse_jwks(doc: &Value) -> Vec<FedKey> {
    doc.get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(FedKey::from_json).collect())
        .unwrap_or_default()
}

/// Discovery and keys of one federation issuer.
#[derive(Default)]
struct IssuerKeys {
    jwks_uri: Option<String>,
    keys: Arc<Vec<FedKey>>,
    fetched_at: Option<Instant>,
    last_refetch: Option<Instant>,
    failed_at: Option<Instant>,
}

/// Verifies CI systems' own OIDC ID tokens for keyless federation. Caches
/// discovery and JWKS per issuer for an hour; a token naming an unknown key
/// refetches the JWKS at most once a minute per issuer.
///
/// Callers pass only issuers they trust (from configuration): each one
/// passed gets a cache entry.
pub struct FederationVerifier {
    http: IdpHttp,
    issuers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<IssuerKeys>>>>,
    ttl: Duration,
    pub(super) refetch_interval: Duration,
}

impl std::fmt::Debug for FederationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationVerifier").finish_non_exhaustive()
    }
}

impl FederationVerifier {
    pub(crate) fn new(http: IdpHttp) -> Self {
        FederationVerifier {
            http,
            issuers: Mutex::new(HashMap::new()),
            ttl: FEDERATION_TTL,
            refetch_interval: REFETCH_INTERVAL,
        }
    }

    /// Verifies `token` as issued by `issuer` for `audience` at unix time
    /// `now` and returns all its claims for the caller's claim matching.
    pub(crate) async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<Map<String, Value>, OidcError> {
        if token.len() > MAX_FEDERATION_TOKEN {
            return Err(OidcError::TokenTooLarge);
        }
        let jws = Jws::split(token)?;
        let header: Map<String, Value> = decode_segment(jws.header).ok_or(OidcError::Malformed)?;
        // We understand no critical header extension (RFC 7515 4.1.11).
        if header.contains_key("crit") {
            return Err(OidcError::Malformed);
        }
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(OidcError::Malformed)?;
        let alg = alg_name
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| FEDERATION_ALGS.contains(alg))
            .ok_or_else(|| {
                OidcError::AlgNotAllowed(
                    alg_name
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .take(16)
                        .collect(),
                )
            })?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(OidcError::Malformed),
        };
        let claims: Map<String, Value> = decode_segment(jws.payload).ok_or(OidcError::Malformed)?;
        // Before any network traffic: a token for another issuer must not
        // make us fetch anything.
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(OidcError::WrongIssuer);
        }

        let entry = self.entry(issuer);
        let mut keys = {
            let mut state = entry.lock().await;
            self.ensure_fresh(&mut state, issuer).await?;
            state.keys.clone()
        };
        if !keys.iter().any(|k| key_matches(k, kid, alg)) {
            let mut state = entry.lock().await;
            if Arc::ptr_eq(&state.keys, &keys) {
                if state
                    .last_refetch
                    .is_some_and(|t| t.elapsed() < self.refetch_interval)
                {
                    return Err(OidcError::UnknownKey);
                }
                state.last_refetch = Some(Instant::now());
                let uri = state.jwks_uri.clone().ok_or(OidcError::UnknownKey)?;
                state.keys = Arc::new(parse_jwks(&self.http.get_json(&uri).await?));
                tracing::info!(issuer, "refetched JWKS after unknown key id");
            }
            keys = state.keys.clone();
        }
        let mut candidates = keys.iter().filter(|k| key_matches(k, kid, alg)).peekable();
        if candidates.peek().is_none() {
            return Err(OidcError::UnknownKey);
        }
        let signed = candidates.any(|k| {
            jsonwebtoken::crypto::verify(jws.signature, jws.signing_input.as_bytes(), &k.key, alg)
                .unwrap_or(false)
        });
        if !signed {
            return Err(OidcError::BadSignature);
        }
        check_federation_claims(&claims, audience, now)?;
        Ok(claims)
    }

    fn entry(&self, issuer: &str) -> Arc<tokio::sync::Mutex<IssuerKeys>> {
        self.issuers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(issuer.to_owned())
            .or_default()
            .clone()
    }

    /// (Re)discovers the issuer when its cache is missing or older than the
    /// TTL. A failed refresh keeps serving the previous keys; with no keys at
    /// all it fails fast for a while.
    async fn ensure_fresh(&self, state: &mut IssuerKeys, issuer: &str) -> Result<(), OidcError> {
        if state.fetched_at.is_some_and(|t| t.elapsed() < self.ttl) {
            return Ok(());
        }
        let usable = state.fetched_at.is_some();
        if state
            .failed_at
            .is_some_and(|t| t.elapsed() < FAILURE_BACKOFF)
        {
            return if usable {
                Ok(())
            } else {
                Err(OidcError::Unavailable(issuer.to_owned()))
            };
        }
        match self.discover(issuer).await {
            Ok((jwks_uri, keys)) => {
                state.jwks_uri = Some(jwks_uri);
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.failed_at = None;
                Ok(())
            }
            Err(e) => {
                state.failed_at = Some(Instant::now());
                if usable {
                    tracing::warn!(issuer, error = %e, "federation issuer refresh failed; keeping cached keys");
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn discover(&self, issuer: &str) -> Result<(String, Vec<FedKey>), OidcError> {
        let url = if issuer.ends_with('/') {
            format!("{issuer}.well-known/openid-configuration")
        } else {
            format!("{issuer}/.well-known/openid-configuration")
        };
        let doc = self.http.get_json(&url).await?;
        let found = doc
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if found != issuer {
            return Err(OidcError::IssuerMismatch {
                configured: issuer.to_owned(),
                found: clip(found.to_owned(), 200),
            });
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Metadata("no jwks_uri".into()))?
            .to_owned();
        let keys = parse_jwks(&self.http.get_json(&jwks_uri).await?);
        Ok((jwks_uri, keys))
    }
}

fn key_matches(key: &FedKey, kid: Option<&str>, alg: Algorithm) -> bool {
    kid.is_none_or(|kid| key.kid.as_deref() == Some(kid)) && key.pin.allows(alg)
}

fn check_federation_claims(
    claims: &Map<String, Value>,
    audience: &str,
    now: i64,
) -> Result<(), OidcError> {
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(OidcError::WrongAudience);
    }
    let exp = numeric_claim(claims, "exp")?.ok_or(OidcError::BadClaim("exp"))?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(OidcError::Expired);
    }
    if let Some(nbf) = numeric_claim(claims, "nbf")? {
        if nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(OidcError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_claim(claims, "iat")? {
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(OidcError::NotYetValid);
        }
    }
    Ok(())
}

/// A NumericDate claim, in whole seconds (fractions are allowed by RFC 7519).
fn numeric_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, OidcError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(OidcError::BadClaim(name)),
        Some(_) => Err(OidcError::BadClaim(name)),
    }
}
