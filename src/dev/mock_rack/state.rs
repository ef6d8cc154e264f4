//! The mock rack's state and its wire shapes (pkg/structs in convox/convox),
//! and the seeded default state with realistic secrets.
//!
//! The secret values are public constants so tests can grep a response,
//! an audit line or a log for them and prove the gateway masked them.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

/// The certificate the rack lists (`GET /certificates`).
pub(crate) const SEEDED_CERTIFICATE: &str = "cert-1234";

/// Plaintext of the seeded app config `api-token` (route #22/#23).
pub const SECRET_CONFIG_VALUE: &str = "cfg-secret-7f3a9c1e";
/// Password of the seeded registry `registry.mock` (routes #81/#82).
pub const SECRET_REGISTRY_PASSWORD: &str = "reg-secret-b81d4072";
/// `parameters.Url` of the seeded rack resource `alerts` (#94/#96/#98).
pub const SECRET_WEBHOOK_URL: &str = "https://hooks.slack.mock/services/T0/B0/whsecret5c2e91";
/// The build arg the seeded running build pod shows in its `command`.
pub const SECRET_BUILD_ARG: &str = "NPM_TOKEN=npm-secret-33aa07";
/// `BUILD_AUTH` in the seeded build pod's env.
pub const SECRET_BUILD_AUTH: &str = "build-auth-secret-e4d1";
/// A log line in every diagnose report's pod logs (#8).
pub const SECRET_LOG_LINE: &str = "connecting with password=diag-secret-91ce";
/// A manifest env default (`environment:` in convox.yml), shown by the
/// manifest-service route (#10) and in build and release `manifest`.
pub const SECRET_MANIFEST_ENV: &str = "SECRET_DEFAULT=manifest-secret-4d17";
/// `budget.atCapWebhookUrl` in the manifest, shown by budget simulate (#18).
pub const SECRET_BUDGET_WEBHOOK: &str = "https://hooks.budget.mock/at-cap/bsecret0a7c";
/// Prefix of every token `POST /system/jwt/token` mints (#90).
pub const JWT_TOKEN_PREFIX: &str = "eyJhbGciOiJIUzI1NiJ9.mock-jwt.";
/// The rack version, also the `release` of the rack's own pods.
pub(crate) const RACK_VERSION: &str = "3.18.11";

pub(crate) fn seed_manifest() -> String {
    format!(
        "budget:\n  atCapWebhookUrl: {SECRET_BUDGET_WEBHOOK}\nservices:\n  web:\n    build: .\n    command: bin/web\n    environment:\n      - {SECRET_MANIFEST_ENV}\n    port: 3000\n  worker:\n    build: .\n    command: bin/worker\n"
    )
}

/// `RACK_URL` as the rack puts it in every pod (k/helpers.go:133-141).
pub(crate) fn rack_url(password: &str) -> String {
    format!("https://convox:{password}@api.mock.svc.cluster.local:5443")
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct App {
    pub generation: String,
    pub locked: bool,
    pub name: String,
    pub release: String,
    pub router: String,
    pub status: String,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Release {
    pub id: String,
    pub app: String,
    pub build: String,
    pub env: String,
    pub manifest: String,
    pub description: String,
    pub created: String,
    /// Creation order, breaking ties between releases of the same second.
    #[serde(skip)]
    pub seq: u64,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Build {
    pub id: String,
    pub app: String,
    pub description: String,
    pub entrypoint: String,
    pub git_sha: String,
    pub logs: String,
    pub manifest: String,
    pub process: String,
    pub release: String,
    pub reason: String,
    pub repository: String,
    pub status: String,
    pub started: String,
    pub ended: String,
}

/// A pod: a service replica, a `run` process, a build or a rack pod.
#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Process {
    pub id: String,
    pub app: String,
    /// `shellquote.Join` of the container args.
    pub command: String,
    pub cpu: f64,
    pub gpu: u32,
    pub host: String,
    pub image: String,
    pub instance: String,
    pub memory: f64,
    /// The `service` label.
    pub name: String,
    pub ports: Vec<String>,
    pub release: String,
    pub started: String,
    pub status: String,
    /// The `type` label: `service` or `process` (run and build pods).
    #[serde(skip)]
    pub kind: &'static str,
    /// The container env, in the order the pod spec lists it.
    #[serde(skip)]
    pub env: Vec<(String, String)>,
}

impl Process {
    /// The pod's value for a label the rack's selectors use.
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        match name {
            "app" => Some(&self.app),
            "release" => Some(&self.release),
            "service" | "name" => Some(&self.name),
            "type" => Some(self.kind),
            "system" => Some("convox"),
            _ => None,
        }
    }
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Resource {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ServicePort {
    pub balancer: u16,
    pub certificate: String,
    pub container: u16,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Service {
    pub count: u32,
    pub cpu: u32,
    pub domain: String,
    pub gpu: u32,
    pub gpu_vendor: String,
    pub memory: u32,
    pub name: String,
    pub nlb: Vec<ServicePort>,
    pub ports: Vec<ServicePort>,
}

#[derive(Clone, Serialize)]
pub(crate) struct Registry {
    pub server: String,
    pub username: String,
    pub password: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct System {
    pub count: u32,
    pub domain: String,
    pub name: String,
    pub provider: String,
    pub rack_domain: String,
    pub region: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
}

pub(crate) fn system() -> System {
    System {
        count: 3,
        domain: "router.mock".to_owned(),
        name: "mock".to_owned(),
        provider: "aws".to_owned(),
        rack_domain: "api.mock".to_owned(),
        region: "us-east-1".to_owned(),
        status: "running".to_owned(),
        kind: "production".to_owned(),
        version: RACK_VERSION.to_owned(),
    }
}

pub(crate) struct StoredObject {
    /// Kept only for bodies up to 1 MiB.
    pub content: Option<Bytes>,
    pub len: u64,
}

pub(crate) struct AppState {
    pub app: App,
    /// Oldest first.
    pub releases: Vec<Release>,
    /// Oldest first.
    pub builds: Vec<Build>,
    pub processes: BTreeMap<String, Process>,
    pub resources: Vec<Resource>,
    pub services: Vec<Service>,
    pub objects: HashMap<String, StoredObject>,
    /// `cfg-<name>` secrets, plaintext.
    pub configs: BTreeMap<String, String>,
}

impl AppState {
    pub(crate) fn empty(app: App) -> Self {
        AppState {
            app,
            releases: Vec::new(),
            builds: Vec::new(),
            processes: BTreeMap::new(),
            resources: Vec::new(),
            services: Vec::new(),
            objects: HashMap::new(),
            configs: BTreeMap::new(),
        }
    }

    /// A release by id, case-insensitively (k/release.go:371).
    pub(crate) fn release(&self, id: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.id.eq_ignore_ascii_case(id))
    }

    /// A build by id, case-insensitively (k/build.go:999).
    pub(crate) fn build(&self, id: &str) -> Option<&Build> {
        self.builds.iter().find(|b| b.id.eq_ignore_ascii_case(id))
    }

    /// The newest release by creation time (ReleaseList limit 1), which is
    /// not necessarily the active one.
    pub(crate) fn newest_release(&self) -> Option<&Release> {
        self.releases
            .iter()
            .max_by(|a, b| (&a.created, a.seq).cmp(&(&b.created, b.seq)))
    }

    /// Releases newest first, as ReleaseList sorts them.
    pub(crate) fn releases_newest_first(&self) -> Vec<&Release> {
        let mut list: Vec<&Release> = self.releases.iter().collect();
        list.sort_by(|a, b| (&b.created, b.seq).cmp(&(&a.created, a.seq)));
        list
    }
}

pub(crate) struct State {
    pub apps: BTreeMap<String, AppState>,
    /// App `system`: the rack itself (rack-semantics §1.4), not listed.
    pub system: AppState,
    pub registries: Vec<Registry>,
    /// Rack-level resources (webhooks).
    pub resources: Vec<Resource>,
}

impl State {
    pub(crate) fn app_mut(&mut self, name: &str) -> Option<&mut AppState> {
        if name == "system" {
            return Some(&mut self.system);
        }
        self.apps.get_mut(name)
    }

    pub(crate) fn app(&self, name: &str) -> Option<&AppState> {
        if name == "system" {
            return Some(&self.system);
        }
        self.apps.get(name)
    }
}

struct Seed<'a> {
    name: &'a str,
    short: &'a str,
    env_old: &'a str,
    env: &'a str,
    processes: [(&'a str, &'a str); 2],
    db_url: &'a str,
}

impl State {
    /// Apps `myapp` and `billing`, the rack's own `system` app, one
    /// registry and one webhook resource.
    pub(crate) fn seeded(password: &str) -> Self {
        let seeds = [
            Seed {
                name: "myapp",
                short: "MYAPP",
                env_old: "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nSECRET_KEY=s3cr3t",
                env: "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nSECRET_KEY=s3cr3t\nFEATURE_X=1",
                processes: [("web-abc12", "web"), ("worker-xyz34", "worker")],
                db_url: "postgres://app:dbpass@db.myapp.mock:5432/app",
            },
            Seed {
                name: "billing",
                short: "BILLING",
                env_old: "DATABASE_URL=postgres://b:billsecret@db:5432/billing\nSTRIPE_KEY=sk_test_mock",
                env: "DATABASE_URL=postgres://b:billsecret@db:5432/billing\nSTRIPE_KEY=sk_test_mock\nFEATURE_X=0",
                processes: [("web-def56", "web"), ("worker-uvw78", "worker")],
                db_url: "postgres://app:billpass@db.billing.mock:5432/app",
            },
        ];
        let mut apps: BTreeMap<String, AppState> = seeds
            .iter()
            .map(|s| (s.name.to_owned(), seed_app(s, password)))
            .collect();
        if let Some(myapp) = apps.get_mut("myapp") {
            let build = seed_build_pod(password);
            myapp.processes.insert(build.id.clone(), build);
        }
        State {
            apps,
            system: seed_system(password),
            registries: vec![Registry {
                server: "registry.mock".to_owned(),
                username: "deploy".to_owned(),
                password: SECRET_REGISTRY_PASSWORD.to_owned(),
            }],
            resources: vec![Resource {
                name: "alerts".to_owned(),
                parameters: BTreeMap::from([("Url".to_owned(), SECRET_WEBHOOK_URL.to_owned())]),
                status: "running".to_owned(),
                kind: "webhook".to_owned(),
                url: String::new(),
            }],
        }
    }
}

/// Pads an id body with `A`s to the rack's 10-letter form
/// (`MYAPP` + `BLD` → `MYAPPBLDAA`).
fn padded_id(prefix: char, body: &str) -> String {
    format!("{prefix}{body:A<10}")
}

/// The env a pod of `release` gets: the release env, then `RACK_URL`.
pub(crate) fn pod_env(release_env: &str, password: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = crate::dev::mock_rack::env::parse_env(release_env)
        .unwrap_or_default()
        .into_iter()
        .collect();
    env.push(("RACK_URL".to_owned(), rack_url(password)));
    env
}

/// The running build pod of `myapp`: `build` as exec's `{pid}` lands here,
/// with `BUILD_AUTH` and the rack password in its env.
fn seed_build_pod(password: &str) -> Process {
    Process {
        id: "build-mq2x7".to_owned(),
        app: "myapp".to_owned(),
        command: format!("build -method tgz -cache true -build-args {SECRET_BUILD_ARG}"),
        cpu: 0.0,
        gpu: 0,
        host: "10.0.0.40".to_owned(),
        image: "registry.mock/convox/build:3.18.11".to_owned(),
        instance: "node-1".to_owned(),
        memory: 0.0,
        name: "build".to_owned(),
        ports: Vec::new(),
        release: "RMYAPPRELAB".to_owned(),
        started: "2026-01-02T00:00:00Z".to_owned(),
        status: "running".to_owned(),
        kind: "process",
        env: vec![
            ("BUILD_APP".to_owned(), "myapp".to_owned()),
            ("BUILD_AUTH".to_owned(), SECRET_BUILD_AUTH.to_owned()),
            (
                "BUILD_URL".to_owned(),
                "object://myapp/tmp/seed.tgz".to_owned(),
            ),
            ("RACK_URL".to_owned(), rack_url(password)),
        ],
    }
}

/// App `system`: the rack API pod `api-<5>` (service `api`, container
/// `system`), whose env holds the rack password.
fn seed_system(password: &str) -> AppState {
    let mut state = AppState::empty(App {
        generation: "3".to_owned(),
        locked: false,
        name: "system".to_owned(),
        release: String::new(),
        router: "router.mock".to_owned(),
        status: "running".to_owned(),
        parameters: BTreeMap::new(),
    });
    let api = Process {
        id: "api-7d9f2".to_owned(),
        app: "system".to_owned(),
        command: "api".to_owned(),
        cpu: 0.0,
        gpu: 0,
        host: "10.0.0.2".to_owned(),
        image: format!("convox/convox:{RACK_VERSION}"),
        instance: "node-1".to_owned(),
        memory: 0.0,
        name: "api".to_owned(),
        ports: vec!["5443".to_owned()],
        release: RACK_VERSION.to_owned(),
        started: "2026-01-01T00:00:00Z".to_owned(),
        status: "running".to_owned(),
        kind: "service",
        env: vec![
            ("PASSWORD".to_owned(), password.to_owned()),
            ("RACK_URL".to_owned(), rack_url(password)),
        ],
    };
    state.processes.insert(api.id.clone(), api);
    state
}

fn seed_app(seed: &Seed<'_>, password: &str) -> AppState {
    let name = seed.name.to_owned();
    let (rel_suffix, bld_suffix) = if seed.short.len() > 5 {
        ("R", "B")
    } else {
        ("REL", "BLD")
    };
    let build_id = padded_id('B', &format!("{}{bld_suffix}", seed.short));
    let old_id = padded_id('R', &format!("{}{rel_suffix}", seed.short));
    let current_id = format!("{}B", &old_id[..old_id.len() - 1]);
    let release = |id: &str, env: &str, created: &str, seq: u64| Release {
        id: id.to_owned(),
        app: name.clone(),
        build: build_id.clone(),
        env: env.to_owned(),
        manifest: seed_manifest(),
        description: String::new(),
        created: created.to_owned(),
        seq,
    };
    let processes = seed
        .processes
        .iter()
        .map(|(id, service)| {
            let process = Process {
                id: (*id).to_owned(),
                app: name.clone(),
                command: format!("bin/{service}"),
                cpu: 0.0,
                gpu: 0,
                host: String::new(),
                image: format!("registry.mock/{name}:{service}.{build_id}"),
                instance: "node-1".to_owned(),
                memory: 0.0,
                name: (*service).to_owned(),
                ports: Vec::new(),
                release: current_id.clone(),
                started: "2026-01-02T00:00:00Z".to_owned(),
                status: "running".to_owned(),
                kind: "service",
                env: pod_env(seed.env, password),
            };
            ((*id).to_owned(), process)
        })
        .collect();
    let service = |service: &str, count: u32, ports: Vec<ServicePort>| Service {
        count,
        cpu: 256,
        domain: if ports.is_empty() {
            String::new()
        } else {
            format!("{service}.{name}.router.mock")
        },
        gpu: 0,
        gpu_vendor: String::new(),
        memory: 512,
        name: service.to_owned(),
        nlb: Vec::new(),
        ports,
    };
    let web_ports = vec![ServicePort {
        balancer: 443,
        certificate: String::new(),
        container: 3000,
    }];
    let mut state = AppState::empty(App {
        generation: "3".to_owned(),
        locked: false,
        name: name.clone(),
        release: current_id.clone(),
        router: "router.mock".to_owned(),
        status: "running".to_owned(),
        parameters: BTreeMap::new(),
    });
    state.releases = vec![
        release(&old_id, seed.env_old, "2026-01-01T00:00:00Z", 0),
        release(&current_id, seed.env, "2026-01-02T00:00:00Z", 1),
    ];
    state.builds = vec![Build {
        id: build_id.clone(),
        app: name.clone(),
        description: "initial".to_owned(),
        entrypoint: String::new(),
        git_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        logs: String::new(),
        manifest: seed_manifest(),
        process: String::new(),
        release: old_id.clone(),
        reason: String::new(),
        repository: String::new(),
        status: "complete".to_owned(),
        started: "2026-01-01T00:00:00Z".to_owned(),
        ended: "2026-01-01T00:01:00Z".to_owned(),
    }];
    state.processes = processes;
    state.resources = vec![Resource {
        name: "db".to_owned(),
        parameters: BTreeMap::new(),
        status: "running".to_owned(),
        kind: "postgres".to_owned(),
        url: seed.db_url.to_owned(),
    }];
    state.services = vec![
        service("web", 2, web_ports),
        service("worker", 1, Vec::new()),
    ];
    state
        .configs
        .insert("api-token".to_owned(), SECRET_CONFIG_VALUE.to_owned());
    state
}
