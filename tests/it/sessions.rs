//! Long-lived sessions against later config: a reload that removes an
//! identity, or stops accepting the credential a session was opened with
//! (a rotated CI token, a retired signing key, a federated mapping that no
//! longer matches), closes its open exec session in-band (and audits why)
//! while other sessions go on; the per-identity session cap refuses
//! the extra session in-band; and a second gateway on an address already
//! served fails at once instead of sharing its traffic.

use std::path::Path;

use rack_gateway::rack::ws::{self, ClientConn, Frame, Opcode, EXIT_MARKER};
use serde_json::Value;

use crate::support::*;

const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";

/// An exec session running `cat` (stdin echoed back) as `token`.
async fn open_exec(addr: std::net::SocketAddr, token: &str) -> ClientConn {
    let auth = basic(token);
    let headers = [("Authorization", auth.as_str()), ("Command", "cat")];
    let c = ws::client_connect(addr, EXEC, &headers).await.unwrap();
    assert_eq!(c.status, 101);
    c
}

/// The session still works: a stdin line comes back.
async fn assert_echoes(c: &mut ClientConn, line: &str) {
    let f = Frame::text(line.as_bytes().to_vec());
    c.send(&f).await.unwrap();
    assert_eq!(recv(c).await, Some(f));
}

/// The first text frame of a session the gateway ended or refused, and
/// the frames after it; asserts the shape the CLI understands (`ERROR:`
/// line, exit marker 1, EOF frame, close).
async fn in_band_ending(c: &mut ClientConn) -> (String, Vec<Frame>) {
    let frames = read_until_eof(c).await;
    let first = frames
        .iter()
        .find(|f| f.opcode == Opcode::Text)
        .unwrap_or_else(|| panic!("no text frame: {frames:?}"));
    let text = String::from_utf8_lossy(&first.payload).into_owned();
    assert!(
        text.starts_with("ERROR: ") && text.ends_with('\n'),
        "{text:?}"
    );
    let marker = Frame::text(format!("{EXIT_MARKER}:1\n"));
    assert!(frames.contains(&marker), "{frames:?}");
    assert!(frames.contains(&Frame::binary(Vec::new())), "{frames:?}");
    assert_eq!(frames.last().unwrap().opcode, Opcode::Close, "{frames:?}");
    (text, frames)
}

fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn audit_records(p: &Proc) -> Vec<Value> {
    p.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect()
}

/// The real binary in directory mode: ci-staging's exec session is closed
/// with the revocation message once a reload removes ci-staging; ci-all's
/// session (control) keeps echoing.
#[tokio::test]
async fn reload_removing_an_identity_closes_its_session_in_band() {
    init();
    let rack = mock().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .ci(&[
            ("ci-staging", CI_STAGING, "admin", "staging/*"),
            ("ci-all", CI_ALL, "admin", "*"),
        ])
        .write();
    let env = [
        ("RACK_PW", RACK_PASSWORD),
        ("RACK_GATEWAY_LOG_FORMAT", "json"),
    ];
    let p = Proc::serve(dir.path(), &["--poll-interval", "1h"], &env).await;
    let mut doomed = open_exec(p.addr, CI_STAGING).await;
    let mut kept = open_exec(p.addr, CI_ALL).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;
    let before = get(&p.url("/_gateway/status"), None).await.json()["version"].clone();

    save(
        &dir.path().join("ci.yaml"),
        &ci_yaml(&[("ci-all", CI_ALL, "admin", "*")]),
    );
    p.signal("-HUP");

    let (text, _) = in_band_ending(&mut doomed).await;
    let version = get(&p.url("/_gateway/status"), None).await.json()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(Value::from(version.clone()), before);
    assert_eq!(
        text,
        revoked_line(&version, "the identity is no longer in the config")
    );
    assert_echoes(&mut kept, "after").await;

    let end = eventually("the revoked session's audit record", || async {
        audit_records(&p)
            .into_iter()
            .find(|r| {
                r["event"] == "session-end"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("revoked by config "))
            })
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(end["decision"], "deny", "{end}");
    assert!(end.to_string().contains("ci-staging"), "{end}");
    assert!(
        !audit_records(&p)
            .iter()
            .any(|r| r["event"] == "session-end" && r.to_string().contains("ci-all")),
        "the control session is still open"
    );
}

/// users.yaml: each `(email, tokens_valid_after)` an admin on staging.
fn admins(people: &[(&str, Option<&str>)]) -> String {
    let mut s = String::from("users:\n");
    for (email, after) in people {
        s += &format!(
            "  {email}:\n    grants:\n      - role: admin\n        scope: \"staging/*\"\n"
        );
        if let Some(t) = after {
            s += &format!("    tokens_valid_after: \"{t}\"\n");
        }
    }
    s
}

/// A gateway in this process on a config directory, reloaded by the
/// test: [`Reloading::reload`] returns once the edit is swapped in, by
/// which time the sessions it no longer allows have been told.
struct Reloading {
    running: rack_gateway::server::listener::Running,
    reloader: rack_gateway::reload::Reloader,
    dir: tempfile::TempDir,
}

impl Reloading {
    async fn start(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Reloading {
        use rack_gateway::reload::{DirFetch, Fetch, Reloader};
        let cfg = load(dir.path(), env);
        let running = rack_gateway::server::listener::Running::start(&cfg)
            .await
            .expect("gateway starts");
        let fetch = DirFetch(dir.path().to_path_buf());
        let first = fetch.fetch(None).unwrap().unwrap();
        let reloader = Reloader::new(
            running.gateway.clone(),
            std::sync::Arc::new(fetch),
            rack_gateway::config::Env::from_pairs(env.iter().copied()),
            std::time::Duration::from_secs(3600),
        );
        reloader.started_with(&first, cfg.policy_cases);
        Reloading {
            running,
            reloader,
            dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// Writes `text` to the config file `name` and reloads; the version.
    async fn edit(&mut self, name: &str, text: &str) -> String {
        save(&self.dir.path().join(name), text);
        match self.reloader.reload_once(false).await {
            rack_gateway::reload::Outcome::Swapped(version) => version,
            other => panic!("the edit of {name} loads: {other:?}"),
        }
    }
}

/// What a session closed by the reload to config `version` is told,
/// before the reason.
fn revoked_prefix(version: &str) -> String {
    format!("ERROR: gateway: session closed: revoked by config {version}: ")
}

/// The in-band line of a session revoked by config `version` for `why`.
fn revoked_line(version: &str, why: &str) -> String {
    format!("{}{why}\n", revoked_prefix(version))
}

/// `c` ends in-band, closed by the reload to `version` because `why`.
async fn assert_revoked(c: &mut ClientConn, version: &str, why: &str) {
    let (text, _) = in_band_ending(c).await;
    assert_eq!(text, revoked_line(version, why));
}

/// A reload that sets `tokens_valid_after` past the token of alice's open
/// session closes it; bob's session, on a token issued after that time,
/// stays (control).
#[tokio::test]
async fn reload_setting_tokens_valid_after_closes_older_tokens_sessions() {
    use std::time::Duration;

    init();
    let rack = mock().await;
    let issuer = "http://127.0.0.1:9";
    let (alice, bob) = ("alice@example.com", "bob@example.com");
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .extra(&format!(
            "identity:\n  url: {issuer}\n  signing_key:\n    env: SIGNING_KEY\n  signing_key_id: k1\n"
        ))
        .users(&admins(&[(alice, None), (bob, None)]))
        .write();
    let pem = rack_gateway::identity::token::generate_private_pem();
    let pairs = [("RACK_PW", RACK_PASSWORD), ("SIGNING_KEY", pem.as_str())];
    let mut gw = Reloading::start(dir, &pairs).await;

    // Issued in 1999 for 30 years, and now.
    let thirty_years = Duration::from_secs(30 * 365 * 86_400);
    let old = gateway_token(issuer, "k1", &pem, alice, 946_684_800 - 3600, thirty_years);
    let new = gateway_token(issuer, "k1", &pem, bob, now(), Duration::from_secs(3600));
    let mut doomed = open_exec(gw.addr(), &old).await;
    let mut kept = open_exec(gw.addr(), &new).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let after = Some("2000-01-01");
    let version = gw
        .edit("users.yaml", &admins(&[(alice, after), (bob, after)]))
        .await;
    assert_revoked(
        &mut doomed,
        &version,
        "the token predates the identity's tokens_valid_after",
    )
    .await;
    assert_echoes(&mut kept, "after").await;
    gw.running.stop().await;
}

/// An exec opened with `Entrypoint` by an identity that may exec any
/// command is closed when a reload narrows it to `cat` only; the same
/// command without `Entrypoint` (control) stays open.
#[tokio::test]
async fn reload_rechecks_an_exec_entrypoint() {
    init();
    let rack = mock().await;
    let any = "allow: [exec]\ncommands:\n  allow:\n    web: [\"**\"]\n";
    let cat = "allow: [exec]\ncommands:\n  allow:\n    web: [cat]\n";
    let ids = [
        ("ci-staging", CI_STAGING, "execer", "staging/*"),
        ("ci-all", CI_ALL, "execer", "*"),
    ];
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .role("execer", any)
        .ci(&ids)
        .write();
    let mut gw = Reloading::start(dir, &[("RACK_PW", RACK_PASSWORD)]).await;
    let auth = basic(CI_STAGING);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Command", "cat"),
        ("Entrypoint", "true"),
    ];
    let mut doomed = ws::client_connect(gw.addr(), EXEC, &headers).await.unwrap();
    assert_eq!(doomed.status, 101);
    let mut kept = open_exec(gw.addr(), CI_ALL).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let version = gw.edit("roles/execer.yaml", cat).await;
    let (text, _) = in_band_ending(&mut doomed).await;
    assert!(text.starts_with(&revoked_prefix(&version)), "{text}");
    assert!(text.contains("Entrypoint header"), "{text}");
    assert_echoes(&mut kept, "after").await;
    gw.running.stop().await;
}

/// A rotated static CI token (a new `token_sha256` under the same name)
/// closes the session opened with the old one; an unrelated edit first
/// (control) closes nothing, and ci-all's session stays throughout.
#[tokio::test]
async fn reload_rotating_a_ci_token_closes_the_old_tokens_session() {
    const ROTATED: &str = "ci-staging-token-rotated-DDDDDDDDDDDDDDDDDDDDDDDDD";
    init();
    let rack = mock().await;
    let staging = ("ci-staging", CI_STAGING, "admin", "staging/*");
    let all = ("ci-all", CI_ALL, "admin", "*");
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .ci(&[staging, all])
        .write();
    let mut gw = Reloading::start(dir, &[("RACK_PW", RACK_PASSWORD)]).await;
    let mut doomed = open_exec(gw.addr(), CI_STAGING).await;
    let mut kept = open_exec(gw.addr(), CI_ALL).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let other = (
        "ci-other",
        "ci-other-token-EEEEEEEEEEEEEEEEEEEEEEEEEEEEE",
        "viewer",
        "*",
    );
    gw.edit("ci.yaml", &ci_yaml(&[staging, all, other])).await;
    assert_echoes(&mut doomed, "unrelated edit").await;
    assert_echoes(&mut kept, "unrelated edit").await;

    let rotated = ("ci-staging", ROTATED, "admin", "staging/*");
    let version = gw.edit("ci.yaml", &ci_yaml(&[rotated, all])).await;
    assert_revoked(
        &mut doomed,
        &version,
        "the CI token was rotated: the identity's token_sha256 no longer matches it",
    )
    .await;
    assert_echoes(&mut kept, "after").await;
    let mut fresh = open_exec(gw.addr(), ROTATED).await;
    assert_echoes(&mut fresh, "the new token").await;
    gw.running.stop().await;
}

/// gateway.yaml trusting `k2` (signing) and, while `retired` is listed,
/// `k1` (verification only).
fn key_rotation_yaml(issuer: &str, retired: bool) -> String {
    let verification = if retired {
        "\n    - id: k1\n      env: OLD_KEY"
    } else {
        " []"
    };
    format!(
        "identity:\n  url: {issuer}\n  signing_key:\n    env: NEW_KEY\n  signing_key_id: k2\n  \
         verification_keys:{verification}\n"
    )
}

/// Retiring the key that signed alice's gateway token closes her open
/// session; an unrelated users.yaml edit first (control) does not, and
/// bob's session on a token of the current key stays.
#[tokio::test]
async fn reload_retiring_a_signing_key_closes_sessions_of_its_tokens() {
    use std::time::Duration;

    init();
    let rack = mock().await;
    let issuer = "http://127.0.0.1:9";
    let (alice, bob, carol) = ("alice@example.com", "bob@example.com", "carol@example.com");
    let config = |retired| {
        ConfigDir::new()
            .no_rack_discovery()
            .rack("staging", &rack.url())
            .extra(&key_rotation_yaml(issuer, retired))
            .gateway_yaml()
    };
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .extra(&key_rotation_yaml(issuer, true))
        .users(&admins(&[(alice, None), (bob, None)]))
        .write();
    let (old_pem, new_pem) = (signing_pem(), signing_pem());
    let pairs = [
        ("RACK_PW", RACK_PASSWORD),
        ("OLD_KEY", old_pem.as_str()),
        ("NEW_KEY", new_pem.as_str()),
    ];
    let mut gw = Reloading::start(dir, &pairs).await;

    let hour = Duration::from_secs(3600);
    let old = gateway_token(issuer, "k1", &old_pem, alice, now(), hour);
    let new = gateway_token(issuer, "k2", &new_pem, bob, now(), hour);
    let mut doomed = open_exec(gw.addr(), &old).await;
    let mut kept = open_exec(gw.addr(), &new).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let people = admins(&[(alice, None), (bob, None), (carol, None)]);
    gw.edit("users.yaml", &people).await;
    assert_echoes(&mut doomed, "unrelated edit").await;

    let version = gw
        .edit("gateway.yaml", &with_lifted_limits(&config(false)))
        .await;
    assert_revoked(
        &mut doomed,
        &version,
        "the key that signed the token (`k1`) is no longer trusted",
    )
    .await;
    assert_echoes(&mut kept, "after").await;
    assert_eq!(get(&gw.url("/apps"), Some(&old)).await.status, 401);
    gw.running.stop().await;
}

/// ci.yaml: ci-all (static token) and deploy-app, federated from `issuer`
/// for `audience` when the job's repository matches `repository`.
fn federated_ci_yaml(issuer: &str, audience: &str, repository: &str) -> String {
    format!(
        "{}  deploy-app:\n    federated:\n      issuer: {issuer}\n      audience: {audience}\n      \
         claims:\n        repository: \"{repository}\"\n    expires: 2099-01-01\n    \
         grants:\n      - role: admin\n        scope: \"staging/*\"\n",
        ci_yaml(&[("ci-all", CI_ALL, "admin", "*")])
    )
}

/// A federated CI session is closed once the identity's claim mapping no
/// longer matches the job token it was opened with; an unrelated edit of
/// the same identity (its grants) does not, and ci-all's stays (controls).
#[tokio::test]
async fn reload_changing_a_federated_mapping_closes_sessions_it_no_longer_matches() {
    init();
    let rack = mock().await;
    let ci = CiIssuer::start().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .write();
    save(
        &dir.path().join("ci.yaml"),
        &federated_ci_yaml(&ci.url, "rack-gateway", "acme/*"),
    );
    let mut gw = Reloading::start(dir, &[("RACK_PW", RACK_PASSWORD)]).await;
    let job = ci.ed.sign(&ci.claims("acme/app", "refs/heads/main"));
    let mut doomed = open_exec(gw.addr(), &job).await;
    let mut kept = open_exec(gw.addr(), CI_ALL).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let regranted = federated_ci_yaml(&ci.url, "rack-gateway", "acme/*")
        .replace("scope: \"staging/*\"", "scope: \"staging/myapp\"");
    gw.edit("ci.yaml", &regranted).await;
    assert_echoes(&mut doomed, "unrelated edit").await;

    let version = gw
        .edit(
            "ci.yaml",
            &federated_ci_yaml(&ci.url, "rack-gateway", "acme/other"),
        )
        .await;
    assert_revoked(
        &mut doomed,
        &version,
        "the identity's federated issuer, audience or claims no longer match the token",
    )
    .await;
    assert_echoes(&mut kept, "after").await;
    assert_eq!(get(&gw.url("/apps"), Some(&job)).await.status, 401);
    gw.running.stop().await;
}

/// ci.yaml: `tunneller` may open tunnels rack-wide and, while `reads`,
/// `resources info` on myapp (whose database the tunnel reaches).
fn tunnel_ci_yaml(reads: &str) -> String {
    let mut yaml = ci_yaml(&[("tunneller", CI_STAGING, "tunnel", "staging/*")]);
    yaml += &format!("      - role: reader\n        scope: \"{reads}\"\n");
    yaml + &ci_yaml(&[("ci-all", CI_ALL, "admin", "*")]).replacen("ci:\n", "", 1)
}

/// A tunnel is opened only to a resource of an app the caller may
/// `resources info`; a reload taking that away closes it in-band, as it
/// would refuse a new one. An unrelated widening first (control) does not,
/// and ci-all's tunnel to the same database stays.
#[tokio::test]
async fn reload_taking_away_a_tunnels_app_closes_it() {
    const TUNNEL: &str = "/racks/staging/proxy/db.myapp.mock/5432";
    init();
    let rack = mock().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .role("tunnel", "allow: [proxy]\n")
        .role("reader", "allow: [resources info]\n")
        .write();
    save(
        &dir.path().join("ci.yaml"),
        &tunnel_ci_yaml("staging/myapp"),
    );
    let mut gw = Reloading::start(dir, &[("RACK_PW", RACK_PASSWORD)]).await;
    let tunnel = |token: &'static str| {
        let addr = gw.addr();
        async move {
            let auth = basic(token);
            let c = ws::client_connect(addr, TUNNEL, &[("Authorization", auth.as_str())])
                .await
                .unwrap();
            assert_eq!(c.status, 101);
            c
        }
    };
    let mut doomed = tunnel(CI_STAGING).await;
    let mut kept = tunnel(CI_ALL).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    gw.edit("ci.yaml", &tunnel_ci_yaml("staging/*")).await;
    assert_echoes(&mut doomed, "unrelated edit").await;

    let version = gw.edit("ci.yaml", &tunnel_ci_yaml("staging/other")).await;
    let frames = read_until_eof(&mut doomed).await;
    let text = frames
        .iter()
        .find(|f| f.opcode == Opcode::Text)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned());
    assert_eq!(
        text.as_deref(),
        Some(
            revoked_line(
                &version,
                "the tunnel's target is a resource of `myapp`, which you may no longer `resources info`"
            )
            .as_str()
        ),
        "{frames:?}"
    );
    assert_eq!(frames.last().unwrap().opcode, Opcode::Close, "{frames:?}");
    assert_echoes(&mut kept, "after").await;
    gw.running.stop().await;
}

/// An exec session in someone else's run placeholder was allowed as
/// `exec`; a reload leaving its identity only `run` closes it, since `run`
/// covers only one's own placeholder. The creator's own session into the
/// same placeholder (control) stays.
#[tokio::test]
async fn reload_re_decides_an_exec_into_a_placeholder_as_not_the_callers() {
    const ALICE: &str = "tok-alice-sessions-0123456789abcdef";
    const CAROL: &str = "tok-carol-sessions-0123456789abcdef";
    init();
    let rack = mock().await;
    let alice = ("alice", ALICE, "runner", "staging/*");
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .role(
            "runner",
            "allow: [run]\ncommands:\n  allow:\n    command: [\"sleep *\", cat]\n",
        )
        .ci(&[alice, ("carol", CAROL, "admin", "staging/*")])
        .write();
    let mut gw = Reloading::start(dir, &[("RACK_PW", RACK_PASSWORD)]).await;
    let run = send(
        "POST",
        &gw.url("/racks/staging/apps/myapp/services/command/processes?"),
        Some(ALICE),
        &[("Command", "sleep 3600")],
        "",
    )
    .await;
    assert_eq!(run.status, 200, "{}", run.text());
    let pid = run.json()["id"].as_str().unwrap().to_string();
    let exec = |token: &'static str| {
        let (addr, path) = (
            gw.addr(),
            format!("/racks/staging/apps/myapp/processes/{pid}/exec"),
        );
        async move {
            let auth = basic(token);
            let headers = [("Authorization", auth.as_str()), ("Command", "cat")];
            let c = ws::client_connect(addr, &path, &headers).await.unwrap();
            assert_eq!(c.status, 101);
            c
        }
    };
    let mut doomed = exec(CAROL).await;
    let mut kept = exec(ALICE).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let version = gw
        .edit(
            "ci.yaml",
            &ci_yaml(&[alice, ("carol", CAROL, "runner", "staging/*")]),
        )
        .await;
    let (text, _) = in_band_ending(&mut doomed).await;
    assert!(
        text.starts_with(&revoked_prefix(&version))
            && text.contains("placeholder not created by this identity"),
        "{text}"
    );
    assert_echoes(&mut kept, "after").await;
    gw.running.stop().await;
}

/// With `max_sessions_per_identity: 2`, a third session of the same
/// identity is refused in-band naming the limit (and counted); another
/// identity (control) still opens one, and a freed place can be reused.
#[tokio::test]
async fn per_identity_cap_refuses_the_extra_session_in_band() {
    let gw = Gw::start_with("websocket:\n  max_sessions_per_identity: 2\n").await;
    let mut a = open_exec(gw.addr(), CI_STAGING).await;
    let mut b = open_exec(gw.addr(), CI_STAGING).await;
    assert_echoes(&mut a, "a").await;
    assert_echoes(&mut b, "b").await;

    let mut extra = open_exec(gw.addr(), CI_STAGING).await;
    let (text, _) = in_band_ending(&mut extra).await;
    assert!(
        text.contains("ci-staging already has 2 open sessions")
            && text.contains("websocket.max_sessions_per_identity"),
        "{text}"
    );
    assert!(!text.trim_end().contains('\n'), "one line: {text:?}");
    let metrics = gw.running.gateway.metrics.render(&[]);
    assert!(
        metrics.contains("rack_gateway_rejected_total{reason=\"too_many_sessions\"} 1"),
        "{metrics}"
    );

    let mut other = open_exec(gw.addr(), CI_ALL).await;
    assert_echoes(&mut other, "other").await;
    assert_echoes(&mut a, "a again").await;

    // Ending one session frees its place.
    b.send(&Frame::binary(Vec::new())).await.unwrap();
    read_until_eof(&mut b).await;
    let _ = b.send(&Frame::close(1000, "")).await;
    drop(b);
    let mut again = eventually("a freed session place", || async {
        let mut c = open_exec(gw.addr(), CI_STAGING).await;
        let f = Frame::text(b"again".to_vec());
        c.send(&f).await.unwrap();
        match recv(&mut c).await {
            Some(got) if got == f => Ok(c),
            got => Err(format!("{got:?}")),
        }
    })
    .await;
    assert_echoes(&mut again, "still").await;
}

/// The setting is validated like the rest of `websocket:`: file and line.
#[test]
fn session_cap_must_be_positive() {
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", "http://127.0.0.1:9")
        .extra("websocket:\n  max_sessions_per_identity: 0\n")
        .write();
    let env = rack_gateway::config::Env::from_pairs([("RACK_PW", RACK_PASSWORD)]);
    let e = rack_gateway::config::load_dir(dir.path(), &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gateway.yaml:") && e.contains("max_sessions_per_identity must be between 1"),
        "{e}"
    );
}

/// A second `serve` on the address the first serves fails at once with
/// one clear line; the first (control) keeps serving.
#[tokio::test]
async fn second_gateway_on_a_served_address_fails_fast() {
    init();
    let rack = mock().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let config = || {
        ConfigDir::new()
            .listen(&listen)
            .no_rack_discovery()
            .rack("staging", &rack.url())
            .ci(&[("ci-all", CI_ALL, "admin", "*")])
            .write()
    };
    let (first_dir, second_dir) = (config(), config());
    let env = [("RACK_PW", RACK_PASSWORD)];
    let first = Proc::serve(first_dir.path(), &[], &env).await;
    assert_eq!(get(&first.url("/apps"), Some(CI_ALL)).await.status, 200);

    let dir = second_dir.path().to_str().unwrap();
    let (code, _, stderr) = run(&["serve", "--config", dir], &env).await;
    assert!(code.is_some_and(|c| c != 0), "{code:?} {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("address in use"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains(&listen) && line.contains("listen on another address"),
        "{line}"
    );

    assert_eq!(get(&first.url("/apps"), Some(CI_ALL)).await.status, 200);
    first.stop().await;
}
