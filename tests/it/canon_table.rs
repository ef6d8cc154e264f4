//! Crafted requests against the real server: everything ambiguous or unknown
//! is refused before it can reach a rack, what is forwarded is canonical, and
//! headers a client must not control are replaced (convox-api.md §1.3, §8).

use std::net::SocketAddr;
use std::time::Duration;

use rack_gateway::rack::ws::{self, Frame, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A stock-CLI websocket handshake. [`Req`] adds `Connection: close` on a
/// line of its own; both `Connection` lines count, as they do in hyper.
const WS: &[&str] = &[
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

const EXEC: &str = "/racks/staging/apps/myapp/processes/web-abc12/exec";

/// What a crafted request must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The gateway itself answers with this status and a JSON error whose
    /// message contains this text, so a refusal for the wrong reason fails.
    Gateway(u16, &'static str),
    /// hyper's HTTP/1.1 parser answers a bare 400 (no body, no Request-Id)
    /// before the gateway runs.
    Parser,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    want: Want,
}

/// Builds raw requests carrying `Connection: close`, CI_ALL's Basic
/// credential and a Host header, so a refusal is never "unauthenticated".
struct Req {
    host: String,
    auth: String,
}

impl Req {
    fn new(addr: SocketAddr) -> Req {
        Req {
            host: format!("Host: {addr}"),
            auth: format!("Authorization: {}", basic(CI_ALL)),
        }
    }

    /// The request line, the standard headers (Host unless `host` is
    /// false), `extra` verbatim, then `body`.
    fn build(&self, line: &str, host: bool, extra: &[&[u8]], body: &[u8]) -> Vec<u8> {
        let mut out = format!("{line}\r\n").into_bytes();
        let mut std_headers = vec![self.auth.as_str(), "Connection: close"];
        if host {
            std_headers.insert(0, self.host.as_str());
        }
        for h in std_headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for h in extra {
            out.extend_from_slice(h);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    fn with(&self, line: &str, extra: &[&str]) -> Vec<u8> {
        let extra: Vec<&[u8]> = extra.iter().map(|h| h.as_bytes()).collect();
        self.build(line, true, &extra, b"")
    }

    fn get(&self, target: &str) -> Vec<u8> {
        self.with(&format!("GET {target} HTTP/1.1"), &[])
    }

    /// A websocket upgrade to `target` plus `extra` headers.
    fn ws(&self, method: &str, target: &str, extra: &[&str]) -> Vec<u8> {
        let mut headers = WS.to_vec();
        headers.extend_from_slice(extra);
        self.with(&format!("{method} {target} HTTP/1.1"), &headers)
    }
}

fn case(name: &'static str, request: Vec<u8>, want: Want) -> Case {
    Case {
        name,
        request,
        want,
    }
}

fn bad(name: &'static str, request: Vec<u8>, reason: &'static str) -> Case {
    case(name, request, Want::Gateway(400, reason))
}

fn unknown(name: &'static str, request: Vec<u8>, reason: &'static str) -> Case {
    case(name, request, Want::Gateway(404, reason))
}

/// The table. Cases marked `Want::Parser` are refused by hyper's parser, not
/// by gateway code: `Transfer-Encoding: chunked, identity`, `xchunked`, two
/// differing `Content-Length`s, `Content-Length: +5`, a space before a
/// header colon, an obs-folded header line, a raw space in the path and an
/// `HTTP/2.0` request line.
///
/// `Content-Length` together with `Transfer-Encoding` is not in this table:
/// see `content_length_with_transfer_encoding_is_refused` and
/// `smuggled_request_never_reaches_the_rack`.
fn cases(r: &Req) -> Vec<Case> {
    let dot = "path contains a dot segment";
    let empty = "path contains an empty segment";
    let delim = "path contains an encoded '/', '\\', '.' or '#'";
    let control = "path contains a control character";
    let utf8 = "path is not valid utf-8 after decoding";
    let escape = "path contains a malformed percent escape";
    let query_in_segment = "path segment contains an encoded '?' or '#'";
    let ws_query = "websocket upgrade must not have a query string";
    let other_auth = format!("Authorization: {}", basic(CI_STAGING));
    let command_utf8 = {
        let mut h = b"Command: ls ".to_vec();
        h.push(0xff);
        h
    };
    vec![
        // Dot segments, raw and encoded.
        bad("dot", r.get("/racks/staging/apps/./x?"), dot),
        bad("dotdot", r.get("/racks/staging/apps/../system?"), dot),
        bad("%2e", r.get("/racks/staging/apps/%2e/x?"), dot),
        bad("%2E%2e", r.get("/racks/staging/apps/%2E%2e/system?"), dot),
        bad(".%2e", r.get("/racks/staging/apps/.%2e/system?"), dot),
        bad(
            "dotdot across racks",
            r.get("/racks/staging/../production/apps?"),
            dot,
        ),
        bad("%2e%2e as rack", r.get("/racks/%2e%2e/apps?"), dot),
        // Empty segments.
        bad("//", r.get("/racks/staging//apps?"), empty),
        bad("leading //", r.get("//racks/staging/apps?"), empty),
        bad("trailing /", r.get("/racks/staging/apps/"), empty),
        bad("trailing / with ?", r.get("/racks/staging/apps/?"), empty),
        // Encoded delimiters and backslashes.
        bad(
            "%2F",
            r.get("/racks/staging/apps/myapp%2Fprocesses?"),
            delim,
        ),
        bad(
            "%2f",
            r.get("/racks/staging/apps/myapp%2fprocesses?"),
            delim,
        ),
        bad(
            "%5C",
            r.get("/racks/staging/apps/myapp%5Cprocesses?"),
            delim,
        ),
        bad("%23", r.get("/racks/staging/apps/myapp%23x?"), delim),
        bad(
            "raw backslash",
            r.get("/racks/staging/apps\\myapp?"),
            "path contains a backslash",
        ),
        // Encoded '?': would move the query boundary at the rack.
        bad(
            "%3F on exec",
            r.ws("GET", &format!("{EXEC}%3Fcommand=id"), &["Command: ls"]),
            query_in_segment,
        ),
        bad(
            "%3f on REST",
            r.get("/racks/staging/apps%3f"),
            query_in_segment,
        ),
        // Control bytes and invalid UTF-8 after decoding.
        bad("%00", r.get("/racks/staging/apps/my%00app?"), control),
        bad("%0a", r.get("/racks/staging/apps/my%0aapp?"), control),
        bad(
            "%0d%0a header injection",
            r.get("/racks/staging/apps/x%0d%0aX-Injected:%201?"),
            control,
        ),
        bad("%7f", r.get("/racks/staging/apps/my%7fapp?"), control),
        bad(
            "C1 %c2%85",
            r.get("/racks/staging/apps/my%c2%85app?"),
            control,
        ),
        bad("%ff", r.get("/racks/staging/apps/my%ffapp?"), utf8),
        bad(
            "overlong %c0%ae",
            r.get("/racks/staging/apps/%c0%ae?"),
            utf8,
        ),
        bad(
            "overlong %c0%ae%c0%ae",
            r.get("/racks/staging/apps/%c0%ae%c0%ae/system?"),
            utf8,
        ),
        // Malformed escapes.
        bad("%", r.get("/racks/staging/apps/x%?"), escape),
        bad("%4", r.get("/racks/staging/apps/x%4?"), escape),
        bad("%zz", r.get("/racks/staging/apps/x%zz?"), escape),
        bad("%u002e", r.get("/racks/staging/apps/%u002e%u002e?"), escape),
        // Request-target forms other than origin-form.
        bad(
            "absolute-form",
            r.with("GET http://127.0.0.1/racks/staging/apps HTTP/1.1", &[]),
            "not an absolute url",
        ),
        bad(
            "absolute-form, other host",
            r.with("GET http://evil.example/racks/staging/apps? HTTP/1.1", &[]),
            "not an absolute url",
        ),
        bad(
            "authority-form",
            r.with("CONNECT 127.0.0.1:443 HTTP/1.1", &[]),
            "not an authority",
        ),
        bad(
            "asterisk-form",
            r.with("OPTIONS * HTTP/1.1", &[]),
            "not '*'",
        ),
        // Headers that must be single, or present.
        bad(
            "duplicate Authorization",
            r.with("GET /racks/staging/apps? HTTP/1.1", &[other_auth.as_str()]),
            "duplicate Authorization header",
        ),
        bad(
            "duplicate Host",
            r.with("GET /racks/staging/apps? HTTP/1.1", &["Host: evil.example"]),
            "duplicate Host header",
        ),
        bad(
            "missing Host",
            r.build("GET /racks/staging/apps? HTTP/1.1", false, &[], b""),
            "missing Host header",
        ),
        bad(
            "duplicate Command",
            r.with(
                "POST /racks/staging/apps/myapp/services/web/processes? HTTP/1.1",
                &["Command: ls", "Command: rm -rf /", "Content-Length: 0"],
            ),
            "duplicate Command header",
        ),
        bad(
            "Command not utf-8",
            r.build(
                "POST /racks/staging/apps/myapp/services/web/processes? HTTP/1.1",
                true,
                &[&command_utf8, b"Content-Length: 0"],
                b"",
            ),
            "invalid Command header: not valid utf-8",
        ),
        bad(
            "duplicate Upgrade",
            r.ws(
                "GET",
                "/racks/staging/apps/myapp/logs",
                &["Upgrade: websocket"],
            ),
            "duplicate Upgrade header",
        ),
        bad(
            "duplicate Origin",
            r.ws(
                "GET",
                "/racks/staging/apps/myapp/logs",
                &["Origin: http://127.0.0.1", "Origin: https://evil.example"],
            ),
            "duplicate Origin header",
        ),
        bad(
            "duplicate Content-Type",
            r.with(
                "POST /racks/staging/apps? HTTP/1.1",
                &[
                    "Content-Type: application/x-www-form-urlencoded",
                    "Content-Type: application/json",
                    "Content-Length: 0",
                ],
            ),
            "duplicate Content-Type header",
        ),
        // Body framing.
        bad(
            "two Transfer-Encoding lines",
            r.build(
                "POST /racks/staging/apps? HTTP/1.1",
                true,
                &[b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
                b"0\r\n\r\n",
            ),
            "duplicate Transfer-Encoding header",
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            r.build(
                "POST /racks/staging/apps? HTTP/1.1",
                true,
                &[b"Transfer-Encoding: chunked, identity"],
                b"0\r\n\r\n",
            ),
            Want::Parser,
        ),
        case(
            "Transfer-Encoding: xchunked",
            r.build(
                "POST /racks/staging/apps? HTTP/1.1",
                true,
                &[b"Transfer-Encoding: xchunked"],
                b"0\r\n\r\n",
            ),
            Want::Parser,
        ),
        case(
            "two differing Content-Length",
            r.with(
                "POST /racks/staging/apps? HTTP/1.1",
                &["Content-Length: 0", "Content-Length: 5"],
            ),
            Want::Parser,
        ),
        case(
            "Content-Length: +5",
            r.build(
                "POST /racks/staging/apps? HTTP/1.1",
                true,
                &[b"Content-Length: +5"],
                b"name=",
            ),
            Want::Parser,
        ),
        case(
            "space before header colon",
            r.with(
                "POST /racks/staging/apps? HTTP/1.1",
                &["Transfer-Encoding : chunked"],
            ),
            Want::Parser,
        ),
        case(
            "obs-fold",
            r.with(
                "GET /racks/staging/apps? HTTP/1.1",
                &["Command: ls", " ; rm -rf /"],
            ),
            Want::Parser,
        ),
        case(
            "raw space in path",
            r.get("/racks/staging/apps/my app?"),
            Want::Parser,
        ),
        case(
            "HTTP/2.0 request line",
            r.with("GET /racks/staging/apps? HTTP/2.0", &[]),
            Want::Parser,
        ),
        // Websockets: the query would override the authorized Command.
        bad(
            "exec with ?command=",
            r.ws("GET", &format!("{EXEC}?command=id"), &["Command: ls"]),
            ws_query,
        ),
        bad(
            "exec with bare ?",
            r.ws("GET", &format!("{EXEC}?"), &["Command: ls"]),
            ws_query,
        ),
        bad(
            "websocket POST",
            r.ws("POST", EXEC, &["Command: ls", "Content-Length: 0"]),
            "websocket upgrade must use GET",
        ),
        bad(
            "websocket without key",
            r.with(
                &format!("GET {EXEC} HTTP/1.1"),
                &[
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    "Sec-WebSocket-Version: 13",
                    "Command: ls",
                ],
            ),
            "missing Sec-WebSocket-Key header",
        ),
        bad(
            "websocket version 8",
            r.with(
                &format!("GET {EXEC} HTTP/1.1"),
                &[
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version: 8",
                    "Command: ls",
                ],
            ),
            "unsupported Sec-WebSocket-Version",
        ),
        bad(
            "websocket with a body",
            r.build(
                &format!("GET {EXEC} HTTP/1.1"),
                true,
                &[
                    b"Upgrade: websocket",
                    b"Connection: Upgrade",
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    b"Sec-WebSocket-Version: 13",
                    b"Content-Length: 5",
                ],
                b"hello",
            ),
            "websocket upgrade must not have a body",
        ),
        bad(
            "Upgrade: h2c on a REST route",
            r.with(
                "GET /racks/staging/apps? HTTP/1.1",
                &["Upgrade: h2c", "Connection: Upgrade"],
            ),
            "this route does not upgrade",
        ),
        unknown(
            "Upgrade: WebSocket (wrong case) on exec",
            r.with(
                &format!("GET {EXEC} HTTP/1.1"),
                &[
                    "Upgrade: WebSocket",
                    "Connection: Upgrade",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version: 13",
                    "Command: ls",
                ],
            ),
            "unknown route GET /apps/myapp/processes/web-abc12/exec",
        ),
        unknown(
            "websocket on a REST route",
            r.ws("GET", "/racks/staging/apps", &[]),
            "unknown route GET /apps",
        ),
        unknown(
            "exec as a plain GET",
            r.with(&format!("GET {EXEC} HTTP/1.1"), &["Command: ls"]),
            "unknown route GET /apps/myapp/processes/web-abc12/exec",
        ),
        unknown(
            "websocket below exec",
            r.ws("GET", &format!("{EXEC}/x"), &["Command: ls"]),
            "unknown route GET /apps/myapp/processes/web-abc12/exec/x",
        ),
        // Unknown routes, racks and methods.
        unknown(
            "secrets",
            r.get("/racks/staging/apps/myapp/secrets?"),
            "unknown route GET /apps/myapp/secrets",
        ),
        unknown(
            "GET /system/jwt",
            r.get("/racks/staging/system/jwt?"),
            "unknown route GET /system/jwt",
        ),
        unknown(
            "GET /system/jwt/token",
            r.get("/racks/staging/system/jwt/token?"),
            "unknown route GET /system/jwt/token",
        ),
        unknown(
            "PATCH app",
            r.with(
                "PATCH /racks/staging/apps/myapp? HTTP/1.1",
                &["Content-Length: 0"],
            ),
            "unknown route PATCH /apps/myapp",
        ),
        unknown(
            "lower-case method",
            r.get("/racks/staging/apps?")
                .iter()
                .enumerate()
                .map(|(i, b)| if i < 3 { b.to_ascii_lowercase() } else { *b })
                .collect(),
            "unknown route get /apps",
        ),
        unknown(
            "TRACE",
            r.with("TRACE /racks/staging/apps? HTTP/1.1", &[]),
            "unknown route TRACE /apps",
        ),
        unknown(
            "path parameter",
            r.get("/racks/staging/apps;jsessionid=1?"),
            "unknown route GET /apps;jsessionid=1",
        ),
        unknown(
            "unknown rack",
            r.get("/racks/nosuchrack/apps?"),
            "unknown rack `nosuchrack`",
        ),
        unknown("root with two racks", r.get("/apps?"), "no rack selected"),
        unknown(
            "rack without a route",
            r.get("/racks/staging"),
            "no rack selected",
        ),
    ]
}

/// Splits a raw response into lower-cased header lines and the body.
fn split_response(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Asserts a gateway refusal: JSON content type, a Request-Id, and a body
/// that is exactly one line of `{"error": "gateway: ..."}`. Returns the
/// message.
fn assert_json_error(
    label: &str,
    content_type: Option<&str>,
    request_id: Option<&str>,
    body: &str,
) -> String {
    assert_eq!(content_type, Some("application/json"), "{label}: {body}");
    assert!(
        request_id.is_some_and(|id| id.len() == 12),
        "{label}: request id {request_id:?}"
    );
    assert_eq!(body.trim_end().lines().count(), 1, "{label}: {body:?}");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{label}: not JSON ({e}): {body}"));
    let obj = json
        .as_object()
        .unwrap_or_else(|| panic!("{label}: {body}"));
    assert_eq!(obj.len(), 1, "{label}: {body}");
    let msg = obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: {body}"))
        .to_string();
    assert!(msg.starts_with("gateway:"), "{label}: {msg}");
    assert!(!msg.contains(['\n', '\r']), "{label}: {msg:?}");
    msg
}

/// Every crafted request is refused for the expected reason and none of
/// them reaches either rack.
#[tokio::test]
async fn crafted_requests_never_reach_the_rack() {
    let gw = Gw::start().await;
    let cases = cases(&Req::new(gw.addr()));
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    for c in &cases {
        let (status, text) = raw(gw.addr(), &c.request).await;
        let label = format!("{}: {}", c.name, String::from_utf8_lossy(&c.request));
        let (headers, body) = split_response(&text);
        match c.want {
            Want::Gateway(want, reason) => {
                assert_eq!(status, want, "{label}\n{text}");
                let msg = assert_json_error(
                    &label,
                    header(&headers, "content-type"),
                    header(&headers, "request-id"),
                    body,
                );
                assert!(msg.contains(reason), "{label}\ngot: {msg}\nwant: {reason}");
            }
            Want::Parser => {
                assert_eq!(status, 400, "{label}\n{text}");
                assert!(body.is_empty(), "{label}\n{text}");
                assert_eq!(header(&headers, "request-id"), None, "{label}\n{text}");
            }
        }
    }
    let leaked: Vec<String> = gw
        .staging
        .requests()
        .iter()
        .chain(gw.production.requests().iter())
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(gw.forwarded_count(), 0, "forwarded: {leaked:?}");
}

/// The classic CL.TE smuggling setup must be refused outright, in either
/// header order, as canon.rs documents.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let gw = Gw::start().await;
    let r = Req::new(gw.addr());
    for framing in [
        [&b"Content-Length: 4"[..], b"Transfer-Encoding: chunked"],
        [&b"Transfer-Encoding: chunked"[..], b"Content-Length: 4"],
    ] {
        let request = r.build(
            "POST /racks/staging/apps? HTTP/1.1",
            true,
            &framing,
            b"0\r\n\r\n",
        );
        let (status, text) = raw(gw.addr(), &request).await;
        assert_eq!(gw.forwarded_count(), 0, "forwarded to the rack: {text}");
        assert_eq!(status, 400, "{text}");
        let (headers, body) = split_response(&text);
        let msg = assert_json_error(
            "CL+TE",
            header(&headers, "content-type"),
            header(&headers, "request-id"),
            body,
        );
        assert!(
            msg.contains("Content-Length with Transfer-Encoding"),
            "{msg}"
        );
    }
    assert_eq!(gw.forwarded_count(), 0);
}

/// Whatever becomes of the carrier request, the request hidden in its body
/// is never parsed, even on a connection that did not ask to close.
#[tokio::test]
async fn smuggled_request_never_reaches_the_rack() {
    let gw = Gw::start().await;
    let auth = basic(CI_ALL);
    let smuggled = format!(
        "DELETE /racks/staging/apps/myapp? HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n",
        gw.addr()
    );
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let request = format!(
            "POST /racks/staging/apps? HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n{framing}\r\n\r\n0\r\n\r\n{smuggled}",
            gw.addr()
        );
        let (_, text) = raw(gw.addr(), request.as_bytes()).await;
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    }
    let methods: Vec<String> = gw
        .staging
        .requests()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert!(!methods.iter().any(|m| m == "DELETE"), "{methods:?}");
    let r = get(&gw.url("/racks/staging/apps/myapp?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The path is decoded once and re-encoded canonically; the query travels
/// as received.
#[tokio::test]
async fn encoded_path_is_forwarded_canonically() {
    let gw = Gw::start().await;
    let sent = [
        (
            "/racks/staging/apps/my%61pp/processes?",
            "/apps/myapp/processes?",
        ),
        ("/racks/staging/%61pps?", "/apps?"),
        ("/racks/st%61ging/apps/myapp?", "/apps/myapp?"),
        ("/racks/staging/apps/my%20app?", "/apps/my%20app?"),
        ("/racks/staging/apps/caf%c3%a9?", "/apps/caf%C3%A9?"),
        ("/racks/staging/apps/%252e%252e?", "/apps/%252e%252e?"),
        (
            "/racks/staging/apps/myapp/releases?limit=1&x=%2F%2e",
            "/apps/myapp/releases?limit=1&x=%2F%2e",
        ),
    ];
    for (path, _) in &sent {
        let r = get(&gw.url(path), Some(CI_ALL)).await;
        assert!(r.status < 500, "{path}: {} {}", r.status, r.text());
        assert_ne!(r.status, 400, "{path}: {}", r.text());
    }
    let got: Vec<String> = gw
        .staging
        .requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    let want: Vec<&str> = sent.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want);
    assert!(gw.production.requests().is_empty());
}

/// Default deny: routes the table does not know are refused with a message
/// naming what was asked for, and never forwarded.
#[tokio::test]
async fn unknown_routes_404_and_are_not_forwarded() {
    let gw = Gw::start().await;
    let cases = [
        (
            "GET",
            "/racks/staging/apps/myapp/secrets?",
            "GET /apps/myapp/secrets",
        ),
        ("GET", "/racks/staging/system/jwt?", "GET /system/jwt"),
        ("PATCH", "/racks/staging/apps/myapp?", "PATCH /apps/myapp"),
        ("DELETE", "/racks/production/system?", "DELETE /system"),
        (
            "POST",
            "/racks/staging/apps/myapp/processes?",
            "POST /apps/myapp/processes",
        ),
        (
            "GET",
            "/racks/staging/kubernetes-api/v1?",
            "GET /kubernetes-api/v1",
        ),
        ("GET", "/racks/nosuchrack/apps?", "`nosuchrack`"),
        ("GET", "/apps?", "racks: production, staging"),
    ];
    for (method, path, named) in cases {
        let r = send(method, &gw.url(path), Some(CI_ALL), &[], "").await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        let msg = assert_json_error(
            path,
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            r.headers.get("request-id").and_then(|v| v.to_str().ok()),
            &r.text(),
        );
        assert!(msg.contains(named), "{method} {path}: {msg}");
    }
    assert_eq!(gw.forwarded_count(), 0);
}

/// Reads one response with a `Content-Length` body from a kept-alive
/// connection.
async fn read_one(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .expect("response has a Content-Length");
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("response within 10s")
            .unwrap();
        assert!(n > 0, "connection closed early: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Headers the CLI could not have meant for the rack, or that the rack
/// trusts for tenancy, audit and auth, are dropped; the gateway sets the
/// credential, the actor and the request id itself.
const HOSTILE: &[&str] = &[
    "Cookie: session=abc",
    "Convox-TID: other-tenant",
    "X-Convox-TID: other-tenant",
    "Convox-Actor: mallory",
    "X-Convox-Actor: mallory",
    "X-Forwarded-For: 10.0.0.1",
    "X-Forwarded-Host: evil.example",
    "Forwarded: for=10.0.0.1;host=evil.example",
    "X-Real-IP: 10.0.0.1",
    "Proxy-Authorization: Basic bWFsbG9yeTpwdw==",
    "Connection: keep-alive, te",
    "Request-Id: client-chosen",
    "Keep-Alive: timeout=5",
    "TE: trailers",
];

const STRIPPED: &[&str] = &[
    "cookie",
    "convox-tid",
    "x-convox-tid",
    "x-convox-actor",
    "x-forwarded-for",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "proxy-authorization",
    "keep-alive",
    "te",
];

const BENIGN: &[(&str, &str)] = &[
    ("version", "dev"),
    ("user-agent", "convox.go/dev"),
    ("height", "40"),
];

fn assert_rewritten(r: &rack_gateway::dev::mock_rack::Recorded, client_request_id: Option<&str>) {
    for name in STRIPPED {
        assert_eq!(
            r.header_all(name),
            Vec::<String>::new(),
            "{name} reached the rack"
        );
    }
    assert!(
        r.header_all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-secret-hop")),
        "{:?}",
        r.header_all("connection")
    );
    for (name, value) in BENIGN {
        assert_eq!(r.header_all(name), [*value], "{name}");
    }
    assert_eq!(r.header_all("convox-actor"), ["ci-all"]);
    assert_eq!(r.header_all("authorization"), [basic(RACK_PASSWORD)]);
    let ids = r.header_all("request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], "client-chosen");
    assert_eq!(Some(ids[0].as_str()), client_request_id);
}

#[tokio::test]
async fn client_headers_are_stripped() {
    let gw = Gw::start().await;

    let mut request = format!(
        "GET /racks/staging/apps? HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nAccept: */*\r\n",
        gw.addr(),
        basic(CI_ALL)
    );
    for h in HOSTILE {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("Version: dev\r\nUser-Agent: convox.go/dev\r\nHeight: 40\r\n\r\n");
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let text = read_one(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let (headers, _) = split_response(&text);
    let got = gw.staging.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/apps?");
    assert_rewritten(&got[0], header(&headers, "request-id"));

    let auth = basic(CI_ALL);
    let mut extra: Vec<(&str, &str)> = HOSTILE
        .iter()
        .filter(|h| !h.starts_with("Connection:"))
        .map(|h| h.split_once(": ").unwrap())
        .collect();
    // What the stock CLI sends as Origin on websockets: its RACK_URL's
    // scheme and host (a cross-site Origin is refused: tests/it/inputs.rs).
    let origin = format!("http://{}", gw.addr());
    extra.extend([
        ("Authorization", auth.as_str()),
        ("Origin", origin.as_str()),
        ("Command", "echo hi"),
        ("Version", "dev"),
        ("User-Agent", "convox.go/dev"),
        ("Height", "40"),
    ]);
    let mut c = ws::client_connect(gw.addr(), EXEC, &extra).await.unwrap();
    assert_eq!(c.status, 101);
    c.send(&Frame::binary(Vec::new())).await.unwrap();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("frame within 10s")
            .unwrap();
        match f {
            None => break,
            Some(f) if f.opcode == Opcode::Close || f.opcode == Opcode::Binary => break,
            Some(_) => {}
        }
    }
    let got = gw.staging.requests();
    // The REST request, the gateway's own look-ups (the pid is no service
    // name; exec is decided on the service the rack reports), then the
    // exec itself.
    assert_eq!(got.len(), 4);
    assert_eq!(got[1].target, "/apps/myapp/services");
    assert_eq!(got[2].target, "/apps/myapp/processes/web-abc12");
    let exec = &got[3];
    assert!(exec.websocket);
    assert_eq!(exec.target, "/apps/myapp/processes/web-abc12/exec");
    assert_rewritten(exec, c.header("request-id"));
    assert_eq!(exec.header_all("origin"), [gw.staging.url()]);
    assert_eq!(exec.header_all("command"), ["echo hi"]);
}

/// With exactly one rack, the CLI's RACK_URL may point at the gateway root.
#[tokio::test]
async fn single_rack_serves_root() {
    init();
    let rack = mock().await;
    let (running, _dir) = ConfigDir::new()
        .no_rack_discovery()
        .rack("only", &rack.url())
        .ci(&[("ci", CI_ALL, "admin", "*")])
        .start()
        .await;
    let url = |p: &str| format!("http://{}{p}", running.addr);

    let r = get(&url("/apps?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().as_array().is_some_and(|a| !a.is_empty()));
    let r = get(&url("/racks/only/apps?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&url("/racks/other/apps?"), Some(CI_ALL)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.error().contains("unknown rack `other`"), "{}", r.error());

    let targets: Vec<String> = rack.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/apps?", "/apps?"]);
    running.stop().await;
}

/// Every kind of refusal prints cleanly in the CLI: JSON, one line, prefixed
/// so the user knows the gateway (not the rack) said no.
#[tokio::test]
async fn refusals_are_json_one_line() {
    let gw = Gw::start().await;
    let cases = [
        ("/racks/staging/apps?", None, 401),
        ("/racks/staging/apps?", Some("not-a-token"), 401),
        ("/racks/production/apps?", Some(CI_STAGING), 403),
        ("/racks/staging/apps/myapp/secrets?", Some(CI_ALL), 404),
        ("/racks/staging/apps/%2e%2e/system?", Some(CI_ALL), 400),
    ];
    for (path, token, status) in cases {
        let r = get(&gw.url(path), token).await;
        let label = format!("{path} {token:?}");
        assert_eq!(r.status, status, "{label}: {}", r.text());
        assert_json_error(
            &label,
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            r.headers.get("request-id").and_then(|v| v.to_str().ok()),
            &r.text(),
        );
        let www = r
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok());
        // Never a Basic challenge: browsers would prompt and cache
        // credentials (the stock CLI does not need it).
        assert_eq!(www, None, "{label}");
    }
    assert_eq!(gw.forwarded_count(), 0);
}
