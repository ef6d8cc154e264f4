//! The identity-provider side of logins and of keyless CI federation.
//!
//! - [`Provider`] logs people in with any OpenID Connect provider: discovery,
//!   the authorization URL (code flow, PKCE S256, nonce), the code exchange and
//!   ID token verification. The `openidconnect` crate does the protocol work;
//!   this module adds what it leaves to the relying party (clock leeway, `iat`
//!   not in the future, `azp`, never `none`/HMAC, refetching the JWKS when the
//!   provider rotates keys) and turns the claims into [`IdClaims`].
//! - [`FederationVerifier`] accepts a CI system's own ID token (GitHub
//!   Actions, GitLab CI, CircleCI) as a credential. It is verified with
//!   `jsonwebtoken` against the issuer's discovered JWKS, with the algorithm
//!   pinned by the key rather than trusted from the token header.
//!
//! Both talk to identity providers only through [`IdpHttp`]: the gateway's own
//! hyper + rustls stack, bounded in time and response size, never following
//! redirects, and refusing plain http except to loopback.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AsyncHttpClient, AuthType, AuthorizationCode, ClaimsVerificationError,
    ClientId, ClientSecret, CsrfToken, DiscoveryError, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdToken, IdTokenFields,
    IdTokenVerifier, IssuerUrl, JsonWebKeySetUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use tokio::time::Instant;

use crate::config::UpstreamTls;
use crate::rack::upstream::{client_tls, UpstreamError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole request, connect to last body byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Discovery documents, JWKS and token responses are all far smaller.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Clock skew tolerated between us and the identity provider, in seconds.
const LEEWAY_SECS: i64 = 60;
/// A token naming an unknown `kid` may trigger a JWKS refetch at most this
/// often, so garbage tokens cannot make us hammer the provider.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
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

/// Everything that can go wrong talking to or trusting an identity provider.
/// Messages are short and never carry tokens, codes or secrets; URLs are shown
/// without their query string.
#[derive(Debug, Error)]
pub enum OidcError {
    #[error("invalid identity provider URL {0}")]
    BadUrl(String),
    #[error("refusing plain http to non-loopback {0}")]
    InsecureUrl(String),
    #[error(transparent)]
    Tls(#[from] UpstreamError),
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("response from {0} exceeds 1 MiB")]
    TooLarge(String),
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{0} did not return valid JSON")]
    Json(String),
    #[error("provider metadata invalid: {0}")]
    Metadata(String),
    #[error("issuer mismatch: configured {configured}, discovery document says {found}")]
    IssuerMismatch { configured: String, found: String },
    #[error("provider offers no acceptable ID token signing algorithm")]
    NoAlgorithms,
    #[error("provider supports neither client_secret_basic nor client_secret_post")]
    ClientAuth,
    #[error("PKCE verifier must be 43-128 characters of [A-Za-z0-9-._~]")]
    BadPkceVerifier,
    #[error("token endpoint refused the code: {0}")]
    TokenRejected(String),
    #[error("token exchange failed: {0}")]
    TokenExchange(String),
    #[error("token response carries no ID token")]
    NoIdToken,
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("token is not a signed JWT")]
    Malformed,
    #[error("token exceeds 16 KiB")]
    TokenTooLarge,
    #[error("signing algorithm {0:?} not allowed")]
    AlgNotAllowed(String),
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token issuer mismatch")]
    WrongIssuer,
    #[error("token audience mismatch")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("claim {0} missing or malformed")]
    BadClaim(&'static str),
    #[error("issuer {0} unavailable (recent discovery failed)")]
    Unavailable(String),
}

/// HTTP client for identity providers. Cheap to clone (the connection pool
/// is shared).
#[derive(Clone)]
pub struct IdpHttp {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        Full<Bytes>,
    >,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpHttp").finish_non_exhaustive()
    }
}

impl IdpHttp {
    /// Trusts the bundled Mozilla roots, or only `ca_file` (for a private IdP).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, OidcError> {
        let tls = client_tls(&UpstreamTls::Verify {
            ca_file: ca_file.map(Path::to_path_buf),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnector::from((http, tls));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(IdpHttp { client })
    }

    /// Sends one request and reads the whole (capped) response. Any status is
    /// returned as-is, 3xx included: redirects are never followed.
    pub async fn request(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OidcError> {
        let shown = shown_url(req.uri());
        check_url(req.uri())?;
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static("rack-gateway"));
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| OidcError::Transport {
                    url: shown.clone(),
                    reason: error_chain(&e),
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OidcError::TooLarge(shown.clone())
                    } else {
                        OidcError::Transport {
                            url: shown.clone(),
                            reason: error_chain(&*e),
                        }
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| OidcError::Timeout(shown.clone()))?
    }

    /// GETs a JSON document; anything but 200 is an error.
    pub async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let req = http::Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| OidcError::BadUrl(strip_query(url)))?;
        let resp = self.request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(OidcError::Status {
                url: strip_query(url),
                status: resp.status().as_u16(),
            });
        }
        serde_json::from_slice(resp.body()).map_err(|_| OidcError::Json(strip_query(url)))
    }
}

/// Lets `openidconnect` (discovery, JWKS, token endpoint) use our client.
impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = OidcError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OidcError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.request(request))
    }
}

fn check_url(uri: &Uri) -> Result<(), OidcError> {
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(host)) if is_loopback(host) => Ok(()),
        (Some("http"), Some(_)) => Err(OidcError::InsecureUrl(shown_url(uri))),
        _ => Err(OidcError::BadUrl(shown_url(uri))),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn shown_url(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_string(),
    }
}

fn strip_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

/// `outer: inner: innermost`, which is where hyper keeps the useful part
/// ("connection refused", "invalid peer certificate: UnknownIssuer").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    clip(out, 300)
}

/// At most `max` bytes, with control characters blanked: these strings come
/// partly from the provider and end up in logs.
fn clip(s: String, max: usize) -> String {
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// How to reach and identify ourselves to one login provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Exactly as the provider spells it in its discovery document.
    pub issuer: String,
    pub client_id: String,
    /// `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    pub redirect_url: String,
    /// Empty means `openid email profile`; `openid` is always requested.
    pub scopes: Vec<String>,
}

impl ProviderConfig {
    pub fn default_scopes() -> Vec<String> {
        DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()
    }
}

/// The identity a login yields, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    pub subject: String,
    pub email: Option<String>,
    /// Missing means false: an unverified address must not grant anything.
    pub email_verified: bool,
    /// Google's `hd`: the Workspace domain of the account.
    pub hosted_domain: Option<String>,
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
    /// `groups` as Okta, Entra ID, Keycloak and Dex send it (if configured).
    pub groups: Vec<String>,
    pub issued_at: i64,
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
pub struct Provider {
    client: LoginClient,
    client_id: String,
    issuer: IssuerUrl,
    /// Requested besides `openid`, which the client always adds.
    scopes: Vec<String>,
    /// The provider's ID token algorithms minus `none` and HMAC.
    algs: Vec<CoreJwsSigningAlgorithm>,
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
    pub async fn discover(cfg: ProviderConfig, http: IdpHttp) -> Result<Provider, OidcError> {
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

    /// The issuer, as configured and confirmed by discovery.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The URL the browser is sent to: code flow with PKCE (S256) and nonce.
    /// The caller generates and keeps the verifier, nonce and state (see
    /// [`generate_pkce_verifier`]). `extra` adds provider-specific parameters
    /// such as Google's `hd`; it cannot override the ones set here.
    pub fn authorize_url(
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
    pub async fn exchange(
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

/// A fresh random PKCE verifier (32 bytes, base64url: 43 characters).
pub fn generate_pkce_verifier() -> String {
    PkceCodeVerifier::new(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
        .secret()
        .clone()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random number generator works");
    out
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

/// The `iss` claim of a JWT, read WITHOUT verifying anything: only to route
/// a token to the verifier for that issuer. `None` if it is not a JWT.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let jws = Jws::split(token).ok()?;
    let header: Map<String, Value> = decode_segment(jws.header)?;
    header.get("alg")?.as_str()?;
    let claims: Map<String, Value> = decode_segment(jws.payload)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A compact JWS, split but not trusted.
struct Jws<'t> {
    header: &'t str,
    payload: &'t str,
    /// `header.payload`, what the signature covers.
    signing_input: &'t str,
    signature: &'t str,
}

impl<'t> Jws<'t> {
    fn split(token: &'t str) -> Result<Self, OidcError> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(OidcError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(OidcError::Malformed)?;
        if payload.contains('.') || header.is_empty() || payload.is_empty() {
            return Err(OidcError::Malformed);
        }
        Ok(Jws {
            header,
            payload,
            signing_input,
            signature,
        })
    }
}

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
    refetch_interval: Duration,
}

impl std::fmt::Debug for FederationVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationVerifier").finish_non_exhaustive()
    }
}

impl FederationVerifier {
    pub fn new(http: IdpHttp) -> Self {
        FederationVerifier {
            http,
            issuers: Mutex::new(HashMap::new()),
            ttl: FEDERATION_TTL,
            refetch_interval: REFETCH_INTERVAL,
        }
    }

    /// Verifies `token` as issued by `issuer` for `audience` at unix time
    /// `now` and returns all its claims for the caller's claim matching.
    pub async fn verify(
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;

    const CLIENT_ID: &str = "gateway-client";
    const SECRET: &str = "s3cret";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const AUDIENCE: &str = "rack-gateway";

    /// A signing key of the test issuer and its public JWK.
    struct TestKey {
        kid: String,
        alg: Algorithm,
        pkcs8: Vec<u8>,
        public: Vec<u8>,
        jwk: Value,
    }

    impl TestKey {
        fn es256(kid: &str) -> TestKey {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            });
            TestKey {
                kid: kid.into(),
                alg: Algorithm::ES256,
                pkcs8: pkcs8.as_ref().to_vec(),
                public: point,
                jwk,
            }
        }

        /// Without `alg` in the JWK: the pin comes from `kty`/`crv`.
        fn ed25519(kid: &str) -> TestKey {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let public = pair.public_key().as_ref().to_vec();
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&public),
            });
            TestKey {
                kid: kid.into(),
                alg: Algorithm::EdDSA,
                pkcs8: pkcs8.as_ref().to_vec(),
                public,
                jwk,
            }
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(self.alg);
            header.kid = Some(self.kid.clone());
            let key = match self.alg {
                Algorithm::EdDSA => EncodingKey::from_ed_der(&self.pkcs8),
                _ => EncodingKey::from_ec_der(&self.pkcs8),
            };
            jsonwebtoken::encode(&header, claims, &key).unwrap()
        }
    }

    /// An in-process OpenID provider on 127.0.0.1: discovery, JWKS (counting
    /// fetches), a token endpoint answering whatever the test set, and two
    /// misbehaving endpoints for the HTTP client's limits.
    struct TestIdp {
        base: String,
        doc_issuer: Mutex<Option<String>>,
        jwks: Mutex<Value>,
        jwks_hits: AtomicUsize,
        token_status: Mutex<u16>,
        token_response: Mutex<Value>,
        /// `Authorization` header and form body of each token request.
        token_requests: Mutex<Vec<(Option<String>, String)>>,
    }

    impl TestIdp {
        async fn start() -> Arc<TestIdp> {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let idp = Arc::new(TestIdp {
                base: format!("http://{}", listener.local_addr().unwrap()),
                doc_issuer: Mutex::new(None),
                jwks: Mutex::new(json!({"keys": []})),
                jwks_hits: AtomicUsize::new(0),
                token_status: Mutex::new(200),
                token_response: Mutex::new(json!({})),
                token_requests: Mutex::new(Vec::new()),
            });
            let shared = idp.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| shared.clone().handle(req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
            idp
        }

        fn set_keys(&self, keys: &[&TestKey]) {
            let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
            *self.jwks.lock().unwrap() = json!({ "keys": keys });
        }

        fn hits(&self) -> usize {
            self.jwks_hits.load(Ordering::SeqCst)
        }

        fn respond_with_id_token(&self, id_token: &str) {
            *self.token_response.lock().unwrap() = json!({
                "access_token": "access-token-value",
                "token_type": "bearer",
                "expires_in": 3600,
                "id_token": id_token,
            });
        }

        async fn handle(
            self: Arc<Self>,
            req: hyper::Request<Incoming>,
        ) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
            let json_response = |status: u16, v: &Value| {
                hyper::Response::builder()
                    .status(status)
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(v.to_string())))
                    .unwrap()
            };
            let base = &self.base;
            let resp = match req.uri().path() {
                "/.well-known/openid-configuration" => {
                    let issuer = self.doc_issuer.lock().unwrap().clone();
                    json_response(
                        200,
                        &json!({
                            "issuer": issuer.unwrap_or_else(|| base.clone()),
                            "authorization_endpoint": format!("{base}/authorize"),
                            "token_endpoint": format!("{base}/token"),
                            "jwks_uri": format!("{base}/jwks"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "HS256", "none"],
                            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                        }),
                    )
                }
                "/jwks" => {
                    self.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let jwks = self.jwks.lock().unwrap().clone();
                    json_response(200, &jwks)
                }
                "/token" => {
                    let auth = req
                        .headers()
                        .get(AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    self.token_requests
                        .lock()
                        .unwrap()
                        .push((auth, String::from_utf8(body.to_vec()).unwrap()));
                    let status = *self.token_status.lock().unwrap();
                    let body = self.token_response.lock().unwrap().clone();
                    json_response(status, &body)
                }
                "/redirect" => hyper::Response::builder()
                    .status(302)
                    .header(LOCATION, format!("{base}/jwks"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                "/big" => hyper::Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(vec![b' '; 2 * MAX_RESPONSE])))
                    .unwrap(),
                _ => json_response(404, &json!({})),
            };
            Ok(resp)
        }
    }

    fn http() -> IdpHttp {
        IdpHttp::new(None).unwrap()
    }

    fn ci_claims(issuer: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": "repo:acme/app:ref:refs/heads/main",
            "repository": "acme/app",
            "ref": "refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn b64_json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn unverified_issuer_reads_iss_of_jwts_only() {
        let key = TestKey::es256("k1");
        let token = key.sign(&ci_claims("https://token.actions.githubusercontent.com"));
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://token.actions.githubusercontent.com")
        );
        assert_eq!(unverified_issuer("rgw_0123456789abcdef"), None);
        assert_eq!(unverified_issuer("not.a.jwt"), None);
        assert_eq!(unverified_issuer("a.b"), None);
        let no_iss = key.sign(&json!({"sub": "x"}));
        assert_eq!(unverified_issuer(&no_iss), None);
    }

    #[tokio::test]
    async fn federation_accepts_good_tokens() {
        let idp = TestIdp::start().await;
        let es = TestKey::es256("es");
        let ed = TestKey::ed25519("ed");
        idp.set_keys(&[&es, &ed]);
        let verifier = FederationVerifier::new(http());
        let now = unix_now();
        for key in [&es, &ed] {
            let token = key.sign(&ci_claims(&idp.base));
            let claims = verifier
                .verify(&token, &idp.base, AUDIENCE, now)
                .await
                .unwrap();
            assert_eq!(claims["repository"], "acme/app");
        }
        // `aud` as an array; `exp` inside the leeway.
        let token = es.sign(&with(
            with(ci_claims(&idp.base), "aud", json!(["other", AUDIENCE])),
            "exp",
            json!(now - 30),
        ));
        verifier
            .verify(&token, &idp.base, AUDIENCE, now)
            .await
            .unwrap();
        assert_eq!(idp.hits(), 1, "discovery fetched the JWKS once");
    }

    #[tokio::test]
    async fn federation_rejects_bad_tokens() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let verifier = FederationVerifier::new(http());
        let now = unix_now();
        let good = ci_claims(&idp.base);
        let verify = |token: String| {
            let verifier = &verifier;
            let issuer = idp.base.clone();
            async move { verifier.verify(&token, &issuer, AUDIENCE, now).await }
        };

        let wrong_iss = key.sign(&with(good.clone(), "iss", json!("https://evil.example")));
        assert!(matches!(
            verify(wrong_iss).await,
            Err(OidcError::WrongIssuer)
        ));
        let wrong_aud = key.sign(&with(good.clone(), "aud", json!("someone-else")));
        assert!(matches!(
            verify(wrong_aud).await,
            Err(OidcError::WrongAudience)
        ));
        let expired = key.sign(&with(good.clone(), "exp", json!(now - 61)));
        assert!(matches!(verify(expired).await, Err(OidcError::Expired)));
        let no_exp = {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove("exp");
            key.sign(&c)
        };
        assert!(matches!(
            verify(no_exp).await,
            Err(OidcError::BadClaim("exp"))
        ));
        let early = key.sign(&with(good.clone(), "nbf", json!(now + 120)));
        assert!(matches!(verify(early).await, Err(OidcError::NotYetValid)));
        let future_iat = key.sign(&with(good.clone(), "iat", json!(now + 120)));
        assert!(matches!(
            verify(future_iat).await,
            Err(OidcError::NotYetValid)
        ));

        let payload = b64_json(&good);
        let none = format!(
            "{}.{payload}.",
            b64_json(&json!({"alg": "none", "kid": "k1"}))
        );
        assert!(matches!(verify(none).await, Err(OidcError::AlgNotAllowed(a)) if a == "none"));

        // The classic confusion: HMAC keyed with the issuer's public key.
        for secret in [
            key.public.clone(),
            key.jwk["x"].as_str().unwrap().as_bytes().to_vec(),
        ] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            let hs =
                jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&secret)).unwrap();
            assert!(matches!(verify(hs).await, Err(OidcError::AlgNotAllowed(a)) if a == "HS256"));
        }

        let impostor = TestKey::es256("k1");
        assert!(matches!(
            verify(impostor.sign(&good)).await,
            Err(OidcError::BadSignature)
        ));
        // An Ed25519 signature presented under the ES256 key's kid.
        let mut ed = TestKey::ed25519("k1");
        ed.kid = "k1".into();
        assert!(matches!(
            verify(ed.sign(&good)).await,
            Err(OidcError::UnknownKey)
        ));

        let unknown = TestKey::es256("k2");
        assert!(matches!(
            verify(unknown.sign(&good)).await,
            Err(OidcError::UnknownKey)
        ));

        let oversized = key.sign(&with(good.clone(), "padding", json!("x".repeat(17 * 1024))));
        assert!(matches!(
            verify(oversized).await,
            Err(OidcError::TokenTooLarge)
        ));
        assert!(matches!(
            verify("garbage".into()).await,
            Err(OidcError::Malformed)
        ));
        let crit = format!(
            "{}.{payload}.sig",
            b64_json(&json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}))
        );
        assert!(matches!(verify(crit).await, Err(OidcError::Malformed)));

        // Tampered payload under a genuine signature.
        let genuine = key.sign(&good);
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged_payload = b64_json(&with(good.clone(), "repository", json!("evil/app")));
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert!(matches!(
            verify(tampered).await,
            Err(OidcError::BadSignature)
        ));

        verify(genuine).await.unwrap();
    }

    #[tokio::test]
    async fn federation_refetches_jwks_at_most_once_per_interval() {
        let idp = TestIdp::start().await;
        let k1 = TestKey::es256("k1");
        let k2 = TestKey::es256("k2");
        idp.set_keys(&[&k1]);
        let mut verifier = FederationVerifier::new(http());
        verifier.refetch_interval = Duration::from_millis(300);
        let now = unix_now();
        let claims = ci_claims(&idp.base);

        verifier
            .verify(&k1.sign(&claims), &idp.base, AUDIENCE, now)
            .await
            .unwrap();
        assert_eq!(idp.hits(), 1);

        // Unknown kid: one refetch, then rate-limited.
        for _ in 0..3 {
            let err = verifier
                .verify(&k2.sign(&claims), &idp.base, AUDIENCE, now)
                .await
                .unwrap_err();
            assert!(matches!(err, OidcError::UnknownKey));
        }
        assert_eq!(idp.hits(), 2);

        // The issuer rotates to k2; still inside the interval: no fetch.
        idp.set_keys(&[&k1, &k2]);
        let err = verifier
            .verify(&k2.sign(&claims), &idp.base, AUDIENCE, now)
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::UnknownKey));
        assert_eq!(idp.hits(), 2);

        tokio::time::sleep(Duration::from_millis(350)).await;
        verifier
            .verify(&k2.sign(&claims), &idp.base, AUDIENCE, now)
            .await
            .unwrap();
        assert_eq!(idp.hits(), 3);
        // Known keys never refetch.
        verifier
            .verify(&k1.sign(&claims), &idp.base, AUDIENCE, now)
            .await
            .unwrap();
        assert_eq!(idp.hits(), 3);
    }

    #[tokio::test]
    async fn federation_checks_discovery_issuer() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        *idp.doc_issuer.lock().unwrap() = Some("https://other.example".into());
        let verifier = FederationVerifier::new(http());
        let err = verifier
            .verify(
                &key.sign(&ci_claims(&idp.base)),
                &idp.base,
                AUDIENCE,
                unix_now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::IssuerMismatch { .. }), "{err}");
        // Fails fast during the backoff instead of asking again.
        let err = verifier
            .verify(
                &key.sign(&ci_claims(&idp.base)),
                &idp.base,
                AUDIENCE,
                unix_now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::Unavailable(_)), "{err}");
        assert_eq!(idp.hits(), 0);
    }

    fn login_config(idp: &TestIdp, secret: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            issuer: idp.base.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: secret.map(str::to_owned),
            redirect_url: "https://gateway.example/auth/callback".into(),
            scopes: Vec::new(),
        }
    }

    fn id_claims(idp: &TestIdp, nonce: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": idp.base,
            "aud": CLIENT_ID,
            "sub": "alice-123",
            "email": "alice@example.com",
            "email_verified": true,
            "hd": "example.com",
            "groups": ["ops", "dev"],
            "amr": ["pwd", "mfa"],
            "auth_time": now - 5,
            "nonce": nonce,
            "iat": now,
            "exp": now + 300,
        })
    }

    #[tokio::test]
    async fn discovery_and_authorize_url() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let provider = Provider::discover(login_config(&idp, Some(SECRET)), http())
            .await
            .unwrap();
        assert_eq!(
            provider.algs,
            [
                CoreJwsSigningAlgorithm::EcdsaP256Sha256,
                CoreJwsSigningAlgorithm::EdDsa
            ],
            "HS256 and none are dropped"
        );
        let url = provider
            .authorize_url(
                VERIFIER,
                "nonce-1",
                "state-1",
                &[("hd", "example.com"), ("client_id", "evil")],
            )
            .unwrap();
        let url = openidconnect::url::Url::parse(&url).unwrap();
        assert_eq!(
            url.as_str().split('?').next(),
            Some(format!("{}/authorize", idp.base).as_str())
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |name: &str| -> Vec<&str> {
            pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get("response_type"), ["code"]);
        assert_eq!(get("client_id"), [CLIENT_ID]);
        assert_eq!(
            get("redirect_uri"),
            ["https://gateway.example/auth/callback"]
        );
        assert_eq!(get("state"), ["state-1"]);
        assert_eq!(get("nonce"), ["nonce-1"]);
        assert_eq!(get("code_challenge_method"), ["S256"]);
        // RFC 7636 appendix B.
        assert_eq!(
            get("code_challenge"),
            ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"]
        );
        assert_eq!(get("scope"), ["openid email profile"]);
        assert_eq!(get("hd"), ["example.com"]);

        assert!(matches!(
            provider.authorize_url("short", "n", "s", &[]),
            Err(OidcError::BadPkceVerifier)
        ));
        let generated = generate_pkce_verifier();
        assert_eq!(generated.len(), 43);
        provider.authorize_url(&generated, "n", "s", &[]).unwrap();
    }

    #[tokio::test]
    async fn discovery_rejects_issuer_mismatch() {
        let idp = TestIdp::start().await;
        *idp.doc_issuer.lock().unwrap() = Some(format!("{}/", idp.base));
        let err = Provider::discover(login_config(&idp, None), http())
            .await
            .unwrap_err();
        assert!(
            matches!(err, OidcError::Metadata(ref m) if m.contains("issuer")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn exchange_verifies_the_id_token() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let provider = Provider::discover(login_config(&idp, Some(SECRET)), http())
            .await
            .unwrap();
        idp.respond_with_id_token(&key.sign(&id_claims(&idp, "nonce-1")));
        let claims = provider
            .exchange("code-1", VERIFIER, "nonce-1")
            .await
            .unwrap();
        let now = unix_now();
        assert_eq!(claims.subject, "alice-123");
        assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
        assert!(claims.email_verified);
        assert_eq!(claims.hosted_domain.as_deref(), Some("example.com"));
        assert_eq!(claims.groups, ["ops", "dev"]);
        assert_eq!(claims.amr, ["pwd", "mfa"]);
        assert!(claims
            .auth_time
            .is_some_and(|t| (now - 10..=now).contains(&t)));
        assert!((now - 5..=now).contains(&claims.issued_at));

        let requests = idp.token_requests.lock().unwrap().clone();
        let (auth, body) = &requests[0];
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
        assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
        assert!(body.contains("grant_type=authorization_code"), "{body}");
        assert!(body.contains("code=code-1"), "{body}");
        assert!(
            body.contains(&format!("code_verifier={VERIFIER}")),
            "{body}"
        );
        assert!(body.contains("redirect_uri=https%3A%2F%2Fgateway.example%2Fauth%2Fcallback"));
        assert!(!body.contains(SECRET));

        // Missing email_verified means false.
        let mut c = id_claims(&idp, "nonce-1");
        c.as_object_mut().unwrap().remove("email_verified");
        idp.respond_with_id_token(&key.sign(&c));
        let claims = provider
            .exchange("code-2", VERIFIER, "nonce-1")
            .await
            .unwrap();
        assert!(!claims.email_verified);

        // Several audiences are fine when azp names us.
        let c = with(
            with(
                id_claims(&idp, "nonce-1"),
                "aud",
                json!([CLIENT_ID, "other"]),
            ),
            "azp",
            json!(CLIENT_ID),
        );
        idp.respond_with_id_token(&key.sign(&c));
        provider
            .exchange("code-3", VERIFIER, "nonce-1")
            .await
            .unwrap();

        // exp inside the leeway.
        let c = with(id_claims(&idp, "nonce-1"), "exp", json!(now - 30));
        idp.respond_with_id_token(&key.sign(&c));
        provider
            .exchange("code-4", VERIFIER, "nonce-1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn exchange_rejects_bad_id_tokens() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let provider = Provider::discover(login_config(&idp, Some(SECRET)), http())
            .await
            .unwrap();
        let now = unix_now();
        let good = id_claims(&idp, "nonce-1");
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some("k1".into());
        let hs_with_client_secret = jsonwebtoken::encode(
            &hs_header,
            &good,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let cases = [
            (
                "wrong nonce",
                key.sign(&with(good.clone(), "nonce", json!("other"))),
            ),
            ("no nonce", {
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("nonce");
                key.sign(&c)
            }),
            (
                "expired",
                key.sign(&with(good.clone(), "exp", json!(now - 120))),
            ),
            (
                "future iat",
                key.sign(&with(good.clone(), "iat", json!(now + 600))),
            ),
            (
                "wrong iss",
                key.sign(&with(good.clone(), "iss", json!("https://evil.example"))),
            ),
            (
                "wrong aud",
                key.sign(&with(good.clone(), "aud", json!("other"))),
            ),
            (
                "extra aud without azp",
                key.sign(&with(good.clone(), "aud", json!([CLIENT_ID, "other"]))),
            ),
            (
                "foreign azp",
                key.sign(&with(good.clone(), "azp", json!("other"))),
            ),
            ("other key", TestKey::es256("k1").sign(&good)),
            ("HS256 with the client secret", hs_with_client_secret),
            (
                "alg none",
                format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&good)),
            ),
        ];
        for (name, token) in cases {
            idp.respond_with_id_token(&token);
            let err = provider
                .exchange("code", VERIFIER, "nonce-1")
                .await
                .expect_err(name);
            assert!(
                matches!(err, OidcError::IdToken(_) | OidcError::TokenExchange(_)),
                "{name}: {err}"
            );
            assert!(
                !err.to_string().contains("eyJ"),
                "{name}: token leaked: {err}"
            );
        }
    }

    #[tokio::test]
    async fn exchange_refetches_jwks_on_key_rotation() {
        let idp = TestIdp::start().await;
        let k1 = TestKey::es256("k1");
        let k2 = TestKey::es256("k2");
        let k3 = TestKey::es256("k3");
        idp.set_keys(&[&k1]);
        let provider = Provider::discover(login_config(&idp, None), http())
            .await
            .unwrap();
        assert_eq!(idp.hits(), 1);
        idp.set_keys(&[&k2]);
        idp.respond_with_id_token(&k2.sign(&id_claims(&idp, "n")));
        provider.exchange("code", VERIFIER, "n").await.unwrap();
        assert_eq!(idp.hits(), 2);
        // Another unknown key within the minute: no second refetch.
        idp.respond_with_id_token(&k3.sign(&id_claims(&idp, "n")));
        let err = provider.exchange("code", VERIFIER, "n").await.unwrap_err();
        assert!(matches!(err, OidcError::IdToken(_)), "{err}");
        assert_eq!(idp.hits(), 2);

        // A public client sends its id in the body and no Authorization.
        let requests = idp.token_requests.lock().unwrap().clone();
        let (auth, body) = &requests[0];
        assert_eq!(auth, &None);
        assert!(body.contains(&format!("client_id={CLIENT_ID}")), "{body}");
    }

    #[tokio::test]
    async fn exchange_reports_token_endpoint_errors() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let provider = Provider::discover(login_config(&idp, Some(SECRET)), http())
            .await
            .unwrap();
        *idp.token_status.lock().unwrap() = 400;
        *idp.token_response.lock().unwrap() =
            json!({"error": "invalid_grant", "error_description": "code expired"});
        let err = provider.exchange("code", VERIFIER, "n").await.unwrap_err();
        assert!(
            matches!(err, OidcError::TokenRejected(ref m) if m == "invalid_grant: code expired"),
            "{err}"
        );
        *idp.token_status.lock().unwrap() = 200;
        *idp.token_response.lock().unwrap() = json!({"access_token": "at", "token_type": "bearer"});
        let err = provider.exchange("code", VERIFIER, "n").await.unwrap_err();
        assert!(matches!(err, OidcError::NoIdToken), "{err}");
        assert!(matches!(
            provider.exchange("code", "short", "n").await,
            Err(OidcError::BadPkceVerifier)
        ));
    }

    /// Some IdPs send `"email_verified": "true"`. `openidconnect` only parses
    /// that with its `accept-string-booleans` feature.
    #[tokio::test]
    async fn exchange_accepts_string_email_verified() {
        let idp = TestIdp::start().await;
        let key = TestKey::es256("k1");
        idp.set_keys(&[&key]);
        let provider = Provider::discover(login_config(&idp, None), http())
            .await
            .unwrap();
        let c = with(id_claims(&idp, "n"), "email_verified", json!("true"));
        idp.respond_with_id_token(&key.sign(&c));
        let claims = provider.exchange("code", VERIFIER, "n").await.unwrap();
        assert!(claims.email_verified);
    }

    #[tokio::test]
    async fn exchange_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_shareable<T: Send + Sync>() {}
        assert_shareable::<Provider>();
        assert_shareable::<FederationVerifier>();
        assert_shareable::<IdpHttp>();
        let idp = TestIdp::start().await;
        idp.set_keys(&[&TestKey::es256("k1")]);
        let provider = Provider::discover(login_config(&idp, None), http())
            .await
            .unwrap();
        let fut = provider.exchange("c", VERIFIER, "n");
        assert_send(&fut);
        let fed = FederationVerifier::new(http());
        let fut = fed.verify("t", "i", "a", 0);
        assert_send(&fut);
    }

    #[tokio::test]
    async fn http_client_limits() {
        let idp = TestIdp::start().await;
        let http = http();
        let err = http
            .get_json(&format!("{}/redirect", idp.base))
            .await
            .unwrap_err();
        assert!(
            matches!(err, OidcError::Status { status: 302, .. }),
            "{err}"
        );
        let err = http
            .get_json(&format!("{}/big", idp.base))
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::TooLarge(_)), "{err}");
        let err = http
            .get_json("http://idp.example/.well-known/openid-configuration?x=secret")
            .await
            .unwrap_err();
        assert!(matches!(err, OidcError::InsecureUrl(_)), "{err}");
        assert!(!err.to_string().contains("secret"));
        assert!(is_loopback("localhost") && is_loopback("[::1]") && is_loopback("127.0.0.2"));
        assert!(!is_loopback("10.0.0.1"));
    }
}
