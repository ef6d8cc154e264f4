//! Faults (issue 17), through the real binary: a rack that refuses
//! connections, resets mid-response, stalls before its headers or in the
//! middle of a body, or dies during a websocket session; the audit file's
//! disk filling up (a file-size limit set on the running gateway); `kill
//! -9` while audit records are being written; the policy directory turning
//! corrupt mid-run. Each fault must give the client a clear error, leave an
//! audit record with the outcome, and leave the gateway serving others (the
//! control request to a healthy rack in every test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rack_gateway::rack::ws::{self, Frame, Opcode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Only there to turn a hang into a failure.
const LIMIT: Duration = Duration::from_secs(30);

/// What a fake rack does with each connection once it has read the
/// request head.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Half a status line, then a TCP reset.
    ResetInHead,
    /// Headers promising 1000 bytes, 7 of them, then a TCP reset.
    ResetInBody,
    /// Nothing at all; the connection stays open.
    StallBeforeHeaders,
    /// Headers and one chunk of a chunked body, then nothing.
    StallInBody,
    /// A websocket handshake, one text frame, then the connection closes.
    DieInWebsocket,
    /// A 500 instead of 101 whose error text carries the rack password.
    RefuseUpgradeWithPassword,
}

/// A fake rack on a loopback port; it serves up to 64 connections.
async fn fake_rack(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_fault(stream, fault));
        }
    });
    addr
}

/// Reads a request head (at most 64 KiB).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[allow(deprecated)] // set_linger: the blocking close is what makes the reset
fn reset(stream: TcpStream) {
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}

async fn serve_fault(mut stream: TcpStream, fault: Fault) {
    let head = read_head(&mut stream).await;
    match fault {
        Fault::ResetInHead => {
            let _ = stream.write_all(b"HTTP/1.1 200 O").await;
            reset(stream);
        }
        Fault::ResetInBody => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"a\":1",
                )
                .await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            reset(stream);
        }
        Fault::StallBeforeHeaders => {
            tokio::time::sleep(LIMIT * 2).await;
        }
        Fault::StallInBody => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n[{\"a\":1\r\n")
                .await;
            tokio::time::sleep(LIMIT * 2).await;
        }
        Fault::DieInWebsocket => {
            let key = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream
                .write_all(&ws::encode(&Frame::text("hello\n"), None))
                .await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            reset(stream);
        }
        Fault::RefuseUpgradeWithPassword => {
            let body =
                format!("ERROR: cannot reach https://convox:{RACK_PASSWORD}@rack.internal\n");
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.flush().await;
        }
    }
}

/// A gateway (the binary) with rack `faulty` at `faulty`, rack `healthy`
/// a mock rack, an audit file, and `extra` gateway.yaml.
struct Setup {
    proc: Proc,
    audit: PathBuf,
    _dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
    _mock: rack_gateway::dev::mock_rack::MockRack,
}

async fn setup(faulty: SocketAddr, extra: &str, args: &[&str]) -> Setup {
    init();
    let mock = mock().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("faulty", &format!("http://{faulty}"))
        .rack("healthy", &mock.url())
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .extra(extra)
        .write();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let mut all = vec!["--audit-file", audit.to_str().unwrap()];
    all.extend_from_slice(args);
    let proc = Proc::serve(
        dir.path(),
        &all,
        &[("RACK_PW", RACK_PASSWORD), ("RACK_GATEWAY_LOG", "info")],
    )
    .await;
    Setup {
        proc,
        audit,
        _dir: dir,
        _logs: logs,
        _mock: mock,
    }
}

impl Setup {
    /// The control: the healthy rack still answers.
    async fn assert_serving(&self) {
        let r = get(&self.proc.url("/racks/healthy/apps?"), Some(CI_ALL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A REST fault before the rack's headers: 502 with a JSON error naming
/// the rack, one audit record with status 502 and the cause.
async fn refused_before_headers(faulty: SocketAddr, extra: &str, cause: &str) {
    let s = setup(faulty, extra, &[]).await;
    s.assert_serving().await;
    let r = tokio::time::timeout(LIMIT, get(&s.proc.url("/racks/faulty/apps?"), Some(CI_ALL)))
        .await
        .expect("answered within the limit");
    assert_eq!(r.status, 502, "{}", r.text());
    let error = r.error();
    assert!(error.contains("faulty"), "{error}");
    assert!(error.contains(cause), "{error}");
    s.assert_serving().await;
    let audit = s.audit.clone();
    let records = {
        let proc = s.proc;
        proc.stop().await;
        read(&audit)
    };
    let faulty: Vec<Value> = records
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "request" && r["rack"] == "faulty")
        .collect();
    assert_eq!(faulty.len(), 1, "{faulty:?}");
    assert_eq!(faulty[0]["status"], 502, "{:?}", faulty[0]);
    assert!(
        faulty[0]["reason"].as_str().unwrap_or("").contains(cause),
        "{:?}",
        faulty[0]
    );
}

#[tokio::test]
async fn rack_refusing_connections_gives_502_and_a_record() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    refused_before_headers(addr, "", "refused").await;
}

#[tokio::test]
async fn rack_resetting_in_its_headers_gives_502_and_a_record() {
    refused_before_headers(fake_rack(Fault::ResetInHead).await, "", "").await;
}

#[tokio::test]
async fn rack_stalling_before_headers_gives_502_after_the_idle_timeout() {
    refused_before_headers(
        fake_rack(Fault::StallBeforeHeaders).await,
        "timeouts:\n  idle: 1s\n",
        "idle timeout",
    )
    .await;
}

/// Sends a raw GET and reads the answer until the gateway closes the
/// connection: (status line, body bytes after the head).
async fn raw_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic(CI_ALL)
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut all))
        .await
        .expect("the gateway ends the response within the limit");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    (head, all[end + 4..].to_vec())
}

/// A REST fault after the rack's headers: the client sees the status and
/// then a response cut short (never a complete-looking body); the record
/// says the response stream failed.
async fn failed_mid_stream(fault: Fault, extra: &str) {
    let s = setup(fake_rack(fault).await, extra, &[]).await;
    let (head, body) = raw_get(s.proc.addr, "/racks/faulty/apps?").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let complete = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.ends_with(b"0\r\n\r\n")
    } else {
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok());
        len == Some(body.len())
    };
    assert!(
        !complete,
        "a failed stream looked complete: {head}\n{body:?}"
    );
    s.assert_serving().await;
    let audit = s.audit.clone();
    s.proc.stop().await;
    let records: Vec<Value> = read(&audit)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "request" && r["rack"] == "faulty")
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let reason = records[0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("the response stream failed"),
        "{:?}",
        records[0]
    );
}

#[tokio::test]
async fn rack_resetting_mid_body_cuts_the_response_and_records_it() {
    failed_mid_stream(Fault::ResetInBody, "").await;
}

#[tokio::test]
async fn rack_stalling_mid_body_cuts_the_response_after_the_idle_timeout() {
    failed_mid_stream(Fault::StallInBody, "timeouts:\n  idle: 1s\n").await;
}

/// The rack dies (a TCP reset) during a logs session: the client gets what
/// the rack sent, then an in-band `ERROR:` line, the EOF frame and a close
/// frame instead of a hang or a bare EOF; the session-end record says
/// `error`; others are still served.
#[tokio::test]
async fn rack_dying_during_a_websocket_session_ends_it_and_records_it() {
    let s = setup(fake_rack(Fault::DieInWebsocket).await, "", &[]).await;
    let mut c = faulty_logs(s.proc.addr).await;
    assert_eq!(recv(&mut c).await, Some(Frame::text("hello\n")));
    let mut rest = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(LIMIT, c.recv()).await {
            Ok(Ok(Some(f))) => {
                let close = f.opcode == Opcode::Close;
                rest.push(f);
                if close {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => panic!("the session hangs after the rack died: {rest:?}"),
        }
    }
    s.assert_serving().await;
    let audit = s.audit.clone();
    s.proc.stop().await;
    let records: Vec<Value> = read(&audit)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["rack"] == "faulty")
        .collect();
    assert!(
        records.iter().any(|r| r["event"] == "session-start"),
        "no session-start record: {records:?}"
    );
    let end: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "session-end")
        .collect();
    assert_eq!(end.len(), 1, "{records:?}");
    assert_eq!(end[0]["reason"], "error", "{:?}", end[0]);
    // What the client is told, in the order the CLI reads it: the reason
    // (printed), the EOF frame (it stops reading there), a close.
    assert_eq!(
        rest.first(),
        Some(&Frame::text(
            "ERROR: gateway: the rack's connection ended before the session did (the command's outcome is unknown)\n"
        )),
        "{rest:?}"
    );
    assert_eq!(rest.get(1), Some(&Frame::binary(Vec::new())), "{rest:?}");
    assert_eq!(
        rest.get(2).and_then(Frame::close_code),
        Some(1011),
        "{rest:?}"
    );
}

/// `ci-all`'s websocket to the faulty rack's log stream, upgraded.
async fn faulty_logs(addr: SocketAddr) -> ws::ClientConn {
    let auth = basic(CI_ALL);
    let headers = [("Authorization", auth.as_str())];
    let c = ws::client_connect(addr, "/racks/faulty/apps/myapp/logs", &headers)
        .await
        .unwrap();
    assert_eq!(c.status, 101);
    c
}

/// A rack that refuses a websocket route with an error naming its own
/// password: the client is told in-band what the rack said, with the
/// password scrubbed there and in the audit record, as on REST errors.
/// Control: the healthy rack still serves.
#[tokio::test]
async fn a_refused_upgrade_never_shows_the_rack_password() {
    let s = setup(fake_rack(Fault::RefuseUpgradeWithPassword).await, "", &[]).await;
    let mut c = faulty_logs(s.proc.addr).await;
    let first = recv(&mut c).await.expect("an in-band refusal");
    let line = String::from_utf8(first.payload).unwrap();
    assert!(
        line.starts_with("ERROR: gateway: rack answered 500"),
        "{line:?}"
    );
    assert!(line.contains("cannot reach https://convox:"), "{line:?}");
    assert!(!line.contains(RACK_PASSWORD), "{line:?}");
    drop(c);
    s.assert_serving().await;
    s.proc.stop().await;
    let audit = read(&s.audit);
    assert!(audit.contains("rack answered 500"), "{audit}");
    assert!(!audit.contains(RACK_PASSWORD), "{audit}");
}

/// The gateway binary (which handles SIGXFSZ itself, so a file-size limit
/// makes audit writes fail with EFBIG instead of killing the process);
/// `prlimit` sets and lifts that limit on the running gateway: a disk that
/// fills up and gets space back.
struct Limited(Proc);

impl Limited {
    async fn start(dir: &Path, audit: &Path, args: &[&str]) -> Limited {
        let mut all = vec!["--audit-file", audit.to_str().unwrap()];
        all.extend_from_slice(args);
        Limited(Proc::serve_racks(dir, &all, &[("RACK_GATEWAY_LOG", "info")]).await)
    }

    /// `prlimit --fsize=<soft>:` on the gateway (the hard limit stays, so
    /// lifting it again needs no privilege).
    fn set_file_limit(&self, soft: &str) {
        let ok = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", self.0.pid()))
            .arg(format!("--fsize={soft}:"))
            .status()
            .unwrap();
        assert!(ok.success(), "prlimit failed");
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// SIGTERM; the gateway must exit cleanly.
    async fn stop(self) {
        self.0.stop().await;
    }
}

/// Waits until the audit file stops growing; returns its length.
async fn settled_len(file: &Path) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..100 {
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if len == last && len > 0 {
            return len;
        }
        last = len;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the audit file never settled");
}

/// [`Limited`] with `args` in front of one mock rack `healthy`: what must
/// outlive the gateway (config and log directories, mock rack), the
/// gateway, and its audit file.
async fn disk_full(
    args: &[&str],
) -> (
    (
        tempfile::TempDir,
        tempfile::TempDir,
        rack_gateway::dev::mock_rack::MockRack,
    ),
    Limited,
    PathBuf,
) {
    init();
    let mock = mock().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("healthy", &mock.url())
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .write();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let g = Limited::start(dir.path(), &audit, args).await;
    ((dir, logs, mock), g, audit)
}

/// Waits until the metrics at `metrics` report the audit file healthy
/// (after the disk got space back).
async fn healthy_again(metrics: &str) {
    eventually("metrics report the audit file healthy again", || async {
        let m = get(metrics, Some(CI_ALL)).await.text();
        if m.lines().any(|l| l == "rack_gateway_audit_file_healthy 1") {
            Ok(())
        } else {
            Err("still unhealthy".to_string())
        }
    })
    .await;
}

/// Stops the gateway; the audit chain it wrote must still verify.
async fn stop_and_verify(g: Limited, audit: &Path) {
    g.stop().await;
    let (code, out, err) = audit_verify(audit);
    assert_eq!(code, Some(0), "{out}{err}");
}

/// Fail-closed: once the audit file cannot grow, rack traffic and readyz
/// answer 503 with a JSON reason; when space returns, requests are served
/// again by themselves and the chain still verifies.
#[tokio::test]
async fn audit_disk_full_fail_closed_refuses_with_503_and_recovers() {
    let (_keep, g, audit) = disk_full(&["--audit-fail-closed"]).await;
    let apps = g.url("/racks/healthy/apps?");
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);
    let full = settled_len(&audit).await;
    g.set_file_limit(&full.to_string());
    let refused = eventually("requests refused while the disk is full", || async {
        let r = get(&apps, Some(CI_ALL)).await;
        if r.status == 503 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    })
    .await;
    assert!(
        refused.error().contains("audit log cannot be written"),
        "{}",
        refused.text()
    );
    let ready = get(&g.url("/_gateway/readyz"), None).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("audit"), "{}", ready.text());

    g.set_file_limit("unlimited");
    eventually("requests served again once space returns", || async {
        let r = get(&apps, Some(CI_ALL)).await;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text()))
        }
    })
    .await;
    assert_eq!(get(&g.url("/_gateway/readyz"), None).await.status, 200);
    stop_and_verify(g, &audit).await;
}

/// Fail-open: with the audit file unable to grow, requests are still
/// served, and the metrics say the audit file is unhealthy; afterwards the
/// file still verifies.
#[tokio::test]
async fn audit_disk_full_fail_open_keeps_serving_and_says_so() {
    let (_keep, g, audit) = disk_full(&[]).await;
    let apps = g.url("/racks/healthy/apps?");
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);
    let full = settled_len(&audit).await;
    g.set_file_limit(&full.to_string());
    let metrics = g.url("/_gateway/metrics");
    eventually("metrics report the audit file unhealthy", || async {
        let r = get(&apps, Some(CI_ALL)).await;
        if r.status != 200 {
            return Err(format!(
                "refused in fail-open mode: {} {}",
                r.status,
                r.text()
            ));
        }
        let m = get(&metrics, Some(CI_ALL)).await.text();
        if m.lines().any(|l| l == "rack_gateway_audit_file_healthy 0") {
            Ok(())
        } else {
            Err(m
                .lines()
                .filter(|l| l.contains("audit_file"))
                .collect::<Vec<_>>()
                .join("; "))
        }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);
    }
    // Fail-open keeps serving and says so in readyz too.
    let ready = get(&g.url("/_gateway/readyz"), None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains("fail-open"), "{}", ready.text());
    g.set_file_limit("unlimited");
    healthy_again(&metrics).await;
    stop_and_verify(g, &audit).await;
}

/// Fail-closed with `--audit-fsync`: while the audit file cannot grow, no
/// answer completes (the first one's stream is cut, its record being
/// unwritable; the rest are 503 JSON) and none hangs; once space returns
/// answers complete again, and each complete answer has its record.
#[tokio::test]
async fn audit_disk_full_fail_closed_with_fsync_completes_no_unrecorded_answer() {
    let (_keep, g, audit) = disk_full(&["--audit-fail-closed", "--audit-fsync"]).await;
    let apps = g.url("/racks/healthy/apps?");
    let mut answered = vec![get_checked(&apps)
        .await
        .expect("served before the disk fills")];
    let full = settled_len(&audit).await;
    g.set_file_limit(&full.to_string());
    for _ in 0..5 {
        let r = tokio::time::timeout(LIMIT, get_checked(&apps))
            .await
            .expect("an answer waiting for its record never hangs");
        assert_eq!(r, None, "an answer completed with its record unwritable");
    }
    let refused = get(&apps, Some(CI_ALL)).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.error().contains("audit log cannot be written"));
    g.set_file_limit("unlimited");
    let id = eventually("answers complete again once space returns", || async {
        get_checked(&apps)
            .await
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    answered.push(id);
    stop_and_verify(g, &audit).await;
    let text = read(&audit);
    for id in &answered {
        assert!(
            text.contains(&format!("\"request_id\":\"{id}\"")),
            "{id}: no record"
        );
    }
}

/// Fail-closed with `--audit-fsync`, an answer with no body (the HEAD of an
/// object: its head is the whole answer): the first one whose record
/// cannot be written gets 503 instead of the rack's 200, since the head
/// itself waits for the record. Control: the same HEAD before the disk
/// fills is answered 200 and recorded.
#[tokio::test]
async fn audit_disk_full_fail_closed_with_fsync_holds_a_bodiless_answer() {
    let (_keep, g, audit) = disk_full(&["--audit-fail-closed", "--audit-fsync"]).await;
    let object = g.url("/racks/healthy/apps/myapp/objects/generated/x.tgz");
    let head = || send("HEAD", &object, Some(CI_ALL), &[], Vec::new());
    let before = head().await;
    assert_eq!(before.status, 200, "HEAD before the disk fills");
    let id = before.headers["request-id"].to_str().unwrap().to_string();
    assert!(read(&audit).contains(&format!("\"request_id\":\"{id}\"")));
    let full = settled_len(&audit).await;
    g.set_file_limit(&full.to_string());
    let refused = tokio::time::timeout(LIMIT, head())
        .await
        .expect("a bodiless answer waiting for its record never hangs");
    assert_eq!(
        refused.status, 503,
        "HEAD answered with its record unwritable"
    );
    g.set_file_limit("unlimited");
    stop_and_verify(g, &audit).await;
}

/// Fail-open with `--audit-fsync`: while the audit file cannot grow,
/// answers still complete (none waits for the writer's retries) and each
/// one released without its record confirmed is counted in
/// `rack_gateway_audit_fsync_unconfirmed_total`, which is 0 before the disk
/// fills (control); once space returns the file is healthy again and the
/// chain verifies.
#[tokio::test]
async fn audit_disk_full_fail_open_with_fsync_serves_and_counts_unconfirmed_answers() {
    let (_keep, g, audit) = disk_full(&["--audit-fsync"]).await;
    let apps = g.url("/racks/healthy/apps?");
    let metrics = g.url("/_gateway/metrics");
    let unconfirmed = |m: String| {
        m.lines()
            .find_map(|l| l.strip_prefix("rack_gateway_audit_fsync_unconfirmed_total "))
            .map(|v| v.parse::<f64>().unwrap())
    };
    assert!(
        get_checked(&apps).await.is_some(),
        "served before the disk fills"
    );
    let m = get(&metrics, Some(CI_ALL)).await.text();
    assert_eq!(unconfirmed(m.clone()), Some(0.0), "{m}");
    let full = settled_len(&audit).await;
    g.set_file_limit(&full.to_string());
    eventually("answers released unconfirmed are counted", || async {
        let r = tokio::time::timeout(LIMIT, get_checked(&apps))
            .await
            .expect("a fail-open answer never hangs on its record");
        if r.is_none() {
            return Err("an answer did not complete in fail-open mode".into());
        }
        let m = get(&metrics, Some(CI_ALL)).await.text();
        match unconfirmed(m.clone()) {
            Some(n) if n >= 1.0 => Ok(()),
            _ => Err(m
                .lines()
                .filter(|l| l.contains("audit"))
                .collect::<Vec<_>>()
                .join("; ")),
        }
    })
    .await;
    g.set_file_limit("unlimited");
    healthy_again(&metrics).await;
    stop_and_verify(g, &audit).await;
}

/// The control for the held-back last frame: without `--audit-fsync` a
/// streamed answer is passed on as it comes, so the client reads the
/// rack's first chunk while the rack still holds the rest back.
#[tokio::test]
async fn without_audit_fsync_a_streamed_answer_is_not_held_back() {
    let s = setup(
        fake_rack(Fault::StallInBody).await,
        "timeouts:\n  idle: 10m\n",
        &[],
    )
    .await;
    let mut c = TcpStream::connect(s.proc.addr).await.unwrap();
    let req = format!(
        "GET /racks/faulty/apps? HTTP/1.1\r\nHost: gw\r\nAuthorization: {}\r\n\r\n",
        basic(CI_ALL)
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(LIMIT, async {
        while !seen.windows(7).any(|w| w == b"[{\"a\":1") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the first chunk arrives while the rack stalls");
    drop(c);
    s.assert_serving().await;
}

/// With `--audit-fsync`, each kind of answer reaches the client after its
/// record is on disk, so the file holds it the moment the answer is read:
/// a refusal (404 JSON), a rack answer, and a websocket session's 101
/// (its `session-start` record), the session then working as usual.
#[tokio::test]
async fn with_audit_fsync_each_answer_follows_its_record() {
    let s = setup(
        fake_rack(Fault::DieInWebsocket).await,
        "",
        &["--audit-fsync"],
    )
    .await;
    let has_record = |id: &str| read(&s.audit).contains(&format!("\"request_id\":\"{id}\""));
    for (path, status) in [("/racks/healthy/nope", 404), ("/racks/healthy/apps?", 200)] {
        let r = get(&s.proc.url(path), Some(CI_ALL)).await;
        assert_eq!(r.status, status, "{}", r.text());
        let id = r.headers["request-id"].to_str().unwrap();
        assert!(has_record(id), "{path}: answered before its record");
    }
    let mut c = faulty_logs(s.proc.addr).await;
    let started = read(&s.audit)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|r| r["event"] == "session-start" && r["rack"] == "faulty");
    assert!(started, "the 101 came before the session-start record");
    assert_eq!(recv(&mut c).await, Some(Frame::text("hello\n")));
    drop(c);
    s.assert_serving().await;
    s.proc.stop().await;
}

/// A gateway (the binary, `--audit-fsync`) under 4 concurrent clients,
/// killed with SIGKILL once 200 requests were answered. Returns the config
/// directory, the audit file, the answered request ids and the arguments.
struct Killed {
    dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
    _mock: rack_gateway::dev::mock_rack::MockRack,
    audit: PathBuf,
    answered: Vec<String>,
}

const KILL_ENV: [(&str, &str); 2] = [("RACK_PW", RACK_PASSWORD), ("RACK_GATEWAY_LOG", "info")];

fn kill_args(audit: &Path) -> Vec<String> {
    vec![
        "--audit-file".into(),
        audit.display().to_string(),
        "--audit-fsync".into(),
    ]
}

async fn kill_9_under_load() -> Killed {
    init();
    let mock = mock().await;
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("healthy", &mock.url())
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .write();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let args = kill_args(&audit);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::serve(dir.path(), &args, &KILL_ENV).await;
    let apps = p.url("/racks/healthy/apps?");
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (apps, answered) = (apps.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..400 {
                let Ok(Some(id)) = tokio::time::timeout(LIMIT, get_checked(&apps)).await else {
                    return;
                };
                answered.lock().unwrap().push(id);
            }
        }));
    }
    eventually("200 requests answered", || async {
        let n = answered.lock().unwrap().len();
        if n >= 200 {
            Ok(())
        } else {
            Err(format!("{n} answered"))
        }
    })
    .await;
    p.signal("-KILL");
    eventually("the gateway is dead", || {
        let dead = p.has_exited();
        async move {
            if dead {
                Ok(())
            } else {
                Err("alive".into())
            }
        }
    })
    .await;
    for t in tasks {
        t.await.unwrap();
    }
    drop(p);
    let answered = answered.lock().unwrap().clone();
    Killed {
        dir,
        _logs: logs,
        _mock: mock,
        audit,
        answered,
    }
}

/// `kill -9` during heavy audit writing: the file verifies (or reports a
/// cut-off last line as truncation); a gateway restarted on it resumes the
/// chain, which verifies. A last line cut short (what a kill in mid-write
/// leaves; forced here, as the kill rarely lands there) is reported by
/// `audit verify` as truncation, and the gateway refuses to start on it
/// with what to do, rather than dropping it silently.
#[tokio::test]
async fn kill_9_during_audit_writing_then_restart_resumes_the_chain() {
    let k = kill_9_under_load().await;
    let text = read(&k.audit);
    let (code, out, err) = audit_verify(&k.audit);
    assert!(
        code == Some(0) || err.contains("truncated"),
        "after kill -9: {out}{err}"
    );
    let body = text[..text.rfind('\n').map_or(0, |i| i + 1)].to_owned();
    std::fs::write(&k.audit, &body).unwrap();
    let args = kill_args(&k.audit);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::serve(k.dir.path(), &args, &KILL_ENV).await;
    for _ in 0..5 {
        let r = get(&p.url("/racks/healthy/apps?"), Some(CI_ALL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    p.stop().await;
    let (code, out, err) = audit_verify(&k.audit);
    assert_eq!(code, Some(0), "{out}{err}");
    let resumed = read(&k.audit);
    assert!(
        resumed.starts_with(&body) && resumed.len() > body.len(),
        "the chain did not resume"
    );

    let last_start = body[..body.len() - 1].rfind('\n').map_or(0, |i| i + 1);
    let cut = &body[..last_start + (body.len() - last_start) / 2];
    std::fs::write(&k.audit, cut).unwrap();
    let (code, out, err) = audit_verify(&k.audit);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("truncated"), "{err}");
    let mut serve = vec!["serve", "--config", k.dir.path().to_str().unwrap()];
    serve.extend_from_slice(&args);
    let (code, out, err) = run(&serve, &KILL_ENV).await;
    assert_ne!(code, Some(0), "started on a cut-off audit file: {out}{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains("cut off") && said.contains("audit verify"),
        "{said}"
    );
    assert_eq!(read(&k.audit), cut, "the cut-off line was dropped");
}

/// With `--audit-fsync`, every request a client saw answered before a
/// `kill -9` has its record: the gateway holds back each answer's last
/// frame until its record is written and fsynced (group commit: one
/// fsync per batch of records).
#[tokio::test]
async fn kill_9_with_audit_fsync_keeps_every_answered_record() {
    let k = kill_9_under_load().await;
    let recorded: std::collections::HashSet<String> = read(&k.audit)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = k
        .answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record: {missing:?}",
        missing.len(),
        k.answered.len()
    );
}

/// One GET; the request id of a complete 200 answer, `None` once the
/// gateway is gone.
async fn get_checked(url: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let req = http::Request::get(url)
        .header("Authorization", basic(CI_ALL))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client.request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let id = resp.headers().get("request-id")?.to_str().ok()?.to_owned();
    resp.into_body().collect().await.ok()?;
    Some(id)
}

/// `GET /_gateway/status` from loopback.
async fn status(p: &Proc) -> Value {
    let r = get(&p.url("/_gateway/status"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The policy directory disappears mid-run, then comes back with a
/// gateway.yaml that is not even UTF-8, then is fixed: the last good
/// config serves throughout, the status shows each error, and recovery
/// needs nobody.
#[tokio::test]
async fn policy_directory_deleted_or_corrupt_mid_run_keeps_the_last_good_config() {
    init();
    let mock = mock().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = ConfigDir::new()
        .no_rack_discovery()
        .rack("healthy", &mock.url())
        .ci(&[("ci-all", CI_ALL, "admin", "*")])
        .write();
    let live = parent.path().join("config");
    let aside = parent.path().join("config.aside");
    copy_dir(dir.path(), &live);
    let p = Proc::serve(
        &live,
        &["--poll-interval", "1s"],
        &[("RACK_PW", RACK_PASSWORD), ("RACK_GATEWAY_LOG", "info")],
    )
    .await;
    let apps = p.url("/racks/healthy/apps?");
    let good = status(&p).await["version"].clone();
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);

    let until_failure = |needle: &'static str| {
        let p = &p;
        eventually("the status shows the reload failure", move || async move {
            let s = status(p).await;
            let current = s["consecutive_failures"].as_u64().unwrap_or(0) >= 1;
            match s["last_error"].as_str() {
                Some(e) if current && e.contains(needle) => Ok(s),
                _ => Err(s.to_string()),
            }
        })
    };

    std::fs::rename(&live, &aside).unwrap();
    let s = until_failure("gateway.yaml").await;
    assert_eq!(s["version"], good, "{s}");
    let r = get(&apps, Some(CI_ALL)).await;
    assert_eq!(r.status, 200, "the last good config serves: {}", r.text());

    std::fs::rename(&aside, &live).unwrap();
    let gateway = live.join("gateway.yaml");
    let yaml = std::fs::read(&gateway).unwrap();
    std::fs::write(
        &gateway,
        [&yaml[..20], &[0xff, 0xfe, 0x00][..], &yaml[20..]].concat(),
    )
    .unwrap();
    let s = until_failure("gateway.yaml").await;
    assert_eq!(s["version"], good, "{s}");
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);

    std::fs::write(&gateway, &yaml).unwrap();
    eventually("recovery without intervention", || async {
        let s = status(&p).await;
        if s["consecutive_failures"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(status(&p).await["version"], good);
    assert_eq!(get(&apps, Some(CI_ALL)).await.status, 200);
    p.stop().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
