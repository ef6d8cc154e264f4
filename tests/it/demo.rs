//! `rack-gateway demo` as a newcomer meets it: the real binary, logged in
//! to with the real `rack-gateway login --no-browser` through the demo's
//! built-in identity provider (a test HTTP client plays the browser), then
//! `whoami` and `racks`; and `login` refusing at once when a gateway has
//! no login configured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::*;

/// Upper bound for one step, so a hang fails instead of stalling the suite
/// (not a timing assertion).
const LIMIT: Duration = Duration::from_secs(120);

/// The CLI with a throwaway HOME and its stdio piped.
fn piped_cli(home: &Path, args: &[&str]) -> Command {
    let mut c = cli(home, args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Text between `start` and `end` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    s.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(v, _)| v)
        .unwrap_or_else(|| panic!("no {start}...{end} in: {s}"))
}

/// Logs in to `rack` with `--no-browser`, playing the person's browser:
/// the link, the demo provider's page, "log in as alice", the gateway's
/// code page; then pastes the code. Returns the CLI's exit code and output.
async fn demo_login(home: &Path, gw: &str, rack: &str) -> (Option<i32>, String, String) {
    let login = PastedLogin::start(
        &mut piped_cli(home, &["login", rack, gw, "--no-browser"]),
        LIMIT,
    )
    .await;
    let link = login.link.clone();

    let r = get(&link, None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let authorize = location(&r);
    let r = get(&authorize, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    assert!(page.contains("DEMO ONLY"), "{page}");
    assert!(page.contains("Log in as alice@example.com"), "{page}");
    let request = between(&page, "name=\"request\" value=\"", "\"").to_string();
    let idp = authorize.split("/authorize").next().unwrap();
    let r = send(
        "POST",
        &format!("{idp}/approve"),
        None,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("request={request}&user=alice%40example.com"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let r = get(&location(&r), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let code = between(&r.text(), "<code>", "</code>").to_string();

    let (status, stdout, stderr) = login.paste(&format!("{code}\n"), LIMIT).await;
    (status.code(), stdout, stderr)
}

async fn run_cli(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let child = piped_cli(home, args).stdin(Stdio::null()).spawn().unwrap();
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn demo_login_through_its_identity_provider_then_whoami() {
    let demo = Proc::demo(&[("PATH", "/usr/bin:/bin")]).await;
    let (gw, printed) = (demo.url(""), demo.log());
    assert!(printed.contains("DEMO identity provider"), "{printed}");
    assert!(
        printed.contains(&format!("rack-gateway login staging {gw}")),
        "{printed}"
    );
    let home = tempfile::tempdir().unwrap();
    let home: PathBuf = home.path().to_path_buf();

    let (code, stdout, stderr) = demo_login(&home, &gw, "staging").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Logged in to rack `staging` as alice@example.com"),
        "{stdout}\n{stderr}"
    );

    let (code, stdout, stderr) = run_cli(&home, &["whoami"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("alice@example.com"), "{stdout}");
    assert!(stdout.contains("deployer"), "{stdout}");

    let (code, stdout, stderr) = run_cli(&home, &["racks"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("staging"), "{stdout}");

    // A second rack, then back: `switch` picks the current one.
    let (code, stdout, stderr) = demo_login(&home, &gw, "production").await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let (code, stdout, stderr) = run_cli(&home, &["switch", "staging"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let (_, stdout, _) = run_cli(&home, &["racks"]).await;
    assert!(stdout.contains("production"), "{stdout}");

    // Passthrough: a stand-in `convox` fetches $RACK_URL/apps as the real
    // CLI would, reaching the demo's staging rack through the gateway.
    let convox = home.join("bin/convox");
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::write(
        &convox,
        "#!/bin/sh\nexec curl -sS --fail-with-body \"$RACK_URL/apps\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&convox, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, stdout, stderr) = run_cli(&home, &["apps"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("\"myapp\""), "{stdout}");
}

/// Refused: a gateway without identity.oidc says so before any link is
/// printed. Allowed control: the demo login above.
#[tokio::test]
async fn login_says_at_once_when_the_gateway_has_no_login() {
    let gw = Gw::start().await;
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_cli(
        home.path(),
        &["login", "staging", &gw.url(""), "--no-browser"],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("does not offer login: login is not configured on this gateway"),
        "{stderr}"
    );
    assert!(!stderr.contains("/_gateway/login/start"), "{stderr}");
    let r = get(&gw.url("/_gateway/login/config"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["configured"], false);
}
