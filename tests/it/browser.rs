//! Logins against an OpenID Certified provider, the npm package
//! `oidc-provider` (tests/node/provider.mjs), configured to require PKCE
//! and to issue `amr`/`auth_time`: once with a test HTTP client playing the
//! browser, and once in a real browser (Debian's chromium, driven by
//! playwright-core in tests/node/browser.mjs) opened by the real
//! `rack-gateway login` through `$BROWSER`.
//!
//! `scripts/test.sh` installs the tools. Without them the tests skip with a
//! message, except under `CI`, where a missing tool fails them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::*;

const CLIENT_ID: &str = "rack-gateway-certified";
const CLIENT_SECRET: &str = "oidc-certified-secret-7c41";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Upper bound for one step, so a hang fails instead of stalling the suite
/// (not a timing assertion).
const LIMIT: Duration = Duration::from_secs(120);

/// Node.js and tests/node's installed packages, or why they're missing.
struct Tools {
    node: PathBuf,
    dir: PathBuf,
}

/// The tools the test needs; `None` (after saying so) when they are
/// absent outside CI. Under CI a missing tool fails the test.
fn tools(browser: bool) -> Option<Tools> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let node = std::env::var_os("RACK_GATEWAY_TEST_NODE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|p| p.join("node"))
                .find(|p| p.is_file())
        });
    let mut missing = Vec::new();
    if node.is_none() {
        missing.push("node (Node.js 20+)".to_string());
    }
    let mut packages = vec!["oidc-provider"];
    if browser {
        packages.push("playwright-core");
    }
    for p in packages {
        if !dir
            .join("node_modules")
            .join(p)
            .join("package.json")
            .is_file()
        {
            missing.push(format!("the npm package {p} in tests/node"));
        }
    }
    if browser && !Path::new(CHROMIUM).is_file() {
        missing.push(format!("Debian's chromium ({CHROMIUM})"));
    }
    if missing.is_empty() {
        return node.map(|node| Tools { node, dir });
    }
    let what = format!(
        "missing {}: run scripts/test.sh (as root it installs them)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{what}");
    }
    eprintln!("skipping: {what}");
    None
}

/// tests/node/provider.mjs, up; stops when its stdin closes (on drop).
struct CertifiedProvider {
    issuer: String,
    _child: Child,
}

impl CertifiedProvider {
    async fn start(tools: &Tools, redirect_uri: &str) -> CertifiedProvider {
        let mut child = Command::new(&tools.node)
            .arg(tools.dir.join("provider.mjs"))
            .args([redirect_uri, CLIENT_ID, CLIENT_SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("the provider starts")
            .unwrap()
            .expect("the provider prints its issuer");
        // Keep reading: node dies writing to a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        CertifiedProvider {
            issuer: v["issuer"].as_str().unwrap().to_string(),
            _child: child,
        }
    }
}

/// The gateway in front of a mock rack, logging people in at the
/// certified provider.
struct Fx {
    gw: String,
    provider: CertifiedProvider,
    _login: LoginGateway,
}

impl Fx {
    async fn start(tools: &Tools) -> Fx {
        let port = free_port();
        let callback = format!("http://127.0.0.1:{port}/_gateway/login/callback");
        let provider = CertifiedProvider::start(tools, &callback).await;
        let login =
            LoginGateway::start(port, &provider.issuer, "", (CLIENT_ID, CLIENT_SECRET)).await;
        Fx {
            gw: login.gw.clone(),
            provider,
            _login: login,
        }
    }
}

/// A cookie-keeping HTTP client for one loopback provider (its cookies'
/// paths are ignored: every cookie goes with every request).
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    async fn send(&mut self, method: &str, url: &str, form: Option<&str>) -> Resp {
        let cookie = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = vec![("Cookie", cookie.as_str())];
        if form.is_some() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let r = send(method, url, None, &headers, form.unwrap_or("").to_string()).await;
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            if let Some((k, val)) = pair.split_once('=') {
                self.0.insert(k.trim().to_string(), val.to_string());
            }
        }
        r
    }
}

/// `location` made absolute against `base`'s origin.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        return location.to_string();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}{location}")
}

/// The first `action="..."` of a form on `page`.
fn form_action(page: &str) -> String {
    page.split_once("action=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| panic!("no form on the page: {page}"))
}

#[tokio::test]
async fn certified_provider_login_with_pkce_enforced() {
    let Some(tools) = tools(false) else { return };
    let fx = Fx::start(&tools).await;

    // PKCE really is enforced: the same authorization request without a
    // code challenge is refused by the provider.
    let callback = format!("{}/_gateway/login/callback", fx.gw);
    let bare = format!(
        "{}/auth?client_id={CLIENT_ID}&response_type=code&scope=openid%20email&state=s1&nonce=n1&redirect_uri={}",
        fx.provider.issuer,
        urlencode(&callback)
    );
    let r = get(&bare, None).await;
    let refused = location(&r);
    assert!(
        refused.starts_with(&callback) && refused.contains("error=invalid_request"),
        "{} {refused} {}",
        r.status,
        r.text()
    );
    assert!(refused.contains("PKCE"), "{refused}");

    // The gateway's login (allowed control): link, provider login page,
    // consent, back to the gateway, one-time code, token.
    let verifier = rack_gateway::identity::seal::random_token(32);
    let hash = b64(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let mut jar = Jar::default();
    let mut url = format!("{}/_gateway/login/start?cli={hash}", fx.gw);
    let mut method = "GET";
    let mut form: Option<String> = None;
    let mut code = None;
    for _step in 0..20 {
        let r = jar.send(method, &url, form.as_deref()).await;
        (method, form) = ("GET", None);
        if (300..400).contains(&r.status) {
            let to = absolute(&url, &location(&r));
            if to.starts_with(&fx.provider.issuer) && to.contains("/auth?") {
                assert!(to.contains("code_challenge_method=S256"), "{to}");
            }
            url = to;
            continue;
        }
        let page = r.text();
        assert_eq!(r.status, 200, "{url}: {page}");
        if page.contains("<code>") {
            code = Some(
                page.split_once("<code>")
                    .and_then(|(_, rest)| rest.split_once("</code>"))
                    .unwrap()
                    .0
                    .to_string(),
            );
            break;
        }
        let action = absolute(&url, &form_action(&page));
        form = Some(if page.contains("name=\"login\"") {
            "login=alice%40example.com&password=pw".to_string()
        } else {
            String::new()
        });
        (url, method) = (action, "POST");
    }
    let code = code.expect("the gateway shows a one-time code");
    let r = send(
        "POST",
        &format!("{}/_gateway/login/token", fx.gw),
        None,
        &[("Content-Type", "application/json")],
        serde_json::json!({"code": code, "verifier": verifier}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["email"], "alice@example.com");
    let claims = jwt_part(v["token"].as_str().unwrap(), 1);
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]), "{claims}");
    let auth_time = claims["auth_time"].as_i64().expect("auth_time");
    assert!(auth_time <= now() && auth_time > now() - 600, "{claims}");
}

#[tokio::test]
async fn real_browser_login_through_the_cli() {
    let Some(tools) = tools(true) else { return };
    let fx = Fx::start(&tools).await;
    let home = tempfile::tempdir().unwrap();
    let browser_log = home.path().join("browser.log");
    let browser = format!(
        "{} {}",
        tools.node.display(),
        tools.dir.join("browser.mjs").display()
    );
    let child = Command::new(bin())
        .args(["login", "staging", &fx.gw])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("BROWSER", &browser)
        .env("RACK_GATEWAY_TEST_LOGIN", "alice@example.com")
        .env("RACK_GATEWAY_TEST_BROWSER_LOG", &browser_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let steps = || std::fs::read_to_string(&browser_log).unwrap_or_default();
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("login did not finish; browser:\n{}", steps()))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\nbrowser:\n{}",
        steps()
    );
    assert!(
        stdout.contains("Logged in to rack `staging` as alice@example.com"),
        "{stdout}"
    );
    // The browser went through every step and saw the CLI's last page.
    let steps = eventually("the browser's last step", || {
        let s = steps();
        async move {
            match s.contains("DONE:") || s.contains("FAIL:") {
                true => Ok(s),
                false => Err(s),
            }
        }
    })
    .await;
    for step in ["login page", "consent page", "callback http://127.0.0.1:"] {
        assert!(steps.contains(step), "{step}: {steps}");
    }
    // The CLI's callback is on its unguessable path, not a bare /callback.
    assert!(steps.contains("/callback/"), "{steps}");
    assert!(
        steps.contains("DONE: Logged in | ") && steps.contains("alice@example.com"),
        "{steps}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&read(&home.path().join("config/rack-gateway/config.json"))).unwrap();
    assert_eq!(cfg["racks"]["staging"]["email"], "alice@example.com");
}
