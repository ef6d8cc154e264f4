//! Long-lived sessions against later config: a reload that removes an
//! identity closes its open exec session in-band (and audits why) while
//! other identities' sessions go on; the per-identity session cap refuses
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
        format!(
            "ERROR: gateway: session closed: revoked by config {version}: \
             the identity is no longer in the config\n"
        )
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

/// A reload (in-process reloader on the directory) that sets
/// `tokens_valid_after` past the token of alice's open session closes it;
/// bob's session, on a token issued after that time, stays (control).
#[tokio::test]
async fn reload_setting_tokens_valid_after_closes_older_tokens_sessions() {
    use rack_gateway::reload::{DirFetch, Fetch, Outcome, Reloader};
    use std::sync::Arc;
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
    let cfg = load(dir.path(), &pairs);
    let running = rack_gateway::server::listener::Running::start(&cfg)
        .await
        .expect("gateway starts");
    let fetch = DirFetch(dir.path().to_path_buf());
    let first = fetch.fetch(None).unwrap().unwrap();
    let mut reloader = Reloader::new(
        running.gateway.clone(),
        Arc::new(fetch),
        rack_gateway::config::Env::from_pairs(pairs),
        Duration::from_secs(3600),
    );
    reloader.started_with(&first, cfg.policy_cases);

    // Issued in 1999 for 30 years, and now.
    let thirty_years = Duration::from_secs(30 * 365 * 86_400);
    let old = gateway_token(issuer, "k1", &pem, alice, 946_684_800 - 3600, thirty_years);
    let new = gateway_token(issuer, "k1", &pem, bob, now(), Duration::from_secs(3600));
    let mut doomed = open_exec(running.addr, &old).await;
    let mut kept = open_exec(running.addr, &new).await;
    assert_echoes(&mut doomed, "before").await;
    assert_echoes(&mut kept, "before").await;

    let after = Some("2000-01-01");
    save(
        &dir.path().join("users.yaml"),
        &admins(&[(alice, after), (bob, after)]),
    );
    let Outcome::Swapped(version) = reloader.reload_once(false).await else {
        panic!("the edit loads");
    };
    let (text, _) = in_band_ending(&mut doomed).await;
    assert_eq!(
        text,
        format!(
            "ERROR: gateway: session closed: revoked by config {version}: \
             the token predates the identity's tokens_valid_after\n"
        )
    );
    assert_echoes(&mut kept, "after").await;
    running.stop().await;
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
