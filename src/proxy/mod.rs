//! The request pipeline: canonicalize → pick the rack → match the route →
//! authenticate → decide → forward (REST or websocket) → audit.
//!
//! Every step that refuses answers the way the stock CLI prints best: JSON
//! `{"error": "..."}` for REST, in-band frames for websocket routes. What is
//! forwarded is rebuilt from the canonical request, so the rack sees exactly
//! what was authorized.

use crate::clock::unix_now;
use crate::gateway::{Gateway, Runtime};
use crate::http::respond::{json_error, with_retry_after};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::audit::{self, Decision};
use crate::config::WebsocketLimits;
use crate::http::body::{self, Body, Idle};
use crate::http::canon::{self, Upgrade};
use crate::identity::credentials::{self, Identity, IdentityKind};
use crate::policy::{Facts, Process, SubjectKind, Verdict, RESTRICTED_RUN_HEADERS};
use crate::rack::routes::{self, RouteMatch, RouteMethod, Stream};
use crate::rack::secrets::{self, Masking};
use crate::rack::tunnel;
use crate::rack::upstream::Rack;

/// The first path segment of the gateway's own endpoints. No rack route
/// starts with an underscore, so it can never shadow one.
pub const GATEWAY_PREFIX: &str = "_gateway";

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

const DROP_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "request-id",
    "www-authenticate",
    "set-cookie",
];

static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
static CONVOX_ACTOR: HeaderName = HeaderName::from_static("convox-actor");

impl Gateway {
    /// Handles one request end to end. Never fails: every outcome is a
    /// response.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = new_request_id();
        let mut on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
        let (parts, body) = req.into_parts();
        let mut ctx = Ctx {
            request_id,
            started,
            method: parts.method.clone(),
            path: String::new(),
            rack: None,
            route: None,
            identity: None,
            reason: String::new(),
            env_changes: None,
            runtime: None,
            client_ip: peer.ip(),
            via: None,
            command: None,
            bytes_in: Default::default(),
            metrics: self.metrics.clone(),
        };

        let canon = match canon::canonicalize(&parts) {
            Ok(c) => c,
            Err(r) => {
                ctx.path = parts.uri.path().chars().take(256).collect();
                return ctx.refuse(
                    None,
                    StatusCode::BAD_REQUEST,
                    Decision::Reject,
                    &format!("gateway: bad request: {r}"),
                );
            }
        };
        ctx.path = canon.path_from(0);

        let rt = self.runtime.load_full();
        ctx.runtime = rt.clone();
        if canon.segments.first().map(String::as_str) == Some(GATEWAY_PREFIX) {
            if canon.upgrade != Upgrade::None {
                return ctx.refuse(
                    None,
                    StatusCode::BAD_REQUEST,
                    Decision::Reject,
                    "gateway: bad request: gateway endpoints do not upgrade",
                );
            }
            let call = crate::server::endpoints::Call {
                method: &parts.method,
                rest: &canon.segments[1..],
                query: canon.query.as_deref(),
                headers: &parts.headers,
                request_id: &ctx.request_id,
                peer,
            };
            return crate::server::endpoints::handle(&self, rt.as_deref(), call, body).await;
        }
        let Some(rt) = rt else {
            return self.refuse_unconfigured(&ctx, &parts, &canon, on_upgrade);
        };
        (ctx.client_ip, ctx.via) =
            crate::http::clientip::resolve(peer.ip(), &parts.headers, &rt.trusted_proxies);

        let (rack, offset) = match canon.segments.as_slice() {
            [first, name, rest @ ..] if first == "racks" && !rest.is_empty() => {
                match rt.racks.get(name.as_str()) {
                    Some(r) => (r.clone(), 2),
                    None => {
                        let msg = format!(
                            "gateway: unknown rack `{name}` (this gateway serves: {})",
                            rack_list(&rt)
                        );
                        return ctx.refuse(None, StatusCode::NOT_FOUND, Decision::Reject, &msg);
                    }
                }
            }
            _ => match rt.single_rack() {
                Some(r) => (r.clone(), 0),
                None => {
                    let msg = if rt.racks.is_empty() {
                        "gateway: no racks are configured".to_string()
                    } else {
                        format!(
                            "gateway: no rack selected: use RACK_URL=https://convox:<token>@<gateway>/racks/<name> (racks: {})",
                            rack_list(&rt)
                        )
                    };
                    return ctx.refuse(None, StatusCode::NOT_FOUND, Decision::Reject, &msg);
                }
            },
        };
        ctx.rack = Some(rack.name.clone());

        let websocket = canon.upgrade == Upgrade::Websocket;
        let Some(m) = routes::match_route(&parts.method, websocket, &canon.segments[offset..])
        else {
            let msg = format!(
                "gateway: unknown route {} {}",
                parts.method,
                canon.path_from(offset)
            );
            return ctx.refuse(None, StatusCode::NOT_FOUND, Decision::Reject, &msg);
        };
        let route_method = m.route.method;
        let stream = m.route.stream;
        ctx.route = Some(m);
        if let Some(cmd) = parts.headers.get("command") {
            let raw = String::from_utf8_lossy(cmd.as_bytes());
            ctx.command = Some(raw.into_owned());
        }
        let upgrade_ok = matches!(
            (route_method, &canon.upgrade),
            (RouteMethod::Socket, Upgrade::Websocket) | (RouteMethod::Any, _) | (_, Upgrade::None)
        );
        if !upgrade_ok {
            return ctx.refuse(
                None,
                StatusCode::BAD_REQUEST,
                Decision::Reject,
                "gateway: bad request: this route does not upgrade",
            );
        }

        // From here on, refusals on websocket routes are delivered in-band.
        let socket = if route_method == RouteMethod::Socket {
            match Socket::take(&parts.headers, &mut on_upgrade, stream) {
                Some(s) => Some(s),
                None => {
                    return ctx.refuse(
                        None,
                        StatusCode::BAD_REQUEST,
                        Decision::Reject,
                        "gateway: bad request: websocket handshake incomplete",
                    )
                }
            }
        } else {
            None
        };

        if !audit::recording() {
            // Fail-closed: nothing is served that could not be recorded.
            return ctx.refuse(
                socket,
                StatusCode::SERVICE_UNAVAILABLE,
                Decision::Reject,
                "gateway: the audit log cannot be written, so requests are refused (fail-closed); retry shortly",
            );
        }

        if ctx.operation() == Some("probe") {
            // The CLI's pre-websocket probe; the rack would answer 404 too.
            return ctx.refuse(
                socket,
                StatusCode::NOT_FOUND,
                Decision::Local,
                "404 page not found",
            );
        }

        let limiters = self.limiters();
        if let Some(l) = limiters.auth_blocked(ctx.client_ip) {
            return ctx.rate_limited(socket, &l);
        }
        let who = match credentials::basic_token(&parts.headers) {
            Ok(token) => {
                rt.credentials
                    .authenticate(&rt.policy, self.federation(), &token, unix_now())
                    .await
            }
            Err(e) => Err(e),
        };
        let who = match who {
            Ok(w) => w,
            Err(e) => {
                limiters.auth_failed(ctx.client_ip);
                return ctx.refuse(
                    socket,
                    StatusCode::UNAUTHORIZED,
                    Decision::Deny,
                    &format!("gateway: {e}"),
                );
            }
        };
        let subject = match who.identity.kind {
            IdentityKind::Person => rt.policy.person(&who.identity.name),
            IdentityKind::CiToken | IdentityKind::FederatedCi => {
                rt.policy.subject(SubjectKind::Ci, &who.identity.name)
            }
        };
        ctx.identity = Some(who.identity);
        let Some(subject) = subject else {
            limiters.auth_failed(ctx.client_ip);
            return ctx.refuse(
                socket,
                StatusCode::UNAUTHORIZED,
                Decision::Deny,
                &format!("gateway: {}", credentials::AuthError::NotAuthorized),
            );
        };
        let limited = {
            let id = ctx.identity.as_ref().expect("set above");
            let roles = crate::ratelimit::role_names(&rt.policy, subject);
            let who = crate::ratelimit::Who {
                name: &id.name,
                ci: id.kind != IdentityKind::Person,
                roles: &roles,
            };
            limiters.check(&who, ctx.operation().unwrap_or_default())
        };
        if let Err(l) = limited {
            return ctx.rate_limited(socket, &l);
        }

        let verdict = match self.decide(&rt, &rack, &ctx, &parts.headers, subject).await {
            Ok(v) => v,
            Err(e) => return ctx.refuse_lookup(socket, &rack.name, e),
        };
        let reason = match verdict {
            Verdict::Allow(r) => r,
            other => {
                return ctx.refuse(
                    socket,
                    StatusCode::FORBIDDEN,
                    Decision::Deny,
                    &format!("gateway: {}", other.reason()),
                )
            }
        };
        ctx.reason = reason;
        if ctx.operation() == Some("proxy") {
            match self.check_proxy_target(&rt, &rack, &ctx, subject).await {
                Ok(()) => {}
                Err(e) => return ctx.refuse_lookup(socket, &rack.name, e),
            }
        }
        let op = ctx.operation().unwrap_or_default();
        let access = rt.policy.secret_access(
            subject,
            &Facts {
                rack: &rack.name,
                operation: op,
                app: ctx.param("app"),
                ..Default::default()
            },
        );
        let masking = Masking::for_operation(op).map(|m| (m, access.read));

        let target = canon.target_from(offset);
        let mut upstream_headers = forward_headers(&parts.headers, &rack, &ctx);
        let raw_upgrade = match (&socket, parts.headers.get(header::UPGRADE), on_upgrade) {
            (None, Some(p), Some(up)) if canon.upgrade != Upgrade::None => Some((p.clone(), up)),
            _ => None,
        };
        match (socket, raw_upgrade) {
            (Some(s), _) => {
                self.forward_socket(ctx, &rt, &rack, &target, upstream_headers, s)
                    .await
            }
            (None, Some((protocol, up))) => {
                self.forward_raw_upgrade(ctx, &rt, &rack, &target, upstream_headers, protocol, up)
                    .await
            }
            (None, None) => {
                let body = if matches!(op, "build" | "releases create") {
                    let form = FormRequest {
                        headers: &parts.headers,
                        query: canon.query.as_deref(),
                        access: &access,
                    };
                    match self.checked_form(&mut ctx, &rt, &rack, form, body).await {
                        Ok(b) => {
                            upstream_headers.insert(header::CONTENT_LENGTH, b.len().into());
                            body::full(b)
                        }
                        Err(resp) => return resp,
                    }
                } else {
                    body::boxed(body)
                };
                if masking.is_some() {
                    // The rack must answer in plain JSON for it to be masked.
                    upstream_headers.remove(header::ACCEPT_ENCODING);
                }
                self.forward_rest(
                    ctx,
                    &rt,
                    &rack,
                    parts.method,
                    &target,
                    upstream_headers,
                    body,
                    masking,
                )
                .await
            }
        }
    }

    /// Before the first valid config: refuse everything with 503 (in-band
    /// on websocket routes), saying why, and never forward.
    fn refuse_unconfigured(
        &self,
        ctx: &Ctx,
        parts: &http::request::Parts,
        canon: &canon::Canonical,
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
        let msg = match self.reload.last_error() {
            Some(e) => format!(
                "gateway: no valid configuration is loaded, so all rack traffic is refused (last error: {e})"
            ),
            None => "gateway: no valid configuration is loaded yet, so all rack traffic is refused; retry shortly".to_string(),
        };
        ctx.refuse(
            socket,
            StatusCode::SERVICE_UNAVAILABLE,
            Decision::Reject,
            &msg,
        )
    }

    /// Runs the policy; when it needs the target process (exec, stopping a
    /// run's placeholder), asks the rack which service it belongs to.
    async fn decide(
        &self,
        rt: &Runtime,
        rack: &Rack,
        ctx: &Ctx,
        headers: &HeaderMap,
        subject: &crate::policy::Subject,
    ) -> Result<Verdict, Lookup> {
        let m = ctx.route.as_ref().expect("decided after routing");
        let op = m.route.operation;
        let command = headers
            .get("command")
            .map(|v| {
                v.to_str()
                    .map_err(|_| Lookup::Refused("the Command header is not valid UTF-8".into()))
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
        let mut facts = Facts {
            rack: &rack.name,
            operation: op,
            app: m.params.get("app"),
            service: m.params.get("service"),
            command,
            process: None,
            run_headers: &restricted,
        };
        let verdict = rt.policy.decide(subject, &facts);
        if verdict != Verdict::NeedProcess {
            return Ok(verdict);
        }
        let (Some(app), Some(pid)) = (m.params.get("app"), m.params.get("pid")) else {
            return Err(Lookup::Refused("the target process is unknown".into()));
        };
        let process = self.lookup_process(rt, rack, ctx, app, pid).await?;
        facts.process = Some(&process);
        match rt.policy.decide(subject, &facts) {
            Verdict::NeedProcess => Err(Lookup::Refused("the target process is unknown".into())),
            v => Ok(v),
        }
    }

    /// The rack tunnels `/proxy/{host}/{port}` to anything it can reach
    /// (other apps' databases, the cluster's internals), so a `proxy` the
    /// policy allows must still name the host and port of a resource `url`
    /// of an app the identity may `resources info` — which is what `convox
    /// resources proxy` opens. Anything not found that way is refused.
    async fn check_proxy_target(
        &self,
        rt: &Runtime,
        rack: &Rack,
        ctx: &Ctx,
        subject: &crate::policy::Subject,
    ) -> Result<(), Lookup> {
        let (Some(host), Some(port)) = (ctx.param("host"), ctx.param("port")) else {
            return Err(Lookup::Refused("the proxy target is unknown".into()));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| Lookup::Refused(format!("invalid proxy port `{port}`")))?;
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
            #[serde(default)]
            url: String,
        }
        let (status, body) = self
            .rack_get(rt, rack, ctx, &rack_path(&["apps"], None))
            .await?;
        if !status.is_success() {
            return Err(Lookup::Unavailable(format!(
                "cannot list apps (rack answered {})",
                status.as_u16()
            )));
        }
        let apps: Vec<Named> = serde_json::from_slice(&body)
            .map_err(|_| Lookup::Unavailable("cannot list apps".into()))?;
        let visible: Vec<String> = apps
            .into_iter()
            .map(|a| a.name)
            .filter(|app| {
                let facts = Facts {
                    rack: &rack.name,
                    operation: "resources info",
                    app: Some(app.as_str()),
                    ..Default::default()
                };
                matches!(rt.policy.decide(subject, &facts), Verdict::Allow(_))
            })
            .collect();
        for app in visible.iter().take(MAX_PROXY_APPS) {
            let target = rack_path(&["apps", app, "resources"], None);
            let (status, body) = self.rack_get(rt, rack, ctx, &target).await?;
            if !status.is_success() {
                continue;
            }
            let resources: Vec<Named> = serde_json::from_slice(&body).unwrap_or_default();
            let found = resources.iter().any(|r| {
                resource_endpoint(&r.url)
                    .is_some_and(|(h, p)| p == port && h.eq_ignore_ascii_case(host))
            });
            if found {
                return Ok(());
            }
        }
        let searched = if visible.len() > MAX_PROXY_APPS {
            format!(" (searched the first {MAX_PROXY_APPS} apps only)")
        } else {
            String::new()
        };
        Err(Lookup::Refused(format!(
            "{host}:{port} is not a resource of an app you may `resources info`{searched}"
        )))
    }

    /// `GET /apps/{app}/processes/{pid}` on the rack: the process's service
    /// (`name`) and command, as the rack reports them.
    async fn lookup_process(
        &self,
        rt: &Runtime,
        rack: &Rack,
        ctx: &Ctx,
        app: &str,
        pid: &str,
    ) -> Result<Process, Lookup> {
        let target = rack_path(&["apps", app, "processes", pid], None);
        let (status, body) = self.rack_get(rt, rack, ctx, &target).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(Lookup::Refused(format!(
                "process {pid} not found in app {app}"
            )));
        }
        if !status.is_success() {
            return Err(Lookup::Unavailable(format!(
                "cannot look up process {pid} (rack answered {})",
                status.as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct P {
            name: String,
            #[serde(default)]
            command: String,
        }
        let p: P = serde_json::from_slice(&body).map_err(|_| {
            Lookup::Refused(format!("cannot determine the service of process {pid}"))
        })?;
        Ok(Process {
            service: p.name,
            command: p.command,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_rest(
        &self,
        ctx: Ctx,
        rt: &Runtime,
        rack: &Rack,
        method: Method,
        target: &str,
        headers: HeaderMap,
        body: Body,
        masking: Option<(Masking, bool)>,
    ) -> Response<Body> {
        let idle = rt.timeouts.idle;
        let Ok(uri) = rack.uri(target) else {
            return ctx.refuse(
                None,
                StatusCode::BAD_REQUEST,
                Decision::Reject,
                "gateway: bad request: invalid target",
            );
        };
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let mut up = Request::new(body::boxed(body::OnEnd::new(
            body::Counted::new(Idle::new(body, idle), ctx.bytes_in.clone()),
            move |_| {
                let _ = sent_tx.send(());
            },
        )));
        *up.method_mut() = method;
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers;
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
                Err(e) => return ctx.upstream_failed(&describe_client_error(&e)),
            },
            _ = response_deadline => return ctx.upstream_failed("no response within the idle timeout"),
        };
        ctx.metrics.observe_upstream(sent_at.elapsed());
        let (rparts, rbody) = resp.into_parts();
        if rparts.status == StatusCode::UNAUTHORIZED {
            tracing::error!(rack = %rack.name, "the rack refused the gateway's credentials; check its password");
            return ctx.upstream_failed("the rack refused the gateway's credentials");
        }
        let Some((kind, reveal)) = masking else {
            return ctx.relay(rparts, rbody, idle);
        };
        let mut rparts = rparts;
        filter_response_headers(&mut rparts.headers);
        rparts
            .headers
            .insert(REQUEST_ID.clone(), ctx.request_id_value());
        let limited =
            http_body_util::Limited::new(Idle::new(rbody, idle), secrets::MAX_MASKED_RESPONSE);
        let bytes = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return ctx
                    .upstream_failed("the response is too large to mask its secrets (over 4 MiB)")
            }
            Err(_) => return ctx.upstream_failed("the response body failed"),
        };
        let masked = if rparts.status.is_success() {
            match secrets::mask_body(kind, &bytes, reveal, rack.password()) {
                Ok(b) => b,
                Err(e) => return ctx.upstream_failed(&e.to_string()),
            }
        } else {
            secrets::scrub(&String::from_utf8_lossy(&bytes), rack.password()).into_bytes()
        };
        rparts.headers.remove(header::CONTENT_ENCODING);
        rparts
            .headers
            .insert(header::CONTENT_LENGTH, masked.len().into());
        let status = rparts.status.as_u16();
        ctx.record(Done {
            event: "request",
            decision: Decision::Allow,
            reason: &ctx.reason,
            status,
            upstream: Some(status),
            bytes_out: masked.len() as u64,
            exit_code: None,
        });
        Response::from_parts(rparts, body::full(masked))
    }

    /// Reads, checks and (for `releases create`) rewrites a small form body:
    /// build source URLs and external builds (from the body and the query,
    /// which the rack reads too), and the env round-trip. Refusals come
    /// back as the response to send.
    async fn checked_form(
        &self,
        ctx: &mut Ctx,
        rt: &Runtime,
        rack: &Rack,
        form: FormRequest<'_>,
        body: Incoming,
    ) -> Result<Bytes, Response<Body>> {
        let query = secrets::parse_form(form.query.unwrap_or_default());
        let limited =
            http_body_util::Limited::new(Idle::new(body, rt.timeouts.idle), secrets::MAX_FORM_BODY);
        let raw = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ctx.refuse(
                    None,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Decision::Reject,
                    "gateway: bad request: the form body is larger than 1 MiB",
                ))
            }
            Err(_) => {
                return Err(ctx.refuse(
                    None,
                    StatusCode::BAD_REQUEST,
                    Decision::Reject,
                    "gateway: bad request: the request body could not be read",
                ))
            }
        };
        let bad = |ctx: &Ctx, status: StatusCode, msg: &str| {
            let decision = if status == StatusCode::FORBIDDEN {
                Decision::Deny
            } else {
                Decision::Reject
            };
            let prefix = if decision == Decision::Deny {
                "denied"
            } else {
                "bad request"
            };
            ctx.refuse(None, status, decision, &format!("gateway: {prefix}: {msg}"))
        };
        let content_type = form
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !raw.is_empty() && !secrets::is_form(content_type) {
            return Err(bad(
                ctx,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "this route accepts only an application/x-www-form-urlencoded body",
            ));
        }
        let Ok(text) = std::str::from_utf8(&raw) else {
            return Err(bad(
                ctx,
                StatusCode::BAD_REQUEST,
                "the form body is not UTF-8",
            ));
        };
        let fields = secrets::parse_form(text);
        let app = ctx.param("app").unwrap_or_default().to_string();
        if ctx.operation() == Some("build") {
            let all: Vec<(String, String)> = fields.iter().chain(&query).cloned().collect();
            let build = secrets::check_build(&app, &all)
                .map_err(|msg| bad(ctx, StatusCode::FORBIDDEN, &msg))?;
            if build.external && !form.access.builds_external {
                return Err(bad(
                    ctx,
                    StatusCode::FORBIDDEN,
                    "external builds (external=true) need the `builds external` permission",
                ));
            }
            return Ok(raw);
        }
        // releases create: the env round-trip.
        let sensitive = ["env", "parent-release"];
        if query.iter().any(|(k, _)| sensitive.contains(&k.as_str())) {
            return Err(bad(
                ctx,
                StatusCode::BAD_REQUEST,
                "env and parent-release must be sent in the form body, not the query string",
            ));
        }
        for name in sensitive {
            if fields.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(bad(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    &format!("the form field {name} appears more than once"),
                ));
            }
        }
        let Some(posted) = fields
            .iter()
            .find(|(k, _)| k == "env")
            .map(|(_, v)| v.clone())
        else {
            return Ok(raw);
        };
        let parent_id = fields
            .iter()
            .find(|(k, _)| k == "parent-release")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty());
        let parent_env = match self.parent_env(rt, rack, ctx, &app, parent_id).await {
            Ok(e) => e,
            Err(Lookup::Refused(msg)) => return Err(bad(ctx, StatusCode::FORBIDDEN, &msg)),
            Err(Lookup::Unavailable(msg)) => return Err(ctx.upstream_failed(&msg)),
        };
        let policy = &rt.policy;
        let protected = |k: &str| policy.is_protected_env(&rack.name, &app, k);
        let globs = form.access.env_keys.clone();
        let allowed_fn = |k: &str| globs.iter().flatten().any(|g| g.matches(k));
        let allowed_desc = globs
            .iter()
            .flatten()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let rules = secrets::EnvRules {
            protected: &protected,
            may_change_protected: form.access.env_protected,
            allowed_key: globs
                .is_some()
                .then_some(&allowed_fn as &dyn Fn(&str) -> bool),
        };
        let (env, changes) = match secrets::merge_env(&posted, &parent_env, &rules, &allowed_desc) {
            Ok(x) => x,
            Err(
                e @ (secrets::EnvError::Protected(_) | secrets::EnvError::KeyNotAllowed { .. }),
            ) => return Err(bad(ctx, StatusCode::FORBIDDEN, &e.to_string())),
            Err(e) => return Err(bad(ctx, StatusCode::BAD_REQUEST, &e.to_string())),
        };
        ctx.env_changes = Some(changes.summary());
        let rewritten: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| if k == "env" { (k, env.clone()) } else { (k, v) })
            .collect();
        Ok(Bytes::from(secrets::encode_form(&rewritten)))
    }

    /// The env of the parent release: `parent-release`, else the latest
    /// release (`GET /apps/{app}/releases?limit=1`); empty when the app has
    /// no release yet.
    async fn parent_env(
        &self,
        rt: &Runtime,
        rack: &Rack,
        ctx: &Ctx,
        app: &str,
        parent: Option<String>,
    ) -> Result<String, Lookup> {
        #[derive(serde::Deserialize)]
        struct R {
            id: String,
            #[serde(default)]
            env: String,
        }
        let id = match parent {
            Some(id) => id,
            None => {
                let list = rack_path(&["apps", app, "releases"], Some("limit=1"));
                let (status, body) = self.rack_get(rt, rack, ctx, &list).await?;
                if !status.is_success() {
                    return Err(Lookup::Unavailable(format!(
                        "cannot read the latest release of {app} (rack answered {})",
                        status.as_u16()
                    )));
                }
                let list: Vec<R> = serde_json::from_slice(&body).map_err(|_| {
                    Lookup::Unavailable("the rack's release list is not JSON".into())
                })?;
                match list.into_iter().next() {
                    Some(r) => r.id,
                    None => return Ok(String::new()),
                }
            }
        };
        let (status, body) = self
            .rack_get(
                rt,
                rack,
                ctx,
                &rack_path(&["apps", app, "releases", &id], None),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(Lookup::Refused(format!(
                "release {id} not found in app {app}"
            )));
        }
        if !status.is_success() {
            return Err(Lookup::Unavailable(format!(
                "cannot read release {id} (rack answered {})",
                status.as_u16()
            )));
        }
        let r: R = serde_json::from_slice(&body)
            .map_err(|_| Lookup::Unavailable(format!("release {id} is not JSON")))?;
        Ok(r.env)
    }

    /// A small GET to the rack with the gateway's credential, on behalf of
    /// the request's identity: status and body (capped at 4 MiB).
    async fn rack_get(
        &self,
        rt: &Runtime,
        rack: &Rack,
        ctx: &Ctx,
        target: &str,
    ) -> Result<(StatusCode, Bytes), Lookup> {
        let uri = rack
            .uri(target)
            .map_err(|_| Lookup::Refused("invalid path".into()))?;
        let mut req = Request::new(body::empty());
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(header::HOST, rack.host.clone());
        h.insert(header::AUTHORIZATION, rack.authorization.clone());
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(REQUEST_ID.clone(), ctx.request_id_value());
        if let Some(v) = ctx
            .identity
            .as_ref()
            .and_then(|i| HeaderValue::from_str(&i.name).ok())
        {
            h.insert(CONVOX_ACTOR.clone(), v);
        }
        let resp = match tokio::time::timeout(rt.timeouts.idle, rack.client().request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Lookup::Unavailable(describe_client_error(&e))),
            Err(_) => {
                return Err(Lookup::Unavailable(
                    "no response within the idle timeout".into(),
                ))
            }
        };
        let status = resp.status();
        let limited = http_body_util::Limited::new(
            Idle::new(resp.into_body(), rt.timeouts.idle),
            secrets::MAX_MASKED_RESPONSE,
        );
        let body = limited
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| Lookup::Unavailable("the rack's answer could not be read".into()))?;
        Ok((status, body))
    }

    async fn forward_socket(
        &self,
        ctx: Ctx,
        rt: &Runtime,
        rack: &Rack,
        target: &str,
        mut headers: HeaderMap,
        socket: Socket,
    ) -> Response<Body> {
        headers.insert(header::ORIGIN, rack.origin.clone());
        let resp = match self
            .send_upgrade(
                rt,
                rack,
                target,
                headers,
                HeaderValue::from_static("websocket"),
            )
            .await
        {
            Ok(r) => r,
            Err(msg) => {
                ctx.audit(Decision::Error, &msg, 101, None);
                return socket.refuse(
                    &ctx,
                    &format!("gateway: rack `{}` unreachable: {msg}", rack.name),
                );
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let text = read_error_text(resp).await;
            let msg = format!("gateway: rack answered {}: {}", status.as_u16(), text);
            ctx.audit(Decision::Error, &msg, 101, Some(status.as_u16()));
            return socket.refuse(&ctx, &msg);
        }
        let client_resp = switching_response(&resp, &ctx);
        ctx.session_start();
        self.spawn_splice(ctx, rt.websocket, resp, socket.on_upgrade);
        client_resp
    }

    /// Reverse-proxy routes (kubernetes, registry) may upgrade to any
    /// protocol: forward the upgrade and splice, or relay the rack's answer.
    #[allow(clippy::too_many_arguments)]
    async fn forward_raw_upgrade(
        &self,
        ctx: Ctx,
        rt: &Runtime,
        rack: &Rack,
        target: &str,
        headers: HeaderMap,
        protocol: HeaderValue,
        client_up: OnUpgrade,
    ) -> Response<Body> {
        let resp = match self.send_upgrade(rt, rack, target, headers, protocol).await {
            Ok(r) => r,
            Err(msg) => return ctx.upstream_failed(&msg),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (rparts, rbody) = resp.into_parts();
            return ctx.relay(rparts, rbody, rt.timeouts.idle);
        }
        let client_resp = switching_response(&resp, &ctx);
        ctx.session_start();
        self.spawn_splice(ctx, rt.websocket, resp, client_up);
        client_resp
    }

    fn spawn_splice(
        &self,
        ctx: Ctx,
        limits: WebsocketLimits,
        resp: Response<Incoming>,
        client_up: OnUpgrade,
    ) {
        let session = self
            .sessions
            .open(self.metrics.clone(), ctx.operation().unwrap_or("-"));
        let framing = tunnel::Framing::from_upgrade(resp.headers().get(header::UPGRADE));
        tokio::spawn(async move {
            let (Ok(rack_io), Ok(client_io)) = tokio::join!(hyper::upgrade::on(resp), client_up)
            else {
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
        &self,
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
}

/// What the form checks of a request need besides its body.
struct FormRequest<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    access: &'a crate::policy::SecretAccess,
}

/// A canonical rack path (segments escaped as the canonicalizer does) with
/// an optional query.
fn rack_path(segments: &[&str], query: Option<&str>) -> String {
    crate::http::canon::Canonical {
        segments: segments.iter().map(|s| s.to_string()).collect(),
        query: query.map(str::to_string),
        upgrade: Upgrade::None,
    }
    .target_from(0)
}

/// Most apps whose resources are listed to vet one `proxy` target: the
/// lookup runs on every tunnelled connection, so it must stay bounded; a
/// target past the cap is refused rather than searched for.
const MAX_PROXY_APPS: usize = 50;

/// Host and explicit port of a resource URL such as
/// `postgres://user:pass@db.example:5432/app`; `None` without a port, since
/// the proxy target always names one.
fn resource_endpoint(url: &str) -> Option<(&str, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit('@').next()?;
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => host_port.rsplit_once(':')?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Why the target process could not be established: policy-relevant
/// (refuse with 403) or the rack being unavailable (502).
enum Lookup {
    Refused(String),
    Unavailable(String),
}

/// The pieces of a websocket request needed to accept or refuse it.
struct Socket {
    key: String,
    on_upgrade: OnUpgrade,
    exit_marker: bool,
}

impl Socket {
    /// The handshake's key and upgrade, or `None` when it is incomplete.
    fn take(
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

    /// Accepts the upgrade and delivers `msg` in-band.
    fn refuse(self, ctx: &Ctx, msg: &str) -> Response<Body> {
        tokio::spawn(tunnel::refuse_in_band(
            self.on_upgrade,
            msg.to_string(),
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
        h.insert(REQUEST_ID.clone(), ctx.request_id_value());
        resp
    }
}

/// Per-request facts gathered along the pipeline, for responses and audit.
struct Ctx {
    request_id: String,
    started: Instant,
    method: Method,
    path: String,
    rack: Option<String>,
    route: Option<RouteMatch>,
    identity: Option<Identity>,
    /// Why the request was allowed (the rule that allowed it).
    reason: String,
    /// Env key names a release creation changes (audit only).
    env_changes: Option<String>,
    /// The config deciding this request (`None`: none loaded): its version
    /// and command redactions go into the audit record.
    runtime: Option<Arc<Runtime>>,
    /// The client (see `clientip`), and the proxy it came through.
    client_ip: std::net::IpAddr,
    via: Option<std::net::IpAddr>,
    /// The run/exec command as the client sent it.
    command: Option<String>,
    /// Request body bytes forwarded to the rack so far.
    bytes_in: Arc<AtomicU64>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// How a request ended, for its audit record.
struct Done<'a> {
    event: &'a str,
    decision: Decision,
    reason: &'a str,
    status: u16,
    upstream: Option<u16>,
    bytes_out: u64,
    exit_code: Option<i32>,
}

impl Ctx {
    fn operation(&self) -> Option<&'static str> {
        self.route.as_ref().map(|m| m.route.operation)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.route.as_ref().and_then(|m| m.params.get(name))
    }

    fn request_id_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.request_id).expect("request ids are ASCII")
    }

    fn audit(&self, decision: Decision, reason: &str, status: u16, upstream: Option<u16>) {
        self.record(Done {
            event: "request",
            decision,
            reason,
            status,
            upstream,
            bytes_out: 0,
            exit_code: None,
        });
    }

    fn record(&self, d: Done<'_>) {
        if d.event != "session-start" {
            self.metrics.request(
                self.rack.as_deref().unwrap_or("-"),
                self.operation().unwrap_or("-"),
                d.decision.as_str(),
                d.status,
            );
        }
        // Rate-limited refusals are counted by bucket where they happen.
        if matches!(d.decision, Decision::Deny | Decision::Reject) && d.status != 429 {
            self.metrics.rejected(match d.status {
                401 => "unauthenticated",
                403 => "forbidden",
                503 if self.runtime.is_none() => "no_config",
                503 => "audit_unavailable",
                _ => "bad_request",
            });
        }
        // The command never reaches the audit trail unredacted, not even
        // quoted inside a refusal's reason.
        let redactor = self.runtime.as_ref().map(|rt| &rt.redactor);
        let (command, reason) = match (&self.command, redactor) {
            (Some(raw), Some(redactor)) => {
                let shown = redactor.apply(raw);
                let reason = redactor.apply(&d.reason.replace(raw.as_str(), &shown));
                (Some(shown), reason)
            }
            _ => (None, d.reason.to_string()),
        };
        audit::emit(&audit::Record {
            event: d.event,
            request_id: &self.request_id,
            identity: self.identity.as_ref(),
            client_ip: Some(self.client_ip),
            via: self.via,
            method: self.method.as_str(),
            path: &self.path,
            rack: self.rack.as_deref(),
            operation: self.operation(),
            app: self.param("app"),
            service: self.param("service"),
            pid: self.param("pid"),
            command: command.as_deref(),
            decision: Some(d.decision),
            reason: &reason,
            env_changes: self.env_changes.as_deref(),
            config_version: self.runtime.as_ref().map(|rt| rt.version.as_str()),
            status: d.status,
            upstream_status: d.upstream,
            bytes_in: Some(self.bytes_in.load(Ordering::Relaxed)),
            bytes_out: Some(d.bytes_out),
            exit_code: d.exit_code,
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
    }

    fn session_start(&self) {
        self.record(Done {
            event: "session-start",
            decision: Decision::Allow,
            reason: &self.reason,
            status: 101,
            upstream: Some(101),
            bytes_out: 0,
            exit_code: None,
        });
    }

    fn audit_session_end(&self, end: tunnel::SpliceEnd) {
        self.bytes_in.store(end.up, Ordering::Relaxed);
        self.record(Done {
            event: "session-end",
            decision: Decision::Allow,
            reason: end.as_str(),
            status: 101,
            upstream: Some(101),
            bytes_out: end.down,
            exit_code: end.exit_code,
        });
    }

    /// Refuses after a failed rack look-up: a policy refusal is a 403, the
    /// rack being unavailable a 502.
    fn refuse_lookup(&self, socket: Option<Socket>, rack: &str, e: Lookup) -> Response<Body> {
        match e {
            Lookup::Refused(msg) => self.refuse(
                socket,
                StatusCode::FORBIDDEN,
                Decision::Deny,
                &format!("gateway: denied: {msg}"),
            ),
            Lookup::Unavailable(msg) => self.refuse(
                socket,
                StatusCode::BAD_GATEWAY,
                Decision::Error,
                &format!("gateway: rack `{rack}` unavailable: {msg}"),
            ),
        }
    }

    /// Refuses with 429 and `Retry-After` (in-band on websocket routes).
    fn rate_limited(
        &self,
        socket: Option<Socket>,
        l: &crate::ratelimit::Limited,
    ) -> Response<Body> {
        self.metrics.rate_limited(l.bucket.as_str());
        let r = self.refuse(
            socket,
            StatusCode::TOO_MANY_REQUESTS,
            Decision::Deny,
            &format!("gateway: {}", l.message),
        );
        with_retry_after(r, l)
    }

    /// Refuses: in-band on websocket routes, JSON otherwise; audited.
    fn refuse(
        &self,
        socket: Option<Socket>,
        status: StatusCode,
        decision: Decision,
        msg: &str,
    ) -> Response<Body> {
        self.audit(decision, msg, status.as_u16(), None);
        match socket {
            Some(s) => s.refuse(self, msg),
            None => json_error(status, msg, &self.request_id),
        }
    }

    /// Passes the rack's answer to an allowed request back to the client:
    /// hop-by-hop headers dropped, our request id set; the body streams
    /// with the idle timeout, and the request's audit record (with byte
    /// counts and duration) is written when the body ends or the client
    /// goes away.
    fn relay(
        self,
        mut rparts: http::response::Parts,
        rbody: Incoming,
        idle: Duration,
    ) -> Response<Body> {
        filter_response_headers(&mut rparts.headers);
        rparts
            .headers
            .insert(REQUEST_ID.clone(), self.request_id_value());
        let status = rparts.status.as_u16();
        let sent = Arc::new(AtomicU64::new(0));
        let counted = body::Counted::new(Idle::new(rbody, idle), sent.clone());
        let body = body::OnEnd::new(counted, move |end| {
            let reason = match end {
                body::End::Complete => self.reason.clone(),
                body::End::Failed => format!("{} (the response stream failed)", self.reason),
                body::End::Abandoned => format!("{} (the client left early)", self.reason),
            };
            self.record(Done {
                event: "request",
                decision: Decision::Allow,
                reason: &reason,
                status,
                upstream: Some(status),
                bytes_out: sent.load(Ordering::Relaxed),
                exit_code: None,
            });
        });
        Response::from_parts(rparts, body::boxed(body))
    }

    fn upstream_failed(&self, detail: &str) -> Response<Body> {
        let rack = self.rack.as_deref().unwrap_or("?");
        let msg = format!("gateway: rack `{rack}` unavailable: {detail}");
        self.audit(Decision::Error, &msg, 502, None);
        json_error(StatusCode::BAD_GATEWAY, &msg, &self.request_id)
    }
}

/// The headers sent to the rack: the client's, minus everything in
/// [`DROP_REQUEST`], `X-Forwarded-*` and anything `Connection` names; plus
/// the rack credential, the actor and the request id.
fn forward_headers(src: &HeaderMap, rack: &Rack, ctx: &Ctx) -> HeaderMap {
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
    if let Some(id) = &ctx.identity {
        if let Ok(v) = HeaderValue::from_str(&id.name) {
            out.insert(CONVOX_ACTOR.clone(), v);
        }
    }
    out.insert(REQUEST_ID.clone(), ctx.request_id_value());
    out
}

fn filter_response_headers(h: &mut HeaderMap) {
    for name in DROP_RESPONSE {
        h.remove(*name);
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

/// The first line of a (small) error body from the rack.
async fn read_error_text(resp: Response<Incoming>) -> String {
    let limited = http_body_util::Limited::new(resp.into_body(), 4096);
    let bytes = match tokio::time::timeout(Duration::from_secs(5), limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "no message".to_string()
    } else {
        line.chars().take(200).collect()
    }
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
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

fn rack_list(rt: &Runtime) -> String {
    rt.racks.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// 12 characters like the rack's own request ids: a random per-process
/// prefix and a counter, so ids are unique without a syscall per request.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("system randomness is available");
        u64::from_le_bytes(b)
    });
    // 4 characters of process prefix, 8 of counter (36^8 ≈ 2.8e12 ids).
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut p = prefix;
    let mut out = [0u8; 12];
    for slot in out[..4].iter_mut() {
        *slot = ALPHABET[(p % 36) as usize];
        p /= 36;
    }
    for slot in out[4..].iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::resource_endpoint;

    #[test]
    fn resource_endpoint_takes_host_and_port_past_the_credentials() {
        assert_eq!(
            resource_endpoint("postgres://app:p@ss@db.myapp.mock:5432/app"),
            Some(("db.myapp.mock", 5432))
        );
        assert_eq!(
            resource_endpoint("redis://cache.internal:6379"),
            Some(("cache.internal", 6379))
        );
        assert_eq!(
            resource_endpoint("mysql://u:p@[fd00::1]:3306/db?tls=true"),
            Some(("fd00::1", 3306))
        );
        assert_eq!(resource_endpoint("postgres://db.example/app"), None);
        assert_eq!(resource_endpoint("db.example:5432"), None);
        assert_eq!(resource_endpoint("postgres://u:p@:5432/app"), None);
        assert_eq!(resource_endpoint(""), None);
    }
}
