//! The mock rack's own tests: the wire behaviour it had from the start,
//! and the rack semantics it is derived from (rack-semantics §1–§5).

use super::body::MockBody;
use super::*;
use crate::rack::ws::{self, Frame, Opcode};
use http::Method;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const PASSWORD: &str = "pa%2Fss";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

async fn start() -> MockRack {
    MockRack::start(MockOptions::new(PASSWORD)).await.unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

async fn call(
    rack: &MockRack,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: MockBody,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<MockBody>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{target}", rack.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

async fn authed(rack: &MockRack, method: &str, target: &str) -> Answer {
    let auth = basic("convox", PASSWORD);
    call(
        rack,
        method,
        target,
        &[("authorization", &auth)],
        MockBody::empty(),
    )
    .await
}

#[tokio::test]
async fn auth_is_checked_exactly_as_sent() {
    let rack = start().await;
    let none = call(&rack, "GET", "/apps?", &[], MockBody::empty()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body, b"invalid authentication\n");
    assert_eq!(none.headers["www-authenticate"], "Basic realm=\"convox\"");
    assert_eq!(none.headers["request-id"].len(), 12);
    assert_eq!(none.headers["x-frame-options"], "DENY");
    assert_eq!(none.headers["x-content-type-options"], "nosniff");

    for auth in [
        basic("convox", "pa/ss"),
        basic("jwt", PASSWORD),
        "Bearer x".into(),
    ] {
        let refused = call(
            &rack,
            "GET",
            "/apps",
            &[("authorization", &auth)],
            MockBody::empty(),
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{auth}");
    }
    let ok = call(
        &rack,
        "GET",
        "/auth",
        &[("authorization", &basic("anyone", PASSWORD))],
        MockBody::empty(),
    )
    .await;
    assert_eq!(
        (ok.status, ok.body.as_slice()),
        (StatusCode::OK, &b"ok\n"[..])
    );

    let rec = rack.requests();
    assert_eq!(rec.len(), 5);
    assert_eq!(rec[0].target, "/apps?");
    assert_eq!(rec[0].path(), "/apps");
    assert_eq!(rec[0].query(), Some(""));
    assert_eq!(
        rec[4].header("Authorization"),
        Some(basic("anyone", PASSWORD))
    );
}

#[tokio::test]
async fn json_routes_errors_and_404s() {
    let rack = start().await;
    let system = authed(&rack, "GET", "/system?").await;
    assert_eq!(system.headers["content-type"], "application/json");
    assert_eq!(system.json()["version"], "3.18.11");
    assert_eq!(system.json()["rack-domain"], "api.mock");

    let apps = authed(&rack, "GET", "/apps").await.json();
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "myapp"]);
    assert_eq!(apps[1]["generation"], "3");
    assert_eq!(apps[1]["release"], "RMYAPPRELAB");

    let budget = authed(&rack, "GET", "/apps/myapp/budget?").await.json();
    assert_eq!(budget, serde_json::json!({"config": null, "state": null}));

    let release = authed(&rack, "GET", "/apps/myapp/releases/RMYAPPRELAB")
        .await
        .json();
    assert!(release["env"]
        .as_str()
        .unwrap()
        .contains("SECRET_KEY=s3cr3t"));
    let db = authed(&rack, "GET", "/apps/billing/resources/db")
        .await
        .json();
    assert!(db["url"].as_str().unwrap().contains("billpass"));

    let missing = authed(&rack, "GET", "/apps/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, b"app not found: nope\n");
    let auth = basic("convox", PASSWORD);
    let as_json = call(
        &rack,
        "GET",
        "/apps/nope",
        &[("authorization", &auth), ("accept", "application/json")],
        MockBody::empty(),
    )
    .await;
    assert_eq!(as_json.json()["error"], "app not found: nope");

    for path in ["/machines?", "/racks?", "/", "/apps//x"] {
        let page = call(&rack, "GET", path, &[], MockBody::empty()).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(page.body, b"404 page not found\n");
    }
    // A socket path without the exact upgrade header is unmatched too.
    let plain = authed(&rack, "GET", "/apps/myapp/logs").await;
    assert_eq!(plain.status, StatusCode::NOT_FOUND);
    let generic = authed(&rack, "GET", "/certificates/x/unknown").await;
    assert_eq!(generic.json(), serde_json::json!({}));
}

#[tokio::test]
async fn process_run_get_stop_cycle() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    let run = call(
        &rack,
        "POST",
        "/apps/myapp/services/web/processes?",
        &[("authorization", &auth), ("command", "sleep 3600")],
        MockBody::empty(),
    )
    .await
    .json();
    let pid = run["id"].as_str().unwrap().to_owned();
    assert!(pid.starts_with("web-") && pid.len() == 9, "{pid}");
    assert_eq!(run["name"], "web");
    assert_eq!(run["command"], "sleep 3600");
    assert_eq!(run["release"], "RMYAPPRELAB");

    let got = authed(&rack, "GET", &format!("/apps/myapp/processes/{pid}?"))
        .await
        .json();
    assert_eq!(got["status"], "running");
    let web = authed(&rack, "GET", "/apps/myapp/processes?service=web")
        .await
        .json();
    assert_eq!(web.as_array().unwrap().len(), 2);

    let stop = authed(&rack, "DELETE", &format!("/apps/myapp/processes/{pid}?")).await;
    assert_eq!(stop.body, b"ok\n");
    let gone = authed(&rack, "GET", &format!("/apps/myapp/processes/{pid}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn releases_create_and_promote() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    let created = call(
        &rack,
        "POST",
        "/apps/myapp/releases?",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        MockBody::full("env=A%3D1%0ANEW%3Dva%3Dlue&description=hi+there"),
    )
    .await
    .json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with('R') && id.len() == 11);
    assert_eq!(created["env"], "A=1\nNEW=va=lue");
    assert_eq!(created["build"], "BMYAPPBLDAA");
    assert_eq!(created["description"], "hi there");

    let latest = authed(&rack, "GET", "/apps/myapp/releases?limit=1")
        .await
        .json();
    assert_eq!(latest[0]["id"], id.as_str());
    let promote = call(
        &rack,
        "POST",
        &format!("/apps/myapp/releases/{id}/promote?"),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        MockBody::full("force=false"),
    )
    .await;
    assert_eq!(promote.body, b"ok\n");
    assert_eq!(
        authed(&rack, "GET", "/apps/myapp").await.json()["release"],
        id.as_str()
    );
    let promoted = rack
        .requests()
        .into_iter()
        .find(|r| r.path().ends_with("/promote"))
        .unwrap();
    assert_eq!(promoted.body, b"force=false");
    assert_eq!(promoted.body_len, 11);
}

#[tokio::test]
async fn streamed_upload_is_hashed_and_download_generated() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    let len = 3 * 1024 * 1024 + 17;
    let stored = call(
        &rack,
        "POST",
        "/apps/myapp/objects/tmp/abc.tgz?",
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
        ],
        MockBody::pattern(len),
    )
    .await;
    assert_eq!(stored.json()["Url"], "object://myapp/tmp/abc.tgz");

    let expected: Vec<u8> = (0..len).map(generated_byte).collect();
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.body_len, len);
    assert_eq!(
        rec.body_sha256,
        crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, &expected).as_ref())
    );
    assert_eq!(rec.body, expected[..RECORDED_BODY_LIMIT]);

    let download = authed(&rack, "GET", "/apps/myapp/objects/generated/200003").await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.body, expected[..200_003]);

    let small = call(
        &rack,
        "POST",
        "/apps/myapp/objects/small",
        &[("authorization", &auth)],
        MockBody::full("hello"),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(
        authed(&rack, "GET", "/apps/myapp/objects/small").await.body,
        b"hello"
    );
}

async fn exec(rack: &MockRack, pid: &str, command: &str) -> ws::ClientConn {
    let auth = basic("convox", PASSWORD);
    let origin = format!("http://{}", rack.addr());
    let conn = ws::client_connect(
        rack.addr(),
        &format!("/apps/myapp/processes/{pid}/exec"),
        &[
            ("Authorization", &auth),
            ("Command", command),
            ("Origin", &origin),
        ],
    )
    .await
    .unwrap();
    assert_eq!(conn.status, 101);
    conn
}

async fn expect_end(conn: &mut ws::ClientConn) {
    assert_eq!(conn.recv().await.unwrap(), Some(Frame::binary(Vec::new())));
    assert_eq!(
        conn.recv().await.unwrap().and_then(|f| f.close_code()),
        Some(1000)
    );
}

#[tokio::test]
async fn exec_echoes_stdin_and_ends_with_marker() {
    let rack = start().await;
    let mut conn = exec(&rack, "web-abc12", "echo 'hi  there' x").await;
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Frame::text("hi  there x\n"))
    );
    conn.send(&Frame::text(vec![b'a', 0xff])).await.unwrap();
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Frame::text(vec![b'a', 0xff]))
    );
    conn.send(&Frame::ping("p")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(Frame::pong("p")));
    conn.send(&Frame::binary(Vec::new())).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(Frame::exit_code(0)));
    expect_end(&mut conn).await;
    conn.send(&Frame::close(1000, "")).await.unwrap();

    let rec = rack.last_request().unwrap();
    assert!(rec.websocket);
    assert_eq!(rec.header("command").as_deref(), Some("echo 'hi  there' x"));
    assert_eq!(
        rec.frames_in,
        [Frame::text(vec![b'a', 0xff]), Frame::binary(Vec::new())]
    );

    let mut conn = exec(&rack, "web-abc12", "exit 7").await;
    conn.send(&Frame::binary(Vec::new())).await.unwrap();
    let marker = conn.recv().await.unwrap().unwrap();
    assert_eq!(ws::parse_exit_code(&marker.payload), Some(7));
    expect_end(&mut conn).await;

    // `?command=` beats the header, and Disable-Stdin skips the wait.
    let auth = basic("convox", PASSWORD);
    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/myapp/processes/web-abc12/exec?command=exit+5",
        &[
            ("Authorization", &auth),
            ("Command", "exit 1"),
            ("Disable-Stdin", "true"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(Frame::exit_code(5)));
    expect_end(&mut conn).await;

    let mut conn = exec(&rack, "web-abc12", "emit-invalid-utf8").await;
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Frame::text(vec![0x66, 0xff, 0xfe, 0x0a]))
    );
}

#[tokio::test]
async fn websocket_refusals() {
    let rack = start().await;
    let wrong = basic("convox", "nope");
    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/myapp/processes/web-abc12/exec",
        &[("Authorization", &wrong), ("Command", "ls")],
    )
    .await
    .unwrap();
    assert_eq!(conn.status, 101);
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Frame::text("ERROR: invalid authentication\n"))
    );
    expect_end(&mut conn).await;

    let auth = basic("convox", PASSWORD);
    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/myapp/processes/web-nope1/exec",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap();
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Frame::text("ERROR: process not found: web-nope1\n"))
    );

    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/myapp/logs",
        &[("Authorization", &auth), ("Origin", "https://evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(conn.status, 403);
    assert_eq!(conn.read_body().await.unwrap(), b"Forbidden\n");
}

#[tokio::test]
async fn logs_stream_and_follow() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/myapp/logs",
        &[
            ("Authorization", &auth),
            ("Follow", "false"),
            ("Prefix", "true"),
        ],
    )
    .await
    .unwrap();
    for n in 1..=3 {
        let line = format!("2026-01-01T00:00:00Z service/web/web-abc12 line {n}\n");
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::text(line)));
    }
    expect_end(&mut conn).await;

    let mut conn = ws::client_connect(rack.addr(), "/system/logs", &[("Authorization", &auth)])
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(conn.recv().await.unwrap().unwrap().opcode, Opcode::Text);
    }
    conn.send(&Frame::ping("k")).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(Frame::pong("k")));
    conn.send(&Frame::close(1000, "")).await.unwrap();
    assert_eq!(
        conn.recv().await.unwrap().and_then(|f| f.close_code()),
        Some(1000)
    );
}

#[tokio::test]
async fn delay_knob_and_https() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let rack = MockRack::start(MockOptions {
        tls: Some(Arc::new(server)),
        ..MockOptions::new(PASSWORD)
    })
    .await
    .unwrap();
    assert!(rack.url().starts_with("https://127.0.0.1:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(rack.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = std::time::Instant::now();
    let req = Request::get("/auth")
        .header("host", "localhost")
        .header("authorization", basic("convox", PASSWORD))
        .header("mock-delay-ms", "150")
        .body(MockBody::empty())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok\n");
}

#[tokio::test]
async fn recording_can_be_disabled() {
    let rack = MockRack::start(MockOptions {
        max_recorded: 0,
        ..MockOptions::new(PASSWORD)
    })
    .await
    .unwrap();
    assert_eq!(authed(&rack, "GET", "/auth").await.status, StatusCode::OK);
    assert!(rack.requests().is_empty());
}

#[test]
fn helpers() {
    assert_eq!(
        shell::split(r#"bash -c 'echo hi' "a \"b\" c" d\ e"#).unwrap(),
        ["bash", "-c", "echo hi", "a \"b\" c", "d e"]
    );
    assert_eq!(generated_byte(0), 7);
    assert_eq!(generated_byte(251), 7);
    assert_eq!(
        split_path("/apps/x/objects/a//b"),
        Some(vec!["apps", "x", "objects", "a", "", "b"])
    );
    assert_eq!(split_path("/apps/"), None);
}

// ---------------------------------------------------------------------------
// Rack semantics
// ---------------------------------------------------------------------------

fn env_of(raw: &str) -> Vec<(String, String)> {
    parse_env(raw).unwrap().into_iter().collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn env_parsing_follows_environment_load() {
    // Keys are TrimSpace'd (space, tab and NBSP are Unicode White_Space,
    // which Go's TrimSpace and Rust's trim share); values are not.
    assert_eq!(env_of(" KEY =v"), pairs(&[("KEY", "v")]));
    assert_eq!(env_of("\tTAB\t=\tv"), pairs(&[("TAB", "\tv")]));
    assert_eq!(
        env_of("\u{a0}NB\u{a0}=x\u{a0}"),
        pairs(&[("NB", "x\u{a0}")])
    );
    assert_eq!(env_of("S = v "), pairs(&[("S", " v ")]));
    // One CR before LF (or at the end) is dropped; a lone CR is kept.
    assert_eq!(env_of("A=1\r\nB=2\r"), pairs(&[("A", "1"), ("B", "2")]));
    assert_eq!(env_of("A=1\rB=2"), pairs(&[("A", "1\rB=2")]));
    assert_eq!(env_of("A=1\r\r\n"), pairs(&[("A", "1\r")]));
    // Last duplicate wins, after trimming.
    assert_eq!(env_of("K=1\n K=2\nK =3"), pairs(&[("K", "3")]));
    // No `=`: ignored; empty key dropped; no comments, no quoting.
    assert_eq!(
        env_of("# note\n\nplain\n=x\n#C=3\nexport X=1\nQ=\"x\"\nE=\nV=a=b"),
        pairs(&[
            ("#C", "3"),
            ("E", ""),
            ("Q", "\"x\""),
            ("V", "a=b"),
            ("export X", "1")
        ])
    );
    assert_eq!(env_of(""), pairs(&[]));
    // A line of 64 KiB or more fails the whole parse.
    let long = "L=".to_owned() + &"x".repeat(MAX_ENV_LINE - 2);
    assert_eq!(parse_env(&long), Err(EnvTooLong));
    assert_eq!(parse_env(&format!("A=1\n{long}\n")), Err(EnvTooLong));
    let fits = "L=".to_owned() + &"x".repeat(MAX_ENV_LINE - 3);
    assert_eq!(
        parse_env(&format!("{fits}\n")).unwrap()["L"].len(),
        MAX_ENV_LINE - 3
    );
    assert_eq!(EnvTooLong.to_string(), "bufio.Scanner: token too long");
}

fn input(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> form::Input {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    form::Input::new(
        &method,
        &map,
        target.split_once('?').map(|(_, q)| q),
        body.as_bytes(),
    )
}

const URLENCODED: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[test]
fn form_precedence_and_malformed_pairs() {
    // Body before query, for POST/PUT/PATCH only.
    let post = input("POST", "/x?a=query&b=q", &[URLENCODED], "a=body");
    assert_eq!(post.param("a"), Some("body"));
    assert_eq!(post.param("b"), Some("q"));
    assert_eq!(post.query("a"), Some("query"));
    for method in ["GET", "DELETE"] {
        let ignored = input(method, "/x?a=query", &[URLENCODED], "a=body");
        assert_eq!(ignored.param("a"), Some("query"), "{method}");
    }
    // The media type is case-insensitive and may carry parameters.
    let mixed = input(
        "PUT",
        "/x",
        &[(
            "content-type",
            "Application/X-WWW-Form-URLEncoded; charset=utf-8",
        )],
        "a=1",
    );
    assert_eq!(mixed.param("a"), Some("1"));
    assert_eq!(
        input("POST", "/x", &[("content-type", "text/plain")], "a=1").param("a"),
        None
    );
    // Bad escapes and `;` pairs are dropped silently; `+` is a space.
    let bad = input(
        "POST",
        "/x",
        &[URLENCODED],
        "x=%zz&x=good&y=1;z=2&y=ok&s=a+b%20c",
    );
    assert_eq!(bad.param("x"), Some("good"));
    assert_eq!(bad.param("y"), Some("ok"));
    assert_eq!(bad.param("z"), None);
    assert_eq!(bad.param("s"), Some("a b c"));
    // An empty body value shadows the query; Value then falls to the header.
    let empty = input(
        "POST",
        "/x?url=q",
        &[URLENCODED, ("url", "from-header")],
        "url=",
    );
    assert_eq!(empty.param("url"), Some(""));
    assert_eq!(empty.form_str("url"), "");
    assert_eq!(empty.value("url"), "from-header");
    // Multipart is parsed for every method, after the query.
    let boundary = ("content-type", "multipart/form-data; boundary=XyZ");
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"command\"\r\n\r\nid -u\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nfile\r\n--XyZ\r\nContent-Disposition: form-data; name=\"only\"\r\n\r\nmp\r\n--XyZ--\r\n";
    let get = input("GET", "/x", &[boundary], body);
    assert_eq!(get.value("command"), "id -u");
    assert_eq!(get.param("f"), None, "file parts are not values");
    let query_first = input("DELETE", "/x?command=ls&x=", &[boundary], body);
    assert_eq!(query_first.value("command"), "ls");
    assert_eq!(query_first.param("only"), Some("mp"));
}

#[test]
fn headers_options_and_form_value() {
    // Header lookups are canonical, first-of-repeated and trimmed.
    let h = input(
        "POST",
        "/x",
        &[
            ("DURATIONINHOUR", "  8760 "),
            ("command", "a"),
            ("Command", "b"),
        ],
        "",
    );
    assert_eq!(h.value("durationInHour"), "8760");
    assert_eq!(h.header("Command").as_deref(), Some("a"));
    assert_eq!(canonical_header_name("ack_by"), "Ack_by");
    assert_eq!(canonical_header_name("durationInHour"), "Durationinhour");
    assert_eq!(canonical_header_name("cpu-limit"), "Cpu-Limit");
    // Bools are `true` only for exactly "true"; defaults only when absent.
    let b = input("POST", "/x?a=TRUE&b=1&c=true&d=", &[("tty", "True")], "");
    assert!(!b.param_bool("a", true));
    assert!(!b.param_bool("b", true));
    assert!(b.param_bool("c", false));
    assert!(!b.param_bool("d", true));
    assert!(b.param_bool("absent", true));
    assert!(!b.header_bool("tty", true));
    assert!(b.header_bool("follow", true));
    // Maps: first value per key; any malformed pair fails.
    let m = input(
        "POST",
        "/x?parameters=Url%3Dhttps%3A%2F%2Fa%26Url%3Db",
        &[],
        "",
    );
    assert_eq!(
        m.param_map("parameters").unwrap(),
        Some(vec![("Url".to_owned(), "https://a".to_owned())])
    );
    let broken = input("POST", "/x?parameters=a%3D1%3Bb%3D2", &[], "");
    assert!(broken.param_map("parameters").is_err());
    // formValue on DELETE parses the urlencoded body by hand, which hides
    // the query; an empty value still falls through to the header.
    let del = input("DELETE", "/x?ack_by=query", &[URLENCODED], "ack_by=body");
    assert_eq!(del.form_value("ack_by"), "body");
    let del = input(
        "DELETE",
        "/x?ack_by=query",
        &[URLENCODED, ("ack_by", "hdr")],
        "other=1",
    );
    assert_eq!(del.form_value("ack_by"), "hdr");
    let plain = input("DELETE", "/x?ack_by=query", &[], "");
    assert_eq!(plain.form_value("ack_by"), "query");
}

#[test]
fn shellquote_split_and_join() {
    assert_eq!(shell::split("  a\tb\nc  ").unwrap(), ["a", "b", "c"]);
    assert_eq!(shell::split("a#b;c|d&e").unwrap(), ["a#b;c|d&e"]);
    assert_eq!(shell::split("'' x").unwrap(), ["", "x"]);
    assert_eq!(shell::split("\\\n x").unwrap(), ["x"]);
    assert_eq!(shell::split(r#""a\nb""#).unwrap(), ["a\\nb"]);
    assert_eq!(shell::split("'open"), Err(shell::SplitError::SingleQuote));
    assert_eq!(shell::split("\"open"), Err(shell::SplitError::DoubleQuote));
    assert_eq!(shell::split("end\\"), Err(shell::SplitError::Escape));
    assert_eq!(shell::split("").unwrap(), Vec::<String>::new());
    assert_eq!(shell::join(&["sleep", "3600"]), "sleep 3600");
    assert_eq!(
        shell::join(&["a b", "it's", "$x", "~u", "a~", ""]),
        "'a b' it\\'s \\$x \\~u a~ ''"
    );
    assert_eq!(shell::join(&["it's here"]), "'it'\\''s here'");
}

async fn form_call(
    rack: &MockRack,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let auth = basic("convox", PASSWORD);
    let mut all = vec![("authorization", auth.as_str()), URLENCODED];
    all.extend_from_slice(headers);
    call(rack, method, target, &all, MockBody::full(body.to_owned())).await
}

#[tokio::test]
async fn header_fallback_reaches_the_handlers() {
    let rack = start().await;
    // Config value from the `Value` header (base64), read back in cleartext.
    let set = form_call(
        &rack,
        "PUT",
        "/apps/myapp/configs/k",
        &[("value", &STANDARD.encode("v1"))],
        "",
    )
    .await;
    assert_eq!(set.status, StatusCode::OK);
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.interpretation("config.value"), Some("v1"));
    assert_eq!(rec.interpretation("input.value.from"), Some("header"));
    let got = authed(&rack, "GET", "/apps/myapp/configs/k").await.json();
    assert_eq!(got, serde_json::json!({"name": "k", "value": "v1"}));
    let list = authed(&rack, "GET", "/apps/myapp/configs").await.json();
    assert!(list.to_string().contains(SECRET_CONFIG_VALUE));

    // Build source from the `Url` header when the form has none.
    form_call(
        &rack,
        "POST",
        "/apps/myapp/builds",
        &[("url", "object://billing/x.tgz")],
        "description=d",
    )
    .await;
    let rec = rack.last_request().unwrap();
    assert_eq!(
        rec.interpretation("build.url"),
        Some("object://billing/x.tgz")
    );
    // The form wins when it is non-empty.
    form_call(
        &rack,
        "POST",
        "/apps/myapp/builds",
        &[("url", "object://billing/x.tgz")],
        "url=object%3A%2F%2Fmyapp%2Fa.tgz",
    )
    .await;
    assert_eq!(
        rack.last_request().unwrap().interpretation("build.url"),
        Some("object://myapp/a.tgz")
    );

    // Registries from headers; the password is echoed and listed.
    let added = form_call(
        &rack,
        "POST",
        "/registries",
        &[
            ("server", "r.example"),
            ("username", "u"),
            ("password", "hp"),
        ],
        "",
    )
    .await
    .json();
    assert_eq!(added["password"], "hp");
    let listed = authed(&rack, "GET", "/registries").await.json().to_string();
    assert!(listed.contains("hp") && listed.contains(SECRET_REGISTRY_PASSWORD));
    assert_eq!(
        authed(&rack, "DELETE", "/registries/r.example")
            .await
            .status,
        StatusCode::OK
    );

    // JWT role and duration from headers (canonicalised lookups).
    let token = form_call(
        &rack,
        "POST",
        "/system/jwt/token",
        &[("Role", "admin"), ("DURATIONINHOUR", "8760")],
        "",
    )
    .await
    .json();
    assert!(token["token"]
        .as_str()
        .unwrap()
        .starts_with(JWT_TOKEN_PREFIX));
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.interpretation("input.role"), Some("admin"));
    assert_eq!(rec.interpretation("input.durationInHour"), Some("8760"));

    // Budget clear: a DELETE's urlencoded body is parsed by hand.
    form_call(
        &rack,
        "DELETE",
        "/apps/myapp/budget?ack_by=q",
        &[],
        "ack_by=mallory",
    )
    .await;
    assert_eq!(
        rack.last_request().unwrap().interpretation("input.ack_by"),
        Some("mallory")
    );
    form_call(
        &rack,
        "POST",
        "/apps/myapp/budget/reset",
        &[("Force_clear_cooldown", "true"), ("Ack_by", "eve")],
        "",
    )
    .await;
    let rec = rack.last_request().unwrap();
    assert_eq!(
        rec.interpretation("input.force_clear_cooldown"),
        Some("true")
    );
    assert_eq!(rec.interpretation("input.ack_by"), Some("eve"));

    // Rack webhook resources: `kind` from the header, the URL echoed.
    let created = form_call(
        &rack,
        "POST",
        "/resources",
        &[("kind", "webhook")],
        "name=hook&parameters=Url%3Dhttps%3A%2F%2Fh.example%2Ftok",
    )
    .await
    .json();
    assert_eq!(created["parameters"]["Url"], "https://h.example/tok");
    let listed = authed(&rack, "GET", "/resources").await.json().to_string();
    assert!(listed.contains(SECRET_WEBHOOK_URL) && listed.contains("h.example/tok"));
    assert_eq!(
        authed(&rack, "GET", "/resources/alerts").await.json()["parameters"]["Url"],
        SECRET_WEBHOOK_URL
    );

    // The record keeps the decoded query and Go's form.
    form_call(&rack, "POST", "/apps/myapp/objects/a%2Fb?x=1+2", &[], "y=3").await;
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.decoded_path, "/apps/myapp/objects/a/b");
    assert_eq!(rec.query_pairs, [("x".to_owned(), "1 2".to_owned())]);
    assert_eq!(
        rec.form,
        [
            ("y".to_owned(), "3".to_owned()),
            ("x".to_owned(), "1 2".to_owned())
        ]
    );
}

#[tokio::test]
async fn release_create_forks_from_parent_or_newest() {
    let rack = start().await;
    let create = |body: &'static str| {
        let rack = &rack;
        async move { form_call(rack, "POST", "/apps/myapp/releases", &[], body).await }
    };
    // A release newer than the active one, not promoted.
    let newer = create("env=ONLY%3Dnew").await.json();
    assert_eq!(newer["env"], "ONLY=new");
    assert_eq!(
        rack.last_request().unwrap().interpretation("release.base"),
        Some("RMYAPPRELAB")
    );
    // No env: the newest release's env (not the active one's), verbatim.
    let next = create("description=x").await.json();
    assert_eq!(next["env"], "ONLY=new");
    assert_eq!(next["description"], "x");
    // parent-release is case-insensitive and restores the old env and build.
    let rollback = create("parent-release=rmyapprelaa").await.json();
    assert!(rollback["env"]
        .as_str()
        .unwrap()
        .starts_with("DATABASE_URL="));
    assert!(!rollback["env"].as_str().unwrap().contains("FEATURE_X"));
    assert_eq!(rollback["build"], "BMYAPPBLDAA");
    assert_eq!(
        rack.last_request().unwrap().interpretation("release.base"),
        Some("RMYAPPRELAA")
    );
    // `env=` removes everything; the raw string is stored as-is.
    assert_eq!(create("env=").await.json()["env"], "");
    let raw = create("env=%20K%20%3Dv%0D%0AK%3Dw%0A%23c").await.json();
    assert_eq!(raw["env"], " K =v\r\nK=w\n#c");
    let got = authed(
        &rack,
        "GET",
        &format!(
            "/apps/myapp/releases/{}",
            raw["id"].as_str().unwrap().to_lowercase()
        ),
    )
    .await;
    assert_eq!(got.json()["env"], " K =v\r\nK=w\n#c");
    // A 64 KiB line fails the create.
    let long = format!("env=L%3D{}", "x".repeat(MAX_ENV_LINE));
    let failed = form_call(&rack, "POST", "/apps/myapp/releases", &[], &long).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body, b"bufio.Scanner: token too long\n");
    // Lists carry every env too.
    let list = authed(&rack, "GET", "/apps/myapp/releases?limit=20")
        .await
        .json();
    assert!(list.to_string().contains("SECRET_KEY=s3cr3t"));
    // Promote refuses a release older than the active one.
    let id = raw["id"].as_str().unwrap();
    assert_eq!(
        form_call(
            &rack,
            "POST",
            &format!("/apps/myapp/releases/{id}/promote"),
            &[],
            ""
        )
        .await
        .status,
        StatusCode::OK
    );
    let old = form_call(
        &rack,
        "POST",
        "/apps/myapp/releases/RMYAPPRELAA/promote",
        &[],
        "",
    )
    .await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        old.body,
        b"can not promote an older release, try rollback\n"
    );
}

async fn exec_in(
    rack: &MockRack,
    app: &str,
    pid: &str,
    query: &str,
    command: &str,
) -> (ws::ClientConn, Recorded) {
    exec_with(
        rack,
        &format!("/apps/{app}/processes/{pid}/exec{query}"),
        command,
        &[],
    )
    .await
}

/// [`exec_in`] at `path`, with `extra` headers.
async fn exec_with(
    rack: &MockRack,
    path: &str,
    command: &str,
    extra: &[(&str, &str)],
) -> (ws::ClientConn, Recorded) {
    let auth = basic("convox", PASSWORD);
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Command", command),
        ("Disable-Stdin", "true"),
    ];
    headers.extend_from_slice(extra);
    let mut conn = ws::client_connect(rack.addr(), path, &headers)
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = conn.recv().await.unwrap() {
        if frame.opcode == Opcode::Close {
            break;
        }
        frames.push(frame);
    }
    (conn, rack.last_request().unwrap())
}

/// `Entrypoint: true` puts the build's entrypoint (of the pod's release)
/// before the command, as k/process.go does; `TRUE` is false to stdapi,
/// and no header adds nothing (controls).
#[tokio::test]
async fn exec_with_entrypoint_prepends_the_builds_entrypoint() {
    let rack = start().await;
    let app = authed(&rack, "GET", "/apps/myapp").await.json();
    let release = app["release"].as_str().unwrap().to_owned();
    let path = format!("/apps/myapp/releases/{release}");
    let build = authed(&rack, "GET", &path).await.json()["build"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = basic("convox", PASSWORD);
    let put = call(
        &rack,
        "PUT",
        &format!("/apps/myapp/builds/{build}"),
        &[("authorization", &auth), URLENCODED],
        MockBody::full("entrypoint=sh+-c"),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let exec = "/apps/myapp/processes/web-abc12/exec";
    for (header, argv) in [
        (Some("true"), "sh -c 'id -u'"),
        (Some("TRUE"), "'id -u'"),
        (None, "'id -u'"),
    ] {
        let extra: Vec<(&str, &str)> = header.map(|v| ("Entrypoint", v)).into_iter().collect();
        let (_, rec) = exec_with(&rack, exec, "'id -u'", &extra).await;
        assert_eq!(rec.interpretation("exec.argv"), Some(argv), "{header:?}");
    }
}

#[tokio::test]
async fn exec_resolves_service_names_first() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    // A run pod of `web`: exec on `web` may land in it or in web-abc12.
    let run = call(
        &rack,
        "POST",
        "/apps/myapp/services/web/processes",
        &[
            ("authorization", &auth),
            ("command", "sleep  'a b'"),
            ("release", "rmyapprelab"),
        ],
        MockBody::empty(),
    )
    .await
    .json();
    let run_pod = run["id"].as_str().unwrap().to_owned();
    assert_eq!(run["command"], "sleep 'a b'");
    assert_eq!(run["release"], "rmyapprelab", "the raw header is the label");
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.interpretation("run.pod"), Some(run_pod.as_str()));

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let (_, rec) = exec_in(&rack, "myapp", "web", "", "exit 0").await;
        seen.insert(rec.interpretation("exec.pod").unwrap().to_owned());
    }
    assert!(
        seen.contains("web-abc12") && seen.contains(&run_pod),
        "{seen:?}"
    );
    // GET by a service name is 404, though exec works.
    assert_eq!(
        authed(&rack, "GET", "/apps/myapp/processes/web")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // `build` lands in the running build pod; selector syntax narrows.
    let (_, rec) = exec_in(&rack, "myapp", "build", "", "env").await;
    assert_eq!(rec.interpretation("exec.pod"), Some("build-mq2x7"));
    let (_, rec) = exec_in(&rack, "myapp", "web,release=RMYAPPRELAB", "", "true").await;
    assert_eq!(rec.interpretation("exec.pod"), Some("web-abc12"));
    // A pod name is used only when no service matches.
    let (_, rec) = exec_in(&rack, "myapp", "worker-xyz34", "", "true").await;
    assert_eq!(rec.interpretation("exec.pod"), Some("worker-xyz34"));
    // The query beats the Command header (Value("command")).
    let (_, rec) = exec_in(&rack, "myapp", "web-abc12", "?command=id+-u", "ls").await;
    assert_eq!(rec.interpretation("exec.command"), Some("id -u"));
    assert_eq!(rec.interpretation("exec.argv"), Some("id -u"));

    // App `system` is the rack: its api pod holds the password.
    assert_eq!(
        authed(&rack, "GET", "/apps/system").await.json()["name"],
        "system"
    );
    let auth = basic("convox", PASSWORD);
    let mut conn = ws::client_connect(
        rack.addr(),
        "/apps/system/processes/api/exec",
        &[
            ("Authorization", &auth),
            ("Command", "env"),
            ("Disable-Stdin", "true"),
        ],
    )
    .await
    .unwrap();
    let out = conn.recv().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.payload).into_owned();
    assert!(
        text.contains(&format!("RACK_URL=https://convox:{PASSWORD}@")),
        "{text}"
    );
    assert_eq!(
        rack.last_request().unwrap().interpretation("exec.pod"),
        Some("api-7d9f2")
    );
    let procs = authed(&rack, "GET", "/apps/system/processes").await.json();
    assert_eq!(procs[0]["id"], "api-7d9f2");
    assert_eq!(procs[0]["release"], "3.18.11");
}

#[tokio::test]
async fn processes_files_and_secret_listings() {
    let rack = start().await;
    let auth = basic("convox", PASSWORD);
    // Empty Command: the image CMD (no args).
    let run = call(
        &rack,
        "POST",
        "/apps/myapp/services/worker/processes",
        &[
            ("authorization", &auth),
            ("command", ""),
            ("environment", "X=1"),
        ],
        MockBody::empty(),
    )
    .await
    .json();
    assert_eq!(run["command"], "");
    let pid = run["id"].as_str().unwrap().to_owned();
    assert!(pid.starts_with("worker-") && pid.len() == 12);
    // The listing has service, run and build pods with their commands.
    let list = authed(&rack, "GET", "/apps/myapp/processes").await.json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"build-mq2x7") && ids.contains(&pid.as_str()) && ids.contains(&"web-abc12")
    );
    assert!(list.to_string().contains(SECRET_BUILD_ARG));
    // The files GET reads `File` from the header and tars the pod's env.
    let tar = call(
        &rack,
        "GET",
        &format!("/apps/myapp/processes/{pid}/files"),
        &[("authorization", &auth), ("file", "/proc/1/environ")],
        MockBody::empty(),
    )
    .await;
    let text = String::from_utf8_lossy(&tar.body).into_owned();
    assert!(text.starts_with("proc/1/environ"));
    assert!(text.contains("X=1\0") && text.contains(&format!("convox:{PASSWORD}@")));
    assert!(text.contains("SECRET_KEY=s3cr3t\0"));
    assert_eq!(
        rack.last_request().unwrap().interpretation("files.file"),
        Some("/proc/1/environ")
    );
    call(
        &rack,
        "DELETE",
        &format!("/apps/myapp/processes/{pid}/files"),
        &[("authorization", &auth), ("files", "/a,/b")],
        MockBody::empty(),
    )
    .await;
    let rec = rack.last_request().unwrap();
    assert_eq!(rec.interpretation("files.delete"), Some("/b"));
    // Any pod can be deleted by name, a build pod included.
    assert_eq!(
        authed(&rack, "DELETE", "/apps/myapp/processes/build-mq2x7")
            .await
            .status,
        StatusCode::OK
    );

    // Secret-bearing reads.
    let diag = authed(&rack, "GET", "/apps/myapp/diagnose").await.json();
    assert!(diag["pods"][0]["logs"]
        .as_str()
        .unwrap()
        .contains(SECRET_LOG_LINE));
    let manifest = authed(&rack, "GET", "/apps/myapp/manifest/services/web")
        .await
        .json();
    assert_eq!(manifest["environment"][0], SECRET_MANIFEST_ENV);
    let sim = form_call(
        &rack,
        "POST",
        "/apps/myapp/budget/simulate-shutdown",
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(sim["webhook-url"], SECRET_BUDGET_WEBHOOK);
    let build = authed(&rack, "GET", "/apps/myapp/builds/bmyappbldaa")
        .await
        .json();
    assert!(build["manifest"]
        .as_str()
        .unwrap()
        .contains(SECRET_MANIFEST_ENV));
    let external = form_call(&rack, "POST", "/apps/myapp/builds", &[], "external=true")
        .await
        .json();
    assert!(external["repository"].as_str().unwrap().contains(PASSWORD));
    let not_external = form_call(&rack, "POST", "/apps/myapp/builds", &[], "external=TRUE")
        .await
        .json();
    assert_eq!(not_external["repository"], "");
    let resources = authed(&rack, "GET", "/apps/myapp/resources").await.json();
    assert!(resources[0]["url"].as_str().unwrap().contains("dbpass"));
}
