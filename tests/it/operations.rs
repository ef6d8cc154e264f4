//! Operating the gateway: the audit file under load and its verification,
//! redaction across every output, fail-closed auditing, metrics, graceful
//! shutdown and readiness. Most tests run the real binary (with the mock
//! racks in this process) and stop it with SIGTERM.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rack_gateway::dev::mock_rack::MockRack;
use rack_gateway::rack::ws::{self, Frame, Opcode};
use rack_gateway::server::listener::Running;
use serde_json::Value;

use crate::support::*;

const APPS: &str = "/racks/staging/apps?";
const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";
const WRONG: &str = "wrong-token-EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE";
/// Only there to turn a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(30);

fn records(file: &Path) -> Vec<Value> {
    read(file)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Racks `staging` and `production` (mock racks in this process); ci-staging
/// may use staging only, ci-all both.
fn repo(staging: &str, production: &str, extra: &str) -> tempfile::TempDir {
    standard_racks(staging, production).extra(extra).write()
}

/// The mock racks, config and log directories behind [`serve_audited`],
/// kept alive for the test.
struct Racks {
    staging: MockRack,
    production: MockRack,
    _repo: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

/// The standard racks (mock racks in this process), as `configure` leaves
/// them, served by the binary with `args`, `env` and the audit file it
/// returns (outside the config directory, whose changes it would watch).
async fn serve_audited(
    configure: impl FnOnce(ConfigDir) -> ConfigDir,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Racks, PathBuf, Proc) {
    init();
    let staging = mock().await;
    let production = mock().await;
    let repo = configure(standard_racks(&staging.url(), &production.url())).write();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let mut all = vec!["--audit-file", audit.to_str().unwrap()];
    all.extend_from_slice(args);
    let p = Proc::serve_racks(repo.path(), &all, env).await;
    let racks = Racks {
        staging,
        production,
        _repo: repo,
        _logs: logs,
    };
    (racks, audit, p)
}

async fn upload(url: &str, token: &str, body: Vec<u8>) -> Resp {
    send(
        "POST",
        url,
        Some(token),
        &[("Content-Type", "application/octet-stream")],
        body,
    )
    .await
}

/// 8 concurrent clients × 50 requests (reads, uploads, refusals): every
/// forwarded request has exactly one completed allow record, every refusal
/// one deny record, and the file verifies.
#[tokio::test]
async fn audit_file_holds_one_completed_record_per_request_under_load() {
    let (racks, file, p) = serve_audited(|c| c, &[], &[("RACK_GATEWAY_LOG", "info")]).await;
    let base = p.url("");
    let mut tasks = Vec::new();
    for c in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let (mut allowed, mut refused, mut uploaded) = (0u64, 0u64, 0u64);
            for i in 0..50 {
                let r = if i % 25 == 7 {
                    get(&format!("{base}{APPS}"), Some(WRONG)).await
                } else if i % 25 == 13 {
                    get(&format!("{base}/racks/production/apps?"), Some(CI_STAGING)).await
                } else if c < 2 && i == 20 {
                    let body = vec![b'x'; 300_000];
                    uploaded += body.len() as u64;
                    upload(
                        &format!("{base}/racks/staging/apps/myapp/objects/tmp/c{c}.tgz?"),
                        CI_STAGING,
                        body,
                    )
                    .await
                } else {
                    get(&format!("{base}{APPS}"), Some(CI_STAGING)).await
                };
                match r.status {
                    200 => allowed += 1,
                    401 | 403 => refused += 1,
                    s => panic!("unexpected {s}: {}", r.text()),
                }
            }
            (allowed, refused, uploaded)
        }));
    }
    let (mut allowed, mut refused, mut uploaded) = (0, 0, 0);
    for t in tasks {
        let (a, r, u) = t.await.unwrap();
        allowed += a;
        refused += r;
        uploaded += u;
    }
    assert_eq!(allowed + refused, 400);
    assert_eq!(refused, 32);
    p.stop().await;

    assert_eq!(racks.production.requests().len(), 0);
    let seen = racks.staging.requests().len() as u64;
    assert_eq!(seen, allowed);
    let all = records(&file);
    let requests: Vec<&Value> = all.iter().filter(|r| r["event"] == "request").collect();
    let allow: Vec<&&Value> = requests
        .iter()
        .filter(|r| r["decision"] == "allow")
        .collect();
    assert_eq!(allow.len() as u64, seen, "allow records vs forwarded");
    assert_eq!(
        requests.iter().filter(|r| r["decision"] == "deny").count() as u64,
        refused
    );
    let mut ids = std::collections::HashSet::new();
    let mut bytes_in = 0;
    for r in &allow {
        for f in [
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "config",
            "request_id",
            "client_ip",
        ] {
            assert!(!r[f].is_null(), "{f} missing: {r}");
        }
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["client_ip"], "127.0.0.1");
        assert!(r["bytes_out"].as_u64().unwrap() > 0, "{r}");
        bytes_in += r["bytes_in"].as_u64().unwrap();
        assert!(ids.insert(r["request_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(bytes_in, uploaded);
    let (code, stdout, stderr) = audit_verify(&file);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("ok: {} records", all.len())),
        "{stdout}"
    );
}

/// A short real audit file: 10 requests through the binary.
async fn real_audit_file(dir: &Path) -> (PathBuf, Vec<String>) {
    init();
    let staging = mock().await;
    let production = mock().await;
    let repo = repo(&staging.url(), &production.url(), "");
    let file = dir.join("audit.jsonl");
    let p = Proc::serve_racks(repo.path(), &["--audit-file", file.to_str().unwrap()], &[]).await;
    for i in 0..10 {
        let token = if i == 4 { WRONG } else { CI_STAGING };
        get(&p.url(APPS), Some(token)).await;
    }
    p.stop().await;
    let lines: Vec<String> = read(&file).lines().map(str::to_string).collect();
    assert!(lines.len() >= 10, "{lines:?}");
    assert_eq!(audit_verify(&file).0, Some(0));
    (file, lines)
}

#[tokio::test]
async fn audit_verify_names_each_kind_of_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, lines) = real_audit_file(tmp.path()).await;
    let check = |name: &str, edit: &dyn Fn(&mut Vec<String>), line: usize, kind: &str| {
        let mut l = lines.clone();
        edit(&mut l);
        let path = tmp.path().join(name);
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let (code, stdout, stderr) = audit_verify(&path);
        assert_eq!(code, Some(1), "{name}: {stdout}{stderr}");
        let prefix = format!("{}:{line}: ", path.display());
        assert!(stderr.starts_with(&prefix), "{name}: {stderr}");
        assert!(stderr.contains(&format!(" {kind}: ")), "{name}: {stderr}");
    };
    assert!(file.exists());
    check(
        "edited.jsonl",
        &|l| l[2] = l[2].replace("\"status\":200", "\"status\":201"),
        3,
        "edited",
    );
    check(
        "deleted.jsonl",
        &|l| {
            l.remove(4);
        },
        5,
        "deleted",
    );
    check("swapped.jsonl", &|l| l.swap(5, 6), 6, "reordered");
    check(
        "inserted.jsonl",
        &|l| {
            let copy = l[1].clone();
            l.insert(7, copy);
        },
        8,
        "inserted",
    );
}

/// Every secret a client or the config hands the gateway stays out of
/// stdout, stderr (JSON logs at trace level) and the audit file.
#[tokio::test]
async fn secrets_reach_no_output_and_commands_are_redacted() {
    let (racks, file, p) = serve_audited(
        |c| c.extra("audit: {redact_commands: [\"mysql *\"]}\n"),
        &["--log-format", "json"],
        &[("RACK_GATEWAY_LOG", "trace")],
    )
    .await;
    const ENV_SECRET: &str = "envvalue-secret-31337";
    const PSQL_SECRET: &str = "hunter2-secret";
    const MYSQL_SECRET: &str = "secretvalue";
    const BAD_TOKEN: &str = "known-bad-token-FFFFFFFFFFFFFFFFFFFFFFFFFFFF";
    const KEY_SECRET: &str = "PRIVATEKEY-secret-material-4242";
    const VALUE_SECRET: &str = "formvalue-secret-777";
    let form = |pairs: &[(&str, &str)]| {
        rack_gateway::rack::form::encode_form(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    };
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];

    // env set: a release with a new value.
    let r = send(
        "POST",
        &p.url("/racks/staging/apps/myapp/releases"),
        Some(CI_STAGING),
        &ct,
        form(&[("env", &format!("NEW_SECRET={ENV_SECRET}"))]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        racks
            .staging
            .requests()
            .iter()
            .any(|q| String::from_utf8_lossy(&q.body).contains(ENV_SECRET)),
        "the value did reach the rack"
    );
    // run (POST processes) and exec with secrets in the command.
    let r = send(
        "POST",
        &p.url("/racks/staging/apps/myapp/services/web/processes"),
        Some(CI_STAGING),
        &[("Command", &format!("mysql -p{MYSQL_SECRET} -e 'select 1'"))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for command in [
        format!("psql --password={PSQL_SECRET} -h db"),
        format!("mysql -p{MYSQL_SECRET}"),
    ] {
        let auth = basic(CI_STAGING);
        let mut c = ws::client_connect(
            p.addr,
            EXEC,
            &[("Authorization", auth.as_str()), ("Command", &command)],
        )
        .await
        .unwrap();
        assert_eq!(c.status, 101);
        c.send(&Frame::binary(Vec::new())).await.unwrap();
        while let Ok(Ok(Some(f))) = tokio::time::timeout(DEADLINE, c.recv()).await {
            if f.opcode == Opcode::Close {
                break;
            }
        }
    }
    // A wrong token, and form fields named key and value.
    let r = get(&p.url(APPS), Some(BAD_TOKEN)).await;
    assert_eq!(r.status, 401);
    let r = send(
        "POST",
        &p.url("/racks/staging/certificates"),
        Some(CI_STAGING),
        &ct,
        form(&[
            ("pub", "-----BEGIN CERTIFICATE-----"),
            ("key", KEY_SECRET),
            ("value", VALUE_SECRET),
        ]),
    )
    .await;
    assert_ne!(r.status, 0);
    let out = p.stop().await;
    let audit = read(&file);

    // The records are there (so the search means something) and redacted.
    let recs = records(&file);
    let commands: Vec<&str> = recs.iter().filter_map(|r| r["command"].as_str()).collect();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("psql --password=[redacted")),
        "{commands:?}"
    );
    let mysql: Vec<_> = recs
        .iter()
        .filter(|r| r["operation"] == "run" || r["operation"] == "exec")
        .filter(|r| {
            r["command"]
                .as_str()
                .is_some_and(|c| !c.starts_with("psql"))
        })
        .collect();
    assert!(mysql.len() >= 2, "{recs:?}");
    for r in mysql {
        assert!(
            r["command"].as_str().unwrap().starts_with("[redacted"),
            "{r}"
        );
    }
    assert!(
        recs.iter().any(|r| r["env_changes"]
            .as_str()
            .is_some_and(|e| e.contains("NEW_SECRET"))),
        "{recs:?}"
    );
    assert!(out.contains("\"target\":\"audit\""), "JSON logs: {out}");

    let rack_b64 = basic(RACK_PASSWORD);
    let secrets = [
        ENV_SECRET,
        PSQL_SECRET,
        MYSQL_SECRET,
        BAD_TOKEN,
        CI_STAGING,
        RACK_PASSWORD,
        KEY_SECRET,
        VALUE_SECRET,
        rack_b64.trim_start_matches("Basic "),
    ];
    for s in secrets {
        let staging_b64 = basic(CI_STAGING);
        let bad_b64 = basic(BAD_TOKEN);
        for (what, text) in [("output", &out), ("audit file", &audit)] {
            assert!(!text.contains(s), "{s} in the {what}");
            assert!(!text.contains(staging_b64.trim_start_matches("Basic ")));
            assert!(!text.contains(bad_b64.trim_start_matches("Basic ")));
        }
    }
}

/// With `--audit-fail-closed`, a log that cannot be written (its directory
/// replaced by a file, which fails even for root) turns requests into 503s
/// that reach no rack; restoring the directory restores service, and the
/// chain is intact.
#[tokio::test]
async fn fail_closed_refuses_while_the_audit_log_cannot_be_written() {
    init();
    let staging = mock().await;
    let production = mock().await;
    let repo = repo(&staging.url(), &production.url(), "");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("audit.log");
    let p = Proc::serve_racks(
        repo.path(),
        &[
            "--audit-file",
            file.to_str().unwrap(),
            "--audit-fail-closed",
        ],
        &[],
    )
    .await;
    assert_eq!(get(&p.url(APPS), Some(CI_STAGING)).await.status, 200);

    let moved = tmp.path().join("logs.moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, "a regular file").unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        let r = get(&p.url(APPS), Some(CI_STAGING)).await;
        if r.status == 503 {
            assert!(
                r.error().contains("audit log cannot be written"),
                "{}",
                r.text()
            );
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(Instant::now() < until, "never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = staging.requests().len();
    for _ in 0..5 {
        let r = get(&p.url(APPS), Some(CI_STAGING)).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.error().contains("audit log cannot be written"));
    }
    assert_eq!(
        staging.requests().len(),
        seen,
        "a refused request was forwarded"
    );

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        let r = get(&p.url(APPS), Some(CI_STAGING)).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < until, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(staging.requests().len(), seen + 1);
    p.stop().await;
    let (code, stdout, stderr) = audit_verify(&file);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let recs = records(&file);
    let refused = recs
        .iter()
        .filter(|r| r["status"] == 503 && r["event"] == "request")
        .count();
    assert!(
        refused >= 6,
        "the refusals were recorded once writable: {refused}"
    );
}

/// Strict exposition checks: every sample is `name{labels} value` or
/// `name value`, belongs to a family with HELP and TYPE given before it.
fn check_exposition(text: &str) {
    assert!(text.ends_with('\n'));
    let mut help = std::collections::HashSet::new();
    let mut types = std::collections::HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(help.insert(name.to_string()), "HELP twice: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name = match series.split_once('{') {
            Some((n, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(valid_name(k), "{line}");
                    let _ = v;
                }
                assert!(labels.ends_with('"'), "{line}");
                n
            }
            None => series,
        };
        assert!(valid_name(name), "{line}");
        let family = if types.contains_key(name) {
            name
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                .unwrap_or_else(|| panic!("sample without TYPE: {line}"))
        };
        assert!(help.contains(family), "sample without HELP: {line}");
    }
}

#[tokio::test]
async fn metrics_parse_and_count_the_traffic() {
    let gw = Gw::start().await;
    for _ in 0..7 {
        assert_eq!(get(&gw.url(APPS), Some(CI_STAGING)).await.status, 200);
    }
    for _ in 0..2 {
        let r = get(&gw.url("/racks/production/apps?"), Some(CI_STAGING)).await;
        assert_eq!(r.status, 403);
    }
    assert_eq!(get(&gw.url(APPS), Some(WRONG)).await.status, 401);
    let r = get(&gw.url("/_gateway/metrics"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    check_exposition(&text);
    let s = |name: &str, labels: &[(&str, &str)]| crate::limits::sample(&text, name, labels);
    assert_eq!(
        s(
            "rack_gateway_requests_total",
            &[
                ("rack", "staging"),
                ("decision", "allow"),
                ("status", "200")
            ]
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        s(
            "rack_gateway_requests_total",
            &[("rack", "production"), ("decision", "deny")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        s("rack_gateway_rejected_total", &[("reason", "forbidden")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        s(
            "rack_gateway_rejected_total",
            &[("reason", "unauthenticated")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(s("rack_gateway_overhead_seconds_count", &[]).unwrap() >= 7.0);
    assert_eq!(s("rack_gateway_upstream_seconds_count", &[]), Some(7.0));
    assert_eq!(
        s("rack_gateway_upstream_seconds_bucket", &[("le", "+Inf")]),
        Some(7.0)
    );
    assert_eq!(gw.forwarded_count(), 7);

    // The reference parser: scripts/test.sh installs prometheus_client and
    // names its interpreter, and then it must run; a bare `cargo test`
    // without it skips this step only.
    let required = std::env::var("RACK_GATEWAY_TEST_PYTHON").ok();
    let python = required.clone().unwrap_or_else(|| "python3".into());
    let has_client = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_client || required.is_none(),
        "{python} cannot import prometheus_client"
    );
    if has_client {
        use std::io::Write;
        let mut child = std::process::Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/promparse.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promparse: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("prometheus_client not installed; skipping the reference parser");
    }
}

type Chunk = Result<http_body::Frame<Bytes>, Infallible>;
type ChanBody = StreamBody<futures_util::stream::BoxStream<'static, Chunk>>;

/// SIGTERM while an upload is in flight and an exec session is open: the
/// upload, fed by the test after the signal, completes with 200; the
/// session then gets close 1001; the process exits 0.
#[tokio::test]
async fn graceful_shutdown_finishes_requests_then_closes_sessions() {
    init();
    let staging = mock().await;
    let production = mock().await;
    let repo = repo(&staging.url(), &production.url(), "");
    let p = Proc::serve_racks(repo.path(), &[], &[]).await;

    // An exec session, open and working.
    let auth = basic(CI_STAGING);
    let mut session = ws::client_connect(
        p.addr,
        EXEC,
        &[("Authorization", auth.as_str()), ("Command", "echo hi")],
    )
    .await
    .unwrap();
    assert_eq!(session.status, 101);
    assert_eq!(
        recv(&mut session).await,
        Some(Frame::text("hi\n")),
        "the mock's echo output"
    );

    // An upload whose body the test feeds.
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 4;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(http_body::Frame::data(b)), rx))
    });
    let body: ChanBody = StreamBody::new(Box::pin(stream));
    let req = http::Request::post(p.url("/racks/staging/apps/myapp/objects/tmp/slow.tgz?"))
        .header("Authorization", basic(CI_STAGING))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", (CHUNK * CHUNKS).to_string())
        .body(body)
        .unwrap();
    let client: Client<_, ChanBody> = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::spawn(async move {
        let resp = client.request(req).await.expect("upload answered");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    tx.send(Bytes::from(vec![b'a'; CHUNK])).await.unwrap();
    let until = Instant::now() + DEADLINE;
    while !staging
        .requests()
        .iter()
        .any(|r| r.path().ends_with("/objects/tmp/slow.tgz"))
    {
        assert!(Instant::now() < until, "the upload never reached the rack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    p.sigterm();
    // The gateway stops accepting; the in-flight upload goes on.
    for _ in 1..CHUNKS {
        tx.send(Bytes::from(vec![b'b'; CHUNK])).await.unwrap();
    }
    drop(tx);
    let (status, body) = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("upload finishes")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rec = staging
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/objects/tmp/slow.tgz"))
        .unwrap();
    assert_eq!(rec.body_len, (CHUNK * CHUNKS) as u64);

    // Then the session is closed with 1001 (going away).
    let mut close = None;
    while let Some(f) = recv(&mut session).await {
        if f.opcode == Opcode::Close {
            close = Some(f);
            break;
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    let _ = session.send(&Frame::close(1000, "")).await;
    p.wait_exit().await;
}

#[tokio::test]
async fn readyz_follows_the_racks() {
    let gw = Gw::start().await;
    let r = get(&gw.url("/_gateway/readyz"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(r.json()["racks"]["staging"], "ok");

    let url = gw.url("/_gateway/readyz");
    let Gw {
        production,
        staging: _staging,
        running: _running,
        dir: _dir,
    } = gw;
    drop(production);
    let until = Instant::now() + DEADLINE;
    let r = loop {
        let r = get(&url, None).await;
        if r.status != 200 {
            break r;
        }
        assert!(Instant::now() < until, "still ready with a rack down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "not ready");
    assert_eq!(
        r.json()["racks"]["production"],
        "unreachable: connection refused",
        "{}",
        r.text()
    );
    assert_eq!(r.json()["racks"]["staging"], "ok");

    // A wrong rack password.
    let rack = mock().await;
    let dir = ConfigDir::new().rack("staging", &rack.url()).write();
    let cfg = load(dir.path(), &[("RACK_PW", "not-the-password")]);
    let gw = Running::start(&cfg).await.unwrap();
    let r = get(&format!("http://{}/_gateway/readyz", gw.addr), None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json()["racks"]["staging"],
        "the rack refused the gateway's credentials (401): check its password"
    );
}

/// Why a rack is unreachable reaches the callers allowed to see the status
/// — on the host, or through a proxy with `gateway status` (admin) — and
/// nobody else: a TLS failure (an https URL on a plain-http rack) is named
/// as one; an anonymous or viewer poll through a proxy gets the verdict.
#[tokio::test]
async fn readyz_says_why_a_rack_is_unreachable_to_status_callers() {
    const VIEWER: &str = "viewer-bot-token-0123456789abcdef0123";
    const ADMIN: &str = "admin-bot-token-0123456789abcdef01234";
    let plain = mock().await;
    let good = mock().await;
    let (running, _dir) = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &good.url())
        .rack("production", &plain.url().replace("http://", "https://"))
        .ci(&[
            ("viewer-bot", VIEWER, "viewer", "*"),
            ("admin-bot", ADMIN, "admin", "*"),
        ])
        .start()
        .await;
    let url = format!("http://{}/_gateway/readyz", running.addr);
    let fwd = [("X-Forwarded-For", "203.0.113.7")];
    let r = get(&url, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let why = r.json()["racks"]["production"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.starts_with("unreachable: TLS: "), "{}", r.text());
    assert_eq!(r.json()["racks"]["staging"], "ok", "{}", r.text());
    let r = send("GET", &url, Some(ADMIN), &fwd, "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json()["racks"]["production"],
        why.as_str(),
        "{}",
        r.text()
    );
    for token in [None, Some(VIEWER)] {
        let r = send("GET", &url, token, &fwd, "").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["status"], "not ready", "{}", r.text());
        assert!(r.json().get("racks").is_none(), "{}", r.text());
    }
    running.stop().await;
}

/// `/_gateway/status` and `/_gateway/metrics` answer a caller on the host
/// without credentials, but a request forwarded by a proxy (even one on
/// loopback) must authenticate and hold `gateway status` (admin has it,
/// viewer has not).
#[tokio::test]
async fn operator_endpoints_need_the_permission_through_a_proxy() {
    const VIEWER: &str = "viewer-bot-token-0123456789abcdef0123";
    const ADMIN: &str = "admin-bot-token-0123456789abcdef01234";
    let rack = mock().await;
    let (running, _dir) = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .ci(&[
            ("viewer-bot", VIEWER, "viewer", "*"),
            ("admin-bot", ADMIN, "admin", "*"),
        ])
        .start()
        .await;
    let url = |p: &str| format!("http://{}{p}", running.addr);
    let fwd = [("X-Forwarded-For", "203.0.113.7")];
    for path in ["/_gateway/status", "/_gateway/metrics"] {
        let r = send("GET", &url(path), None, &[], "").await;
        assert_eq!(r.status, 200, "{path} from the host: {}", r.text());
        let r = send("GET", &url(path), None, &fwd, "").await;
        assert_eq!(r.status, 401, "{path} forwarded, no token: {}", r.text());
        let r = send("GET", &url(path), Some(VIEWER), &fwd, "").await;
        assert_eq!(r.status, 403, "{path} forwarded, viewer: {}", r.text());
        assert!(r.error().contains("gateway status"), "{}", r.text());
        let r = send("GET", &url(path), Some(ADMIN), &fwd, "").await;
        assert_eq!(r.status, 200, "{path} forwarded, admin: {}", r.text());
    }
    running.stop().await;
}

/// A web page a browser on the host opens can rebind its own name to
/// 127.0.0.1 and reach the gateway from loopback, but its requests name
/// that host: they are not "on the host" (401 without a token, 200 for
/// admin), while loopback names (the control) are, port or not.
#[tokio::test]
async fn operator_endpoints_are_not_local_to_a_rebound_name() {
    const ADMIN: &str = "admin-bot-token-0123456789abcdef01234";
    let rack = mock().await;
    let (running, _dir) = ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
        .ci(&[("admin-bot", ADMIN, "admin", "*")])
        .start()
        .await;
    let url = |p: &str| format!("http://{}{p}", running.addr);
    let port = running.addr.port();
    let local = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ];
    let rebound = [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1.evil.example:{port}"),
    ];
    for path in ["/_gateway/status", "/_gateway/metrics"] {
        for host in &local {
            let r = send("GET", &url(path), None, &[("Host", host)], "").await;
            assert_eq!(r.status, 200, "{path} Host {host}: {}", r.text());
        }
        for host in &rebound {
            let r = send("GET", &url(path), None, &[("Host", host)], "").await;
            assert_eq!(r.status, 401, "{path} Host {host}: {}", r.text());
            let r = send("GET", &url(path), Some(ADMIN), &[("Host", host)], "").await;
            assert_eq!(r.status, 200, "{path} Host {host}, admin: {}", r.text());
        }
    }
    let readyz = url("/_gateway/readyz");
    let r = send("GET", &readyz, None, &[("Host", &local[0])], "").await;
    assert_eq!(r.json()["racks"]["staging"], "ok", "{}", r.text());
    let r = send("GET", &readyz, None, &[("Host", &rebound[0])], "").await;
    assert_eq!(r.json()["status"], "ready", "{}", r.text());
    assert!(r.json().get("racks").is_none(), "{}", r.text());
    running.stop().await;
}

/// A websocket session gets a start record when it opens and an end record
/// with the exit code and byte counts when it closes; with the peer listed
/// in `trusted_proxies`, both name the client from `X-Forwarded-For` (the
/// nearest untrusted hop, not the one the client prepended) and the proxy.
#[tokio::test]
async fn sessions_are_recorded_start_and_end_with_the_forwarded_client() {
    let (_racks, audit, p) =
        serve_audited(|c| c.extra("trusted_proxies: [127.0.0.1/32]\n"), &[], &[]).await;
    let auth = basic(CI_STAGING);
    let mut session = ws::client_connect(
        p.addr,
        EXEC,
        &[
            ("Authorization", auth.as_str()),
            ("Command", "exit 3"),
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(session.status, 101);
    session.send(&Frame::text("some input\n")).await.unwrap();
    assert_eq!(recv(&mut session).await, Some(Frame::text("some input\n")));
    session.send(&Frame::binary(Vec::new())).await.unwrap();
    while recv(&mut session).await.is_some() {}
    drop(session);
    // The session's end record is written when its task finishes; stopping
    // the gateway before that would end it as "shutdown" instead.
    eventually("the session-end record", || {
        let audit = audit.clone();
        async move {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            if text.contains("\"session-end\"") {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        }
    })
    .await;
    p.stop().await;

    let all = records(&audit);
    let of = |event: &str| -> Vec<&Value> {
        all.iter()
            .filter(|r| r["event"] == event && r["operation"] == "exec")
            .collect()
    };
    let (start, end) = (of("session-start"), of("session-end"));
    assert_eq!((start.len(), end.len()), (1, 1), "{all:?}");
    let (start, end) = (start[0], end[0]);
    assert_eq!(start["request_id"], end["request_id"]);
    for r in [start, end] {
        assert_eq!(r["decision"], "allow", "{r}");
        assert_eq!(r["client_ip"], "198.51.100.7", "{r}");
        assert_eq!(r["via"], "127.0.0.1", "{r}");
        assert_eq!(r["command"], "exit 3", "{r}");
        assert_eq!(r["identity"], "ci-staging", "{r}");
    }
    assert!(start.get("exit_code").is_none(), "{start}");
    assert_eq!(end["exit_code"], 3, "{end}");
    assert_eq!(end["reason"], "closed", "{end}");
    assert!(end["bytes_in"].as_u64().unwrap() > 0, "{end}");
    assert!(end["bytes_out"].as_u64().unwrap() > 0, "{end}");
    assert!(end["duration_ms"].is_u64(), "{end}");
}

/// Login records identify the client by the same rules as rack traffic:
/// behind a trusted proxy, the nearest untrusted `X-Forwarded-For` hop and
/// the proxy as `via`; a client that is not a trusted proxy cannot choose
/// its address with the header (control).
#[tokio::test]
async fn login_records_carry_the_forwarded_client_like_rack_traffic() {
    let (_racks, audit, p) =
        serve_audited(|c| c.extra("trusted_proxies: [127.0.0.1/32]\n"), &[], &[]).await;
    let token = |xff: &'static str| {
        let url = p.url("/_gateway/login/token");
        async move {
            send(
                "POST",
                &url,
                None,
                &[
                    ("Content-Type", "application/json"),
                    ("X-Forwarded-For", xff),
                ],
                Bytes::from_static(br#"{"code":"x","verifier":"y"}"#),
            )
            .await
        }
    };
    let r = token("6.6.6.6, 198.51.100.7").await;
    assert!(r.status >= 400, "{}", r.text());
    let r = get(&p.url(APPS), Some(CI_STAGING)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    p.stop().await;

    let all = records(&audit);
    let login: Vec<&Value> = all.iter().filter(|r| r["event"] == "login").collect();
    assert_eq!(login.len(), 1, "{all:?}");
    assert_eq!(login[0]["client_ip"], "198.51.100.7", "{}", login[0]);
    assert_eq!(login[0]["via"], "127.0.0.1", "{}", login[0]);
    let rack: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "request" && r["operation"] == "apps")
        .collect();
    assert_eq!(rack.len(), 1, "{all:?}");
    assert_eq!(rack[0]["client_ip"], "127.0.0.1", "{}", rack[0]);
}

/// Control for the rule above: without `trusted_proxies`, a forwarded
/// header is the client's own claim and the login record keeps the peer.
#[tokio::test]
async fn login_records_ignore_forwarded_headers_from_untrusted_peers() {
    let (_racks, audit, p) = serve_audited(|c| c, &[], &[]).await;
    let r = send(
        "POST",
        &p.url("/_gateway/login/token"),
        None,
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
        Bytes::from_static(br#"{"code":"x","verifier":"y"}"#),
    )
    .await;
    assert!(r.status >= 400, "{}", r.text());
    p.stop().await;
    let all = records(&audit);
    let login: Vec<&Value> = all.iter().filter(|r| r["event"] == "login").collect();
    assert_eq!(login.len(), 1, "{all:?}");
    assert_eq!(login[0]["client_ip"], "127.0.0.1", "{}", login[0]);
    assert!(login[0].get("via").is_none(), "{}", login[0]);
}

/// A refused run's reason quotes the command the way the audit log shows
/// it: redacted. `PGPASSWORD="hunter2 x"` is masked in the record's
/// `command` and never appears in the `reason`, in the client's error or in
/// any log line, even though quoting defeats a plain text replacement. The
/// allowed control shows the same redaction on an allowed run.
#[tokio::test]
async fn secrets_typed_into_a_refused_command_stay_out_of_reasons_and_logs() {
    const DEPLOYER: &str = "ci-deployer-token-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";
    let (_racks, audit, p) = serve_audited(
        |c| c.ci(&[("deployer-bot", DEPLOYER, "deployer", "staging/*")]),
        &[],
        &[("RACK_GATEWAY_LOG", "info")],
    )
    .await;
    let run = |token: &'static str, command: &'static str| {
        let url = p.url("/racks/staging/apps/myapp/services/command/processes");
        async move {
            send(
                "POST",
                &url,
                Some(token),
                &[("Command", command)],
                Bytes::new(),
            )
            .await
        }
    };
    const SECRET_COMMAND: &str = r#"PGPASSWORD="hunter2 x" psql -c 'select 1'"#;
    let refused = run(DEPLOYER, SECRET_COMMAND).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.text().contains("may run only"),
        "{}",
        refused.text()
    );
    let allowed = run(CI_STAGING, SECRET_COMMAND).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let logs = p.stop().await;
    for text in [refused.text(), read(&audit), logs] {
        assert!(!text.contains("hunter2"), "a secret leaked:\n{text}");
    }
    let all = records(&audit);
    let runs: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "request" && r["operation"] == "run")
        .collect();
    assert_eq!(runs.len(), 2, "{all:?}");
    assert_eq!(runs[0]["decision"], "deny", "{}", runs[0]);
    assert!(
        runs[0]["command"].as_str().unwrap().contains("PGPASSWORD="),
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["decision"], "allow", "{}", runs[1]);
}
