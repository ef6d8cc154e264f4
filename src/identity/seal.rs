//! Sealed, expiring values: how the login flow stays stateless.
//!
//! The login state (PKCE verifier, nonce, the CLI's verifier hash, where to
//! send the browser back) travels through the identity provider as the OAuth
//! `state` parameter, and the one-time code travels through the browser to
//! the CLI. Both are sealed with ChaCha20-Poly1305: authenticated (nobody can
//! forge or alter them) and encrypted (the PKCE verifier isn't readable by
//! whoever sees the URL). Each seal names its purpose as associated data, so
//! a login state can never be replayed as a one-time code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::secret;
/// Re-exported where the login flow (and its callers) always found it.
pub use crate::identity::secret::random_token;

/// What a sealed value is for; bound into the seal as associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    LoginState,
    LoginCode,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::LoginState => b"rack-gateway login-state v1",
            Purpose::LoginCode => b"rack-gateway login-code v1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("invalid or tampered value")]
    Invalid,
    #[error("expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

/// Seals and opens values with a key derived from the gateway's signing
/// key, so every replica holding that key can open what another sealed.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// Derives the sealing key with HKDF-SHA256 from secret key material.
    pub fn new(secret: &[u8]) -> Sealer {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"rack-gateway seal v1");
        let prk = salt.extract(secret);
        let okm = prk
            .expand(&[b"chacha20-poly1305"], &CHACHA20_POLY1305)
            .expect("HKDF output length matches the AEAD key");
        let unbound = UnboundKey::from(okm);
        Sealer {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Seals `value` until `exp` (unix seconds) as URL-safe text.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T, exp: i64) -> String {
        let mut data = serde_json::to_vec(&Envelope { exp, v: value }).expect("serializable");
        let nonce: [u8; NONCE_LEN] = secret::random_bytes();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(purpose.aad()),
                &mut data,
            )
            .expect("sealing cannot fail for small values");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed value of `purpose` that has not expired at `now`.
    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        sealed: &str,
        now: i64,
    ) -> Result<T, SealError> {
        if sealed.len() > 8192 {
            return Err(SealError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .map_err(|_| SealError::Invalid)?;
        if raw.len() < NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Invalid);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Invalid)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(purpose.aad()), &mut buf)
            .map_err(|_| SealError::Invalid)?;
        let env: Envelope<T> = serde_json::from_slice(plain).map_err(|_| SealError::Invalid)?;
        if env.exp < now {
            return Err(SealError::Expired);
        }
        Ok(env.v)
    }
}

/// `base64url(SHA-256(verifier))`: what the CLI sends instead of its secret.
pub(crate) fn verifier_hash(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(secret::sha256(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = Sealer::new(b"key material");
        let sealed = s.seal(Purpose::LoginState, &"hello".to_string(), 100);
        assert!(sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            s.open::<String>(Purpose::LoginState, &sealed, 50).unwrap(),
            "hello"
        );
        assert_eq!(
            s.open::<String>(Purpose::LoginState, &sealed, 101),
            Err(SealError::Expired)
        );
        assert_eq!(
            s.open::<String>(Purpose::LoginCode, &sealed, 50),
            Err(SealError::Invalid)
        );
        let other = Sealer::new(b"other key");
        assert_eq!(
            other.open::<String>(Purpose::LoginState, &sealed, 50),
            Err(SealError::Invalid)
        );
        let mut tampered = sealed.clone().into_bytes();
        let i = tampered.len() / 2;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            s.open::<String>(Purpose::LoginState, &tampered, 50),
            Err(SealError::Invalid)
        );
        assert_eq!(
            s.open::<String>(Purpose::LoginState, "!!", 50),
            Err(SealError::Invalid)
        );
    }

    #[test]
    fn verifier_hash_is_base64url_sha256() {
        let h = super::verifier_hash("abc");
        assert_eq!(h, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert_ne!(h, super::verifier_hash("abd"));
    }
}
