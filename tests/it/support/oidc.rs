//! `oidc-provider-mock`, the real OpenID provider the login tests run
//! against, on a loopback port; signing in on its form; and the gateway
//! side of a login: the `identity:` block and a gateway alice can log in
//! to ([`LoginGateway`]), shared by every login test whatever provider it
//! uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rack_gateway::dev::mock_rack::MockRack;
use rack_gateway::server::listener::Running;

use super::{
    answers, free_port, init, load, location, mock, read, send, signing_pem, ConfigDir,
    RACK_PASSWORD,
};

/// A running provider, killed on drop.
pub struct OidcMock {
    pub url: String,
    child: Child,
    /// Its log, shown when it fails to start.
    log: tempfile::NamedTempFile,
}

impl Drop for OidcMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The provider's executable: `$RACK_GATEWAY_TEST_OIDC_MOCK` (set by
/// scripts/test.sh), else the project's `.venv-test`. Never skipped: the
/// login tests are only meaningful against the real provider.
fn oidc_mock_bin() -> PathBuf {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/oidc-provider-mock");
    std::env::var_os("RACK_GATEWAY_TEST_OIDC_MOCK")
        .map(PathBuf::from)
        .into_iter()
        .chain([default])
        .find(|p| p.is_file())
        .expect("run scripts/test.sh: it installs oidc-provider-mock")
}

impl OidcMock {
    /// A provider requiring a nonce, offering `users` (JSON claims, one
    /// `--user-claims` each) on its login form.
    pub async fn start(users: &[&str]) -> OidcMock {
        let bin = oidc_mock_bin();
        // A freed port can be taken again before the provider binds it.
        for _attempt in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                .args(["--require-nonce", "true"])
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.reopen().unwrap()))
                .stderr(Stdio::from(log.reopen().unwrap()));
            for u in users {
                cmd.args(["--user-claims", u]);
            }
            let mut mock = OidcMock {
                url: format!("http://127.0.0.1:{port}"),
                child: cmd.spawn().expect("oidc-provider-mock starts"),
                log,
            };
            let discovery = format!("{}/.well-known/openid-configuration", mock.url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if answers(&discovery).await {
                    return mock;
                }
                if mock.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "oidc-provider-mock did not come up:\n{}",
                    read(mock.log.path())
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!(
                "oidc-provider-mock exited, retrying:\n{}",
                read(mock.log.path())
            );
        }
        panic!("oidc-provider-mock failed to start three times");
    }

    /// Submits the provider's login form at `authorize` as `sub` (one of
    /// its users); returns where the provider redirects (the gateway's
    /// callback).
    pub async fn sign_in(authorize: &str, sub: &str) -> String {
        let r = send(
            "POST",
            authorize,
            None,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("sub={sub}"),
        )
        .await;
        assert_eq!(r.status, 302, "provider form: {}", r.text());
        location(&r)
    }
}

/// The `identity:` block of a gateway.yaml for logins at `gw` through
/// `issuer`: tokens for an hour, signed with `signing.pem`, `keys` (more
/// lines of the block, such as `  signing_key_id: k1\n`), and the client
/// id and secret from `OIDC_CLIENT_ID` and `OIDC_CLIENT_SECRET`.
pub fn identity_yaml(gw: &str, issuer: &str, keys: &str) -> String {
    format!(
        "identity:\n  url: {gw}\n  token_ttl: 1h\n  signing_key:\n    file: signing.pem\n\
         {keys}  oidc:\n    issuer: {issuer}\n    \
         client_id:\n      env: OIDC_CLIENT_ID\n    client_secret:\n      env: OIDC_CLIENT_SECRET\n"
    )
}

/// A gateway in this process that alice (deployer on `staging/*`) logs in
/// to, with its one rack `staging` (a mock rack) and its config directory.
pub struct LoginGateway {
    /// `http://127.0.0.1:<port>`: its address and token issuer.
    pub gw: String,
    pub running: Running,
    pub staging: MockRack,
    pub dir: tempfile::TempDir,
}

impl LoginGateway {
    /// Listens on `port`; logins go through `issuer` as the client
    /// `client` (id, secret); `keys` as for [`identity_yaml`].
    pub async fn start(port: u16, issuer: &str, keys: &str, client: (&str, &str)) -> LoginGateway {
        init();
        let staging = mock().await;
        let gw = format!("http://127.0.0.1:{port}");
        let dir = ConfigDir::new()
            .listen(&format!("127.0.0.1:{port}"))
            .no_rack_discovery()
            .rack("staging", &staging.url())
            .extra(&identity_yaml(&gw, issuer, keys))
            .users("users:\n  alice@example.com:\n    grants:\n      - role: deployer\n        scope: \"staging/*\"\n")
            .write();
        std::fs::write(dir.path().join("signing.pem"), signing_pem()).unwrap();
        let cfg = load(
            dir.path(),
            &[
                ("RACK_PW", RACK_PASSWORD),
                ("OIDC_CLIENT_ID", client.0),
                ("OIDC_CLIENT_SECRET", client.1),
            ],
        );
        let running = Running::start(&cfg).await.expect("gateway starts");
        LoginGateway {
            gw,
            running,
            staging,
            dir,
        }
    }
}
