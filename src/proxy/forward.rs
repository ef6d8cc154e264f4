//! REST forwarding: the request rebuilt with exactly the headers that were
//! decided on plus the rack's credential, streamed both ways; responses
//! that carry secrets are buffered (capped) and masked instead.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::ctx::{filter_response_headers, Ctx};
use crate::gateway::Runtime;
use crate::http::body::{self, Body, Idle};
use crate::http::respond::{Refusal, REQUEST_ID};
use crate::rack::mask::{self, Masking};
use crate::rack::upstream::Rack;

static CONVOX_ACTOR: HeaderName = HeaderName::from_static("convox-actor");

/// Header names the gateway sets or that must never reach the rack from a
/// client: credentials, hop-by-hop headers, and headers the rack trusts for
/// tenancy and audit (convox-api.md §8).
const DROP_REQUEST: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "convox-tid",
    "x-convox-tid",
    "convox-actor",
    "x-convox-actor",
    "forwarded",
    "x-real-ip",
    "request-id",
    "origin",
];

/// The headers sent to the rack: the client's, minus everything in
/// [`DROP_REQUEST`], `X-Forwarded-*` and anything `Connection` names; plus
/// the rack credential, the actor and the request id.
pub(crate) fn forward_headers(src: &HeaderMap, rack: &Rack, ctx: &Ctx) -> HeaderMap {
    let named: Vec<String> = src
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(src.len() + 4);
    for (name, value) in src {
        let n = name.as_str();
        if DROP_REQUEST.contains(&n)
            || n.starts_with("x-forwarded-")
            || named.iter().any(|t| t == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(header::HOST, rack.host.clone());
    out.insert(header::AUTHORIZATION, rack.authorization.clone());
    if let Some(id) = ctx.identity() {
        if let Ok(v) = HeaderValue::from_str(&id.name) {
            out.insert(CONVOX_ACTOR.clone(), v);
        }
    }
    out.insert(REQUEST_ID.clone(), ctx.request_id_value());
    out
}

/// What a REST request is forwarded with.
pub(crate) struct Outbound<'a> {
    pub method: Method,
    pub target: &'a str,
    pub headers: HeaderMap,
    pub body: Body,
    /// The response's secret shape, and whether this identity may see it.
    pub masking: Option<(Masking, bool)>,
}

/// Forwards an allowed REST request and relays (or masks) the answer.
pub(crate) async fn rest(ctx: Ctx, rt: &Runtime, rack: &Rack, out: Outbound<'_>) -> Response<Body> {
    let idle = rt.timeouts.idle;
    let Ok(uri) = rack.uri(out.target) else {
        return ctx
            .refuse(None, Refusal::bad_request("invalid target"))
            .await;
    };
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let mut up = Request::new(body::boxed(body::OnEnd::new(
        body::Counted::new(Idle::new(out.body, idle), ctx.bytes_in.clone()),
        move |_| {
            let _ = sent_tx.send(());
        },
    )));
    *up.method_mut() = out.method;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = out.headers;
    // The idle timer for the response starts once the request body has
    // been sent: a long upload that keeps moving never times out, and a
    // stalled one fails through the body's own idle timer.
    let response_deadline = async {
        let _ = sent_rx.await;
        tokio::time::sleep(idle).await;
    };
    ctx.metrics.observe_overhead(ctx.started.elapsed());
    let sent_at = Instant::now();
    let resp = tokio::select! {
        r = rack.client().request(up) => match r {
            Ok(r) => r,
            Err(e) => return ctx.upstream_failed(&describe_client_error(&e)).await,
        },
        _ = response_deadline => return ctx.upstream_failed("no response within the idle timeout").await,
    };
    ctx.metrics.observe_upstream(sent_at.elapsed());
    let (rparts, rbody) = resp.into_parts();
    if rparts.status == StatusCode::UNAUTHORIZED {
        tracing::error!(rack = %rack.name, "the rack refused the gateway's credentials; check its password");
        return ctx
            .upstream_failed("the rack refused the gateway's credentials")
            .await;
    }
    match out.masking {
        None => ctx.relay(rparts, rbody, idle).await,
        Some((kind, reveal)) => masked(ctx, rack, rparts, rbody, idle, kind, reveal).await,
    }
}

/// Buffers a secret-bearing answer (at most [`mask::MAX_MASKED_RESPONSE`])
/// and masks it; a success that is not JSON is refused rather than passed.
async fn masked(
    ctx: Ctx,
    rack: &Rack,
    mut rparts: http::response::Parts,
    rbody: Incoming,
    idle: Duration,
    kind: Masking,
    reveal: bool,
) -> Response<Body> {
    filter_response_headers(&mut rparts.headers);
    rparts
        .headers
        .insert(REQUEST_ID.clone(), ctx.request_id_value());
    let limited = http_body_util::Limited::new(Idle::new(rbody, idle), mask::MAX_MASKED_RESPONSE);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return ctx
                .upstream_failed("the response is too large to mask its secrets (over 4 MiB)")
                .await
        }
        Err(_) => return ctx.upstream_failed("the response body failed").await,
    };
    let masked = if rparts.status.is_success() {
        match mask::mask_body(kind, &bytes, reveal, rack.password()) {
            Ok(b) => b,
            Err(e) => return ctx.upstream_failed(&e.to_string()).await,
        }
    } else {
        mask::scrub(&String::from_utf8_lossy(&bytes), rack.password()).into_bytes()
    };
    rparts.headers.remove(header::CONTENT_ENCODING);
    rparts
        .headers
        .insert(header::CONTENT_LENGTH, masked.len().into());
    if ctx
        .record_buffered(rparts.status.as_u16(), masked.len() as u64)
        .await
        .is_err()
    {
        return ctx.unrecorded();
    }
    Response::from_parts(rparts, body::full(masked))
}

/// The first line of a (small) error body from the rack, for the client
/// and the audit record: the rack password scrubbed from the whole line
/// before it is cut to 200 characters, so no prefix of it survives.
pub(crate) async fn read_error_text(resp: Response<Incoming>, rack_password: &str) -> String {
    let limited = http_body_util::Limited::new(resp.into_body(), 4096);
    let bytes = match tokio::time::timeout(Duration::from_secs(5), limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let line = mask::scrub(text.lines().next().unwrap_or("").trim(), rack_password);
    if line.is_empty() {
        "no message".to_string()
    } else {
        line.chars().take(200).collect()
    }
}

pub(crate) fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut last = String::from("connection failed");
        while let Some(s) = src {
            last = s.to_string();
            src = s.source();
        }
        format!("cannot connect ({last})")
    } else {
        "the connection to the rack failed".to_string()
    }
}
