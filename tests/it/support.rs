//! Test fixtures: mock racks and a real gateway on ephemeral loopback ports,
//! plus small HTTP helpers (a hyper client for ordinary requests, raw TCP
//! for crafted ones).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rack_gateway::config::{self, Env};
use rack_gateway::dev::mock_rack::{MockOptions, MockRack};
use rack_gateway::server::listener::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const RACK_PASSWORD: &str = "rack-password-s3cr3t-9f8e7d";
pub const CI_STAGING: &str = "ci-staging-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
pub const CI_ALL: &str = "ci-all-token-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

pub fn init() {
    rack_gateway::http::tls::install_crypto_provider();
}

pub fn sha(token: &str) -> String {
    rack_gateway::hex::encode(&rack_gateway::identity::credentials::token_sha256(token))
}

pub async fn mock() -> MockRack {
    MockRack::start(MockOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: RACK_PASSWORD.to_string(),
        tls: None,
        max_recorded: 100_000,
    })
    .await
    .expect("mock rack starts")
}

/// The standard setup: racks `staging` and `production` (each its own mock
/// rack), tokens `ci-staging` (staging only) and `ci-all` (every rack).
pub struct Gw {
    pub staging: MockRack,
    pub production: MockRack,
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Gw {
    pub async fn start() -> Gw {
        Self::start_with("").await
    }

    /// `extra` is appended to the generated gateway.yaml.
    pub async fn start_with(extra: &str) -> Gw {
        init();
        let staging = mock().await;
        let production = mock().await;
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             discover_racks_from_env: false\n\
             racks:\n  \
               staging:\n    url: {}\n    password_env: RACK_PW\n  \
               production:\n    url: {}\n    password_env: RACK_PW\n{extra}",
            staging.url(),
            production.url(),
        );
        let dir = write_repo(
            &yaml,
            &[
                ("ci-staging", CI_STAGING, "admin", "staging/*"),
                ("ci-all", CI_ALL, "admin", "*"),
            ],
        );
        let cfg = config::load_dir(dir.path(), &Env::from_pairs([("RACK_PW", RACK_PASSWORD)]))
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let running = Running::start(&cfg).await.expect("gateway starts");
        Gw {
            staging,
            production,
            running,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// Every request either mock rack received.
    pub fn forwarded_count(&self) -> usize {
        self.staging.requests().len() + self.production.requests().len()
    }
}

/// A config repository: `gateway_yaml`, the project's shipped roles, and a
/// ci.yaml with static-token identities `(name, token, role, scope)`.
pub fn write_repo(gateway_yaml: &str, ci: &[(&str, &str, &str, &str)]) -> tempfile::TempDir {
    let dir = write_config(gateway_yaml);
    copy_roles(dir.path());
    let mut yaml = String::from("ci:\n");
    for (name, token, role, scope) in ci {
        yaml.push_str(&format!(
            "  {name}:\n    token_sha256: {}\n    expires: 2099-01-01\n    grants:\n      - role: {role}\n        scope: \"{scope}\"\n",
            sha(token)
        ));
    }
    std::fs::write(dir.path().join("ci.yaml"), yaml).unwrap();
    dir
}

/// Copies the project's `roles/` into a config directory.
pub fn copy_roles(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
    std::fs::create_dir_all(dir.join("roles")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("roles").join(e.file_name())).unwrap();
    }
}

/// A config directory with `yaml` as gateway.yaml. Rate limits are lifted
/// unless `yaml` sets its own: most tests send bursts (and failed logins)
/// from one address and one identity; tests/it/limits.rs tests the limits.
pub fn write_config(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), with_lifted_limits(yaml)).unwrap();
    dir
}

pub fn with_lifted_limits(yaml: &str) -> String {
    if yaml.contains("rate_limits:") {
        return yaml.to_string();
    }
    format!("{yaml}\n{LIFTED_LIMITS}")
}

pub const LIFTED_LIMITS: &str = "rate_limits: {default: 1000000/s, ci: 1000000/s, expensive: 1000000/s, auth_failures: 1000000/s}\n";

pub fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("convox:{token}"))
    )
}

/// A response read whole (for small bodies).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request the way the stock CLI does (Basic auth, `Accept: */*`,
/// `Version: dev`, octet-stream content type).
pub async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("Accept", "*/*")
        .header("User-Agent", "convox.go/dev")
        .header("Version", "dev");
    if let Some(t) = token {
        b = b.header("Authorization", basic(t));
    }
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        b = b.header(*k, *v);
    }
    if !has_ct {
        b = b.header("Content-Type", "application/octet-stream");
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("response within 30s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, token: Option<&str>) -> Resp {
    send("GET", url, token, &[], Bytes::new()).await
}

/// Sends raw bytes and reads until the server closes (requests should say
/// `Connection: close`). Returns the status code (0 if none) and the text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Path of the built binary, for tests that run it as a process.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rack-gateway"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
