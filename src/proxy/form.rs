//! The small form bodies the gateway reads before forwarding (builds,
//! release creations, and the routes whose form can set the actor the
//! rack records): read them (capped), parse them as the rack will,
//! fetch the facts their decision needs, and ask the pure checks in
//! `policy::forms`. What is forwarded is exactly the body that was
//! checked (rewritten for the env round-trip).

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ctx::Ctx;
use super::lookup;
use crate::gateway::Runtime;
use crate::http::body::Idle;
use crate::http::respond::Refusal;
use crate::policy::env::Releases;
use crate::policy::forms::{self, FormRefusal};
use crate::policy::{Facts, SecretAccess, Subject};
use crate::rack::form::{self as rack_form, MAX_FORM_BODY};
use crate::rack::inputs;
use crate::rack::upstream::Rack;

impl From<FormRefusal> for Refusal {
    fn from(r: FormRefusal) -> Refusal {
        match r {
            FormRefusal::Denied(why) => Refusal::denied(why),
            FormRefusal::Invalid(why) => Refusal::bad_request(why),
        }
    }
}

/// Whether the gateway reads an operation's form body before forwarding.
pub(crate) fn is_checked(op: &str) -> bool {
    matches!(op, "build" | "releases create") || !inputs::actor_keys(op).is_empty()
}

/// What the form checks of a request need besides its body.
pub(crate) struct FormRequest<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub subject: &'a Subject,
    pub access: &'a SecretAccess,
}

/// Reads, checks and (for `releases create`) rewrites the form body of a
/// request [`is_checked`] names; the bytes to forward, or the refusal to
/// send.
pub(crate) async fn checked(
    ctx: &mut Ctx,
    rt: &Runtime,
    rack: &Rack,
    req: FormRequest<'_>,
    body: Incoming,
) -> Result<Bytes, Refusal> {
    let FormRequest {
        headers,
        query: raw_query,
        subject,
        access,
    } = req;
    let query = rack_form::parse_form(raw_query.unwrap_or_default());
    let limited = http_body_util::Limited::new(Idle::new(body, rt.timeouts.idle), MAX_FORM_BODY);
    let raw = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form body is larger than 1 MiB",
            ))
        }
        Err(_) => return Err(Refusal::bad_request("the request body could not be read")),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !raw.is_empty() && !rack_form::is_form(content_type) {
        return Err(Refusal::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this route accepts only an application/x-www-form-urlencoded body",
        ));
    }
    let Ok(text) = std::str::from_utf8(&raw) else {
        return Err(Refusal::bad_request("the form body is not UTF-8"));
    };
    let op = ctx.operation().unwrap_or_default();
    // Parameters the rack reads with a header fallback: an empty value
    // would make it read the same-named header instead.
    let inspected: &[&str] = if op == "build" { &["url"] } else { &[] };
    let invalid = |e: inputs::InputError| Refusal::invalid(e.status(), e);
    inputs::check_form_pairs(text, raw_query, inspected).map_err(invalid)?;
    let fields = rack_form::parse_form(text);
    inputs::check_actor_pairs(op, &fields).map_err(invalid)?;
    let app = ctx.param("app").unwrap_or_default().to_string();
    match op {
        "build" => {
            forms::check_build_form(&app, &fields, &query, access)?;
            return Ok(raw);
        }
        "releases create" => {}
        _ => return Ok(raw),
    }
    let inputs = forms::release_inputs(&fields, &query)?;
    let base = Facts {
        rack: &rack.name,
        now: ctx.now(),
        auth: ctx.auth(),
        ..Default::default()
    };
    forms::check_release_code(&rt.policy, subject, &base, &app, &fields)?;
    // Decided on the env the rack will end up with, against the active
    // release: without `env` the rack copies the parent (or newest)
    // release's env, so a rollback is checked like an edit.
    let base = lookup::base_env(rt, rack, ctx, &app, inputs.parent.as_deref()).await?;
    let active = lookup::active_env(rt, rack, ctx, &app, &base).await?;
    let releases = Releases {
        base: &base.env,
        active: &active,
    };
    let (env, changes) = forms::check_release_env(
        &rt.policy,
        &rack.name,
        &app,
        access,
        inputs.env.as_deref(),
        releases,
    )?;
    ctx.set_env_changes(changes.summary());
    let Some(env) = env else {
        return Ok(raw);
    };
    let rewritten: Vec<(String, String)> = fields
        .into_iter()
        .map(|(k, v)| if k == "env" { (k, env.clone()) } else { (k, v) })
        .collect();
    Ok(Bytes::from(rack_form::encode_form(&rewritten)))
}
