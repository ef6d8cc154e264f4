//! Gateway identity tokens: minting and strict verification of the
//! stateless token a person receives after an OIDC login.
//!
//! A token is a JWT signed with Ed25519 (`alg: EdDSA`) and nothing else. It
//! only says *who* the caller is; what they may do is decided from the live
//! config on every request, so a token never needs revoking when a role
//! changes.
//!
//! The stock CLI sends the token as the Basic-auth password, percent-escaped
//! (convox-api.md §0.2), so tokens are made only of base64url characters and
//! dots, which survive that escaping unchanged.
//!
//! Verification is deliberately narrower than JWT in general: the header may
//! carry only `alg`, `kid` and `typ`; the key is picked by `kid` from keys
//! configured here, never from the token (`jku`, `jwk`, `x5u` are refused);
//! and the time claims are checked against a caller-supplied clock, because
//! `jsonwebtoken` would read the wall clock itself.
//!
//! [`VerifyCache`] lets the hot path skip the signature check for a token
//! already verified.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::jwt::decode_segment;
use crate::identity::secret;

/// Longest token accepted. Ours are ~400 bytes; anything this large is refused
/// before it is decoded or hashed.
pub(crate) const MAX_TOKEN_LEN: usize = 4 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub(crate) const LEEWAY_SECS: i64 = 30;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw 32-byte
/// key follows it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Claims of a gateway token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The gateway that minted the token.
    pub iss: String,
    /// The gateway deployment the token is for.
    pub aud: String,
    /// The person's e-mail address, lower-case: the identity the config names.
    pub sub: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Random token id (16 bytes, base64url), so audit records can name a
    /// token without containing it.
    pub jti: String,
    /// Authentication methods reported by the identity provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the person last authenticated at the identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// Why a token was refused (or could not be minted).
///
/// Messages are fixed strings so that nothing from the token itself can end
/// up in a log line or an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token too large")]
    Oversized,
    #[error("token algorithm not accepted (EdDSA only)")]
    UnsupportedAlgorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issuer mismatch")]
    WrongIssuer,
    #[error("token audience mismatch")]
    WrongAudience,
    #[error("token missing a required claim")]
    MissingClaim,
    #[error("no token signing key available")]
    NoSigningKey,
}

/// Why a key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("invalid PEM")]
    InvalidPem,
    #[error("not an Ed25519 key (EdDSA only)")]
    NotEd25519,
    #[error("a public key cannot sign; the signing key must be a private key")]
    PublicKeyCannotSign,
    #[error("the signing key failed a test signature")]
    Unusable,
    #[error("duplicate key id {0:?}")]
    DuplicateKid(String),
    #[error("invalid key id {0:?} (1-64 characters of A-Z a-z 0-9 . _ -)")]
    InvalidKid(String),
    #[error("token issuer and audience must not be empty")]
    MissingIssuerOrAudience,
    /// A problem with one configured key, named by its kid.
    #[error("key {kid:?}: {reason}")]
    Key { kid: String, reason: Box<KeyError> },
}

impl KeyError {
    fn in_key(self, kid: &str) -> KeyError {
        KeyError::Key {
            kid: kid.to_owned(),
            reason: Box::new(self),
        }
    }
}

/// Generates a new Ed25519 private key as PKCS#8 PEM (`PRIVATE KEY`).
///
/// # Panics
/// If the operating system's random number generator fails, which leaves
/// nothing sensible to do.
pub fn generate_private_pem() -> String {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("system random number generator failed");
    pem_encode("PRIVATE KEY", pkcs8.as_ref())
}

/// The SubjectPublicKeyInfo PEM (`PUBLIC KEY`) for a private PEM, or a public
/// PEM passed through; what operators hand to other gateways that only
/// verify.
pub fn public_pem(pem: &str) -> Result<String, KeyError> {
    let public = Material::parse(pem)?.public();
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&public);
    Ok(pem_encode("PUBLIC KEY", &der))
}

/// Default key id: the first 16 hex characters of SHA-256 of the raw 32-byte
/// public key, so the private and public PEM of one key get the same id.
pub fn key_id(pem: &str) -> Result<String, KeyError> {
    Ok(fingerprint_id(&Material::parse(pem)?.public()))
}

fn fingerprint_id(public: &[u8; 32]) -> String {
    crate::hex::encode(&secret::sha256(public)[..8])
}

/// Ed25519 key material parsed from PEM.
enum Material {
    Private { pkcs8: Vec<u8>, public: [u8; 32] },
    Public([u8; 32]),
}

impl Material {
    fn parse(pem: &str) -> Result<Material, KeyError> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            "PRIVATE KEY" => {
                // Accepts PKCS#8 v1 (as written by `openssl genpkey`) and v2
                // (as written by ring, checked for consistency).
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|_| KeyError::NotEd25519)?;
                let public = pair
                    .public_key()
                    .as_ref()
                    .try_into()
                    .map_err(|_| KeyError::NotEd25519)?;
                Ok(Material::Private { pkcs8: der, public })
            }
            "PUBLIC KEY" => match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
                Some(raw) => raw
                    .try_into()
                    .map(Material::Public)
                    .map_err(|_| KeyError::NotEd25519),
                None => Err(KeyError::NotEd25519),
            },
            // RSA PRIVATE KEY, EC PRIVATE KEY, OPENSSH PRIVATE KEY, ...
            _ => Err(KeyError::NotEd25519),
        }
    }

    fn public(&self) -> [u8; 32] {
        match self {
            Material::Private { public, .. } | Material::Public(public) => *public,
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block: (label, DER).
fn pem_decode(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let start = text.find("-----BEGIN ").ok_or(KeyError::InvalidPem)?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or(KeyError::InvalidPem)?;
    let label = &rest[..label_end];
    let rest = &rest[label_end + "-----".len()..];
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or(KeyError::InvalidPem)?;
    let body: String = rest[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD.decode(body).map_err(|_| KeyError::InvalidPem)?;
    if der.is_empty() {
        return Err(KeyError::InvalidPem);
    }
    Ok((label.to_owned(), der))
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidKid(kid.to_owned()))
    }
}

struct SigningKey {
    kid: String,
    key: EncodingKey,
}

struct VerifyingKey {
    key: DecodingKey,
    /// Lets [`VerifyCache`] notice a kid that now names a different key.
    public: [u8; 32],
}

/// The keys, issuer and audience tokens are minted and verified with.
///
/// Built once from config and replaced as a whole on reload; tokens name
/// their key by `kid`, so old keys can stay in `verifying` during rotation.
pub struct Keys {
    issuer: String,
    audience: String,
    signing: Option<SigningKey>,
    verifying: HashMap<String, VerifyingKey>,
    validation: Validation,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.verifying.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("signing_kid", &self.signing.as_ref().map(|s| &s.kid))
            .field("verifying_kids", &kids)
            .finish()
    }
}

impl Keys {
    /// `signing`: (kid, PEM of an Ed25519 private key). `verifying`: extra
    /// (kid, PEM of an Ed25519 public or private key) accepted for
    /// verification only, so tokens signed by a retired key stay valid while
    /// it is listed (rotation). The signing key is always also a
    /// verification key. Keys of any other type (RSA, EC, HMAC secrets) are
    /// refused: EdDSA only. Duplicate kids are an error.
    pub fn new(
        issuer: &str,
        audience: &str,
        signing: Option<(String, String)>,
        verifying: Vec<(String, String)>,
    ) -> Result<Keys, KeyError> {
        if issuer.is_empty() || audience.is_empty() {
            return Err(KeyError::MissingIssuerOrAudience);
        }
        let mut keys = HashMap::new();
        let mut signer = None;
        if let Some((kid, pem)) = signing {
            check_kid(&kid)?;
            let (key, public) = signing_key(&pem).map_err(|e| e.in_key(&kid))?;
            keys.insert(kid.clone(), verifying_key(public));
            signer = Some(SigningKey { kid, key });
        }
        for (kid, pem) in verifying {
            check_kid(&kid)?;
            if keys.contains_key(&kid) {
                return Err(KeyError::DuplicateKid(kid));
            }
            let public = Material::parse(&pem).map_err(|e| e.in_key(&kid))?.public();
            keys.insert(kid, verifying_key(public));
        }

        let mut validation = Validation::new(Algorithm::EdDSA);
        // jsonwebtoken ignores "iat" here; `Wire::into_claims` requires it.
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = LEEWAY_SECS as u64;
        // jsonwebtoken compares exp/nbf with the wall clock, not the `now`
        // the caller passes; `check_times` does that instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;

        Ok(Keys {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            signing: signer,
            verifying: keys,
            validation,
        })
    }

    /// Mints a token for `sub` (lower-cased) valid from `now` for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        amr: Vec<String>,
        auth_time: Option<i64>,
        ttl: Duration,
        now: i64,
    ) -> Result<(String, Claims), TokenError> {
        let signing = self.signing.as_ref().ok_or(TokenError::NoSigningKey)?;
        let sub = sub.to_lowercase();
        if sub.is_empty() {
            return Err(TokenError::MissingClaim);
        }
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            // The RNG cannot fail on supported platforms; if it does, no
            // token can be minted safely.
            jti: new_jti().ok_or(TokenError::NoSigningKey)?,
            amr,
            auth_time,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signing.key)
            .map_err(|_| TokenError::NoSigningKey)?;
        // Never hand out a token `verify` would refuse (e.g. a huge `amr`).
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized);
        }
        Ok((token, claims))
    }

    /// Strict verification at time `now` (unix seconds).
    ///
    /// In order: size cap; charset and three parts; a header of exactly `alg`
    /// (must be `EdDSA`), `kid` (must name a configured key) and optionally
    /// `typ: JWT`; the signature (jsonwebtoken, algorithms exactly `[EdDSA]`);
    /// required claims, `iss` and `aud` exact, integer times, non-empty
    /// `sub`; then `exp`, `nbf` and `iat` against `now` with
    /// [`LEEWAY_SECS`].
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        self.verify_parts(token, now).map(|(claims, _, _)| claims)
    }

    /// [`Keys::verify`], also returning the kid and public key that vouched
    /// for the token.
    fn verify_parts<'k>(
        &'k self,
        token: &str,
        now: i64,
    ) -> Result<(Claims, &'k str, [u8; 32]), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized);
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };

        let header: JoseHeader = decode_segment(header).ok_or(TokenError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let (kid, key) = self
            .verifying
            .get_key_value(&kid)
            .ok_or(TokenError::UnknownKey)?;

        let data = jsonwebtoken::decode::<Wire>(token, &key.key, &self.validation)
            .map_err(map_jwt_error)?;
        let claims = data.claims.into_claims()?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        check_times(&claims, now)?;
        Ok((claims, kid, key.public))
    }

    /// Whether `kid` still names the key `public` (see [`VerifyCache`]).
    fn vouches(&self, kid: &str, public: &[u8; 32], claims: &Claims) -> bool {
        self.verifying.get(kid).is_some_and(|k| k.public == *public)
            && claims.iss == self.issuer
            && claims.aud == self.audience
    }

    /// Whether these keys would still accept a token `voucher` once
    /// vouched for: an open session asks this at every reload.
    pub(crate) fn still_vouch(&self, voucher: &Voucher) -> bool {
        self.verifying
            .get(&voucher.kid)
            .is_some_and(|k| k.public == voucher.public)
            && voucher.iss == self.issuer
            && voucher.aud == self.audience
    }
}

/// Which configured key verified a token, and for which issuer and
/// audience: what a long-lived session keeps instead of the token, so a
/// reload that retires the key can end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    /// The key id the token named (not secret).
    pub kid: String,
    public: [u8; 32],
    iss: String,
    aud: String,
}

impl Voucher {
    fn new(kid: &str, public: [u8; 32], claims: &Claims) -> Voucher {
        Voucher {
            kid: kid.to_owned(),
            public,
            iss: claims.iss.clone(),
            aud: claims.aud.clone(),
        }
    }
}

/// Loads a signing key and proves jsonwebtoken can sign with it and that the
/// signature verifies under the public key ring derived, so a key that only
/// one of the two libraries understands fails at startup, not at login.
fn signing_key(pem: &str) -> Result<(EncodingKey, [u8; 32]), KeyError> {
    let (pkcs8, public) = match Material::parse(pem)? {
        Material::Private { pkcs8, public } => (pkcs8, public),
        Material::Public(_) => return Err(KeyError::PublicKeyCannotSign),
    };
    let key = EncodingKey::from_ed_der(&pkcs8);
    let probe = b"rack-gateway signing key probe";
    let signature = jsonwebtoken::crypto::sign(probe, &key, Algorithm::EdDSA)
        .map_err(|_| KeyError::Unusable)?;
    let verifies =
        jsonwebtoken::crypto::verify(&signature, probe, &decoding_key(&public), Algorithm::EdDSA)
            .map_err(|_| KeyError::Unusable)?;
    if !verifies {
        return Err(KeyError::Unusable);
    }
    Ok((key, public))
}

fn decoding_key(public: &[u8; 32]) -> DecodingKey {
    // The JWK `x` form: unambiguously the raw 32-byte key. (`from_ed_der`
    // also wants raw bytes despite its name.)
    DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
        .expect("base64url of 32 bytes always decodes")
}

fn verifying_key(public: [u8; 32]) -> VerifyingKey {
    VerifyingKey {
        key: decoding_key(&public),
        public,
    }
}

fn new_jti() -> Option<String> {
    secret::try_random_token(16)
}

/// The only header fields accepted. Unknown fields (`jku`, `jwk`, `x5u`,
/// `x5c`, `crit`, ...) and duplicate fields fail to parse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

/// Claims as they arrive: every field optional, so a missing one is reported
/// as [`TokenError::MissingClaim`] rather than as malformed JSON. Times are
/// `i64`, so strings and fractions are refused.
#[derive(Debug, Deserialize)]
struct Wire {
    iss: Option<String>,
    aud: Option<String>,
    sub: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    amr: Option<Vec<String>>,
    auth_time: Option<i64>,
}

impl Wire {
    fn into_claims(self) -> Result<Claims, TokenError> {
        let missing = TokenError::MissingClaim;
        let claims = Claims {
            iss: self.iss.ok_or(missing)?,
            aud: self.aud.ok_or(missing)?,
            sub: self.sub.filter(|s| !s.is_empty()).ok_or(missing)?,
            iat: self.iat.ok_or(missing)?,
            nbf: self.nbf.ok_or(missing)?,
            exp: self.exp.ok_or(missing)?,
            jti: self.jti.filter(|s| !s.is_empty()).ok_or(missing)?,
            amr: self.amr.unwrap_or_default(),
            auth_time: self.auth_time,
        };
        Ok(claims)
    }
}

/// The time checks, shared by [`Keys::verify`] and cache hits.
fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    if now >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    let latest = now.saturating_add(LEEWAY_SECS);
    if claims.nbf > latest || claims.iat > latest {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenError::UnsupportedAlgorithm,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        _ => TokenError::Malformed,
    }
}

/// A bounded cache of verified tokens, so the hot path skips the signature
/// check (tens of µs) for a token it has seen.
///
/// Entries are keyed by the SHA-256 of the token, so the cache holds no
/// bearer credentials. Only tokens that passed [`Keys::verify`] are inserted,
/// so a caller without a valid token cannot churn it.
///
/// Each entry remembers the kid and public key that vouched for it, and a hit
/// counts only while the `Keys` passed in still map that kid to that key (and
/// have the same issuer and audience). A key removed or replaced on rotation
/// therefore invalidates its cached tokens at once, and the owner can keep
/// one cache across config reloads. Time claims are re-checked on every hit,
/// so an expired token is never returned.
///
/// A hit holds a read lock for one hash lookup and an `Arc` clone; the write
/// lock is taken only on a miss that verified (a token seen for the first
/// time) or to drop a stale entry. Those are rare next to hits, so readers do
/// not contend.
pub struct VerifyCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Entry {
    claims: Arc<Claims>,
    kid: String,
    public: [u8; 32],
}

impl fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

impl VerifyCache {
    /// A cache holding at most `capacity` (at least 1) tokens.
    pub fn new(capacity: usize) -> Self {
        VerifyCache {
            capacity: capacity.max(1),
            entries: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// [`Keys::verify`], answered from the cache when `keys` still vouch for
    /// a cached token.
    pub fn verify(&self, keys: &Keys, token: &str, now: i64) -> Result<Claims, TokenError> {
        self.verify_vouched(keys, token, now)
            .map(|(claims, _)| claims)
    }

    /// [`VerifyCache::verify`], also naming the key that vouched.
    pub(crate) fn verify_vouched(
        &self,
        keys: &Keys,
        token: &str,
        now: i64,
    ) -> Result<(Claims, Voucher), TokenError> {
        // Refuse huge input before hashing it.
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized);
        }
        let id = secret::sha256(token.as_bytes());

        let (cached, stale) = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            match entries.get(&id) {
                Some(e) if keys.vouches(&e.kid, &e.public, &e.claims) => (
                    Some((
                        Arc::clone(&e.claims),
                        Voucher::new(&e.kid, e.public, &e.claims),
                    )),
                    false,
                ),
                Some(_) => (None, true),
                None => (None, false),
            }
        };
        if let Some((claims, voucher)) = cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            check_times(&claims, now)?;
            return Ok((Claims::clone(&claims), voucher));
        }

        self.misses.fetch_add(1, Ordering::Relaxed);
        match keys.verify_parts(token, now) {
            Ok((claims, kid, public)) => {
                let voucher = Voucher::new(kid, public, &claims);
                let entry = Entry {
                    claims: Arc::new(claims.clone()),
                    kid: kid.to_owned(),
                    public,
                };
                self.insert(id, entry, now);
                Ok((claims, voucher))
            }
            Err(e) => {
                if stale {
                    self.write().remove(&id);
                }
                Err(e)
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts, evicting first when full: expired entries, then arbitrary
    /// ones down to half capacity. Each eviction pass is O(capacity) and buys
    /// at least capacity/2 inserts, so inserting is O(1) amortised.
    fn insert(&self, id: [u8; 32], entry: Entry, now: i64) {
        let mut entries = self.write();
        if entries.len() >= self.capacity && !entries.contains_key(&id) {
            entries.retain(|_, e| check_times(&e.claims, now) != Err(TokenError::Expired));
            let target = self.capacity / 2;
            let mut excess = entries.len().saturating_sub(target);
            if excess > 0 {
                entries.retain(|_, _| {
                    if excess > 0 {
                        excess -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        entries.insert(id, entry);
    }

    /// Verifications answered from the cache.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Verifications that checked the signature.
    pub(crate) fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Tokens currently cached.
    pub(crate) fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests;
