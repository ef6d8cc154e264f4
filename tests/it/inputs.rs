//! Requests the rack would read differently than the gateway authorizes
//! them are refused before they reach a rack (`rack::inputs`,
//! rack-semantics.md §6 rules 2-5 and 14, issue 13).

use std::time::Duration;

use bytes::Bytes;
use rack_gateway::rack::ws::{self, Frame, Opcode};

use crate::support::*;

const APPS: &str = "/racks/staging/apps?";
const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";

/// Sends a REST request as CI_ALL and asserts the gateway's refusal.
async fn assert_refused(
    gw: &Gw,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &'static str,
    status: u16,
    needle: &str,
) {
    let before = gw.forwarded_count();
    let r = send(
        method,
        &gw.url(target),
        Some(CI_ALL),
        headers,
        Bytes::from(body),
    )
    .await;
    assert_eq!(
        r.status,
        status,
        "{method} {target} {headers:?}: {}",
        r.text()
    );
    let error = r.error();
    assert!(error.starts_with("gateway: bad request: "), "{error}");
    assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    assert_eq!(
        gw.forwarded_count(),
        before,
        "{method} {target} reached the rack"
    );
}

/// The text frames of an exec upgrade carrying `headers`.
async fn exec_texts(gw: &Gw, headers: &[(&str, &str)]) -> String {
    let auth = basic(CI_ALL);
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let mut c = ws::client_connect(gw.addr(), EXEC, &all).await.unwrap();
    assert_eq!(c.status, 101);
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    let mut text = String::new();
    while let Some(f) = tokio::time::timeout(Duration::from_secs(15), c.recv())
        .await
        .expect("frame within 15s")
        .expect("read ok")
    {
        match f.opcode {
            Opcode::Text => text.push_str(&String::from_utf8_lossy(&f.payload)),
            Opcode::Close | Opcode::Binary => break,
            _ => {}
        }
    }
    text
}

#[tokio::test]
async fn header_fallbacks_are_refused() {
    let gw = Gw::start().await;
    let form = &[("Content-Type", "application/x-www-form-urlencoded")];
    let mut url = form.to_vec();
    url.push(("Url", "dir:///etc"));
    let build = "/racks/staging/apps/myapp/builds?";
    assert_refused(&gw, "POST", build, &url, "", 400, "Url header").await;
    let config = "/racks/staging/apps/myapp/configs/db?";
    assert_refused(
        &gw,
        "PUT",
        config,
        &[("Value", "eA==")],
        "",
        400,
        "Value header",
    )
    .await;
    let token = "/racks/staging/system/jwt/token?";
    assert_refused(
        &gw,
        "POST",
        token,
        &[("Role", "admin")],
        "",
        400,
        "Role header",
    )
    .await;
    let budget = "/racks/staging/apps/myapp/budget?";
    assert_refused(
        &gw,
        "DELETE",
        budget,
        &[("Ack_by", "x")],
        "",
        400,
        "Ack_by header",
    )
    .await;
}

#[tokio::test]
async fn unexpected_bodies_are_refused() {
    let gw = Gw::start().await;
    let multipart = &[("Content-Type", "multipart/form-data; boundary=x")];
    let body = "--x\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\ndir:///etc\r\n--x--\r\n";
    let build = "/racks/staging/apps/myapp/builds?";
    assert_refused(&gw, "POST", build, multipart, body, 415, "multipart").await;
    assert_refused(
        &gw,
        "GET",
        APPS,
        &[],
        "abc",
        400,
        "GET must not have a body",
    )
    .await;
    let ps = "/racks/staging/apps/myapp/processes/web-abc12?";
    assert_refused(
        &gw,
        "DELETE",
        ps,
        &[],
        "abc",
        400,
        "DELETE must not have a body",
    )
    .await;
}

#[tokio::test]
async fn ambiguous_queries_are_refused() {
    let gw = Gw::start().await;
    let ps = "/racks/staging/apps/myapp/processes?service=web&service=db";
    assert_refused(&gw, "GET", ps, &[], "", 400, "`service` more than once").await;
    let ps = "/racks/staging/apps/myapp/processes?service=web;release=R1";
    assert_refused(&gw, "GET", ps, &[], "", 400, "`;`").await;
    let ps = "/racks/staging/apps/myapp/processes?service=%zz&service=web";
    assert_refused(&gw, "GET", ps, &[], "", 400, "%-escape").await;
    let reset = "/racks/staging/apps/myapp/budget/reset?ack_by=mallory";
    assert_refused(&gw, "POST", reset, &[], "", 400, "`ack_by` sets the actor").await;
}

#[tokio::test]
async fn head_tricks_are_refused() {
    let gw = Gw::start().await;
    let hop = &[("Connection", "close, command")];
    assert_refused(
        &gw,
        "GET",
        APPS,
        hop,
        "",
        400,
        "the Connection header names `command`",
    )
    .await;
    let origin = &[("Origin", "https://evil.example")];
    assert_refused(
        &gw,
        "POST",
        "/racks/staging/apps?",
        origin,
        "",
        400,
        "Origin",
    )
    .await;
    let site = &[("Sec-Fetch-Site", "cross-site")];
    assert_refused(&gw, "GET", APPS, site, "", 400, "Sec-Fetch-Site").await;
    let run = "/racks/staging/apps/myapp/services/web/processes?";
    let twice = &[("Release", "R1"), ("Release", "R2")];
    assert_refused(
        &gw,
        "POST",
        run,
        twice,
        "",
        400,
        "Release header is given more than once",
    )
    .await;
}

#[tokio::test]
async fn websocket_refusals_are_in_band() {
    let gw = Gw::start().await;
    let evil = exec_texts(
        &gw,
        &[("Command", "id"), ("Origin", "https://evil.example")],
    )
    .await;
    assert!(evil.contains("is not this gateway's Host"), "{evil}");
    let twice = exec_texts(&gw, &[("Command", "id"), ("Tty", "true"), ("Tty", "false")]).await;
    assert!(
        twice.contains("the Tty header is given more than once"),
        "{twice}"
    );
    assert!(
        gw.staging
            .requests()
            .iter()
            .all(|r| !r.target.ends_with("/exec")),
        "an exec reached the rack"
    );
}

/// The stock CLI's own requests keep working once `check` is wired in.
#[tokio::test]
async fn stock_cli_requests_pass() {
    let gw = Gw::start().await;
    let r = get(&gw.url(APPS), Some(CI_ALL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let origin = format!("http://{}", gw.addr());
    let texts = exec_texts(
        &gw,
        &[
            ("Command", "echo hi"),
            ("Origin", &origin),
            ("Tty", "false"),
        ],
    )
    .await;
    assert!(!texts.contains("gateway:"), "{texts}");
    assert!(
        gw.staging
            .requests()
            .iter()
            .any(|r| r.target.ends_with("/exec")),
        "the exec did not reach the rack"
    );
}
