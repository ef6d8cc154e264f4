//! Refusals, typed where they are decided and turned into bytes here, in
//! one place: JSON `{"error": ...}` for REST (what the stock CLI prints as
//! `ERROR: ...`), the in-band websocket sequence for socket routes
//! (convox-api.md §7.2), `Retry-After` for 429.
//!
//! A [`Refusal`] knows everything the rest of the pipeline needs about it:
//! its status, its audit decision, the metric it counts under, the message
//! the client sees and the detail the audit log keeps. Nothing downstream
//! guesses any of these back from a status code.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use crate::audit::Decision;
use crate::http::body::{self, Body};
use crate::rack::routes::Stream;
use crate::ratelimit::{Bucket, Limited};

/// The request id header the gateway sets on every response.
pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// What a refusal counts under in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `rack_gateway_rejected_total{reason}`.
    Rejected(&'static str),
    /// `rack_gateway_rate_limited_total{bucket}`.
    RateLimited(Bucket),
    /// Not a refusal of the client (the rack failed, a probe answered).
    None,
}

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub decision: Decision,
    pub metric: Metric,
    /// What the client sees, on one line.
    pub message: String,
    /// What the audit record keeps as its reason.
    pub detail: String,
    /// For 429: how long to wait.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    fn new(status: StatusCode, decision: Decision, metric: Metric, message: String) -> Refusal {
        Refusal {
            status,
            decision,
            metric,
            detail: message.clone(),
            message,
            retry_after: None,
        }
    }

    /// A malformed or ambiguous request (400).
    pub(crate) fn bad_request(what: impl std::fmt::Display) -> Refusal {
        Refusal::invalid(StatusCode::BAD_REQUEST, what)
    }

    /// A malformed request with a more specific status (413, 415, ...).
    pub fn invalid(status: StatusCode, what: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            status,
            Decision::Reject,
            Metric::Rejected("bad_request"),
            format!("gateway: bad request: {what}"),
        )
    }

    /// Nothing here by that name: an unknown rack or route (404).
    pub(crate) fn not_found(message: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            Decision::Reject,
            Metric::Rejected("bad_request"),
            format!("gateway: {message}"),
        )
    }

    /// The credential is missing, invalid or no longer admitted (401).
    pub fn unauthenticated(why: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            Decision::Deny,
            Metric::Rejected("unauthenticated"),
            format!("gateway: {why}"),
        )
    }

    /// The policy's verdict, whose reason names the deciding rule (403).
    pub fn policy(reason: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::FORBIDDEN,
            Decision::Deny,
            Metric::Rejected("forbidden"),
            format!("gateway: {reason}"),
        )
    }

    /// A refusal decided on facts beyond the route (a form value, a tunnel
    /// target, a process) (403).
    pub fn denied(why: impl std::fmt::Display) -> Refusal {
        Refusal::policy(format!("denied: {why}"))
    }

    /// Over a rate limit (429 with `Retry-After`).
    pub(crate) fn rate_limited(l: &Limited) -> Refusal {
        Refusal {
            retry_after: Some(l.retry_after),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                Decision::Deny,
                Metric::RateLimited(l.bucket),
                format!("gateway: {}", l.message),
            )
        }
    }

    /// No valid configuration is loaded: everything is refused (503).
    pub(crate) fn no_config(message: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Decision::Reject,
            Metric::Rejected("no_config"),
            format!("gateway: {message}"),
        )
    }

    /// Fail-closed audit: nothing is served that could not be recorded (503).
    pub(crate) fn audit_unavailable() -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Decision::Reject,
            Metric::Rejected("audit_unavailable"),
            "gateway: the audit log cannot be written, so requests are refused (fail-closed); retry shortly".into(),
        )
    }

    /// The rack could not be reached or answered unusably (502).
    pub(crate) fn rack_unavailable(rack: &str, detail: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            Decision::Error,
            Metric::None,
            format!("gateway: rack `{rack}` unavailable: {detail}"),
        )
    }

    /// What the rack itself answers to the CLI's pre-websocket probe (404,
    /// answered locally, not counted as a refusal).
    pub fn probe() -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            Decision::Local,
            Metric::None,
            "404 page not found".into(),
        )
    }

    /// The REST rendering: JSON `{"error": ...}`.
    pub(crate) fn into_response(self, request_id: &str) -> Response<Body> {
        let mut r = json_error(self.status, &self.message, request_id);
        if let Some(wait) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        }
        r
    }
}

/// A JSON error the stock CLI prints as `ERROR: <msg>`.
pub(crate) fn json_error(status: StatusCode, msg: &str, request_id: &str) -> Response<Body> {
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
    // No `WWW-Authenticate` on 401: a Basic challenge makes browsers prompt
    // for and cache credentials, which a cross-site page could then ride.
    // The stock CLI never needs the challenge.
    r
}

/// The pieces of a websocket request needed to accept or refuse it.
pub struct Socket {
    key: String,
    pub on_upgrade: OnUpgrade,
    exit_marker: bool,
}

impl Socket {
    /// The handshake's key and upgrade, or `None` when it is incomplete.
    pub fn take(
        headers: &HeaderMap,
        on_upgrade: &mut Option<OnUpgrade>,
        stream: Stream,
    ) -> Option<Socket> {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())?
            .to_string();
        Some(Socket {
            key,
            on_upgrade: on_upgrade.take()?,
            exit_marker: stream == Stream::WsExit,
        })
    }

    /// Accepts the upgrade and delivers `message` in-band.
    pub fn refuse(self, message: &str, request_id: &str) -> Response<Body> {
        tokio::spawn(crate::rack::tunnel::refuse_in_band(
            self.on_upgrade,
            message.to_string(),
            self.exit_marker,
        ));
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&crate::rack::ws::accept_key(&self.key)) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID.clone(), v);
        }
        resp
    }
}

/// A refusal on the wire: in-band when the client opened a websocket,
/// JSON otherwise.
pub fn render(refusal: Refusal, socket: Option<Socket>, request_id: &str) -> Response<Body> {
    match socket {
        Some(s) => s.refuse(&refusal.message, request_id),
        None => refusal.into_response(request_id),
    }
}
