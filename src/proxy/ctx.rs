//! One rack request's context: what is known about it so far, as typed
//! stages ([`Stage`]), and the one place it is audited and answered.
//!
//! Every outcome of a rack request goes through [`Ctx::refuse`] or
//! [`Ctx::record`], so each request gets exactly one audit record (plus
//! session records for websockets) and one metrics update.
//!
//! With `--audit-fsync` each answer waits for its record to be on disk
//! before it ends ([`crate::audit::Auditor::durable`]): refusals and
//! buffered answers before they are returned, a streamed answer before
//! its last frame ([`super::held`]), a session before its 101.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::held::{Durable, Held};
use crate::audit::{self, Decision, Ticket, Unrecorded};
use crate::gateway::identify::Client;
use crate::gateway::Runtime;
use crate::http::body::{self, Body, Idle};
use crate::http::respond::{self, Metric, Refusal, Socket, REQUEST_ID};
use crate::identity::credentials::Identity;
use crate::metrics::Metrics;
use crate::rack::routes::RouteMatch;
use crate::rack::tunnel;
use crate::rack::upstream::Rack;

/// How far a request got: each stage holds everything the earlier ones
/// established, so a later step cannot run without them.
pub(crate) enum Stage {
    /// Refused before a rack was chosen.
    Received,
    /// The rack is known; the route is not (yet).
    Rack(Arc<Rack>),
    /// Rack and route are known.
    Routed(Routed),
    /// The caller is identified.
    Identified(Routed, Who),
    /// The policy allowed it.
    Allowed(Routed, Who, Allowed),
}

/// The identified caller: who, how they authenticated and when, which is
/// what expiring grants and step-up requirements are decided on.
pub(crate) struct Who {
    pub identity: Identity,
    pub auth: Arc<crate::policy::Auth>,
    pub now: i64,
}

/// A request matched to a rack route.
pub(crate) struct Routed {
    pub rack: Arc<Rack>,
    pub route: RouteMatch,
    /// The run/exec command as the client sent it (redacted for audit).
    pub command: Option<String>,
}

/// Why a request was allowed, and what the forwarded request changes.
#[derive(Default)]
pub(crate) struct Allowed {
    /// The rule that allowed it.
    pub reason: String,
    /// Env key names a release creation changes (audit only).
    pub env_changes: Option<String>,
}

/// Per-request facts gathered along the pipeline, for responses and audit.
pub(crate) struct Ctx {
    pub request_id: String,
    pub started: Instant,
    pub method: Method,
    pub path: String,
    pub client: Client,
    /// The config deciding this request (`None`: none loaded): its version
    /// and command redactions go into the audit record.
    pub runtime: Option<Arc<Runtime>>,
    pub stage: Stage,
    /// Request body bytes forwarded to the rack so far.
    pub bytes_in: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub audit: audit::Auditor,
}

/// How a request ended, for its audit record.
pub(crate) struct Done<'a> {
    pub event: &'a str,
    pub decision: Decision,
    pub reason: &'a str,
    pub status: u16,
    pub upstream: Option<u16>,
    pub bytes_out: u64,
    pub exit_code: Option<i32>,
}

impl Ctx {
    /// The context of a request nothing is known about yet.
    pub fn new(
        request_id: &str,
        started: Instant,
        parts: &http::request::Parts,
        peer: std::net::SocketAddr,
        runtime: Option<Arc<Runtime>>,
        gw: &crate::gateway::Gateway,
        path: String,
    ) -> Ctx {
        Ctx {
            request_id: request_id.to_string(),
            started,
            method: parts.method.clone(),
            path,
            client: Client::of(peer, &parts.headers, runtime.as_deref()),
            runtime,
            stage: Stage::Received,
            bytes_in: Default::default(),
            metrics: gw.metrics.clone(),
            audit: gw.audit.clone(),
        }
    }

    /// The context of a dispatched request, before anything is known.
    pub fn of(
        req: &crate::http::Inbound,
        gw: &crate::gateway::Gateway,
        rt: Option<Arc<Runtime>>,
        path: String,
    ) -> Ctx {
        Ctx::new(
            &req.request_id,
            req.started,
            &req.parts,
            req.peer,
            rt,
            gw,
            path,
        )
    }

    fn routed(&self) -> Option<&Routed> {
        match &self.stage {
            Stage::Received | Stage::Rack(_) => None,
            Stage::Routed(r) | Stage::Identified(r, _) | Stage::Allowed(r, _, _) => Some(r),
        }
    }

    pub(crate) fn rack_name(&self) -> Option<&str> {
        match &self.stage {
            Stage::Received => None,
            Stage::Rack(rack) => Some(&rack.name),
            _ => self.routed().map(|r| r.rack.name.as_str()),
        }
    }

    fn who(&self) -> Option<&Who> {
        match &self.stage {
            Stage::Identified(_, who) | Stage::Allowed(_, who, _) => Some(who),
            _ => None,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.who().map(|w| &w.identity)
    }

    /// How the caller authenticated, once identified.
    pub(crate) fn auth(&self) -> Option<&crate::policy::Auth> {
        self.who().map(|w| &*w.auth)
    }

    /// When the caller was identified: the time the request is decided at.
    pub(crate) fn now(&self) -> Option<i64> {
        self.who().map(|w| w.now)
    }

    pub fn allowed(&self) -> Option<&Allowed> {
        match &self.stage {
            Stage::Allowed(_, _, a) => Some(a),
            _ => None,
        }
    }

    /// Moves to the next stage (a no-op from the wrong one, which the
    /// pipeline's order rules out).
    pub(crate) fn identified(&mut self, who: Who) {
        if let Stage::Routed(r) = std::mem::replace(&mut self.stage, Stage::Received) {
            self.stage = Stage::Identified(r, who);
        }
    }

    pub fn allow(&mut self, reason: String) {
        if let Stage::Identified(r, id) = std::mem::replace(&mut self.stage, Stage::Received) {
            self.stage = Stage::Allowed(
                r,
                id,
                Allowed {
                    reason,
                    env_changes: None,
                },
            );
        }
    }

    /// The command actually forwarded, when the gateway rewrote it (an
    /// attached run's tagged placeholder): the audit record says what the
    /// rack will run.
    pub(crate) fn set_forwarded_command(&mut self, command: String) {
        if let Stage::Allowed(r, _, _) = &mut self.stage {
            r.command = Some(command);
        }
    }

    pub(crate) fn set_env_changes(&mut self, changes: String) {
        if let Stage::Allowed(_, _, a) = &mut self.stage {
            a.env_changes = Some(changes);
        }
    }

    pub fn operation(&self) -> Option<&'static str> {
        self.routed().map(|r| r.route.route.operation)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.routed().and_then(|r| r.route.params.get(name))
    }

    fn reason(&self) -> &str {
        self.allowed()
            .map(|a| a.reason.as_str())
            .unwrap_or_default()
    }

    pub(crate) fn request_id_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.request_id).expect("request ids are ASCII")
    }

    /// Audits (and counts) the request; the ticket says when the record
    /// is durable.
    pub fn record(&self, d: Done<'_>) -> Ticket {
        if d.event != "session-start" {
            self.metrics.request(
                self.rack_name().unwrap_or("-"),
                self.operation().unwrap_or("-"),
                d.decision.as_str(),
                d.status,
            );
        }
        // The command never reaches the audit trail unredacted, not even
        // quoted inside a refusal's reason.
        let redactor = self.runtime.as_ref().map(|rt| &rt.redactor);
        let raw = self.routed().and_then(|r| r.command.as_ref());
        let (command, reason) = match (raw, redactor) {
            (Some(raw), Some(redactor)) => {
                let shown = redactor.apply(raw);
                let reason = redactor.apply(&d.reason.replace(raw.as_str(), &shown));
                (Some(shown), reason)
            }
            _ => (None, d.reason.to_string()),
        };
        self.audit.emit(&audit::Record {
            event: d.event,
            request_id: &self.request_id,
            identity: self.identity(),
            client_ip: Some(self.client.ip),
            via: self.client.via,
            method: self.method.as_str(),
            path: &self.path,
            rack: self.rack_name(),
            operation: self.operation(),
            app: self.param("app"),
            service: self.param("service"),
            pid: self.param("pid"),
            command: command.as_deref(),
            decision: Some(d.decision),
            reason: &reason,
            env_changes: self.allowed().and_then(|a| a.env_changes.as_deref()),
            config_version: self.runtime.as_ref().map(|rt| rt.version.as_str()),
            status: d.status,
            upstream_status: d.upstream,
            bytes_in: Some(self.bytes_in.load(Ordering::Relaxed)),
            bytes_out: Some(d.bytes_out),
            exit_code: d.exit_code,
            duration_ms: self.started.elapsed().as_millis() as u64,
        })
    }

    /// Audits the session's start; resolves once the record is durable, so
    /// the 101 is sent after it.
    pub(crate) async fn session_start(&self) -> Result<(), Unrecorded> {
        let ticket = self.record(Done {
            event: "session-start",
            decision: Decision::Allow,
            reason: self.reason(),
            status: 101,
            upstream: Some(101),
            bytes_out: 0,
            exit_code: None,
        });
        self.audit.durable(ticket).await
    }

    /// The answer when a record could not be made durable (fail-closed):
    /// 503 JSON, without a record of its own (the file is failing).
    pub(crate) fn unrecorded(&self) -> Response<Body> {
        Refusal::audit_unavailable().into_response(&self.request_id)
    }

    pub(crate) fn audit_session_end(&self, end: tunnel::SpliceEnd) {
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

    /// Refuses: audited, counted, and answered in-band on websocket routes
    /// or as JSON otherwise, once the record is durable (or with the
    /// fail-closed audit refusal if it cannot be).
    pub async fn refuse(&self, socket: Option<Socket>, refusal: Refusal) -> Response<Body> {
        match refusal.metric {
            Metric::Rejected(reason) => self.metrics.rejected(reason),
            Metric::RateLimited(bucket) => self.metrics.rate_limited(bucket.as_str()),
            Metric::None => {}
        }
        let ticket = self.record(Done {
            event: "request",
            decision: refusal.decision,
            reason: &refusal.detail,
            status: refusal.status.as_u16(),
            upstream: None,
            bytes_out: 0,
            exit_code: None,
        });
        let refusal = match self.audit.durable(ticket).await {
            Ok(()) => refusal,
            Err(Unrecorded) => Refusal::audit_unavailable(),
        };
        respond::render(refusal, socket, &self.request_id)
    }

    /// Refuses a websocket session the rack would not open.
    pub(crate) async fn refuse_session(
        &self,
        socket: Socket,
        message: &str,
        detail: &str,
        upstream: Option<u16>,
    ) -> Response<Body> {
        let ticket = self.record(Done {
            event: "request",
            decision: Decision::Error,
            reason: detail,
            status: 101,
            upstream,
            bytes_out: 0,
            exit_code: None,
        });
        match self.audit.durable(ticket).await {
            Ok(()) => socket.refuse(message, &self.request_id),
            Err(Unrecorded) => {
                socket.refuse(&Refusal::audit_unavailable().message, &self.request_id)
            }
        }
    }

    /// The rack could not be reached or answered unusably (502).
    pub(crate) async fn upstream_failed(&self, detail: &str) -> Response<Body> {
        let rack = self.rack_name().unwrap_or("?").to_string();
        self.refuse(None, Refusal::rack_unavailable(&rack, detail))
            .await
    }

    /// Passes the rack's answer to an allowed request back to the client:
    /// hop-by-hop headers dropped, our request id set; the body streams
    /// with the idle timeout, and the request's audit record (with byte
    /// counts and duration) is written when the body ends or the client
    /// goes away. When answers wait for their records, the last frame
    /// is held until the record is durable ([`Held`]); an answer with no
    /// body (HEAD, 204, 304, `content-length: 0`) is complete with its
    /// head, so the head itself waits.
    pub(crate) async fn relay(
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
        let waits = self.audit.waits();
        if waits && http_body::Body::is_end_stream(&rbody) {
            let ticket = self.record_answer(status, self.reason(), 0);
            return match self.audit.durable(ticket).await {
                Ok(()) => Response::from_parts(rparts, body::empty()),
                Err(Unrecorded) => self.unrecorded(),
            };
        }
        let sent = Arc::new(AtomicU64::new(0));
        let counted = body::Counted::new(Idle::new(rbody, idle), sent.clone());
        let audit = self.audit.clone();
        let finish = move |end: body::End| {
            let reason = match end {
                body::End::Complete => self.reason().to_string(),
                body::End::Failed => format!("{} (the response stream failed)", self.reason()),
                body::End::Abandoned => format!("{} (the client left early)", self.reason()),
            };
            self.record_answer(status, &reason, sent.load(Ordering::Relaxed))
        };
        let body = if waits {
            body::boxed(Held::new(counted, move |end| {
                let durable: Durable = Box::pin(audit.durable(finish(end)));
                durable
            }))
        } else {
            body::boxed(body::OnEnd::new(counted, move |end| {
                finish(end);
            }))
        };
        Response::from_parts(rparts, body)
    }

    /// The allowed request's audit record for a response the gateway
    /// buffered (masked) rather than streamed; resolves once it is durable.
    pub(crate) async fn record_buffered(
        &self,
        status: u16,
        bytes_out: u64,
    ) -> Result<(), Unrecorded> {
        let ticket = self.record_answer(status, self.reason(), bytes_out);
        self.audit.durable(ticket).await
    }

    /// The record of an allowed request the rack answered with `status`.
    fn record_answer(&self, status: u16, reason: &str, bytes_out: u64) -> Ticket {
        self.record(Done {
            event: "request",
            decision: Decision::Allow,
            reason,
            status,
            upstream: Some(status),
            bytes_out,
            exit_code: None,
        })
    }
}

/// Response headers never passed back to the client: hop-by-hop ones,
/// the rack's request id (the gateway sets its own), its auth challenge and
/// cookies.
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

/// Drops [`DROP_RESPONSE`] from a rack answer's headers: one pass over the
/// (few) names present instead of a hashed lookup per listed name; a
/// typical response carries none of them, and then nothing is allocated.
pub(crate) fn filter_response_headers(h: &mut HeaderMap) {
    let present: Vec<http::header::HeaderName> = h
        .keys()
        .filter(|k| DROP_RESPONSE.contains(&k.as_str()))
        .cloned()
        .collect();
    for name in present {
        h.remove(name);
    }
}
