//! Compact JWS plumbing shared by the gateway's own tokens and OIDC tokens:
//! splitting a token and decoding its base64url JSON segments, without
//! trusting anything in them (verification is the callers' job).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::identity::oidc::OidcError;

/// The `iss` claim of a JWT, read WITHOUT verifying anything: only to route
/// a token to the verifier for that issuer. `None` if it is not a JWT.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    let jws = Jws::split(token).ok()?;
    let header: Map<String, Value> = decode_segment(jws.header)?;
    header.get("alg")?.as_str()?;
    let claims: Map<String, Value> = decode_segment(jws.payload)?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// One base64url (unpadded) segment, parsed as JSON; `None` if either
/// step fails.
pub(crate) fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A compact JWS, split but not trusted.
pub(crate) struct Jws<'t> {
    pub(crate) header: &'t str,
    pub(crate) payload: &'t str,
    /// `header.payload`, what the signature covers.
    pub(crate) signing_input: &'t str,
    pub(crate) signature: &'t str,
}

impl<'t> Jws<'t> {
    pub(crate) fn split(token: &'t str) -> Result<Self, OidcError> {
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
