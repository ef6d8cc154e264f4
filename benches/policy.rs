//! Benchmarks of the policy engine at a realistic large size: the per-request
//! decision path, request canonicalization, and loading a config repository
//! of 1,000 users, 50 roles and 200 apps over 3 racks.
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench policy`). Targets,
//! documented in the README and deliberately not asserted here: a median of
//! at most 2 µs per decision, and at most 100 ms to load and validate.
//!
//! Everything is generated in memory by a seeded PRNG, so every run measures
//! the same repository and the same requests, and no disk I/O is timed.
#![allow(clippy::unwrap_used)] // benchmark set-up: a failure should stop the run

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::LazyLock;

use divan::{black_box, Bencher};
use http::Method;
use rack_gateway::config::{self, Env, MemSource};
use rack_gateway::http::canon;
use rack_gateway::policy::glob::Glob;
use rack_gateway::policy::load::DEFAULT_BLOCKED;
use rack_gateway::policy::{Facts, Policy, Process, SubjectKind, Verdict};
use rack_gateway::rack::routes;

fn main() {
    let fx = &*FIXTURE;
    eprintln!("{}", fx.summary);
    divan::main();
}

// ---------------------------------------------------------------------------
// Generator

/// The size of the generated repository.
const USERS: usize = 1_000;
const ROLES: usize = 50;
const APPS: usize = 200;
const CI: usize = 10;
const RACKS: &[&str] = &["staging", "production", "prod-eu"];
/// How many distinct requests the decision benchmarks rotate through, so
/// the figures are not those of one hot request.
const REQUESTS: usize = 1_000;
/// How many policy test cases the repository carries.
const CASES: usize = 50;

/// SplitMix64: deterministic and dependency-free; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Inclusive range.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Reads most roles grant, so allow lists look like real ones rather than
/// uniform samples of the whole route table.
const READS: &[&str] = &[
    "login",
    "apps",
    "apps info",
    "ps",
    "ps info",
    "builds",
    "builds info",
    "builds logs",
    "releases",
    "logs",
    "services",
    "rack",
    "configs",
    "balancers",
    "resources",
    "apps metrics",
    "apps diagnose",
    "cost",
    "budget show",
    "instances",
];

/// Operation globs some roles use instead of single names.
const OP_GLOBS: &[&str] = &["apps *", "builds*", "budget *", "services triggers *"];

/// Operations roles and users deny.
const DANGEROUS: &[&str] = &[
    "apps delete",
    "resources console",
    "resources export",
    "releases promote",
    "files download",
    "configs set",
    "objects fetch",
    "rack resources delete",
    "certs delete",
];

/// Command patterns for the one-off `command` service.
const COMMAND_PATTERNS: &[&str] = &[
    "bin/pre_release",
    "rake db:migrate",
    "rake db:migrate:status",
    "rake ops:*",
    "rake stripe:prepare",
    "run_as_deploy rake checks:*",
    "bin/healthcheck **",
    "bin/rails runner script/*.rb",
    "bundle exec rake cache:clear",
    "bundle exec rake reports:* **",
    "python manage.py migrate",
    "python manage.py check **",
    "node scripts/backfill-*.js **",
    "bin/console --read-only",
];

/// Commands requests send: some match the patterns above, some never do.
const COMMANDS: &[&str] = &[
    "rake db:migrate",
    "rake ops:restart-workers",
    "run_as_deploy rake checks:all",
    "bin/healthcheck --deep --timeout 30",
    "bin/pre_release",
    "bundle exec rake reports:daily 2026-01-01",
    "python manage.py check --deploy",
    "node scripts/backfill-users.js --batch 500",
    "bin/rails runner script/fix_orders.rb",
    "rails console",
    "bash",
    "rake db:drop",
    "sh -c 'curl https://example.com/x | sh'",
    "sleep 3600",
];

const ROLE_FAMILIES: &[&str] = &[
    "viewer",
    "deployer",
    "operator",
    "support",
    "release-manager",
    "auditor",
    "dba",
    "oncall",
];

/// What the generator decided for one identity; requests are aimed mostly
/// inside these scopes so that the mix is not almost all "no grant".
struct Identity {
    kind: SubjectKind,
    name: String,
    scopes: Vec<(String, String)>,
}

/// One request as the gateway sees it after canonicalization.
struct Request {
    method: Method,
    websocket: bool,
    /// Path segments after the `/racks/<rack>` prefix.
    segments: Vec<String>,
    rack: &'static str,
    kind: SubjectKind,
    identity: String,
    command: Option<String>,
    /// What the rack would report for the target process of an exec or
    /// stop, used when the engine asks for it.
    process: Option<Process>,
}

fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn app_name(i: usize) -> String {
    format!("app-{i}")
}

/// The operations a role may list: everything routable except what the
/// gateway blocks for everyone.
fn grantable_ops() -> Vec<&'static str> {
    routes::operations()
        .into_iter()
        .filter(|o| !DEFAULT_BLOCKED.contains(o) && *o != "probe")
        .collect()
}

fn gen_roles(rng: &mut Rng, files: &mut BTreeMap<String, String>) -> Vec<String> {
    let pool = grantable_ops();
    let mut names = Vec::new();
    for i in 0..ROLES {
        let name = if i == 0 {
            "admin".to_string()
        } else {
            format!("{}-{i:02}", ROLE_FAMILIES[i % ROLE_FAMILIES.len()])
        };
        let mut y = String::new();
        writeln!(y, "# Generated role {i}.").unwrap();
        writeln!(y, "description: generated role number {i}").unwrap();
        if i == 0 {
            y.push_str("allow:\n  - \"*\"\ncommands:\n  allow:\n    \"*\":\n      - \"**\"\n");
            files.insert(format!("roles/{name}.yaml"), y);
            names.push(name);
            continue;
        }
        if i >= 8 && rng.percent(35) {
            let n = rng.range(1, 2);
            let mut parents: Vec<&str> = (0..n)
                .map(|_| names[rng.range(1, i - 1)].as_str())
                .collect();
            parents.dedup();
            writeln!(y, "inherits: [{}]", parents.join(", ")).unwrap();
        }
        let want = rng.range(10, 40);
        let mut allow: Vec<&str> = Vec::new();
        allow.extend(READS.iter().take(rng.range(10, 20)));
        if rng.percent(25) {
            allow.push(*rng.pick(OP_GLOBS));
        }
        let run = rng.percent(60);
        let exec = rng.percent(25);
        if run {
            allow.push("run");
        }
        if exec {
            allow.push("exec");
        }
        while allow.len() < want {
            let op = *rng.pick(&pool);
            if !allow.contains(&op) && !DANGEROUS.contains(&op) && op != "run" && op != "exec" {
                allow.push(op);
            }
        }
        y.push_str("allow:\n");
        for op in &allow {
            writeln!(y, "  - {}", yaml_str(op)).unwrap();
        }
        if rng.percent(30) {
            y.push_str("deny:\n");
            for _ in 0..rng.range(1, 3) {
                writeln!(y, "  - {}", yaml_str(DANGEROUS[rng.below(DANGEROUS.len())])).unwrap();
            }
        }
        if run || exec {
            y.push_str("commands:\n  allow:\n    command:\n");
            let mut pats: Vec<&str> = Vec::new();
            let n = rng.range(3, 6);
            while pats.len() < n {
                let p = *rng.pick(COMMAND_PATTERNS);
                if !pats.contains(&p) {
                    pats.push(p);
                }
            }
            for p in pats {
                writeln!(y, "      - {}", yaml_str(p)).unwrap();
            }
            if rng.percent(30) {
                y.push_str(
                    "    \"worker*\":\n      - \"bin/drain **\"\n      - \"bin/queue-stats\"\n",
                );
            }
            if rng.percent(20) {
                y.push_str("  deny:\n    command:\n      - \"rake db:drop **\"\n      - \"rails console **\"\n");
            }
        }
        files.insert(format!("roles/{name}.yaml"), y);
        names.push(name);
    }
    names
}

/// A grant scope in one of the shapes people write.
fn gen_scope(rng: &mut Rng) -> (String, String) {
    let app = app_name(rng.below(APPS));
    let digit = rng.range(1, 9);
    let (rack, app) = match rng.below(100) {
        0..=24 => ("staging".into(), "*".into()),
        25..=44 => ("production".into(), app),
        45..=54 => ("prod*".into(), format!("app-{digit}*")),
        55..=64 => ("production".into(), "*".into()),
        65..=74 => ("*".into(), app),
        75..=84 => ("staging".into(), format!("app-{digit}*")),
        85..=89 => ("prod-eu".into(), "*".into()),
        _ => ("prod*".into(), "*".into()),
    };
    (rack, app)
}

fn gen_grants(
    rng: &mut Rng,
    roles: &[String],
    y: &mut String,
    indent: &str,
    admin_ok: bool,
) -> Vec<(String, String)> {
    let mut scopes = Vec::new();
    writeln!(y, "{indent}grants:").unwrap();
    for _ in 0..rng.range(1, 4) {
        let role = if admin_ok && rng.percent(50) {
            &roles[0]
        } else {
            &roles[rng.range(1, roles.len() - 1)]
        };
        let (rack, app) = gen_scope(rng);
        writeln!(y, "{indent}  - role: {role}").unwrap();
        writeln!(
            y,
            "{indent}    scope: {}",
            yaml_str(&format!("{rack}/{app}"))
        )
        .unwrap();
        scopes.push((rack, app));
    }
    scopes
}

fn gen_identities(
    rng: &mut Rng,
    roles: &[String],
    files: &mut BTreeMap<String, String>,
) -> Vec<Identity> {
    let mut ids = Vec::new();
    let mut y = String::from("# Generated users.\nusers:\n");
    for i in 0..USERS {
        let email = format!("user{i:04}@example.com");
        writeln!(y, "  {email}:").unwrap();
        writeln!(y, "    name: User {i}").unwrap();
        let scopes = gen_grants(rng, roles, &mut y, "    ", i < 5);
        if rng.percent(5) {
            y.push_str("    deny:\n");
            writeln!(
                y,
                "      - {}",
                yaml_str(DANGEROUS[rng.below(DANGEROUS.len())])
            )
            .unwrap();
        }
        ids.push(Identity {
            kind: SubjectKind::User,
            name: email,
            scopes,
        });
    }
    files.insert("users.yaml".into(), y);

    let mut y = String::from("# Generated CI identities.\nci:\n");
    for i in 0..CI {
        let name = format!("deploy-bot-{i}");
        writeln!(y, "  {name}:").unwrap();
        writeln!(y, "    token_sha256: {:064x}", i + 1).unwrap();
        writeln!(y, "    expires: 2099-12-31").unwrap();
        let scopes = gen_grants(rng, roles, &mut y, "    ", false);
        ids.push(Identity {
            kind: SubjectKind::Ci,
            name,
            scopes,
        });
    }
    files.insert("ci.yaml".into(), y);
    ids
}

fn gateway_yaml() -> String {
    let mut y = String::from("listen: 127.0.0.1:8443\ndiscover_racks_from_env: false\nracks:\n");
    for r in RACKS {
        writeln!(y, "  {r}:").unwrap();
        writeln!(y, "    url: https://api.{r}.example.com").unwrap();
        writeln!(
            y,
            "    password_env: RACK_TOKEN_{}",
            r.to_ascii_uppercase().replace('-', "_")
        )
        .unwrap();
    }
    y.push_str("policy:\n  blocked:\n");
    for op in DEFAULT_BLOCKED {
        writeln!(y, "    - {}", yaml_str(op)).unwrap();
    }
    y
}

/// The environment the generated gateway.yaml needs (rack passwords).
fn env() -> Env {
    Env::from_pairs(RACKS.iter().map(|r| {
        (
            format!("RACK_TOKEN_{}", r.to_ascii_uppercase().replace('-', "_")),
            "secret".to_string(),
        )
    }))
}

/// A rack and app inside `scope`, found by sampling.
fn inside(rng: &mut Rng, scope: &(String, String)) -> (&'static str, String) {
    let rg = Glob::new(&scope.0);
    let ag = Glob::new(&scope.1);
    let racks: Vec<&'static str> = RACKS.iter().copied().filter(|r| rg.matches(r)).collect();
    let rack = *rng.pick(&racks);
    for _ in 0..200 {
        let app = app_name(rng.below(APPS));
        if ag.matches(&app) {
            return (rack, app);
        }
    }
    (rack, app_name(rng.below(APPS)))
}

fn seg(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A mix of REST reads, writes, runs with commands, websockets, blocked
/// operations, unknown identities and out-of-scope requests.
fn gen_requests(rng: &mut Rng, ids: &[Identity]) -> Vec<Request> {
    let mut out = Vec::with_capacity(REQUESTS);
    for n in 0..REQUESTS {
        let id = if rng.percent(8) {
            &ids[USERS + rng.below(CI)]
        } else {
            &ids[rng.below(USERS)]
        };
        let (rack, app) = if rng.percent(90) {
            let scope = rng.pick(&id.scopes);
            inside(rng, scope)
        } else {
            (*rng.pick(RACKS), app_name(rng.below(APPS)))
        };
        let (mut kind, mut identity) = (id.kind, id.name.clone());
        if rng.percent(3) {
            identity = format!("nobody{n}@example.com");
            kind = SubjectKind::User;
        } else if kind == SubjectKind::User && rng.percent(10) {
            // SSO may hand over any case; lookup is case-insensitive.
            identity = identity.to_ascii_uppercase();
        }
        let svc = *rng.pick(&["web", "worker-1", "command"]);
        let pid = format!("{svc}-{:x}", rng.next() & 0xffff_ffff);
        let mut command = None;
        let mut process = None;
        let mut websocket = false;
        let (method, path) = match rng.below(100) {
            0..=49 => {
                let p = match rng.below(14) {
                    0 => "/apps".to_string(),
                    1 => format!("/apps/{app}"),
                    2 => format!("/apps/{app}/processes"),
                    3 => format!("/apps/{app}/processes/{pid}"),
                    4 => format!("/apps/{app}/builds"),
                    5 => format!("/apps/{app}/builds/BABCDEF{n}"),
                    6 => format!("/apps/{app}/releases"),
                    7 => format!("/apps/{app}/releases/RABCDEF{n}"),
                    8 => format!("/apps/{app}/services"),
                    9 => "/system".to_string(),
                    10 => format!("/apps/{app}/resources"),
                    11 => format!("/apps/{app}/configs/env"),
                    12 => "/instances".to_string(),
                    _ => format!("/apps/{app}/cost"),
                };
                (Method::GET, p)
            }
            50..=64 => match rng.below(8) {
                0 => (Method::POST, format!("/apps/{app}/builds")),
                1 => (
                    Method::POST,
                    format!("/apps/{app}/releases/RABCDEF{n}/promote"),
                ),
                2 => (Method::POST, format!("/apps/{app}/services/{svc}/restart")),
                3 => (Method::PUT, format!("/apps/{app}/services/{svc}")),
                4 => (Method::DELETE, format!("/apps/{app}")),
                5 => (Method::POST, format!("/apps/{app}/releases")),
                6 => (Method::PUT, format!("/apps/{app}/configs/env")),
                _ => {
                    process = Some(Process {
                        service: svc.into(),
                        command: "sleep 3600".into(),
                    });
                    (Method::DELETE, format!("/apps/{app}/processes/{pid}"))
                }
            },
            65..=81 => {
                let svc = if rng.percent(80) { "command" } else { svc };
                command = Some(rng.pick(COMMANDS).to_string());
                (
                    Method::POST,
                    format!("/apps/{app}/services/{svc}/processes"),
                )
            }
            82..=91 => {
                websocket = true;
                if rng.percent(50) {
                    (Method::GET, format!("/apps/{app}/logs"))
                } else {
                    command = Some(rng.pick(COMMANDS).to_string());
                    let attached = rng.percent(50);
                    process = Some(Process {
                        service: if attached {
                            "command".into()
                        } else {
                            svc.into()
                        },
                        command: if attached {
                            "sleep 3600".into()
                        } else {
                            "bin/web".into()
                        },
                    });
                    (Method::GET, format!("/apps/{app}/processes/{pid}/exec"))
                }
            }
            _ => match rng.below(4) {
                0 => (Method::PUT, "/system".to_string()),
                1 => (Method::POST, "/system/jwt/token".to_string()),
                2 => (Method::GET, "/kubernetes/api/v1/secrets".to_string()),
                _ => (Method::POST, "/instances/keyroll".to_string()),
            },
        };
        out.push(Request {
            method,
            websocket,
            segments: seg(&path),
            rack,
            kind,
            identity,
            command,
            process,
        });
    }
    out
}

/// Policy test cases whose expectations are recorded from the engine on
/// the test-free repository: they measure what running 50 cases costs on
/// every load, not the engine's correctness (the unit tests do that).
fn gen_cases(policy: &Policy, requests: &[Request]) -> String {
    let mut y = String::from("# Generated policy tests.\ncases:\n");
    let (mut allows, mut denies) = (0, 0);
    for r in requests {
        if allows + denies == CASES {
            break;
        }
        let Some(m) = routes::match_route(&r.method, r.websocket, &r.segments) else {
            continue;
        };
        let Some(subject) = policy.subject(r.kind, &r.identity) else {
            continue;
        };
        let op = m.route.operation;
        // Policy tests describe the service of exec/stop by the process.
        let service = r
            .process
            .as_ref()
            .map(|p| p.service.as_str())
            .or(m.params.get("service"));
        let facts = Facts {
            rack: r.rack,
            operation: op,
            app: m.params.get("app"),
            service,
            command: r.command.as_deref(),
            command_shown: None,
            process: r.process.as_ref(),
            run_headers: &[],
            now: Some(0),
            auth: None,
        };
        let verdict = policy.decide(subject, &facts);
        let allow = verdict.is_allow();
        // Keep the mix balanced.
        if (allow && allows >= CASES / 2) || (!allow && denies >= CASES / 2) {
            continue;
        }
        if allow {
            allows += 1;
        } else {
            denies += 1;
        }
        let n = allows + denies;
        writeln!(y, "  - name: case {n}").unwrap();
        writeln!(y, "    identity: {}", r.identity).unwrap();
        writeln!(y, "    rack: {}", r.rack).unwrap();
        if let Some(a) = facts.app {
            writeln!(y, "    app: {a}").unwrap();
        }
        writeln!(y, "    operation: {}", yaml_str(op)).unwrap();
        if let Some(s) = service {
            writeln!(y, "    service: {s}").unwrap();
        }
        if let Some(c) = &r.command {
            writeln!(y, "    command: {}", yaml_str(c)).unwrap();
        }
        if let Some(p) = &r.process {
            writeln!(y, "    process_command: {}", yaml_str(&p.command)).unwrap();
        }
        writeln!(y, "    expect: {}", if allow { "allow" } else { "deny" }).unwrap();
        if n % 3 == 0 {
            let reason = verdict.reason();
            let cut = reason.find(" (").unwrap_or(reason.len());
            writeln!(y, "    reason_contains: {}", yaml_str(&reason[..cut])).unwrap();
        }
    }
    y
}

/// The generated repository, its compiled policy and the request set.
struct Fixture {
    files: BTreeMap<String, String>,
    policy: Policy,
    requests: Vec<Request>,
    summary: String,
}

fn source(files: &BTreeMap<String, String>) -> MemSource {
    MemSource {
        files: files.clone(),
        label: "bench:".into(),
        base: PathBuf::from("/nonexistent"),
    }
}

/// Builds the repository in memory: roles, users, CI identities,
/// gateway.yaml, and policy tests recorded from a first, test-free load.
fn generate() -> Fixture {
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    let mut files = BTreeMap::new();
    files.insert("gateway.yaml".to_string(), gateway_yaml());
    let roles = gen_roles(&mut rng, &mut files);
    let ids = gen_identities(&mut rng, &roles, &mut files);
    let requests = gen_requests(&mut rng, &ids);

    let env = env();
    let first = config::load(&source(&files), &env)
        .unwrap_or_else(|e| panic!("generated repository does not load:\n{e}"));
    files.insert(
        "tests/generated.yaml".into(),
        gen_cases(&first.policy, &requests),
    );
    let cfg = config::load(&source(&files), &env)
        .unwrap_or_else(|e| panic!("generated repository with tests does not load:\n{e}"));
    assert_eq!(cfg.policy.users.len(), USERS);
    assert_eq!(cfg.policy.roles.len(), ROLES);
    assert_eq!(cfg.policy_cases, CASES);

    let policy = cfg.policy;
    let (mut allow, mut deny, mut unrouted, mut unknown) = (0, 0, 0, 0);
    for r in &requests {
        match decide_request(&policy, r) {
            Some(v) if v.is_allow() => allow += 1,
            Some(_) => deny += 1,
            None if routes::match_route(&r.method, r.websocket, &r.segments).is_none() => {
                unrouted += 1
            }
            None => unknown += 1,
        }
    }
    let bytes: usize = files.values().map(String::len).sum();
    let summary = format!(
        "generated: {} files, {} KiB; {USERS} users, {CI} CI, {ROLES} roles, {APPS} apps, {} racks, {CASES} policy tests\n\
         requests: {} ({allow} allowed, {deny} denied, {unknown} unknown identity, {unrouted} unrouted)",
        files.len(),
        bytes / 1024,
        RACKS.len(),
        requests.len(),
    );
    Fixture {
        files,
        policy,
        requests,
        summary,
    }
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(generate);

// ---------------------------------------------------------------------------
// Benchmarks

/// What the gateway does per request once it is canonicalized and
/// authenticated: route, look the subject up, decide, and decide again
/// with the process when the engine asks (the rack lookup itself is not
/// timed). `None` for an unknown route or identity, which the gateway
/// refuses before the engine.
fn decide_request(policy: &Policy, r: &Request) -> Option<Verdict> {
    let m = routes::match_route(&r.method, r.websocket, &r.segments)?;
    let subject = policy.subject(r.kind, &r.identity)?;
    let mut facts = Facts {
        rack: r.rack,
        operation: m.route.operation,
        app: m.params.get("app"),
        service: m.params.get("service"),
        command: r.command.as_deref(),
        command_shown: None,
        process: None,
        run_headers: &[],
        now: Some(0),
        auth: None,
    };
    let verdict = policy.decide(subject, &facts);
    if verdict != Verdict::NeedProcess {
        return Some(verdict);
    }
    facts.process = r.process.as_ref();
    Some(policy.decide(subject, &facts))
}

/// The full per-request decision path. Each sample is one pass over all
/// requests, so the figure is the mean cost per decision over the mix;
/// the verdict is dropped inside the timing, as the gateway drops it.
#[divan::bench(sample_size = REQUESTS as u32)]
fn decision(bencher: Bencher) {
    let fx = &*FIXTURE;
    let mut i = 0;
    bencher.bench_local(|| {
        let r = &fx.requests[i];
        i = (i + 1) % fx.requests.len();
        black_box(decide_request(&fx.policy, black_box(r)));
    });
}

/// The same path one request per sample, ten times over the set: the
/// spread across requests (median request, slowest request), timer
/// overhead included.
#[divan::bench(sample_size = 1, sample_count = 10 * REQUESTS as u32)]
fn decision_per_request(bencher: Bencher) {
    let fx = &*FIXTURE;
    let mut i = 0;
    bencher.bench_local(|| {
        let r = &fx.requests[i];
        i = (i + 1) % fx.requests.len();
        black_box(decide_request(&fx.policy, black_box(r)));
    });
}

/// `Policy::decide` alone, with route and subject resolved beforehand and
/// the process known up front (one engine call per request).
#[divan::bench(sample_size = REQUESTS as u32)]
fn decide_only(bencher: Bencher) {
    let fx = &*FIXTURE;
    let resolved: Vec<_> = fx
        .requests
        .iter()
        .filter_map(|r| {
            let m = routes::match_route(&r.method, r.websocket, &r.segments)?;
            let s = fx.policy.subject(r.kind, &r.identity)?;
            Some((r, m, s))
        })
        .collect();
    let cases: Vec<_> = resolved
        .iter()
        .map(|(r, m, s)| {
            let facts = Facts {
                rack: r.rack,
                operation: m.route.operation,
                app: m.params.get("app"),
                service: m.params.get("service"),
                command: r.command.as_deref(),
                command_shown: None,
                process: r.process.as_ref(),
                run_headers: &[],
                now: Some(0),
                auth: None,
            };
            (*s, facts)
        })
        .collect();
    let mut i = 0;
    bencher.bench_local(|| {
        let (s, f) = &cases[i];
        i = (i + 1) % cases.len();
        black_box(fx.policy.decide(s, black_box(f)));
    });
}

/// `routes::match_route` alone on pre-split segments.
#[divan::bench(sample_size = REQUESTS as u32)]
fn route_only(bencher: Bencher) {
    let fx = &*FIXTURE;
    let mut i = 0;
    bencher.bench_local(|| {
        let r = &fx.requests[i];
        i = (i + 1) % fx.requests.len();
        black_box(routes::match_route(
            &r.method,
            r.websocket,
            black_box(&r.segments),
        ));
    });
}

/// A typical CLI request head: `convox ps` through the gateway.
#[divan::bench(sample_size = 1_000)]
fn canonicalize(bencher: Bencher) {
    let parts = http::Request::builder()
        .method(Method::GET)
        .uri("/racks/staging/apps/myapp/processes?")
        .header("host", "gateway.example.com")
        .header("accept", "*/*")
        .header("accept-encoding", "gzip")
        .header("authorization", "Basic Y29udm94OnRva2Vu")
        .header("user-agent", "convox.go/3.18.11")
        .header("version", "3.18.11")
        .header("content-type", "application/octet-stream")
        .body(())
        .expect("valid request")
        .into_parts()
        .0;
    bencher.bench_local(|| {
        black_box(canon::canonicalize(black_box(&parts)).expect("a valid request head"));
    });
}

/// `config::load` of the generated repository from memory: YAML parsing,
/// validation, policy compilation and the 50 policy tests. The loaded
/// config is dropped outside the timing: on reload the gateway drops the
/// old one after the swap, off the load path.
#[divan::bench(sample_count = 30)]
fn load_and_validate(bencher: Bencher) {
    let fx = &*FIXTURE;
    let src = source(&fx.files);
    let env = env();
    bencher.bench_local(|| config::load(black_box(&src), &env).expect("loads"));
}

/// Fetches the generated repository as a new version every time, so each
/// reload runs the whole pipeline.
struct Versions {
    files: BTreeMap<String, String>,
    n: std::sync::atomic::AtomicU64,
}

impl rack_gateway::reload::Fetch for Versions {
    fn fetch(
        &self,
        _current: Option<&str>,
    ) -> Result<Option<rack_gateway::reload::Fetched>, rack_gateway::reload::FetchError> {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(rack_gateway::reload::Fetched {
            version: format!("v{n}"),
            files: source(&self.files),
            summary: None,
            signature: "bench".into(),
        }))
    }

    fn describe(&self) -> String {
        "bench".into()
    }
}

/// One hot reload of the 1,000-user repository as the gateway does it:
/// load and validate (policy tests included, on a blocking thread), build
/// the runtime (rack clients, token keys), swap it in. Compare with
/// `load_and_validate`: the difference is the reload's own overhead.
#[divan::bench(sample_count = 30)]
fn reload(bencher: Bencher) {
    let fx = &*FIXTURE;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let gateway =
        rt.block_on(async { rack_gateway::gateway::Gateway::new(None, Default::default()) });
    let fetch = std::sync::Arc::new(Versions {
        files: fx.files.clone(),
        n: Default::default(),
    });
    let mut reloader = rack_gateway::reload::Reloader::new(
        gateway,
        fetch,
        env(),
        std::time::Duration::from_secs(3600),
    );
    bencher.bench_local(|| {
        let outcome = rt.block_on(reloader.reload_once(false));
        assert!(
            matches!(outcome, rack_gateway::reload::Outcome::Swapped(_)),
            "{outcome:?}"
        );
    });
}

/// `rack-gateway diff` of the generated repository against a one-role
/// edit of itself (the first role, in file order, whose edit changes
/// someone's access gains one operation): the semantic comparison of
/// every identity's effective access, both configs already loaded (add
/// two `load_and_validate` for the command's wall time).
#[divan::bench(sample_count = 10)]
fn diff_one_role_edit(bencher: Bencher) {
    let fx = &*FIXTURE;
    let env = env();
    let old = config::load(&source(&fx.files), &env).expect("loads");
    let edit = fx
        .files
        .iter()
        .filter(|(k, v)| k.starts_with("roles/") && v.contains("\nallow:\n"))
        .flat_map(|(k, v)| {
            ["releases promote", "builds create", "logs"]
                .into_iter()
                .map(move |op| {
                    (
                        k,
                        v.replacen("\nallow:\n", &format!("\nallow:\n  - {op}\n"), 1),
                    )
                })
        })
        .find_map(|(name, text)| {
            let mut files = fx.files.clone();
            files.insert(name.clone(), text);
            let new = config::load(&source(&files), &env).ok()?;
            let d = rack_gateway::policy::diff::diff(&old, &new, rack_gateway::clock::unix_now());
            (!d.is_empty()).then(|| (name.clone(), new, d.summary()))
        });
    let (name, new, summary) = edit.expect("a role edit that changes access");
    eprintln!("diff benchmark edits {name}: {summary}");
    bencher.bench_local(|| {
        black_box(rack_gateway::policy::diff::diff(
            black_box(&old),
            black_box(&new),
            rack_gateway::clock::unix_now(),
        ))
    });
}
