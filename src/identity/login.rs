//! The browser login, stateless and bound to the CLI that started it.
//!
//! 1. The CLI keeps a random verifier and opens
//!    `/_gateway/login/start?cli=<base64url(SHA-256(verifier))>&redirect=http://127.0.0.1:<port>/callback/<random>`
//!    (no `redirect` for `--no-browser`).
//! 2. The gateway seals the PKCE verifier, nonce, the CLI's hash and the
//!    redirect into the OAuth `state` (see [`crate::identity::seal`]) and sends the
//!    browser to the identity provider.
//! 3. On the callback it exchanges the code, verifies the ID token, checks
//!    the email against users.yaml, and hands the browser a short-lived
//!    sealed one-time code: redirected to the CLI's loopback listener, or
//!    shown on a page to paste.
//! 4. The CLI posts the code **and its verifier** to `/_gateway/login/token`
//!    and gets the gateway token. A leaked login link or code is worthless
//!    without the verifier, which never leaves the CLI.
//!
//! No session store exists: the only server-side memory is a small set of
//! one-time codes already redeemed (until they expire), so a code works once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{header, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::IdentityConfig;
use crate::http::body::{self, Body};
use crate::identity::oidc::{IdClaims, Provider};
use crate::identity::seal::{self, Purpose, Sealer};
use crate::identity::secret;
use crate::policy::Policy;

/// How long a started login may take at the identity provider.
pub(crate) const STATE_TTL: i64 = 10 * 60;
/// How long the one-time code is valid.
pub(crate) const CODE_TTL: i64 = 2 * 60;

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginState {
    pub pkce: String,
    pub nonce: String,
    pub cli: String,
    pub redirect: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoginCode {
    pub email: String,
    pub cli: String,
    pub jti: String,
    #[serde(default)]
    pub amr: Vec<String>,
    pub auth_time: Option<i64>,
}

/// Why a login step failed; the message is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("login is not configured on this gateway (identity.oidc in gateway.yaml)")]
    NotConfigured,
    #[error("{0}")]
    BadRequest(String),
    /// The provider could not be reached or used. Its detail (URLs, TLS
    /// and file errors) is for the operator: the log and the audit record
    /// keep it, the page anyone can load shows a fixed message.
    #[error("the identity provider is unavailable: try again shortly, and if it persists tell the gateway's operator (the gateway's log says why)")]
    Provider(String),
    #[error("not authorized for this gateway: {0}")]
    NotAuthorized(String),
    /// The provider sent the browser back with an error. Its text is the
    /// provider's (or whoever crafted the link's) and goes to the audit
    /// record only; the page shows a fixed message.
    #[error("the identity provider refused the login: run `rack-gateway login` again")]
    Refused(String),
}

impl LoginError {
    /// What the audit record keeps: the message, or for a refusal or an
    /// unavailable provider the detail the page leaves out.
    pub(crate) fn audit_detail(&self) -> String {
        match self {
            LoginError::Refused(detail) => format!("the identity provider said: {detail}"),
            LoginError::Provider(detail) => {
                format!("the identity provider is unavailable: {detail}")
            }
            other => other.to_string(),
        }
    }
}

/// One-time codes already redeemed, kept until they expire.
#[derive(Default)]
pub(crate) struct Redeemed(Mutex<HashMap<String, i64>>);

impl Redeemed {
    /// Marks `jti` used; false if it was used before.
    pub(crate) fn first_use(&self, jti: &str, exp: i64, now: i64) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        m.retain(|_, e| *e >= now);
        if m.contains_key(jti) {
            return false;
        }
        m.insert(jti.to_string(), exp);
        true
    }
}

/// Validates the CLI's loopback redirect: plain http to 127.0.0.1, [::1]
/// or localhost with an explicit port, so a login can only ever hand its
/// code to a listener on the same machine as the browser.
pub(crate) fn valid_redirect(url: &str) -> bool {
    let Ok(u) = url.parse::<http::Uri>() else {
        return false;
    };
    u.scheme_str() == Some("http")
        && u.port_u16().is_some()
        && matches!(u.host(), Some("127.0.0.1" | "[::1]" | "::1" | "localhost"))
        && !u.authority().is_some_and(|a| a.as_str().contains('@'))
        && u.query().is_none()
}

/// Step 1→2: returns the identity provider URL to send the browser to.
pub(crate) fn start(
    provider: &Provider,
    sealer: &Sealer,
    cli: &str,
    redirect: Option<&str>,
    now: i64,
) -> Result<String, LoginError> {
    let cli_ok = cli.len() == 43
        && cli
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !cli_ok {
        return Err(LoginError::BadRequest(
            "start the login with `rack-gateway login` (missing or malformed cli parameter)".into(),
        ));
    }
    if let Some(r) = redirect {
        if !valid_redirect(r) {
            return Err(LoginError::BadRequest(
                "redirect must be http://127.0.0.1:<port>/... (the CLI's own listener)".into(),
            ));
        }
    }
    let st = LoginState {
        pkce: seal::random_token(32),
        nonce: seal::random_token(24),
        cli: cli.to_string(),
        redirect: redirect.map(str::to_string),
    };
    let state = sealer.seal(Purpose::LoginState, &st, now + STATE_TTL);
    provider
        .authorize_url(&st.pkce, &st.nonce, &state, &[])
        .map_err(|e| LoginError::Provider(e.to_string()))
}

/// Checks the provider's claims against the gateway's rules and the live
/// users.yaml; returns the lower-cased email.
pub(crate) fn admit(
    cfg: &IdentityConfig,
    policy: &Policy,
    claims: &IdClaims,
) -> Result<String, LoginError> {
    let oidc = cfg.oidc.as_ref().ok_or(LoginError::NotConfigured)?;
    let email = claims
        .email
        .as_deref()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| LoginError::NotAuthorized("the identity provider sent no email".into()))?;
    if !claims.email_verified {
        return Err(LoginError::NotAuthorized(format!(
            "{email} is not verified by the identity provider"
        )));
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !oidc.allowed_domains.is_empty() && !oidc.allowed_domains.iter().any(|d| d == domain) {
        return Err(LoginError::NotAuthorized(format!(
            "{email} is not in an allowed domain"
        )));
    }
    if let Some(hd) = &oidc.hosted_domain {
        if claims.hosted_domain.as_deref() != Some(hd.as_str()) {
            return Err(LoginError::NotAuthorized(format!(
                "{email} is not an account of {hd}"
            )));
        }
    }
    if policy.person(&email).is_none() {
        return Err(LoginError::NotAuthorized(format!(
            "{email} is not listed in users.yaml"
        )));
    }
    Ok(email)
}

/// Step 3: the sealed one-time code for an admitted login.
pub(crate) fn code_for(
    sealer: &Sealer,
    st: &LoginState,
    email: &str,
    claims: &IdClaims,
    now: i64,
) -> String {
    let code = LoginCode {
        email: email.to_string(),
        cli: st.cli.clone(),
        jti: seal::random_token(16),
        amr: claims.amr.clone(),
        auth_time: claims.auth_time,
    };
    sealer.seal(Purpose::LoginCode, &code, now + CODE_TTL)
}

/// Step 4: checks the code and the verifier; returns the code's contents.
pub(crate) fn redeem(
    sealer: &Sealer,
    redeemed: &Redeemed,
    code: &str,
    verifier: &str,
    now: i64,
) -> Result<LoginCode, LoginError> {
    let bad = || {
        LoginError::BadRequest(
            "invalid or expired login code: run `rack-gateway login` again".into(),
        )
    };
    let c: LoginCode = sealer
        .open(Purpose::LoginCode, code, now)
        .map_err(|_| bad())?;
    if verifier.len() < 32
        || verifier.len() > 256
        || !secret::ct_eq(seal::verifier_hash(verifier).as_bytes(), c.cli.as_bytes())
    {
        return Err(bad());
    }
    if !redeemed.first_use(&c.jti, now + CODE_TTL, now) {
        return Err(bad());
    }
    Ok(c)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small self-contained HTML page (no scripts, no external resources).
pub(crate) fn page(status: StatusCode, title: &str, body_html: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}}\
         code{{word-break:break-all;background:#f3f3f3;padding:.5em;display:block}}</style></head>\
         <body><h1>{t}</h1>{body_html}</body></html>\n",
        t = escape(title)
    );
    let mut r = Response::new(body::full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

/// The page an error ends on.
pub(crate) fn error_page(e: &LoginError) -> Response<Body> {
    let status = match e {
        LoginError::NotConfigured => StatusCode::NOT_FOUND,
        LoginError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LoginError::Provider(_) => StatusCode::BAD_GATEWAY,
        LoginError::NotAuthorized(_) | LoginError::Refused(_) => StatusCode::FORBIDDEN,
    };
    let title = match e {
        LoginError::NotAuthorized(_) => "Not authorized for this gateway",
        _ => "Login failed",
    };
    page(status, title, &format!("<p>{}</p>", escape(&e.to_string())))
}

/// The page that shows the one-time code for `--no-browser` logins.
pub(crate) fn code_page(email: &str, code: &str) -> Response<Body> {
    page(
        StatusCode::OK,
        "Almost done",
        &format!(
            "<p>Logged in as <b>{}</b>. Paste this one-time code into the terminal where you \
             ran <tt>rack-gateway login</tt>. It works once, for two minutes, and only there: \
             never share it.</p><code>{}</code>",
            escape(email),
            escape(code)
        ),
    )
}

/// Parses a query string into pairs (percent-decoded, `+` as space).
pub(crate) fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

/// The value of a query parameter that must appear at most once.
pub(crate) fn single<'a>(
    pairs: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, LoginError> {
    let mut it = pairs.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(LoginError::BadRequest(format!(
            "duplicate `{name}` parameter"
        )));
    }
    Ok(first)
}

/// Shared login state for a gateway process.
#[derive(Default)]
pub struct LoginStore {
    pub(crate) redeemed: Redeemed,
    pub(crate) provider: tokio::sync::Mutex<Option<(String, Arc<Provider>)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_must_be_loopback() {
        assert!(valid_redirect("http://127.0.0.1:4567/callback"));
        assert!(valid_redirect("http://localhost:4567/cb"));
        assert!(valid_redirect("http://[::1]:4567/cb"));
        assert!(!valid_redirect("http://127.0.0.1/callback"));
        assert!(!valid_redirect("https://127.0.0.1:4567/callback"));
        assert!(!valid_redirect("http://evil.example.com:4567/callback"));
        assert!(!valid_redirect("http://127.0.0.1.evil.com:80/x"));
        assert!(!valid_redirect("http://user@127.0.0.1:4567/x"));
        assert!(!valid_redirect("http://127.0.0.1:4567/x?a=b"));
        assert!(!valid_redirect("javascript:alert(1)"));
    }

    #[test]
    fn codes_need_the_verifier_and_work_once() {
        let sealer = Sealer::new(b"k");
        let verifier = seal::random_token(32);
        let st = LoginState {
            pkce: "p".into(),
            nonce: "n".into(),
            cli: seal::verifier_hash(&verifier),
            redirect: None,
        };
        let claims = IdClaims {
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            email_verified: true,
            hosted_domain: None,
            amr: vec!["pwd".into(), "mfa".into()],
            auth_time: Some(990),
            groups: vec![],
            issued_at: 1000,
        };
        let code = code_for(&sealer, &st, "alice@example.com", &claims, 1000);
        let redeemed = Redeemed::default();
        let other = seal::random_token(32);
        assert!(redeem(&sealer, &redeemed, &code, &other, 1001).is_err());
        assert!(redeem(&sealer, &redeemed, &code, "short", 1001).is_err());
        assert_eq!(
            redeem(&sealer, &redeemed, &code, &verifier, 1001)
                .unwrap()
                .email,
            "alice@example.com"
        );
        assert!(
            redeem(&sealer, &redeemed, &code, &verifier, 1002).is_err(),
            "one use only"
        );
        let code = code_for(&sealer, &st, "alice@example.com", &claims, 1000);
        assert!(redeem(&sealer, &redeemed, &code, &verifier, 1000 + CODE_TTL + 1).is_err());
        // A login state can't be replayed as a code.
        let state = sealer.seal(Purpose::LoginState, &st, 2000);
        assert!(redeem(&sealer, &redeemed, &state, &verifier, 1001).is_err());
    }

    #[test]
    fn query_parsing() {
        let p = query_pairs("a=1&b=x%20y+z&c");
        assert_eq!(single(&p, "b").unwrap(), Some("x y z"));
        assert_eq!(single(&p, "c").unwrap(), Some(""));
        assert!(single(&query_pairs("a=1&a=2"), "a").is_err());
    }
}
