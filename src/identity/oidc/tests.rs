//! The identity-provider tests, against an in-process OpenID provider on
//! loopback: federation, login discovery and code exchange, the HTTP
//! client's limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openidconnect::core::CoreJwsSigningAlgorithm;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::http::{is_loopback, MAX_RESPONSE};
use super::{FederationVerifier, IdpHttp, OidcError, Provider, ProviderConfig};
use crate::clock::unix_now;
use crate::identity::jwt::unverified_issuer;

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
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
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
        let hs = jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&secret)).unwrap();
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
    let generated = crate::identity::seal::random_token(32);
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
