//! Releases, builds and objects: how ReleaseCreate forks its base and
//! stores the env verbatim (rack-semantics §3.2), the promote checks,
//! builds with their source `url` (header fallback included) and the
//! external build's `repository`, and the object store.

use bytes::Bytes;
use http::{Method, StatusCode};

use super::body::{json, ok, respond, stream, ApiError, ApiResult, MockBody};
use super::env::parse_env;
use super::rest::{generic, Req};
use super::state::{seed_manifest, AppState, Build, Release, StoredObject};
use super::{Shared, BUILD_EXPORT_LEN, LOWER_ALNUM};

pub(crate) fn route(
    shared: &Shared,
    req: &Req<'_>,
    app: &mut AppState,
    rest: &[&str],
) -> ApiResult {
    let method = req.method;
    let limit = || {
        req.input
            .query("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(10)
    };
    match (method, rest) {
        (&Method::GET, ["releases"]) => {
            let list: Vec<&Release> = app
                .releases_newest_first()
                .into_iter()
                .take(limit())
                .collect();
            Ok(json(&list))
        }
        (&Method::GET, ["releases", id]) => app
            .release(id)
            .map(json)
            .ok_or_else(|| ApiError::not_found("release", id)),
        (&Method::POST, ["releases"]) => release_create(shared, req, app),
        (&Method::POST, ["releases", id, "promote"]) => promote(req, app, id),
        (&Method::GET, ["builds"]) => {
            let list: Vec<&Build> = app.builds.iter().rev().take(limit()).collect();
            Ok(json(&list))
        }
        (&Method::POST, ["builds"]) | (&Method::POST, ["builds", "import"]) => {
            let external = req.input.param_bool("external", false);
            Ok(json(&build_create(shared, req, app, external)))
        }
        (&Method::POST, ["builds", id, "image"]) => {
            req.value("image");
            req.param("src-creds-user");
            app.build(id)
                .map(json)
                .ok_or_else(|| ApiError::not_found("build", id))
        }
        (&Method::GET, ["builds", file]) if file.ends_with(".tgz") => {
            let id = file.strip_suffix(".tgz").unwrap_or(file);
            if app.build(id).is_none() {
                return Err(ApiError::not_found("build", id));
            }
            Ok(stream(BUILD_EXPORT_LEN))
        }
        (&Method::GET, ["builds", id]) => app
            .build(id)
            .map(json)
            .ok_or_else(|| ApiError::not_found("build", id)),
        (&Method::PUT, ["builds", id]) => {
            let build = app
                .builds
                .iter_mut()
                .find(|b| b.id.eq_ignore_ascii_case(id))
                .ok_or_else(|| ApiError::not_found("build", id))?;
            let fields: [(&str, &mut String); 5] = [
                ("release", &mut build.release),
                ("manifest", &mut build.manifest),
                ("status", &mut build.status),
                ("logs", &mut build.logs),
                ("entrypoint", &mut build.entrypoint),
            ];
            for (param, field) in fields {
                if let Some(value) = req.param(param) {
                    *field = value.to_owned();
                }
            }
            Ok(json(build))
        }
        (&Method::GET, ["objects"]) => {
            req.value("prefix");
            Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "unimplemented"))
        }
        (_, ["objects", key @ ..]) if !key.is_empty() => {
            object_route(shared, req, app, &key.join("/"))
        }
        _ => Ok(generic(method)),
    }
}

/// ReleaseCreate (k/release.go:39-83): the base is `parent-release` or the
/// newest release; `build` replaces the build (and copies its manifest and
/// description); a present `env` replaces the env verbatim, `env=` meaning
/// none; an absent one keeps the base env.
fn release_create(shared: &Shared, req: &Req<'_>, app: &mut AppState) -> ApiResult {
    let base = match req.param("parent-release").filter(|p| !p.is_empty()) {
        Some(id) => Some(
            app.release(id)
                .ok_or_else(|| ApiError::not_found("release", id))?,
        ),
        None => app.newest_release(),
    };
    req.notes
        .note("release.base", base.map_or("", |b| b.id.as_str()));
    let seq = app.releases.iter().map(|r| r.seq + 1).max().unwrap_or(0);
    let mut release = Release {
        id: shared.release_id(),
        app: app.app.name.clone(),
        build: base.map(|p| p.build.clone()).unwrap_or_default(),
        env: base.map(|p| p.env.clone()).unwrap_or_default(),
        manifest: base.map(|p| p.manifest.clone()).unwrap_or_default(),
        description: base.map(|p| p.description.clone()).unwrap_or_default(),
        created: crate::clock::now_rfc3339(),
        seq,
    };
    if let Some(build) = req.param("build").filter(|b| !b.is_empty()) {
        let found = app
            .build(build)
            .ok_or_else(|| ApiError::not_found("build", build))?;
        release.build = found.id.clone();
        release.manifest = found.manifest.clone();
        release.description = found.description.clone();
    }
    if let Some(env) = req.param("env") {
        parse_env(env).map_err(|err| ApiError::internal(err.to_string()))?;
        release.env = env.to_owned();
    }
    if let Some(description) = req.param("description") {
        release.description = description.to_owned();
    }
    req.notes.note("release.id", release.id.as_str());
    req.notes.note("release.build", release.build.as_str());
    req.notes.note("release.env", release.env.as_str());
    let resp = json(&release);
    app.releases.push(release);
    Ok(resp)
}

/// ReleasePromoteValidate (pkg/api/validation.go) and the promote itself.
fn promote(req: &Req<'_>, app: &mut AppState, id: &str) -> ApiResult {
    if req.input.form_str("force") != "true" && app.app.status != "running" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "app is currently updating",
        ));
    }
    let release = app
        .release(id)
        .ok_or_else(|| ApiError::not_found("release", id))?;
    if release.manifest.trim().is_empty() {
        return Err(ApiError::bad_request(
            "can not promote a release with an empty manifest",
        ));
    }
    if let Some(active) = app.release(&app.app.release) {
        if release.created < active.created {
            return Err(ApiError::bad_request(
                "can not promote an older release, try rollback",
            ));
        }
    }
    parse_env(&release.env).map_err(|err| ApiError::internal(err.to_string()))?;
    let id = release.id.clone();
    req.notes.note("promote.release", id.as_str());
    app.app.release = id;
    app.app.status = "running".to_owned();
    Ok(ok())
}

/// Builds complete at once (with a new release); external builds stay
/// `created` and expose the rack password in `repository`, as the real
/// rack does. The source is `c.Value("url")`, so a `Url` header works too.
fn build_create(shared: &Shared, req: &Req<'_>, app: &mut AppState, external: bool) -> Build {
    let url = req.value("url");
    req.notes.note("build.url", url.as_str());
    if let Some(args) = req.param("build-args") {
        for arg in args.split(',') {
            req.notes.note("build.arg", arg);
        }
    }
    let now = crate::clock::now_rfc3339();
    let mut build = Build {
        id: shared.build_id(),
        app: app.app.name.clone(),
        description: req.param("description").unwrap_or_default().to_owned(),
        entrypoint: String::new(),
        git_sha: req.param("git-sha").unwrap_or_default().to_owned(),
        logs: String::new(),
        manifest: seed_manifest(),
        process: String::new(),
        release: String::new(),
        reason: String::new(),
        repository: String::new(),
        status: "created".to_owned(),
        started: now.clone(),
        ended: String::new(),
    };
    if external {
        build.repository = format!(
            "https://convox:{}@api.mock/{}",
            shared.password, app.app.name
        );
    } else {
        let parent = app.newest_release();
        let seq = app.releases.iter().map(|r| r.seq + 1).max().unwrap_or(0);
        let release = Release {
            id: shared.release_id(),
            app: app.app.name.clone(),
            build: build.id.clone(),
            env: parent.map(|p| p.env.clone()).unwrap_or_default(),
            manifest: build.manifest.clone(),
            description: build.description.clone(),
            created: now.clone(),
            seq,
        };
        build.release = release.id.clone();
        build.status = "complete".to_owned();
        build.ended = now;
        app.releases.push(release);
    }
    app.builds.push(build.clone());
    build
}

/// The object store; an empty key gets a random temporary key on store
/// (k/object.go:57-62) and is refused otherwise.
fn object_route(shared: &Shared, req: &Req<'_>, app: &mut AppState, key: &str) -> ApiResult {
    if key.is_empty() && *req.method != Method::POST {
        return Err(ApiError::bad_request("invalid object key"));
    }
    let temp;
    let key = if key.is_empty() {
        temp = format!("tmp/{}", shared.ids.string(LOWER_ALNUM, 16));
        temp.as_str()
    } else {
        key
    };
    match *req.method {
        Method::POST => {
            let content = req
                .body
                .complete()
                .then(|| Bytes::copy_from_slice(&req.body.kept));
            app.objects.insert(
                key.to_owned(),
                StoredObject {
                    content,
                    len: req.body.len,
                },
            );
            Ok(json(&serde_json::json!({
                "Url": format!("object://{}/{key}", app.app.name),
            })))
        }
        Method::GET => {
            if let Some(n) = key.strip_prefix("generated/").and_then(|n| n.parse().ok()) {
                return Ok(stream(n));
            }
            let object = app
                .objects
                .get(key)
                .ok_or_else(|| ApiError::not_found("object", key))?;
            match &object.content {
                Some(content) => Ok(respond(
                    StatusCode::OK,
                    "application/octet-stream",
                    MockBody::full(content.clone()),
                )),
                None => Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "mock rack kept no content for object {key} ({} bytes)",
                        object.len
                    ),
                )),
            }
        }
        Method::HEAD => {
            let exists = app.objects.contains_key(key) || key.starts_with("generated/");
            let status = if exists {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            Ok(respond(
                status,
                "text/plain; charset=utf-8",
                MockBody::empty(),
            ))
        }
        Method::DELETE => app
            .objects
            .remove(key)
            .map(|_| ok())
            .ok_or_else(|| ApiError::not_found("object", key)),
        _ => Ok(generic(req.method)),
    }
}
