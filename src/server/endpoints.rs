//! The gateway's own endpoints, under `/_gateway/` (no rack route starts
//! with an underscore): health, the browser login, the token exchange for
//! the CLI, and `whoami`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::audit::{self, Decision, Ticket};
use crate::clock::unix_now;
use crate::gateway::identify::{self, Caller, Client};
use crate::gateway::{Gateway, Runtime};
use crate::http::body::{self, Body};
use crate::http::respond::json_error;
use crate::http::respond::{Metric, Refusal};
use crate::http::Inbound;
use crate::identity::credentials;
use crate::identity::login::{self, LoginError};
use crate::identity::oidc::{IdpHttp, Provider, ProviderConfig};
use crate::identity::seal::Sealer;

/// Largest body accepted by the gateway's own endpoints.
const MAX_BODY: usize = 16 * 1024;

/// One request to `/_gateway/<rest>`.
struct Call<'a> {
    method: &'a Method,
    query: Option<&'a str>,
    headers: &'a http::HeaderMap,
    request_id: &'a str,
    peer: SocketAddr,
    /// The client address, by the same rules as rack traffic.
    client: Client,
}

/// Answers a `/_gateway/…` request (the dispatcher has checked the prefix).
pub(crate) async fn handle(gw: &Gateway, rt: Option<&Runtime>, req: Inbound) -> Response<Body> {
    let Inbound {
        request_id,
        peer,
        parts,
        canon,
        body,
        ..
    } = req;
    let call = Call {
        method: &parts.method,
        query: canon.query.as_deref(),
        headers: &parts.headers,
        request_id: &request_id,
        peer,
        client: Client::of(peer, &parts.headers, rt),
    };
    let rest: Vec<&str> = canon.segments[1..].iter().map(String::as_str).collect();
    let mut resp = match (call.method, rest.as_slice(), rt) {
        (&Method::GET, ["healthz"], _) => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        (&Method::GET, ["readyz"], _) => readyz(gw, rt, &call).await,
        (&Method::GET, ["status"], _) => status(gw, rt, &call).await,
        (&Method::GET, ["metrics"], _) => metrics(gw, rt, &call).await,
        (&Method::POST, ["webhook"], _) => webhook(gw, &call, body).await,
        (_, ["healthz" | "readyz" | "status" | "metrics" | "webhook"], _) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "gateway: method not allowed",
            call.request_id,
        ),
        (_, _, None) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway: no valid configuration is loaded yet",
            call.request_id,
        ),
        // Fail-closed audit: logins and the rest are refused like rack
        // traffic while their records cannot be written.
        _ if !gw.audit.recording() => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway: the audit log cannot be written, so requests are refused (fail-closed); retry shortly",
            call.request_id,
        ),
        (&Method::GET, ["login", "config"], Some(rt)) => login_config(rt),
        (&Method::GET, ["login", "start"], Some(rt)) => login_start(gw, rt, &call).await,
        (&Method::GET, ["login", "callback"], Some(rt)) => login_callback(gw, rt, &call).await,
        (&Method::POST, ["login", "token"], Some(rt)) => login_token(gw, rt, &call, body).await,
        (&Method::GET, ["whoami"], Some(rt)) => whoami(gw, rt, &call).await,
        (&Method::POST, ["can"], Some(rt)) => can(gw, rt, &call, body).await,
        _ => json_error(
            StatusCode::NOT_FOUND,
            "gateway: unknown gateway endpoint",
            call.request_id,
        ),
    };
    if let Ok(v) = HeaderValue::from_str(call.request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// A caller on the gateway host itself: a loopback peer whose request
/// carries no forwarding header and names a loopback host. A reverse proxy
/// on the same host connects from loopback too, and must not make every
/// client it forwards "local"; nor may a web page that a browser on the
/// host opens, by rebinding its own name to 127.0.0.1 (its `Host` is that
/// name).
fn local_caller(call: &Call<'_>) -> bool {
    call.peer.ip().is_loopback()
        && !["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|h| call.headers.contains_key(*h))
        && call
            .headers
            .get(header::HOST)
            .is_none_or(|h| h.to_str().is_ok_and(loopback_host))
}

/// `localhost`, `127.0.0.1`, `[::1]` and the like, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Operator endpoints (status, metrics) answer loopback callers, and
/// others whose role has the `gateway status` permission.
async fn operator(
    gw: &Gateway,
    rt: Option<&Runtime>,
    call: &Call<'_>,
) -> Result<(), Response<Body>> {
    if local_caller(call) {
        return Ok(());
    }
    let Some(rt) = rt else {
        return Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway: no valid configuration is loaded yet; read the status from the gateway host (loopback)",
            call.request_id,
        ));
    };
    let who = caller(gw, rt, call).await?;
    match rt
        .policy
        .has_permission(who.subject, "gateway status", crate::clock::unix_now())
    {
        true => Ok(()),
        false => Err(json_error(
            StatusCode::FORBIDDEN,
            "gateway: denied: this endpoint needs the `gateway status` permission",
            call.request_id,
        )),
    }
}

/// `GET /_gateway/readyz`: ready when a valid config is loaded and every
/// rack answers `GET /system` with the gateway's credentials (checked
/// concurrently, 3 s each). Callers allowed to see the status (loopback,
/// or credentials holding `gateway status`) see which rack failed and why;
/// load balancers elsewhere get only the verdict.
async fn readyz(gw: &Gateway, rt: Option<&Runtime>, call: &Call<'_>) -> Response<Body> {
    let not_ready = |reason: &str| {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "reason": reason}),
        )
    };
    let Some(rt) = rt else {
        return not_ready("no valid configuration is loaded");
    };
    if !gw.audit.recording() {
        return not_ready("the audit log cannot be written (fail-closed)");
    }
    let results = gw.ready.probe(rt).await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let mut v = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "config": rt.version,
    });
    // Fail-open: still serving, but say that records are being lost.
    if let Some((_, _, false)) = gw.audit.file_counters() {
        v["audit"] = "the audit file cannot be written (fail-open: serving without it)".into();
    }
    // Only a request that presents credentials is identified: anonymous
    // load-balancer polls must not count as failed logins.
    let sees_status = local_caller(call)
        || (call.headers.contains_key(header::AUTHORIZATION)
            && operator(gw, Some(rt), call).await.is_ok());
    if sees_status {
        v["racks"] = results
            .into_iter()
            .map(|(name, r)| {
                (
                    name,
                    serde_json::Value::from(r.err().unwrap_or_else(|| "ok".into())),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, v)
}

/// `GET /_gateway/status`: which config version serves, since when, from
/// where, and the last reload failure.
async fn status(gw: &Gateway, rt: Option<&Runtime>, call: &Call<'_>) -> Response<Body> {
    if let Err(r) = operator(gw, rt, call).await {
        return r;
    }
    let s = gw.reload.status();
    let value = serde_json::to_value(&s).unwrap_or_default();
    json(StatusCode::OK, value)
}

/// `GET /_gateway/metrics`: Prometheus text exposition (operator-only,
/// like the status).
async fn metrics(gw: &Gateway, rt: Option<&Runtime>, call: &Call<'_>) -> Response<Body> {
    use crate::metrics::Extra;
    if let Err(r) = operator(gw, rt, call).await {
        return r;
    }
    let (hits, misses) = rt
        .map(|r| (r.credentials.cache.hits(), r.credentials.cache.misses()))
        .unwrap_or_default();
    let mut extra = vec![
        Extra::gauge(
            "rack_gateway_ratelimit_keys",
            "Identities and addresses the rate limiters currently track.",
            gw.limiters().key_count() as f64,
        ),
        Extra::counter(
            "rack_gateway_token_cache_hits_total",
            "Gateway token verifications answered from the cache (since the last reload).",
            hits as f64,
        ),
        Extra::counter(
            "rack_gateway_token_cache_misses_total",
            "Gateway token verifications that checked the signature (since the last reload).",
            misses as f64,
        ),
    ];
    if let Some((written, dropped, healthy)) = gw.audit.file_counters() {
        extra.push(Extra::counter(
            "rack_gateway_audit_file_records_total",
            "Audit records written to the audit file.",
            written as f64,
        ));
        extra.push(Extra::counter(
            "rack_gateway_audit_file_dropped_total",
            "Audit records lost because the audit file's queue overflowed.",
            dropped as f64,
        ));
        extra.push(Extra::gauge(
            "rack_gateway_audit_file_healthy",
            "1 while the audit file is being written, 0 while writes fail.",
            if healthy { 1.0 } else { 0.0 },
        ));
    }
    if let Some(n) = gw.audit.unconfirmed() {
        extra.push(Extra::counter(
            "rack_gateway_audit_fsync_unconfirmed_total",
            "Answers released (fail-open) before their audit record was confirmed on disk.",
            n as f64,
        ));
    }
    let mut r = Response::new(body::full(gw.metrics.render(&extra)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /_gateway/webhook`: a push notification (GitHub-style
/// `X-Hub-Signature-256`) that makes the gateway fetch now. The body is
/// only authenticated, never trusted: the fetch reads the configured ref.
async fn webhook(gw: &Gateway, call: &Call<'_>, body: Incoming) -> Response<Body> {
    let Some(secret) = gw.reload.webhook_secret() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "gateway: no webhook is configured (repository.webhook_secret)",
            call.request_id,
        );
    };
    let read = http_body_util::Limited::new(body, MAX_WEBHOOK_BODY).collect();
    let bytes: Bytes = match tokio::time::timeout(WEBHOOK_READ, read).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) | Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "gateway: webhook body too large or too slow",
                call.request_id,
            )
        }
    };
    let signature = call
        .headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let ok = crate::reload::webhook_signature_ok(secret.expose().as_bytes(), &bytes, signature);
    let ticket = gw.audit.emit(&audit::Record {
        event: "webhook",
        request_id: call.request_id,
        client_ip: Some(call.client.ip),
        via: call.client.via,
        method: call.method.as_str(),
        path: "/_gateway/webhook",
        decision: Some(if ok { Decision::Local } else { Decision::Deny }),
        reason: if ok {
            "fetch scheduled"
        } else {
            "bad signature"
        },
        status: if ok { 202 } else { 401 },
        ..Default::default()
    });
    if !ok {
        gw.limiters().auth_failed(call.client.ip);
        let r = json_error(
            StatusCode::UNAUTHORIZED,
            "gateway: webhook signature (X-Hub-Signature-256) missing or invalid",
            call.request_id,
        );
        return once_recorded(gw, call, ticket, r).await;
    }
    gw.reload.trigger();
    let r = json(
        StatusCode::ACCEPTED,
        serde_json::json!({"status": "fetch scheduled"}),
    );
    once_recorded(gw, call, ticket, r).await
}

/// `answer` once the record behind `ticket` is durable (`--audit-fsync`);
/// the fail-closed 503 if it cannot be.
async fn once_recorded(
    gw: &Gateway,
    call: &Call<'_>,
    ticket: Ticket,
    answer: Response<Body>,
) -> Response<Body> {
    match gw.audit.durable(ticket).await {
        Ok(()) => answer,
        Err(_) => Refusal::audit_unavailable().into_response(call.request_id),
    }
}

/// Push payloads can be large (a commit list); the signature covers all of it.
const MAX_WEBHOOK_BODY: usize = 4 * 1024 * 1024;
/// A webhook body must arrive within this long.
const WEBHOOK_READ: std::time::Duration = std::time::Duration::from_secs(10);

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(body::full(v.to_string() + "\n"));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn audit_login(
    gw: &Gateway,
    rt: &Runtime,
    call: &Call<'_>,
    identity: Option<&credentials::Identity>,
    decision: Decision,
    reason: &str,
    status: u16,
) -> Ticket {
    gw.audit.emit(&audit::Record {
        event: "login",
        request_id: call.request_id,
        identity,
        client_ip: Some(call.client.ip),
        via: call.client.via,
        method: call.method.as_str(),
        path: "/_gateway/login",
        config_version: Some(&rt.version),
        decision: Some(decision),
        reason,
        status,
        ..Default::default()
    })
}

/// The sealer of login states and codes, or why login is unavailable.
/// Needs no network, so a callback's state is checked before the provider
/// is ever contacted.
fn sealer(rt: &Runtime) -> Result<Sealer, LoginError> {
    let id = rt.identity.as_ref().ok_or(LoginError::NotConfigured)?;
    id.oidc.as_ref().ok_or(LoginError::NotConfigured)?;
    let Some((_, pem)) = &id.signing_key else {
        return Err(LoginError::NotConfigured);
    };
    Ok(Sealer::new(pem.expose().as_bytes()))
}

/// The discovered provider, or why login is unavailable.
async fn provider(gw: &Gateway, rt: &Runtime) -> Result<std::sync::Arc<Provider>, LoginError> {
    let id = rt.identity.as_ref().ok_or(LoginError::NotConfigured)?;
    let oidc = id.oidc.as_ref().ok_or(LoginError::NotConfigured)?;
    let key = format!("{}|{}|{}", oidc.issuer, oidc.client_id, id.url);
    let mut slot = gw.login.provider.lock().await;
    if let Some((k, p)) = slot.as_ref() {
        if *k == key {
            return Ok(p.clone());
        }
    }
    let http =
        IdpHttp::new(oidc.ca_file.as_deref()).map_err(|e| LoginError::Provider(e.to_string()))?;
    let cfg = ProviderConfig {
        issuer: oidc.issuer.clone(),
        client_id: oidc.client_id.clone(),
        client_secret: oidc.client_secret.as_ref().map(|s| s.expose().to_string()),
        redirect_url: format!("{}/_gateway/login/callback", id.url),
        scopes: oidc.scopes.clone(),
    };
    let p = std::sync::Arc::new(
        Provider::discover(cfg, http)
            .await
            .map_err(|e| LoginError::Provider(e.to_string()))?,
    );
    *slot = Some((key, p.clone()));
    Ok(p)
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(to) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /_gateway/login/config`: whether people can log in here, so the
/// CLI says so before printing a link that would only lead to an error
/// page. Names nothing secret: the issuer is what the browser visits anyway.
fn login_config(rt: &Runtime) -> Response<Body> {
    let oidc = rt.identity.as_ref().and_then(|id| {
        let signing = id.signing_key.is_some() && rt.credentials.keys.is_some();
        id.oidc.as_ref().filter(|_| signing)
    });
    match oidc {
        Some(o) => json(
            StatusCode::OK,
            serde_json::json!({"configured": true, "issuer": o.issuer}),
        ),
        None => json(
            StatusCode::OK,
            serde_json::json!({"configured": false, "reason": LoginError::NotConfigured.to_string()}),
        ),
    }
}

async fn login_start(gw: &Gateway, rt: &Runtime, call: &Call<'_>) -> Response<Body> {
    let pairs = login::query_pairs(call.query.unwrap_or(""));
    let result = async {
        let cli = login::single(&pairs, "cli")?.unwrap_or("");
        let redirect_to = login::single(&pairs, "redirect")?;
        let sealer = sealer(rt)?;
        let provider = provider(gw, rt).await?;
        login::start(&provider, &sealer, cli, redirect_to, unix_now())
    }
    .await;
    match result {
        Ok(url) => redirect(&url),
        Err(e) => {
            // Not audited (nobody has logged in yet): the log is where the
            // operator finds what the page leaves out.
            if let LoginError::Provider(_) = &e {
                tracing::warn!(request_id = call.request_id, error = %e.audit_detail(), "login start failed");
            }
            login::error_page(&e)
        }
    }
}

async fn login_callback(gw: &Gateway, rt: &Runtime, call: &Call<'_>) -> Response<Body> {
    let pairs = login::query_pairs(call.query.unwrap_or(""));
    let now = unix_now();
    let result = async {
        // The state is checked before anything else is shown or done, so a
        // crafted link can't make the gateway display text of someone's
        // choosing, nor contact the identity provider.
        let state = login::single(&pairs, "state")?
            .ok_or_else(|| LoginError::BadRequest("missing state".into()))?;
        let sealer = sealer(rt)?;
        let st: login::LoginState = sealer
            .open(crate::identity::seal::Purpose::LoginState, state, now)
            .map_err(|_| {
                LoginError::BadRequest(
                    "this login link is invalid or expired: run `rack-gateway login` again".into(),
                )
            })?;
        if let Some(err) = login::single(&pairs, "error")? {
            let desc = login::single(&pairs, "error_description")?.unwrap_or("");
            let detail: String = format!("{err} {desc}").chars().take(300).collect();
            return Err(LoginError::Refused(detail));
        }
        let provider = provider(gw, rt).await?;
        let code = login::single(&pairs, "code")?
            .ok_or_else(|| LoginError::BadRequest("missing code".into()))?;
        let claims = provider
            .exchange(code, &st.pkce, &st.nonce)
            .await
            .map_err(|e| {
                use crate::identity::oidc::OidcError as E;
                match e {
                    // The browser brought a code or token that doesn't belong to
                    // this login: the request's fault, not an outage.
                    E::TokenRejected(_) | E::IdToken(_) | E::NoIdToken => LoginError::BadRequest(
                        format!("login refused: {e}; run `rack-gateway login` again"),
                    ),
                    _ => LoginError::Provider(e.to_string()),
                }
            })?;
        let id = rt.identity.as_ref().ok_or(LoginError::NotConfigured)?;
        let email = login::admit(id, &rt.policy, &claims)?;
        Ok((
            login::code_for(&sealer, &st, &email, &claims, now),
            st,
            email,
        ))
    }
    .await;
    match result {
        Ok((code, st, email)) => {
            let who = credentials::Identity {
                kind: credentials::IdentityKind::Person,
                name: email.clone(),
            };
            let ticket = audit_login(
                gw,
                rt,
                call,
                Some(&who),
                Decision::Allow,
                "identity provider login",
                200,
            );
            let r = match &st.redirect {
                Some(to) => redirect(&format!("{to}?code={code}")),
                None => login::code_page(&email, &code),
            };
            once_recorded(gw, call, ticket, r).await
        }
        Err(e) => {
            let status = login::error_page(&e).status().as_u16();
            let ticket = audit_login(
                gw,
                rt,
                call,
                None,
                Decision::Deny,
                &e.audit_detail(),
                status,
            );
            once_recorded(gw, call, ticket, login::error_page(&e)).await
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenRequest {
    code: String,
    verifier: String,
}

async fn login_token(
    gw: &Gateway,
    rt: &Runtime,
    call: &Call<'_>,
    body: Incoming,
) -> Response<Body> {
    let (ticket, answer) = token_answer(gw, rt, call, body).await;
    once_recorded(gw, call, ticket, answer).await
}

/// `login_token`'s answer and the ticket of its record.
async fn token_answer(
    gw: &Gateway,
    rt: &Runtime,
    call: &Call<'_>,
    body: Incoming,
) -> (Ticket, Response<Body>) {
    let fail = |status: StatusCode, msg: &str| {
        let ticket = audit_login(gw, rt, call, None, Decision::Deny, msg, status.as_u16());
        let r = json_error(status, &format!("gateway: {msg}"), call.request_id);
        (ticket, r)
    };
    let bytes: Bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return fail(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let Ok(req) = serde_json::from_slice::<TokenRequest>(&bytes) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"code\": ..., \"verifier\": ...}",
        );
    };
    let Some(id) = rt.identity.as_ref() else {
        return fail(
            StatusCode::NOT_FOUND,
            &LoginError::NotConfigured.to_string(),
        );
    };
    let (Some((_, pem)), Some((keys, _))) = (&id.signing_key, rt.credentials.keys.as_ref()) else {
        return fail(
            StatusCode::NOT_FOUND,
            &LoginError::NotConfigured.to_string(),
        );
    };
    let sealer = Sealer::new(pem.expose().as_bytes());
    let now = unix_now();
    let code = match login::redeem(&sealer, &gw.login.redeemed, &req.code, &req.verifier, now) {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // The config may have changed since the browser step.
    if rt.policy.person(&code.email).is_none() {
        return fail(
            StatusCode::FORBIDDEN,
            &format!("{} is not authorized for this gateway", code.email),
        );
    }
    match keys.mint(&code.email, code.amr, code.auth_time, id.token_ttl, now) {
        Ok((token, claims)) => {
            let who = credentials::Identity {
                kind: credentials::IdentityKind::Person,
                name: code.email.clone(),
            };
            let ticket = audit_login(
                gw,
                rt,
                call,
                Some(&who),
                Decision::Allow,
                "token issued",
                200,
            );
            let r = json(
                StatusCode::OK,
                serde_json::json!({"token": token, "email": claims.sub, "expires_at": claims.exp}),
            );
            (ticket, r)
        }
        Err(e) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot mint a token: {e}"),
        ),
    }
}

/// The caller of a gateway endpoint, identified exactly like a rack
/// request.
async fn caller<'r>(
    gw: &Gateway,
    rt: &'r Runtime,
    call: &Call<'_>,
) -> Result<Caller<'r>, Response<Body>> {
    identify::identify(gw, rt, call.headers, call.client)
        .await
        .map_err(|r| {
            if let Metric::RateLimited(bucket) = r.metric {
                gw.metrics.rate_limited(bucket.as_str());
            }
            r.into_response(call.request_id)
        })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CanRequest {
    operation: String,
    rack: String,
    app: Option<String>,
    service: Option<String>,
    command: Option<String>,
    /// For exec / ps stop: the target process's command (`sleep 3600`
    /// for an attached run's process).
    process_command: Option<String>,
}

/// `rack-gateway can` for the logged-in identity: the same engine that
/// decides requests, answering a hypothetical one.
async fn can(gw: &Gateway, rt: &Runtime, call: &Call<'_>, body: Incoming) -> Response<Body> {
    let who = match caller(gw, rt, call).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let subject = who.subject;
    let bytes: Bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "gateway: request body too large",
                call.request_id,
            )
        }
    };
    let q: CanRequest = match serde_json::from_slice(&bytes) {
        Ok(q) => q,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("gateway: bad can request: {e}"),
                call.request_id,
            )
        }
    };
    if crate::policy::op_index(&q.operation).is_none() {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("gateway: unknown operation `{}`", q.operation),
            call.request_id,
        );
    }
    let question = crate::policy::can::Question {
        rack: &q.rack,
        operation: &q.operation,
        app: q.app.as_deref(),
        service: q.service.as_deref(),
        command: q.command.as_deref(),
        process_command: q.process_command.as_deref(),
        now: crate::clock::unix_now(),
        auth: Some(&who.auth),
    };
    let (allowed, reason) = crate::policy::can::answer(&rt.policy, subject, &question);
    json(
        StatusCode::OK,
        serde_json::json!({
            "identity": who.identity.name,
            "allowed": allowed,
            "reason": reason,
        }),
    )
}

async fn whoami(gw: &Gateway, rt: &Runtime, call: &Call<'_>) -> Response<Body> {
    let who = match caller(gw, rt, call).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = crate::clock::unix_now();
    let time = |t: Option<i64>| t.map(crate::clock::rfc3339);
    let grants: Vec<serde_json::Value> = who
        .subject
        .grants
        .iter()
        .map(|g| {
            let role = &rt.policy.roles[g.role];
            let mut require = g.require.clone();
            if let Some(r) = &role.require {
                require.get_or_insert_with(Default::default).merge(r);
            }
            let require = require.map(|r| {
                serde_json::json!({
                    "mfa": r.mfa,
                    "max_auth_age": r.max_auth_age.map(crate::policy::conditions::duration),
                    "claims": r.claims.iter().map(|(k, v)| (k.clone(), v.as_str().to_string())).collect::<std::collections::BTreeMap<_, _>>(),
                })
            });
            serde_json::json!({
                "role": role.name,
                "scope": g.scope(),
                "racks": rt.racks.keys().filter(|r| g.rack.matches(r)).collect::<Vec<_>>(),
                "defined_at": g.at.to_string(),
                "expires": time(g.expires),
                "expired": g.expires.is_some_and(|e| e <= now),
                "reason": g.reason,
                "require": require,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "identity": who.identity.name,
            "kind": who.identity.kind.as_str(),
            "expires_at": who.expires,
            "access_expires": time(who.subject.expires),
            "access_reason": who.subject.reason,
            "mfa": !who.auth.ci && who.auth.amr.iter().any(|a| rt.policy.mfa_amr.contains(a)),
            "auth_time": time(who.auth.auth_time),
            "grants": grants,
        }),
    )
}
