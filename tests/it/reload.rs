//! Hot reload end to end: the real binary watching a config directory (edits,
//! atomic saves, role changes, deletions, refused bad edits, SIGHUP), a
//! reload storm under load in-process, and git mode before any valid config
//! (503 everywhere, status, webhook, settings-file errors).
//!
//! Nothing here asserts on elapsed time: every wait polls for a condition
//! and fails only if it never happens within a generous deadline.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rack_gateway::config::{self, Env};
use rack_gateway::dev::mock_rack::{MockOptions, MockRack};
use rack_gateway::rack::ws::{self, Frame, Opcode, EXIT_MARKER};
use rack_gateway::reload::{DirFetch, Fetch, Outcome, Reloader};
use rack_gateway::server::listener::Running;
use serde_json::Value;

use crate::support::*;

/// The gateway's token issuer (identity.url) in the directory-mode configs.
const ISSUER: &str = "http://127.0.0.1:9";
const KID: &str = "k1";
const APPS: &str = "/apps?";
const PROCESSES: &str = "/apps/myapp/processes?";
const ALICE: &str = "alice@example.com";
const ERIN: &str = "erin@example.com";
const FRANK: &str = "frank@example.com";
const HOOK_SECRET: &str = "webhook-secret-0123456789abcdef";

/// A gateway token for `email`, as the gateway mints after a login.
fn user_token(pem: &str, email: &str) -> String {
    gateway_token(ISSUER, KID, pem, email, now(), Duration::from_secs(3600))
}

/// users.yaml granting each `(email, role)` on `staging/*`.
fn users_yaml(people: &[(&str, &str)]) -> String {
    let mut s = String::from("users:\n");
    for (email, role) in people {
        s += &format!(
            "  {email}:\n    grants:\n      - role: {role}\n        scope: \"staging/*\"\n"
        );
    }
    s
}

/// Removes the line `  - <op>` from a role file's allow list.
fn drop_operation(role_file: &Path, op: &str) {
    let text = read(role_file);
    let line = format!("  - {op}\n");
    assert!(text.contains(&line), "{op} not in {}", role_file.display());
    save(role_file, &text.replacen(&line, "", 1));
}

/// Replaces a file the way most editors save it: a temporary file renamed
/// over it, so the gateway never reads it half-written.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Appends to a file in place (no rename): whenever it is read, it holds
/// either the old text or the new.
fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A directory-mode config repository: one mock rack `staging`, the
/// project's roles, alice as viewer, CI identity `ci-all` (token CI_ALL) as
/// deployer everywhere, and a policy test that alice may list apps. The
/// gateway's signing key comes from `signing_key` (a secret reference).
struct Repo {
    rack: MockRack,
    dir: tempfile::TempDir,
    pem: String,
}

impl Repo {
    async fn new(signing_key: &str) -> Repo {
        init();
        let rack = mock().await;
        let dir = ConfigDir::new()
            .no_rack_discovery()
            .rack("staging", &rack.url())
            .extra(&format!(
                "identity:\n  url: {ISSUER}\n  signing_key:\n    {signing_key}\n  signing_key_id: {KID}\n"
            ))
            .ci(&[("ci-all", CI_ALL, "deployer", "*")])
            .users(&users_yaml(&[(ALICE, "viewer")]))
            .write();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/policy.yaml"),
            "cases:\n  - name: alice lists apps\n    identity: alice@example.com\n    rack: staging\n    operation: apps\n    expect: allow\n",
        )
        .unwrap();
        Repo {
            rack,
            dir,
            pem: rack_gateway::identity::token::generate_private_pem(),
        }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn token(&self, email: &str) -> String {
        user_token(&self.pem, email)
    }
}

impl Proc {
    /// `serve --config <dir> --poll-interval 1h`: only file events (and
    /// SIGHUP) can trigger a reload.
    async fn serve_dir(repo: &Repo, extra_env: &[(&str, &str)]) -> Proc {
        let mut env = vec![("RACK_PW", RACK_PASSWORD)];
        env.extend_from_slice(extra_env);
        Proc::spawn_json(
            &[
                "serve",
                "--config",
                repo.dir.path().to_str().unwrap(),
                "--poll-interval",
                "1h",
            ],
            &env,
        )
        .await
    }

    async fn get_status(&self, path: &str, token: &str) -> u16 {
        get(&self.url(path), Some(token)).await.status
    }

    /// `GET /_gateway/status` from loopback.
    async fn status(&self) -> Value {
        let r = get(&self.url("/_gateway/status"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Waits until `path` answers `token` with `want`.
    async fn until_status(&self, path: &str, token: &str, want: u16, what: &str) {
        eventually(what, || async move {
            match self.get_status(path, token).await {
                s if s == want => Ok(()),
                s => Err(format!("HTTP {s}")),
            }
        })
        .await
    }

    /// Waits until the status shows a current failure whose error contains
    /// `needle`; returns the status.
    async fn until_failure(&self, needle: &str) -> Value {
        eventually(
            &format!("a reload failure naming {needle:?}"),
            || async move {
                let s = self.status().await;
                let current = s["consecutive_failures"].as_u64().unwrap() >= 1;
                match s["last_error"].as_str() {
                    Some(e) if current && e.contains(needle) => Ok(s),
                    _ => Err(s.to_string()),
                }
            },
        )
        .await
    }

    /// The JSON audit records logged so far.
    fn audit_records(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect()
    }

    /// Waits for the audit record of the request answered with `resp`.
    async fn audit_of(&self, resp: &Resp) -> Value {
        let id = resp.headers["request-id"].to_str().unwrap().to_string();
        let id = &id;
        eventually(
            &format!("the audit record of request {id}"),
            || async move {
                self.audit_records()
                    .into_iter()
                    .find(|r| r["request_id"] == id.as_str() && r["event"] == "request")
                    .ok_or_else(|| "no record yet".to_string())
            },
        )
        .await
    }
}

/// A gateway in this process on `dir` and its reloader (polling every
/// `poll`), started with the directory as it is; returns that version too.
async fn with_reloader(dir: &Path, poll: Duration) -> (Running, Reloader, String) {
    let env = Env::from_pairs([("RACK_PW", RACK_PASSWORD)]);
    let cfg = load(dir, &[("RACK_PW", RACK_PASSWORD)]);
    let running = Running::start(&cfg).await.expect("gateway starts");
    let reloader = Reloader::new(
        running.gateway.clone(),
        Arc::new(DirFetch(dir.to_path_buf())),
        env,
        poll,
    );
    let first = DirFetch(dir.to_path_buf()).fetch(None).unwrap().unwrap();
    reloader.started_with(&first, cfg.policy_cases);
    (running, reloader, first.version)
}

fn is_refused(status: u16) -> bool {
    status == 401 || status == 403
}

/// Directory mode with no timer (`--poll-interval 1h`): file events alone
/// apply an added user, an atomic save (write a temp file, rename it over
/// users.yaml), a role losing an operation, and a deleted file.
#[tokio::test]
async fn dir_mode_applies_edits_atomic_saves_role_changes_and_deletions() {
    let repo = Repo::new("env: SIGNING_KEY").await;
    let p = Proc::serve_dir(&repo, &[("SIGNING_KEY", &repo.pem)]).await;
    let (alice, erin, frank) = (repo.token(ALICE), repo.token(ERIN), repo.token(FRANK));
    let v0 = p.status().await["version"].as_str().unwrap().to_string();
    assert!(v0.starts_with("sha256:"), "{v0}");
    assert_eq!(p.get_status(APPS, &alice).await, 200);
    assert_eq!(p.get_status(PROCESSES, &alice).await, 200);
    assert_eq!(p.get_status(APPS, CI_ALL).await, 200);
    let s = p.get_status(APPS, &erin).await;
    assert!(is_refused(s), "erin is not listed yet: HTTP {s}");

    // (a) A user added to users.yaml in place.
    append(
        &repo.path("users.yaml"),
        users_yaml(&[(ERIN, "viewer")]).trim_start_matches("users:\n"),
    );
    assert_eq!(
        read(&repo.path("users.yaml")),
        users_yaml(&[(ALICE, "viewer"), (ERIN, "viewer")])
    );
    p.until_status(APPS, &erin, 200, "erin gets access after being added")
        .await;
    let forwarded = repo.rack.last_request().unwrap();
    assert_eq!(forwarded.header("convox-actor").as_deref(), Some(ERIN));
    let s1 = p.status().await;
    assert_ne!(s1["version"], v0.as_str());
    assert_eq!(s1["reloads_ok"], 1, "{s1}");
    assert_eq!(s1["consecutive_failures"], 0, "{s1}");

    // (b) An atomic save: a new file renamed over users.yaml.
    let s = p.get_status(APPS, &frank).await;
    assert!(is_refused(s), "frank is not listed yet: HTTP {s}");
    let tmp = repo.path("users.yaml.tmp");
    std::fs::write(
        &tmp,
        users_yaml(&[(ALICE, "viewer"), (ERIN, "viewer"), (FRANK, "viewer")]),
    )
    .unwrap();
    std::fs::rename(&tmp, repo.path("users.yaml")).unwrap();
    p.until_status(APPS, &frank, 200, "frank gets access after an atomic save")
        .await;
    assert_eq!(p.get_status(APPS, &erin).await, 200);

    // (c) A role loses an operation.
    drop_operation(&repo.path("roles/viewer.yaml"), "ps");
    p.until_status(PROCESSES, &alice, 403, "viewers lose `ps`")
        .await;
    assert_eq!(p.get_status(APPS, &alice).await, 200, "the rest stays");
    let r = get(&p.url(PROCESSES), Some(&erin)).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // (d) A deleted file: without ci.yaml the CI token is nobody.
    std::fs::remove_file(repo.path("ci.yaml")).unwrap();
    p.until_status(APPS, CI_ALL, 401, "the CI token stops working")
        .await;
    assert_eq!(p.get_status(APPS, &alice).await, 200);

    let s = p.status().await;
    assert_eq!(s["reloads_ok"], 4, "one reload per change: {s}");
    assert_eq!(s["reloads_failed"], 0, "{s}");
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    let logs = p.stop().await;
    assert!(!logs.contains("reload failed"), "{logs}");
}

/// Invalid edits never replace the running config: a YAML syntax error and
/// a failing policy test are refused, requests are answered exactly as
/// before, and the status names the file and line; the fix then applies.
/// Every request's audit record carries the version the status reports.
#[tokio::test]
async fn dir_mode_refuses_invalid_edits_and_applies_the_fix() {
    let repo = Repo::new("env: SIGNING_KEY").await;
    let p = Proc::serve_dir(&repo, &[("SIGNING_KEY", &repo.pem)]).await;
    let (alice, erin) = (repo.token(ALICE), repo.token(ERIN));
    let s0 = p.status().await;
    let v0 = s0["version"].as_str().unwrap().to_string();
    assert_eq!(s0["consecutive_failures"], 0, "{s0}");
    assert_eq!(s0["policy_cases"], 1, "{s0}");
    let r = get(&p.url(APPS), Some(&alice)).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.audit_of(&r).await["config"], v0.as_str());

    // A YAML syntax error (a mapping value where none may be, line 6).
    let broken = format!(
        "{}  {ERIN}:\n    grants: role: viewer\n",
        users_yaml(&[(ALICE, "viewer")])
    );
    save(&repo.path("users.yaml"), &broken);
    let users_file = repo.path("users.yaml").display().to_string();
    let s = p.until_failure(&format!("{users_file}:7:")).await;
    assert_eq!(s["version"], v0.as_str(), "the old version serves: {s}");
    assert_eq!(s["reloads_ok"], 0, "{s}");
    assert!(s["reloads_failed"].as_u64().unwrap() >= 1, "{s}");
    let bad_version = s["last_error_version"].as_str().unwrap().to_string();
    assert_ne!(bad_version, v0);
    let r = get(&p.url(APPS), Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.audit_of(&r).await["config"], v0.as_str());
    let s = p.get_status(APPS, &erin).await;
    assert!(is_refused(s), "erin is still unknown: HTTP {s}");
    // The refusal itself is audited with the version at fault.
    let audits = p.audit_records();
    let reload = audits
        .iter()
        .find(|r| r["event"] == "config-reload" && r["decision"] == "error")
        .unwrap_or_else(|| panic!("no config-reload error record: {audits:?}"));
    assert_eq!(reload["config"], bad_version.as_str());
    assert!(
        reload["reason"].as_str().unwrap().contains(&users_file),
        "{reload}"
    );

    // The fix applies (and adds erin, so the new version is visible).
    save(
        &repo.path("users.yaml"),
        &users_yaml(&[(ALICE, "viewer"), (ERIN, "viewer")]),
    );
    p.until_status(APPS, &erin, 200, "the fixed users.yaml applies")
        .await;
    let s = p.status().await;
    let v1 = s["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v0);
    assert_ne!(v1, bad_version);
    assert_eq!(s["consecutive_failures"], 0, "no current failure: {s}");
    assert_eq!(s["reloads_ok"], 1, "{s}");
    let r = get(&p.url(APPS), Some(&erin)).await;
    assert_eq!(r.status, 200);
    assert_eq!(p.audit_of(&r).await["config"], v1.as_str());

    // A change that breaks a policy test (alice lists apps) is refused.
    drop_operation(&repo.path("roles/viewer.yaml"), "apps");
    let policy_file = repo.path("tests/policy.yaml").display().to_string();
    let s = p.until_failure(&format!("{policy_file}:2:")).await;
    let e = s["last_error"].as_str().unwrap();
    assert!(e.contains("alice lists apps"), "{e}");
    assert!(e.contains("expected allow"), "{e}");
    assert_eq!(s["version"], v1.as_str(), "{s}");
    assert_eq!(s["policy_cases"], 1, "{s}");
    let r = get(&p.url(APPS), Some(&alice)).await;
    assert_eq!(r.status, 200, "apps stay allowed: {}", r.text());
    assert_eq!(p.audit_of(&r).await["config"], v1.as_str());

    // Deleting the test makes the role change valid: it applies.
    std::fs::remove_file(repo.path("tests/policy.yaml")).unwrap();
    p.until_status(
        APPS,
        &alice,
        403,
        "the role change applies once the test is gone",
    )
    .await;
    let s = p.status().await;
    let v2 = s["version"].as_str().unwrap().to_string();
    assert_ne!(v2, v1);
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    assert_eq!(s["policy_cases"], 0, "{s}");
    assert_eq!(s["reloads_ok"], 2, "{s}");
    let r = get(&p.url(APPS), Some(&alice)).await;
    assert_eq!(r.status, 403);
    assert_eq!(p.audit_of(&r).await["config"], v2.as_str());

    let logs = p.stop().await;
    assert!(
        logs.contains("reload failed; keeping the current configuration"),
        "{logs}"
    );
}

/// Rewriting a file with the same content is a reload that changes
/// nothing: the version and the reload counter stay.
#[tokio::test]
async fn dir_mode_rewrite_with_same_content_changes_nothing() {
    let repo = Repo::new("env: SIGNING_KEY").await;
    let p = Proc::serve_dir(&repo, &[("SIGNING_KEY", &repo.pem)]).await;
    let s0 = p.status().await;
    let checked0 = s0["last_check_at"].as_i64().unwrap();
    // Wait for the clock (whole seconds) to move on, so the check the
    // rewrite causes is visible in `last_check_at`.
    eventually("the clock to tick", || async move {
        (now() > checked0)
            .then_some(())
            .ok_or_else(|| now().to_string())
    })
    .await;
    // Rewritten in place, without truncating: the content never changes,
    // but the file is written (a modify event).
    {
        use std::io::Write;
        let users = read(&repo.path("users.yaml"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(repo.path("users.yaml"))
            .unwrap();
        f.write_all(users.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    let s1 = eventually("the rewrite to be checked", || async {
        let s = p.status().await;
        if s["last_check_at"].as_i64().unwrap() > checked0 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    for field in ["version", "loaded_at", "reloads_ok", "reloads_failed"] {
        assert_eq!(s1[field], s0[field], "{field}: {s0} → {s1}");
    }
    assert_eq!(s1["reloads_ok"], 0);
    assert_eq!(s1["consecutive_failures"], 0);
    assert_eq!(p.get_status(APPS, &repo.token(ALICE)).await, 200);
    let logs = p.stop().await;
    assert_eq!(logs.matches("configuration loaded").count(), 0, "{logs}");
}

/// SIGHUP forces a re-validation: a version that failed because of a file
/// outside the config directory (the signing key) is not retried on its
/// own — the config did not change — but is applied after the key is back
/// and the operator sends SIGHUP.
#[tokio::test]
async fn sighup_retries_a_version_that_failed_for_an_outside_reason() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("signing.pem");
    let repo = Repo::new(&format!("file: {}", key_file.display())).await;
    std::fs::write(&key_file, &repo.pem).unwrap();
    let p = Proc::serve_dir(&repo, &[]).await;
    let (alice, erin) = (repo.token(ALICE), repo.token(ERIN));
    let v0 = p.status().await["version"].as_str().unwrap().to_string();
    assert!(is_refused(p.get_status(APPS, &erin).await));

    std::fs::remove_file(&key_file).unwrap();
    save(
        &repo.path("users.yaml"),
        &users_yaml(&[(ALICE, "viewer"), (ERIN, "viewer")]),
    );
    let s = p.until_failure("identity.signing_key").await;
    assert_eq!(s["version"], v0.as_str(), "{s}");
    let wanted = s["last_error_version"].as_str().unwrap().to_string();
    assert_eq!(
        p.get_status(APPS, &alice).await,
        200,
        "the old config serves"
    );
    assert!(is_refused(p.get_status(APPS, &erin).await));

    std::fs::write(&key_file, &repo.pem).unwrap();
    p.signal("-HUP");
    p.until_status(APPS, &erin, 200, "erin gets access after SIGHUP")
        .await;
    let s = p.status().await;
    assert_eq!(s["version"], wanted.as_str(), "{s}");
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    p.stop().await;
}

/// The reloader does not re-validate a version that already failed while
/// the source still holds it (the status keeps showing that failure); but
/// once the source went back to the serving version, the same bad edit
/// made again is a new failure, shown again — not silently ignored while
/// the status says all is well.
#[tokio::test]
async fn a_bad_edit_made_again_after_a_revert_is_reported_again() {
    init();
    let rack = mock().await;
    let dir = staging_only(&rack)
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .write();
    let (running, mut reloader, v0) = with_reloader(dir.path(), Duration::from_secs(3600)).await;
    let status = || running.gateway.reload.status();
    let apps = format!("http://{}{APPS}", running.addr);
    let ci = dir.path().join("ci.yaml");
    let good = read(&ci);
    let bad = format!("{good}{good}");

    std::fs::write(&ci, &bad).unwrap();
    let failed = reloader.reload_once(false).await;
    assert!(
        matches!(&failed, Outcome::Failed(e) if e.contains("duplicate")),
        "{failed:?}"
    );
    assert_eq!(status().consecutive_failures, 1);
    // Still the same bad files: not re-validated, still the current failure.
    assert_eq!(reloader.reload_once(false).await, Outcome::Unchanged);
    let s = status();
    assert_eq!((s.consecutive_failures, s.reloads_failed), (1, 1), "{s:?}");
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);

    // Reverted: the source is the serving version again; no failure.
    std::fs::write(&ci, &good).unwrap();
    assert_eq!(reloader.reload_once(false).await, Outcome::Unchanged);
    assert_eq!(status().consecutive_failures, 0);

    // The same bad edit again.
    std::fs::write(&ci, &bad).unwrap();
    let again = reloader.reload_once(false).await;
    assert!(matches!(&again, Outcome::Failed(_)), "{again:?}");
    let s = status();
    assert_eq!((s.consecutive_failures, s.reloads_failed), (1, 2), "{s:?}");
    assert_eq!(s.version.as_deref(), Some(v0.as_str()));
    // A forced reload (SIGHUP) re-validates it as well.
    let forced = reloader.reload_once(true).await;
    assert!(matches!(&forced, Outcome::Failed(_)), "{forced:?}");
    assert_eq!(status().consecutive_failures, 2);
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);
    running.stop().await;
}

/// Without any file event (no watcher at all), the poll timer alone picks
/// a change up: file events can be missed, the timer cannot.
#[tokio::test]
async fn the_poll_timer_picks_up_changes_without_file_events() {
    init();
    let rack = mock().await;
    let dir = staging_only(&rack)
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .write();
    let (running, reloader, v0) = with_reloader(dir.path(), Duration::from_millis(200)).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(reloader.run(None, stop_rx));
    let apps = format!("http://{}{APPS}", running.addr);
    assert_eq!(get(&apps, Some(CI_STAGING)).await.status, 401);
    append(
        &dir.path().join("ci.yaml"),
        &format!(
            "  ci-staging:\n    token_sha256: {}\n    expires: 2099-01-01\n    grants:\n      - role: viewer\n        scope: \"*\"\n",
            sha(CI_STAGING)
        ),
    );
    eventually("the timer to load the new identity", || async {
        match get(&apps, Some(CI_STAGING)).await.status {
            200 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    })
    .await;
    assert_ne!(running.gateway.reload.status().version, Some(v0));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Reload under load (in-process)

type Chunk = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
type UploadBody = StreamBody<feed::Feed>;

/// A tiny `Stream` over an mpsc receiver, so an upload body can be fed
/// chunk by chunk from the test.
mod feed {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Feed(pub tokio::sync::mpsc::Receiver<super::Chunk>);

    impl futures_util::Stream for Feed {
        type Item = super::Chunk;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

/// The two ci.yaml variants the storm alternates between: CI_ALL (admin
/// everywhere) in both, plus one viewer token that exists only in that
/// variant.
const TOKEN_A: &str = "ci-variant-a-token-DDDDDDDDDDDDDDDDDDDDDDDDDDDD";
const TOKEN_B: &str = "ci-variant-b-token-EEEEEEEEEEEEEEEEEEEEEEEEEEEE";

fn ci_variant(b: bool) -> String {
    let (name, token) = if b {
        ("variant-b", TOKEN_B)
    } else {
        ("variant-a", TOKEN_A)
    };
    crate::support::ci_yaml(&[
        ("ci-all", CI_ALL, "admin", "*"),
        (name, token, "viewer", "*"),
    ])
}

/// 8 clients hammer the gateway (keep-alive connections) while the config
/// is swapped 50 times; an exec session and a streamed upload stay open
/// across every swap. No request fails, each swap takes effect at once,
/// and the rack saw exactly the requests the clients completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_load_fails_no_request() {
    init();
    let rack = MockRack::start(MockOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: RACK_PASSWORD.to_string(),
        tls: None,
        max_recorded: 1_000_000,
    })
    .await
    .unwrap();
    let dir = staging_only(&rack).write();
    let ci = dir.path().join("ci.yaml");
    std::fs::write(&ci, ci_variant(false)).unwrap();
    let env = Env::from_pairs([("RACK_PW", RACK_PASSWORD)]);
    let cfg = load(dir.path(), &[("RACK_PW", RACK_PASSWORD)]);
    let running = Running::start(&cfg).await.expect("gateway starts");
    let addr = running.addr;
    let mut reloader = Reloader::new(
        running.gateway.clone(),
        Arc::new(DirFetch(dir.path().to_path_buf())),
        env,
        Duration::from_secs(3600),
    );
    let snapshot = |d: &Path| config::content_id(&config::snapshot_dir(d).unwrap().files);
    let first = DirFetch(dir.path().to_path_buf())
        .fetch(None)
        .unwrap()
        .unwrap();
    assert_eq!(first.version, snapshot(dir.path()));
    reloader.started_with(&first, cfg.policy_cases);
    assert_eq!(reloader.reload_once(false).await, Outcome::Unchanged);

    // The clients.
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, completed, failures) = (stop.clone(), completed.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let url = format!("http://{addr}{APPS}");
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .header("Authorization", basic(CI_ALL))
                    .header("Accept", "*/*")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let outcome = match tokio::time::timeout(DEADLINE, client.request(req)).await {
                    Err(_) => Err("no response in time".to_string()),
                    Ok(Err(e)) => Err(format!("transport: {e}")),
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                            Ok(b) if status == 200 && b.starts_with(b"[") => Ok(()),
                            Ok(b) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&b))),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                };
                match outcome {
                    Ok(()) => {
                        ok += 1;
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
            ok
        }));
    }

    // A long exec session (the rack echoes what it gets until EOF).
    let auth = basic(CI_ALL);
    let mut session = ws::client_connect(
        addr,
        "/racks/staging/apps/myapp/processes/web-abc12/exec",
        &[("Authorization", &auth), ("Command", "cat")],
    )
    .await
    .unwrap();
    assert_eq!(session.status, 101);

    // A streamed upload fed one chunk per swap.
    let (chunks, rx) = tokio::sync::mpsc::channel::<Chunk>(1);
    let upload = {
        let req = http::Request::post(format!("http://{addr}/apps/myapp/objects/tmp/reload.bin?"))
            .header("Authorization", basic(CI_ALL))
            .header("Accept", "*/*")
            .header("Content-Type", "application/octet-stream")
            .body(StreamBody::new(feed::Feed(rx)))
            .unwrap();
        let client: Client<_, UploadBody> = Client::builder(TokioExecutor::new()).build_http();
        tokio::spawn(async move {
            let resp = client.request(req).await.expect("upload answered");
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        })
    };
    let mut uploaded = ring::digest::Context::new(&ring::digest::SHA256);
    let mut uploaded_len = 0u64;

    let mut probes_ok = 0usize;
    for i in 0..50 {
        // Traffic flows between swaps, so every swap happens under load.
        let before = completed.load(Ordering::Relaxed);
        eventually("client traffic between swaps", || {
            let completed = completed.clone();
            async move {
                let n = completed.load(Ordering::Relaxed);
                (n >= before + 8).then_some(()).ok_or(n.to_string())
            }
        })
        .await;

        let b = i % 2 == 0;
        std::fs::write(&ci, ci_variant(b)).unwrap();
        let want = snapshot(dir.path());
        assert_eq!(
            reloader.reload_once(false).await,
            Outcome::Swapped(want.clone()),
            "swap {i}"
        );
        assert_eq!(running.gateway.reload.status().version, Some(want));

        // The new variant decides the very next request.
        let (live, gone) = if b {
            (TOKEN_B, TOKEN_A)
        } else {
            (TOKEN_A, TOKEN_B)
        };
        let r = get(&format!("http://{addr}/apps/myapp?"), Some(live)).await;
        assert_eq!(r.status, 200, "swap {i}: {}", r.text());
        probes_ok += 1;
        let r = get(&format!("http://{addr}/apps/myapp?"), Some(gone)).await;
        assert_eq!(r.status, 401, "swap {i}: {}", r.text());

        // The session and the upload live on.
        let line = Frame::text(format!("after swap {i}\n"));
        session.send(&line).await.unwrap();
        assert_eq!(recv(&mut session).await, Some(line), "swap {i}");
        let chunk = Bytes::from(vec![i as u8; 16 * 1024 + i]);
        uploaded.update(&chunk);
        uploaded_len += chunk.len() as u64;
        chunks
            .send(Ok(http_body::Frame::data(chunk)))
            .await
            .expect("the upload is still being read");
    }
    let status = running.gateway.reload.status();
    assert_eq!(status.reloads_ok, 50);
    assert_eq!(status.reloads_failed, 0);

    // End the upload and the session; both complete normally.
    drop(chunks);
    let (status, body) = tokio::time::timeout(DEADLINE, upload)
        .await
        .expect("upload completes")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    session.send(&Frame::binary(Vec::new())).await.unwrap();
    let mut rest = Vec::new();
    while let Some(f) = recv(&mut session).await {
        let close = f.opcode == Opcode::Close;
        rest.push(f);
        if close {
            break;
        }
    }
    assert_eq!(
        rest.first(),
        Some(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{rest:?}"
    );
    assert_eq!(
        rest.last().and_then(Frame::close_code),
        Some(1000),
        "{rest:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let mut client_ok = 0;
    for c in clients {
        client_ok += c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(client_ok >= 50 * 8, "{client_ok}");
    assert_eq!(client_ok, completed.load(Ordering::Relaxed));

    // The rack saw exactly what the clients completed, plus the probes,
    // the session and the upload.
    let seen = rack.requests();
    let count = |target: &str| seen.iter().filter(|r| r.target == target).count();
    assert_eq!(count(APPS) as u64, client_ok);
    assert_eq!(count("/apps/myapp?"), probes_ok);
    let sessions: Vec<_> = seen.iter().filter(|r| r.websocket).collect();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].frames_in.len(), 51, "50 lines and the EOF");
    let up: Vec<_> = seen
        .iter()
        .filter(|r| r.target == "/apps/myapp/objects/tmp/reload.bin?")
        .collect();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].body_len, uploaded_len);
    assert_eq!(
        up[0].body_sha256,
        rack_gateway::hex::encode(uploaded.finish().as_ref())
    );
    // Besides: the session (and the gateway's look-ups of the app's
    // services and the target process for the exec policy) and the upload.
    let mut others: Vec<_> = seen
        .iter()
        .filter(|r| r.target != APPS && r.target != "/apps/myapp?")
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    others.sort();
    assert_eq!(
        others,
        [
            "GET /apps/myapp/processes/web-abc12",
            "GET /apps/myapp/processes/web-abc12/exec",
            "GET /apps/myapp/services",
            "POST /apps/myapp/objects/tmp/reload.bin?",
        ],
        "nothing else reached the rack"
    );
    running.stop().await;
}

// ---------------------------------------------------------------------------
// Git mode

/// A git-mode settings file for a repository that cannot be fetched (with
/// the git2 source a nonexistent path; today's stand-in fails every fetch).
fn git_settings(dir: &Path, extra_repository: &str) -> std::path::PathBuf {
    git_mode_settings(dir, "file:///nonexistent/repo.git", extra_repository)
}

async fn serve_git(settings: &Path, env: &[(&str, &str)]) -> Proc {
    Proc::spawn_json(&["serve", "--git", settings.to_str().unwrap()], env).await
}

/// Waits for the first failed fetch; returns the status.
async fn first_failure(p: &Proc) -> Value {
    eventually("the first fetch to fail", || async {
        let s = p.status().await;
        if s["consecutive_failures"].as_u64().unwrap() >= 1 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await
}

/// Git mode with no valid config: the gateway keeps running, refuses all
/// rack traffic with 503 naming the last error (in-band on websockets),
/// and its own health and status endpoints answer.
#[tokio::test]
async fn git_mode_without_a_valid_config_refuses_rack_traffic_with_503() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = git_settings(tmp.path(), "");
    let p = serve_git(&settings, &[]).await;
    let s = first_failure(&p).await;
    assert_eq!(s["version"], Value::Null, "{s}");
    let last_error = s["last_error"].as_str().unwrap().to_string();
    assert!(!last_error.is_empty());
    assert!(
        s["source"]
            .as_str()
            .unwrap()
            .contains("nonexistent/repo.git"),
        "{s}"
    );
    assert!(s["last_check_at"].is_i64(), "{s}");

    for (path, token) in [
        ("/apps?", Some(CI_ALL)),
        ("/racks/staging/apps?", Some("anything-at-all")),
        ("/apps/myapp/releases?", None),
    ] {
        let r = get(&p.url(path), token).await;
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{:?}",
            r.headers
        );
        let e = r.error();
        assert!(
            e.starts_with("gateway: no valid configuration is loaded"),
            "{e}"
        );
        assert!(e.contains(&last_error), "{e} should name {last_error}");
    }
    let r = send(
        "POST",
        &p.url("/apps/myapp/services/web/restart?"),
        Some(CI_ALL),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());

    // A websocket route gets the refusal in-band: ERROR line, exit marker,
    // EOF frame, close.
    let auth = basic(CI_ALL);
    let mut c = ws::client_connect(
        p.addr,
        "/apps/myapp/processes/web-abc12/exec",
        &[("Authorization", &auth), ("Command", "ls")],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101, "refused in-band, not at the handshake");
    let mut frames = Vec::new();
    while let Some(f) = recv(&mut c).await {
        let close = f.opcode == Opcode::Close;
        frames.push(f);
        if close {
            break;
        }
    }
    assert_eq!(frames.len(), 4, "{frames:?}");
    let line = String::from_utf8(frames[0].payload.clone()).unwrap();
    assert_eq!(frames[0].opcode, Opcode::Text);
    assert!(
        line.starts_with("ERROR: gateway: no valid configuration is loaded"),
        "{line:?}"
    );
    assert!(line.contains(&last_error), "{line:?}");
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line:?}"
    );
    assert_eq!(frames[1], Frame::text(format!("{EXIT_MARKER}:1\n")));
    assert_eq!(frames[2], Frame::binary(Vec::new()));
    assert_eq!(frames[3].close_code(), Some(1000));

    // The gateway's own endpoints.
    let r = get(&p.url("/_gateway/healthz"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&p.url("/_gateway/whoami"), Some(CI_ALL)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.error().contains("no valid configuration"), "{}", r.text());
    let r = send("POST", &p.url("/_gateway/webhook"), None, &[], "{}").await;
    assert_eq!(r.status, 404, "no webhook secret configured: {}", r.text());

    // Still running, still failing, still at no version.
    let mut p = p;
    assert!(!p.has_exited(), "the gateway exited");
    let s = p.status().await;
    assert_eq!(s["version"], Value::Null);
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 1);
    let logs = p.stop().await;
    assert!(logs.contains("rack-gateway serving (git mode)"), "{logs}");
}

fn hub_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        rack_gateway::hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// The webhook answers 401 to a missing or wrong `X-Hub-Signature-256` and
/// 202 to a correct one, which makes the gateway fetch now. (Every fetch
/// fails here, so the fetches show as failures in the status; without the
/// webhook, retries back off exponentially — 8 prompt fetches in a row
/// would take minutes.)
#[tokio::test]
async fn webhook_needs_a_valid_signature_and_fetches_now() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = git_settings(tmp.path(), "  webhook_secret:\n    env: HOOK_SECRET\n");
    let p = serve_git(&settings, &[("HOOK_SECRET", HOOK_SECRET)]).await;
    first_failure(&p).await;
    let hook = p.url("/_gateway/webhook");
    let body = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    let good = hub_signature(HOOK_SECRET, body);
    let wrong_secret = hub_signature("another-secret-of-enough-length", body);
    let other_body = hub_signature(HOOK_SECRET, b"{}");
    let hex = good.trim_start_matches("sha256=").to_string();
    let sha1 = format!("sha1={hex}");
    let bad: [(&str, Option<&str>); 5] = [
        ("missing", None),
        ("wrong secret", Some(&wrong_secret)),
        ("another body's", Some(&other_body)),
        ("without the sha256= prefix", Some(&hex)),
        ("sha1", Some(&sha1)),
    ];
    for (what, sig) in bad {
        let headers: Vec<(&str, &str)> = sig
            .map(|s| vec![("X-Hub-Signature-256", s)])
            .unwrap_or_default();
        let r = send("POST", &hook, None, &headers, &body[..]).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(
            r.error().contains("X-Hub-Signature-256"),
            "{what}: {}",
            r.text()
        );
    }

    let deadline = Instant::now() + DEADLINE;
    for round in 0..8 {
        let before = p.status().await["reloads_failed"].as_u64().unwrap();
        let r = send(
            "POST",
            &hook,
            None,
            &[("X-Hub-Signature-256", &good), ("X-GitHub-Event", "push")],
            &body[..],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["status"], "fetch scheduled");
        eventually_by(
            deadline,
            &format!("webhook {round} to cause a fetch"),
            || async {
                let s = p.status().await;
                if s["reloads_failed"].as_u64().unwrap() > before {
                    Ok(())
                } else {
                    Err(s.to_string())
                }
            },
        )
        .await;
    }
    let s = p.status().await;
    assert!(s["consecutive_failures"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(s["version"], Value::Null);
    let logs = p.stop().await;
    assert!(!logs.contains(HOOK_SECRET), "the secret was logged");
    let audits: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["event"] == "webhook")
        .collect();
    assert_eq!(audits.iter().filter(|a| a["status"] == 401).count(), 5);
    assert_eq!(audits.iter().filter(|a| a["status"] == 202).count(), 8);
}

/// Runs `rack-gateway` to completion: (exit code, stderr then stdout).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, stdout, stderr) = crate::support::run(args, env).await;
    (code, stderr + &stdout)
}

/// An invalid settings file stops git mode before it listens: exit 64 and
/// every problem with file:line.
#[tokio::test]
async fn invalid_git_settings_exit_64_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("settings.yaml");
    let name = file.display().to_string();
    let cache = tmp.path().join("cache");
    let cache = cache.display();
    let cases: [(&str, String, &str); 5] = [
        (
            "branch and tag",
            format!("listen: 127.0.0.1:0\nrepository:\n  url: https://git.example.com/acme/config.git\n  branch: main\n  tag: v1\n  cache_dir: {cache}\n"),
            ":3:3: repository: set branch or tag, not both",
        ),
        (
            "password in the URL",
            format!("listen: 127.0.0.1:0\nrepository:\n  url: https://deploy:hunter2-pw@git.example.com/acme/config.git\n  cache_dir: {cache}\n"),
            ":3:3: repository.url must not carry a password",
        ),
        (
            "unknown key",
            format!("listen: 127.0.0.1:0\nrepository:\n  url: https://git.example.com/acme/config.git\n  cache_dir: {cache}\n  bogus: 1\n"),
            ":5:3: unknown field `bogus`",
        ),
        (
            "short webhook secret",
            format!("listen: 127.0.0.1:0\nrepository:\n  url: https://git.example.com/acme/config.git\n  cache_dir: {cache}\n  webhook_secret:\n    env: HOOK_SECRET\n"),
            ":3:3: repository.webhook_secret must be at least 16 characters",
        ),
        (
            "webhook secret not set",
            format!("listen: 127.0.0.1:0\nrepository:\n  url: https://git.example.com/acme/config.git\n  cache_dir: {cache}\n  webhook_secret:\n    env: UNSET_SECRET\n"),
            ":3:3: repository.webhook_secret: environment variable UNSET_SECRET is not set",
        ),
    ];
    for (what, yaml, expected) in cases {
        std::fs::write(&file, yaml).unwrap();
        let (code, out) = run(&["serve", "--git", &name], &[("HOOK_SECRET", "too-short")]).await;
        assert_eq!(code, Some(64), "{what}: {out}");
        assert!(out.contains(&format!("{name}{expected}")), "{what}: {out}");
        assert!(
            !out.contains("hunter2-pw"),
            "{what}: the password was printed: {out}"
        );
        assert!(!out.contains("too-short"), "{what}: {out}");
        assert!(!out.contains("serving"), "{what}: {out}");
    }
    let (code, out) = run(&["serve", "--git", "/nonexistent/settings.yaml"], &[]).await;
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("/nonexistent/settings.yaml: cannot read"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// Git mode end to end: a real repository served by `git daemon` on loopback

/// A working clone that pushes to a bare repository `git daemon` serves.
struct Upstream {
    tmp: tempfile::TempDir,
    _daemon: Daemon,
    url: String,
}

impl Upstream {
    fn new(gateway_yaml: &str, ci: &[(&str, &str)]) -> Upstream {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["home", "work", "srv"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let up = |args: &[&str]| git(tmp.path(), &tmp.path().join("home"), args);
        up(&["init", "-q", "--bare", "-b", "main", "srv/policy.git"]);
        up(&["init", "-q", "-b", "main", "work"]);
        let work = tmp.path().join("work");
        std::fs::write(work.join("gateway.yaml"), gateway_yaml).unwrap();
        copy_roles(&work);
        std::fs::write(work.join("ci.yaml"), ci_yaml(ci)).unwrap();
        let daemon = Daemon::start(&tmp.path().join("srv"));
        let url = format!("git://127.0.0.1:{}/policy.git", daemon.port);
        let u = Upstream {
            tmp,
            _daemon: daemon,
            url,
        };
        u.commit_and_push("initial policy");
        u
    }

    fn work(&self) -> std::path::PathBuf {
        self.tmp.path().join("work")
    }

    fn git(&self, args: &[&str]) {
        git(&self.work(), &self.tmp.path().join("home"), args);
    }

    /// Commits everything and pushes (forced, so a rewritten history lands
    /// too); returns the new commit id.
    fn commit_and_push(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        let srv = self.tmp.path().join("srv/policy.git");
        self.git(&["push", "-q", "-f", srv.to_str().unwrap(), "HEAD:main"]);
        let out = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.work())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// A ci.yaml making each `(name, token)` admin everywhere.
fn ci_yaml(ci: &[(&str, &str)]) -> String {
    let admins: Vec<_> = ci.iter().map(|(n, t)| (*n, *t, "admin", "*")).collect();
    crate::support::ci_yaml(&admins)
}

async fn push_hook(p: &Proc) {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = hub_signature(HOOK_SECRET, body);
    let r = send(
        "POST",
        &p.url("/_gateway/webhook"),
        None,
        &[("X-Hub-Signature-256", &sig)],
        &body[..],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
}

async fn until_version(p: &Proc, commit: &str) -> Value {
    eventually(&format!("commit {commit} to be live"), || async {
        let s = p.status().await;
        if s["version"].as_str() == Some(commit) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await
}

/// Tokens of `deploy-a` (admin from [`GitMode`]'s first commit) and
/// `deploy-b`.
const DEPLOY_A: &str = "token-a-0123456789abcdef0123456789";
const DEPLOY_B: &str = "token-b-0123456789abcdef0123456789";

/// The end-to-end git-mode set-up: a mock rack `staging`, an [`Upstream`]
/// whose first commit makes `deploy-a` admin, and the binary serving it in
/// git mode with the push webhook, its settings (plus `extra_repository`)
/// and cache in `tmp`.
struct GitMode {
    rack: MockRack,
    up: Upstream,
    tmp: tempfile::TempDir,
    p: Proc,
}

impl GitMode {
    async fn start(extra_repository: &str) -> GitMode {
        let rack = mock().await;
        let gateway_yaml = with_lifted_limits(&format!(
            "discover_racks_from_env: false\nracks:\n  staging:\n    url: {}\n    password_env: RACK_PW\n",
            rack.url()
        ));
        let up = Upstream::new(&gateway_yaml, &[("deploy-a", DEPLOY_A)]);
        let tmp = tempfile::tempdir().unwrap();
        let settings = git_mode_settings(
            tmp.path(),
            &up.url,
            &format!("  webhook_secret: {{env: HOOK_SECRET}}\n{extra_repository}"),
        );
        let p = serve_git(
            &settings,
            &[("HOOK_SECRET", HOOK_SECRET), ("RACK_PW", RACK_PASSWORD)],
        )
        .await;
        GitMode { rack, up, tmp, p }
    }
}

/// The GitOps flow through the real binary: the first commit goes live; a
/// merged change (a CI identity added, then one removed) takes effect after
/// the push webhook; a bad commit is refused while the previous config keeps
/// serving; the fix after it is picked up; a force-push to unrelated
/// history is refused.
#[tokio::test]
async fn git_mode_follows_pushes_and_refuses_bad_commits_and_force_pushes() {
    let GitMode {
        rack: _rack,
        up,
        tmp: _tmp,
        p,
    } = GitMode::start("").await;
    let first = up.commit_and_push("touch").to_string();
    push_hook(&p).await;
    let s = until_version(&p, &first).await;
    assert!(
        s["signature"].as_str().unwrap().contains("not required"),
        "{s}"
    );
    p.until_status(APPS, DEPLOY_A, 200, "deploy-a is served")
        .await;
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 401);

    // A merged change: deploy-b added.
    std::fs::write(
        up.work().join("ci.yaml"),
        ci_yaml(&[("deploy-a", DEPLOY_A), ("deploy-b", DEPLOY_B)]),
    )
    .unwrap();
    let second = up.commit_and_push("add deploy-b");
    push_hook(&p).await;
    until_version(&p, &second).await;
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 200);

    // A bad commit: refused, the previous config keeps serving.
    std::fs::write(up.work().join("ci.yaml"), "ci: [\n").unwrap();
    let bad = up.commit_and_push("broken");
    push_hook(&p).await;
    let s = p.until_failure("ci.yaml").await;
    assert_eq!(s["last_error_version"].as_str(), Some(bad.as_str()), "{s}");
    assert_eq!(s["version"].as_str(), Some(second.as_str()), "{s}");
    assert_eq!(p.get_status(APPS, DEPLOY_A).await, 200);
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 200);

    // The fix (which also removes deploy-a) is picked up.
    std::fs::write(
        up.work().join("ci.yaml"),
        ci_yaml(&[("deploy-b", DEPLOY_B)]),
    )
    .unwrap();
    let fixed = up.commit_and_push("fix, remove deploy-a");
    push_hook(&p).await;
    let s = until_version(&p, &fixed).await;
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    assert_eq!(p.get_status(APPS, DEPLOY_A).await, 401);
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 200);

    // A force-push to unrelated history (which would re-admit deploy-a).
    up.git(&["checkout", "-q", "--orphan", "rewritten"]);
    std::fs::write(
        up.work().join("ci.yaml"),
        ci_yaml(&[("deploy-a", DEPLOY_A), ("deploy-b", DEPLOY_B)]),
    )
    .unwrap();
    let forced = up.commit_and_push("rewritten history");
    push_hook(&p).await;
    let s = p.until_failure("descend").await;
    assert_eq!(
        s["last_error_version"].as_str(),
        Some(forced.as_str()),
        "{s}"
    );
    assert_eq!(s["version"].as_str(), Some(fixed.as_str()), "{s}");
    assert_eq!(p.get_status(APPS, DEPLOY_A).await, 401);
}

/// The git cache is damaged mid-run (every file of it overwritten) while
/// the remote is unreachable too: the last good config keeps serving and
/// `status` shows the failure; once the remote is back, the next fetch
/// rebuilds the cache and the pushed commit goes live, with nobody
/// stepping in. The damaged copy is kept beside the cache.
#[tokio::test]
async fn git_mode_repairs_a_damaged_cache_by_itself() {
    let GitMode {
        rack: _rack,
        up,
        tmp,
        p,
    } = GitMode::start("").await;
    let first = up.commit_and_push("touch");
    push_hook(&p).await;
    until_version(&p, &first).await;
    p.until_status(APPS, DEPLOY_A, 200, "deploy-a is served")
        .await;

    std::fs::write(
        up.work().join("ci.yaml"),
        ci_yaml(&[("deploy-a", DEPLOY_A), ("deploy-b", DEPLOY_B)]),
    )
    .unwrap();
    let second = up.commit_and_push("add deploy-b");
    let (srv, away) = (
        up.tmp.path().join("srv/policy.git"),
        up.tmp.path().join("srv/away.git"),
    );
    std::fs::rename(&srv, &away).unwrap();
    scribble(&tmp.path().join("cache"));
    push_hook(&p).await;
    let s = p.until_failure("git").await;
    assert_eq!(s["version"].as_str(), Some(first.as_str()), "{s}");
    assert_eq!(p.get_status(APPS, DEPLOY_A).await, 200);
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 401);

    std::fs::rename(&away, &srv).unwrap();
    push_hook(&p).await;
    let s = until_version(&p, &second).await;
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    assert_eq!(p.get_status(APPS, DEPLOY_B).await, 200);
    assert!(tmp.path().join("cache.damaged").is_dir());
}

/// With `allowed_signers`, an unsigned commit is never loaded (the gateway
/// stays at 503: no valid config), and the same change signed by an
/// allowed key (`git commit -S`, SSH format) goes live.
#[tokio::test]
async fn git_mode_requires_signed_commits_when_configured() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signer");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "policy-bot", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs (scripts/test.sh installs openssh-client)");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("policy-bot@example.com {public}")).unwrap();
    let GitMode {
        rack: _rack,
        up,
        tmp: _tmp,
        p,
    } = GitMode::start(&format!("  allowed_signers: {}\n", signers.display())).await;
    let unsigned = up.commit_and_push("unsigned");
    push_hook(&p).await;
    let s = eventually("the unsigned tip to be refused", || async {
        let s = p.status().await;
        if s["last_error_version"].as_str() == Some(unsigned.as_str()) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert!(
        s["last_error"].as_str().unwrap().contains("not signed"),
        "{s}"
    );
    assert!(s["version"].is_null(), "{s}");
    let r = get(&p.url(APPS), Some(DEPLOY_A)).await;
    assert_eq!(r.status, 503, "{}", r.text());

    // The same tree, signed by the allowed key.
    up.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={}", key.display()),
        "commit",
        "-q",
        "-S",
        "--amend",
        "--allow-empty",
        "-m",
        "signed tip",
    ]);
    let srv = up.tmp.path().join("srv/policy.git");
    up.git(&["push", "-q", "-f", srv.to_str().unwrap(), "HEAD:main"]);
    push_hook(&p).await;
    let s = eventually("the signed tip to be live", || async {
        let s = p.status().await;
        if s["signature"]
            .as_str()
            .is_some_and(|v| v.contains("policy-bot@example.com"))
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert!(s["version"].is_string(), "{s}");
    p.until_status(
        APPS,
        DEPLOY_A,
        200,
        "deploy-a is served from the signed commit",
    )
    .await;
}
