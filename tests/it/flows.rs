//! The CLI flows of convox-api.md §5, end to end: client → gateway → mock
//! rack, asserting what the rack received.

use rack_gateway::dev::mock_rack::Recorded;
use rack_gateway::rack::ws::{self, Frame, Opcode, EXIT_MARKER};

use crate::support::*;

/// What every forwarded request must look like at the rack: the rack's own
/// credential (never the client's token), the actor, a request id.
fn assert_forwarded_cleanly(r: &Recorded, actor: &str) {
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(basic(RACK_PASSWORD).as_str()),
        "{}",
        r.target
    );
    assert_eq!(
        r.header("convox-actor").as_deref(),
        Some(actor),
        "{}",
        r.target
    );
    assert_eq!(r.header_all("convox-actor").len(), 1);
    assert!(
        r.header("request-id").is_some_and(|v| v.len() == 12),
        "{}",
        r.target
    );
    for h in &r.headers {
        let v = String::from_utf8_lossy(&h.1);
        assert!(
            !v.contains(CI_STAGING) && !v.contains(CI_ALL),
            "client token leaked in {}",
            h.0
        );
    }
}

#[tokio::test]
async fn apps_rack_and_ps() {
    let gw = Gw::start().await;
    let r = get(&gw.url("/racks/staging/apps?"), Some(CI_STAGING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "myapp"));
    assert_eq!(r.headers["request-id"].len(), 12);

    let r = get(&gw.url("/racks/staging/system?"), Some(CI_STAGING)).await;
    assert_eq!(r.json()["name"], "mock");

    let r = get(
        &gw.url("/racks/staging/apps/myapp/processes?"),
        Some(CI_STAGING),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        &gw.url("/racks/staging/apps/myapp/budget?"),
        Some(CI_STAGING),
    )
    .await;
    assert_eq!(r.json(), serde_json::json!({"config": null, "state": null}));

    let got = gw.staging.requests();
    assert_eq!(
        targets(&got),
        [
            "GET /apps?",
            "GET /system?",
            "GET /apps/myapp/processes?",
            "GET /apps/myapp/budget?"
        ]
    );
    for r in &got {
        assert_forwarded_cleanly(r, "ci-staging");
    }
    assert!(gw.production.requests().is_empty());
}

#[tokio::test]
async fn run_attached_is_create_poll_exec_stop() {
    let gw = Gw::start().await;
    let base = "/racks/staging/apps/myapp";
    // 1. the sleep process
    let r = send(
        "POST",
        &gw.url(&format!("{base}/services/web/processes?")),
        Some(CI_ALL),
        &[("Command", "sleep 3600"), ("Content-Length", "0")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pid = r.json()["id"].as_str().unwrap().to_string();
    assert!(pid.starts_with("web-"));
    // 2. poll until running
    let r = get(&gw.url(&format!("{base}/processes/{pid}?")), Some(CI_ALL)).await;
    assert_eq!(r.json()["status"], "running");
    // 3. the probe is answered by the gateway, 404 like the rack
    let r = get(&gw.url("/racks/staging/machines?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 404);
    // 4. exec websocket with the real command
    let mut c = ws::client_connect(
        gw.addr(),
        &format!("{base}/processes/{pid}/exec"),
        &[
            ("Authorization", &basic(CI_ALL)),
            ("Command", "bash -c 'echo hi'"),
            ("Entrypoint", "true"),
            ("Tty", "false"),
            ("Origin", &format!("http://{}", gw.addr())),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    c.send(&Frame::text("stdin line\n")).await.unwrap();
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    let frames = read_until_eof(&mut c).await;
    assert!(frames.contains(&Frame::text("stdin line\n")), "{frames:?}");
    assert!(
        frames.contains(&Frame::text(format!("{EXIT_MARKER}:0\n"))),
        "{frames:?}"
    );
    // 5. cleanup
    let r = send(
        "DELETE",
        &gw.url(&format!("{base}/processes/{pid}?")),
        Some(CI_ALL),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let got = gw.staging.requests();
    assert_eq!(
        targets(&got),
        [
            "POST /apps/myapp/services/web/processes?".to_string(),
            format!("GET /apps/myapp/processes/{pid}?"),
            // The gateway checks the pid is no service name, then asks
            // the rack which service the pid belongs to.
            "GET /apps/myapp/services".to_string(),
            format!("GET /apps/myapp/processes/{pid}"),
            format!("GET /apps/myapp/processes/{pid}/exec"),
            "GET /apps/myapp/services".to_string(),
            format!("DELETE /apps/myapp/processes/{pid}?"),
        ]
    );
    // The placeholder goes out tagged with its creator (policy::placeholder).
    let sent = got[0].header("command").unwrap();
    assert!(
        sent.starts_with("sleep 3600.") && sent.len() == 47,
        "{sent}"
    );
    let exec = &got[4];
    assert!(exec.websocket);
    assert_eq!(exec.header("command").as_deref(), Some("bash -c 'echo hi'"));
    assert_eq!(exec.header("entrypoint").as_deref(), Some("true"));
    assert_eq!(exec.header("tty").as_deref(), Some("false"));
    // The rack's upgrader requires Origin's host to equal Host.
    let host = exec.header("host").unwrap();
    assert_eq!(exec.header("origin"), Some(format!("http://{host}")));
    for r in &got {
        assert_forwarded_cleanly(r, "ci-all");
    }
}

#[tokio::test]
async fn run_detached_and_exec() {
    let gw = Gw::start().await;
    let r = send(
        "POST",
        &gw.url("/racks/staging/apps/myapp/services/worker/processes?"),
        Some(CI_STAGING),
        &[("Command", "rake db:migrate"), ("Memory", "512")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = gw.staging.requests();
    assert_eq!(got[0].header("command").as_deref(), Some("rake db:migrate"));
    assert_eq!(got[0].header("memory").as_deref(), Some("512"));

    // convox exec into a running process; exit code travels in the marker.
    let mut c = ws::client_connect(
        gw.addr(),
        "/racks/staging/apps/myapp/processes/web-abc12/exec",
        &[("Authorization", &basic(CI_STAGING)), ("Command", "exit 3")],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    let frames = read_until_eof(&mut c).await;
    let marker: Vec<_> = frames
        .iter()
        .filter(|f| f.payload.starts_with(EXIT_MARKER.as_bytes()))
        .collect();
    assert_eq!(marker, [&Frame::text(format!("{EXIT_MARKER}:3\n"))]);
    let eof = frames
        .iter()
        .position(|f| f.opcode == Opcode::Binary)
        .unwrap();
    assert!(frames[eof].payload.is_empty());
}

#[tokio::test]
async fn logs_stream() {
    let gw = Gw::start().await;
    let mut c = ws::client_connect(
        gw.addr(),
        "/racks/staging/apps/myapp/logs",
        &[
            ("Authorization", &basic(CI_STAGING)),
            ("Prefix", "true"),
            ("Follow", "false"),
            ("Since", "1h0m0s"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    let frames = read_until_eof(&mut c).await;
    let text: Vec<_> = frames.iter().filter(|f| f.opcode == Opcode::Text).collect();
    assert!(text.len() >= 3, "{frames:?}");
    assert!(frames
        .iter()
        .any(|f| f.opcode == Opcode::Binary && f.payload.is_empty()));
    let got = gw.staging.requests();
    assert_eq!(got[0].target, "/apps/myapp/logs");
    assert_eq!(got[0].header("since").as_deref(), Some("1h0m0s"));
    assert_eq!(got[0].header("follow").as_deref(), Some("false"));
}

#[tokio::test]
async fn env_set_posts_the_whole_env() {
    let gw = Gw::start().await;
    let base = "/racks/staging/apps/myapp";
    let r = get(
        &gw.url(&format!("{base}/releases?limit=1")),
        Some(CI_STAGING),
    )
    .await;
    let latest = r.json()[0]["id"].as_str().unwrap().to_string();
    let r = get(
        &gw.url(&format!("{base}/releases/{latest}?")),
        Some(CI_STAGING),
    )
    .await;
    assert!(r.json()["env"].as_str().unwrap().contains("SECRET_KEY="));
    let body = "env=EXISTING%3D1%0ANEW%3Dva%3Dlue%0ASPACED%3Da+b%26c";
    let r = send(
        "POST",
        &gw.url(&format!("{base}/releases?")),
        Some(CI_STAGING),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_release = r.json()["id"].as_str().unwrap().to_string();
    let r = get(
        &gw.url(&format!("{base}/releases/{new_release}?")),
        Some(CI_STAGING),
    )
    .await;
    assert_eq!(r.json()["env"], "EXISTING=1\nNEW=va=lue\nSPACED=a b&c");
    let post = gw
        .staging
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.body, body.as_bytes());
    assert_eq!(
        post.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn deploy_uploads_builds_and_promotes() {
    let gw = Gw::start().await;
    let base = "/racks/staging/apps/myapp";
    let tarball: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = send(
        "POST",
        &gw.url(&format!(
            "{base}/objects/tmp/0123456789abcdef0123456789abcd.tgz?"
        )),
        Some(CI_STAGING),
        &[],
        tarball.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["Url"].as_str().unwrap().to_string();
    assert_eq!(url, "object://myapp/tmp/0123456789abcdef0123456789abcd.tgz");
    let form = format!("url={}&description=test", urlencode(&url));
    let r = send(
        "POST",
        &gw.url(&format!("{base}/builds?")),
        Some(CI_STAGING),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let build = r.json()["id"].as_str().unwrap().to_string();

    let mut c = ws::client_connect(
        gw.addr(),
        &format!("{base}/builds/{build}/logs"),
        &[("Authorization", &basic(CI_STAGING))],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    let frames = read_until_eof(&mut c).await;
    assert!(frames.iter().any(|f| f.opcode == Opcode::Binary));

    let r = get(
        &gw.url(&format!("{base}/builds/{build}?")),
        Some(CI_STAGING),
    )
    .await;
    assert_eq!(r.json()["status"], "complete");
    let release = r.json()["release"].as_str().unwrap().to_string();
    let r = send(
        "POST",
        &gw.url(&format!("{base}/releases/{release}/promote?")),
        Some(CI_STAGING),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "force=false",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok\n");
    let r = get(&gw.url(&format!("{base}?")), Some(CI_STAGING)).await;
    assert_eq!(r.json()["release"], release.as_str());

    let got = gw.staging.requests();
    let upload = &got[0];
    assert_eq!(upload.body_len, tarball.len() as u64);
    assert_eq!(
        upload.body_sha256,
        rack_gateway::hex::encode(&ring_sha256(&tarball))
    );
    for r in &got {
        assert_forwarded_cleanly(r, "ci-staging");
    }
}

fn ring_sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}
