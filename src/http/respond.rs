//! Refusals and errors turned into the bytes the stock CLI prints best.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::http::body::{self, Body};

static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Adds `Retry-After` to a 429 (an in-band websocket refusal is a 101 and
/// carries the wait in its message only).
pub fn with_retry_after(mut r: Response<Body>, l: &crate::ratelimit::Limited) -> Response<Body> {
    if r.status() == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, l.retry_after.as_secs().max(1).into());
    }
    r
}

/// A JSON error the stock CLI prints as `ERROR: <msg>`.
pub fn json_error(status: StatusCode, msg: &str, request_id: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": msg }).to_string() + "\n";
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID.clone(), v);
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"rack-gateway\""),
        );
    }
    r
}
