//! Upgrades: websocket routes (exec, run, logs, proxy) and the reverse
//! proxy routes that may upgrade to any protocol. The handshake is
//! forwarded to the rack; once both sides switched, the bytes are spliced
//! by `rack::tunnel` under a session guard, and the session's end is
//! audited.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::ctx::Ctx;
use super::forward::{describe_client_error, read_error_text};
use crate::config::WebsocketLimits;
use crate::gateway::{Gateway, Runtime};
use crate::http::body::{self, Body};
use crate::http::respond::{Socket, REQUEST_ID};
use crate::rack::tunnel;
use crate::rack::upstream::Rack;

/// Opens the rack's side of a websocket route and splices, or refuses
/// in-band when the rack would not open it.
pub(crate) async fn socket(
    gw: &Gateway,
    ctx: Ctx,
    rt: &Runtime,
    rack: &Rack,
    target: &str,
    mut headers: HeaderMap,
    socket: Socket,
) -> Response<Body> {
    headers.insert(header::ORIGIN, rack.origin.clone());
    let protocol = HeaderValue::from_static("websocket");
    let resp = match send_upgrade(rt, rack, target, headers, protocol).await {
        Ok(r) => r,
        Err(why) => {
            let msg = format!("gateway: rack `{}` unreachable: {why}", rack.name);
            return ctx.refuse_session(socket, &msg, &why, None);
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let text = read_error_text(resp).await;
        let msg = format!("gateway: rack answered {}: {}", status.as_u16(), text);
        return ctx.refuse_session(socket, &msg, &msg, Some(status.as_u16()));
    }
    let client_resp = switching_response(&resp, &ctx);
    ctx.session_start();
    spawn_splice(gw, ctx, rt.websocket, resp, socket.on_upgrade);
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
) -> Response<Body> {
    let resp = match send_upgrade(rt, rack, target, headers, protocol).await {
        Ok(r) => r,
        Err(msg) => return ctx.upstream_failed(&msg),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (rparts, rbody) = resp.into_parts();
        return ctx.relay(rparts, rbody, rt.timeouts.idle);
    }
    let client_resp = switching_response(&resp, &ctx);
    ctx.session_start();
    spawn_splice(gw, ctx, rt.websocket, resp, client_up);
    client_resp
}

fn spawn_splice(
    gw: &Gateway,
    ctx: Ctx,
    limits: WebsocketLimits,
    resp: Response<Incoming>,
    client_up: OnUpgrade,
) {
    let session = gw
        .sessions
        .open(gw.metrics.clone(), ctx.operation().unwrap_or("-"));
    let framing = tunnel::Framing::from_upgrade(resp.headers().get(header::UPGRADE));
    tokio::spawn(async move {
        let (Ok(rack_io), Ok(client_io)) = tokio::join!(hyper::upgrade::on(resp), client_up) else {
            return;
        };
        let end = tunnel::splice(
            TokioIo::new(client_io),
            TokioIo::new(rack_io),
            framing,
            limits.idle_timeout,
            limits.max_session,
            session.closing(),
        )
        .await;
        ctx.audit_session_end(end);
        drop(session);
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
