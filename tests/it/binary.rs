//! Tests that run the real `rack-gateway` binary: start-up validation, exit
//! codes, signals, and that no secret ever reaches its output.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn bad_config_exits_64_with_file_line_before_binding() {
    // Bind a port first: if the gateway tried to bind it, it would fail
    // with a different message and exit code.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = write_config(&format!(
        "listen: 127.0.0.1:{port}\nracks:\n  staging:\n    url: ftp://x\n    password_env: NOPE\n  production:\n    url: https://p.example.com\n    password_env: NOPE\n    bogus: 1\n"
    ));
    let (code, stdout, stderr) =
        run(&["serve", "--config", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(64), "stderr: {stderr}");
    assert!(stdout.is_empty());
    let file = dir.path().join("gateway.yaml");
    let file = file.display();
    // The unknown key is a parse error, reported alone with its position.
    assert!(
        stderr.contains(&format!("{file}:9:5: unknown field `bogus`")),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");

    let dir = write_config(&format!(
        "listen: 127.0.0.1:{port}\nracks:\n  staging:\n    url: ftp://x\n    password_env: NOPE\n"
    ));
    let (code, _, stderr) = run(&["serve", "--config", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(64), "stderr: {stderr}");
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("gateway.yaml:"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per problem: {stderr}");
    assert!(
        lines.iter().all(|l| l.contains("gateway.yaml:4:")),
        "{stderr}"
    );
    drop(taken);

    let (code, _, stderr) = run(&["serve", "--config", "/nonexistent/dir"], &[]).await;
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("/nonexistent/dir/gateway.yaml: cannot read"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_command_reports_and_exits_nonzero() {
    let dir = write_config("listen: nonsense\n");
    let (code, _, stderr) = run(&["check", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("gateway.yaml:1:9: listen `nonsense`"),
        "{stderr}"
    );
    let dir = write_config("racks:\n  a:\n    url: https://a.example.com\n    password_env: PW\n");
    let (code, stdout, stderr) =
        run(&["check", dir.path().to_str().unwrap()], &[("PW", "x")]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ok (1 rack(s)"), "{stdout}");
}

#[tokio::test]
async fn secrets_never_reach_responses_or_logs() {
    init();
    let rack = mock().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dir = ConfigDir::new()
        .rack("staging", &rack.url())
        .rack("down", &format!("http://127.0.0.1:{dead_port}"))
        .ci(&[("ci", CI_ALL, "admin", "*")])
        .write();
    let p = spawn_serve(dir.path(), &[("RACK_PW", RACK_PASSWORD)]).await;
    let base = format!("http://{}", p.addr);
    let mut bodies = String::new();
    for (path, token) in [
        ("/racks/staging/apps?", Some(CI_ALL)),
        (
            "/racks/staging/apps/myapp/releases/RMYAPPRELAB?",
            Some(CI_ALL),
        ),
        ("/racks/staging/apps?", Some("wrong-token")),
        ("/racks/staging/apps?", None),
        ("/racks/down/apps?", Some(CI_ALL)),
        ("/racks/staging/nope", Some(CI_ALL)),
        ("/racks/staging/apps/%2e%2e/x", Some(CI_ALL)),
    ] {
        let r = get(&format!("{base}{path}"), token).await;
        bodies.push_str(&format!("{:?}\n{}\n", r.headers, r.text()));
    }
    let r = get(&format!("{base}/racks/down/apps?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.error().contains("rack `down` unavailable"),
        "{}",
        r.text()
    );

    // A refused and an accepted websocket, so session logging runs too.
    for token in ["wrong", CI_ALL] {
        let mut c = rack_gateway::rack::ws::client_connect(
            p.addr,
            "/racks/staging/apps/myapp/processes/web-abc12/exec",
            &[("Authorization", &basic(token)), ("Command", "echo hi")],
        )
        .await
        .unwrap();
        c.send(&rack_gateway::rack::ws::Frame::binary(Vec::new()))
            .await
            .unwrap();
        bodies.push_str(&in_band_text(&mut c).await);
    }

    let logs = p.stop().await;

    // The gateway did log (audit records at least), so the check means something.
    assert!(logs.contains("target") || logs.contains("audit"), "{logs}");
    assert!(logs.matches("decision").count() >= 8, "{logs}");
    let rack_basic = basic(RACK_PASSWORD);
    let rack_b64 = rack_basic.trim_start_matches("Basic ");
    for secret in [
        RACK_PASSWORD,
        CI_ALL,
        rack_b64,
        basic(CI_ALL).trim_start_matches("Basic "),
    ] {
        assert!(!logs.contains(secret), "secret in logs:\n{logs}");
        assert!(!bodies.contains(secret), "secret in a response:\n{bodies}");
    }
}

#[test]
fn readme_route_table_is_current() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = "<!-- routes:begin -->\n";
    let a = readme
        .find(begin)
        .expect("README has the routes:begin marker")
        + begin.len();
    let b = readme
        .find("<!-- routes:end -->")
        .expect("README has the routes:end marker");
    assert!(
        readme[a..b] == rack_gateway::rack::routes::markdown_table(),
        "README route table is stale: regenerate it with `rack-gateway routes --markdown`"
    );
}

/// The README's first command: the demo starts, prints working credentials,
/// and the gateway allows and refuses as it says.
#[tokio::test]
async fn demo_serves_what_it_prints() {
    let demo = Proc::demo(&[]).await;
    let printed = demo.log();
    let deployer = printed
        .lines()
        .find(|l| l.trim_start().starts_with("demo-deployer"))
        .and_then(|l| l.split("RACK_URL=http://convox:").nth(1))
        .and_then(|url| url.split('@').next())
        .unwrap_or_else(|| panic!("demo prints its identities: {printed}"))
        .to_string();
    let base = demo.url("");
    let r = get(&format!("{base}/racks/staging/apps?"), Some(&deployer)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&format!("{base}/racks/production/apps?"), Some(&deployer)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error()
            .contains("on production (no grant there; demo-deployer's entry ci.yaml:"),
        "{}",
        r.text()
    );
    let r = get(&format!("{base}/racks/staging/apps?"), None).await;
    assert_eq!(r.status, 401);
}

/// `token generate` prints a token once and a ci.yaml entry holding only its
/// hash; the entry loads as printed and the token then authenticates.
#[tokio::test]
async fn generated_token_snippet_works_as_printed() {
    let (code, stdout, stderr) = run(
        &[
            "token",
            "generate",
            "--name",
            "deploy-bot",
            "--role",
            "admin",
            "--scope",
            "*",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let token = stdout.lines().nth(1).unwrap().trim().to_string();
    assert!(token.starts_with("rgw_"), "{stdout}");
    let snippet = stdout
        .split("ci.yaml entry (holds only the hash):\n")
        .nth(1)
        .unwrap();
    assert!(!snippet.contains(&token));
    init();
    let rack = mock().await;
    let dir = ConfigDir::new().rack("staging", &rack.url()).write();
    std::fs::write(dir.path().join("ci.yaml"), snippet).unwrap();
    let gw = start_gateway(dir.path()).await;
    let r = get(&format!("http://{}/apps?", gw.addr), Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        rack.requests()[0].header("convox-actor").as_deref(),
        Some("deploy-bot")
    );
}

/// SIGHUP reloads the config directory: an invalid config is refused and the
/// running one keeps serving; a valid change takes effect on the next request.
#[tokio::test]
async fn sighup_reload_keeps_the_good_config() {
    init();
    let rack = mock().await;
    let dir = ConfigDir::new()
        .rack("staging", &rack.url())
        .ci(&[("ci", CI_ALL, "viewer", "*")])
        .write();
    let p = spawn_serve(dir.path(), &[("RACK_PW", RACK_PASSWORD)]).await;
    let base = format!("http://{}", p.addr);
    let hup = |p: &Proc| p.signal("-HUP");
    assert_eq!(
        get(&format!("{base}/apps?"), Some(CI_ALL)).await.status,
        200
    );

    // A broken config (duplicate key) must not replace the running one.
    let ci = dir.path().join("ci.yaml");
    let good_ci = std::fs::read_to_string(&ci).unwrap();
    std::fs::write(&ci, format!("{good_ci}{good_ci}")).unwrap();
    hup(&p);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&format!("{base}/apps?"), Some(CI_ALL)).await.status,
        200
    );

    // A valid change (viewer → admin) applies after the next SIGHUP.
    let promote = |ci: &str| ci.replace("role: viewer", "role: admin");
    let r = send(
        "POST",
        &format!("{base}/apps/myapp/services/web/restart?"),
        Some(CI_ALL),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    std::fs::write(&ci, promote(&good_ci)).unwrap();
    hup(&p);
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = send(
            "POST",
            &format!("{base}/apps/myapp/services/web/restart?"),
            Some(CI_ALL),
            &[],
            "",
        )
        .await
        .status;
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200);
    let logs = p.stop().await;
    assert!(
        logs.contains("reload failed; keeping the current configuration"),
        "{logs}"
    );
    assert!(logs.contains("duplicate mapping key"), "{logs}");
}

/// The shipped unit passes `systemd-analyze verify` (unknown keys, bad
/// values and missing commands are reported), with ExecStart pointed at the
/// binary under test. scripts/test.sh installs systemd for this.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rack-gateway.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rack-gateway serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rack-gateway.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rack-gateway", &bin().display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs the systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rack-gateway"))
        .collect();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(about_unit.is_empty(), "warnings about the unit:\n{stderr}");
}

/// Every printing command, its stdout a pipe whose reader has already
/// gone (`rack-gateway routes | head`), ends quietly with exit 0 — no
/// panic, nothing on stderr. The control: the same commands print when
/// someone reads.
#[test]
fn printing_commands_survive_a_closed_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("signing.pem");
    let valid = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check/valid");
    let audit = tmp.path().join("audit.jsonl");
    std::fs::write(&audit, "").unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["routes"],
        vec!["routes", "--markdown"],
        vec!["man"],
        vec!["completions", "bash"],
        vec![
            "token",
            "generate",
            "--name",
            "bot",
            "--expires",
            "2099-01-01",
        ],
        vec!["token", "keygen", "--out", key.to_str().unwrap()],
        vec!["check", "--offline", valid],
        vec!["can", "alice@example.com", "--list", "--config", valid],
        vec!["audit", "verify", audit.to_str().unwrap()],
    ];
    for args in &commands {
        let _ = std::fs::remove_file(&key);
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(bin())
            .args(args)
            .env_clear()
            .env("HOME", tmp.path())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        // Control: with a reader, the command prints.
        let _ = std::fs::remove_file(&key);
        let out = std::process::Command::new(bin())
            .args(args)
            .env_clear()
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
}
