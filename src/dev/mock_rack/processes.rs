//! Processes (rack-semantics §5): `run` pods, listings with every pod's
//! command, get and stop by exact pod name, the files routes, and how exec
//! resolves `{pid}` (a service name first, a pod name only if no pod of
//! that service is running).

use http::Method;

use super::body::{json, ok, respond, stream, tar, ApiError, ApiResult, MockBody};
use super::rest::{generic, Req};
use super::shell;
use super::state::{pod_env, AppState, Process};
use super::{Shared, LOWER_ALNUM, SMALL_STREAM_LEN};

/// Run options the rack reads as headers (st/process.go:57-74) that the
/// mock only notes.
const NOTED_RUN_HEADERS: &[&str] = &[
    "Cpu",
    "Cpu-Limit",
    "Gpu",
    "Gpu-Vendor",
    "Memory",
    "Memory-Limit",
    "Volumes",
    "Use-Service-Volume",
    "Privileged",
    "Node-Labels",
    "System-Critical",
];

pub(crate) fn route(
    shared: &Shared,
    req: &Req<'_>,
    app: &mut AppState,
    name: &str,
    rest: &[&str],
) -> ApiResult {
    let method = req.method;
    match (method, rest) {
        (&Method::POST, ["services", service, "processes"]) => run(shared, req, app, name, service),
        (&Method::GET, ["processes"]) => {
            let mut selector = String::from("system=convox");
            for label in ["service", "release"] {
                if let Some(value) = req.input.query(label).filter(|v| !v.is_empty()) {
                    selector.push_str(&format!(",{label}={value}"));
                }
            }
            let selector = Selector::parse(&selector).map_err(ApiError::internal)?;
            let list: Vec<&Process> = app
                .processes
                .values()
                .filter(|p| selector.matches(p))
                .collect();
            Ok(json(&list))
        }
        (&Method::GET, ["processes", pid]) => app
            .processes
            .get(*pid)
            .map(json)
            .ok_or_else(|| ApiError::not_found("process", pid)),
        (&Method::DELETE, ["processes", pid]) => app
            .processes
            .remove(*pid)
            .map(|_| ok())
            .ok_or_else(|| ApiError::not_found("process", pid)),
        (_, ["processes", pid, "files"]) => {
            let process = app
                .processes
                .get(*pid)
                .ok_or_else(|| ApiError::not_found("process", pid))?;
            match *method {
                Method::GET => {
                    let file = req.value("file");
                    req.notes.note("files.file", file.as_str());
                    if file.trim_end_matches('/') == "/proc/1/environ" {
                        let environ: Vec<u8> = process
                            .env
                            .iter()
                            .flat_map(|(k, v)| format!("{k}={v}\0").into_bytes())
                            .collect();
                        return Ok(respond(
                            http::StatusCode::OK,
                            "application/octet-stream",
                            MockBody::full(tar(&[("proc/1/environ", &environ)])),
                        ));
                    }
                    Ok(stream(SMALL_STREAM_LEN))
                }
                Method::POST => {
                    if let Some(extra) = req.input.query("tar-extra") {
                        req.notes.note("input.tar-extra", extra);
                    }
                    Ok(ok())
                }
                Method::DELETE => {
                    let files = req.value("files");
                    for file in files.split(',').filter(|f| !f.is_empty()) {
                        req.notes.note("files.delete", file);
                    }
                    Ok(ok())
                }
                _ => Ok(generic(method)),
            }
        }
        _ => Ok(generic(method)),
    }
}

/// ProcessRun: every option is a header. `Release` picks the release
/// (case-insensitively; its raw value becomes the label), `Command` is
/// split into args (absent: the service command; empty: the image CMD),
/// `Environment` is appended after the release env, `Image` replaces the
/// image.
fn run(shared: &Shared, req: &Req<'_>, app: &mut AppState, name: &str, service: &str) -> ApiResult {
    let release_header = req.header("release");
    let release_id = release_header
        .clone()
        .unwrap_or_else(|| app.app.release.clone());
    let release = app.release(&release_id);
    if release_header.is_some() && release.is_none() {
        return Err(ApiError::not_found("release", &release_id));
    }
    let command = match req.header("command") {
        None if app.services.iter().any(|s| s.name == service) => format!("bin/{service}"),
        None => String::new(),
        Some(raw) => {
            let args = shell::split(&raw).map_err(|err| ApiError::internal(err.to_string()))?;
            shell::join(&args)
        }
    };
    let mut env = pod_env(release.map_or("", |r| r.env.as_str()), &shared.password);
    if let Some(raw) = req.header("environment") {
        req.notes.note("input.Environment", raw.as_str());
        for (k, v) in super::form::parse_query(&raw) {
            env.push((k, v));
        }
    }
    for header in NOTED_RUN_HEADERS {
        if let Some(value) = req.header(header) {
            req.notes.note(format!("input.{header}"), value);
        }
    }
    let build = release.map_or("", |r| r.build.as_str());
    let image = req
        .header("image")
        .unwrap_or_else(|| format!("registry.mock/{name}:{service}.{build}"));
    let process = Process {
        id: format!("{service}-{}", shared.ids.string(LOWER_ALNUM, 5)),
        app: name.to_owned(),
        command,
        cpu: 0.0,
        gpu: 0,
        host: String::new(),
        image,
        instance: "node-1".to_owned(),
        memory: 0.0,
        name: service.to_owned(),
        ports: Vec::new(),
        release: release_id,
        started: crate::clock::now_rfc3339(),
        status: "running".to_owned(),
        kind: "process",
        env,
    };
    req.notes.note("run.pod", process.id.as_str());
    req.notes.note("run.command", process.command.as_str());
    req.notes.note("run.release", process.release.as_str());
    req.notes.note("run.image", process.image.as_str());
    let resp = json(&process);
    app.processes.insert(process.id.clone(), process);
    Ok(resp)
}

/// Where exec lands for `{pid}` (k/process.go:28-47): a random running pod
/// of the service `{pid}` (run and build pods included; `{pid}` may add
/// selector terms such as `web,release=R1`), else the pod named `{pid}`.
/// `pick` chooses among several candidates.
pub(crate) fn resolve_exec<'a>(
    app: &'a AppState,
    pid: &str,
    pick: u64,
) -> Result<&'a Process, String> {
    let selector = Selector::parse(&format!("system=convox,service={pid}"))?;
    let running: Vec<&Process> = app
        .processes
        .values()
        .filter(|p| p.status == "running" && matches!(p.kind, "process" | "service" | "timer"))
        .filter(|p| selector.matches(p))
        .collect();
    if !running.is_empty() {
        return Ok(running[(pick % running.len() as u64) as usize]);
    }
    app.processes
        .get(pid)
        .ok_or_else(|| format!("process not found: {pid}"))
}

/// A Kubernetes equality-based label selector (`k=v`, `k==v`, `k!=v`,
/// `k`, `!k`), as `labels.Parse` reads the rack's concatenated string.
struct Selector(Vec<Requirement>);

enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    fn parse(selector: &str) -> Result<Self, String> {
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        let mut terms = Vec::new();
        for term in selector.split(',') {
            let term = term.trim();
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::Absent(k.trim().to_owned())
            } else {
                Requirement::Exists(term.to_owned())
            };
            let ok = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => {
                    !k.is_empty() && valid(k) && valid(v)
                }
                Requirement::Exists(k) | Requirement::Absent(k) => !k.is_empty() && valid(k),
            };
            if !ok {
                return Err(format!("unable to parse requirement: {term:?}"));
            }
            terms.push(requirement);
        }
        Ok(Selector(terms))
    }

    fn matches(&self, pod: &Process) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => pod.label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => pod.label(k) != Some(v.as_str()),
            Requirement::Exists(k) => pod.label(k).is_some(),
            Requirement::Absent(k) => pod.label(k).is_none(),
        })
    }
}
