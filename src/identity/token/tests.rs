//! Gateway token tests: key loading, minting, strict verification against
//! forged and tampered tokens, and the verify cache.

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
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap();
    assert_eq!(fx.verify(&token), Err(TokenError::UnsupportedAlgorithm));
}

#[test]
fn every_other_alg_spelling_is_refused() {
    let fx = fx();
    let algs = [
        "HS384", "HS512", "RS384", "RS512", "PS256", "PS384", "PS512", "ES384", "ES512", "eddsa",
        "EDDSA", "Ed25519", "Ed448", "EdDSA ", "None", "",
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
    let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
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
    let err = Keys::new(ISS, AUD, None, vec![("old-2024".into(), RSA_PUBLIC.into())]).unwrap_err();
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
    assert_eq!(cache.len(), 0);
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
