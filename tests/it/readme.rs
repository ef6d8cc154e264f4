//! The README's path, followed literally on the shipped files: the copy
//! commands of "Putting it in front of a real rack" and its secrets step
//! run as written (from the README's own text), then `check` and `serve`
//! on the result; and the role file the README quotes is the shipped one.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The first fenced block after `marker`: (its language, its text).
fn block_after<'a>(text: &'a str, marker: &str) -> (&'a str, &'a str) {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("README lacks {marker:?}"));
    let rest = &text[at..];
    let open = rest.find("```").expect("a fenced block");
    let rest = &rest[open + 3..];
    let (lang, body) = rest.split_once('\n').expect("a fence line");
    let end = body.find("```").expect("a closing fence");
    // Blocks inside a numbered list are indented by three spaces.
    let body = &body[..end];
    (lang.trim(), body)
}

fn unindent(block: &str) -> String {
    block
        .lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_quoted_deployer_role_is_the_shipped_file() {
    let text = readme();
    let (lang, quoted) = block_after(&text, "`roles/deployer.yaml`, as\nshipped:");
    assert_eq!(lang, "yaml");
    let shipped = std::fs::read_to_string(root().join("roles/deployer.yaml")).unwrap();
    assert_eq!(
        quoted, shipped,
        "README's roles/deployer.yaml drifted from the shipped file"
    );
    // The refusal the README shows names the line the allowlist starts on.
    let line = shipped
        .lines()
        .position(|l| l.contains("- bin/pre_release"))
        .expect("deployer allows bin/pre_release")
        + 1;
    assert!(
        text.contains(&format!("(roles/deployer.yaml:{line})")),
        "README cites another line of roles/deployer.yaml than {line}"
    );
}

/// Runs `script` with `sh -e` from the repository root, the binary first
/// on PATH and `home` as HOME; returns its stdout.
fn sh(script: &str, home: &Path) -> String {
    let bin_dir = bin().parent().unwrap().to_path_buf();
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(root())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_readme_path_checks_and_serves_on_the_shipped_files() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let text = readme();
    let section = &text[text.find("## Putting it in front of a real rack").unwrap()..];

    // Step 1, as written, into a scratch directory.
    let (lang, copy) = block_after(section, "1. Create a config repository");
    assert_eq!(lang, "sh");
    let copy = unindent(copy).replace(" config/", &format!(" {}/", config.display()));
    sh(&copy, tmp.path());
    // The one liberty: an ephemeral port instead of the example's 8443.
    let gateway = config.join("gateway.yaml");
    let yaml = std::fs::read_to_string(&gateway).unwrap();
    assert!(yaml.contains("\nlisten: 127.0.0.1:8443\n"), "{yaml}");
    std::fs::write(
        &gateway,
        yaml.replace("listen: 127.0.0.1:8443", "listen: 127.0.0.1:0"),
    )
    .unwrap();
    // The staging rack's CA bundle the README says to put in tls/.
    let ca =
        rcgen::generate_simple_self_signed(vec!["api.staging.example.com".to_string()]).unwrap();
    std::fs::write(config.join("tls/staging-rack-ca.pem"), ca.cert.pem()).unwrap();

    // Without the secrets, check names every missing one in one run.
    let dir = config.to_str().unwrap();
    let (code, stdout, stderr) = run(&["check", dir], &[]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for missing in [
        "RACK_TOKEN_STAGING",
        "credential `rack-production`",
        "credential `token-signing-key`",
        "OIDC_CLIENT_ID",
        "credential `oidc-client-secret`",
    ] {
        let hit = stderr.lines().find(|l| l.contains(missing));
        assert!(
            hit.is_some_and(|l| l.starts_with(&format!("{}:", gateway.display()))),
            "{missing} not reported with file:line:\n{stderr}"
        );
    }
    // Offline, it passes and says what it skipped.
    let (code, stdout, stderr) = run(&["check", "--offline", dir], &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("not checked (--offline): secrets' presence"),
        "{stdout}"
    );

    // Step 2, as written, with the credentials directory in the scratch dir.
    let (lang, secrets) = block_after(section, "2. Give the gateway its secrets");
    assert_eq!(lang, "sh");
    let creds = tmp.path().join("credentials");
    let secrets =
        unindent(secrets).replace("/etc/rack-gateway/credentials", creds.to_str().unwrap());
    let vars = sh(
        &format!("{secrets}\nprintf '%s\\n' \"$RACK_TOKEN_STAGING\" \"$OIDC_CLIENT_ID\" \"$CREDENTIALS_DIRECTORY\""),
        tmp.path(),
    );
    let vars: Vec<&str> = vars.lines().rev().take(3).collect();
    let env = [
        ("RACK_TOKEN_STAGING", vars[2]),
        ("OIDC_CLIENT_ID", vars[1]),
        ("CREDENTIALS_DIRECTORY", vars[0]),
    ];
    assert_eq!(vars[0], creds.to_str().unwrap());

    // Step 4: check, then serve, on exactly those files.
    let (code, stdout, stderr) = run(&["check", dir], &env).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(": ok (2 rack(s), 4 role(s)"), "{stdout}");
    let p = Proc::serve(&config, &[], &env).await;
    let r = get(&p.url("/_gateway/healthz"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.stop().await;
}
