//! The people-facing client, run as the real binary with a throwaway HOME
//! and a cleared environment: browser and pasted-code logins against a
//! gateway and a real OpenID provider (the PyPI package
//! `oidc-provider-mock`), the stored logins, and convox passthrough through
//! a stand-in `convox` that records what it was given.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::*;

const CLIENT_ID: &str = "rack-gateway-client-test";
const CLIENT_SECRET: &str = "oidc-client-secret-c11e";
/// The one person the identity provider offers.
const ALICE_CLAIMS: &str = r#"{"sub":"alice","email":"alice@example.com","email_verified":true}"#;
/// A stored token; tokens are opaque to the client.
const TOKEN: &str = "stored.gateway-token_0123456789~abc";
const INSTALL_URL: &str = "https://docs.convox.com/installation/cli";
/// Upper bound for one run of the binary, so a hang fails instead of
/// stalling the suite (not a timing assertion).
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn write_exe(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// What one run of the binary produced.
#[derive(Debug)]
struct Out {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A throwaway HOME with `bin/` (first on PATH), `work/` (the current
/// directory) and the config under `config/` (XDG_CONFIG_HOME).
struct Home {
    dir: tempfile::TempDir,
}

/// The stand-in `convox`: records argv (NUL-separated), RACK_URL, its
/// whole environment, stdin and its pid under `record/`, then acts as
/// `record/mode` says: `exit N`, `curl` (fetch `$RACK_URL/apps` as the
/// real CLI would), `wait` (until SIGTERM, then exit 7) or `die` (SIGKILL
/// itself).
const FAKE_CONVOX: &str = r#"#!/bin/sh
rec="$(dirname "$0")/../record"
mkdir -p "$rec"
printf '%s\0' "$@" > "$rec/argv"
printf '%s' "$RACK_URL" > "$rec/rack_url"
env > "$rec/env"
echo $$ > "$rec/pid"
mode=$(cat "$rec/mode" 2>/dev/null || echo "exit 0")
case "$mode" in
  curl) exec curl -sS --fail-with-body "$RACK_URL/apps" ;;
  wait)
    trap 'kill $sleeper; echo TERM > "$rec/signal"; exit 7' TERM
    sleep 600 & sleeper=$!
    echo ready > "$rec/ready"
    wait $sleeper ;;
  die) kill -KILL $$ ;;
  *) cat > "$rec/stdin"; echo "convox ran"; exit ${mode#exit } ;;
esac
"#;

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        for d in ["bin", "work", "home"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Home { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config_path(&self) -> PathBuf {
        self.path("config/rack-gateway/config.json")
    }

    fn config(&self) -> Value {
        serde_json::from_str(&read(&self.config_path())).unwrap()
    }

    /// Writes the config as the CLI keeps it (owner-only).
    fn write_config(&self, v: &Value) {
        self.write_config_mode(v, 0o700, 0o600);
    }

    fn write_config_mode(&self, v: &Value, dir: u32, file: u32) {
        use std::os::unix::fs::PermissionsExt;
        let parent = self.config_path().parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(dir)).unwrap();
        std::fs::write(self.config_path(), v.to_string()).unwrap();
        std::fs::set_permissions(self.config_path(), std::fs::Permissions::from_mode(file))
            .unwrap();
    }

    /// Installs the stand-in convox, acting as `mode`.
    fn fake_convox(&self, mode: &str) {
        write_exe(&self.path("bin/convox"), FAKE_CONVOX);
        std::fs::create_dir_all(self.path("record")).unwrap();
        std::fs::write(self.path("record/mode"), mode).unwrap();
        for f in ["argv", "rack_url", "stdin", "ready", "signal", "pid", "env"] {
            let _ = std::fs::remove_file(self.path("record").join(f));
        }
    }

    fn recorded(&self, what: &str) -> String {
        read(&self.path("record").join(what))
    }

    fn recorded_argv(&self) -> Vec<String> {
        let raw = self.recorded("argv");
        raw.strip_suffix('\0')
            .map(|s| s.split('\0').map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn convox_ran(&self) -> bool {
        self.path("record/argv").exists()
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = cli(self.dir.path(), args);
        c.envs(env.iter().copied()).current_dir(self.path("work"));
        c
    }

    async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Out {
        let mut child = self
            .command(args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("rack-gateway {args:?} hung"))
            .unwrap();
        Out {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[], b"").await
    }
}

/// A config with `staging` (current, valid 10 days) and `production`
/// (valid for `production_left` seconds, negative = expired) on one
/// gateway, and `old` logged out.
fn two_racks(production_left: i64) -> Value {
    json!({
        "current": "staging",
        "racks": {
            "staging": {"gateway": "https://gw.example.com", "token": TOKEN,
                        "email": "alice@example.com", "expires_at": now() + 10 * 86_400},
            "production": {"gateway": "https://127.0.0.1:9", "token": "prod-token-9",
                           "email": "alice@example.com", "expires_at": now() + production_left},
            "old": {"gateway": "https://old-gw.example.com", "email": "alice@example.com"},
        }
    })
}

#[tokio::test]
async fn convox_gets_exactly_its_arguments_stdin_and_rack_url() {
    let home = Home::new();
    home.write_config(&two_racks(30 * 86_400));
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["apps"], &["apps"], "staging"),
        (&["ps", "-a", "myapp"], &["ps", "-a", "myapp"], "staging"),
        (
            &["run", "command", "rake db:migrate", "-a", "myapp"],
            &["run", "command", "rake db:migrate", "-a", "myapp"],
            "staging",
        ),
        (
            &["--rack", "production", "env", "set", "A=1", "-a", "x"],
            &["env", "set", "A=1", "-a", "x"],
            "production",
        ),
        (&["env", "-a", "x"], &["env", "-a", "x"], "staging"),
        (
            &[
                "-r",
                "production",
                "run",
                "web",
                "--",
                "grep",
                "-r",
                "x y",
                "",
            ],
            &["run", "web", "--", "grep", "-r", "x y", ""],
            "production",
        ),
    ];
    for (args, want, rack) in cases {
        home.fake_convox("exit 0");
        let out = home.run(args).await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(home.recorded_argv(), *want, "{args:?}");
        let url = home.recorded("rack_url");
        let expected = match *rack {
            "staging" => format!("https://convox:{TOKEN}@gw.example.com/racks/staging"),
            _ => "https://convox:prod-token-9@127.0.0.1:9/racks/production".to_string(),
        };
        assert_eq!(url, expected, "{args:?}");
        assert_eq!(out.stdout, "convox ran\n");
        assert!(out.stderr.is_empty(), "no reminder 10+ days out: {out:?}");
    }

    // Stdin, the exit code and the process itself are convox's: the pid
    // convox saw is the one we started (rack-gateway replaced itself).
    home.fake_convox("exit 3");
    let mut child = home
        .command(&["apps"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"line one\nline two\n").await.unwrap();
    drop(input);
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(home.recorded("stdin"), "line one\nline two\n");
    assert_eq!(home.recorded("pid").trim(), pid.to_string());

    // The token travels in RACK_URL only: not in argv, no other variable.
    let argv = home.recorded_argv().join(" ");
    assert!(!argv.contains(TOKEN));
    let env = home.recorded("env");
    let carriers: Vec<&str> = env.lines().filter(|l| l.contains(TOKEN)).collect();
    assert_eq!(carriers.len(), 1, "{env}");
    assert!(carriers[0].starts_with("RACK_URL="), "{env}");
}

#[tokio::test]
async fn signals_and_exit_status_belong_to_convox() {
    let home = Home::new();
    home.write_config(&two_racks(30 * 86_400));

    home.fake_convox("wait");
    let mut child = home
        .command(&["logs", "-a", "myapp"], &[])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let ready = home.path("record/ready");
    let waited = tokio::time::timeout(RUN_LIMIT, async {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the stand-in convox never started");
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(home.recorded("signal").trim(), "TERM");
    assert_eq!(status.code(), Some(7), "convox's own exit code: {status:?}");

    // Killed by a signal: the caller sees the signal, as a shell would
    // (128 + 9 in $?).
    home.fake_convox("die");
    let out = home.run(&["apps"]).await;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
}

#[tokio::test]
async fn the_rack_comes_from_flag_env_project_file_then_current() {
    let home = Home::new();
    home.write_config(&two_racks(30 * 86_400));
    let rack_of = |home: &Home| {
        home.recorded("rack_url")
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    };
    let project = home.path("work/.rack-gateway");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("rack"), "production\n").unwrap();
    let sub = home.path("work/src/deep");
    std::fs::create_dir_all(&sub).unwrap();

    let run_in = |dir: PathBuf, args: Vec<&'static str>, env: Vec<(&'static str, &'static str)>| {
        let home = &home;
        async move {
            home.fake_convox("exit 0");
            let out = home
                .command(&args, &env)
                .current_dir(dir)
                .output()
                .await
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    // The project file is found from a subdirectory...
    run_in(sub.clone(), vec!["apps"], vec![]).await;
    assert_eq!(rack_of(&home), "production");
    // ...the environment beats it...
    run_in(
        sub.clone(),
        vec!["apps"],
        vec![("RACK_GATEWAY_RACK", "staging")],
    )
    .await;
    assert_eq!(rack_of(&home), "staging");
    // ...and --rack beats both.
    run_in(
        sub.clone(),
        vec!["--rack", "production", "apps"],
        vec![("RACK_GATEWAY_RACK", "staging")],
    )
    .await;
    assert_eq!(rack_of(&home), "production");
    std::fs::write(project.join("rack"), "staging").unwrap();
    run_in(sub.clone(), vec!["apps"], vec![]).await;
    assert_eq!(rack_of(&home), "staging");
    // Without any of them, the current rack.
    std::fs::remove_dir_all(&project).unwrap();
    run_in(sub.clone(), vec!["-r", "production", "apps"], vec![]).await;
    assert_eq!(rack_of(&home), "production");
    run_in(sub, vec!["apps"], vec![]).await;
    assert_eq!(rack_of(&home), "staging");

    // A --rack convox would ignore is refused instead of silently using
    // another rack.
    for args in [
        &["deploy", "--rack", "production"][..],
        &["apps", "-r", "production"],
        &["apps", "--rack=production"],
    ] {
        home.fake_convox("exit 0");
        let out = home.run(args).await;
        assert_eq!(out.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains("put it first, as in `rack-gateway --rack <rack>"),
            "{out:?}"
        );
        assert!(!home.convox_ran(), "{args:?}");
    }
}

#[tokio::test]
async fn failures_say_what_to_do_and_never_run_convox() {
    let home = Home::new();
    home.fake_convox("exit 0");

    // Nothing logged in yet.
    let out = home.run(&["apps"]).await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        ["rack-gateway: no rack selected: log in with `rack-gateway login <rack> <gateway-url>`, \
          or choose one with --rack or `rack-gateway switch <rack>`"]
    );

    home.write_config(&two_racks(-3600));
    let expect_line = |out: &Out, wanted: &str| {
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
        assert!(out.stderr.contains(wanted), "{out:?}");
    };
    let out = home.run(&["--rack", "nope", "apps"]).await;
    expect_line(
        &out,
        "not logged in to rack `nope`: run `rack-gateway login nope <gateway-url>`",
    );
    let out = home.run(&["--rack", "old", "apps"]).await;
    expect_line(
        &out,
        "not logged in to rack `old`: run `rack-gateway login old https://old-gw.example.com`",
    );
    let out = home.run(&["--rack", "production", "apps"]).await;
    expect_line(&out, "your login to rack `production` expired 1 hour ago (");
    assert!(
        out.stderr
            .contains("run `rack-gateway login production https://127.0.0.1:9`"),
        "{out:?}"
    );
    let out = home.run(&["--rack", "Bad_Name", "apps"]).await;
    expect_line(&out, "--rack names `Bad_Name`, which is not a rack name");
    let out = home.run(&["--rack", "production", "env"]).await;
    expect_line(&out, "your login to rack `production` expired");
    assert!(out.stdout.is_empty());
    assert!(!home.convox_ran());

    // Logins that can't start: nothing is stored.
    let before = read(&home.config_path());
    let port = free_port();
    for (args, wanted) in [
        (
            vec!["login", "staging", "http://gw.example.com"],
            "plain http is only allowed for 127.0.0.1 or localhost; use https",
        ),
        (
            vec!["login", "Staging", "https://gw.example.com"],
            "names `Staging`, which is not a rack name",
        ),
        (
            vec!["login", "staging", &format!("127.0.0.1:{port}")],
            "cannot reach the gateway at https://127.0.0.1:",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(|a| &**a).collect();
        let out = home.run(&args).await;
        expect_line(&out, wanted);
    }
    let port = format!("http://127.0.0.1:{port}");
    let out = home.run(&["login", "staging", &port]).await;
    expect_line(&out, &format!("cannot reach the gateway at {port}"));
    assert_eq!(read(&home.config_path()), before);

    // No convox on PATH.
    std::fs::remove_file(home.path("bin/convox")).unwrap();
    let out = home.run(&["apps"]).await;
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "rack-gateway: the convox CLI is not on PATH: install the convox CLI: {INSTALL_URL}"
        )
    );
}

#[tokio::test]
async fn env_prints_an_export_line_and_short_lived_tokens_get_a_reminder() {
    let home = Home::new();
    home.write_config(&two_racks(2 * 86_400 - 5400));
    home.fake_convox("exit 0");

    let out = home.run(&["env"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("export RACK_URL='https://convox:{TOKEN}@gw.example.com/racks/staging'\n")
    );
    assert!(out.stderr.is_empty(), "{out:?}");
    // What `eval "$(rack-gateway env)"` leaves in a shell.
    let script = format!(
        "eval \"$('{}' --rack production env)\" && printf %s \"$RACK_URL\"",
        bin().display()
    );
    let shell = tokio::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path("home"))
        .env("XDG_CONFIG_HOME", home.path("config"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shell.stdout),
        "https://convox:prod-token-9@127.0.0.1:9/racks/production"
    );

    // production has under two days left: env, convox commands and whoami
    // say so.
    let reminder = "rack-gateway: your login to rack `production` expires in 1 day 22 hours (";
    let renew = "renew it with `rack-gateway login production https://127.0.0.1:9`";
    for args in [
        &["--rack", "production", "env"][..],
        &["--rack", "production", "apps"],
        &["--rack", "production", "whoami"],
    ] {
        let out = home.run(args).await;
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(reminder), "{args:?}: {out:?}");
        assert!(first.ends_with(renew), "{args:?}: {out:?}");
    }
}

/// A config restored with loose permissions (a backup, a dotfiles sync)
/// is made owner-only again by the next command, which says its tokens may
/// have been read; a private one (the control) is read without a word.
#[tokio::test]
async fn a_config_open_to_others_is_made_private_and_reported() {
    let home = Home::new();
    home.write_config_mode(&two_racks(30 * 86_400), 0o755, 0o644);
    let out = home.run(&["racks"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(mode(&home.config_path()), 0o600);
    assert_eq!(mode(home.config_path().parent().unwrap()), 0o700);
    assert!(
        out.stderr
            .contains("was open to other users (mode 644); it is now 600")
            && out
                .stderr
                .contains("was open to other users (mode 755); it is now 700")
            && out.stderr.contains("log in again"),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains(TOKEN) && !out.stdout.contains(TOKEN),
        "{out:?}"
    );
    let out = home.run(&["racks"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(!out.stderr.contains("other users"), "{out:?}");
}

#[tokio::test]
async fn racks_switch_and_logout_keep_the_file_private() {
    let home = Home::new();
    let out = home.run(&["racks"]).await;
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(out
        .stderr
        .contains("rack-gateway login <rack> <gateway-url>"));

    home.write_config(&two_racks(-60));
    let out = home.run(&["racks"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0])[..],
        [
            "old",
            "alice@example.com",
            "https://old-gw.example.com",
            "logged",
            "out"
        ]
    );
    assert_eq!(
        words(lines[1])[..4],
        [
            "production",
            "alice@example.com",
            "https://127.0.0.1:9",
            "expired"
        ]
    );
    assert_eq!(
        words(lines[2])[..5],
        [
            "*",
            "staging",
            "alice@example.com",
            "https://gw.example.com",
            "expires"
        ]
    );
    let column = |l: &str| l.find("https://").unwrap();
    assert!(
        lines.iter().all(|l| column(l) == column(lines[0])),
        "aligned: {}",
        out.stdout
    );
    assert!(!out.stdout.contains(TOKEN));

    let out = home.run(&["switch", "production"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(home.config()["current"], "production");
    assert_eq!(mode(&home.config_path()), 0o600);
    assert_eq!(mode(home.config_path().parent().unwrap()), 0o700);
    let out = home.run(&["racks"]).await;
    assert!(out.stdout.contains("* production"), "{out:?}");

    let out = home
        .run_with(
            &["switch", "staging"],
            &[("RACK_GATEWAY_RACK", "production")],
            b"",
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("note: RACK_GATEWAY_RACK still selects rack `production` here"),
        "{out:?}"
    );
    let out = home.run(&["switch", "unknown"]).await;
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("not logged in to rack `unknown`"),
        "{out:?}"
    );
    assert_eq!(home.config()["current"], "staging");

    // logout: the current rack by default; the entry stays, the token goes.
    let out = home.run(&["logout"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("Logged out of rack `staging`"),
        "{out:?}"
    );
    let cfg = home.config();
    assert_eq!(cfg["racks"]["staging"]["gateway"], "https://gw.example.com");
    assert!(cfg["racks"]["staging"].get("token").is_none(), "{cfg}");
    assert!(!read(&home.config_path()).contains(TOKEN));
    assert_eq!(cfg["racks"]["production"]["token"], "prod-token-9");
    let out = home.run(&["logout", "production"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(home.config()["racks"]["production"].get("token").is_none());
    let out = home.run(&["logout", "production"]).await;
    assert_eq!(out.code(), Some(0));
    assert!(out.stderr.contains("not logged in to rack `production`"));
    assert_eq!(mode(&home.config_path()), 0o600);
    let leftovers = std::fs::read_dir(home.config_path().parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(leftovers, 1, "no temporary files left behind");
}

#[tokio::test]
async fn a_corrupt_config_is_named_and_left_alone() {
    let home = Home::new();
    home.fake_convox("exit 0");
    let broken = b"{\"current\": \"staging\", \"racks\": {\"staging\": ";
    std::fs::create_dir_all(home.config_path().parent().unwrap()).unwrap();
    std::fs::write(home.config_path(), broken).unwrap();
    let path = home.config_path().display().to_string();
    for args in [
        &["apps"][..],
        &["env"],
        &["racks"],
        &["whoami"],
        &["switch", "staging"],
        &["logout", "staging"],
        &["can", "apps"],
        &["login", "staging", "http://127.0.0.1:9"],
    ] {
        let out = home.run(args).await;
        assert_ne!(out.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.contains(&path), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("remove it and log in again"),
            "{args:?}: {out:?}"
        );
        assert_eq!(std::fs::read(home.config_path()).unwrap(), broken);
    }
    assert!(!home.convox_ran());
}

#[tokio::test]
async fn completions_and_man_page_come_from_the_command_definitions() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = home.run(&["completions", shell]).await;
        assert_eq!(out.code(), Some(0), "{shell}: {out:?}");
        for word in ["rack-gateway", "login", "whoami", "no-browser"] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    let out = home.run(&["man"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains(".TH rack-gateway 1"), "{}", out.stdout);
    for word in ["login", "whoami", "RACK_GATEWAY_RACK"] {
        assert!(out.stdout.contains(word), "man page lacks {word}");
    }
}

/// A gateway with login configured (alice: deployer on staging/*), its
/// staging rack, and the identity provider.
struct Fx {
    gw: String,
    _login: LoginGateway,
    _provider: OidcMock,
}

impl Fx {
    async fn start() -> Fx {
        let provider = OidcMock::start(&[ALICE_CLAIMS]).await;
        let login = LoginGateway::start(
            free_port(),
            &provider.url,
            "  signing_key_id: k1\n",
            (CLIENT_ID, CLIENT_SECRET),
        )
        .await;
        Fx {
            gw: login.gw.clone(),
            _login: login,
            _provider: provider,
        }
    }
}

/// Asserts what a successful login of alice to `rack` left behind.
fn assert_logged_in(home: &Home, rack: &str, gw: &str, out: &Out, before: i64) {
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("Logged in to rack `{rack}` as alice@example.com")),
        "{out:?}"
    );
    let cfg = home.config();
    assert_eq!(cfg["current"], rack);
    let login = &cfg["racks"][rack];
    assert_eq!(login["gateway"], gw);
    assert_eq!(login["email"], "alice@example.com");
    let token = login["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a gateway JWT: {token}");
    assert!(!out.stdout.contains(token) && !out.stderr.contains(token));
    let exp = login["expires_at"].as_i64().unwrap();
    assert!((before + 3600..=now() + 3600).contains(&exp), "{cfg}");
    assert_eq!(mode(&home.config_path()), 0o600);
    assert_eq!(mode(home.config_path().parent().unwrap()), 0o700);
}

#[tokio::test]
async fn browser_login_then_whoami_can_and_convox_through_the_gateway() {
    let fx = Fx::start().await;
    let home = Home::new();
    // The "browser": follows the login link to the provider, submits its
    // form as alice, and follows the redirects back to the CLI's listener.
    let browser = home.path("bin/fake-browser");
    write_exe(
        &browser,
        "#!/bin/sh\n\
         exec >>\"$HOME/browser.log\" 2>&1\n\
         echo \"$1\" > \"$HOME/link\"\n\
         authorize=$(curl -sS -o /dev/null -w '%{redirect_url}' \"$1\")\n\
         curl -sS -L -o \"$HOME/tab.html\" --data sub=alice \"$authorize\"\n",
    );
    let before = now();
    let out = home
        .run_with(
            &["login", "staging", &format!("{}/", fx.gw)],
            &[("BROWSER", browser.to_str().unwrap())],
            b"",
        )
        .await;
    let browser_log = std::fs::read_to_string(home.path("home/browser.log")).unwrap_or_default();
    assert_logged_in(&home, "staging", &fx.gw, &out, before);
    assert!(!out.stderr.contains("note:"), "{out:?}");
    let link = read(&home.path("home/link")).trim().to_string();
    assert!(
        link.starts_with(&format!("{}/_gateway/login/start?cli=", fx.gw))
            && link.contains("&redirect=http%3A%2F%2F127%2E0%2E0%2E1%3A"),
        "{link}"
    );
    assert!(
        out.stderr.contains(&link),
        "the link is printed too: {out:?}"
    );
    let tab = read(&home.path("home/tab.html"));
    assert!(
        tab.contains("Logged in as <b>alice@example.com</b>"),
        "{tab}\n{browser_log}"
    );

    let out = home.run(&["whoami"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("alice@example.com (person)\n"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("rack:    staging via {}", fx.gw)),
        "{out:?}"
    );
    assert!(out.stdout.contains("deployer on staging/*"), "{out:?}");
    assert!(
        out.stderr
            .starts_with("rack-gateway: your login to rack `staging` expires in "),
        "a 1h token: {out:?}"
    );

    let out = home.run(&["can", "apps"]).await;
    assert_eq!(
        (out.code(), out.stdout.starts_with("allow: ")),
        (Some(0), true),
        "{out:?}"
    );
    let out = home.run(&["can", "apps delete", "--app", "myapp"]).await;
    assert_eq!(
        (out.code(), out.stdout.starts_with("deny: ")),
        (Some(1), true),
        "{out:?}"
    );
    let args = [
        "can",
        "run",
        "--app",
        "myapp",
        "--service",
        "command",
        "--command",
    ];
    let out = home.run(&[&args[..], &["rake db:migrate"]].concat()).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let out = home.run(&[&args[..], &["bash"]].concat()).await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    let out = home.run(&["can", "no such operation"]).await;
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("unknown operation"), "{out:?}");

    // The stand-in convox uses RACK_URL as the real one does: the request
    // reaches the rack through the gateway as alice.
    home.fake_convox("curl");
    let out = home.run(&["apps"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("\"myapp\""), "{out:?}");

    // A token the gateway doesn't accept: say how to log in again.
    let mut cfg = home.config();
    cfg["racks"]["staging"]["token"] = json!("not.a.token");
    home.write_config(&cfg);
    let out = home.run(&["whoami"]).await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("the gateway no longer accepts your login to rack `staging` (gateway: ")
            && out
                .stderr
                .contains(&format!("run `rack-gateway login staging {}`", fx.gw)),
        "{out:?}"
    );

    let out = home.run(&["logout"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let out = home.run(&["whoami"]).await;
    assert!(
        out.stderr.contains(&format!(
            "not logged in to rack `staging`: run `rack-gateway login staging {}`",
            fx.gw
        )),
        "{out:?}"
    );
}

/// Any local process or web page can reach the CLI's loopback port, and the
/// first callback ends the login: one to the guessable `/callback` with a
/// bogus code is turned away (404) and the real login still completes.
#[tokio::test]
async fn a_guessed_callback_cannot_end_the_browser_login() {
    let fx = Fx::start().await;
    let home = Home::new();
    // The "browser" is raced by a page that found the port: it sends a
    // bogus code to `/callback` first, then the real login goes through.
    let browser = home.path("bin/fake-browser");
    write_exe(
        &browser,
        "#!/bin/sh
         exec >>\"$HOME/browser.log\" 2>&1
         port=$(echo \"$1\" | sed -n 's/.*redirect=http%3A%2F%2F127%2E0%2E0%2E1%3A\\([0-9]*\\).*/\\1/p')
         curl -sS -o /dev/null -w '%{http_code}' \"http://127.0.0.1:$port/callback?code=bogus\" > \"$HOME/guessed\"
         authorize=$(curl -sS -o /dev/null -w '%{redirect_url}' \"$1\")
         curl -sS -L -o \"$HOME/tab.html\" --data sub=alice \"$authorize\"
",
    );
    let before = now();
    let out = home
        .run_with(
            &["login", "staging", &fx.gw],
            &[("BROWSER", browser.to_str().unwrap())],
            b"",
        )
        .await;
    let browser_log = std::fs::read_to_string(home.path("home/browser.log")).unwrap_or_default();
    assert_eq!(
        read(&home.path("home/guessed")).trim(),
        "404",
        "{out:?}\n{browser_log}"
    );
    assert_logged_in(&home, "staging", &fx.gw, &out, before);
    let tab = read(&home.path("home/tab.html"));
    assert!(
        tab.contains("Logged in as <b>alice@example.com</b>"),
        "{tab}\n{browser_log}"
    );
}

/// Also: a rack name the gateway has no grant for (a typo) still logs in,
/// with a note naming the racks there are.
#[tokio::test]
async fn no_browser_login_reads_the_pasted_code() {
    let fx = Fx::start().await;
    let home = Home::new();
    let before = now();
    let login = PastedLogin::start(
        &mut home.command(&["login", "stagign", &fx.gw, "--no-browser"], &[]),
        RUN_LIMIT,
    )
    .await;
    let link = login.link.clone();
    assert!(
        link.starts_with(&format!("{}/_gateway/login/start?cli=", fx.gw)),
        "{link}"
    );
    assert!(!link.contains("redirect="), "{link}");

    // The person's browser, elsewhere.
    let r = get(&link, None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let callback = OidcMock::sign_in(&location(&r), "alice").await;
    let r = get(&callback, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.text();
    let code = page
        .split_once("<code>")
        .and_then(|(_, rest)| rest.split_once("</code>"))
        .map(|(code, _)| code.to_string())
        .unwrap_or_else(|| panic!("no code on the page: {page}"));

    let (status, stdout, stderr) = login.paste(&format!("  {code}  \n"), RUN_LIMIT).await;
    let out = Out {
        status,
        stdout,
        stderr,
    };
    assert_logged_in(&home, "stagign", &fx.gw, &out, before);
    assert!(
        out.stderr.contains(
            "note: alice@example.com has no grant on a rack named `stagign` at this gateway \
             (racks you can use: staging)"
        ),
        "{out:?}"
    );
    let out = home.run(&["racks"]).await;
    assert!(
        out.stdout.starts_with(&format!(
            "* stagign  alice@example.com  {}  expires ",
            fx.gw
        )),
        "{out:?}"
    );
}

/// A CA and a certificate for 127.0.0.1 it issued, as PEM.
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn https_gateways_are_verified_and_a_private_ca_can_be_trusted() {
    let (ca, cert, key) = private_ca();
    let pki = tempfile::tempdir().unwrap();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(pki.path().join(name), pem).unwrap();
    }
    let gw = Gw::start_with(&format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        pki.path().join("cert.pem").display(),
        pki.path().join("key.pem").display()
    ))
    .await;
    let home = Home::new();
    home.write_config(&json!({
        "current": "staging",
        "racks": {"staging": {"gateway": format!("https://{}", gw.addr()), "token": CI_STAGING}},
    }));

    let out = home.run(&["whoami"]).await;
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("certificate")
            && out
                .stderr
                .contains("set RACK_GATEWAY_CA_FILE to its PEM bundle"),
        "{out:?}"
    );

    let ca_file = pki.path().join("ca.pem");
    let trusted = [("RACK_GATEWAY_CA_FILE", ca_file.to_str().unwrap())];
    let out = home.run_with(&["whoami"], &trusted, b"").await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.starts_with("ci-staging (ci-token)\n"), "{out:?}");
    let out = home.run_with(&["can", "apps"], &trusted, b"").await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.starts_with("allow: "), "{out:?}");
}
