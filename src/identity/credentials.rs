//! Who is calling: the credential in the Basic `Authorization` header, turned
//! into an [`Identity`].
//!
//! The stock CLI puts the token in the Basic password and sends it still
//! percent-escaped (convox-api.md §0.2), so the password is percent-decoded
//! once before it is checked. The username is ignored.
//!
//! Static tokens are stored only as SHA-256 hashes and compared in constant
//! time against every configured hash, so neither the comparison nor the
//! position of a match leaks through timing.

use std::fmt;

use base64::Engine;
use thiserror::Error;

use crate::identity::secret;
use crate::policy::load::CiToken;

/// Longest credential accepted; anything longer is refused before hashing.
/// Public for the fuzz target.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What kind of subject an identity is; audit records carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A person who logged in through the identity provider.
    Person,
    /// A CI system holding a static token.
    CiToken,
    /// A CI system presenting its own OIDC token (keyless federation).
    FederatedCi,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Person => "person",
            IdentityKind::CiToken => "ci-token",
            IdentityKind::FederatedCi => "federated-ci",
        }
    }
}

/// An authenticated caller. The token only proves *who*; what they may do is
/// decided against the live config on every request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub kind: IdentityKind,
    /// Email for people, the configured name for CI identities.
    pub name: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// Why authentication failed. Messages are short and never contain the
/// presented credential.
/// Public (with [`basic_token`]) for the fuzz targets in `fuzz/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("missing credentials: set RACK_URL=https://convox:<token>@<gateway>")]
    Missing,
    #[error("malformed Authorization header (expected Basic)")]
    Malformed,
    #[error("invalid token")]
    Invalid,
    #[error("token expired: run `rack-gateway login` (or ask for a new CI token)")]
    Expired,
    #[error("token revoked: run `rack-gateway login` again")]
    Revoked,
    #[error("not authorized for this gateway")]
    NotAuthorized,
}

/// What a long-lived session keeps of the credential it was opened with,
/// so each reload can ask whether the new config still accepts it. Never
/// the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A static CI token: its SHA-256, as ci.yaml's `token_sha256` holds it.
    CiToken { sha256: [u8; 32] },
    /// A gateway token: the key that verified it.
    Gateway {
        voucher: crate::identity::token::Voucher,
    },
    /// A federated CI token: the issuer and audience it was verified for
    /// (its string claims are in the caller's `Auth`).
    Federated { issuer: String, audience: String },
}

/// An authenticated caller, and until when the credential is valid.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub(crate) identity: Identity,
    pub(crate) expires: Option<i64>,
    /// The gateway token's `iat`; `None` for CI credentials.
    pub(crate) issued_at: Option<i64>,
    /// What step-up and claim requirements decide on.
    pub(crate) auth: crate::policy::Auth,
    pub(crate) credential: Credential,
}

/// What credentials the live config accepts; rebuilt on every reload so a
/// removed key, user or CI identity stops working at once.
pub struct Credentials {
    pub(crate) ci_tokens: Vec<CiToken>,
    pub(crate) federated: Vec<crate::policy::load::FederatedIdentity>,
    /// The gateway's own token keys (after an OIDC login), and the issuer
    /// its tokens carry (the gateway's public URL).
    pub(crate) keys: Option<(crate::identity::token::Keys, String)>,
    /// Verified gateway tokens; per config snapshot, so a key removed from
    /// the config can't be served from the cache.
    pub(crate) cache: crate::identity::token::VerifyCache,
}

/// Audience of the gateway's own tokens.
pub const AUDIENCE: &str = "rack-gateway";

impl Credentials {
    /// Finds out who presents `token`, and checks it against the live
    /// policy: a person must still be in users.yaml (or a domain rule), a
    /// token must not predate their `tokens_valid_after`, a CI identity must
    /// not be past its expiry.
    pub(crate) async fn authenticate(
        &self,
        policy: &crate::policy::Policy,
        federation: &crate::identity::oidc::FederationVerifier,
        token: &str,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        if !token.contains('.') {
            let t = match_static_token(&self.ci_tokens, token).ok_or(AuthError::Invalid)?;
            if t.expires <= now {
                return Err(AuthError::Expired);
            }
            policy
                .subject(crate::policy::SubjectKind::Ci, &t.name)
                .ok_or(AuthError::NotAuthorized)?;
            return Ok(Authenticated {
                identity: Identity {
                    kind: IdentityKind::CiToken,
                    name: t.name.clone(),
                },
                expires: Some(t.expires),
                issued_at: None,
                auth: crate::policy::Auth {
                    ci: true,
                    ..Default::default()
                },
                credential: Credential::CiToken { sha256: t.sha256 },
            });
        }
        let issuer = crate::identity::jwt::unverified_issuer(token).ok_or(AuthError::Invalid)?;
        if let Some((keys, our_issuer)) = &self.keys {
            if *our_issuer == issuer {
                let (claims, voucher) =
                    self.cache
                        .verify_vouched(keys, token, now)
                        .map_err(|e| match e {
                            crate::identity::token::TokenError::Expired => AuthError::Expired,
                            _ => AuthError::Invalid,
                        })?;
                let person = policy.person(&claims.sub).ok_or(AuthError::NotAuthorized)?;
                if person.valid_after.is_some_and(|after| claims.iat < after) {
                    return Err(AuthError::Revoked);
                }
                return Ok(Authenticated {
                    auth: crate::policy::Auth {
                        ci: false,
                        amr: claims.amr,
                        auth_time: claims.auth_time,
                        ..Default::default()
                    },
                    identity: Identity {
                        kind: IdentityKind::Person,
                        name: claims.sub,
                    },
                    expires: Some(claims.exp),
                    issued_at: Some(claims.iat),
                    credential: Credential::Gateway { voucher },
                });
            }
        }
        // Keyless CI: verify once per distinct audience of this issuer,
        // then match the claim patterns of each identity.
        let mut verified: Vec<(&str, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        for f in self.federated.iter().filter(|f| f.issuer == issuer) {
            if !verified.iter().any(|(aud, _)| *aud == f.audience) {
                match federation.verify(token, &f.issuer, &f.audience, now).await {
                    Ok(claims) => verified.push((&f.audience, claims)),
                    Err(e) => {
                        tracing::debug!(issuer = %f.issuer, error = %e, "federated token refused");
                        continue;
                    }
                }
            }
            let Some((_, claims)) = verified.iter().find(|(aud, _)| *aud == f.audience) else {
                continue;
            };
            if f.matches(claims) {
                if f.expires <= now {
                    return Err(AuthError::Expired);
                }
                return Ok(Authenticated {
                    identity: Identity {
                        kind: IdentityKind::FederatedCi,
                        name: f.name.clone(),
                    },
                    expires: claims.get("exp").and_then(|v| v.as_i64()),
                    issued_at: None,
                    auth: crate::policy::Auth {
                        ci: true,
                        claims: string_claims(claims),
                        ..Default::default()
                    },
                    credential: Credential::Federated {
                        issuer: f.issuer.clone(),
                        audience: f.audience.clone(),
                    },
                });
            }
        }
        Err(AuthError::Invalid)
    }
}

/// A verified federated token's string claims (`environment`, `ref`,
/// `repository`, ...), which grants' `require.claims` match.
fn string_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    claims
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Extracts the token from `Authorization: Basic base64(user:token)`,
/// percent-decoding it the way the CLI encoded it. Public for `fuzz/`.
pub fn basic_token(headers: &http::HeaderMap) -> Result<String, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed);
    }
    let rest = rest.trim();
    if rest.len() > MAX_TOKEN_LEN * 4 / 3 + 8 {
        return Err(AuthError::Invalid);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| AuthError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let (_user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
    let password = percent_encoding::percent_decode_str(password)
        .decode_utf8()
        .map_err(|_| AuthError::Malformed)?;
    if password.is_empty() {
        return Err(AuthError::Missing);
    }
    if password.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid);
    }
    Ok(password.into_owned())
}

/// SHA-256 of a token, as stored in config.
pub fn token_sha256(token: &str) -> [u8; 32] {
    secret::sha256(token.as_bytes())
}

/// Finds the static CI token whose hash matches, scanning all of them with
/// constant-time comparisons.
pub(crate) fn match_static_token<'a>(tokens: &'a [CiToken], token: &str) -> Option<&'a CiToken> {
    let h = token_sha256(token);
    let mut found = None;
    for t in tokens {
        if secret::ct_eq(&t.sha256, &h) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

/// Whether `t` is the static token whose SHA-256 is `sha256` (constant
/// time): a session opened with a rotated-out token no longer is.
pub(crate) fn static_token_is(t: &CiToken, sha256: &[u8; 32]) -> bool {
    secret::ct_eq(&t.sha256, sha256)
}

/// A new random token made of characters that survive the CLI's Basic-auth
/// percent-escaping unchanged (`[A-Za-z0-9_-]`).
pub(crate) fn generate_token(prefix: &str) -> String {
    format!("{prefix}{}", secret::random_token(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn basic(userpass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userpass)
        )
    }

    #[test]
    fn decodes_percent_escaped_password() {
        assert_eq!(
            basic_token(&headers(&basic("convox:a%2Fb%40c%3Ad"))).unwrap(),
            "a/b@c:d"
        );
        assert_eq!(basic_token(&headers(&basic("x:tok"))).unwrap(), "tok");
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            basic_token(&http::HeaderMap::new()),
            Err(AuthError::Missing)
        );
        assert_eq!(basic_token(&headers("Bearer x")), Err(AuthError::Malformed));
        assert_eq!(
            basic_token(&headers("Basic !!!")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            basic_token(&headers(&basic("nocolon"))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            basic_token(&headers(&basic("convox:"))),
            Err(AuthError::Missing)
        );
        assert_eq!(
            basic_token(&headers(&basic("convox:%zz%ff"))),
            Err(AuthError::Malformed)
        );
        let mut h = headers(&basic("a:b"));
        h.append(http::header::AUTHORIZATION, basic("a:c").parse().unwrap());
        assert_eq!(basic_token(&h), Err(AuthError::Malformed));
    }

    #[test]
    fn static_token_match() {
        let tok = generate_token("rgw_");
        assert!(tok
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        let tokens = vec![
            CiToken {
                name: "other".into(),
                sha256: token_sha256("nope"),
                expires: i64::MAX,
            },
            CiToken {
                name: "ci".into(),
                sha256: token_sha256(&tok),
                expires: i64::MAX,
            },
        ];
        assert_eq!(match_static_token(&tokens, &tok).unwrap().name, "ci");
        assert!(match_static_token(&tokens, "wrong").is_none());
    }
}
