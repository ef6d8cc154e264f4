//! The REST routes: rack-level ones (system, JWT, registries, rack
//! resources, certificates, events) and the app routes that are neither
//! releases/builds/objects ([`super::releases`]) nor processes
//! ([`super::processes`]).
//!
//! Each handler reads its inputs with the accessor the rack's controller
//! uses (rack-semantics §2), so the header fallback (⚠HF) works wherever
//! the rack has it, and notes what it read in the record.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{Method, StatusCode};

use super::body::{json, ok, respond, ApiError, ApiResult, MockBody, Resp};
use super::form::Input;
use super::state::{
    system, App, AppState, Registry, Resource, JWT_TOKEN_PREFIX, SECRET_BUDGET_WEBHOOK,
    SECRET_LOG_LINE, SECRET_MANIFEST_ENV,
};
use super::{lock, processes, releases, Drained, Notes, Shared, ALNUM, MOCK_PRIVATE_KEY};

/// A drained REST request with its inputs parsed.
pub(crate) struct Req<'a> {
    pub method: &'a Method,
    pub segs: &'a [&'a str],
    pub input: Input,
    pub body: Drained,
    pub notes: Notes,
}

impl Req<'_> {
    /// A `param` options field (noted as `input.<name>` when given).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        let value = self.input.param(name);
        if let Some(v) = value {
            self.notes.note(format!("input.{name}"), v);
        }
        value
    }

    /// `c.Value(n)`, noted as `input.<name>`; `input.<name>.from` says
    /// `header` when the value came through the header fallback.
    pub(crate) fn value(&self, name: &str) -> String {
        let value = self.input.value(name);
        self.note_input(name, &value, self.input.form_str(name).is_empty());
        value
    }

    /// `formValue(c, n)` (DELETE bodies hand-parsed), noted like
    /// [`Req::value`].
    pub(crate) fn form_value(&self, name: &str) -> String {
        let value = self.input.form_value(name);
        self.note_input(name, &value, self.input.form_value_form(name).is_empty());
        value
    }

    fn note_input(&self, name: &str, value: &str, from_header: bool) {
        if value.is_empty() {
            return;
        }
        self.notes.note(format!("input.{name}"), value);
        if from_header {
            self.notes.note(format!("input.{name}.from"), "header");
        }
    }

    /// A `header` options field.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.input.header(name)
    }
}

/// What the mock answers for a path the rack serves but the mock does not
/// model.
pub(crate) fn generic(method: &Method) -> Resp {
    match *method {
        Method::GET => json(&serde_json::json!({})),
        Method::HEAD => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            MockBody::empty(),
        ),
        _ => ok(),
    }
}

pub(crate) fn rest(shared: &Shared, req: &Req<'_>) -> ApiResult {
    let method = req.method;
    match (method, req.segs) {
        (&Method::GET, ["auth"]) => Ok(ok()),
        (&Method::GET, ["system"]) => Ok(json(&system())),
        (&Method::PUT, ["system"]) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "direct rack doesn't support update, make sure you are not using RACK_URL environment variable",
        )),
        (&Method::POST, ["instances", "keyroll"]) => Ok(json(&serde_json::json!({
            "name": "convox-keyroll",
            "private-key": MOCK_PRIVATE_KEY,
        }))),
        (&Method::POST, ["system", "jwt", "token"]) => {
            let role = req.value("role");
            let hours = req.value("durationInHour");
            Ok(json(&serde_json::json!({
                "token": format!("{JWT_TOKEN_PREFIX}{role}.{hours}.{}", shared.ids.string(ALNUM, 32)),
            })))
        }
        (&Method::GET, ["system", "processes"]) => {
            let state = lock(&shared.state);
            let all = req.input.query("all") == Some("true");
            let list: Vec<_> = state
                .apps
                .values()
                .filter(|_| all)
                .chain([&state.system])
                .flat_map(|a| a.processes.values())
                .collect();
            Ok(json(&list))
        }
        (&Method::GET, ["registries"]) => {
            let state = lock(&shared.state);
            let mut list = state.registries.clone();
            list.sort_by(|a, b| a.server.cmp(&b.server));
            Ok(json(&list))
        }
        (&Method::POST, ["registries"]) => {
            let registry = Registry {
                server: req.value("server"),
                username: req.value("username"),
                password: req.value("password"),
            };
            let mut state = lock(&shared.state);
            state.registries.retain(|r| r.server != registry.server);
            state.registries.push(registry.clone());
            Ok(json(&registry))
        }
        (&Method::DELETE, ["registries", server @ ..]) if !server.is_empty() => {
            let server = server.join("/");
            let mut state = lock(&shared.state);
            let before = state.registries.len();
            state.registries.retain(|r| r.server != server);
            if state.registries.len() == before {
                return Err(ApiError::not_found("registry", &server));
            }
            Ok(ok())
        }
        (&Method::GET, ["resources"]) => Ok(json(&lock(&shared.state).resources)),
        (&Method::POST, ["resources"]) => rack_resource_create(shared, req),
        (&Method::GET, ["resources", name]) => lock(&shared.state)
            .resources
            .iter()
            .find(|r| r.name == *name)
            .map(json)
            .ok_or_else(|| ApiError::not_found("resource", name)),
        (&Method::DELETE, ["resources", name]) => {
            let mut state = lock(&shared.state);
            let before = state.resources.len();
            state.resources.retain(|r| r.name != *name);
            if state.resources.len() == before {
                return Err(ApiError::not_found("resource", name));
            }
            Ok(ok())
        }
        (&Method::POST, ["resources", _, "links"]) => {
            req.value("app");
            Err(ApiError::bad_request("linking is not supported on v3"))
        }
        (&Method::POST, ["certificates"]) => {
            let public = req.value("pub");
            req.value("key");
            req.param("chain");
            Ok(json(&certificate(shared, &public_domains(&public))))
        }
        (&Method::POST, ["certificates", "generate"]) => {
            let domains = req.value("domains");
            let domains: Vec<String> = domains.split(',').map(str::to_owned).collect();
            Ok(json(&certificate(shared, &domains)))
        }
        (&Method::POST, ["events"]) => {
            req.value("action");
            req.input
                .param_map("data")
                .map_err(ApiError::internal)?
                .into_iter()
                .flatten()
                .for_each(|(k, v)| req.notes.note(format!("input.data[{k}]"), v));
            Ok(ok())
        }
        (&Method::GET, ["system", "releases"])
        | (&Method::GET, ["instances"])
        | (&Method::OPTIONS, ["resources"]) => Ok(json(&[(); 0])),
        (&Method::GET, ["certificates"]) => Ok(json(&[serde_json::json!({
            "id": super::state::SEEDED_CERTIFICATE,
            "domain": "myapp.router.mock",
            "domains": ["myapp.router.mock"],
            "expiration": "2027-01-01T00:00:00Z",
            "status": "issued",
        })])),
        (&Method::GET, ["apps"]) => {
            let state = lock(&shared.state);
            let apps: Vec<&App> = state.apps.values().map(|a| &a.app).collect();
            Ok(json(&apps))
        }
        (&Method::POST, ["apps"]) => app_create(shared, req),
        (_, ["apps", app, rest @ ..]) => app_route(shared, req, app, rest),
        _ => Ok(generic(method)),
    }
}

/// The domain names a mock certificate claims: the PEM's text is not
/// parsed, so the CN is whatever follows `CN=` if present.
fn public_domains(public: &str) -> Vec<String> {
    public
        .split("CN=")
        .nth(1)
        .map(|rest| vec![rest.split_whitespace().next().unwrap_or("").to_owned()])
        .unwrap_or_else(|| vec!["mock.example".to_owned()])
}

fn certificate(shared: &Shared, domains: &[String]) -> serde_json::Value {
    serde_json::json!({
        "id": format!("cert-{}", shared.ids.string(super::LOWER_ALNUM, 10)),
        "domain": domains.first().cloned().unwrap_or_default(),
        "domains": domains,
        "expiration": "2027-01-01T00:00:00Z",
        "status": "issued",
    })
}

/// `POST /resources`: only `webhook`, whose target is `parameters[Url]`
/// (k/resource.go:189-212).
fn rack_resource_create(shared: &Shared, req: &Req<'_>) -> ApiResult {
    let kind = req.value("kind");
    let name = req.param("name").unwrap_or_default().to_owned();
    let parameters = req
        .input
        .param_map("parameters")
        .map_err(ApiError::internal)?;
    if kind != "webhook" {
        return Err(ApiError::bad_request(format!(
            "invalid resource type: {kind}"
        )));
    }
    let parameters: BTreeMap<String, String> = parameters.into_iter().flatten().collect();
    for (k, v) in &parameters {
        req.notes.note(format!("input.parameters[{k}]"), v);
    }
    let resource = Resource {
        name,
        parameters,
        status: "running".to_owned(),
        kind,
        url: String::new(),
    };
    let mut state = lock(&shared.state);
    state.resources.retain(|r| r.name != resource.name);
    state.resources.push(resource.clone());
    Ok(json(&resource))
}

fn app_create(shared: &Shared, req: &Req<'_>) -> ApiResult {
    let name = req.value("name");
    if name.is_empty() {
        return Err(ApiError::bad_request("name required"));
    }
    let mut state = lock(&shared.state);
    if state.apps.contains_key(&name) || name == "system" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("app already exists: {name}"),
        ));
    }
    let app = App {
        generation: req.param("generation").unwrap_or("2").to_owned(),
        locked: false,
        name: name.clone(),
        release: String::new(),
        router: "router.mock".to_owned(),
        status: "running".to_owned(),
        parameters: BTreeMap::new(),
    };
    let resp = json(&app);
    state.apps.insert(name, AppState::empty(app));
    Ok(resp)
}

fn app_route(shared: &Shared, req: &Req<'_>, name: &str, rest: &[&str]) -> ApiResult {
    let mut state = lock(&shared.state);
    if name == "system" && rest.is_empty() && *req.method == Method::DELETE {
        return Err(ApiError::bad_request("can not delete system app"));
    }
    let Some(app) = state.app_mut(name) else {
        return Err(ApiError::not_found("app", name));
    };
    let method = req.method;
    match (method, rest) {
        (&Method::GET, []) => Ok(json(&app.app)),
        (&Method::PUT, []) => {
            if let Some(lock) = req.param("lock") {
                app.app.locked = lock == "true";
            }
            if let Some(params) = req
                .input
                .param_map("parameters")
                .map_err(ApiError::internal)?
            {
                app.app.parameters.extend(params);
            }
            Ok(ok())
        }
        (&Method::DELETE, []) => {
            state.apps.remove(name);
            Ok(ok())
        }
        (&Method::POST, ["cancel"]) => Ok(ok()),
        (&Method::GET, ["budget"]) => Ok(json(&serde_json::json!({"config": null, "state": null}))),
        (&Method::POST, ["budget"]) | (&Method::DELETE, ["budget"]) => {
            req.form_value("ack_by");
            Ok(ok())
        }
        (&Method::POST, ["budget", "reset"]) => {
            req.value("force_clear_cooldown");
            req.value("reset_period");
            req.form_value("ack_by");
            Ok(ok())
        }
        (&Method::POST, ["budget", "dismiss-recovery"]) => {
            req.form_value("ack_by");
            Ok(ok())
        }
        (&Method::POST, ["budget", "simulate-shutdown"]) => Ok(json(&serde_json::json!({
            "app": name,
            "at-cap-action": "alert-only",
            "webhook-url": SECRET_BUDGET_WEBHOOK,
            "notify-before-minutes": 30,
            "shutdown-grace-period": "5m",
            "shutdown-order": "largest-cost",
            "recovery-mode": "manual",
            "eligibility": [],
            "would-shut-down-services": [],
            "would-shut-down-count": 0,
            "estimated-cost-saved-usd-per-hour": 0.0,
            "simulated-at": crate::clock::now_rfc3339(),
        }))),
        (&Method::GET, ["balancers"]) => Ok(json(&[(); 0])),
        (&Method::GET, ["configs"]) => {
            let list: Vec<serde_json::Value> = app
                .configs
                .iter()
                .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
                .collect();
            Ok(json(&list))
        }
        (&Method::GET, ["configs", config]) => app
            .configs
            .get(*config)
            .map(|value| json(&serde_json::json!({"name": config, "value": value})))
            .ok_or_else(|| ApiError::not_found("config", config)),
        (&Method::PUT, ["configs", config]) => {
            let encoded = req.value("value");
            let decoded = STANDARD
                .decode(encoded.as_bytes())
                .map_err(|err| ApiError::internal(format!("illegal base64 data: {err}")))?;
            let value = String::from_utf8_lossy(&decoded).into_owned();
            req.notes.note("config.value", value.as_str());
            app.configs.insert((*config).to_owned(), value);
            Ok(ok())
        }
        (&Method::GET, ["diagnose"]) => Ok(json(&diagnose(app))),
        (&Method::GET, ["manifest", "services", service]) => {
            let environment: Vec<&str> = if *service == "web" {
                vec![SECRET_MANIFEST_ENV]
            } else {
                Vec::new()
            };
            if !app.services.iter().any(|s| s.name == *service) {
                return Err(ApiError::not_found("service", service));
            }
            Ok(json(&serde_json::json!({
                "name": service,
                "environment": environment,
            })))
        }
        (&Method::GET, ["services"]) => Ok(json(&app.services)),
        (&Method::PUT, ["services", _]) | (&Method::POST, ["services", _, "restart"]) => Ok(ok()),
        (&Method::POST, ["services", _, "scale-override"]) => {
            req.form_value("active");
            req.form_value("ack_by");
            Ok(ok())
        }
        (&Method::POST, ["services", _, "triggers", action]) => {
            match *action {
                "enable" => drop(req.form_value("opts")),
                "threshold" => {
                    req.form_value("type");
                    req.form_value("threshold");
                }
                _ => {}
            }
            req.form_value("ack_by");
            Ok(ok())
        }
        (&Method::PUT, ["ssl", _, _]) => {
            req.value("id");
            Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "unimplemented"))
        }
        (_, ["services", ..]) | (_, ["processes", ..]) => {
            processes::route(shared, req, app, name, rest)
        }
        (_, ["releases", ..]) | (_, ["builds", ..]) | (_, ["objects", ..]) => {
            releases::route(shared, req, app, rest)
        }
        (&Method::GET, ["resources"]) => Ok(json(&app.resources)),
        (_, ["resources", resource, more @ ..]) => {
            let Some(found) = app.resources.iter().find(|r| r.name == *resource) else {
                return Err(ApiError::not_found("resource", resource));
            };
            match (method, more) {
                (&Method::GET, []) => Ok(json(found)),
                (&Method::GET, ["data"]) => Ok(super::body::stream(super::SMALL_STREAM_LEN)),
                (&Method::PUT, ["data"]) => Ok(ok()),
                _ => Ok(generic(method)),
            }
        }
        _ => Ok(generic(method)),
    }
}

/// `GET /apps/{app}/diagnose`: every pod with its recent logs, which carry
/// whatever the app printed (here [`SECRET_LOG_LINE`]).
fn diagnose(app: &AppState) -> serde_json::Value {
    let pods: Vec<serde_json::Value> = app
        .processes
        .values()
        .map(|p| {
            serde_json::json!({
                "name": p.id,
                "service": p.name,
                "phase": "Running",
                "ready": "1/1",
                "ageSeconds": 3600,
                "restarts": 0,
                "classification": "healthy",
                "logs": format!("2026-01-02T00:00:00Z {SECRET_LOG_LINE}\n"),
            })
        })
        .collect();
    serde_json::json!({
        "namespace": format!("mock-{}", app.app.name),
        "rack": "mock",
        "app": app.app.name,
        "timestamp": crate::clock::now_rfc3339(),
        "pods": pods,
    })
}
