//! `oidc-provider-mock`, the real OpenID provider the login tests run
//! against, on a loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{answers, free_port, read};

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
}
