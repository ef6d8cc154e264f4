use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::*;
use crate::rack::routes::{Stream, ROUTES};

const HOST_PORT: &str = "gw.example:8443";
const ORIGIN_OK: &str = "https://gw.example:8443";

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// The §1.1 headers the stock CLI sends on every REST call.
fn cli_rest(extra: &[(&str, &str)]) -> HeaderMap {
    let mut all = vec![
        ("host", HOST_PORT),
        ("accept", "*/*"),
        ("accept-encoding", "gzip"),
        ("authorization", "Basic Y29udm94OnRva2Vu"),
        ("user-agent", "convox.go/dev"),
        ("version", "dev"),
    ];
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        all.push(("content-type", "application/octet-stream"));
    }
    all.extend_from_slice(extra);
    h(&all)
}

/// The §1.4 websocket handshake the stock CLI sends.
fn cli_ws(extra: &[(&str, &str)]) -> HeaderMap {
    let mut all = vec![
        ("host", HOST_PORT),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("origin", ORIGIN_OK),
        ("authorization", "Basic Y29udm94OnRva2Vu"),
        ("user-agent", "convox.go/dev"),
        ("version", "dev"),
    ];
    all.extend_from_slice(extra);
    h(&all)
}

fn rest(
    op: &str,
    method: Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), InputError> {
    check(op, &method, false, headers, query)
}

fn ws(op: &str, headers: &HeaderMap) -> Result<(), InputError> {
    check(op, &Method::GET, true, headers, None)
}

#[track_caller]
fn refused(r: Result<(), InputError>, status: u16, needle: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.status(), StatusCode::from_u16(status).unwrap(), "{e}");
    assert!(e.message().contains(needle), "{e:?} lacks {needle:?}");
    assert!(!e.message().contains('\n'), "{e:?}");
}

// The stock CLI's real requests (convox-api.md §5) all pass.

#[test]
fn cli_env_set_passes() {
    let body = "env=EXISTING%3D1%0ANEW%3Dva%3Dlue%0ASECRET%3Ds3cr3t%0ASPACED%3Da+b%26c";
    let len = body.len().to_string();
    let ct = "application/x-www-form-urlencoded";
    rest("releases", Method::GET, &cli_rest(&[]), Some("limit=1")).unwrap();
    rest("releases info", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    rest("rack", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    let headers = cli_rest(&[("content-type", ct), ("content-length", &len)]);
    rest("releases create", Method::POST, &headers, Some("")).unwrap();
    check_form_pairs(body, Some(""), &["env", "parent-release", "build"]).unwrap();
    check_form_pairs(
        "env=A%3D1&parent-release=R1",
        Some(""),
        &["env", "parent-release"],
    )
    .unwrap();
}

#[test]
fn cli_deploy_passes() {
    let upload = cli_rest(&[("content-length", "12345")]);
    rest("objects store", Method::POST, &upload, Some("")).unwrap();
    let form = "url=object%3A%2F%2Fmyapp%2Ftmp%2Fabc.tgz&manifest=convox.yml&no-cache=false\
                &development=false&description=fix&git-sha=abc123";
    let len = form.len().to_string();
    let build = cli_rest(&[
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", &len),
    ]);
    rest("build", Method::POST, &build, Some("")).unwrap();
    check_form_pairs(form, Some(""), &["url", "external", "build-args"]).unwrap();
    check_object_key("tmp/0123456789abcdef0123456789abcd.tgz").unwrap();
    rest("probe", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    ws("builds logs", &cli_ws(&[])).unwrap();
    rest("builds info", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    let promote = cli_rest(&[
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "11"),
    ]);
    rest("releases promote", Method::POST, &promote, Some("")).unwrap();
    check_form_pairs("force=false", Some(""), &["force"]).unwrap();
    ws("logs", &cli_ws(&[("prefix", "true"), ("since", "5s")])).unwrap();
    rest("ps", Method::GET, &cli_rest(&[]), Some("")).unwrap();
}

#[test]
fn cli_run_and_exec_pass() {
    let run = cli_rest(&[
        ("command", "sleep 3600"),
        ("content-length", "0"),
        ("height", "40"),
        ("width", "120"),
        ("memory", "512"),
    ]);
    rest("run", Method::POST, &run, Some("")).unwrap();
    rest("ps info", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    let exec = cli_ws(&[
        ("command", "bash -c 'echo hi'"),
        ("entrypoint", "true"),
        ("tty", "false"),
        ("height", "40"),
        ("width", "120"),
    ]);
    ws("exec", &exec).unwrap();
    rest("ps stop", Method::DELETE, &cli_rest(&[]), Some("")).unwrap();
    rest(
        "ps stop",
        Method::DELETE,
        &cli_rest(&[("connection", "close")]),
        None,
    )
    .unwrap();
}

#[test]
fn cli_logs_and_misc_pass() {
    let logs = cli_ws(&[
        ("prefix", "true"),
        ("follow", "false"),
        ("since", "1h0m0s"),
        ("filter", "error"),
        ("tail", "100"),
        ("previous", "true"),
        ("maxlogrequests", "10"),
    ]);
    ws("logs", &logs).unwrap();
    rest("apps", Method::GET, &cli_rest(&[]), Some("")).unwrap();
    rest(
        "ps",
        Method::GET,
        &cli_rest(&[]),
        Some("service=web&release=R1"),
    )
    .unwrap();
    let scale = cli_rest(&[
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "7"),
    ]);
    rest("scale", Method::PUT, &scale, Some("")).unwrap();
    let shell = cli_ws(&[("private-key", "a2V5"), ("command", "uptime")]);
    ws("instances ssh", &shell).unwrap();
    // Go adds `Connection: close` or keep-alive on its own.
    rest(
        "apps",
        Method::GET,
        &cli_rest(&[("connection", "keep-alive")]),
        Some(""),
    )
    .unwrap();
    // Same-origin browsers and user-initiated navigations are fine.
    let same = cli_rest(&[("sec-fetch-site", "same-origin"), ("origin", ORIGIN_OK)]);
    rest("apps", Method::GET, &same, Some("")).unwrap();
    rest(
        "apps",
        Method::GET,
        &cli_rest(&[("sec-fetch-site", "none")]),
        Some(""),
    )
    .unwrap();
}

// Rule 1: header fallback.

#[test]
fn fallback_headers_are_refused_on_their_routes() {
    let cases: &[(&str, Method, &str)] = &[
        ("build", Method::POST, "Url"),
        ("configs set", Method::PUT, "Value"),
        ("builds import-image", Method::POST, "Image"),
        ("objects", Method::GET, "Prefix"),
        ("files download", Method::GET, "File"),
        ("files delete", Method::DELETE, "Files"),
        ("certs import", Method::POST, "Pub"),
        ("certs import", Method::POST, "Key"),
        ("certs generate", Method::POST, "Domains"),
        ("ssl update", Method::PUT, "Id"),
        ("events send", Method::POST, "Action"),
        ("registries add", Method::POST, "Server"),
        ("registries add", Method::POST, "Username"),
        ("registries add", Method::POST, "Password"),
        ("rack access", Method::POST, "Role"),
        ("rack access", Method::POST, "durationInHour"),
        ("rack resources create", Method::POST, "Kind"),
        ("rack resources link", Method::POST, "App"),
        ("budget set", Method::POST, "ACK_BY"),
        ("budget clear", Method::DELETE, "Ack_by"),
        ("budget dismiss-recovery", Method::POST, "ack_by"),
        ("services scale-override", Method::POST, "Active"),
        ("services triggers enable", Method::POST, "Opts"),
        ("services triggers threshold-set", Method::POST, "Type"),
        ("services triggers threshold-set", Method::POST, "Threshold"),
        ("budget reset", Method::POST, "Force_clear_cooldown"),
        ("budget reset", Method::POST, "Reset_period"),
        ("apps create", Method::POST, "Name"),
    ];
    for (op, method, header) in cases {
        let headers = cli_rest(&[(header, "x")]);
        let e = rest(op, method.clone(), &headers, Some("")).expect_err(op);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let canon = canonical(&header.to_ascii_lowercase());
        assert!(e.message().contains(&canon), "{op}: {e}");
        assert!(e.message().contains(op), "{op}: {e}");
    }
}

#[test]
fn fallback_names_are_fine_elsewhere() {
    // `Image` is an option header on run (the policy decides on it), and
    // `Url`/`Name` mean nothing on these routes.
    rest("run", Method::POST, &cli_rest(&[("image", "x")]), Some("")).unwrap();
    rest(
        "apps",
        Method::GET,
        &cli_rest(&[("url", "x"), ("name", "y")]),
        Some(""),
    )
    .unwrap();
    // A dash is not an underscore: Go canonicalises `ack-by` to `Ack-By`.
    rest(
        "budget set",
        Method::POST,
        &cli_rest(&[("ack-by", "x")]),
        Some(""),
    )
    .unwrap();
}

#[test]
fn exec_command_only_from_the_header() {
    let exec = cli_ws(&[("command", "ls")]);
    refused(
        check("exec", &Method::GET, true, &exec, Some("command=id")),
        400,
        "Command header",
    );
    refused(
        check("exec", &Method::GET, true, &exec, Some("%63ommand=id")),
        400,
        "`command` query key",
    );
    // Other routes may have a `command` query key (it means nothing there).
    rest("ps", Method::GET, &cli_rest(&[]), Some("command=x")).unwrap();
}

// Rule 2: no unexpected bodies.

#[test]
fn multipart_is_refused_everywhere() {
    for ct in [
        "multipart/form-data; boundary=x",
        "Multipart/Mixed",
        " MULTIPART/form-data",
    ] {
        let headers = cli_rest(&[("content-type", ct), ("content-length", "10")]);
        refused(
            rest("build", Method::POST, &headers, Some("")),
            415,
            "multipart",
        );
        refused(
            rest("apps", Method::GET, &headers, Some("")),
            415,
            "multipart",
        );
        let headers = cli_ws(&[("content-type", ct)]);
        refused(ws("exec", &headers), 415, "multipart");
    }
    let not_multipart = cli_rest(&[("content-type", "multipartx"), ("content-length", "0")]);
    rest("apps", Method::GET, &not_multipart, Some("")).unwrap();
}

#[test]
fn bodies_are_refused_where_routes_take_none() {
    let with_len = cli_rest(&[("content-length", "5")]);
    let chunked = cli_rest(&[("transfer-encoding", "chunked")]);
    for (op, method) in [
        ("apps", Method::GET),
        ("objects exists", Method::HEAD),
        ("rack resources types", Method::OPTIONS),
        ("ps stop", Method::DELETE),
        ("objects delete", Method::DELETE),
    ] {
        refused(
            rest(op, method.clone(), &with_len, Some("")),
            400,
            method.as_str(),
        );
        refused(
            rest(op, method.clone(), &chunked, Some("")),
            400,
            "must not have a body",
        );
    }
    refused(
        ws(
            "exec",
            &cli_ws(&[("command", "ls"), ("content-length", "3")]),
        ),
        400,
        "websocket upgrade",
    );
    refused(
        ws("logs", &cli_ws(&[("transfer-encoding", "chunked")])),
        400,
        "websocket upgrade",
    );
    // Content-Length: 0 is no body; POST and PUT carry bodies.
    rest(
        "apps",
        Method::GET,
        &cli_rest(&[("content-length", "0")]),
        Some(""),
    )
    .unwrap();
    rest("run", Method::POST, &with_len, Some("")).unwrap();
    rest("resources import", Method::PUT, &chunked, Some("")).unwrap();
}

#[test]
fn budget_clear_takes_only_a_form_body() {
    let form = cli_rest(&[
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("content-length", "10"),
    ]);
    rest("budget clear", Method::DELETE, &form, Some("")).unwrap();
    let octets = cli_rest(&[("content-length", "10")]);
    refused(
        rest("budget clear", Method::DELETE, &octets, Some("")),
        415,
        "budget clear",
    );
    rest("budget clear", Method::DELETE, &cli_rest(&[]), Some("")).unwrap();
}

#[test]
fn reverse_proxies_keep_their_bodies_and_queries() {
    let headers = cli_rest(&[
        ("content-type", "multipart/form-data; boundary=x"),
        ("content-length", "10"),
    ]);
    for op in ["kubernetes", "registry proxy", "proxy http"] {
        rest(op, Method::GET, &headers, Some("a=1&a=2;x")).unwrap();
    }
    // The head rules still apply.
    refused(
        rest(
            "kubernetes",
            Method::GET,
            &cli_rest(&[("connection", "authorization")]),
            None,
        ),
        400,
        "Connection",
    );
}

// Rule 3: form ambiguity.

#[test]
fn ambiguous_queries_are_refused() {
    let headers = cli_rest(&[]);
    refused(
        rest("ps", Method::GET, &headers, Some("service=web&service=db")),
        400,
        "`service` more than once",
    );
    refused(
        rest(
            "ps",
            Method::GET,
            &headers,
            Some("service=web&%73ervice=db"),
        ),
        400,
        "more than once",
    );
    refused(
        rest("ps", Method::GET, &headers, Some("a+b=1&a%20b=2")),
        400,
        "`a b`",
    );
    refused(
        rest("ps", Method::GET, &headers, Some("service=web;release=R1")),
        400,
        "`;`",
    );
    refused(
        rest("ps", Method::GET, &headers, Some("service=%zz&service=web")),
        400,
        "%-escape",
    );
    refused(
        rest("ps", Method::GET, &headers, Some("service=web%")),
        400,
        "%-escape",
    );
    refused(
        rest("ps", Method::GET, &headers, Some("service=%e9")),
        400,
        "UTF-8",
    );
    rest(
        "ps",
        Method::GET,
        &headers,
        Some("service=web&&release=R1&"),
    )
    .unwrap();
    rest("ps", Method::GET, &headers, Some("service=a%2Cb+c")).unwrap();
    rest("ps", Method::GET, &headers, None).unwrap();
}

#[test]
fn form_pairs_are_unambiguous_across_body_and_query() {
    refused(
        check_form_pairs("url=a&url=b", None, &[]),
        400,
        "in the form body",
    );
    refused(
        check_form_pairs("url=a", Some("url=b"), &[]),
        400,
        "form body and the query",
    );
    refused(
        check_form_pairs("", Some("x=1&x=2"), &[]),
        400,
        "in the query",
    );
    refused(
        check_form_pairs("url=a;b", None, &[]),
        400,
        "form body pair",
    );
    refused(check_form_pairs("url=%zz", None, &[]), 400, "%-escape");
    refused(check_form_pairs("a=1", Some("b=%"), &[]), 400, "query pair");
    refused(
        check_form_pairs("env=", None, &["env"]),
        400,
        "`env` is empty",
    );
    refused(
        check_form_pairs("a=1", Some("url="), &["url"]),
        400,
        "`url` is empty",
    );
    check_form_pairs("env=", None, &["url"]).unwrap();
    check_form_pairs("a=1&b=2", Some("c=3"), &["a", "c"]).unwrap();
    check_form_pairs("", None, &["url"]).unwrap();
}

// Rule 4: repeated option headers.

#[test]
fn repeated_option_headers_are_refused() {
    for name in [
        "Command",
        "Image",
        "Release",
        "Environment",
        "Volumes",
        "Privileged",
        "Entrypoint",
        "Private-Key",
        "Tty",
        "Height",
        "Width",
        "Filter",
        "Follow",
        "Since",
        "Tail",
        "Cpu",
        "Memory",
        "Node-Labels",
        "X-Host",
    ] {
        let headers = cli_ws(&[(name, "a"), (name, "b")]);
        refused(
            ws("exec", &headers),
            400,
            &format!("the {name} header is given more than once"),
        );
    }
    // Repeats of headers the rack does not read as options are not ours.
    rest(
        "apps",
        Method::GET,
        &cli_rest(&[("accept", "text/plain")]),
        Some(""),
    )
    .unwrap();
}

// Rule 5: hop-by-hop naming.

#[test]
fn connection_may_name_only_hop_by_hop_headers() {
    for value in [
        "close, command",
        "keep-alive, X-Secret-Hop",
        "Authorization",
        "upgrade,origin",
    ] {
        let headers = cli_rest(&[("connection", value)]);
        refused(
            rest("apps", Method::GET, &headers, Some("")),
            400,
            "the Connection header names",
        );
    }
    let two = cli_ws(&[("connection", "tail")]);
    refused(ws("logs", &two), 400, "`tail`");
    for value in [
        "close",
        "Keep-Alive, TE",
        "upgrade",
        "trailer, transfer-encoding",
        "Proxy-Connection",
        "close,",
    ] {
        let headers = cli_rest(&[("connection", value)]);
        rest("apps", Method::GET, &headers, Some("")).unwrap();
    }
}

// Rule 6: cross-site browsers.

#[test]
fn cross_site_browsers_are_refused() {
    for origin in [
        "https://evil.example",
        "https://gw.example",
        "https://gw.example:8444",
        "null",
        "https://user@gw.example:8443",
        "https://gw.example:8443/path",
        "gw.example:8443",
    ] {
        refused(ws("exec", &cli_ws(&[]).tap(origin)), 400, "Origin");
        let headers = cli_rest(&[("origin", origin)]);
        refused(
            rest("apps", Method::POST, &headers, Some("")),
            400,
            "is not this gateway's Host",
        );
    }
    for site in ["cross-site", "same-site", "CROSS-SITE", ""] {
        let headers = cli_rest(&[("sec-fetch-site", site)]);
        refused(
            rest("apps", Method::GET, &headers, Some("")),
            400,
            "Sec-Fetch-Site",
        );
    }
    // No Host to compare with: an Origin cannot be checked.
    let no_host = h(&[("origin", ORIGIN_OK)]);
    refused(rest("apps", Method::GET, &no_host, Some("")), 400, "Origin");
    // Scheme and case do not matter, as in the rack's upgrader.
    for origin in ["http://GW.example:8443", "https://gw.example:8443/"] {
        ws("logs", &cli_ws(&[]).tap(origin)).unwrap();
    }
}

trait Tap {
    fn tap(self, origin: &str) -> HeaderMap;
}

impl Tap for HeaderMap {
    /// Replaces the Origin.
    fn tap(mut self, origin: &str) -> HeaderMap {
        self.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        self
    }
}

// Rule 7: actor fields.

#[test]
fn actor_fields_are_refused() {
    for op in [
        "budget set",
        "budget reset",
        "budget dismiss-recovery",
        "services scale-override",
        "services triggers disable",
        "services triggers enable",
        "services triggers threshold-set",
    ] {
        let headers = cli_rest(&[]);
        refused(
            rest(op, Method::POST, &headers, Some("ack_by=mallory")),
            400,
            "`ack_by` sets the actor",
        );
        refused(
            rest(op, Method::POST, &cli_rest(&[("ack_by", "m")]), Some("")),
            400,
            "Ack_by",
        );
        assert_eq!(actor_keys(op), ["ack_by"]);
    }
    refused(
        rest(
            "budget clear",
            Method::DELETE,
            &cli_rest(&[]),
            Some("ack_by=m"),
        ),
        400,
        "actor",
    );
    refused(
        rest(
            "events send",
            Method::POST,
            &cli_rest(&[]),
            Some("data=actor%3Dmallory%26app%3Dx"),
        ),
        400,
        "`data[actor]`",
    );
    refused(
        rest(
            "events send",
            Method::POST,
            &cli_rest(&[]),
            Some("data[actor]=m"),
        ),
        400,
        "actor",
    );
    rest(
        "events send",
        Method::POST,
        &cli_rest(&[]),
        Some("action=build:create&data=app%3Dx"),
    )
    .unwrap();
    rest("apps", Method::GET, &cli_rest(&[]), Some("ack_by=x")).unwrap();
    assert!(actor_keys("apps").is_empty());
}

#[test]
fn actor_pairs_cover_the_body_too() {
    let pairs = |s: &str| parse_pairs(s, "form body").unwrap();
    refused(
        check_actor_pairs("budget set", &pairs("monthly-cap-usd=5&ack_by=m")),
        400,
        "ack_by",
    );
    refused(
        check_actor_pairs("events send", &pairs("data=actor%3Dm")),
        400,
        "data[actor]",
    );
    refused(
        check_actor_pairs("events send", &pairs("data=a%3D%25zz")),
        400,
        "`data` map",
    );
    check_actor_pairs("budget set", &pairs("monthly-cap-usd=5")).unwrap();
    check_actor_pairs("events send", &pairs("data=app%3Dx&status=ok")).unwrap();
    check_actor_pairs("build", &pairs("ack_by=m")).unwrap();
}

// Rule 8: object keys.

#[test]
fn object_keys_are_plain_paths() {
    for key in [
        "",
        "/tmp/a",
        "tmp//a",
        "tmp/a/",
        ".",
        "..",
        "tmp/../a",
        "./a",
        "tmp\\a",
        "tmp/%2e%2e/a",
        "a\nb",
    ] {
        refused(check_object_key(key), 400, "object key");
    }
    for key in [
        "tmp/a.tgz",
        "a",
        "tmp/..a/b.",
        "x/.hidden/y",
        "tmp/0123456789abcdef.tgz",
    ] {
        check_object_key(key).unwrap();
    }
}

// The tables name real operations.

#[test]
fn tables_name_real_operations() {
    let ops: Vec<&str> = ROUTES.iter().map(|r| r.operation).collect();
    let named = [
        "apps create",
        "budget set",
        "budget clear",
        "budget dismiss-recovery",
        "budget reset",
        "configs set",
        "build",
        "builds import-image",
        "objects",
        "files delete",
        "files download",
        "services scale-override",
        "services triggers disable",
        "services triggers enable",
        "services triggers threshold-set",
        "ssl update",
        "certs import",
        "certs generate",
        "events send",
        "registries add",
        "rack access",
        "rack resources create",
        "rack resources link",
        "exec",
    ];
    for op in named {
        assert!(
            ops.contains(&op),
            "{op} is not an operation in rack::routes"
        );
        if op != "exec" {
            assert!(
                !fallback_headers(op).is_empty() || !actor_keys(op).is_empty(),
                "{op}"
            );
        }
    }
    let mut proxies: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.stream == Stream::ReverseProxy)
        .map(|r| r.operation)
        .collect();
    proxies.sort_unstable();
    proxies.dedup();
    let mut ours = REVERSE_PROXIES.to_vec();
    ours.sort_unstable();
    assert_eq!(proxies, ours);
}

#[test]
fn messages_are_one_line_and_short() {
    let long = format!("https://{}\tx", "a".repeat(200));
    let headers = cli_rest(&[("origin", &long)]);
    let e = rest("apps", Method::GET, &headers, None).unwrap_err();
    assert!(e.message().len() < 200, "{e}");
    assert!(e.message().contains('…'));
    assert_eq!(shown("a\tb"), "a\\tb");
    assert_eq!(canonical("cpu-limit"), "Cpu-Limit");
    assert_eq!(canonical("ack_by"), "Ack_by");
    assert_eq!(canonical("durationinhour"), "Durationinhour");
    assert_eq!(e.to_string(), e.message());
}
