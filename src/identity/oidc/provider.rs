//! The login [`Provider`]: OpenID Connect discovery, the authorization URL
//! (code flow, PKCE S256, nonce), the code exchange and ID token checks,
//! yielding [`IdClaims`]. `openidconnect` does the protocol; this module adds
//! what it leaves to the relying party (leeway, `iat`, `azp`, no `none` or
//! HMAC, JWKS refetch on key rotation).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, DiscoveryError, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdToken, IdTokenFields, IdTokenVerifier, IssuerUrl, JsonWebKeySetUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::{clip, error_chain, strip_query, IdpHttp, OidcError, LEEWAY_SECS, REFETCH_INTERVAL};
use crate::clock::unix_now;

const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];
/// Authorization request parameters this module sets itself; `extra` may not
/// override them.
const MANAGED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "state",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "scope",
    "nonce",
];

/// How to reach and identify ourselves to one login provider.
#[derive(Debug, Clone)]
pub(crate) struct ProviderConfig {
    /// Exactly as the provider spells it in its discovery document.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    /// `None` for a public client (PKCE only).
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_url: String,
    /// Empty means `openid email profile`; `openid` is always requested.
    pub(crate) scopes: Vec<String>,
}

impl ProviderConfig {
    pub(crate) fn default_scopes() -> Vec<String> {
        DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()
    }
}

/// The identity a login yields, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdClaims {
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    /// Missing means false: an unverified address must not grant anything.
    pub(crate) email_verified: bool,
    /// Google's `hd`: the Workspace domain of the account.
    pub(crate) hosted_domain: Option<String>,
    pub(crate) amr: Vec<String>,
    pub(crate) auth_time: Option<i64>,
    /// `groups` as Okta, Entra ID, Keycloak and Dex send it (if configured).
    pub(crate) groups: Vec<String>,
    pub(crate) issued_at: i64,
}

/// Claims beyond the standard set that logins care about. Kept as raw JSON
/// so an unexpected shape drops the claim instead of failing the login.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct GatewayClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hd: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Value>,
}

impl AdditionalClaims for GatewayClaims {}

type LoginIdToken = IdToken<
    GatewayClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type LoginTokenResponse = StandardTokenResponse<
    IdTokenFields<
        GatewayClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;
type LoginClient = openidconnect::Client<
    GatewayClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    LoginTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered login provider: its metadata, our client registration and
/// its signing keys, which are refetched when a token names an unknown key.
pub(crate) struct Provider {
    client: LoginClient,
    client_id: String,
    issuer: IssuerUrl,
    /// Requested besides `openid`, which the client always adds.
    scopes: Vec<String>,
    /// The provider's ID token algorithms minus `none` and HMAC.
    pub(super) algs: Vec<CoreJwsSigningAlgorithm>,
    jwks_uri: JsonWebKeySetUrl,
    keys: ArcSwap<CoreJsonWebKeySet>,
    /// When an unknown `kid` last made us refetch the JWKS.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
    http: IdpHttp,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// OIDC discovery (`issuer` + `/.well-known/openid-configuration`, whose
    /// `issuer` must equal the configured one exactly) and the JWKS fetch.
    pub(crate) async fn discover(
        cfg: ProviderConfig,
        http: IdpHttp,
    ) -> Result<Provider, OidcError> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|_| OidcError::BadUrl(cfg.issuer.clone()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &http)
            .await
            .map_err(|e| discovery_error(e, &cfg.issuer))?;
        if metadata.issuer().as_str() != cfg.issuer {
            return Err(OidcError::IssuerMismatch {
                configured: cfg.issuer,
                found: metadata.issuer().to_string(),
            });
        }
        if metadata.token_endpoint().is_none() {
            return Err(OidcError::Metadata("no token_endpoint".into()));
        }
        let algs: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| login_alg_allowed(alg))
            .cloned()
            .collect();
        if algs.is_empty() {
            return Err(OidcError::NoAlgorithms);
        }
        let auth_type = match (
            &cfg.client_secret,
            metadata.token_endpoint_auth_methods_supported(),
        ) {
            (None, _) => AuthType::RequestBody,
            // RFC 8414: absent means client_secret_basic.
            (Some(_), None) => AuthType::BasicAuth,
            (Some(_), Some(methods))
                if methods.contains(&CoreClientAuthMethod::ClientSecretBasic) =>
            {
                AuthType::BasicAuth
            }
            (Some(_), Some(methods))
                if methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            (Some(_), Some(_)) => return Err(OidcError::ClientAuth),
        };
        let redirect = RedirectUrl::new(cfg.redirect_url.clone())
            .map_err(|_| OidcError::BadUrl(strip_query(&cfg.redirect_url)))?;
        let keys = ArcSwap::from_pointee(metadata.jwks().clone());
        let jwks_uri = metadata.jwks_uri().clone();
        let client = LoginClient::from_provider_metadata(
            metadata,
            ClientId::new(cfg.client_id.clone()),
            cfg.client_secret.map(ClientSecret::new),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
        let requested = if cfg.scopes.is_empty() {
            ProviderConfig::default_scopes()
        } else {
            cfg.scopes
        };
        let mut scopes: Vec<String> = Vec::new();
        for scope in requested {
            if scope != "openid" && !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Provider {
            client,
            client_id: cfg.client_id,
            issuer,
            scopes,
            algs,
            jwks_uri,
            keys,
            last_refetch: tokio::sync::Mutex::new(None),
            refetch_interval: REFETCH_INTERVAL,
            http,
        })
    }

    /// The URL the browser is sent to: code flow with PKCE (S256) and nonce.
    /// The caller generates and keeps the verifier, nonce and state (see
    /// [`crate::identity::seal::random_token`]). `extra` adds provider-specific parameters
    /// such as Google's `hd`; it cannot override the ones set here.
    pub(crate) fn authorize_url(
        &self,
        pkce_verifier: &str,
        nonce: &str,
        state: &str,
        extra: &[(&str, &str)],
    ) -> Result<String, OidcError> {
        check_pkce_verifier(pkce_verifier)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.into(),
        ));
        let state = CsrfToken::new(state.to_owned());
        let nonce = Nonce::new(nonce.to_owned());
        let mut request = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state,
                move || nonce,
            )
            .set_pkce_challenge(challenge)
            .add_scopes(self.scopes.iter().cloned().map(Scope::new));
        for (name, value) in extra {
            if !MANAGED_PARAMS.contains(name) {
                request = request.add_extra_param(name.to_string(), value.to_string());
            }
        }
        let (url, _, _) = request.url();
        Ok(url.into())
    }

    /// Exchanges the code (with the PKCE verifier and the client
    /// authentication the provider supports) and verifies the ID token.
    pub(crate) async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<IdClaims, OidcError> {
        check_pkce_verifier(pkce_verifier)?;
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| OidcError::Metadata("no token_endpoint".into()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        let keys = self.keys.load_full();
        let verified = match self.verify_id_token(id_token, &keys, &nonce) {
            Err(e) if unknown_key(&e) => match self.refetch_keys(&keys).await? {
                Some(fresh) => self.verify_id_token(id_token, &fresh, &nonce),
                None => Err(e),
            },
            other => other,
        };
        verified.map_err(|e| match e {
            // Its message would show the leeway-shifted clock as "current time".
            ClaimsVerificationError::Expired(msg) if msg.starts_with("ID token expired") => {
                OidcError::IdToken("expired (beyond 60 s leeway)".into())
            }
            e => OidcError::IdToken(error_chain(&e)),
        })
    }

    /// What `openidconnect` checks: header (`typ`, no `cty`/`crit`, no JWE),
    /// `iss` exact, `aud` contains the client id, signature with a key whose
    /// `kty`/`alg`/`use` fit the token's `alg` (one of ours), `exp`, nonce.
    /// What we add: 60 s leeway on `exp`, `iat` not in the future, `azp`,
    /// other audiences only alongside `azp` = client id, no HMAC ever (public
    /// client verifier even when we hold a secret).
    fn verify_id_token(
        &self,
        token: &LoginIdToken,
        keys: &CoreJsonWebKeySet,
        nonce: &Nonce,
    ) -> Result<IdClaims, ClaimsVerificationError> {
        let verifier = IdTokenVerifier::new_public_client(
            ClientId::new(self.client_id.clone()),
            self.issuer.clone(),
            keys.clone(),
        )
        .set_allowed_algs(self.algs.iter().cloned())
        // The verifier rejects `now >= exp`; shifting "now" back is the leeway.
        .set_time_fn(|| (SystemTime::now() - Duration::from_secs(LEEWAY_SECS as u64)).into())
        .set_issue_time_verifier_fn(|iat| {
            if iat.timestamp() > unix_now() + LEEWAY_SECS {
                Err("issued in the future".to_string())
            } else {
                Ok(())
            }
        })
        // Extra audiences are judged below, together with `azp`.
        .set_other_audience_verifier_fn(|_| true);
        let claims = token.claims(&verifier, nonce)?;
        let azp = claims.authorized_party().map(|a| a.as_str());
        if claims.audiences().len() > 1 && azp.is_none() {
            return Err(ClaimsVerificationError::InvalidAudience(
                "several audiences but no azp".into(),
            ));
        }
        if azp.is_some_and(|azp| azp != self.client_id) {
            return Err(ClaimsVerificationError::InvalidAudience(
                "azp is not our client id".into(),
            ));
        }
        let extra = claims.additional_claims();
        Ok(IdClaims {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            hosted_domain: extra.hd.as_ref().and_then(Value::as_str).map(str::to_owned),
            amr: claims
                .auth_method_refs()
                .map(|amr| amr.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            auth_time: claims.auth_time().map(|t| t.timestamp()),
            groups: string_list(extra.groups.as_ref()),
            issued_at: claims.issue_time().timestamp(),
        })
    }

    /// Refetches the JWKS after an unknown `kid`, at most once per
    /// `refetch_interval`. Returns the key set to retry with, if any: a newer
    /// one fetched by a concurrent caller counts too.
    async fn refetch_keys(
        &self,
        seen: &Arc<CoreJsonWebKeySet>,
    ) -> Result<Option<Arc<CoreJsonWebKeySet>>, OidcError> {
        let mut last = self.last_refetch.lock().await;
        let current = self.keys.load_full();
        if !Arc::ptr_eq(&current, seen) {
            return Ok(Some(current));
        }
        if last.is_some_and(|t| t.elapsed() < self.refetch_interval) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        let fresh = CoreJsonWebKeySet::fetch_async(&self.jwks_uri, &self.http)
            .await
            .map_err(|e| discovery_error(e, self.jwks_uri.as_str()))?;
        let fresh = Arc::new(fresh);
        self.keys.store(fresh.clone());
        tracing::info!(issuer = %self.issuer.as_str(), "refetched JWKS after unknown key id");
        Ok(Some(fresh))
    }
}

fn login_alg_allowed(alg: &CoreJwsSigningAlgorithm) -> bool {
    use CoreJwsSigningAlgorithm as A;
    matches!(
        alg,
        A::RsaSsaPkcs1V15Sha256
            | A::RsaSsaPkcs1V15Sha384
            | A::RsaSsaPkcs1V15Sha512
            | A::RsaSsaPssSha256
            | A::RsaSsaPssSha384
            | A::RsaSsaPssSha512
            | A::EcdsaP256Sha256
            | A::EcdsaP384Sha384
            | A::EcdsaP521Sha512
            | A::EdDsa
    )
}

fn unknown_key(e: &ClaimsVerificationError) -> bool {
    matches!(
        e,
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)
    )
}

/// `oauth2::PkceCodeChallenge` panics on a verifier of the wrong length, so
/// the caller's value is checked first (RFC 7636 section 4.1).
fn check_pkce_verifier(v: &str) -> Result<(), OidcError> {
    let ok = (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OidcError::BadPkceVerifier)
    }
}

/// An array of strings, or a single string; anything else yields nothing.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn discovery_error(e: DiscoveryError<OidcError>, url: &str) -> OidcError {
    match e {
        DiscoveryError::Request(inner) => inner,
        DiscoveryError::Response(status, _, _) => OidcError::Status {
            url: strip_query(url),
            status: status.as_u16(),
        },
        DiscoveryError::Parse(e) => OidcError::Metadata(clip(e.to_string(), 300)),
        DiscoveryError::UrlParse(_) => OidcError::BadUrl(strip_query(url)),
        DiscoveryError::Validation(msg) | DiscoveryError::Other(msg) => {
            OidcError::Metadata(clip(msg, 300))
        }
        other => OidcError::Metadata(clip(other.to_string(), 300)),
    }
}

/// Never includes the response body: it holds the tokens.
fn token_error(
    e: RequestTokenError<OidcError, StandardErrorResponse<CoreErrorResponseType>>,
) -> OidcError {
    match e {
        RequestTokenError::Request(inner) => inner,
        RequestTokenError::ServerResponse(r) => {
            let mut msg = r.error().to_string();
            if let Some(description) = r.error_description() {
                msg.push_str(": ");
                msg.push_str(description);
            }
            OidcError::TokenRejected(clip(msg, 300))
        }
        RequestTokenError::Parse(e, _body) => {
            OidcError::TokenExchange(clip(format!("unparsable response: {e}"), 300))
        }
        RequestTokenError::Other(msg) => OidcError::TokenExchange(clip(msg, 300)),
    }
}
