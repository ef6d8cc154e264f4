//! HTTP helpers for talking to a gateway the way clients do: a hyper
//! client for ordinary requests (as the stock CLI sends them), raw TCP for
//! crafted ones, and readers for the parts of a response tests look at.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rack_gateway::dev::mock_rack::Recorded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("convox:{token}"))
    )
}

/// A response read whole (for small bodies).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request the way the stock CLI does (Basic auth, `Accept: */*`,
/// `Version: dev`, octet-stream content type).
pub async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("Accept", "*/*")
        .header("User-Agent", "convox.go/dev")
        .header("Version", "dev");
    if let Some(t) = token {
        b = b.header("Authorization", basic(t));
    }
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        b = b.header(*k, *v);
    }
    if !has_ct {
        b = b.header("Content-Type", "application/octet-stream");
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("response within 30s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, token: Option<&str>) -> Resp {
    send("GET", url, token, &[], Bytes::new()).await
}

/// Whether `url` answers 200 (a server started out of process is up).
pub async fn answers(url: &str) -> bool {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), client().request(req)).await,
        Ok(Ok(r)) if r.status() == 200
    )
}

/// Sends raw bytes and reads until the server closes (requests should say
/// `Connection: close`). Returns the status code (0 if none) and the text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The `Location` of a redirect.
pub fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .unwrap_or_else(|| panic!("no Location (HTTP {}): {}", r.status, r.text()))
        .to_str()
        .unwrap()
        .to_string()
}

/// A query parameter of an absolute URL, percent-decoded.
pub fn query_param(url: &str, name: &str) -> String {
    let (_, query) = url.split_once('?').expect("URL has a query");
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `METHOD target` of each request a mock rack recorded.
pub fn targets(rs: &[Recorded]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

/// A loopback port nothing listens on right now: for servers whose URL
/// must be known before they start, and for unreachable upstreams.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
