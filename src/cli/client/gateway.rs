//! Talking to the gateway's own endpoints (`/_gateway/...`) from the CLI.
//!
//! Unlike the stock convox CLI, which never verifies TLS, this client
//! verifies the gateway's certificate against the Mozilla roots, or against
//! `RACK_GATEWAY_CA_FILE` for a private CA: it is about to hand over a
//! login code and then a bearer token. Plain http is only accepted for a
//! gateway on the loopback interface (local testing, `rack-gateway demo`).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::config::UpstreamTls;

/// How long one request to the gateway may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the gateway's own endpoints.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("`{url}` is not a usable gateway address: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("RACK_GATEWAY_CA_FILE: {0}")]
    CaFile(#[from] crate::rack::upstream::UpstreamError),
    #[error("cannot reach the gateway at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the gateway at {url} did not answer within {secs} seconds", secs = REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// The gateway answered with an error status; `message` is its own.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the gateway at {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// A gateway's base address, normalized to `scheme://host[:port]` so the
/// same gateway typed two ways is stored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl {
    scheme: &'static str,
    /// Lower-case host, and the port unless it is the scheme's default.
    authority: String,
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl GatewayUrl {
    /// Accepts `gateway.example.com`, `https://gateway.example.com/` or
    /// `http://127.0.0.1:8080`; https is assumed without a scheme.
    pub fn parse(input: &str) -> Result<GatewayUrl, GatewayError> {
        let bad = |reason: &str| GatewayError::BadUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("https://{trimmed}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|_| bad("expected something like https://gateway.example.com"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") => "http",
            _ => return Err(bad("the scheme must be https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("give only the address: no user name or password"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "give only the gateway's base address, like https://gateway.example.com (no path)",
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if scheme == "http" && !is_loopback(&host) {
            return Err(bad(
                "plain http is only allowed for 127.0.0.1 or localhost; use https",
            ));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = match authority.port_u16() {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host,
        };
        Ok(GatewayUrl { scheme, authority })
    }

    /// The base URL, `scheme://host[:port]`.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// `RACK_URL` for the stock convox CLI: it takes the credential from the
    /// userinfo and sends it as Basic auth (user `convox`).
    pub fn rack_url(&self, token: &str, rack: &str) -> String {
        format!(
            "{}://convox:{token}@{}/racks/{rack}",
            self.scheme, self.authority
        )
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one gateway's own endpoints.
pub struct Gateway {
    url: GatewayUrl,
    client: HttpsClient,
}

/// `source()` chains, joined: hyper's top-level errors alone say little
/// ("client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

impl Gateway {
    pub fn new(url: GatewayUrl) -> Result<Gateway, GatewayError> {
        let ca_file = std::env::var_os("RACK_GATEWAY_CA_FILE")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from);
        let tls = crate::rack::upstream::client_tls(&UpstreamTls::Verify { ca_file })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let connector = hyper_rustls::HttpsConnector::from((http, tls));
        Ok(Gateway {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub fn url(&self) -> &GatewayUrl {
        &self.url
    }

    /// Sends a request to `path` (starting with `/`), with the token as the
    /// Basic password when given, and decodes a JSON answer. Error statuses
    /// become [`GatewayError::Refused`] with the gateway's `error` message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        json: Option<&serde_json::Value>,
    ) -> Result<T, GatewayError> {
        let url = format!("{}{path}", self.url.base());
        let bad_answer = |reason: String| GatewayError::BadAnswer {
            url: self.url.base(),
            reason,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("rack-gateway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = token {
            let cred = base64::engine::general_purpose::STANDARD.encode(format!("convox:{t}"));
            let mut v = HeaderValue::from_str(&format!("Basic {cred}")).map_err(|_| {
                GatewayError::BadUrl {
                    url: self.url.base(),
                    reason: "the stored token is malformed".into(),
                }
            })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        let body = match json {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| GatewayError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let mut reason = chain(&e);
                if reason.contains("certificate") {
                    reason.push_str(
                        " (for a gateway with a private CA, set RACK_GATEWAY_CA_FILE \
                             to its PEM bundle)",
                    );
                }
                GatewayError::Unreachable {
                    url: self.url.base(),
                    reason,
                }
            })?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| bad_answer(e.to_string()))?
                .to_bytes();
            Ok::<_, GatewayError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| GatewayError::Timeout {
                url: self.url.base(),
            })??;
        if !status.is_success() {
            return Err(GatewayError::Refused {
                status: status.as_u16(),
                message: error_message(status.as_u16(), &bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| bad_answer(e.to_string()))
    }
}

/// The message of an error answer, read the way the convox CLI reads rack
/// errors: JSON `error`, else the body's first line, else the status.
fn error_message(status: u16, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .filter(|m| !m.is_empty());
    from_json
        .or_else(|| {
            String::from_utf8_lossy(body)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(|l| l.chars().take(300).collect())
        })
        .unwrap_or_else(|| format!("the gateway answered HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_normalized() {
        let ok = |s: &str| GatewayUrl::parse(s).unwrap().base();
        assert_eq!(ok("gw.example.com"), "https://gw.example.com");
        assert_eq!(ok("https://GW.Example.com/"), "https://gw.example.com");
        assert_eq!(ok("https://gw.example.com:443"), "https://gw.example.com");
        assert_eq!(
            ok(" https://gw.example.com:8443 "),
            "https://gw.example.com:8443"
        );
        assert_eq!(ok("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost"), "http://localhost");
        assert_eq!(ok("http://[::1]:9"), "http://[::1]:9");
        for bad in [
            "http://gw.example.com",
            "http://127.0.0.1.nip.io:80",
            "ftp://gw.example.com",
            "https://user:pw@gw.example.com",
            "https://gw.example.com/racks/staging",
            "https://gw.example.com/?a=b",
            "https://",
            "",
        ] {
            assert!(GatewayUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rack_urls_carry_the_token_as_userinfo() {
        let u = GatewayUrl::parse("https://gw.example.com:8443").unwrap();
        assert_eq!(
            u.rack_url("a.b-c_d", "staging"),
            "https://convox:a.b-c_d@gw.example.com:8443/racks/staging"
        );
    }

    #[test]
    fn error_messages_read_like_the_convox_cli_reads_them() {
        assert_eq!(
            error_message(401, br#"{"error":"gateway: invalid token"}"#),
            "gateway: invalid token"
        );
        assert_eq!(error_message(502, b"\n bad gateway \nmore"), "bad gateway");
        assert_eq!(error_message(429, b""), "the gateway answered HTTP 429");
    }
}
