//! The access policy through the real server: every route for every shipped
//! role, the run/exec flows of convox-api.md §5.1–§5.3, and `check` on
//! broken config repositories.
//!
//! Expected outcomes come from tables written here by hand, never from the
//! engine, so a change to roles/*.yaml or to the engine that alters what a
//! role may do fails this file until someone restates it on purpose.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rack_gateway::rack::routes::{RouteMethod, ROUTES};
use rack_gateway::rack::ws::{self, Frame, Opcode, EXIT_MARKER};

use crate::support::*;

// ---------------------------------------------------------------------------
// What each shipped role may do, restated from roles/*.yaml

/// roles/viewer.yaml `allow`.
const VIEWER: &[&str] = &[
    "login",
    "apps",
    "apps info",
    "apps diagnose",
    "apps manifest",
    "apps metrics",
    "balancers",
    "budget show",
    "cost",
    "configs",
    "builds",
    "builds info",
    "releases",
    "releases info",
    "ps",
    "ps info",
    "services",
    "services metrics",
    "resources",
    "rack",
    "rack capacity",
    "rack metrics",
    "rack ps",
    "rack releases",
    "rack resources",
    "instances",
    "certs",
    "registries",
];

/// roles/deployer.yaml `allow`, on top of viewer.
const DEPLOYER: &[&str] = &[
    "build",
    "builds logs",
    "logs",
    "builds import",
    "objects store",
    "releases create",
    "releases promote",
    "configs get",
    "run",
];

/// roles/ops.yaml `allow`, on top of viewer.
const OPS: &[&str] = &[
    "logs",
    "builds logs",
    "rack logs",
    "restart",
    "scale",
    "ps stop",
    "apps cancel",
    "run",
];

/// The built-in `policy.blocked` list: admin (`*`) gets everything else.
const BLOCKED: &[&str] = &[
    "rack update",
    "rack access",
    "rack access key rotate",
    "kubernetes",
    "registry proxy",
    "proxy http",
    "instances keyroll",
    "instances ssh",
    "events send",
];

fn role_allows(role: &str, op: &str) -> bool {
    match role {
        "viewer" => VIEWER.contains(&op),
        "deployer" => VIEWER.contains(&op) || DEPLOYER.contains(&op),
        "ops" => VIEWER.contains(&op) || OPS.contains(&op),
        "admin" => !BLOCKED.contains(&op),
        other => panic!("unknown role {other}"),
    }
}

/// A command each role's allowlist accepts on service `command` (exec into
/// `web-abc12`, a `bin/web` process, still needs `exec`).
fn command_for(role: &str) -> &'static str {
    match role {
        "deployer" => "rake db:migrate",
        "ops" => "rake ops:status",
        "admin" => "rails console",
        _ => "ls",
    }
}

/// What the gateway asks the rack before deciding a `{pid}` route it does
/// not refuse outright: the app's service names (a pid must not be one),
/// then the exact pod when the decision depends on it: exec (an attached
/// run's placeholder is authorised by `run`), file transfers (exec-class),
/// and ps stop for roles that may stop only `convox run` placeholders.
fn expected_lookups(role: &str, op: &str) -> Vec<String> {
    let exec_or_run = role_allows(role, "exec") || role_allows(role, "run");
    let (services, process) = match op {
        "exec" => (exec_or_run, exec_or_run),
        "ps stop" => (
            role_allows(role, "ps stop") || role_allows(role, "run"),
            !role_allows(role, "ps stop") && role_allows(role, "run"),
        ),
        "files download" | "files upload" | "files delete" => {
            let asks = role_allows(role, op) && exec_or_run;
            (asks, asks)
        }
        _ => (false, false),
    };
    let mut out = Vec::new();
    if services {
        out.push("GET /apps/myapp/services".to_string());
    }
    if process {
        out.push("GET /apps/myapp/processes/web-abc12".to_string());
    }
    // `certs delete` deletes any rack secret by name: the id must be one
    // the rack lists as a certificate.
    if op == "certs delete" && role_allows(role, op) {
        out.push("GET /certificates".to_string());
    }
    out
}

// ---------------------------------------------------------------------------
// Fixtures

/// Reads what could be an in-band refusal: frames until close, but stops
/// early at a first frame that is not an `ERROR:` line (a stream that was
/// forwarded by mistake may never close), or when nothing arrives.
async fn refusal_frames(c: &mut ws::ClientConn) -> Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let f = match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Err(_) => return Err(format!("stalled after {frames:?}")),
        };
        let done =
            f.opcode == Opcode::Close || (frames.is_empty() && !f.payload.starts_with(b"ERROR: "));
        frames.push(f);
        if done {
            break;
        }
    }
    Ok(frames)
}

/// The in-band refusal the stock CLI prints: `ERROR: <msg>` text frame,
/// the exit-code marker for exec-like streams, the empty binary EOF frame,
/// then close. Returns the message.
fn in_band_refusal(frames: &[Frame], exit_marker: bool) -> Result<String, String> {
    let msg = match frames.first() {
        Some(f) if f.opcode == Opcode::Text => String::from_utf8_lossy(&f.payload).into_owned(),
        _ => return Err(format!("no ERROR frame first: {frames:?}")),
    };
    let Some(line) = msg
        .strip_prefix("ERROR: ")
        .and_then(|m| m.strip_suffix('\n'))
    else {
        return Err(format!("not an ERROR line: {msg:?}"));
    };
    let mut rest = frames[1..].iter();
    if exit_marker && rest.next() != Some(&Frame::text(format!("{EXIT_MARKER}:1\n"))) {
        return Err(format!("no exit marker: {frames:?}"));
    }
    if rest.next() != Some(&Frame::binary(Vec::new())) {
        return Err(format!("no empty binary EOF frame: {frames:?}"));
    }
    match rest.next() {
        Some(f) if f.opcode == Opcode::Close => {}
        _ => return Err(format!("no close frame: {frames:?}")),
    }
    if rest.next().is_some() || line.contains('\n') {
        return Err(format!("extra frames or lines: {frames:?}"));
    }
    Ok(line.to_string())
}

// ---------------------------------------------------------------------------
// Role × operation matrix

/// A value for a path parameter the mock rack knows (seeded app, process,
/// build, release, resource), or any well-formed string.
fn sample(param: &str, operation: &str) -> &'static str {
    match param {
        "app" => "myapp",
        // run on `command`: the service every shipped role with run may use.
        "service" if operation == "run" => "command",
        "service" => "web",
        "pid" => "web-abc12",
        "build" => "BMYAPPBLDAA",
        "release" => "RMYAPPRELAB",
        "resource" => "db",
        "key" => "tmp/0123456789abcdef.tgz",
        "config" => "cli-env-mask",
        "instance" => "i-0123456789",
        "certificate" => "cert-1234",
        "registry" => "registry.example.com",
        "host" => "db.myapp.mock",
        "port" => "5432",
        "path" => "api/v1/namespaces",
        other => panic!("no sample for path parameter {other}"),
    }
}

/// The route pattern with its parameters filled in.
fn fill(pattern: &str, operation: &str) -> String {
    pattern
        .split('/')
        .map(|seg| match seg.strip_prefix('{') {
            Some(inner) => {
                let (name, suffix) = inner.split_once('}').unwrap();
                format!("{}{suffix}", sample(name.trim_end_matches('*'), operation))
            }
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Sends one route's request as `role`; returns the mismatches found.
async fn check_route(role: &str, method: RouteMethod, pattern: &str, op: &str) -> Vec<String> {
    let token = role_token(role);
    let s = Staging::start(&[("who", &token, role, "staging/*")], &[], "").await;
    let path = fill(pattern, op);
    let allowed = role_allows(role, op);
    let lookup: Vec<String> = if op == "proxy" && allowed {
        // The tunnel target is vetted against the resources of the apps the
        // role may `resources info`, in the rack's order, up to the match.
        [
            "GET /apps",
            "GET /apps/billing/resources",
            "GET /apps/myapp/resources",
        ]
        .map(String::from)
        .to_vec()
    } else {
        expected_lookups(role, op)
    };
    let label = format!("{role} {} {pattern} ({op})", method.as_str());
    let mut problems = Vec::new();
    let mut fail = |what: String| problems.push(format!("{label}: {what}"));

    if method == RouteMethod::Socket {
        let auth = basic(&token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if matches!(op, "exec" | "instances ssh") {
            headers.push(("Command", command_for(role)));
        }
        let mut c = ws::client_connect(s.running.addr, &format!("/racks/staging{path}"), &headers)
            .await
            .unwrap();
        if c.status != 101 {
            fail(format!("handshake status {}", c.status));
            return problems;
        }
        let mut want = lookup.clone();
        if allowed {
            want.push(format!("GET {path}"));
            if !s.rack.requests().last().is_some_and(|r| r.websocket) {
                fail("the rack did not upgrade".into());
            }
        } else {
            let exit_marker = matches!(op, "exec" | "instances ssh");
            match refusal_frames(&mut c)
                .await
                .and_then(|frames| in_band_refusal(&frames, exit_marker))
            {
                Ok(msg) if msg.starts_with("gateway: denied: ") => {}
                Ok(msg) => fail(format!("refused without a denial: {msg}")),
                Err(e) => fail(e),
            }
        }
        let got = s.received();
        if got != want {
            fail(format!("rack received {got:?}, expected {want:?}"));
        }
        return problems;
    }

    let http_method = match method {
        RouteMethod::Get | RouteMethod::Any => "GET",
        RouteMethod::Post => "POST",
        RouteMethod::Put => "PUT",
        RouteMethod::Delete => "DELETE",
        RouteMethod::Head => "HEAD",
        RouteMethod::Options => "OPTIONS",
        RouteMethod::Socket => unreachable!(),
    };
    let mut headers = Vec::new();
    if op == "run" {
        headers.push(("Command", "sleep 3600"));
    }
    let r = send(
        http_method,
        &s.url(&format!("/racks/staging{path}?")),
        Some(&token),
        &headers,
        "",
    )
    .await;
    let mut want = lookup;
    if allowed {
        if op == "releases create" {
            // A release creation is decided on the env the rack will end up
            // with: the newest release's (the rack's fork base), diffed
            // against the active release (here the same one).
            want.extend(
                [
                    "GET /apps/myapp/releases?limit=1",
                    "GET /apps/myapp/releases/RMYAPPRELAB",
                    "GET /apps/myapp",
                ]
                .map(String::from),
            );
        }
        want.push(format!("{http_method} {path}?"));
        // The status must be the rack's: ask a fresh mock directly.
        let direct = mock().await;
        let d = send(
            http_method,
            &format!("{}{path}?", direct.url()),
            Some(RACK_PASSWORD),
            &headers,
            "",
        )
        .await;
        if r.status != d.status || r.text().contains("gateway:") {
            fail(format!(
                "status {} (the rack answers {}): {}",
                r.status,
                d.status,
                r.text()
            ));
        }
    } else if r.status != 403 {
        fail(format!("status {} (expected 403): {}", r.status, r.text()));
    } else if http_method != "HEAD" {
        let body: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
        let error = body
            .as_ref()
            .and_then(|b| b["error"].as_str())
            .unwrap_or("");
        if !error.starts_with("gateway: denied: ") || error.contains('\n') {
            fail(format!("denial body {:?}", r.text()));
        }
        // A refusal by the role names the grant it considered, with its line.
        if error.contains("(granted there: ")
            && !error.ends_with(&format!("(granted there: {role} ci.yaml:6)"))
        {
            fail(format!("denial without its grant's location: {error:?}"));
        }
        if r.headers["content-type"] != "application/json" {
            fail(format!("content type {:?}", r.headers["content-type"]));
        }
    }
    let got = s.received();
    if got != want {
        fail(format!("rack received {got:?}, expected {want:?}"));
    }
    problems
}

async fn matrix(role: &str) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for route in ROUTES.iter().filter(|r| r.operation != "probe") {
        problems.extend(check_route(role, route.method, route.pattern, route.operation).await);
        checked += 1;
    }
    assert!(checked > 90, "only {checked} routes");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn proxy_reaches_only_resources_of_apps_in_scope() {
    init();
    let token = role_token("tunnel");
    let rack = mock().await;
    // The tunnel is a rack-wide operation; `resources info` only on myapp.
    let dir = staging_only(&rack)
        .ci(&[("who", &token, "tunnel", "staging/*")])
        .role("tunnel", "allow: [proxy]\n")
        .role("reader", "allow: [resources info]\n")
        .write();
    let ci = dir.path().join("ci.yaml");
    let more = "      - role: reader\n        scope: \"staging/myapp\"\n";
    std::fs::write(&ci, read(&ci) + more).unwrap();
    let s = Staging {
        rack,
        running: start_gateway(dir.path()).await,
        dir,
    };
    let auth = basic(&token);
    let headers = [("Authorization", auth.as_str())];

    let mut c = ws::client_connect(
        s.running.addr,
        "/racks/staging/proxy/db.billing.mock/5432",
        &headers,
    )
    .await
    .unwrap();
    let msg = in_band_refusal(&refusal_frames(&mut c).await.unwrap(), false).unwrap();
    assert!(
        msg.starts_with("gateway: denied: \"proxy\" (convox proxy, resources proxy, rack resources proxy): db.billing.mock:5432 is not a resource of an app"),
        "{msg}"
    );
    assert_eq!(s.received(), ["GET /apps", "GET /apps/myapp/resources"]);

    let c = ws::client_connect(
        s.running.addr,
        "/racks/staging/proxy/db.myapp.mock/5432",
        &headers,
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    assert_eq!(
        s.received().last().map(String::as_str),
        Some("GET /proxy/db.myapp.mock/5432")
    );
}

#[tokio::test]
async fn matrix_viewer() {
    matrix("viewer").await;
}

#[tokio::test]
async fn matrix_ops() {
    matrix("ops").await;
}

#[tokio::test]
async fn matrix_deployer() {
    matrix("deployer").await;
}

#[tokio::test]
async fn matrix_admin() {
    matrix("admin").await;
}

#[test]
fn hand_written_tables_name_real_operations() {
    let ops = rack_gateway::rack::routes::operations();
    for op in VIEWER.iter().chain(DEPLOYER).chain(OPS).chain(BLOCKED) {
        assert!(ops.contains(op), "{op} is not an operation");
    }
}

#[tokio::test]
async fn rack_scope_does_not_leak() {
    let gw = Gw::start().await;
    for (path, op, typed) in [
        ("/racks/production/apps?", "apps", "convox apps"),
        (
            "/racks/production/system?",
            "rack",
            "convox rack, version, rack update/params",
        ),
    ] {
        let r = get(&gw.url(path), Some(CI_STAGING)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(
            r.error(),
            format!("gateway: denied: ci-staging may not \"{op}\" ({typed}) on production (no grant there; ci-staging's entry ci.yaml:3)")
        );
    }
    let r = get(&gw.url("/racks/production/apps/myapp?"), Some(CI_STAGING)).await;
    assert_eq!(
        r.error(),
        "gateway: denied: ci-staging may not \"apps info\" (convox apps info/params, releases, apps export) on production/myapp (no grant there; ci-staging's entry ci.yaml:3)"
    );
    assert_eq!(gw.forwarded_count(), 0);
}

#[tokio::test]
async fn app_scope_does_not_leak() {
    let token = role_token("billing");
    let s = Staging::start(
        &[("billing-ci", &token, "deployer", "staging/billing")],
        &[],
        "",
    )
    .await;
    let base = "/racks/staging";
    // The CLI's version probe and the app's own routes pass...
    for path in ["/system?", "/apps/billing?", "/apps/billing/processes?"] {
        let r = get(&s.url(&format!("{base}{path}")), Some(&token)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // ...other apps and rack-wide listings do not.
    for path in [
        "/apps?",
        "/apps/myapp?",
        "/apps/myapp/processes?",
        "/instances?",
    ] {
        let r = get(&s.url(&format!("{base}{path}")), Some(&token)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    assert_eq!(
        s.received(),
        [
            "GET /system?",
            "GET /apps/billing?",
            "GET /apps/billing/processes?"
        ]
    );
}

// ---------------------------------------------------------------------------
// run and exec flows

const DEPLOYER_TOKEN: &str = "tok-deployer-flows-0123456789abcdef";
const ADMIN_TOKEN: &str = "tok-admin-flows-0123456789abcdef";
const IMAGER_TOKEN: &str = "tok-imager-flows-0123456789abcdef";

/// A role that may run anything and send the `Image` header, nothing else.
const IMAGER_ROLE: &str =
    "allow: [run]\ncommands:\n  allow:\n    \"*\": [\"**\"]\nrun_headers: [Image]\n";

async fn flows() -> Staging {
    Staging::start(
        &[
            ("deployer-ci", DEPLOYER_TOKEN, "deployer", "staging/*"),
            ("admin-ci", ADMIN_TOKEN, "admin", "staging/*"),
            ("imager-ci", IMAGER_TOKEN, "imager", "staging/*"),
        ],
        &[("imager", IMAGER_ROLE)],
        "",
    )
    .await
}

const BASE: &str = "/racks/staging/apps/myapp";

/// The line deny reasons cite for the deployer's `command` allowlist in
/// roles/deployer.yaml: its first pattern.
fn deployer_commands_line() -> usize {
    let text = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("roles/deployer.yaml"));
    text.lines()
        .position(|l| l.contains("- bin/pre_release"))
        .expect("deployer allows bin/pre_release")
        + 1
}

/// The refusal of `rails console` as the person reads it: the commands
/// that send it, one line of at most 200 characters (the allowlist cut
/// between its items), the rule's file:line last.
fn rails_console_denial(typed: &str) -> String {
    let line = format!(
        "gateway: denied: \"run\" ({typed}) of \"rails console\" on service command: deployer may run only bin/pre_release, rake db:migrate, rake stripe:prepare, … (roles/deployer.yaml:{})",
        deployer_commands_line()
    );
    assert!(line.chars().count() <= 200, "{line}");
    line
}

#[tokio::test]
async fn attached_run_with_an_allowed_command() {
    let s = flows().await;
    let r = s
        .create_process(DEPLOYER_TOKEN, "command", &[("Command", "sleep 3600")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_string();
    let mut c = s.exec(DEPLOYER_TOKEN, &pid, "rake db:migrate").await;
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    let frames = read_until_eof(&mut c).await;
    assert!(
        frames.contains(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{frames:?}"
    );
    let r = send(
        "DELETE",
        &s.url(&format!("{BASE}/processes/{pid}?")),
        Some(DEPLOYER_TOKEN),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = s.rack.requests();
    assert_eq!(
        targets(&got),
        [
            "POST /apps/myapp/services/command/processes?".to_string(),
            "GET /apps/myapp/services".to_string(),
            format!("GET /apps/myapp/processes/{pid}"),
            format!("GET /apps/myapp/processes/{pid}/exec"),
            "GET /apps/myapp/services".to_string(),
            format!("GET /apps/myapp/processes/{pid}"),
            format!("DELETE /apps/myapp/processes/{pid}?"),
        ]
    );
    assert_eq!(got[3].header("command").as_deref(), Some("rake db:migrate"));
}

#[tokio::test]
async fn attached_run_with_a_refused_command_still_cleans_up() {
    let s = flows().await;
    let r = s
        .create_process(DEPLOYER_TOKEN, "command", &[("Command", "sleep 3600")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_string();
    let mut c = s.exec(DEPLOYER_TOKEN, &pid, "rails console").await;
    let frames = read_until_eof(&mut c).await;
    assert_eq!(
        in_band_refusal(&frames, true),
        Ok(rails_console_denial("convox exec"))
    );
    let r = send(
        "DELETE",
        &s.url(&format!("{BASE}/processes/{pid}?")),
        Some(DEPLOYER_TOKEN),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.received(),
        [
            "POST /apps/myapp/services/command/processes?".to_string(),
            "GET /apps/myapp/services".to_string(),
            format!("GET /apps/myapp/processes/{pid}"),
            "GET /apps/myapp/services".to_string(),
            format!("GET /apps/myapp/processes/{pid}"),
            format!("DELETE /apps/myapp/processes/{pid}?"),
        ]
    );
}

#[tokio::test]
async fn detached_run_is_checked_on_the_post() {
    let s = flows().await;
    let r = s
        .create_process(DEPLOYER_TOKEN, "command", &[("Command", "rails console")])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["content-type"], "application/json");
    // What the stock CLI prints: the `error` field, on one line.
    assert_eq!(r.error(), rails_console_denial("convox run"));
    assert_eq!(
        r.text(),
        format!(
            "{}\n",
            serde_json::json!({ "error": rails_console_denial("convox run") })
        )
    );
    assert!(s.received().is_empty());

    let r = s
        .create_process(ADMIN_TOKEN, "command", &[("Command", "rails console")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = s.rack.requests();
    assert_eq!(
        targets(&got),
        ["POST /apps/myapp/services/command/processes?"]
    );
    assert_eq!(got[0].header("command").as_deref(), Some("rails console"));
}

#[tokio::test]
async fn run_on_a_long_running_service_is_refused() {
    let s = flows().await;
    let r = s
        .create_process(DEPLOYER_TOKEN, "web", &[("Command", "sleep 3600")])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.error(),
        "gateway: denied: deployer may not \"run\" (convox run, test) on service web (roles/deployer.yaml)"
    );
    assert!(s.received().is_empty());
}

#[tokio::test]
async fn run_on_the_build_service_is_refused_even_for_admin() {
    let s = flows().await;
    for command in ["sleep 3600", "ls"] {
        let r = s
            .create_process(ADMIN_TOKEN, "build", &[("Command", command)])
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(
            r.error().contains("on service build is refused"),
            "{}",
            r.error()
        );
    }
    assert!(s.received().is_empty());
}

#[tokio::test]
async fn exec_command_in_the_query_is_refused() {
    let s = flows().await;
    let auth = basic(ADMIN_TOKEN);
    let mut c = ws::client_connect(
        s.running.addr,
        &format!("{BASE}/processes/web-abc12/exec?command=id"),
        &[("Authorization", &auth), ("Command", "ls")],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 400);
    let body = String::from_utf8(c.read_body().await.unwrap()).unwrap();
    assert!(body.contains("must not have a query string"), "{body}");
    assert!(s.received().is_empty());
}

#[tokio::test]
async fn duplicate_command_headers_are_refused() {
    let s = flows().await;
    let auth = basic(ADMIN_TOKEN);
    let post = format!(
        "POST {BASE}/services/command/processes? HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nCommand: rake db:migrate\r\nCommand: rails console\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        s.running.addr
    );
    let (status, text) = raw(s.running.addr, post.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("duplicate Command header"), "{text}");
    // The exec upgrade, with the second header differing only in case.
    let mut c = ws::client_connect(
        s.running.addr,
        &format!("{BASE}/processes/web-abc12/exec"),
        &[
            ("Authorization", &auth),
            ("command", "ls"),
            ("Command", "rm -rf /"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 400);
    let body = String::from_utf8(c.read_body().await.unwrap()).unwrap();
    assert!(body.contains("duplicate Command header"), "{body}");
    assert!(s.received().is_empty());
}

#[tokio::test]
async fn restricted_run_headers_need_a_role_that_grants_them() {
    let s = flows().await;
    for header in [
        ("Image", "evil"),
        ("Privileged", "true"),
        ("Volumes", "a=b"),
        ("Environment", "A=1"),
    ] {
        let r = s
            .create_process(ADMIN_TOKEN, "command", &[("Command", "ls"), header])
            .await;
        assert_eq!(r.status, 403, "{header:?}: {}", r.text());
        let name = header.0.to_ascii_lowercase();
        assert_eq!(
            r.error(),
            format!("gateway: denied: the {name} header on \"run\" (convox run, test) is not granted to admin-ci (roles may allow it with run_headers)")
        );
    }
    assert!(s.received().is_empty());

    let r = s
        .create_process(
            IMAGER_TOKEN,
            "command",
            &[("Command", "ls"), ("Image", "evil")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = s.rack.requests();
    assert_eq!(
        targets(&got),
        ["POST /apps/myapp/services/command/processes?"]
    );
    assert_eq!(got[0].header("image").as_deref(), Some("evil"));

    let r = s
        .create_process(
            IMAGER_TOKEN,
            "command",
            &[("Command", "ls"), ("Image", "evil"), ("Privileged", "true")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("the privileged header"), "{}", r.error());
    assert_eq!(s.rack.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// `check` on broken config repositories

fn fixture(class: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/check")
        .join(class)
}

/// Runs `rack-gateway check --offline` with no environment (no rack
/// passwords: what reviewers and CI have).
async fn check(args: &[&str]) -> (Option<i32>, String, String) {
    run(&[&["check", "--offline"], args].concat(), &[]).await
}

#[tokio::test]
async fn check_accepts_the_valid_fixture() {
    let dir = fixture("valid");
    let (code, stdout, stderr) = check(&[dir.to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "ok (2 rack(s), 2 role(s), 1 user(s), 1 CI identity, 1 policy test(s) passed)"
        ),
        "{stdout}"
    );
}

/// One fixture per class of error: the file (relative to the fixture),
/// `line:col`, and a substring of the message. Each fixture breaks one
/// thing, so each reports one problem, except where a role cannot be
/// compiled (cycle, unparsable file): it then counts as undefined wherever
/// it is used.
const BROKEN: &[(&str, &str, &str, &str)] = &[
    ("unknown-key", "roles/reader.yaml", "6:1", "unknown field `deny_all`"),
    ("unknown-operation", "roles/reader.yaml", "4:5", "allow: `apps inf` matches no operation"),
    ("undefined-role", "users.yaml", "6:9", "undefined role `deployer`"),
    ("cyclic-roles", "roles/runner.yaml", "2:12", "role `runner` inherits `reader`, which forms a cycle"),
    ("duplicate-yaml-key", "users.yaml", "6:3", "duplicate mapping key"),
    ("duplicate-identity", "users.yaml", "3:5", "duplicate identity `alice@example.com` (emails are case-insensitive)"),
    ("pattern-matches-nothing", "gateway.yaml", "14:7", "policy.blocked: `instance *` matches no operation"),
    ("unknown-rack", "users.yaml", "6:9", "scope `prod/billing` names no configured rack (racks: production, staging)"),
    ("failing-policy-test", "tests/policy.yaml", "10:5", "test `alice reads processes of production myapp`: expected allow, got deny: denied: alice@example.com may not \"ps\" on production/myapp (no grant there; alice@example.com's entry users.yaml:3)"),
    ("invalid-command-pattern", "roles/runner.yaml", "9:9", "command pattern `a ** b`: `**` may only be the last word of a command pattern"),
    ("unknown-run-header", "roles/runner.yaml", "9:22", "run_headers: `Imagee` is not a restricted run header"),
    ("ci-without-expires", "ci.yaml", "4:5", "missing field `expires`"),
    ("malformed-scope", "users.yaml", "6:9", "scope `production/billing/web` must be <rack glob>/<app glob>"),
];

#[tokio::test]
async fn check_reports_each_error_class_with_its_position() {
    let mut problems = Vec::new();
    for (class, file, at, message) in BROKEN {
        let dir = fixture(class);
        let (code, stdout, stderr) = check(&[dir.to_str().unwrap()]).await;
        let want = format!("{}:{at}: ", dir.join(file).display());
        let found = stderr
            .lines()
            .any(|l| l.starts_with(&want) && l.contains(message));
        let problems_seen = stderr
            .lines()
            .filter(|l| !l.starts_with("note: not checked"))
            .count();
        let alone = matches!(*class, "cyclic-roles" | "unknown-key") || problems_seen == 1;
        if code != Some(1) || !found || !alone || !stdout.is_empty() {
            problems.push(format!(
                "{class}: exit {code:?}, expected only a line `{want}…{message}…`; got:\n{stdout}{stderr}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn check_github_format_uses_relative_paths() {
    let dir = fixture("undefined-role");
    let (code, stdout, stderr) = check(&["--format", "github", dir.to_str().unwrap()]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout,
        "::error file=users.yaml,line=6,col=9::undefined role `deployer`\n"
    );
}

/// An expired break-glass grant is a warning with its position, not an
/// error; the valid fixture has none (the control).
#[tokio::test]
async fn check_warns_about_expired_grants() {
    let (code, stdout, stderr) = check(&[fixture("valid").to_str().unwrap()]).await;
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("valid");
    for f in [
        "gateway.yaml",
        "ci.yaml",
        "roles/reader.yaml",
        "roles/runner.yaml",
        "tests/policy.yaml",
    ] {
        let to = dir.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), to).unwrap();
    }
    let users = read(&src.join("users.yaml"))
        + "      - {role: runner, scope: production/*, expires: 2020-01-01, reason: INC-1}\n";
    std::fs::write(dir.path().join("users.yaml"), users).unwrap();
    let (code, stdout, stderr) = check(&[dir.path().to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "warning: users.yaml:8: grant runner on production/* of alice@example.com expired at 2020-01-01T00:00:00Z and counts for nothing\n"
    );
    let (code, stdout, _) = check(&["--format", "github", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("::warning file=users.yaml,line=8::grant runner on production/*"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_example_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("gateway.yaml.example", "gateway.yaml"),
        ("users.yaml.example", "users.yaml"),
        ("ci.yaml.example", "ci.yaml"),
        ("tests/example-policy.yaml", "tests/example-policy.yaml"),
    ] {
        let to = dir.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(from), to).unwrap();
    }
    copy_roles(dir.path());
    let (code, stdout, stderr) = check(&[dir.path().to_str().unwrap()]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let cases = read(&root.join("tests/example-policy.yaml"))
        .lines()
        .filter(|l| l.starts_with("  - name:"))
        .count();
    assert!(
        stdout.contains(&format!(
            "4 role(s), 4 user(s), 2 CI identities, {cases} policy test(s) passed"
        )),
        "{stdout}"
    );
}
