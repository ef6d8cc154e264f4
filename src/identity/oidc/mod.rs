//! The identity-provider side of logins and of keyless CI federation.
//!
//! - [`Provider`] (in `provider`) logs people in with any OpenID Connect
//!   provider: discovery, the authorization URL (code flow, PKCE S256,
//!   nonce), the code exchange and ID token verification. The
//!   `openidconnect` crate does the protocol work; this module adds what it
//!   leaves to the relying party (clock leeway, `iat` not in the future,
//!   `azp`, never `none`/HMAC, refetching the JWKS when the provider rotates
//!   keys) and turns the claims into [`IdClaims`].
//! - [`FederationVerifier`] (in `federation`) accepts a CI system's own ID
//!   token (GitHub Actions, GitLab CI, CircleCI) as a credential. It is
//!   verified with `jsonwebtoken` against the issuer's discovered JWKS, with
//!   the algorithm pinned by the key rather than trusted from the token
//!   header.
//!
//! Both talk to identity providers only through [`IdpHttp`] (in `http`): the
//! gateway's own hyper + rustls stack, bounded in time and response size,
//! never following redirects, and refusing plain http except to loopback.
//!
//! This file holds what the three share: the error type, the leeway and
//! refetch limits, and the helpers that keep provider text out of logs.

use std::time::Duration;

use thiserror::Error;

use crate::rack::upstream::UpstreamError;

mod federation;
mod http;
mod provider;
#[cfg(test)]
mod tests;

pub use federation::FederationVerifier;
pub(crate) use http::IdpHttp;
pub(crate) use provider::{IdClaims, Provider, ProviderConfig};

/// Clock skew tolerated between us and the identity provider, in seconds.
const LEEWAY_SECS: i64 = 60;
/// A token naming an unknown `kid` may trigger a JWKS refetch at most this
/// often, so garbage tokens cannot make us hammer the provider.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Everything that can go wrong talking to or trusting an identity provider.
/// Messages are short and never carry tokens, codes or secrets; URLs are shown
/// without their query string.
#[derive(Debug, Error)]
pub(crate) enum OidcError {
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
