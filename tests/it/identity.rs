//! Identity end to end: the browser login against a real OpenID provider
//! (the PyPI package `oidc-provider-mock`, driven without a browser), the
//! gateway tokens it yields, forged and stale credentials, keyless CI
//! federation against an in-test issuer, and config reloads that demote or
//! remove people without a new login.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rack_gateway::config::{self};
use rack_gateway::dev::mock_rack::MockRack;
use rack_gateway::identity::login::{LoginCode, LoginState};
use rack_gateway::identity::seal::{Purpose, Sealer};
use rack_gateway::identity::token::Keys;
use rack_gateway::server::listener::Running;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::support::*;

/// Kid of the gateway's signing key, and of a retired key still accepted.
const KID: &str = "k1";
const RETIRED_KID: &str = "k0-retired";
const AUDIENCE: &str = "rack-gateway";
const CLIENT_ID: &str = "rack-gateway-test";
const CLIENT_SECRET: &str = "oidc-client-secret-5ab1e";
/// A static CI token whose identity expired in 2020.
const CI_EXPIRED: &str = "ci-expired-token-CCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";
/// Where the CLI's loopback listener would be; the test plays the browser
/// and never follows this redirect.
const CLI_REDIRECT: &str = "http://127.0.0.1:43111/callback";
const APPS: &str = "/racks/staging/apps?";
/// The active release: the rack refuses to promote an older one.
const PROMOTE: &str = "/racks/staging/apps/myapp/releases/RMYAPPRELAB/promote?";

/// The provider's predefined users (each one a button on its login page).
/// bob is listed in users.yaml but unverified; carol is verified but not
/// listed; dave is admitted by the corp.example domain rule. sam, tess
/// and uri hold a step-up deployer grant on production (see
/// [`STEP_UP_USERS`]): sam's login used a one-time code (`amr`), tess's
/// only a password, uri's used a key but long ago (`auth_time`, which the
/// provider sets to the login time unless a user's claims say otherwise).
const PROVIDER_USERS: [&str; 7] = [
    r#"{"sub":"alice","email":"alice@example.com","email_verified":true}"#,
    r#"{"sub":"bob","email":"bob@example.com","email_verified":false}"#,
    r#"{"sub":"carol","email":"carol@example.com","email_verified":true}"#,
    r#"{"sub":"dave","email":"dave@corp.example","email_verified":true}"#,
    r#"{"sub":"sam","email":"sam@example.com","email_verified":true,"amr":["pwd","otp"]}"#,
    r#"{"sub":"tess","email":"tess@example.com","email_verified":true}"#,
    r#"{"sub":"uri","email":"uri@example.com","email_verified":true,"amr":["hwk"],"auth_time":1700000000}"#,
];

/// People whose production deploys need a recent MFA login; viewing needs
/// none (the control).
const STEP_UP_USERS: [&str; 3] = ["sam@example.com", "tess@example.com", "uri@example.com"];
const STEP_UP_GRANTS: &str = "    grants:
      - {role: viewer, scope: production/*}
      - role: deployer
        scope: production/*
        require: {mfa: true, max_auth_age: 12h}
";

/// A workflow that may always build on production but promote only from a
/// job in GitHub's protected `production` environment (deploy approvals).
const APPROVALS_CI: &str = "    grants:
      - {role: builder, scope: production/*}
      - role: deployer
        scope: production/*
        require:
          claims: {environment: production}
";

/// The people users.yaml lists at start: (email, role on staging/*,
/// tokens_valid_after).
const PEOPLE: &[(&str, &str, Option<&str>)] = &[
    ("alice@example.com", "deployer", None),
    ("bob@example.com", "viewer", None),
];

/// What the CLI keeps secret (the verifier) and what it puts in the login
/// link instead (base64url of its SHA-256).
struct Cli {
    verifier: String,
    hash: String,
}

impl Cli {
    fn new() -> Cli {
        let verifier = rack_gateway::identity::seal::random_token(32);
        let hash = b64(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        Cli { verifier, hash }
    }
}

/// A real gateway with identity configured: the provider, the CI issuer,
/// two mock racks, and a config directory tests rewrite and reload.
struct Fx {
    staging: MockRack,
    production: MockRack,
    running: Running,
    dir: tempfile::TempDir,
    idp: OidcMock,
    ci: CiIssuer,
    /// An issuer spelled with a trailing slash.
    slash_ci: CiIssuer,
    /// `http://127.0.0.1:<port>`: the gateway's address and token issuer.
    gw: String,
    /// The signing key PEM, exactly as the gateway loads it.
    pem: String,
    /// The private half of the retired key, to mint tokens it signed.
    retired_pem: String,
}

impl Fx {
    async fn start() -> Fx {
        init();
        let idp = OidcMock::start(&PROVIDER_USERS).await;
        let ci = CiIssuer::start().await;
        let slash_ci = CiIssuer::start_spelled("/").await;
        let staging = mock().await;
        let production = mock().await;
        let gw = format!("http://127.0.0.1:{}", free_port());
        // The sealing key is derived from the key as loaded (trimmed).
        let pem = signing_pem();
        let retired_pem = signing_pem();
        let dir = tempfile::tempdir().unwrap();
        copy_roles(dir.path());
        std::fs::write(dir.path().join("signing.pem"), &pem).unwrap();
        // Only the public half of a retired key stays in the config.
        std::fs::write(
            dir.path().join("retired.pem"),
            rack_gateway::identity::token::public_pem(&retired_pem).unwrap(),
        )
        .unwrap();
        Files {
            gw: &gw,
            staging: &staging.url(),
            production: &production.url(),
            idp: &idp.url,
            ci: &ci.url,
            slash_ci: &slash_ci.url,
        }
        .write(dir.path(), true, PEOPLE);
        let running = Running::start(&load(dir.path()))
            .await
            .expect("gateway starts on its chosen port");
        Fx {
            staging,
            production,
            running,
            dir,
            idp,
            ci,
            slash_ci,
            gw,
            pem,
            retired_pem,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw)
    }

    fn forwarded(&self) -> usize {
        self.staging.requests().len() + self.production.requests().len()
    }

    /// Rewrites the config (users.yaml and whether the retired key is still
    /// listed) and swaps it in, as a reload does.
    fn reconfigure(&self, retired_key: bool, people: &[(&str, &str, Option<&str>)]) {
        let files = Files {
            gw: &self.gw,
            staging: &self.staging.url(),
            production: &self.production.url(),
            idp: &self.idp.url,
            ci: &self.ci.url,
            slash_ci: &self.slash_ci.url,
        };
        files.write(self.dir.path(), retired_key, people);
        let cfg = load(self.dir.path());
        self.running.gateway.swap(
            rack_gateway::gateway::Runtime::from_config(&cfg)
                .unwrap_or_else(|e| panic!("reloaded config invalid:\n{e}")),
        );
    }

    /// Token keys like the gateway's, with any issuer, audience, kid, key.
    fn keys(&self, issuer: &str, audience: &str, kid: &str, pem: &str) -> Keys {
        token_keys(issuer, audience, kid, pem)
    }

    /// A token the gateway itself would mint for `sub` at time `at`.
    fn mint(&self, sub: &str, at: i64, ttl: Duration) -> String {
        gateway_token(&self.gw, KID, &self.pem, sub, at, ttl)
    }

    /// Claims shaped like the gateway's own, for forged tokens.
    fn claims(&self, sub: &str) -> Value {
        let t = now();
        json!({
            "iss": self.gw, "aud": AUDIENCE, "sub": sub,
            "iat": t, "nbf": t, "exp": t + 3600, "jti": "forged-jti-0000",
        })
    }

    /// The browser's part up to the identity provider's redirect back:
    /// opens the login link, submits the provider's form as `sub`, and
    /// returns the gateway callback URL the provider redirects to.
    async fn through_provider(&self, cli: &Cli, redirect: Option<&str>, sub: &str) -> String {
        let mut start = format!("/_gateway/login/start?cli={}", cli.hash);
        if let Some(r) = redirect {
            start += &format!("&redirect={}", urlencode(r));
        }
        let r = get(&self.url(&start), None).await;
        assert_eq!(r.status, 302, "login start: {}", r.text());
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&format!("{}/oauth2/authorize?", self.idp.url)),
            "{authorize}"
        );
        assert_eq!(query_param(&authorize, "client_id"), CLIENT_ID);
        assert_eq!(query_param(&authorize, "code_challenge_method"), "S256");
        assert_ne!(query_param(&authorize, "state"), cli.hash);

        let page = get(&authorize, None).await;
        assert_eq!(page.status, 200, "provider login page: {}", page.text());
        assert!(
            page.text()
                .contains(&format!(r#"name="sub" value="{sub}""#)),
            "{sub} is not a predefined user: {}",
            page.text()
        );
        let callback = OidcMock::sign_in(&authorize, sub).await;
        assert!(
            callback.starts_with(&self.url("/_gateway/login/callback?")),
            "{callback}"
        );
        callback
    }

    /// The CLI's last step: the code and (maybe) its verifier for a token.
    async fn redeem(&self, body: Value) -> Resp {
        send(
            "POST",
            &self.url("/_gateway/login/token"),
            None,
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// A whole login of `sub` through the CLI's loopback redirect; returns
    /// the token response.
    async fn login(&self, sub: &str) -> Value {
        let cli = Cli::new();
        let callback = self.through_provider(&cli, Some(CLI_REDIRECT), sub).await;
        let r = get(&callback, None).await;
        assert_eq!(r.status, 302, "callback: {}", r.text());
        let to_cli = location(&r);
        let code = to_cli
            .strip_prefix(&format!("{CLI_REDIRECT}?code="))
            .unwrap_or_else(|| panic!("not a redirect to the CLI: {to_cli}"));
        let r = self
            .redeem(json!({"code": code, "verifier": cli.verifier}))
            .await;
        assert_eq!(r.status, 200, "token: {}", r.text());
        r.json()
    }
}

/// The config files a fixture writes.
struct Files<'a> {
    gw: &'a str,
    staging: &'a str,
    production: &'a str,
    idp: &'a str,
    ci: &'a str,
    slash_ci: &'a str,
}

impl Files<'_> {
    fn write(&self, dir: &Path, retired_key: bool, people: &[(&str, &str, Option<&str>)]) {
        let port = self.gw.rsplit(':').next().unwrap();
        let verification_keys = if retired_key {
            format!("\n    - id: {RETIRED_KID}\n      file: retired.pem")
        } else {
            " []".into()
        };
        let gateway = ConfigDir::new()
            .listen(&format!("127.0.0.1:{port}"))
            .no_rack_discovery()
            .rack("staging", self.staging)
            .rack("production", self.production)
            .extra(&identity_yaml(
                self.gw,
                self.idp,
                &format!("  signing_key_id: {KID}\n  verification_keys:{verification_keys}\n"),
            ))
            .gateway_yaml();
        std::fs::write(dir.join("gateway.yaml"), with_lifted_limits(&gateway)).unwrap();

        let mut users = String::from("users:\n");
        for (email, role, valid_after) in people {
            users += &format!(
                "  {email}:\n    grants:\n      - role: {role}\n        scope: \"staging/*\"\n"
            );
            if let Some(t) = valid_after {
                users += &format!("    tokens_valid_after: \"{t}\"\n");
            }
        }
        for email in STEP_UP_USERS {
            users += &format!("  {email}:\n{STEP_UP_GRANTS}");
        }
        users += "domains:\n  corp.example:\n    grants:\n      - role: viewer\n        scope: \"staging/*\"\n";
        std::fs::write(dir.join("users.yaml"), users).unwrap();

        let grant = "    grants:\n      - role: deployer\n        scope: \"staging/*\"\n";
        let federated = |name: &str, issuer: &str, repository: &str, expires: &str| {
            format!(
                "  {name}:\n    federated:\n      issuer: {issuer}\n      audience: {AUDIENCE}\n      \
                 claims:\n        repository: {repository}\n        ref: refs/heads/main\n    \
                 expires: {expires}\n{grant}"
            )
        };
        std::fs::write(
            dir.join("roles/builder.yaml"),
            "inherits: [viewer]\nallow: [build, builds logs]\n",
        )
        .unwrap();
        let approvals = format!(
            "  app-workflow:\n    federated:\n      issuer: {}\n      audience: {AUDIENCE}\n      \
             claims:\n        repository: acme/approvals\n    expires: 2099-01-01\n{APPROVALS_CI}",
            self.ci
        );
        let ci = format!(
            "ci:\n{approvals}\
            \x20 ci-staging:\n    token_sha256: {}\n    expires: 2099-01-01\n{grant}\
            \x20 ci-expired:\n    token_sha256: {}\n    expires: 2020-01-01\n{grant}{}{}{}",
            sha(CI_STAGING),
            sha(CI_EXPIRED),
            federated("deploy-app", self.ci, "acme/app", "2099-01-01"),
            federated("deploy-legacy", self.ci, "acme/legacy", "2020-01-01"),
            federated("deploy-slash", self.slash_ci, "acme/app", "2099-01-01"),
        );
        std::fs::write(dir.join("ci.yaml"), ci).unwrap();
    }
}

fn load(dir: &Path) -> config::Config {
    crate::support::load(
        dir,
        &[
            ("RACK_PW", RACK_PASSWORD),
            ("OIDC_CLIENT_ID", CLIENT_ID),
            ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
}

/// `token` as the Basic password is refused with 401 and a gateway JSON
/// error, on a proxied route and on whoami, and nothing reaches a rack.
async fn assert_refused(fx: &Fx, label: &str, token: &str) {
    let before = fx.forwarded();
    for path in [APPS, "/_gateway/whoami"] {
        let r = get(&fx.url(path), Some(token)).await;
        assert_eq!(r.status, 401, "{label} on {path}: {}", r.text());
        assert_eq!(
            r.headers["content-type"], "application/json",
            "{label} on {path}"
        );
        let error = r.error();
        assert!(
            error.starts_with("gateway: "),
            "{label} on {path}: {}",
            r.text()
        );
        if token.len() >= 8 {
            assert!(!r.text().contains(token), "{label}: token echoed");
        }
    }
    assert_eq!(fx.forwarded(), before, "{label} reached a rack");
}

/// `token` works on a proxied route (the positive control of a refusal).
async fn assert_accepted(fx: &Fx, label: &str, token: &str) {
    let r = get(&fx.url(APPS), Some(token)).await;
    assert_eq!(r.status, 200, "{label}: {}", r.text());
}

#[tokio::test]
async fn login_without_a_browser_yields_a_working_token() {
    let fx = Fx::start().await;
    let before = now();
    let t = fx.login("alice").await;
    let after = now();
    let token = t["token"].as_str().unwrap();
    assert_eq!(t["email"], "alice@example.com");
    let expires_at = t["expires_at"].as_i64().unwrap();
    assert!(
        (before + 3600..=after + 3600).contains(&expires_at),
        "token_ttl 1h: {t}"
    );
    let header = jwt_part(token, 0);
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("EdDSA"), Some(KID))
    );
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], fx.gw.as_str());
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["sub"], "alice@example.com");

    let r = get(&fx.url(APPS), Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = fx.staging.last_request().expect("the rack got the request");
    assert_eq!(got.target, "/apps?");
    assert_eq!(
        got.header("convox-actor").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        got.header("authorization").as_deref(),
        Some(basic(RACK_PASSWORD).as_str())
    );
    for (name, value) in &got.headers {
        assert!(
            !String::from_utf8_lossy(value).contains(token),
            "gateway token forwarded in {name}"
        );
    }

    let r = get(&fx.url("/_gateway/whoami"), Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let me = r.json();
    assert_eq!(me["identity"], "alice@example.com");
    assert_eq!(me["kind"], "person");
    assert_eq!(me["expires_at"], expires_at);
    let grants = me["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{me}");
    assert_eq!(grants[0]["role"], "deployer");
    assert_eq!(grants[0]["racks"], json!(["staging"]));
    assert!(
        grants[0]["scope"].as_str().unwrap().starts_with("staging"),
        "{me}"
    );
}

#[tokio::test]
async fn no_browser_login_shows_the_code_on_a_page() {
    let fx = Fx::start().await;
    let cli = Cli::new();
    let callback = fx.through_provider(&cli, None, "alice").await;
    let r = get(&callback, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.get("location").is_none());
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(r.headers["cache-control"], "no-store");
    let page = r.text();
    assert!(page.contains("alice@example.com"), "{page}");
    let code = page
        .split_once("<code>")
        .and_then(|(_, rest)| rest.split_once("</code>"))
        .map(|(code, _)| code.to_string())
        .unwrap_or_else(|| panic!("no code on the page: {page}"));

    let r = fx
        .redeem(json!({"code": code, "verifier": cli.verifier}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    assert_accepted(&fx, "pasted-code token", &token).await;
    assert_eq!(
        fx.staging
            .last_request()
            .unwrap()
            .header("convox-actor")
            .as_deref(),
        Some("alice@example.com")
    );
}

#[tokio::test]
async fn a_leaked_link_or_code_is_worthless_without_the_verifier() {
    let fx = Fx::start().await;
    let cli = Cli::new();
    // Whoever holds the login link (it carries only the verifier's hash)
    // can finish the provider step and see the code...
    let callback = fx.through_provider(&cli, Some(CLI_REDIRECT), "alice").await;
    let r = get(&callback, None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let code = location(&r)
        .strip_prefix(&format!("{CLI_REDIRECT}?code="))
        .unwrap()
        .to_string();

    // ...but cannot redeem it.
    let attempts = [
        (
            "another CLI's verifier",
            json!({"code": code, "verifier": Cli::new().verifier}),
        ),
        (
            "the hash from the link",
            json!({"code": code, "verifier": cli.hash}),
        ),
        ("no verifier", json!({"code": code})),
        ("an empty verifier", json!({"code": code, "verifier": ""})),
    ];
    for (label, body) in attempts {
        let r = fx.redeem(body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text());
        assert!(r.error().starts_with("gateway: "), "{label}: {}", r.text());
        assert!(r.json().get("token").is_none(), "{label}");
    }

    // The CLI that started the login can, once.
    let r = fx
        .redeem(json!({"code": code, "verifier": cli.verifier}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "alice@example.com");
    let r = fx
        .redeem(json!({"code": code, "verifier": cli.verifier}))
        .await;
    assert_eq!(r.status, 400, "second use: {}", r.text());
    assert!(
        r.error().contains("invalid or expired login code"),
        "{}",
        r.text()
    );

    // Codes sealed by the gateway's own key but expired, or sealed for
    // another purpose (a login state), are refused with the right verifier.
    let sealer = Sealer::new(fx.pem.as_bytes());
    let expired_code = sealer.seal(
        Purpose::LoginCode,
        &LoginCode {
            email: "alice@example.com".into(),
            cli: cli.hash.clone(),
            jti: rack_gateway::identity::seal::random_token(16),
            amr: vec![],
            auth_time: None,
        },
        now() - 60,
    );
    let state_as_code = sealer.seal(
        Purpose::LoginState,
        &LoginState {
            pkce: rack_gateway::identity::seal::random_token(32),
            nonce: rack_gateway::identity::seal::random_token(24),
            cli: cli.hash.clone(),
            redirect: None,
        },
        now() + 600,
    );
    for (label, code) in [
        ("expired code", expired_code),
        ("a login state", state_as_code),
    ] {
        let r = fx
            .redeem(json!({"code": code, "verifier": cli.verifier}))
            .await;
        assert_eq!(r.status, 400, "{label}: {}", r.text());
    }
}

#[tokio::test]
async fn the_login_state_must_be_intact_and_fresh() {
    let fx = Fx::start().await;
    let cli = Cli::new();
    let callback = fx.through_provider(&cli, Some(CLI_REDIRECT), "alice").await;
    let state = query_param(&callback, "state");
    let code = query_param(&callback, "code");
    let with_state = |s: &str| {
        fx.url(&format!(
            "/_gateway/login/callback?code={}&state={}",
            urlencode(&code),
            urlencode(s)
        ))
    };

    // One character flipped in the middle of the sealed state.
    let mut tampered: Vec<char> = state.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    // The same state, resealed by the gateway's own key as already expired.
    let sealer = Sealer::new(fx.pem.as_bytes());
    let st: LoginState = sealer
        .open(Purpose::LoginState, &state, now())
        .expect("the state is sealed with a key derived from the signing key");
    assert_eq!(st.cli, cli.hash);
    let expired = sealer.seal(Purpose::LoginState, &st, now() - 60);

    for (label, s) in [
        ("tampered", tampered.as_str()),
        ("expired", expired.as_str()),
    ] {
        let r = get(&with_state(s), None).await;
        assert_eq!(r.status, 400, "{label} state: {}", r.text());
        assert!(r.headers.get("location").is_none(), "{label} state");
        assert!(
            r.text().contains("this login link is invalid or expired"),
            "{label} state: {}",
            r.text()
        );
    }

    // A provider code from another login (its nonce and PKCE verifier are
    // in the other login's state) does not complete this one.
    let other = fx
        .through_provider(&Cli::new(), Some(CLI_REDIRECT), "alice")
        .await;
    let r = get(
        &fx.url(&format!(
            "/_gateway/login/callback?code={}&state={}",
            urlencode(&query_param(&other, "code")),
            urlencode(&state)
        )),
        None,
    )
    .await;
    assert!(
        r.status >= 400,
        "swapped code: HTTP {}: {}",
        r.status,
        r.text()
    );
    assert!(r.headers.get("location").is_none(), "swapped code");
    assert!(!r.text().contains("<code>"), "{}", r.text());
    assert!(
        r.text().contains("nonce"),
        "refused for its nonce: {}",
        r.text()
    );

    // The untouched state with its own provider code still completes.
    let r = get(&with_state(&state), None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(location(&r).starts_with(&format!("{CLI_REDIRECT}?code=")));
}

#[tokio::test]
async fn the_login_start_refuses_redirects_off_the_loopback() {
    let fx = Fx::start().await;
    let cli = Cli::new();
    for redirect in [
        "http://evil.example.com:4567/callback",
        "https://127.0.0.1:4567/callback",
        "http://127.0.0.1.evil.example.com:80/callback",
        "http://convox@127.0.0.1:4567/callback",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:4567/callback?next=http://evil.example.com",
        "javascript:alert(1)",
    ] {
        let start = format!(
            "/_gateway/login/start?cli={}&redirect={}",
            cli.hash,
            urlencode(redirect)
        );
        let r = get(&fx.url(&start), None).await;
        assert_eq!(r.status, 400, "{redirect}: {}", r.text());
        assert!(r.headers.get("location").is_none(), "{redirect}");
        assert!(
            r.text().contains("redirect must be"),
            "{redirect}: {}",
            r.text()
        );
    }
    // A missing or malformed CLI hash is refused too.
    for query in ["", "?cli=short", "?cli=abc&cli=def"] {
        let r = get(&fx.url(&format!("/_gateway/login/start{query}")), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.headers.get("location").is_none(), "{query}");
    }
    let start = format!(
        "/_gateway/login/start?cli={}&redirect={}",
        cli.hash,
        urlencode(CLI_REDIRECT)
    );
    let r = get(&fx.url(&start), None).await;
    assert_eq!(r.status, 302, "{}", r.text());
}

#[tokio::test]
async fn unverified_and_unlisted_people_are_not_admitted() {
    let fx = Fx::start().await;
    for (sub, why) in [
        (
            "bob",
            "bob@example.com is not verified by the identity provider",
        ),
        ("carol", "carol@example.com is not listed in users.yaml"),
    ] {
        for redirect in [Some(CLI_REDIRECT), None] {
            let callback = fx.through_provider(&Cli::new(), redirect, sub).await;
            let r = get(&callback, None).await;
            assert_eq!(r.status, 403, "{sub} {redirect:?}: {}", r.text());
            assert!(
                r.headers.get("location").is_none(),
                "{sub}: a code was sent"
            );
            assert!(r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let page = r.text();
            assert!(
                page.contains("not authorized for this gateway"),
                "{sub}: {page}"
            );
            assert!(page.contains(why), "{sub}: {page}");
            assert!(!page.contains("<code>"), "{sub}: a code was shown: {page}");
        }
    }

    // dave is not in users.yaml, but the corp.example rule admits him.
    let t = fx.login("dave").await;
    assert_eq!(t["email"], "dave@corp.example");
    let token = t["token"].as_str().unwrap();
    let r = get(&fx.url("/_gateway/whoami"), Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identity"], "dave@corp.example");
    assert_eq!(r.json()["kind"], "person");
    assert_eq!(r.json()["grants"][0]["role"], "viewer");
    assert_accepted(&fx, "dave", token).await;
    assert_eq!(
        fx.staging
            .last_request()
            .unwrap()
            .header("convox-actor")
            .as_deref(),
        Some("dave@corp.example")
    );
    assert_eq!(fx.forwarded(), 1);
}

#[tokio::test]
async fn forged_stale_and_malformed_tokens_are_refused() {
    let fx = Fx::start().await;
    let alice = "alice@example.com";
    let hour = Duration::from_secs(3600);
    let ours = ed25519_signer(&fx.pem);
    let attacker_pem = rack_gateway::identity::token::generate_private_pem();
    let attacker = ed25519_signer(&attacker_pem);
    let public_pem = rack_gateway::identity::token::public_pem(&fx.pem).unwrap();
    let public_raw = pem_der(&public_pem)[12..].to_vec();
    let edsa = json!({"alg": "EdDSA", "typ": "JWT", "kid": KID});

    // Positive controls: the same shapes, done right, are accepted.
    let genuine = fx.mint(alice, now(), hour);
    assert_accepted(&fx, "minted with the gateway's key", &genuine).await;
    assert_accepted(
        &fx,
        "hand-built with the gateway's key",
        &jws(&edsa, &fx.claims(alice), &ours),
    )
    .await;
    assert_accepted(&fx, "static CI token", CI_STAGING).await;
    let fed_ok = fx.ci.ed.sign(&fx.ci.claims("acme/app", "refs/heads/main"));
    assert_accepted(&fx, "federated CI token", &fed_ok).await;

    // A real ID token from the identity provider is not a gateway token.
    let callback = fx.through_provider(&Cli::new(), None, "alice").await;
    let r = send(
        "POST",
        &format!("{}/oauth2/token", fx.idp.url),
        None,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            (
                "Authorization",
                &format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                ),
            ),
        ],
        format!(
            "grant_type=authorization_code&code={}&redirect_uri={}",
            urlencode(&query_param(&callback, "code")),
            urlencode(&fx.url("/_gateway/login/callback"))
        ),
    )
    .await;
    assert_eq!(r.status, 200, "provider token endpoint: {}", r.text());
    let id_token = r.json()["id_token"].as_str().unwrap().to_string();

    let (untrusted_ci, tampered) = {
        let other = CiIssuer::start().await;
        let mut c = other.claims("acme/app", "refs/heads/main");
        c["iss"] = json!(other.url);
        let untrusted = other.ed.sign(&c);
        // dave's (viewer) genuine token with the subject swapped to alice.
        let dave = fx.mint("dave@corp.example", now(), hour);
        let mut parts: Vec<String> = dave.split('.').map(str::to_string).collect();
        let mut claims = jwt_part(&dave, 1);
        claims["sub"] = json!(alice);
        parts[1] = b64(claims.to_string());
        (untrusted, parts.join("."))
    };
    let fed = |f: &dyn Fn(&mut Value)| {
        let mut c = fx.ci.claims("acme/app", "refs/heads/main");
        f(&mut c);
        fx.ci.ed.sign(&c)
    };
    let genuine_unsigned = {
        let (input, _) = genuine.rsplit_once('.').unwrap();
        format!("{input}.")
    };
    let oversized = jws(
        &edsa,
        &json!({"iss": fx.gw, "aud": AUDIENCE, "sub": alice, "iat": now(), "nbf": now(),
                "exp": now() + 3600, "jti": "big", "pad": "x".repeat(10 * 1024)}),
        &ours,
    );
    assert!(oversized.len() > 10 * 1024);
    let attacker_jwk = {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(&attacker_pem)).unwrap();
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key())})
    };

    let forged: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string()),
                b64(fx.claims(alice).to_string())
            ),
        ),
        (
            "HS256 keyed with the public key PEM",
            jws(
                &json!({"alg": "HS256", "typ": "JWT", "kid": KID}),
                &fx.claims(alice),
                hs256_signer(public_pem.clone().into_bytes()),
            ),
        ),
        (
            "HS256 keyed with the raw public key",
            jws(
                &json!({"alg": "HS256", "typ": "JWT", "kid": KID}),
                &fx.claims(alice),
                hs256_signer(public_raw),
            ),
        ),
        (
            "another Ed25519 key under our kid",
            fx.keys(&fx.gw, AUDIENCE, KID, &attacker_pem)
                .mint(alice, vec![], None, hour, now())
                .unwrap()
                .0,
        ),
        (
            "our key under an unknown kid",
            fx.keys(&fx.gw, AUDIENCE, "k-unknown", &fx.pem)
                .mint(alice, vec![], None, hour, now())
                .unwrap()
                .0,
        ),
        (
            "no kid",
            jws(
                &json!({"alg": "EdDSA", "typ": "JWT"}),
                &fx.claims(alice),
                &ours,
            ),
        ),
        (
            "attacker key embedded as jwk",
            jws(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": KID, "jwk": attacker_jwk}),
                &fx.claims(alice),
                &attacker,
            ),
        ),
        ("ES256 under our kid", {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(KID.into());
            jsonwebtoken::encode(
                &h,
                &fx.claims(alice),
                &EncodingKey::from_ec_der(&fx.ci.es.pkcs8),
            )
            .unwrap()
        }),
        ("payload tampered (sub swapped)", tampered),
        ("signature stripped", genuine_unsigned),
        ("expired", fx.mint(alice, now() - 2 * 3600, hour)),
        ("not yet valid", fx.mint(alice, now() + 3600, hour)),
        (
            "wrong issuer",
            fx.keys("https://other-gateway.example.com", AUDIENCE, KID, &fx.pem)
                .mint(alice, vec![], None, hour, now())
                .unwrap()
                .0,
        ),
        (
            "wrong audience",
            fx.keys(&fx.gw, "another-deployment", KID, &fx.pem)
                .mint(alice, vec![], None, hour, now())
                .unwrap()
                .0,
        ),
        ("oversized (10 KiB)", oversized),
        ("not base64", "eyJ!!!.@@@@.$$$$".into()),
        ("two parts", genuine.rsplit_once('.').unwrap().0.to_string()),
        ("empty", String::new()),
        ("the identity provider's ID token", id_token),
        ("static CI token past its expiry", CI_EXPIRED.into()),
        (
            "federated: non-matching repository",
            fed(&|c| c["repository"] = json!("acme/other")),
        ),
        (
            "federated: non-matching ref",
            fed(&|c| c["ref"] = json!("refs/heads/feature")),
        ),
        ("federated: unknown issuer", untrusted_ci),
        (
            "federated: wrong audience",
            fed(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "federated: expired",
            fed(&|c| {
                c["iat"] = json!(now() - 7200);
                c["nbf"] = json!(now() - 7200);
                c["exp"] = json!(now() - 3600);
            }),
        ),
    ];
    assert!(forged.len() >= 20);
    for (label, token) in &forged {
        assert_refused(&fx, label, token).await;
    }

    // An unverified email never gets as far as a code, so no token exists.
    for redirect in [Some(CLI_REDIRECT), None] {
        let callback = fx.through_provider(&Cli::new(), redirect, "bob").await;
        let r = get(&callback, None).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.headers.get("location").is_none());
        assert!(!r.text().contains("<code>"), "{}", r.text());
    }

    // Tokens that were fine until the config changed.
    let erin = "erin@example.com";
    let mut people = PEOPLE.to_vec();
    people.push((erin, "viewer", None));
    fx.reconfigure(true, &people);
    let erins = fx.mint(erin, now(), hour);
    let retired = fx
        .keys(&fx.gw, AUDIENCE, RETIRED_KID, &fx.retired_pem)
        .mint(alice, vec![], None, hour, now())
        .unwrap()
        .0;
    // Issued in 1999, valid for 30 years.
    let old = fx.mint(
        alice,
        946_684_800 - 3600,
        Duration::from_secs(30 * 365 * 86_400),
    );
    assert_accepted(&fx, "erin before removal", &erins).await;
    assert_accepted(&fx, "retired key while listed", &retired).await;
    assert_accepted(&fx, "1999 token before tokens_valid_after", &old).await;

    fx.reconfigure(
        false,
        &[
            (alice, "deployer", Some("2000-01-01")),
            ("bob@example.com", "viewer", None),
        ],
    );
    assert_refused(&fx, "user removed from users.yaml", &erins).await;
    assert_refused(&fx, "signed by a rotated-out key", &retired).await;
    assert_refused(&fx, "issued before tokens_valid_after", &old).await;
    let r = get(&fx.url(APPS), Some(&old)).await;
    assert!(r.error().contains("revoked"), "{}", r.text());
    assert_accepted(&fx, "a token issued after tokens_valid_after", &genuine).await;
}

#[tokio::test]
async fn federated_ci_tokens_need_the_right_issuer_audience_and_claims() {
    let fx = Fx::start().await;
    for (label, key) in [("Ed25519", &fx.ci.ed), ("ES256", &fx.ci.es)] {
        let claims = fx.ci.claims("acme/app", "refs/heads/main");
        let token = key.sign(&claims);
        let r = get(&fx.url(APPS), Some(&token)).await;
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        let got = fx.staging.last_request().unwrap();
        assert_eq!(
            got.header("convox-actor").as_deref(),
            Some("deploy-app"),
            "{label}"
        );
        let r = get(&fx.url("/_gateway/whoami"), Some(&token)).await;
        assert_eq!(r.status, 200, "{label}: {}", r.text());
        let me = r.json();
        assert_eq!(me["identity"], "deploy-app");
        assert_eq!(me["kind"], "federated-ci");
        assert_eq!(me["expires_at"], claims["exp"]);
        assert_eq!(me["grants"][0]["role"], "deployer");
    }
    // Its grants apply: deployer may promote.
    let token = fx.ci.ed.sign(&fx.ci.claims("acme/app", "refs/heads/main"));
    let r = send(
        "POST",
        &fx.url(PROMOTE),
        Some(&token),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "force=false",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fx.forwarded(), 3);

    let wrong_key = CiKey::ed25519(&fx.ci.ed.kid);
    let cases: Vec<(&str, Value, &CiKey)> = vec![
        (
            "another repository",
            fx.ci.claims("acme/other", "refs/heads/main"),
            &fx.ci.ed,
        ),
        (
            "a pattern-lookalike repository",
            fx.ci.claims("acme/app-fork", "refs/heads/main"),
            &fx.ci.ed,
        ),
        (
            "another branch",
            fx.ci.claims("acme/app", "refs/heads/feature"),
            &fx.ci.es,
        ),
        (
            "a key not in the JWKS",
            fx.ci.claims("acme/app", "refs/heads/main"),
            &wrong_key,
        ),
        (
            "expired",
            {
                let mut c = fx.ci.claims("acme/app", "refs/heads/main");
                c["iat"] = json!(now() - 7200);
                c["nbf"] = json!(now() - 7200);
                c["exp"] = json!(now() - 3600);
                c
            },
            &fx.ci.ed,
        ),
        (
            "not yet valid",
            {
                let mut c = fx.ci.claims("acme/app", "refs/heads/main");
                c["nbf"] = json!(now() + 3600);
                c["exp"] = json!(now() + 7200);
                c
            },
            &fx.ci.es,
        ),
        (
            "wrong audience",
            {
                let mut c = fx.ci.claims("acme/app", "refs/heads/main");
                c["aud"] = json!("sts.amazonaws.com");
                c
            },
            &fx.ci.ed,
        ),
        (
            "missing ref claim",
            {
                let mut c = fx.ci.claims("acme/app", "refs/heads/main");
                c.as_object_mut().unwrap().remove("ref");
                c
            },
            &fx.ci.ed,
        ),
        (
            "claim not a string",
            {
                let mut c = fx.ci.claims("acme/app", "refs/heads/main");
                c["repository"] = json!(["acme/app"]);
                c
            },
            &fx.ci.ed,
        ),
    ];
    for (label, claims, key) in &cases {
        assert_refused(&fx, label, &key.sign(claims)).await;
    }
    // A CI identity past its own `expires` (2020), with a valid token.
    let legacy = fx
        .ci
        .ed
        .sign(&fx.ci.claims("acme/legacy", "refs/heads/main"));
    assert_refused(&fx, "identity past its expiry", &legacy).await;
    let r = get(&fx.url(APPS), Some(&legacy)).await;
    assert!(r.error().contains("token expired"), "{}", r.text());
    // Our own issuer's alg-none and HMAC variants.
    let claims = fx.ci.claims("acme/app", "refs/heads/main");
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": fx.ci.ed.kid}).to_string()),
        b64(claims.to_string())
    );
    assert_refused(&fx, "federated alg none", &none).await;
    let hs = jws(
        &json!({"alg": "HS256", "kid": fx.ci.es.kid}),
        &claims,
        hs256_signer(fx.ci.es.jwk.to_string().into_bytes()),
    );
    assert_refused(&fx, "federated HS256 keyed with the JWK", &hs).await;
}

#[tokio::test]
async fn demotion_and_removal_apply_on_the_next_request() {
    let fx = Fx::start().await;
    let t = fx.login("alice").await;
    let token = t["token"].as_str().unwrap();
    // A second login that has reached the CLI but is not redeemed yet.
    let pending = Cli::new();
    let callback = fx
        .through_provider(&pending, Some(CLI_REDIRECT), "alice")
        .await;
    let r = get(&callback, None).await;
    let pending_code = location(&r)
        .strip_prefix(&format!("{CLI_REDIRECT}?code="))
        .unwrap()
        .to_string();
    let promote_url = fx.url(PROMOTE);
    let promote = || {
        send(
            "POST",
            &promote_url,
            Some(token),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "force=false",
        )
    };
    let r = promote().await;
    assert_eq!(r.status, 200, "deployer promotes: {}", r.text());
    assert_eq!(fx.forwarded(), 1);

    fx.reconfigure(
        true,
        &[
            ("alice@example.com", "viewer", None),
            ("bob@example.com", "viewer", None),
        ],
    );
    let r = promote().await;
    assert_eq!(r.status, 403, "viewer promotes: {}", r.text());
    let error = r.error();
    assert!(error.starts_with("gateway: denied"), "{error}");
    assert!(error.contains("viewer"), "{error}");
    assert_eq!(fx.forwarded(), 1, "a denied promote reached the rack");
    assert_accepted(&fx, "viewer reads", token).await;
    let r = get(&fx.url("/_gateway/whoami"), Some(token)).await;
    assert_eq!(r.json()["grants"][0]["role"], "viewer");

    fx.reconfigure(true, &[("bob@example.com", "viewer", None)]);
    let before = fx.forwarded();
    let r = promote().await;
    assert_eq!(r.status, 401, "removed: {}", r.text());
    assert!(r.error().starts_with("gateway: "), "{}", r.text());
    assert_refused(&fx, "alice after removal", token).await;
    assert_eq!(fx.forwarded(), before);
    let r = fx
        .redeem(json!({"code": pending_code, "verifier": pending.verifier}))
        .await;
    assert_eq!(r.status, 403, "code redeemed after removal: {}", r.text());
    assert!(r.json().get("token").is_none());
}

/// OpenID issuers are compared as exact strings, and some canonically end
/// in `/` (Auth0 `https://<tenant>.auth0.com/`, Entra ID v1
/// `https://sts.windows.net/<tenant>/`): their tokens carry the slash.
#[tokio::test]
async fn federated_issuer_with_a_trailing_slash_is_matched_exactly() {
    let fx = Fx::start().await;
    let claims = fx.slash_ci.claims("acme/app", "refs/heads/main");
    assert!(claims["iss"].as_str().unwrap().ends_with('/'));
    let token = fx.slash_ci.ed.sign(&claims);
    let r = get(&fx.url(APPS), Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        fx.staging
            .last_request()
            .unwrap()
            .header("convox-actor")
            .as_deref(),
        Some("deploy-slash")
    );
}

/// The same for the login provider: discovery must find the issuer it was
/// configured with, spelled exactly.
#[tokio::test]
async fn login_provider_issuer_with_a_trailing_slash_is_discovered() {
    let fx = Fx::start().await;
    let gateway_yaml = fx.dir.path().join("gateway.yaml");
    let yaml = read(&gateway_yaml).replace(
        &format!("issuer: {}\n", fx.idp.url),
        &format!("issuer: {}\n", fx.slash_ci.url),
    );
    assert!(yaml.contains(&fx.slash_ci.url));
    std::fs::write(&gateway_yaml, yaml).unwrap();
    fx.running
        .gateway
        .swap(rack_gateway::gateway::Runtime::from_config(&load(fx.dir.path())).unwrap());
    let start = format!("/_gateway/login/start?cli={}", Cli::new().hash);
    let r = get(&fx.url(&start), None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(location(&r).starts_with(&format!("{}authorize?", fx.slash_ci.url)));
}

/// An error the provider (or whoever crafted the link) sends back is not
/// shown on the gateway's page — only a fixed message — and its text goes
/// to the audit record; a callback with a forged state is refused before
/// anything is shown (control for the state check).
#[tokio::test]
async fn provider_errors_are_not_echoed_on_the_login_page() {
    let fx = Fx::start().await;
    let start = format!("/_gateway/login/start?cli={}", Cli::new().hash);
    let r = get(&fx.url(&start), None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let state = query_param(&location(&r), "state");
    let evil = "<a href=//evil.example>call support: +1 555 0100</a>";
    let r = get(
        &fx.url(&format!(
            "/_gateway/login/callback?state={}&error=access_denied&error_description={}",
            urlencode(&state),
            urlencode(evil)
        )),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("refused the login"), "{}", r.text());
    assert!(!r.text().contains("evil.example"), "{}", r.text());
    assert!(!r.text().contains("555"), "{}", r.text());
    let r = get(
        &fx.url("/_gateway/login/callback?state=forged&error=x&error_description=evil.example"),
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.text().contains("evil.example"), "{}", r.text());
}

/// An unreachable identity provider: the page says so in fixed words and
/// the detail (its address, the connection error) stays in the log. A
/// callback's state is checked before the provider is contacted, so a
/// forged one is refused as such (400), while an intact one (the control)
/// gets as far as the provider (502).
#[tokio::test]
async fn an_unreachable_provider_is_not_described_to_the_browser() {
    let fx = Fx::start().await;
    let start = format!("/_gateway/login/start?cli={}", Cli::new().hash);
    let r = get(&fx.url(&start), None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let state = query_param(&location(&r), "state");
    let down = format!("http://127.0.0.1:{}", free_port());
    let gateway_yaml = fx.dir.path().join("gateway.yaml");
    let yaml = read(&gateway_yaml).replace(
        &format!("issuer: {}\n", fx.idp.url),
        &format!("issuer: {down}\n"),
    );
    assert!(yaml.contains(&down));
    std::fs::write(&gateway_yaml, yaml).unwrap();
    fx.running
        .gateway
        .swap(rack_gateway::gateway::Runtime::from_config(&load(fx.dir.path())).unwrap());
    let port = down.rsplit(':').next().unwrap();

    let r = get(&fx.url(&start), None).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("identity provider is unavailable"),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains(port),
        "the provider's address is shown: {}",
        r.text()
    );

    let forged = get(
        &fx.url("/_gateway/login/callback?state=forged&code=x"),
        None,
    )
    .await;
    assert_eq!(forged.status, 400, "{}", forged.text());
    assert!(
        forged.text().contains("invalid or expired"),
        "{}",
        forged.text()
    );
    let intact = get(
        &fx.url(&format!(
            "/_gateway/login/callback?state={}&code=x",
            urlencode(&state)
        )),
        None,
    )
    .await;
    assert_eq!(intact.status, 502, "{}", intact.text());
    assert!(!intact.text().contains(port), "{}", intact.text());
}

/// A promote of production's active release.
const PROMOTE_PRODUCTION: &str = "/racks/production/apps/myapp/releases/RMYAPPRELAB/promote?";

async fn promote_production(fx: &Fx, token: &str) -> Resp {
    send(
        "POST",
        &fx.url(PROMOTE_PRODUCTION),
        Some(token),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "force=false",
    )
    .await
}

#[tokio::test]
async fn step_up_grants_need_a_recent_mfa_login_from_the_provider() {
    let fx = Fx::start().await;
    // sam: the provider's ID token says a one-time code was used.
    let t = fx.login("sam").await;
    let sam = t["token"].as_str().unwrap().to_string();
    assert_eq!(jwt_part(&sam, 1)["amr"], json!(["pwd", "otp"]));
    let r = promote_production(&fx, &sam).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fx.production.requests().len(), 1);
    let me = get(&fx.url("/_gateway/whoami"), Some(&sam)).await.json();
    assert_eq!(me["mfa"], true, "{me}");
    assert_eq!(me["grants"][1]["require"]["mfa"], true, "{me}");
    assert_eq!(me["grants"][1]["require"]["max_auth_age"], "12h", "{me}");

    // tess: a password only; uri: a key, but the login is years old.
    for sub in ["tess", "uri"] {
        let t = fx.login(sub).await;
        let token = t["token"].as_str().unwrap().to_string();
        let before = fx.forwarded();
        let r = promote_production(&fx, &token).await;
        assert_eq!(r.status, 403, "{sub}: {}", r.text());
        let want = format!(
            "deployer on production/* (users.yaml:{}) needs a login with MFA in the last 12h: run rack-gateway login production {}",
            line_in(&fx, "users.yaml", &format!("{sub}@example.com")) + 5,
            fx.gw
        );
        assert!(r.error().ends_with(&want), "{sub}: {}", r.error());
        assert_eq!(fx.forwarded(), before, "{sub}: a refusal reached a rack");
        // What the viewer grant allows needs no step-up (control).
        let r = get(&fx.url("/racks/production/apps?"), Some(&token)).await;
        assert_eq!(r.status, 200, "{sub}: {}", r.text());
    }
    let uri = fx.login("uri").await;
    let claims = jwt_part(uri["token"].as_str().unwrap(), 1);
    assert_eq!(claims["auth_time"], 1_700_000_000, "{claims}");
}

/// The 1-based line of `needle` in the fixture's config file `name`.
fn line_in(fx: &Fx, name: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(fx.dir.path().join(name)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test]
async fn deploy_approval_is_the_protected_environment_claim() {
    let fx = Fx::start().await;
    let job = |environment: Option<&str>| {
        let mut c = fx.ci.claims("acme/approvals", "refs/heads/main");
        if let Some(e) = environment {
            c["environment"] = json!(e);
        }
        fx.ci.ed.sign(&c)
    };
    let can = |token: String, operation: &'static str| {
        let url = fx.url("/_gateway/can");
        async move {
            let body = json!({"operation": operation, "rack": "production", "app": "myapp"});
            let r = send(
                "POST",
                &url,
                Some(&token),
                &[("Content-Type", "application/json")],
                body.to_string(),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    // Without the claim (no approval): build, but no promote.
    let unapproved = job(None);
    let before = fx.forwarded();
    let r = promote_production(&fx, &unapproved).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error()
            .contains("needs a CI token whose `environment` claim matches `production`"),
        "{}",
        r.error()
    );
    assert_eq!(fx.forwarded(), before);
    let a = can(unapproved, "build").await;
    assert_eq!(a["allowed"], true, "{a}");
    assert_eq!(a["identity"], "app-workflow");
    // Another environment's approval is not production's.
    let r = promote_production(&fx, &job(Some("staging"))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // The job in the protected environment, after its reviewers approved.
    let approved = job(Some("production"));
    let r = promote_production(&fx, &approved).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fx.production.requests().len(), 1);
    let a = can(approved, "releases promote").await;
    assert_eq!(a["allowed"], true, "{a}");
}
