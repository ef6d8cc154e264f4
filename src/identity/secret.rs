//! Secret material, one copy of each helper: random bytes and URL-safe random
//! tokens from the system generator, SHA-256 digests as arrays, and
//! constant-time comparison. Tokens, nonces, PKCE verifiers and seals all
//! draw from here, so there is one place to audit.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// `N` random bytes.
///
/// # Panics
/// If the operating system's random number generator fails: nothing secret
/// can be made safely then.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("system randomness is available");
    out
}

/// `bytes` random bytes as base64url (no padding), or `None` if the system
/// generator fails; for callers that report that as an error.
pub(crate) fn try_random_token(bytes: usize) -> Option<String> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

/// A random URL-safe string of `bytes` random bytes.
///
/// # Panics
/// If the operating system's random number generator fails.
pub fn random_token(bytes: usize) -> String {
    try_random_token(bytes).expect("system randomness is available")
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Constant-time equality: no early exit, so the time does not depend on
/// where the bytes differ (only on the lengths, which are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_url_safe_and_fresh() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, random_token(32));
        assert_ne!(random_bytes::<16>(), [0u8; 16]);
    }

    #[test]
    fn ct_eq_compares_whole_values() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"a", b"ab"));
        assert!(ct_eq(&sha256(b"x"), &sha256(b"x")));
    }
}
