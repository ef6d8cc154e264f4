//! The demo's built-in test identity provider: just enough OpenID Connect
//! for `rack-gateway login` to work against `rack-gateway demo` with
//! nothing else installed.
//!
//! It is a demo and says so on every page and in the log: anyone who can
//! reach it picks who they are from a list. It listens on 127.0.0.1 only,
//! is started by `demo` alone, and nothing in `serve` or the config can
//! start it (it lives in `dev/`, which `serve` never uses).
//!
//! What it implements is what the gateway's relying party needs, no more:
//! discovery, a JWKS with one Ed25519 key generated at start, an authorize
//! page ("log in as ..."), and a token endpoint that requires PKCE S256 and
//! a one-time code, issuing an EdDSA-signed ID token with `amr` and
//! `auth_time`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::net::TcpListener;

use crate::clock::unix_now;
use crate::http::body::{self, Body};
use crate::identity::login::query_pairs;
use crate::identity::seal::random_token;

/// The gateway's client id at the demo provider (a public client: PKCE
/// instead of a secret).
pub(crate) const CLIENT_ID: &str = "rack-gateway-demo";
/// The people the login page offers: the example users.yaml's.
pub(crate) const PEOPLE: &[&str] = &["alice@example.com", "bob@example.com", "carol@example.com"];
/// How long a shown login page and an issued code stay usable.
const REQUEST_TTL: i64 = 10 * 60;
const CODE_TTL: i64 = 2 * 60;
const ID_TOKEN_TTL: i64 = 5 * 60;
/// Pending requests and codes kept at most (a demo, but still bounded).
const MAX_PENDING: usize = 1000;
const MAX_BODY: usize = 16 * 1024;
const BANNER: &str = "rack-gateway demo identity provider: for trying the demo only, \
                      anyone can log in as anyone here";

/// An authorization request waiting for the person to pick an identity.
struct Pending {
    redirect_uri: String,
    state: String,
    nonce: Option<String>,
    challenge: String,
    at: i64,
}

/// An issued one-time code.
struct Grant {
    email: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    at: i64,
}

struct State {
    issuer: String,
    /// The one redirect URI accepted: the demo gateway's callback.
    redirect_uri: String,
    key: Ed25519KeyPair,
    kid: String,
    pending: Mutex<HashMap<String, Pending>>,
    codes: Mutex<HashMap<String, Grant>>,
}

/// A running demo provider; stops when dropped.
pub(crate) struct DemoIdp {
    pub(crate) issuer: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoIdp {
    /// Listens on 127.0.0.1 (an ephemeral port) for the gateway whose
    /// login callback is `redirect_uri`.
    pub(crate) async fn start(redirect_uri: String) -> std::io::Result<DemoIdp> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| std::io::Error::other("cannot generate the demo signing key"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| std::io::Error::other("cannot load the demo signing key"))?;
        let state = Arc::new(State {
            issuer: issuer.clone(),
            redirect_uri,
            key,
            kid: format!("demo-{}", &random_token(6)),
            pending: Mutex::default(),
            codes: Mutex::default(),
        });
        tracing::warn!(%issuer, "{BANNER}");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoIdp { issuer, task })
    }
}

async fn answer(st: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let query = query_pairs(parts.uri.query().unwrap_or(""));
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/.well-known/openid-configuration") => json(StatusCode::OK, discovery(st)),
        (&Method::GET, "/jwks") => json(StatusCode::OK, jwks(st)),
        (&Method::GET, "/authorize") => authorize(st, &query),
        (&Method::POST, "/approve") => match form(incoming).await {
            Some(f) => approve(st, &f),
            None => page(StatusCode::BAD_REQUEST, "<p>Unreadable form.</p>"),
        },
        (&Method::POST, "/token") => match form(incoming).await {
            Some(f) => token(st, &f),
            None => token_error("invalid_request", "unreadable form body"),
        },
        _ => page(StatusCode::NOT_FOUND, "<p>Nothing here.</p>"),
    }
}

async fn form(body: Incoming) -> Option<Vec<(String, String)>> {
    let bytes: Bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(query_pairs(std::str::from_utf8(&bytes).ok()?))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn discovery(st: &State) -> serde_json::Value {
    let i = &st.issuer;
    serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "email", "email_verified", "amr", "auth_time"],
    })
}

fn jwks(st: &State) -> serde_json::Value {
    serde_json::json!({"keys": [{
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(st.key.public_key().as_ref()),
        "kid": st.kid,
        "use": "sig",
        "alg": "EdDSA",
    }]})
}

/// Drops expired entries, then refuses to grow past [`MAX_PENDING`].
fn insert<T>(
    map: &Mutex<HashMap<String, T>>,
    key: String,
    v: T,
    at: impl Fn(&T) -> i64,
    ttl: i64,
) -> bool {
    let Ok(mut m) = map.lock() else {
        return false;
    };
    let now = unix_now();
    m.retain(|_, e| now - at(e) < ttl);
    if m.len() >= MAX_PENDING {
        return false;
    }
    m.insert(key, v);
    true
}

/// `GET /authorize`: checks the request (code flow, our client, the demo
/// gateway's callback, PKCE S256) and shows the "log in as" page.
fn authorize(st: &State, q: &[(String, String)]) -> Response<Body> {
    let bad = |what: &str| {
        page(
            StatusCode::BAD_REQUEST,
            &format!("<p>Invalid login request: {}.</p>", escape(what)),
        )
    };
    if param(q, "response_type") != Some("code") {
        return bad("response_type must be code");
    }
    if param(q, "client_id") != Some(CLIENT_ID) {
        return bad("unknown client_id");
    }
    if param(q, "redirect_uri") != Some(st.redirect_uri.as_str()) {
        return bad("redirect_uri is not the demo gateway's callback");
    }
    if !param(q, "scope").is_some_and(|s| s.split(' ').any(|s| s == "openid")) {
        return bad("scope must include openid");
    }
    let (Some(challenge), Some("S256")) = (
        param(q, "code_challenge"),
        param(q, "code_challenge_method"),
    ) else {
        return bad("PKCE is required (code_challenge with code_challenge_method S256)");
    };
    let Some(state) = param(q, "state") else {
        return bad("state is missing");
    };
    let id = random_token(24);
    let pending = Pending {
        redirect_uri: st.redirect_uri.clone(),
        state: state.to_string(),
        nonce: param(q, "nonce").map(str::to_string),
        challenge: challenge.to_string(),
        at: unix_now(),
    };
    if !insert(&st.pending, id.clone(), pending, |p| p.at, REQUEST_TTL) {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p>Too many logins in progress; try again later.</p>",
        );
    }
    let buttons: String = PEOPLE
        .iter()
        .map(|p| format!("<p><button name=\"user\" value=\"{p}\">Log in as {p}</button></p>"))
        .collect();
    page(
        StatusCode::OK,
        &format!(
            "<p>Pick who you are. The demo's users.yaml gives each a different role.</p>\
             <form method=\"post\" action=\"/approve\">\
             <input type=\"hidden\" name=\"request\" value=\"{id}\">{buttons}</form>"
        ),
    )
}

/// `POST /approve`: the person picked an identity; send the browser back
/// to the gateway with a one-time code.
fn approve(st: &State, f: &[(String, String)]) -> Response<Body> {
    let Some(email) = param(f, "user").filter(|u| PEOPLE.contains(u)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "<p>Pick one of the listed people.</p>",
        );
    };
    let taken = param(f, "request").and_then(|id| st.pending.lock().ok()?.remove(id));
    let Some(p) = taken.filter(|p| unix_now() - p.at < REQUEST_TTL) else {
        return page(
            StatusCode::BAD_REQUEST,
            "<p>This login request is unknown or expired: run <code>rack-gateway login</code> again.</p>",
        );
    };
    let code = random_token(32);
    let to = format!(
        "{}?code={code}&state={}",
        p.redirect_uri,
        percent_encoding::utf8_percent_encode(&p.state, percent_encoding::NON_ALPHANUMERIC)
    );
    let grant = Grant {
        email: email.to_string(),
        redirect_uri: p.redirect_uri,
        nonce: p.nonce,
        challenge: p.challenge,
        at: unix_now(),
    };
    if !insert(&st.codes, code, grant, |g| g.at, CODE_TTL) {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p>Too many logins in progress; try again later.</p>",
        );
    }
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(&to) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    r
}

/// `POST /token`: the code (once, unexpired, for our client and redirect
/// URI) and a PKCE verifier whose SHA-256 is the challenge.
fn token(st: &State, f: &[(String, String)]) -> Response<Body> {
    if param(f, "grant_type") != Some("authorization_code") {
        return token_error("unsupported_grant_type", "only authorization_code");
    }
    if param(f, "client_id") != Some(CLIENT_ID) {
        return token_error("invalid_client", "unknown client_id");
    }
    let taken = param(f, "code").and_then(|c| st.codes.lock().ok()?.remove(c));
    let Some(g) = taken.filter(|g| unix_now() - g.at < CODE_TTL) else {
        return token_error("invalid_grant", "unknown, used or expired code");
    };
    if param(f, "redirect_uri") != Some(g.redirect_uri.as_str()) {
        return token_error(
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        );
    }
    let Some(verifier) = param(f, "code_verifier") else {
        return token_error("invalid_grant", "PKCE code_verifier is required");
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    if URL_SAFE_NO_PAD.encode(digest.as_ref()) != g.challenge {
        return token_error("invalid_grant", "PKCE verification failed");
    }
    let now = unix_now();
    let mut claims = serde_json::json!({
        "iss": st.issuer,
        "sub": g.email,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + ID_TOKEN_TTL,
        "auth_time": g.at,
        "amr": ["pwd"],
        "email": g.email,
        "email_verified": true,
    });
    if let Some(n) = g.nonce {
        claims["nonce"] = n.into();
    }
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": st.kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = URL_SAFE_NO_PAD.encode(st.key.sign(input.as_bytes()).as_ref());
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": random_token(32),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_TTL,
            "id_token": format!("{input}.{sig}"),
        }),
    )
}

fn token_error(error: &str, description: &str) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"error": error, "error_description": description}),
    )
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every page carries the demo banner.
fn page(status: StatusCode, body_html: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <title>Demo identity provider (rack-gateway demo)</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}\
         .demo{{background:#fff3cd;border:1px solid #e0c060;padding:.75em}}</style></head>\
         <body><h1>Demo identity provider</h1><p class=\"demo\"><b>DEMO ONLY.</b> {BANNER}.</p>\
         {body_html}</body></html>\n"
    );
    let mut r = Response::new(body::full(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    const CALLBACK: &str = "http://127.0.0.1:1/_gateway/login/callback";

    async fn call(method: Method, url: &str, form: &str) -> (StatusCode, String, String) {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_string())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// A code for alice, issued for the PKCE challenge of `verifier`.
    async fn code_for(idp: &DemoIdp, verifier: &str) -> String {
        let challenge = URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let url = format!(
            "{}/authorize?response_type=code&client_id={CLIENT_ID}&scope=openid%20email&state=s1\
             &nonce=n1&code_challenge={challenge}&code_challenge_method=S256&redirect_uri={}",
            idp.issuer,
            percent_encoding::utf8_percent_encode(CALLBACK, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, _, page) = call(Method::GET, &url, "").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("DEMO ONLY"), "{page}");
        let request = page
            .split_once("name=\"request\" value=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .unwrap()
            .0
            .to_string();
        let (status, location, _) = call(
            Method::POST,
            &format!("{}/approve", idp.issuer),
            &format!("request={request}&user=alice%40example.com"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            location.starts_with(&format!("{CALLBACK}?code=")),
            "{location}"
        );
        assert!(location.ends_with("&state=s1"), "{location}");
        query_pairs(location.split_once('?').unwrap().1)[0]
            .1
            .clone()
    }

    async fn redeem(idp: &DemoIdp, code: &str, verifier: &str) -> (StatusCode, String) {
        let form = format!(
            "grant_type=authorization_code&client_id={CLIENT_ID}&code={code}&code_verifier={verifier}&redirect_uri={}",
            percent_encoding::utf8_percent_encode(CALLBACK, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, _, body) = call(Method::POST, &format!("{}/token", idp.issuer), &form).await;
        (status, body)
    }

    #[tokio::test]
    async fn pkce_is_verified_and_a_code_works_once() {
        let idp = DemoIdp::start(CALLBACK.into()).await.unwrap();
        let verifier = random_token(32);

        // Refused: the wrong verifier (the code is spent by the attempt).
        let code = code_for(&idp, &verifier).await;
        let (status, body) = redeem(&idp, &code, &random_token(32)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("PKCE verification failed"), "{body}");

        // Allowed: the right verifier, once.
        let code = code_for(&idp, &verifier).await;
        let (status, body) = redeem(&idp, &code, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let claims = v["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
        assert_eq!(claims["nonce"], "n1");
        assert!(claims["auth_time"].is_i64());
        let (status, body) = redeem(&idp, &code, &verifier).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("unknown, used or expired code"), "{body}");
    }

    /// Refused: an authorization request without PKCE. (Allowed control:
    /// the test above.)
    #[tokio::test]
    async fn authorize_requires_pkce() {
        let idp = DemoIdp::start(CALLBACK.into()).await.unwrap();
        let url = format!(
            "{}/authorize?response_type=code&client_id={CLIENT_ID}&scope=openid&state=s1&redirect_uri={}",
            idp.issuer,
            percent_encoding::utf8_percent_encode(CALLBACK, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, _, page) = call(Method::GET, &url, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("PKCE is required"), "{page}");
    }
}
