//! A CI system's OpenID issuer (like GitHub Actions') on loopback:
//! discovery and a JWKS with an Ed25519 and an ES256 key; tests sign the
//! job tokens they present with its keys.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::{b64, now};

/// A signing key of the in-test CI issuer, with its public JWK.
pub struct CiKey {
    pub kid: String,
    pub alg: Algorithm,
    pub pkcs8: Vec<u8>,
    pub jwk: Value,
}

impl CiKey {
    pub fn ed25519(kid: &str) -> CiKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        CiKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": b64(pair.public_key()),
            }),
        }
    }

    pub fn es256(kid: &str) -> CiKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        CiKey {
            kid: kid.into(),
            alg: Algorithm::ES256,
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]),
                "y": b64(&point[33..65]),
            }),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let key = match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.pkcs8),
            _ => EncodingKey::from_ec_der(&self.pkcs8),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// A CI system's OpenID issuer (like GitHub Actions'): discovery and a
/// JWKS with an Ed25519 and an ES256 key, served on loopback.
pub struct CiIssuer {
    /// The issuer exactly as its discovery document and tokens spell it.
    pub url: String,
    pub ed: CiKey,
    pub es: CiKey,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CiIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CiIssuer {
    pub async fn start() -> CiIssuer {
        Self::start_spelled("").await
    }

    /// An issuer whose canonical spelling ends in `suffix` (Auth0 and Entra
    /// ID v1 issuers end in `/`).
    pub async fn start_spelled(suffix: &str) -> CiIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let url = format!("{base}{suffix}");
        let (ed, es) = (CiKey::ed25519("ci-ed"), CiKey::es256("ci-es"));
        let discovery = Bytes::from(
            json!({
                "issuer": url,
                "jwks_uri": format!("{base}/jwks"),
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
            })
            .to_string(),
        );
        let jwks = Bytes::from(json!({"keys": [ed.jwk, es.jwk]}).to_string());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (discovery, jwks) = (discovery.clone(), jwks.clone());
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = match req.uri().path() {
                        "/.well-known/openid-configuration" => (200, discovery.clone()),
                        "/jwks" => (200, jwks.clone()),
                        _ => (404, Bytes::from_static(b"{}")),
                    };
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        CiIssuer { url, ed, es, task }
    }

    /// Claims of a CI job of `repository` at `git_ref` for the gateway's
    /// default audience (`rack-gateway`), valid for ten minutes.
    pub fn claims(&self, repository: &str, git_ref: &str) -> Value {
        let t = now();
        json!({
            "iss": self.url,
            "aud": "rack-gateway",
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository,
            "ref": git_ref,
            "iat": t,
            "nbf": t,
            "exp": t + 600,
            "jti": rack_gateway::identity::seal::random_token(12),
        })
    }
}
