//! Facts fetched from the rack before a decision that needs them: the
//! target process of an exec, the parent release's env, the resources a
//! tunnel may reach. Each is a small GET with the gateway's credential on
//! behalf of the request's identity; the decisions themselves are pure
//! functions in `policy`.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use super::ctx::Ctx;
use super::forward::describe_client_error;
use crate::gateway::Runtime;
use crate::http::body::{self, Idle};
use crate::http::canon::{Canonical, Upgrade};
use crate::http::respond::{Refusal, REQUEST_ID};
use crate::policy::{tunnel, Facts, Process, Subject};
use crate::rack::mask::MAX_MASKED_RESPONSE;
use crate::rack::upstream::Rack;

static CONVOX_ACTOR: HeaderName = HeaderName::from_static("convox-actor");

/// A canonical rack path (segments escaped as the canonicalizer does) with
/// an optional query.
fn rack_path(segments: &[&str], query: Option<&str>) -> String {
    Canonical {
        segments: segments.iter().map(|s| s.to_string()).collect(),
        query: query.map(str::to_string),
        upgrade: Upgrade::None,
    }
    .target_from(0)
}

/// A small GET to the rack with the gateway's credential, on behalf of
/// the request's identity: status and body (capped at 4 MiB).
async fn rack_get(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    target: &str,
) -> Result<(StatusCode, Bytes), Refusal> {
    let unavailable = |why: String| Refusal::rack_unavailable(&rack.name, why);
    let uri = rack
        .uri(target)
        .map_err(|_| Refusal::denied("invalid path"))?;
    let mut req = Request::new(body::empty());
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(header::HOST, rack.host.clone());
    h.insert(header::AUTHORIZATION, rack.authorization.clone());
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(REQUEST_ID.clone(), ctx.request_id_value());
    if let Some(v) = ctx
        .identity()
        .and_then(|i| HeaderValue::from_str(&i.name).ok())
    {
        h.insert(CONVOX_ACTOR.clone(), v);
    }
    let resp = match tokio::time::timeout(rt.timeouts.idle, rack.client().request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unavailable(describe_client_error(&e))),
        Err(_) => return Err(unavailable("no response within the idle timeout".into())),
    };
    let status = resp.status();
    let limited = http_body_util::Limited::new(
        Idle::new(resp.into_body(), rt.timeouts.idle),
        MAX_MASKED_RESPONSE,
    );
    let body = limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| unavailable("the rack's answer could not be read".into()))?;
    Ok((status, body))
}

/// `GET /apps/{app}/processes/{pid}` on the rack: the process's service
/// (`name`) and command, as the rack reports them.
pub(crate) async fn process(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    app: &str,
    pid: &str,
) -> Result<Process, Refusal> {
    let target = rack_path(&["apps", app, "processes", pid], None);
    let (status, body) = rack_get(rt, rack, ctx, &target).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(Refusal::denied(format!(
            "process {pid} not found in app {app}"
        )));
    }
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!(
                "cannot look up process {pid} (rack answered {})",
                status.as_u16()
            ),
        ));
    }
    #[derive(serde::Deserialize)]
    struct P {
        name: String,
        #[serde(default)]
        command: String,
    }
    let p: P = serde_json::from_slice(&body)
        .map_err(|_| Refusal::denied(format!("cannot determine the service of process {pid}")))?;
    Ok(Process {
        service: p.name,
        command: p.command,
    })
}

/// `GET /apps/{app}/services` on the rack: the app's service names, which
/// a `{pid}` must not be (the rack resolves a service name first).
pub(crate) async fn service_names(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    app: &str,
) -> Result<Vec<String>, Refusal> {
    let target = rack_path(&["apps", app, "services"], None);
    let (status, body) = rack_get(rt, rack, ctx, &target).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(Refusal::denied(format!("app {app} not found")));
    }
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!(
                "cannot list the services of {app} (rack answered {})",
                status.as_u16()
            ),
        ));
    }
    #[derive(serde::Deserialize)]
    struct S {
        name: String,
    }
    let list: Vec<S> = serde_json::from_slice(&body).map_err(|_| {
        Refusal::rack_unavailable(&rack.name, format!("the service list of {app} is not JSON"))
    })?;
    Ok(list.into_iter().map(|s| s.name).collect())
}

/// A release's id and env, as the rack returns them.
#[derive(serde::Deserialize, Default)]
pub(crate) struct Release {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub env: String,
}

/// The env of the release the rack copies when a release creation posts
/// no `env`: `parent-release`, else the newest release (`GET
/// /apps/{app}/releases?limit=1`, newest first); empty when the app has
/// no release yet.
pub(crate) async fn base_env(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    app: &str,
    parent: Option<&str>,
) -> Result<Release, Refusal> {
    let id = match parent {
        Some(id) => id.to_string(),
        None => {
            let list = rack_path(&["apps", app, "releases"], Some("limit=1"));
            let (status, body) = rack_get(rt, rack, ctx, &list).await?;
            if !status.is_success() {
                return Err(Refusal::rack_unavailable(
                    &rack.name,
                    format!(
                        "cannot read the latest release of {app} (rack answered {})",
                        status.as_u16()
                    ),
                ));
            }
            let list: Vec<Release> = serde_json::from_slice(&body).map_err(|_| {
                Refusal::rack_unavailable(&rack.name, "the rack's release list is not JSON")
            })?;
            match list.into_iter().next() {
                Some(r) => r.id,
                None => return Ok(Release::default()),
            }
        }
    };
    release(rt, rack, ctx, app, &id).await
}

/// The env of the app's **active** release (`GET /apps/{app}` → `release`),
/// which a release creation is diffed against; empty when there is none.
/// `known` (usually the newest release) is reused when it is the one.
pub(crate) async fn active_env(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    app: &str,
    known: &Release,
) -> Result<String, Refusal> {
    #[derive(serde::Deserialize)]
    struct App {
        #[serde(default)]
        release: String,
    }
    let (status, body) = rack_get(rt, rack, ctx, &rack_path(&["apps", app], None)).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(Refusal::denied(format!("app {app} not found")));
    }
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!("cannot read app {app} (rack answered {})", status.as_u16()),
        ));
    }
    let a: App = serde_json::from_slice(&body)
        .map_err(|_| Refusal::rack_unavailable(&rack.name, format!("app {app} is not JSON")))?;
    if a.release.is_empty() {
        return Ok(String::new());
    }
    // Release ids are case-insensitive on the rack.
    if a.release.eq_ignore_ascii_case(&known.id) {
        return Ok(known.env.clone());
    }
    Ok(release(rt, rack, ctx, app, &a.release).await?.env)
}

/// `GET /apps/{app}/releases/{id}`.
async fn release(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    app: &str,
    id: &str,
) -> Result<Release, Refusal> {
    let target = rack_path(&["apps", app, "releases", id], None);
    let (status, body) = rack_get(rt, rack, ctx, &target).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(Refusal::denied(format!(
            "release {id} not found in app {app}"
        )));
    }
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!(
                "cannot read release {id} (rack answered {})",
                status.as_u16()
            ),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|_| Refusal::rack_unavailable(&rack.name, format!("release {id} is not JSON")))
}

/// `certs delete` deletes whatever rack Secret its id names: the id must be
/// one the rack lists as a certificate.
pub(crate) async fn certificate_listed(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    id: &str,
) -> Result<(), Refusal> {
    #[derive(serde::Deserialize)]
    struct Cert {
        #[serde(default)]
        id: String,
    }
    let (status, body) = rack_get(rt, rack, ctx, &rack_path(&["certificates"], None)).await?;
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!(
                "cannot list certificates (rack answered {})",
                status.as_u16()
            ),
        ));
    }
    let certs: Vec<Cert> = serde_json::from_slice(&body)
        .map_err(|_| Refusal::rack_unavailable(&rack.name, "the certificate list is not JSON"))?;
    if certs.iter().any(|c| c.id == id) {
        Ok(())
    } else {
        Err(Refusal::denied(format!(
            "`{id}` is not a certificate the rack lists; `certs delete` deletes only those"
        )))
    }
}

/// Vets a `/proxy/{host}/{port}` target: fetches the app list and the
/// resources of the apps the caller may see, then asks the pure
/// [`tunnel::check`]. Returns the app whose resource the target is, which
/// the tunnel's session keeps for reloads to decide again.
pub(crate) async fn tunnel_target(
    rt: &Runtime,
    rack: &Rack,
    ctx: &Ctx,
    subject: &Subject,
) -> Result<String, Refusal> {
    let (host, port) =
        tunnel::target(ctx.param("host"), ctx.param("port")).map_err(Refusal::denied)?;
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
        #[serde(default)]
        url: String,
    }
    let (status, body) = rack_get(rt, rack, ctx, &rack_path(&["apps"], None)).await?;
    if !status.is_success() {
        return Err(Refusal::rack_unavailable(
            &rack.name,
            format!("cannot list apps (rack answered {})", status.as_u16()),
        ));
    }
    let apps: Vec<Named> = serde_json::from_slice(&body)
        .map_err(|_| Refusal::rack_unavailable(&rack.name, "cannot list apps"))?;
    let names: Vec<String> = apps.into_iter().map(|a| a.name).collect();
    let searchable = tunnel::searchable_apps(
        &rt.policy,
        subject,
        &Facts {
            rack: &rack.name,
            now: ctx.now(),
            auth: ctx.auth(),
            ..Default::default()
        },
        &names,
    );
    let mut urls = Vec::new();
    for app in searchable.iter().take(tunnel::MAX_TUNNEL_APPS) {
        let target = rack_path(&["apps", app, "resources"], None);
        let (status, body) = rack_get(rt, rack, ctx, &target).await?;
        if !status.is_success() {
            continue;
        }
        let resources: Vec<Named> = serde_json::from_slice(&body).unwrap_or_default();
        urls.extend(resources.into_iter().map(|r| r.url));
        if tunnel::check(host, port, &urls, searchable.len()).is_ok() {
            return Ok(app.to_string());
        }
    }
    match tunnel::check(host, port, &urls, searchable.len()) {
        Err(why) => Err(Refusal::denied(why)),
        // A match returned above, with its app.
        Ok(()) => Err(Refusal::denied("the proxy target is unknown")),
    }
}
