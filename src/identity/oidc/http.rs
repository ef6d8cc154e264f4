//! [`IdpHttp`], the one HTTP client for identity providers: the gateway's
//! own hyper + rustls stack, bounded in time and response size, never
//! following redirects, and refusing plain http except to loopback (so a
//! misconfigured issuer URL cannot leak codes or secrets in clear text).

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{error_chain, strip_query, OidcError};
use crate::config::UpstreamTls;
use crate::rack::upstream::client_tls;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole request, connect to last body byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Discovery documents, JWKS and token responses are all far smaller.
pub(super) const MAX_RESPONSE: usize = 1024 * 1024;

/// HTTP client for identity providers. Cheap to clone (the connection pool
/// is shared).
#[derive(Clone)]
pub(crate) struct IdpHttp {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        Full<Bytes>,
    >,
}

impl std::fmt::Debug for IdpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpHttp").finish_non_exhaustive()
    }
}

impl IdpHttp {
    /// Trusts the bundled Mozilla roots, or only `ca_file` (for a private IdP).
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Self, OidcError> {
        let tls = client_tls(&UpstreamTls::Verify {
            ca_file: ca_file.map(Path::to_path_buf),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnector::from((http, tls));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(IdpHttp { client })
    }

    /// Sends one request and reads the whole (capped) response. Any status is
    /// returned as-is, 3xx included: redirects are never followed.
    pub(crate) async fn request(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OidcError> {
        let shown = shown_url(req.uri());
        check_url(req.uri())?;
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static("rack-gateway"));
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| OidcError::Transport {
                    url: shown.clone(),
                    reason: error_chain(&e),
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OidcError::TooLarge(shown.clone())
                    } else {
                        OidcError::Transport {
                            url: shown.clone(),
                            reason: error_chain(&*e),
                        }
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| OidcError::Timeout(shown.clone()))?
    }

    /// GETs a JSON document; anything but 200 is an error.
    pub(crate) async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let req = http::Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| OidcError::BadUrl(strip_query(url)))?;
        let resp = self.request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(OidcError::Status {
                url: strip_query(url),
                status: resp.status().as_u16(),
            });
        }
        serde_json::from_slice(resp.body()).map_err(|_| OidcError::Json(strip_query(url)))
    }
}

/// Lets `openidconnect` (discovery, JWKS, token endpoint) use our client.
impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = OidcError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OidcError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.request(request))
    }
}

fn check_url(uri: &Uri) -> Result<(), OidcError> {
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(host)) if is_loopback(host) => Ok(()),
        (Some("http"), Some(_)) => Err(OidcError::InsecureUrl(shown_url(uri))),
        _ => Err(OidcError::BadUrl(shown_url(uri))),
    }
}

pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn shown_url(uri: &Uri) -> String {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", uri.path()),
        _ => uri.path().to_string(),
    }
}
