//! Upgrades: websocket routes (exec, run, logs, proxy) and the reverse
//! proxy routes that may upgrade to any protocol. The handshake is
//! forwarded to the rack; once both sides switched, the bytes are spliced
//! by `rack::tunnel` under a session guard, and the session's end is
//! audited.
//!
//! Before the rack is asked, the session takes its place among the
//! identity's sessions (refused past `websocket.max_sessions_per_identity`)
//! with what it was allowed as, so a reload can revoke it later.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

use super::ctx::{Ctx, Done, Stage};
use super::forward::{describe_client_error, read_error_text};
use crate::audit::Decision;
use crate::config::WebsocketLimits;
use crate::gateway::sessions::{Grant, Slot};
use crate::gateway::{Gateway, Runtime};
use crate::http::body::{self, Body};
use crate::http::respond::{Metric, Refusal, Socket, REQUEST_ID};
use crate::policy::Process;
use crate::rack::routes::Stream;
use crate::rack::tunnel;
use crate::rack::upstream::Rack;

/// What the session was decided on beyond the request's context: kept so
/// a reload can decide it again.
#[derive(Debug, Default)]
pub(crate) struct Decided {
    /// When the caller's gateway token was issued, if it is one.
    pub issued_at: Option<i64>,
    /// The target process as the rack reported it (exec).
    pub process: Option<Process>,
    /// Restricted run headers present on the request.
    pub run_headers: Vec<&'static str>,
    /// The credential the caller presented, to check it is still accepted.
    pub credential: Option<crate::identity::credentials::Credential>,
    /// Whose placeholder the target process is (exec), as decided at open.
    pub owner: Option<crate::policy::placeholder::Owner>,
    /// The app whose resource a tunnel's target is (`proxy`).
    pub tunnel_app: Option<String>,
    /// An exec with `Entrypoint` set (allowed as such).
    pub entrypoint: bool,
}

/// Opens the rack's side of a websocket route and splices, or refuses
/// in-band when the rack would not open it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn socket(
    gw: &Gateway,
    ctx: Ctx,
    rt: &Runtime,
    rack: &Rack,
    target: &str,
    mut headers: HeaderMap,
    socket: Socket,
    decided: Decided,
) -> Response<Body> {
    let slot = match reserve(gw, &ctx, rt, decided) {
        Ok(s) => s,
        Err(r) => return ctx.refuse(Some(socket), r).await,
    };
    headers.insert(header::ORIGIN, rack.origin.clone());
    let protocol = HeaderValue::from_static("websocket");
    let resp = match send_upgrade(rt, rack, target, headers, protocol).await {
        Ok(r) => r,
        Err(why) => {
            let msg = format!("gateway: rack `{}` unreachable: {why}", rack.name);
            return ctx.refuse_session(socket, &msg, &why, None).await;
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let text = read_error_text(resp, rack.password()).await;
        let msg = format!("gateway: rack answered {}: {}", status.as_u16(), text);
        return ctx
            .refuse_session(socket, &msg, &msg, Some(status.as_u16()))
            .await;
    }
    let client_resp = switching_response(&resp, &ctx);
    if ctx.session_start().await.is_err() {
        return socket.refuse(&Refusal::audit_unavailable().message, &ctx.request_id);
    }
    spawn_splice(gw, ctx, slot, rt.websocket, resp, socket.on_upgrade);
    client_resp
}

/// Reverse-proxy routes (kubernetes, registry) may upgrade to any
/// protocol: forward the upgrade and splice, or relay the rack's answer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn raw(
    gw: &Gateway,
    ctx: Ctx,
    rt: &Runtime,
    rack: &Rack,
    target: &str,
    headers: HeaderMap,
    protocol: HeaderValue,
    client_up: OnUpgrade,
    decided: Decided,
) -> Response<Body> {
    let slot = match reserve(gw, &ctx, rt, decided) {
        Ok(s) => s,
        Err(r) => return ctx.refuse(None, r).await,
    };
    let resp = match send_upgrade(rt, rack, target, headers, protocol).await {
        Ok(r) => r,
        Err(msg) => return ctx.upstream_failed(&msg).await,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (rparts, rbody) = resp.into_parts();
        return ctx.relay(rparts, rbody, rt.timeouts.idle).await;
    }
    let client_resp = switching_response(&resp, &ctx);
    if ctx.session_start().await.is_err() {
        return ctx.unrecorded();
    }
    spawn_splice(gw, ctx, slot, rt.websocket, resp, client_up);
    client_resp
}

/// Takes the session's place among its identity's sessions, or refuses it
/// (429, in-band on websocket routes) when the identity holds the maximum.
fn reserve(gw: &Gateway, ctx: &Ctx, rt: &Runtime, decided: Decided) -> Result<Slot, Refusal> {
    let Stage::Allowed(routed, who, _) = &ctx.stage else {
        return Err(Refusal::denied("the session was not authorized"));
    };
    let name = who.identity.name.clone();
    let credential = decided
        .credential
        .ok_or_else(|| Refusal::denied("the session's credential is unknown"))?;
    let grant = Grant {
        identity: who.identity.clone(),
        issued_at: decided.issued_at,
        rack: routed.rack.name.clone(),
        operation: routed.route.route.operation,
        app: ctx.param("app").map(str::to_string),
        service: ctx.param("service").map(str::to_string),
        command: routed.command.clone(),
        process: decided.process,
        run_headers: decided.run_headers,
        auth: Some(who.auth.clone()),
        credential,
        owner: decided.owner,
        tunnel_app: decided.tunnel_app,
        entrypoint: decided.entrypoint,
    };
    let limit = rt.websocket.max_sessions_per_identity;
    let slot = gw.sessions.reserve(grant, limit).map_err(|t| {
        let message = format!(
            "gateway: {name} already has {} open sessions, the most allowed \
             (websocket.max_sessions_per_identity); close one and retry",
            t.limit
        );
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            decision: Decision::Deny,
            metric: Metric::Rejected("too_many_sessions"),
            detail: message.clone(),
            message,
            retry_after: None,
        }
    })?;
    // A reload that swapped a config in since this request was decided
    // did not see this session yet.
    if let Some(now) = gw.runtime() {
        if !std::ptr::eq(Arc::as_ptr(&now), rt) {
            slot.recheck(&now);
        }
    }
    Ok(slot)
}

fn spawn_splice(
    gw: &Gateway,
    ctx: Ctx,
    slot: Slot,
    limits: WebsocketLimits,
    resp: Response<Incoming>,
    client_up: OnUpgrade,
) {
    let session = gw
        .sessions
        .open(slot, gw.metrics.clone(), ctx.operation().unwrap_or("-"));
    let exit_marker =
        matches!(&ctx.stage, Stage::Allowed(r, _, _) if r.route.route.stream == Stream::WsExit);
    let framing = tunnel::Framing::from_upgrade(resp.headers().get(header::UPGRADE));
    tokio::spawn(async move {
        let (Ok(rack_io), Ok(client_io)) = tokio::join!(hyper::upgrade::on(resp), client_up) else {
            return;
        };
        let end = tunnel::splice_until(
            TokioIo::new(client_io),
            TokioIo::new(rack_io),
            framing,
            exit_marker,
            limits.idle_timeout,
            limits.max_session,
            session.closing(exit_marker),
        )
        .await;
        match session.revoked() {
            Some(why) if end.reason == tunnel::EndReason::Revoked => audit_revoked(&ctx, end, &why),
            _ => ctx.audit_session_end(end),
        }
        drop(session);
    });
}

/// The `session-end` record of a session a reload revoked: denied, with
/// the new config's reason.
fn audit_revoked(ctx: &Ctx, end: tunnel::SpliceEnd, why: &str) {
    ctx.bytes_in
        .store(end.up, std::sync::atomic::Ordering::Relaxed);
    ctx.record(Done {
        event: "session-end",
        decision: Decision::Deny,
        reason: why,
        status: 101,
        upstream: Some(101),
        bytes_out: end.down,
        exit_code: end.exit_code,
    });
}

async fn send_upgrade(
    rt: &Runtime,
    rack: &Rack,
    target: &str,
    mut headers: HeaderMap,
    protocol: HeaderValue,
) -> Result<Response<Incoming>, String> {
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, protocol);
    let uri = rack.uri(target).map_err(|_| "invalid target".to_string())?;
    let mut up = Request::new(body::empty());
    *up.method_mut() = Method::GET;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;
    match tokio::time::timeout(rt.timeouts.idle, rack.client().request(up)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(describe_client_error(&e)),
        Err(_) => Err("no response within the idle timeout".into()),
    }
}

/// The 101 sent to the client: the rack's handshake answer (its
/// Sec-WebSocket-Accept matches the client's key, which was forwarded).
fn switching_response(upstream: &Response<Incoming>, ctx: &Ctx) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in upstream.headers() {
        if name == REQUEST_ID {
            continue;
        }
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp.headers_mut()
        .insert(REQUEST_ID.clone(), ctx.request_id_value());
    resp
}
