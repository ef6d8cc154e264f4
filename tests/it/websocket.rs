//! Websocket sessions through the gateway (convox-api.md §1.4, §7.2, §8):
//! frames must pass 1:1 and byte-identical (text frames may be invalid
//! UTF-8, the empty binary frame is EOF, the exit marker is its own frame),
//! pings must reach the rack, and refusals must arrive in-band in exactly
//! the shape the stock CLI understands.

use futures_util::{SinkExt, StreamExt};
use rack_gateway::rack::ws::{self, ClientConn, Frame, Opcode, EXIT_MARKER};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";
const PROD_EXEC: &str = "/racks/production/apps/myapp/processes/web-abc12/exec";
const PROD_LOGS: &str = "/racks/production/apps/myapp/logs";

/// An exec websocket as `convox exec` opens it.
async fn exec(gw: &Gw, command: &str, extra: &[(&str, &str)]) -> ClientConn {
    let auth = basic(CI_STAGING);
    let mut headers = vec![("Authorization", auth.as_str()), ("Command", command)];
    headers.extend_from_slice(extra);
    let c = ws::client_connect(gw.addr(), EXEC, &headers).await.unwrap();
    assert_eq!(c.status, 101);
    c
}

fn eof() -> Frame {
    Frame::binary(Vec::new())
}

fn marker(code: i32) -> Frame {
    Frame::text(format!("{EXIT_MARKER}:{code}\n"))
}

/// The rack's ending as seen by the client: the empty binary frame, then
/// close 1000.
fn assert_rack_ending(frames: &[Frame]) {
    let n = frames.len();
    assert!(n >= 2, "{frames:?}");
    assert_eq!(frames[n - 2], eof(), "{frames:?}");
    assert_eq!(frames[n - 1].close_code(), Some(1000), "{frames:?}");
}

/// Raw terminal bytes are not UTF-8: a multibyte character split across
/// reads, or binary output. Both directions must carry them untouched and
/// keep the Text opcode, or `convox exec` breaks.
#[tokio::test]
async fn invalid_utf8_text_frames_pass_both_ways() {
    let gw = Gw::start().await;
    let split = Frame::text(vec![0xe2, 0x82]);
    let garbage = Frame::text(vec![0xff, 0x00, 0x41]);

    let mut c = exec(&gw, "cat", &[]).await;
    c.send(&split).await.unwrap();
    assert_eq!(recv(&mut c).await, Some(split.clone()));
    c.send(&garbage).await.unwrap();
    assert_eq!(recv(&mut c).await, Some(garbage.clone()));
    c.send(&eof()).await.unwrap();
    let rest = read_until_eof(&mut c).await;
    assert_eq!(rest[0], marker(0), "{rest:?}");
    assert_rack_ending(&rest);

    let rec = gw.staging.last_request().unwrap();
    assert!(rec.websocket);
    assert_eq!(rec.frames_in, [split, garbage, eof()]);

    let mut c = exec(&gw, "emit-invalid-utf8", &[("Disable-Stdin", "true")]).await;
    let frames = read_until_eof(&mut c).await;
    assert_eq!(frames[0], Frame::text(vec![0x66, 0xff, 0xfe, 0x0a]));
    assert_eq!(frames[1], marker(0), "{frames:?}");
    assert_rack_ending(&frames);
}

/// The client's stdin EOF reaches the rack as an empty binary frame, and
/// the rack's exit marker reaches the client as a frame of its own (the CLI
/// parses the code from a single read), followed by the EOF frame.
#[tokio::test]
async fn eof_frames_and_exit_marker_are_relayed_as_is() {
    let gw = Gw::start().await;
    for code in [0, 1, 2, 42, 127, 255] {
        let mut c = exec(&gw, &format!("exit {code}"), &[]).await;
        let line = Frame::text(format!("line for {code}\n"));
        c.send(&line).await.unwrap();
        assert_eq!(recv(&mut c).await, Some(line.clone()));
        c.send(&eof()).await.unwrap();
        let frames = read_until_eof(&mut c).await;
        assert_eq!(frames.len(), 3, "exit {code}: {frames:?}");
        assert_eq!(frames[0], marker(code));
        assert_eq!(ws::parse_exit_code(&frames[0].payload), Some(code));
        assert_rack_ending(&frames);

        let rec = gw.staging.last_request().unwrap();
        assert_eq!(rec.header("command"), Some(format!("exit {code}")));
        assert_eq!(rec.frames_in, [line, eof()], "exit {code}");
    }

    // Output written right before the marker must not merge into it.
    let mut c = exec(&gw, "echo hi there", &[("Disable-Stdin", "true")]).await;
    let frames = read_until_eof(&mut c).await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0], Frame::text("hi there\n"));
    assert_eq!(frames[1], marker(0));
    assert_rack_ending(&frames);
}

/// Frames are relayed 1:1 whatever their size or rate: a frame larger than
/// any copy buffer arrives whole, and a burst arrives as the same number of
/// frames with the same payloads.
#[tokio::test]
async fn large_frames_and_bursts_pass_one_to_one() {
    let gw = Gw::start().await;
    let mut c = exec(&gw, "cat", &[]).await;
    let big = Frame::text(
        (0..100 * 1024)
            .map(|i| (i % 256) as u8)
            .collect::<Vec<u8>>(),
    );
    c.send(&big).await.unwrap();
    assert_eq!(recv(&mut c).await, Some(big.clone()));

    let burst: Vec<Frame> = (0..50)
        .map(|i| Frame::text(format!("burst {i:02}\n")))
        .collect();
    for f in &burst {
        c.send(f).await.unwrap();
    }
    let mut echoed = Vec::new();
    for _ in 0..burst.len() {
        echoed.push(recv(&mut c).await.expect("an echo"));
    }
    assert_eq!(echoed, burst);

    c.send(&eof()).await.unwrap();
    let rest = read_until_eof(&mut c).await;
    assert_eq!(rest.len(), 3, "no extra frames: {rest:?}");
    assert_eq!(rest[0], marker(0));

    let rec = gw.staging.last_request().unwrap();
    let mut sent = vec![big];
    sent.extend(burst);
    sent.push(eof());
    assert_eq!(rec.frames_in.len(), sent.len());
    assert_eq!(rec.frames_in, sent);
}

/// The CLI pings every 5 s and relies on the rack's pong; the gateway must
/// neither swallow the ping nor answer it itself with something else.
#[tokio::test]
async fn pings_reach_the_rack_and_pongs_come_back() {
    let gw = Gw::start().await;
    let mut c = exec(&gw, "cat", &[]).await;
    c.send(&Frame::ping(b"hello".to_vec())).await.unwrap();
    assert_eq!(recv(&mut c).await, Some(Frame::pong(b"hello".to_vec())));
    c.send(&Frame::text("after ping\n")).await.unwrap();
    assert_eq!(recv(&mut c).await, Some(Frame::text("after ping\n")));
    c.send(&eof()).await.unwrap();
    let rest = read_until_eof(&mut c).await;
    assert_eq!(rest[0], marker(0));
}

/// Reads a refusal, answers the close, and checks the connection then ends.
async fn refused_frames(mut c: ClientConn) -> Vec<Frame> {
    assert_eq!(c.status, 101, "refusals are in-band, not a bad handshake");
    let frames = read_until_eof(&mut c).await;
    c.send(&Frame::close(1000, "")).await.unwrap();
    assert_eq!(recv(&mut c).await, None, "nothing after the close");
    frames
}

/// Checks the exact refusal shape of §7.2 and returns the error line.
fn assert_in_band_refusal(frames: &[Frame], with_marker: bool) -> String {
    let mut expected_len = 3;
    if with_marker {
        expected_len += 1;
        assert_eq!(frames.get(1), Some(&marker(1)), "{frames:?}");
    }
    assert_eq!(frames.len(), expected_len, "{frames:?}");
    assert_eq!(frames[0].opcode, Opcode::Text, "{frames:?}");
    let line = String::from_utf8(frames[0].payload.clone()).unwrap();
    assert!(line.starts_with("ERROR: gateway: "), "{line:?}");
    assert!(line.ends_with('\n'), "{line:?}");
    assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
    assert_rack_ending(frames);
    line
}

/// Exec refusals carry the exit marker with code 1 so the CLI exits 1;
/// logs refusals must not (the CLI would print the marker literally). The
/// rack never sees a refused upgrade.
#[tokio::test]
async fn refusals_are_in_band_and_never_forwarded() {
    let gw = Gw::start().await;
    let wrong = basic("not-a-real-token-CCCCCCCCCCCCCCCCCCCCCCCCCCCCC");
    let staging = basic(CI_STAGING);
    let cases: [(&str, Option<&str>, &str); 3] = [
        ("no credentials", None, ""),
        ("wrong token", Some(&wrong), ""),
        ("token without the rack", Some(&staging), "production"),
    ];
    for (what, auth, needle) in cases {
        for (path, with_marker) in [(PROD_EXEC, true), (PROD_LOGS, false)] {
            let mut headers = vec![("Command", "ls")];
            if let Some(a) = auth {
                headers.push(("Authorization", a));
            }
            let c = ws::client_connect(gw.addr(), path, &headers).await.unwrap();
            let frames = refused_frames(c).await;
            let line = assert_in_band_refusal(&frames, with_marker);
            assert!(line.contains(needle), "{what} on {path}: {line:?}");
        }
    }
    assert_eq!(gw.forwarded_count(), 0);
}

/// `?command=` would override the authorised `Command` header at the rack
/// (§0.5, §8); the gateway refuses any query on a websocket route with a
/// plain 400 (canonicalization runs before the route is known, so this
/// refusal is not in-band) and forwards nothing.
#[tokio::test]
async fn websocket_query_strings_are_refused() {
    let gw = Gw::start().await;
    let auth = basic(CI_ALL);
    for query in ["?command=id", "?", "?follow=true"] {
        for path in [EXEC, "/racks/staging/apps/myapp/logs"] {
            let target = format!("{path}{query}");
            let mut c = ws::client_connect(
                gw.addr(),
                &target,
                &[("Authorization", &auth), ("Command", "ls")],
            )
            .await
            .unwrap();
            assert_eq!(c.status, 400, "{target}");
            let body = c.read_body().await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let msg = json["error"].as_str().unwrap();
            assert!(msg.starts_with("gateway: "), "{msg}");
            assert!(msg.contains("query"), "{msg}");
        }
    }
    assert_eq!(gw.forwarded_count(), 0);
}

/// An unreachable rack is reported the way each kind of request prints
/// best: in-band with the exit marker on exec, 502 JSON on REST.
#[tokio::test]
async fn rack_down_is_reported_in_band_and_as_502() {
    init();
    let port = free_port();
    let (running, _dir) = ConfigDir::new()
        .no_rack_discovery()
        .rack("down", &format!("http://127.0.0.1:{port}"))
        .ci(&[("ci", CI_ALL, "admin", "*")])
        .start()
        .await;

    let auth = basic(CI_ALL);
    let c = ws::client_connect(
        running.addr,
        "/racks/down/apps/myapp/processes/web-abc12/exec",
        &[("Authorization", &auth), ("Command", "ls")],
    )
    .await
    .unwrap();
    let frames = refused_frames(c).await;
    let line = assert_in_band_refusal(&frames, true);
    assert!(line.starts_with("ERROR: gateway: rack `down`"), "{line:?}");

    let c = ws::client_connect(
        running.addr,
        "/racks/down/apps/myapp/logs",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap();
    let frames = refused_frames(c).await;
    let line = assert_in_band_refusal(&frames, false);
    assert!(line.starts_with("ERROR: gateway: rack `down`"), "{line:?}");

    let r = get(
        &format!("http://{}/racks/down/apps?", running.addr),
        Some(CI_ALL),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(
        r.error().starts_with("gateway: rack `down`"),
        "{}",
        r.text()
    );
}

/// An independent, strict client library sees a well-formed session: the
/// log lines as text messages, the empty binary EOF, a clean close.
#[tokio::test]
async fn tungstenite_client_reads_logs() {
    let gw = Gw::start().await;
    let url = format!("ws://{}/racks/staging/apps/myapp/logs", gw.addr());
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Authorization", basic(CI_STAGING).parse().unwrap());
    h.insert("Follow", "false".parse().unwrap());
    let (mut socket, resp) =
        tokio::time::timeout(FRAME_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake within the timeout")
            .unwrap();
    assert_eq!(resp.status(), 101);

    let mut messages = Vec::new();
    while let Some(m) = tokio::time::timeout(FRAME_TIMEOUT, socket.next())
        .await
        .expect("message within the timeout")
    {
        let m = m.unwrap();
        let close = matches!(m, Message::Close(_));
        messages.push(m);
        if close {
            break;
        }
    }
    let lines: Vec<&str> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines.len(), 3, "{messages:?}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.ends_with(&format!("line {}\n", i + 1)), "{line:?}");
    }
    let n = messages.len();
    assert_eq!(messages[n - 2], Message::Binary(Vec::new().into()));
    match &messages[n - 1] {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected close 1000, got {other:?}"),
    }
    let _ = socket.close(None).await;
    let _ = socket.flush().await;
}

/// A silent session (a followed log with no new lines and no client pings)
/// is closed by the gateway's websocket idle timeout instead of living on.
#[tokio::test]
async fn idle_sessions_are_closed() {
    let gw = Gw::start_with("websocket:\n  idle_timeout: 1s\n").await;
    let mut c = ws::client_connect(
        gw.addr(),
        "/racks/staging/apps/myapp/logs",
        &[("Authorization", &basic(CI_STAGING))],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    for _ in 0..3 {
        let f = recv(&mut c).await.expect("a log line");
        assert_eq!(f.opcode, Opcode::Text);
    }
    // The gateway drops both connections: the client sees the end of the
    // stream (or a reset), never another data frame.
    let end = tokio::time::timeout(FRAME_TIMEOUT, c.recv())
        .await
        .expect("the idle session was closed");
    if let Ok(Some(f)) = end {
        assert_eq!(f.opcode, Opcode::Close, "unexpected frame: {f:?}");
    }
}
