//! Signing keys and tokens: the gateway's own token keys (to mint what a
//! login would), and the low-level pieces for forging JWTs no library
//! would produce.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rack_gateway::identity::credentials::AUDIENCE;
use rack_gateway::identity::token::Keys;
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

/// Seconds since the epoch, as token claims count time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh signing key PEM, trimmed: secret files lose trailing newlines
/// on load, and what is derived from the key uses the loaded text.
pub fn signing_pem() -> String {
    rack_gateway::identity::token::generate_private_pem()
        .trim_end()
        .to_string()
}

/// Token keys like the gateway's, with any issuer, audience, kid, key.
pub fn token_keys(issuer: &str, audience: &str, kid: &str, pem: &str) -> Keys {
    Keys::new(issuer, audience, Some((kid.into(), pem.into())), vec![]).unwrap()
}

/// A token the gateway at `issuer` (signing with `kid`/`pem`) would mint
/// for `sub` at time `at`.
pub fn gateway_token(
    issuer: &str,
    kid: &str,
    pem: &str,
    sub: &str,
    at: i64,
    ttl: Duration,
) -> String {
    token_keys(issuer, AUDIENCE, kid, pem)
        .mint(sub, vec![], None, ttl, at)
        .unwrap()
        .0
}

/// The JSON of one JWT segment (0 header, 1 claims).
pub fn jwt_part(token: &str, i: usize) -> Value {
    let seg = token.split('.').nth(i).expect("JWT segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
}

/// The DER inside a PEM block.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// A compact JWS over exactly the header and claims given, so tests can
/// forge what no JWT library would produce.
pub fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(sig))
}

pub fn ed25519_signer(pem: &str) -> impl Fn(&[u8]) -> Vec<u8> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(pem)).unwrap();
    move |m| pair.sign(m).as_ref().to_vec()
}

pub fn hs256_signer(secret: Vec<u8>) -> impl Fn(&[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    move |m| ring::hmac::sign(&key, m).as_ref().to_vec()
}
