//! Rack traffic, one straight line: pick the rack → match the route →
//! identify → limit → decide (fetching the facts a decision needs first)
//! → forward (REST or upgrade) → audit.
//!
//! Every step that refuses returns a typed [`Refusal`], answered the way
//! the stock CLI prints best: JSON `{"error": "..."}` for REST, in-band
//! frames for websocket routes. What is forwarded is rebuilt from the
//! canonical request, so the rack sees exactly what was authorized.

pub(crate) mod ctx;
mod form;
mod forward;
mod held;
mod lookup;
mod upgrade;

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::Response;
use hyper::upgrade::OnUpgrade;

use crate::gateway::identify;
use crate::gateway::{Gateway, Runtime};
use crate::http::body::{self, Body};
use crate::http::canon::{Canonical, Upgrade};
use crate::http::respond::{Refusal, Socket};
use crate::http::Inbound;
use crate::identity::credentials::IdentityKind;
use crate::policy::placeholder::{self, Binding, Owner, TagKey};
use crate::policy::{process, reach, wording, Facts, Subject, Verdict, RESTRICTED_RUN_HEADERS};
use crate::rack::mask::Masking;
use crate::rack::routes::{self, RouteMethod};
use crate::rack::upstream::Rack;
use ctx::{Ctx, Routed, Stage, Who};

/// Handles one rack request end to end. Never fails: every outcome is a
/// response.
pub(crate) async fn handle(gw: &Gateway, rt: Option<Arc<Runtime>>, req: Inbound) -> Response<Body> {
    let mut ctx = Ctx::of(&req, gw, rt.clone(), req.canon.path_from(0));
    let Inbound {
        parts,
        canon,
        body,
        mut on_upgrade,
        ..
    } = req;
    let Some(rt) = rt else {
        return refuse_unconfigured(gw, &ctx, &parts, &canon, on_upgrade).await;
    };

    let (rack, offset) = match pick_rack(&rt, &canon) {
        Ok(x) => x,
        Err(r) => return ctx.refuse(None, r).await,
    };
    ctx.stage = Stage::Rack(rack.clone());

    let websocket = canon.upgrade == Upgrade::Websocket;
    let Some(m) = routes::match_route(&parts.method, websocket, &canon.segments[offset..]) else {
        let msg = format!("unknown route {} {}", parts.method, canon.path_from(offset));
        return ctx.refuse(None, Refusal::not_found(msg)).await;
    };
    let route_method = m.route.method;
    let served = (m.route.operation, m.route.commands);
    let stream = m.route.stream;
    let command = parts
        .headers
        .get("command")
        .map(|cmd| String::from_utf8_lossy(cmd.as_bytes()).into_owned());
    ctx.stage = Stage::Routed(Routed {
        rack: rack.clone(),
        route: m,
        command,
    });
    let upgrade_ok = matches!(
        (route_method, &canon.upgrade),
        (RouteMethod::Socket, Upgrade::Websocket) | (RouteMethod::Any, _) | (_, Upgrade::None)
    );
    if !upgrade_ok {
        return ctx
            .refuse(None, Refusal::bad_request("this route does not upgrade"))
            .await;
    }

    // From here on, refusals on websocket routes are delivered in-band.
    let socket = if route_method == RouteMethod::Socket {
        match Socket::take(&parts.headers, &mut on_upgrade, stream) {
            Some(s) => Some(s),
            None => {
                return ctx
                    .refuse(None, Refusal::bad_request("websocket handshake incomplete"))
                    .await
            }
        }
    } else {
        None
    };

    // A request the rack would read differently than the gateway decides
    // it (header fallbacks, bodies it would parse, repeated options,
    // hop-by-hop tricks, cross-site browsers) is refused, never "fixed".
    if let Err(e) = crate::rack::inputs::check(
        ctx.operation().unwrap_or_default(),
        &parts.method,
        websocket,
        &parts.headers,
        canon.query.as_deref(),
    ) {
        return ctx.refuse(socket, Refusal::invalid(e.status(), e)).await;
    }
    if !gw.audit.recording() {
        return ctx.refuse(socket, Refusal::audit_unavailable()).await;
    }
    if ctx.operation() == Some("probe") {
        // The CLI's pre-websocket probe; the rack would answer 404 too.
        return ctx.refuse(socket, Refusal::probe()).await;
    }

    let caller = match identify::identify(gw, &rt, &parts.headers, ctx.client).await {
        Ok(c) => c,
        Err(r) => return ctx.refuse(socket, r).await,
    };
    let subject = caller.subject;
    let (issued_at, credential) = (caller.issued_at, caller.credential);
    ctx.identified(Who {
        identity: caller.identity,
        auth: caller.auth,
        now: crate::clock::unix_now(),
    });

    // The policy decides before the rate limits: a refused request spends
    // no tokens, and its reason (never "rate limit") reaches the user.
    let query = canon.query.as_deref();
    let (verdict, mut decided) =
        match decide(gw, &rt, &rack, &ctx, &parts.headers, query, subject).await {
            Ok(v) => v,
            Err(r) => return ctx.refuse(socket, in_their_words(r, served)).await,
        };
    decided.issued_at = issued_at;
    decided.credential = Some(credential);
    let reason = match verdict {
        Verdict::Allow(r) => r,
        other => {
            let r = Refusal::policy(other.reason());
            return ctx.refuse(socket, in_their_words(r, served)).await;
        }
    };
    ctx.allow(reason);
    let looked_up = match (ctx.operation(), ctx.param("certificate")) {
        (Some("proxy"), _) => lookup::tunnel_target(&rt, &rack, &ctx, subject)
            .await
            .map(|app| decided.tunnel_app = Some(app)),
        (Some("certs delete"), Some(id)) => lookup::certificate_listed(&rt, &rack, &ctx, id).await,
        _ => Ok(()),
    };
    if let Err(r) = looked_up {
        return ctx.refuse(socket, in_their_words(r, served)).await;
    }
    let op = ctx.operation().unwrap_or_default();
    let access = rt.policy.secret_access(
        subject,
        &Facts {
            rack: &rack.name,
            operation: op,
            app: ctx.param("app"),
            now: ctx.now(),
            auth: ctx.auth(),
            ..Default::default()
        },
    );
    if let Some(why) = crate::rack::mask::stream_refusal(op, &access) {
        return ctx
            .refuse(socket, in_their_words(Refusal::policy(why), served))
            .await;
    }
    let masking = Masking::for_operation(op).map(|m| (m, access.read));

    let target = canon.target_from(offset);
    let mut upstream_headers = forward::forward_headers(&parts.headers, &rack, &ctx);
    if op == "run" {
        // An attached run's `sleep N` goes out tagged with its creator.
        if let Some(v) = tagged_placeholder(&rack, &ctx, subject, &parts.headers) {
            ctx.set_forwarded_command(String::from_utf8_lossy(v.as_bytes()).into_owned());
            upstream_headers.insert("command", v);
        }
    }
    let raw_upgrade = match (&socket, parts.headers.get(header::UPGRADE), on_upgrade) {
        (None, Some(p), Some(up)) if canon.upgrade != Upgrade::None => Some((p.clone(), up)),
        _ => None,
    };
    match (socket, raw_upgrade) {
        (Some(s), _) => {
            upgrade::socket(gw, ctx, &rt, &rack, &target, upstream_headers, s, decided).await
        }
        (None, Some((protocol, up))) => {
            let headers = upstream_headers;
            upgrade::raw(gw, ctx, &rt, &rack, &target, headers, protocol, up, decided).await
        }
        (None, None) => {
            let body = if form::is_checked(op) {
                let query = canon.query.as_deref();
                let req = form::FormRequest {
                    headers: &parts.headers,
                    query,
                    subject,
                    access: &access,
                };
                match form::checked(&mut ctx, &rt, &rack, req, body).await {
                    Ok(b) => {
                        upstream_headers.insert(header::CONTENT_LENGTH, b.len().into());
                        body::full(b)
                    }
                    Err(r) => return ctx.refuse(None, r).await,
                }
            } else {
                body::boxed(body)
            };
            if masking.is_some() {
                // The rack must answer in plain JSON for it to be masked.
                upstream_headers.remove(header::ACCEPT_ENCODING);
            }
            let out = forward::Outbound {
                method: parts.method,
                target: &target,
                headers: upstream_headers,
                body,
                masking,
            };
            forward::rest(ctx, &rt, &rack, out).await
        }
    }
}

/// The rack a request is for: `/racks/<name>/…`, or the only rack.
fn pick_rack(rt: &Runtime, canon: &Canonical) -> Result<(Arc<Rack>, usize), Refusal> {
    let racks = || rt.racks.keys().cloned().collect::<Vec<_>>().join(", ");
    match canon.segments.as_slice() {
        [first, name, rest @ ..] if first == "racks" && !rest.is_empty() => {
            match rt.racks.get(name.as_str()) {
                Some(r) => Ok((r.clone(), 2)),
                None => Err(Refusal::not_found(format!(
                    "unknown rack `{name}` (this gateway serves: {})",
                    racks()
                ))),
            }
        }
        _ => match rt.single_rack() {
            Some(r) => Ok((r.clone(), 0)),
            None if rt.racks.is_empty() => Err(Refusal::not_found("no racks are configured")),
            None => Err(Refusal::not_found(format!(
                "no rack selected: use RACK_URL=https://convox:<token>@<gateway>/racks/<name> (racks: {})",
                racks()
            ))),
        },
    }
}

/// The identity's rate limits for this operation.
fn limit(
    gw: &Gateway,
    rt: &Runtime,
    ctx: &Ctx,
    subject: &Subject,
) -> Result<(), crate::ratelimit::Limited> {
    let Some(id) = ctx.identity() else {
        return Ok(());
    };
    let roles = crate::ratelimit::role_names(&rt.policy, subject);
    let who = crate::ratelimit::Who {
        name: &id.name,
        ci: id.kind != IdentityKind::Person,
        roles: &roles,
    };
    gw.limiters()
        .check(&who, ctx.operation().unwrap_or_default())
}

/// Before the first valid config: refuse everything with 503 (in-band
/// on websocket routes), saying why, and never forward.
async fn refuse_unconfigured(
    gw: &Gateway,
    ctx: &Ctx,
    parts: &http::request::Parts,
    canon: &Canonical,
    mut on_upgrade: Option<OnUpgrade>,
) -> Response<Body> {
    let segments = &canon.segments;
    let offset = if segments.len() > 2 && segments[0] == "racks" {
        2
    } else {
        0
    };
    let websocket = canon.upgrade == Upgrade::Websocket;
    let socket = routes::match_route(&parts.method, websocket, &segments[offset..])
        .filter(|m| m.route.method == RouteMethod::Socket)
        .and_then(|m| Socket::take(&parts.headers, &mut on_upgrade, m.route.stream));
    let msg = match gw.reload.last_error() {
        Some(e) => format!(
            "no valid configuration is loaded, so all rack traffic is refused (last error: {e})"
        ),
        None => {
            "no valid configuration is loaded yet, so all rack traffic is refused; retry shortly"
                .to_string()
        }
    };
    ctx.refuse(socket, Refusal::no_config(msg)).await
}

/// `sleep N` as `sleep N.<tag>` binding the placeholder to the caller
/// (`policy::placeholder`); `None` for any other command.
fn tagged_placeholder(
    rack: &Rack,
    ctx: &Ctx,
    subject: &Subject,
    headers: &HeaderMap,
) -> Option<http::HeaderValue> {
    let command = headers.get("command")?.to_str().ok()?;
    let binding = binding(rack, ctx, subject, ctx.param("service")?)?;
    let key = TagKey::from_rack_password(rack.password());
    let tagged = placeholder::tagged_command(&key, &binding, command, placeholder::fresh_nonce())?;
    http::HeaderValue::from_str(&tagged).ok()
}

/// The caller's placeholder binding for `service` in the request's app.
fn binding<'a>(
    rack: &'a Rack,
    ctx: &'a Ctx,
    subject: &Subject,
    service: &'a str,
) -> Option<Binding<'a>> {
    Some(Binding {
        rack: &rack.name,
        app: ctx.param("app")?,
        service,
        kind: subject.kind,
        identity: &ctx.identity()?.name,
    })
}

/// A policy refusal as the person reads it: the convox commands the
/// route serves named after its operation, on one short line
/// ([`wording`]). The audit record keeps the whole reason as its detail.
fn in_their_words(mut r: Refusal, (op, commands): (&str, &str)) -> Refusal {
    if r.status != http::StatusCode::FORBIDDEN {
        return r;
    }
    const PREFIX: &str = "gateway: ";
    let reason = r.message.strip_prefix(PREFIX).unwrap_or(&r.message);
    let budget = wording::MAX_CHARS - PREFIX.len();
    r.message = format!(
        "{PREFIX}{}",
        wording::in_their_words(reason, op, commands, budget)
    );
    r
}

/// Runs the policy; when it needs the target process (exec, stopping a
/// run's placeholder, file transfers), asks the rack which service it
/// belongs to and whether it is the caller's placeholder first. A
/// `{pid}` must be an exact pod name that is not a service name.
/// Also returns the facts a session is decided on again at each reload.
async fn decide(
    gw: &Gateway,
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    headers: &HeaderMap,
    query: Option<&str>,
    subject: &Subject,
) -> Result<(Verdict, upgrade::Decided), Refusal> {
    let op = ctx.operation().unwrap_or_default();
    let pid = ctx.param("pid").filter(|_| process::targets_pod(op));
    if let Some(pid) = pid {
        process::check_pid(pid).map_err(Refusal::bad_request)?;
    }
    process::check_file_values(op, query).map_err(Refusal::bad_request)?;
    let command = headers
        .get("command")
        .map(|v| {
            v.to_str()
                .map_err(|_| Refusal::denied("the Command header is not valid UTF-8"))
        })
        .transpose()?;
    let restricted: Vec<&str> = if op == "run" {
        RESTRICTED_RUN_HEADERS
            .iter()
            .copied()
            .filter(|h| headers.contains_key(*h))
            .collect()
    } else {
        Vec::new()
    };
    let shown = command.map(|c| rt.redactor.apply(c));
    let app = ctx
        .param("app")
        .or_else(|| reach::app_of(op, ctx.param("certificate")));
    let mut facts = Facts {
        rack: &rack.name,
        operation: op,
        app,
        service: ctx.param("service"),
        command,
        command_shown: shown.as_deref(),
        process: None,
        run_headers: &restricted,
        now: ctx.now(),
        auth: ctx.auth(),
    };
    let verdict = rt.policy.decide(subject, &facts);
    let mut decided = upgrade::Decided {
        run_headers: restricted.clone(),
        ..Default::default()
    };
    if matches!(verdict, Verdict::Deny(_)) {
        return Ok((verdict, decided));
    }
    reach::check(&rt.policy, subject, &facts, ctx.param("certificate")).map_err(Refusal::denied)?;
    // Allowed so far: the request spends its rate-limit tokens now, before
    // any look-up it makes the rack answer.
    limit(gw, rt, ctx, subject).map_err(|l| Refusal::rate_limited(&l))?;
    let app = ctx.param("app");
    if let (Some(app), Some(pid)) = (app, pid) {
        let services = lookup::service_names(rt, rack, ctx, app).await?;
        process::check_not_service(pid, &services).map_err(Refusal::denied)?;
    }
    if verdict != Verdict::NeedProcess {
        return Ok((verdict, decided));
    }
    let (Some(app), Some(pid)) = (app, pid) else {
        return Err(Refusal::denied("the target process is unknown"));
    };
    let process = lookup::process(rt, rack, ctx, app, pid).await?;
    let key = TagKey::from_rack_password(rack.password());
    let owner = binding(rack, ctx, subject, &process.service).map_or(Owner::Other, |b| {
        placeholder::owner(&key, &b, &process.command)
    });
    facts.process = Some(&process);
    let verdict = rt.policy.decide_for(subject, &facts, owner);
    let entrypoint = headers.get("entrypoint").map(|v| v.as_bytes());
    if verdict.is_allow() && op == "exec" && process::entrypoint_set(entrypoint) {
        rt.policy
            .check_exec_entrypoint(subject, &facts, owner)
            .map_err(Refusal::denied)?;
        decided.entrypoint = true;
    }
    match verdict {
        Verdict::NeedProcess => Err(Refusal::denied("the target process is unknown")),
        v => {
            decided.process = Some(process);
            decided.owner = Some(owner);
            Ok((v, decided))
        }
    }
}
