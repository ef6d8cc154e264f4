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
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest token accepted. Ours are ~400 bytes; anything this large is refused
/// before it is decoded or hashed.
pub const MAX_TOKEN_LEN: usize = 4 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

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
    digest::digest(&digest::SHA256, public).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

    /// The issuer tokens are minted with and must carry; lets the caller tell
    /// the gateway's own tokens from federated CI tokens before verifying.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether this gateway can mint tokens (it may only verify them).
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
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

        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: JoseHeader =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
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
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
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
        // Refuse huge input before hashing it.
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Oversized);
        }
        let id: [u8; 32] = digest::digest(&digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");

        let (cached, stale) = {
            let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
            match entries.get(&id) {
                Some(e) if keys.vouches(&e.kid, &e.public, &e.claims) => {
                    (Some(Arc::clone(&e.claims)), false)
                }
                Some(_) => (None, true),
                None => (None, false),
            }
        };
        if let Some(claims) = cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            check_times(&claims, now)?;
            return Ok(Claims::clone(&claims));
        }

        self.misses.fetch_add(1, Ordering::Relaxed);
        match keys.verify_parts(token, now) {
            Ok((claims, kid, public)) => {
                let entry = Entry {
                    claims: Arc::new(claims.clone()),
                    kid: kid.to_owned(),
                    public,
                };
                self.insert(id, entry, now);
                Ok(claims)
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
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Verifications that checked the signature.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Tokens currently cached.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};

    use super::*;

    const NOW: i64 = 1_700_000_000;
    const ISS: &str = "https://gateway.example.com";
    const AUD: &str = "rack-gateway";
    const HOUR: Duration = Duration::from_secs(3600);

    /// Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public
    /// key inside) and its `openssl pkey -pubout`.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDyBUomnsRkZ5Acmm6gP+umRkhFAtaTc0gTPRsBVCZVx
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAn1NZxpjjhqIPj0jZ3szzApcuzML0UVg/bGVpnp16E/U=
-----END PUBLIC KEY-----
";
    const EC_SEC1_PRIVATE: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKkP9aqataX4qNXpgzilkldvvveMQuKogaJGiNV42iQSoAoGCCqGSM49
AwEHoUQDQgAEpSHa6JrM4AdKcWtPeSxe15Yj82NaxkmiQqopuDrLZy4d+t/8bCvl
94Zvch5Xre5ohfAAlQFEkl/vfDuMmD/XOQ==
-----END EC PRIVATE KEY-----
";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpSHa6JrM4AdKcWtPeSxe15Yj82Na
xkmiQqopuDrLZy4d+t/8bCvl94Zvch5Xre5ohfAAlQFEkl/vfDuMmD/XOQ==
-----END PUBLIC KEY-----
";
    const RSA_PKCS8_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA/DIy9iXTCFYh9zKM
qwx1x3DUcxrMtWqY3RE/cHPleagdeCBPJowzwnYRYplZr7Pn6l94EIfaYB7VjBju
1VrRhwIDAQABAkEApKGofuMGNiT0G0jWZzrFECLprRJLnAowK+/8d85QeO8oP4Zo
FZ3o7uMLINJ9kH3TxwfoiSS9NxUiSTsK0sWPMQIhAP6pAiZyp/cEtsGbSC+tBHf4
WAzedL/LgT5uP6mSiVTFAiEA/YXfMxQZemG9ewGscGX4+hU3O2oZev40Piu8NnhY
6dsCIQCpR1cyj4yvWubRE5OMfYo25VJCW61nwLMM+ORAqDO5sQIgISfv7+MyDdJY
kIzAe5aqgDJkHc4bdP1n4bWgkNMedb8CIEbPQvEQ187QQKKLttJyDnlrv+ZuCcYk
Qab0VhUhPSLV
-----END PRIVATE KEY-----
";
    const RSA_PKCS1_PRIVATE: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBAPwyMvYl0whWIfcyjKsMdcdw1HMazLVqmN0RP3Bz5XmoHXggTyaM
M8J2EWKZWa+z5+pfeBCH2mAe1YwY7tVa0YcCAwEAAQJBAKShqH7jBjYk9BtI1mc6
xRAi6a0SS5wKMCvv/HfOUHjvKD+GaBWd6O7jCyDSfZB908cH6IkkvTcVIkk7CtLF
jzECIQD+qQImcqf3BLbBm0gvrQR3+FgM3nS/y4E+bj+pkolUxQIhAP2F3zMUGXph
vXsBrHBl+PoVNztqGXr+ND4rvDZ4WOnbAiEAqUdXMo+Mr1rm0ROTjH2KNuVSQlut
Z8CzDPjkQKgzubECICEn7+/jMg3SWJCMwHuWqoAyZB3OG3T9Z+G1oJDTHnW/AiBG
z0LxENfO0ECii7bScg55a7/mbgnGJEGm9FYVIT0i1Q==
-----END RSA PRIVATE KEY-----
";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDA000M5awSwympmcIlMnqnzh0q
E/3iA8LgNOy+zzuhl9CGRRP0AF247tfGViQMmZpfE/7MzjR9Dy/q1ZwjL1auk1Ph
jbhT1pkRwZSrjY3VCdBamS38/FWRr3gj0UsxEFZtcsJYUPH4tF6JGYUu797d1RI0
4zCOX5Ono3oxMqC3NwIDAQAB
-----END PUBLIC KEY-----
";

    /// A signing key, the same key as a ring key pair (to forge tokens of any
    /// shape with a valid signature), its kid, and `Keys` built from it.
    struct Fx {
        pem: String,
        pair: Ed25519KeyPair,
        kid: String,
        keys: Keys,
    }

    fn fx() -> Fx {
        let pem = generate_private_pem();
        let (_, der) = pem_decode(&pem).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(&der).unwrap();
        let kid = key_id(&pem).unwrap();
        let keys = Keys::new(ISS, AUD, Some((kid.clone(), pem.clone())), vec![]).unwrap();
        Fx {
            pem,
            pair,
            kid,
            keys,
        }
    }

    impl Fx {
        fn mint(&self) -> (String, Claims) {
            self.keys
                .mint("Ann@Example.com", vec![], None, HOUR, NOW)
                .unwrap()
        }

        fn verify(&self, token: &str) -> Result<Claims, TokenError> {
            self.keys.verify(token, NOW)
        }

        fn header(&self) -> Value {
            json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid})
        }

        /// A validly signed token of exactly these header and payload bytes.
        fn forge(&self, header: &str, payload: &str) -> String {
            forge_with(header, payload, |msg| self.pair.sign(msg).as_ref().to_vec())
        }

        fn forge_json(&self, header: &Value, payload: &Value) -> String {
            self.forge(&header.to_string(), &payload.to_string())
        }

        /// A validly signed token with our header and these claims.
        fn forge_claims(&self, payload: &Value) -> String {
            self.forge_json(&self.header(), payload)
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn forge_with(header: &str, payload: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let msg = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = sign(msg.as_bytes());
        format!("{msg}.{}", b64(&sig))
    }

    fn claims_json() -> Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "ann@example.com",
            "iat": NOW, "nbf": NOW, "exp": NOW + 3600,
            "jti": "q83vEjRWeJq83vEjRWeJqw",
        })
    }

    fn set(mut v: Value, key: &str, val: Value) -> Value {
        v[key] = val;
        v
    }

    fn unset(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn kind(r: Result<Keys, KeyError>) -> KeyError {
        match r {
            Ok(_) => panic!("key accepted"),
            Err(KeyError::Key { reason, .. }) => *reason,
            Err(e) => e,
        }
    }

    // ----- round trip and minting

    #[test]
    fn round_trip() {
        let fx = fx();
        let (token, claims) = fx
            .keys
            .mint(
                "Ann@Example.com",
                vec!["pwd".into(), "mfa".into()],
                Some(NOW - 5),
                HOUR,
                NOW,
            )
            .unwrap();
        assert_eq!(fx.verify(&token), Ok(claims.clone()));
        assert_eq!(claims.sub, "ann@example.com");
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISS, AUD));
        assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 3600));
        assert_eq!(claims.amr, ["pwd", "mfa"]);
        assert_eq!(claims.auth_time, Some(NOW - 5));
        assert_eq!(claims.jti.len(), 22);
        assert!(URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len() >= 16);
        // Survives the CLI's percent-escaping of the Basic password unchanged.
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
        assert_eq!(token.matches('.').count(), 2);

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(fx.kid.as_str()));
    }

    #[test]
    fn forged_helper_produces_valid_tokens() {
        // Guards the forged-token tests below: with nothing wrong, the forged
        // token verifies, so each failure is caused by the one change made.
        let fx = fx();
        let claims = fx.verify(&fx.forge_claims(&claims_json())).unwrap();
        assert_eq!(claims.sub, "ann@example.com");
        assert!(claims.amr.is_empty());
    }

    #[test]
    fn verify_only_gateway_accepts_tokens_of_the_signing_one() {
        let fx = fx();
        let public = public_pem(&fx.pem).unwrap();
        let verifier = Keys::new(ISS, AUD, None, vec![(fx.kid.clone(), public)]).unwrap();
        assert!(!verifier.can_sign());
        assert!(fx.keys.can_sign());
        let (token, claims) = fx.mint();
        assert_eq!(verifier.verify(&token, NOW), Ok(claims));
        assert_eq!(
            verifier.mint("ann@example.com", vec![], None, HOUR, NOW),
            Err(TokenError::NoSigningKey)
        );
    }

    #[test]
    fn mint_refuses_empty_subject_and_oversized_tokens() {
        let fx = fx();
        assert_eq!(
            fx.keys.mint("", vec![], None, HOUR, NOW),
            Err(TokenError::MissingClaim)
        );
        let amr = vec!["x".repeat(100); 40];
        assert_eq!(
            fx.keys.mint("ann@example.com", amr, None, HOUR, NOW),
            Err(TokenError::Oversized)
        );
    }

    #[test]
    fn jti_is_fresh_per_token() {
        let fx = fx();
        let (_, a) = fx.mint();
        let (_, b) = fx.mint();
        assert_ne!(a.jti, b.jti);
    }

    // ----- algorithm confusion

    #[test]
    fn alg_none_is_refused() {
        let fx = fx();
        let payload = b64(claims_json().to_string().as_bytes());
        for header in [
            json!({"alg": "none"}),
            json!({"alg": "none", "kid": fx.kid}),
        ] {
            let header = b64(header.to_string().as_bytes());
            for token in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}.AAAA"),
            ] {
                assert_eq!(fx.verify(&token), Err(TokenError::UnsupportedAlgorithm));
            }
        }
    }

    #[test]
    fn hs256_keyed_with_our_public_key_is_refused() {
        let fx = fx();
        let public = public_pem(&fx.pem).unwrap();
        let claims: Claims = serde_json::from_value(claims_json()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(fx.kid.clone());
        for secret in [public.as_bytes(), fx.pair.public_key().as_ref()] {
            let token =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            assert_eq!(fx.verify(&token), Err(TokenError::UnsupportedAlgorithm));
            // Even past our header check, jsonwebtoken refuses the mismatch.
            let key = &fx.keys.verifying[&fx.kid].key;
            let err = jsonwebtoken::decode::<Wire>(&token, key, &fx.keys.validation).unwrap_err();
            assert_eq!(map_jwt_error(err), TokenError::UnsupportedAlgorithm);
        }
    }

    #[test]
    fn rs256_is_refused_before_verification() {
        let fx = fx();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": fx.kid}).to_string();
        let token = forge_with(&header, &claims_json().to_string(), |_| vec![7u8; 256]);
        assert_eq!(fx.verify(&token), Err(TokenError::UnsupportedAlgorithm));
    }

    #[test]
    fn es256_signed_token_is_refused() {
        let fx = fx();
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let claims: Claims = serde_json::from_value(claims_json()).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(fx.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref()))
                .unwrap();
        assert_eq!(fx.verify(&token), Err(TokenError::UnsupportedAlgorithm));
    }

    #[test]
    fn every_other_alg_spelling_is_refused() {
        let fx = fx();
        let algs = [
            "HS384", "HS512", "RS384", "RS512", "PS256", "PS384", "PS512", "ES384", "ES512",
            "eddsa", "EDDSA", "Ed25519", "Ed448", "EdDSA ", "None", "",
        ];
        for alg in algs {
            let header = json!({"alg": alg, "kid": fx.kid});
            let token = fx.forge_json(&header, &claims_json());
            assert_eq!(
                fx.verify(&token),
                Err(TokenError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let header = json!({"alg": ["EdDSA"], "kid": fx.kid});
        assert_eq!(
            fx.verify(&fx.forge_json(&header, &claims_json())),
            Err(TokenError::Malformed)
        );
    }

    // ----- keys and signatures

    #[test]
    fn valid_signature_by_another_key_under_our_kid() {
        let fx = fx();
        let other = Keys::new(
            ISS,
            AUD,
            Some((fx.kid.clone(), generate_private_pem())),
            vec![],
        )
        .unwrap();
        let (token, _) = other
            .mint("ann@example.com", vec![], None, HOUR, NOW)
            .unwrap();
        assert_eq!(fx.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn unknown_kid() {
        let fx = fx();
        let header = set(fx.header(), "kid", json!("0123456789abcdef"));
        let token = fx.forge_json(&header, &claims_json());
        assert_eq!(fx.verify(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn missing_kid() {
        let fx = fx();
        let token = fx.forge_json(&unset(fx.header(), "kid"), &claims_json());
        assert_eq!(fx.verify(&token), Err(TokenError::UnknownKey));
        let token = fx.forge_json(&set(fx.header(), "kid", Value::Null), &claims_json());
        assert_eq!(fx.verify(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tampered_payload() {
        let fx = fx();
        let (token, _) = fx.mint();
        let parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        let payload = String::from_utf8(payload)
            .unwrap()
            .replace("ann@example.com", "bob@example.com");
        let forged = format!("{}.{}.{}", parts[0], b64(payload.as_bytes()), parts[2]);
        assert_eq!(fx.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_header() {
        let fx = fx();
        let (token, _) = fx.mint();
        let (_, rest) = token.split_once('.').unwrap();
        // Same meaning, different bytes: the signature covers the bytes.
        let header = format!(r#"{{"kid":"{}","alg":"EdDSA"}}"#, fx.kid);
        let forged = format!("{}.{rest}", b64(header.as_bytes()));
        assert_eq!(fx.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn truncated_or_altered_signature() {
        let fx = fx();
        let (token, _) = fx.mint();
        let (msg, sig) = token.rsplit_once('.').unwrap();
        // 44 characters: exactly 33 bytes, a signature of the wrong length.
        assert_eq!(
            fx.verify(&format!("{msg}.{}", &sig[..44])),
            Err(TokenError::BadSignature)
        );
        assert_eq!(fx.verify(&format!("{msg}.")), Err(TokenError::BadSignature));
        // A length no base64 can have, or leftover bits set.
        assert_eq!(
            fx.verify(&token[..token.len() - 1]),
            Err(TokenError::Malformed)
        );
        // 82 characters leave 4 spare bits; `B` (000001) sets one of them,
        // whatever the signature's own last character was.
        assert_eq!(
            fx.verify(&format!("{}B", &token[..token.len() - 5])),
            Err(TokenError::Malformed)
        );

        let mut flipped = token.clone().into_bytes();
        let i = msg.len() + 10;
        flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(fx.verify(&flipped), Err(TokenError::BadSignature));
    }

    #[test]
    fn non_canonical_signature_encoding_is_refused() {
        // The last character of a 64-byte signature carries 2 bits and 4
        // unused ones; setting the unused bits must not yield a second valid
        // spelling of the same token.
        let fx = fx();
        let (token, _) = fx.mint();
        let last = *token.as_bytes().last().unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let pos = alphabet.iter().position(|&c| c == last).unwrap();
        let sibling = alphabet[pos | 1] as char;
        let forged = format!("{}{sibling}", &token[..token.len() - 1]);
        assert_ne!(forged, token);
        assert_eq!(fx.verify(&forged), Err(TokenError::Malformed));
    }

    // ----- time claims

    #[test]
    fn expired() {
        let fx = fx();
        let (token, claims) = fx.mint();
        let edge = claims.exp + LEEWAY_SECS;
        assert!(fx.keys.verify(&token, edge - 1).is_ok());
        assert_eq!(fx.keys.verify(&token, edge), Err(TokenError::Expired));
        assert_eq!(
            fx.keys.verify(&token, NOW + 86_400),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn not_yet_valid() {
        let fx = fx();
        let token = fx.forge_claims(&set(claims_json(), "nbf", json!(NOW + 300)));
        assert_eq!(fx.verify(&token), Err(TokenError::NotYetValid));
        let token = fx.forge_claims(&set(claims_json(), "nbf", json!(NOW + LEEWAY_SECS)));
        assert!(fx.verify(&token).is_ok());
        let (token, _) = fx.mint();
        assert_eq!(
            fx.keys.verify(&token, NOW - LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn iat_far_in_the_future() {
        let fx = fx();
        let token = fx.forge_claims(&set(claims_json(), "iat", json!(NOW + 3000)));
        assert_eq!(fx.verify(&token), Err(TokenError::NotYetValid));
    }

    #[test]
    fn exp_as_string_is_refused() {
        // CVE-2026-25537: a string `exp` must not make the expiry check pass.
        let fx = fx();
        let token = fx.forge_claims(&set(claims_json(), "exp", json!("99999999999")));
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
        let token = fx.forge_claims(&set(claims_json(), "nbf", json!("0")));
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn fractional_or_huge_times_are_refused() {
        let fx = fx();
        for exp in [
            json!(1.9e9),
            json!(u64::MAX),
            json!(true),
            json!([NOW + 10]),
        ] {
            let token = fx.forge_claims(&set(claims_json(), "exp", exp.clone()));
            assert_eq!(fx.verify(&token), Err(TokenError::Malformed), "{exp}");
        }
    }

    // ----- issuer, audience and required claims

    #[test]
    fn wrong_issuer() {
        let fx = fx();
        let other = Keys::new(
            "https://evil.example.com",
            AUD,
            Some((fx.kid.clone(), fx.pem.clone())),
            vec![],
        )
        .unwrap();
        let (token, _) = other
            .mint("ann@example.com", vec![], None, HOUR, NOW)
            .unwrap();
        assert_eq!(fx.verify(&token), Err(TokenError::WrongIssuer));
        let token = fx.forge_claims(&set(claims_json(), "iss", json!(ISS.to_uppercase())));
        assert_eq!(fx.verify(&token), Err(TokenError::WrongIssuer));
        let token = fx.forge_claims(&set(claims_json(), "iss", json!([ISS])));
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn wrong_audience() {
        let fx = fx();
        let other = Keys::new(
            ISS,
            "other-gateway",
            Some((fx.kid.clone(), fx.pem.clone())),
            vec![],
        )
        .unwrap();
        let (token, _) = other
            .mint("ann@example.com", vec![], None, HOUR, NOW)
            .unwrap();
        assert_eq!(fx.verify(&token), Err(TokenError::WrongAudience));
        // An array naming us among others is not an exact match.
        let token = fx.forge_claims(&set(claims_json(), "aud", json!([AUD, "other"])));
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn missing_claims() {
        let fx = fx();
        for claim in ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"] {
            let token = fx.forge_claims(&unset(claims_json(), claim));
            assert_eq!(fx.verify(&token), Err(TokenError::MissingClaim), "{claim}");
            let token = fx.forge_claims(&set(claims_json(), claim, Value::Null));
            assert_eq!(
                fx.verify(&token),
                Err(TokenError::MissingClaim),
                "{claim}: null"
            );
        }
    }

    #[test]
    fn empty_subject() {
        let fx = fx();
        let token = fx.forge_claims(&set(claims_json(), "sub", json!("")));
        assert_eq!(fx.verify(&token), Err(TokenError::MissingClaim));
    }

    #[test]
    fn duplicate_claim_is_refused() {
        // Two parsers reading different `sub`s out of one token is how
        // identity confusion starts.
        let fx = fx();
        let payload = claims_json().to_string();
        let payload = format!(
            r#"{},"sub":"root@example.com"}}"#,
            &payload[..payload.len() - 1]
        );
        let token = fx.forge(&fx.header().to_string(), &payload);
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    // ----- shape

    #[test]
    fn oversized() {
        let fx = fx();
        let (token, _) = fx.mint();
        let big = format!("{token}{}", "A".repeat(100 * 1024));
        assert_eq!(fx.verify(&big), Err(TokenError::Oversized));
        let just_over = "A".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(fx.verify(&just_over), Err(TokenError::Oversized));
        let cache = VerifyCache::new(10);
        assert_eq!(
            cache.verify(&fx.keys, &big, NOW),
            Err(TokenError::Oversized)
        );
    }

    #[test]
    fn not_three_parts() {
        let fx = fx();
        let (token, _) = fx.mint();
        let (msg, _) = token.rsplit_once('.').unwrap();
        for bad in [
            "",
            ".",
            "..",
            "...",
            "abc",
            msg,
            &format!("{token}.AAAA"),
            &format!(".{token}"),
        ] {
            assert_eq!(fx.verify(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn invalid_base64() {
        let fx = fx();
        let (token, _) = fx.mint();
        let (header, rest) = token.split_once('.').unwrap();
        let std_alphabet = format!("{}+/.{rest}", &header[..header.len() - 2]);
        let padded = format!("{header}==.{rest}");
        let spaced = format!("{header} .{rest}");
        let escaped = token.replacen('.', "%2E", 1);
        for bad in [std_alphabet, padded, spaced, escaped, format!("A.{rest}")] {
            assert_eq!(fx.verify(&bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn invalid_json() {
        let fx = fx();
        let header = fx.header().to_string();
        for payload in ["not json", "[1,2]", "{\"sub\":", "\"ann@example.com\""] {
            assert_eq!(
                fx.verify(&fx.forge(&header, payload)),
                Err(TokenError::Malformed)
            );
        }
        let token = fx.forge("{alg:EdDSA}", &claims_json().to_string());
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn extra_header_fields_are_refused() {
        let fx = fx();
        let extras = [
            ("jku", json!("https://evil.example.com/jwks.json")),
            (
                "jwk",
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(fx.pair.public_key().as_ref())}),
            ),
            ("x5u", json!("https://evil.example.com/cert.pem")),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
            ("cty", json!("JWT")),
            ("b64", json!(false)),
        ];
        for (name, value) in extras {
            let token = fx.forge_json(&set(fx.header(), name, value), &claims_json());
            assert_eq!(fx.verify(&token), Err(TokenError::Malformed), "{name}");
        }
        let token = fx.forge_json(&set(fx.header(), "typ", json!("at+jwt")), &claims_json());
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
        // A header naming `alg` twice.
        let header = format!(r#"{{"alg":"EdDSA","kid":"{}","alg":"HS256"}}"#, fx.kid);
        let token = fx.forge(&header, &claims_json().to_string());
        assert_eq!(fx.verify(&token), Err(TokenError::Malformed));
    }

    // ----- key loading

    #[test]
    fn keys_of_other_types_are_refused() {
        let rng = SystemRandom::new();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec_pkcs8 = pem_encode("PRIVATE KEY", ec_pkcs8.as_ref());
        let not_ed = [
            ec_pkcs8.as_str(),
            EC_SEC1_PRIVATE,
            EC_PUBLIC,
            RSA_PKCS8_PRIVATE,
            RSA_PKCS1_PRIVATE,
            RSA_PUBLIC,
        ];
        for pem in not_ed {
            let signing = Keys::new(ISS, AUD, Some(("k1".into(), pem.into())), vec![]);
            assert!(matches!(kind(signing), KeyError::NotEd25519), "{pem}");
            let verifying = Keys::new(ISS, AUD, None, vec![("k1".into(), pem.into())]);
            assert!(matches!(kind(verifying), KeyError::NotEd25519), "{pem}");
            assert!(matches!(public_pem(pem), Err(KeyError::NotEd25519)));
            assert!(matches!(key_id(pem), Err(KeyError::NotEd25519)));
        }
        let (_, der) = pem_decode(OPENSSL_PRIVATE).unwrap();
        let truncated = pem_encode("PRIVATE KEY", &der[..der.len() - 2]);
        let not_pem = [
            "an HMAC shared secret",
            "",
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PUBLIC KEY-----\n",
        ];
        for pem in not_pem {
            let signing = Keys::new(ISS, AUD, Some(("k1".into(), pem.into())), vec![]);
            assert!(matches!(kind(signing), KeyError::InvalidPem), "{pem}");
        }
        let signing = Keys::new(ISS, AUD, Some(("k1".into(), truncated)), vec![]);
        assert!(matches!(kind(signing), KeyError::NotEd25519));
    }

    #[test]
    fn key_errors_name_the_kid() {
        let err =
            Keys::new(ISS, AUD, None, vec![("old-2024".into(), RSA_PUBLIC.into())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"key "old-2024": not an Ed25519 key (EdDSA only)"#
        );
    }

    #[test]
    fn public_key_cannot_sign() {
        let signing = Keys::new(ISS, AUD, Some(("k1".into(), OPENSSL_PUBLIC.into())), vec![]);
        assert!(matches!(kind(signing), KeyError::PublicKeyCannotSign));
    }

    #[test]
    fn duplicate_and_invalid_kids() {
        let a = generate_private_pem();
        let b = generate_private_pem();
        let dup_with_signing = Keys::new(
            ISS,
            AUD,
            Some(("k1".into(), a.clone())),
            vec![("k1".into(), public_pem(&b).unwrap())],
        );
        assert!(matches!(dup_with_signing, Err(KeyError::DuplicateKid(k)) if k == "k1"));
        let dup_verifying = Keys::new(
            ISS,
            AUD,
            None,
            vec![("k2".into(), a.clone()), ("k2".into(), b)],
        );
        assert!(matches!(dup_verifying, Err(KeyError::DuplicateKid(_))));
        for kid in ["", "has space", "ünï", &"k".repeat(65), "a\"b"] {
            let r = Keys::new(ISS, AUD, Some((kid.into(), a.clone())), vec![]);
            assert!(matches!(r, Err(KeyError::InvalidKid(_))), "{kid}");
        }
        assert!(matches!(
            Keys::new("", AUD, None, vec![]),
            Err(KeyError::MissingIssuerOrAudience)
        ));
        assert!(matches!(
            Keys::new(ISS, "", None, vec![]),
            Err(KeyError::MissingIssuerOrAudience)
        ));
    }

    #[test]
    fn openssl_keys_interoperate() {
        assert_eq!(public_pem(OPENSSL_PRIVATE).unwrap(), OPENSSL_PUBLIC);
        assert_eq!(public_pem(OPENSSL_PUBLIC).unwrap(), OPENSSL_PUBLIC);
        let kid = key_id(OPENSSL_PRIVATE).unwrap();
        assert_eq!(kid, key_id(OPENSSL_PUBLIC).unwrap());
        assert_eq!(kid.len(), 16);
        assert!(kid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        let signer = Keys::new(
            ISS,
            AUD,
            Some((kid.clone(), OPENSSL_PRIVATE.into())),
            vec![],
        )
        .unwrap();
        let verifier = Keys::new(ISS, AUD, None, vec![(kid, OPENSSL_PUBLIC.into())]).unwrap();
        let (token, claims) = signer
            .mint("ann@example.com", vec![], None, HOUR, NOW)
            .unwrap();
        assert_eq!(verifier.verify(&token, NOW), Ok(claims));
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let pem = generate_private_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let public = public_pem(&pem).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(key_id(&pem).unwrap(), key_id(&public).unwrap());
        assert_ne!(
            key_id(&pem).unwrap(),
            key_id(&generate_private_pem()).unwrap()
        );
        // Tolerates CRLF line endings and surrounding text.
        let crlf = format!("comment\r\n{}", pem.replace('\n', "\r\n"));
        assert_eq!(public_pem(&crlf).unwrap(), public);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let fx = fx();
        let debug = format!("{:?}", fx.keys);
        assert!(debug.contains(&fx.kid));
        let (_, der) = pem_decode(&fx.pem).unwrap();
        assert!(!debug.contains(&STANDARD.encode(&der)[..20]));
    }

    // ----- rotation

    #[test]
    fn rotation() {
        let old = fx();
        let (token, claims) = old.mint();
        let new_pem = generate_private_pem();
        let new_kid = key_id(&new_pem).unwrap();
        let old_public = public_pem(&old.pem).unwrap();

        let rotated = Keys::new(
            ISS,
            AUD,
            Some((new_kid.clone(), new_pem.clone())),
            vec![(old.kid.clone(), old_public)],
        )
        .unwrap();
        assert_eq!(rotated.verify(&token, NOW), Ok(claims));
        let (fresh, _) = rotated
            .mint("ann@example.com", vec![], None, HOUR, NOW)
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some(new_kid.as_str())
        );

        let retired = Keys::new(ISS, AUD, Some((new_kid, new_pem)), vec![]).unwrap();
        assert_eq!(retired.verify(&token, NOW), Err(TokenError::UnknownKey));
        assert!(retired.verify(&fresh, NOW).is_ok());
    }

    // ----- cache

    #[test]
    fn cache_counts_hits_and_misses() {
        let fx = fx();
        let (token, claims) = fx.mint();
        let cache = VerifyCache::new(100);
        assert!(cache.is_empty());
        assert_eq!(cache.verify(&fx.keys, &token, NOW), Ok(claims.clone()));
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 1, 1));
        assert_eq!(cache.verify(&fx.keys, &token, NOW + 10), Ok(claims.clone()));
        assert_eq!(cache.verify(&fx.keys, &token, NOW + 20), Ok(claims));
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (2, 1, 1));
    }

    #[test]
    fn cache_never_returns_an_expired_token() {
        let fx = fx();
        let (token, claims) = fx.mint();
        let cache = VerifyCache::new(100);
        assert!(cache.verify(&fx.keys, &token, NOW).is_ok());
        let late = claims.exp + LEEWAY_SECS;
        assert_eq!(
            cache.verify(&fx.keys, &token, late),
            Err(TokenError::Expired)
        );
        assert_eq!(cache.hits(), 1);
        // Nor one used before its time (a clock stepped back).
        assert_eq!(
            cache.verify(&fx.keys, &token, NOW - 3600),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn cache_does_not_store_failures() {
        let fx = fx();
        let cache = VerifyCache::new(100);
        let token = fx.forge_claims(&set(claims_json(), "iss", json!("evil")));
        for _ in 0..3 {
            assert_eq!(
                cache.verify(&fx.keys, &token, NOW),
                Err(TokenError::WrongIssuer)
            );
        }
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 3, 0));
    }

    #[test]
    fn cache_capacity_is_bounded() {
        let fx = fx();
        let capacity = 64;
        let cache = VerifyCache::new(capacity);
        for _ in 0..capacity + 100 {
            let (token, _) = fx.mint();
            assert!(cache.verify(&fx.keys, &token, NOW).is_ok());
            assert!(cache.len() <= capacity);
        }
        assert_eq!(cache.misses(), capacity as u64 + 100);
        assert!(cache.len() > capacity / 2);
    }

    #[test]
    fn cache_evicts_expired_entries_first() {
        let fx = fx();
        let cache = VerifyCache::new(8);
        let short = Duration::from_secs(60);
        for _ in 0..8 {
            let (token, _) = fx
                .keys
                .mint("ann@example.com", vec![], None, short, NOW)
                .unwrap();
            cache.verify(&fx.keys, &token, NOW).unwrap();
        }
        assert_eq!(cache.len(), 8);
        let later = NOW + 3600;
        let (token, _) = fx
            .keys
            .mint("bob@example.com", vec![], None, HOUR, later)
            .unwrap();
        cache.verify(&fx.keys, &token, later).unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_follows_key_rotation() {
        let fx = fx();
        let (token, _) = fx.mint();
        let cache = VerifyCache::new(100);
        cache.verify(&fx.keys, &token, NOW).unwrap();
        cache.verify(&fx.keys, &token, NOW).unwrap();
        assert_eq!(cache.hits(), 1);

        // The kid is removed: refused although cached, and the entry dropped.
        let retired = Keys::new(
            ISS,
            AUD,
            Some(("new".into(), generate_private_pem())),
            vec![],
        )
        .unwrap();
        assert_eq!(
            cache.verify(&retired, &token, NOW),
            Err(TokenError::UnknownKey)
        );
        assert_eq!((cache.hits(), cache.len()), (1, 0));

        // The kid is reused for a different key.
        cache.verify(&fx.keys, &token, NOW).unwrap();
        let reused = Keys::new(
            ISS,
            AUD,
            Some((fx.kid.clone(), generate_private_pem())),
            vec![],
        )
        .unwrap();
        assert_eq!(
            cache.verify(&reused, &token, NOW),
            Err(TokenError::BadSignature)
        );

        // Same key, different issuer.
        cache.verify(&fx.keys, &token, NOW).unwrap();
        let moved = Keys::new(
            "https://other.example.com",
            AUD,
            Some((fx.kid.clone(), fx.pem.clone())),
            vec![],
        )
        .unwrap();
        assert_eq!(
            cache.verify(&moved, &token, NOW),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(cache.hits(), 1);

        // A rebuilt but identical `Keys` (config reload) still hits.
        cache.verify(&fx.keys, &token, NOW).unwrap();
        let reloaded = Keys::new(ISS, AUD, Some((fx.kid.clone(), fx.pem.clone())), vec![]).unwrap();
        assert!(cache.verify(&reloaded, &token, NOW).is_ok());
        assert_eq!(cache.hits(), 2);
    }

    #[test]
    fn cache_is_shared_across_threads() {
        let fx = Arc::new(fx());
        let (token, _) = fx.mint();
        let cache = Arc::new(VerifyCache::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (fx, cache, token) = (Arc::clone(&fx), Arc::clone(&cache), token.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        cache.verify(&fx.keys, &token, NOW).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cache.hits() + cache.misses(), 400);
        assert_eq!(cache.len(), 1);
    }

    // ----- messages

    #[test]
    fn error_messages_are_short_fixed_lowercase_lines() {
        let all = [
            TokenError::Malformed,
            TokenError::Oversized,
            TokenError::UnsupportedAlgorithm,
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::MissingClaim,
            TokenError::NoSigningKey,
        ];
        for e in all {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && msg.len() < 60 && !msg.contains('\n'),
                "{msg}"
            );
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        }
        assert_eq!(TokenError::Expired.to_string(), "token expired");
        assert_eq!(
            TokenError::BadSignature.to_string(),
            "token signature invalid"
        );
    }
}
