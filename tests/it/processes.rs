//! Processes through the real server against the mock rack: `{pid}` must
//! name an exact pod, file transfers are exec-class, app `system` needs a
//! literal grant, and an attached run's placeholder is bound to its
//! creator by the tag the gateway puts in its `Command`.

use rack_gateway::rack::ws::{self, Frame, EXIT_MARKER};

use crate::support::*;

const ALICE: &str = "tok-alice-procs-0123456789abcdef";
const BOB: &str = "tok-bob-procs-0123456789abcdef";
const OPS: &str = "tok-ops-procs-0123456789abcdef";
const ADMIN: &str = "tok-admin-procs-0123456789abcdef";
const RACK_ADMIN: &str = "tok-rackadmin-procs-0123456789abcdef";
const READER: &str = "tok-reader-procs-0123456789abcdef";
const CHECKER: &str = "tok-checker-procs-0123456789abcdef";

/// Reads files (with the stream permission) but may not exec.
const READER_ROLE: &str = "allow: [files download]\npermissions: [secrets stream]\n";

/// May exec one command on `web`, not any command.
const CHECKER_ROLE: &str = "allow: [exec]\ncommands:\n  allow:\n    web: [bin/check]\n";

const BASE: &str = "/racks/staging/apps/myapp";

async fn start() -> Staging {
    Staging::start(
        &[
            ("alice", ALICE, "deployer", "staging/*"),
            ("bob", BOB, "deployer", "staging/*"),
            ("ops", OPS, "ops", "staging/*"),
            ("admin", ADMIN, "admin", "staging/*"),
            ("rack-admin", RACK_ADMIN, "admin", "staging/system"),
            ("reader", READER, "reader", "staging/*"),
            ("checker", CHECKER, "checker", "staging/*"),
        ],
        &[("reader", READER_ROLE), ("checker", CHECKER_ROLE)],
        "",
    )
    .await
}

async fn stop_process(s: &Staging, token: &str, pid: &str) -> Resp {
    let url = s.url(&format!("{BASE}/processes/{pid}?"));
    send("DELETE", &url, Some(token), &[], "").await
}

/// The `convox run` exec ran to completion with exit code 0.
async fn exec_succeeds(mut c: ws::ClientConn) {
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    let frames = read_until_eof(&mut c).await;
    assert!(
        frames.contains(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{frames:?}"
    );
}

/// `sleep N.<36 digits>`: the shape of a tagged placeholder.
fn is_tagged(command: &str, n: &str) -> bool {
    command
        .strip_prefix(&format!("sleep {n}."))
        .is_some_and(|t| t.len() == 36 && t.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn an_attached_run_is_bound_to_its_creator() {
    let s = start().await;
    let r = s
        .create_process(ALICE, "command", &[("Command", "sleep 3600")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_string();
    let sent = s.rack.requests()[0].header("command").unwrap();
    assert!(is_tagged(&sent, "3600"), "{sent}");

    // Bob holds the same role but did not create it.
    let mut c = s.exec(BOB, &pid, "rake db:migrate").await;
    let text = in_band_text(&mut c).await;
    assert!(
        text.contains("placeholder not created by this identity"),
        "{text}"
    );
    let r = stop_process(&s, BOB, &pid).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r
        .error()
        .contains("placeholder not created by this identity"));

    // Alice: the stock CLI's exec with the real command, then the cleanup.
    exec_succeeds(s.exec(ALICE, &pid, "rake db:migrate").await).await;
    let r = stop_process(&s, ALICE, &pid).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let got = s.rack.requests();
    let exec = got
        .iter()
        .find(|r| r.target == format!("/apps/myapp/processes/{pid}/exec"))
        .expect("alice's exec was forwarded");
    assert_eq!(exec.header("command").as_deref(), Some("rake db:migrate"));
    // Every look-up names the services first, then the exact pod.
    let services = "GET /apps/myapp/services".to_string();
    let lookup = format!("GET /apps/myapp/processes/{pid}");
    assert_eq!(
        targets(&got),
        [
            "POST /apps/myapp/services/command/processes?".to_string(),
            services.clone(),
            lookup.clone(),
            services.clone(),
            lookup.clone(),
            services.clone(),
            lookup.clone(),
            format!("GET /apps/myapp/processes/{pid}/exec"),
            services,
            lookup,
            format!("DELETE /apps/myapp/processes/{pid}?"),
        ]
    );
}

#[tokio::test]
async fn ps_stop_and_exec_reach_anyones_placeholder() {
    let s = start().await;
    let r = s
        .create_process(ALICE, "command", &[("Command", "sleep 60")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_string();
    exec_succeeds(s.exec(ADMIN, &pid, "bin/anything").await).await;
    let r = stop_process(&s, OPS, &pid).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn run_commands_imitating_the_tag_are_refused() {
    let s = start().await;
    let fake = format!("sleep 3600.{}", "4".repeat(36));
    for token in [ALICE, ADMIN] {
        let r = s
            .create_process(token, "command", &[("Command", &fake)])
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r
            .error()
            .contains("imitates the gateway's run placeholder tag"));
    }
    assert!(s.received().is_empty());
    // A detached run keeps its command as typed.
    let r = s
        .create_process(ADMIN, "command", &[("Command", "sleep 1.5")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.rack.requests()[0].header("command").as_deref(),
        Some("sleep 1.5")
    );
}

#[tokio::test]
async fn pids_must_be_exact_pod_names() {
    let s = start().await;
    for bad in ["Web-abc12", "web-", "web,release=R1"] {
        let r = stop_process(&s, ADMIN, bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.error().contains(&format!("{bad:?}")), "{}", r.error());
    }
    assert!(s.received().is_empty());
    // A service name would reach a random pod of that service.
    let r = stop_process(&s, ADMIN, "web").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("is a service name"), "{}", r.error());
    let mut c = s.exec(ADMIN, "worker", "ls").await;
    assert!(in_band_text(&mut c).await.contains("is a service name"));
    let r = get(
        &s.url(&format!("{BASE}/processes/web/files?file=/etc/hosts")),
        Some(ADMIN),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(s.received(), ["GET /apps/myapp/services"; 3]);
    // Control: `convox exec <pid> -- cmd` on an exact pod.
    exec_succeeds(s.exec(ADMIN, "web-abc12", "bin/check").await).await;
}

/// `Entrypoint` makes the rack run the build's entrypoint before the
/// command, which the command rules did not see: only exec of any command
/// (or the caller's own attached run) may send it.
#[tokio::test]
async fn exec_entrypoint_needs_any_command() {
    let s = start().await;
    for value in ["true", "TRUE"] {
        let mut c = s
            .exec_with(CHECKER, "web-abc12", "bin/check", &[("Entrypoint", value)])
            .await;
        let text = in_band_text(&mut c).await;
        assert!(text.contains("Entrypoint header"), "{value}: {text}");
    }
    assert!(!s.received().iter().any(|r| r.ends_with("/exec")));
    // Controls: the stock `convox exec` sends no Entrypoint; `false` is off.
    exec_succeeds(s.exec_with(CHECKER, "web-abc12", "bin/check", &[]).await).await;
    let off = [("Entrypoint", "false")];
    exec_succeeds(s.exec_with(CHECKER, "web-abc12", "bin/check", &off).await).await;
    // Exec of any command may prepend anything.
    exec_succeeds(s.exec(ADMIN, "web-abc12", "bin/check").await).await;
}

#[tokio::test]
async fn files_are_exec_class() {
    let s = start().await;
    let files = |q: &str| s.url(&format!("{BASE}/processes/web-abc12/files?{q}"));
    let r = get(&files("file=/app/log/x.log"), Some(ADMIN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The files permission alone is not enough (refused before any look-up).
    let r = get(&files("file=/app/log/x.log"), Some(READER)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("exec-class"), "{}", r.error());
    // Values the rack's tar would read as options.
    for (method, q) in [
        ("GET", "file=-x"),
        ("GET", "file=%2D%2Dto-command%3Dsh"),
        ("DELETE", "files=/tmp/a,-rf"),
    ] {
        let r = send(method, &files(q), Some(ADMIN), &[], "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.error().contains("starts with \"-\""), "{}", r.error());
    }
    assert_eq!(
        s.received(),
        [
            "GET /apps/myapp/services",
            "GET /apps/myapp/processes/web-abc12",
            "GET /apps/myapp/processes/web-abc12/files?file=/app/log/x.log",
        ]
    );
}

#[tokio::test]
async fn app_system_needs_a_literal_grant() {
    let s = start().await;
    let url = s.url("/racks/staging/apps/system/processes/api-1/exec");
    let r = get(&s.url("/racks/staging/apps/system"), Some(ADMIN)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("app \"system\" is the rack itself"),
        "{}",
        r.error()
    );
    let r = stop_process(&s, ADMIN, "x").await;
    assert_ne!(r.status, 403, "control: admin on other apps");
    s.rack.clear();
    let mut c = ws::client_connect(
        s.running.addr,
        url.trim_start_matches(&format!("http://{}", s.running.addr)),
        &[("Authorization", &basic(ADMIN)), ("Command", "ls")],
    )
    .await
    .unwrap();
    assert!(in_band_text(&mut c).await.contains("is the rack itself"));
    assert!(s.received().is_empty());
    // A grant naming `system` is forwarded (control).
    let r = get(&s.url("/racks/staging/apps/system"), Some(RACK_ADMIN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "system", "{}", r.text());
    assert_eq!(s.received(), ["GET /apps/system"]);
}
