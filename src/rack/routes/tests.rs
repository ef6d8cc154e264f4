use super::*;
use http::Method;

const CANONICAL_PARAMS: &[&str] = &[
    "app",
    "service",
    "pid",
    "build",
    "release",
    "resource",
    "key",
    "config",
    "instance",
    "certificate",
    "registry",
    "host",
    "port",
    "path",
];

/// A realistic value for a parameter; catch-alls get several segments.
fn sample(name: &str) -> &'static str {
    match name {
        "app" => "myapp",
        "service" => "web",
        "pid" => "web-5c8f7-abcde",
        "build" => "BABCDEFGHIJ",
        "release" => "RABCDEFGHIJ",
        "resource" => "db",
        "key" => "tmp/0a1b2c3d/source.tgz",
        "config" => "cli-env-mask",
        "instance" => "i-0123456789",
        "certificate" => "cert-1234",
        "registry" => "registry.example.com/team/images",
        "host" => "db.myapp.svc.cluster.local",
        "port" => "5432",
        "path" => "api/v1/namespaces",
        other => panic!("no sample for {other}"),
    }
}

/// The path segments of a request for `route`, and the params it
/// should yield.
fn sample_request(route: &'static Route) -> (Vec<String>, Vec<(&'static str, String)>) {
    let mut segments = Vec::new();
    let mut params = Vec::new();
    for seg in Pattern::parse(route).segments {
        match seg {
            Segment::Literal(lit) => segments.push(lit.to_owned()),
            Segment::Param(name) => {
                segments.push(sample(name).to_owned());
                params.push((name, sample(name).to_owned()));
            }
            Segment::Suffixed { name, suffix } => {
                segments.push(format!("{}{suffix}", sample(name)));
                params.push((name, sample(name).to_owned()));
            }
            Segment::Rest(name) => {
                segments.extend(sample(name).split('/').map(str::to_owned));
                params.push((name, sample(name).to_owned()));
            }
        }
    }
    (segments, params)
}

/// The ways a route can be requested: (method, websocket).
fn sample_methods(method: RouteMethod) -> Vec<(Method, bool)> {
    match method {
        RouteMethod::Get => vec![(Method::GET, false)],
        RouteMethod::Post => vec![(Method::POST, false)],
        RouteMethod::Put => vec![(Method::PUT, false)],
        RouteMethod::Delete => vec![(Method::DELETE, false)],
        RouteMethod::Head => vec![(Method::HEAD, false)],
        RouteMethod::Options => vec![(Method::OPTIONS, false)],
        RouteMethod::Socket => vec![(Method::GET, true)],
        RouteMethod::Any => vec![
            (Method::GET, false),
            (Method::GET, true),
            (Method::POST, false),
            (Method::PUT, false),
            (Method::PATCH, false),
            (Method::DELETE, false),
            (Method::HEAD, false),
            (Method::OPTIONS, false),
        ],
    }
}

fn path(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn op(method: Method, websocket: bool, p: &str) -> Option<&'static str> {
    match_route(&method, websocket, &path(p)).map(|m| m.route.operation)
}

#[test]
fn every_route_matches_its_own_sample_with_params() {
    for route in ROUTES {
        let (segments, expected) = sample_request(route);
        for (method, ws) in sample_methods(route.method) {
            let m = match_route(&method, ws, &segments)
                .unwrap_or_else(|| panic!("{} {} did not match", method, route.pattern));
            assert!(
                std::ptr::eq(m.route, route),
                "{method} {} matched {}",
                route.pattern,
                m.route.pattern
            );
            let got: Vec<(&str, String)> =
                m.params.iter().map(|(n, v)| (n, v.to_owned())).collect();
            assert_eq!(got, expected, "{}", route.pattern);
        }
    }
}

#[test]
fn no_two_routes_are_ambiguous() {
    // The only intended overlap: the rack registers the export route
    // before the build route, so a `.tgz` suffix means export.
    let allowed = [(
        "/apps/{app}/builds/{build}.tgz",
        "/apps/{app}/builds/{build}",
    )];
    let patterns: Vec<Pattern> = ROUTES.iter().map(Pattern::parse).collect();
    for route in ROUTES {
        let (segments, _) = sample_request(route);
        for (method, ws) in sample_methods(route.method) {
            let others: Vec<&str> = patterns
                .iter()
                .filter(|p| {
                    !std::ptr::eq(p.route, route)
                        && p.method.accepts(RouteMethod::of_request(&method, ws))
                        && p.matches(&segments)
                })
                .map(|p| p.route.pattern)
                .collect();
            for other in others {
                assert!(
                    allowed.contains(&(route.pattern, other)),
                    "{method} {} also matches {other}",
                    route.pattern
                );
                let own = ROUTES.iter().position(|r| std::ptr::eq(r, route));
                let theirs = ROUTES.iter().position(|r| r.pattern == other);
                assert!(own < theirs, "{} must come before {other}", route.pattern);
            }
        }
    }
}

#[test]
fn patterns_are_well_formed() {
    for route in ROUTES {
        assert!(route.pattern.starts_with('/'), "{}", route.pattern);
        assert!(!route.pattern.ends_with('/'), "{}", route.pattern);
        assert!(!route.pattern.contains("//"), "{}", route.pattern);
        let pattern = Pattern::parse(route);
        assert!(
            matches!(pattern.segments.first(), Some(Segment::Literal(_))),
            "{} must start with a literal to be indexed",
            route.pattern
        );
        let last = pattern.segments.len() - 1;
        for (i, seg) in pattern.segments.iter().enumerate() {
            let name = match seg {
                Segment::Literal(lit) => {
                    assert!(!lit.contains(['{', '}', '*']), "{}", route.pattern);
                    continue;
                }
                Segment::Param(name) => name,
                Segment::Suffixed { name, suffix } => {
                    assert_eq!(*suffix, ".tgz", "{}", route.pattern);
                    name
                }
                Segment::Rest(name) => {
                    assert_eq!(i, last, "catch-all not last in {}", route.pattern);
                    name
                }
            };
            assert!(
                CANONICAL_PARAMS.contains(name),
                "non-canonical param {name} in {}",
                route.pattern
            );
        }
        if matches!(
            route.stream,
            Stream::WsOut | Stream::WsBidi | Stream::WsExit
        ) {
            assert_eq!(route.method, RouteMethod::Socket, "{}", route.pattern);
        }
        if route.method == RouteMethod::Socket {
            assert!(
                matches!(
                    route.stream,
                    Stream::WsOut | Stream::WsBidi | Stream::WsExit
                ),
                "{}",
                route.pattern
            );
        }
        assert_eq!(
            route.method == RouteMethod::Any,
            route.stream == Stream::ReverseProxy,
            "{}",
            route.pattern
        );
        assert!(!route.commands.is_empty(), "{}", route.pattern);
    }
}

#[test]
fn table_covers_the_rack_routes_and_extras() {
    // 101 rack routes (convox-api.md §2.1–2.5) plus bare /kubernetes,
    // /kubernetes/*, bare /v2 and the two probes.
    assert_eq!(ROUTES.len(), 106);
}

#[test]
fn tgz_suffix_means_export() {
    let m = match_route(&Method::GET, false, &path("/apps/a/builds/B1.tgz")).unwrap();
    assert_eq!(m.route.operation, "builds export");
    assert_eq!(m.params.get("build"), Some("B1"));
    assert_eq!(m.params.get("app"), Some("a"));

    let m = match_route(&Method::GET, false, &path("/apps/a/builds/B1")).unwrap();
    assert_eq!(m.route.operation, "builds info");
    assert_eq!(m.params.get("build"), Some("B1"));

    // Like mux's `[^/]+\.tgz`: the stem must be non-empty.
    let m = match_route(&Method::GET, false, &path("/apps/a/builds/.tgz")).unwrap();
    assert_eq!(m.route.operation, "builds info");
    assert_eq!(m.params.get("build"), Some(".tgz"));

    // Only the last suffix is stripped, as the greedy mux regexp does.
    let m = match_route(&Method::GET, false, &path("/apps/a/builds/x.tgz.tgz")).unwrap();
    assert_eq!(m.params.get("build"), Some("x.tgz"));

    // PUT has no export variant.
    let m = match_route(&Method::PUT, false, &path("/apps/a/builds/B1.tgz")).unwrap();
    assert_eq!(m.route.operation, "builds update");
    assert_eq!(m.params.get("build"), Some("B1.tgz"));
}

#[test]
fn socket_routes_need_the_upgrade() {
    assert_eq!(
        op(Method::GET, true, "/apps/a/processes/p-1/exec"),
        Some("exec")
    );
    assert_eq!(op(Method::GET, false, "/apps/a/processes/p-1/exec"), None);
    assert_eq!(op(Method::POST, false, "/apps/a/processes/p-1/exec"), None);
    assert_eq!(op(Method::GET, true, "/apps/a/logs"), Some("logs"));
    assert_eq!(op(Method::GET, false, "/apps/a/logs"), None);
    assert_eq!(op(Method::GET, false, "/system/logs"), None);
    assert_eq!(op(Method::GET, true, "/proxy/h/5432"), Some("proxy"));
    assert_eq!(op(Method::GET, false, "/proxy/h/5432"), None);
}

#[test]
fn upgrades_never_match_rest_routes() {
    assert_eq!(op(Method::GET, true, "/apps"), None);
    assert_eq!(op(Method::GET, true, "/apps/a/releases/R1"), None);
    assert_eq!(op(Method::GET, true, "/apps/a/processes/p-1"), None);
    assert_eq!(op(Method::GET, true, "/machines"), None);
    // The reverse proxies upgrade (kubectl exec, for one).
    assert_eq!(
        op(
            Method::GET,
            true,
            "/kubernetes/api/v1/namespaces/x/pods/p/exec"
        ),
        Some("kubernetes")
    );
    assert_eq!(op(Method::GET, true, "/v2/"), Some("registry proxy"));
    assert_eq!(
        op(Method::GET, true, "/custom/http/proxy/x"),
        Some("proxy http")
    );
}

#[test]
fn registry_server_may_span_segments() {
    let m = match_route(
        &Method::DELETE,
        false,
        &path("/registries/index.docker.io/v1"),
    )
    .unwrap();
    assert_eq!(m.route.operation, "registries remove");
    assert_eq!(m.params.get("registry"), Some("index.docker.io/v1"));

    let m = match_route(&Method::DELETE, false, &path("/registries/quay.io")).unwrap();
    assert_eq!(m.params.get("registry"), Some("quay.io"));

    assert_eq!(op(Method::DELETE, false, "/registries"), None);
}

#[test]
fn object_keys_may_span_segments() {
    let m = match_route(
        &Method::POST,
        false,
        &path("/apps/a/objects/tmp/0123abcd/src.tgz"),
    )
    .unwrap();
    assert_eq!(m.route.operation, "objects store");
    assert_eq!(m.params.get("app"), Some("a"));
    assert_eq!(m.params.get("key"), Some("tmp/0123abcd/src.tgz"));

    assert_eq!(
        op(Method::HEAD, false, "/apps/a/objects/k"),
        Some("objects exists")
    );
    assert_eq!(
        op(Method::GET, false, "/apps/a/objects/x/y"),
        Some("objects fetch")
    );
    assert_eq!(op(Method::GET, false, "/apps/a/objects"), Some("objects"));
    assert_eq!(op(Method::PUT, false, "/apps/a/objects/k"), None);
}

#[test]
fn proxy_paths_and_params() {
    let m = match_route(&Method::PATCH, false, &path("/kubernetes/apis/x/y")).unwrap();
    assert_eq!(m.route.operation, "kubernetes");
    assert_eq!(m.params.get("path"), Some("apis/x/y"));
    let m = match_route(&Method::GET, false, &path("/kubernetes")).unwrap();
    assert_eq!(m.route.operation, "kubernetes");
    assert_eq!(m.params.get("path"), None);
    assert_eq!(
        op(Method::PUT, false, "/v2/org/repo/blobs/uploads/u1"),
        Some("registry proxy")
    );
    assert_eq!(op(Method::GET, false, "/v2"), Some("registry proxy"));
    // The rack only serves `/custom/http/proxy/…`.
    assert_eq!(op(Method::GET, false, "/custom/http/proxy"), None);

    let m = match_route(&Method::GET, true, &path("/proxy/db.svc/5432")).unwrap();
    assert_eq!(m.params.get("host"), Some("db.svc"));
    assert_eq!(m.params.get("port"), Some("5432"));
}

#[test]
fn renamed_params_are_canonical() {
    let m = match_route(&Method::DELETE, false, &path("/apps/a")).unwrap();
    assert_eq!(m.params.iter().collect::<Vec<_>>(), vec![("app", "a")]);
    let m = match_route(&Method::DELETE, false, &path("/resources/db/links/a")).unwrap();
    assert_eq!(
        m.params.iter().collect::<Vec<_>>(),
        vec![("resource", "db"), ("app", "a")]
    );
    let m = match_route(&Method::PUT, false, &path("/apps/a/ssl/web/443")).unwrap();
    assert_eq!(
        m.params.iter().collect::<Vec<_>>(),
        vec![("app", "a"), ("service", "web"), ("port", "443")]
    );
}

#[test]
fn unknown_paths_do_not_match() {
    for p in [
        "/",
        "/apps/x/unknown",
        "/appsx",
        "/system/jwt",
        "/system/jwt/token/extra",
        "/apps/x/processes/p/exec/more",
        "/organizations/acme",
        "/racks/acme/apps",
        "/apps/x/environment",
        "/Apps",
    ] {
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            assert_eq!(op(method.clone(), false, p), None, "{method} {p}");
        }
        assert_eq!(op(Method::GET, true, p), None, "SOCKET {p}");
    }
}

#[test]
fn methods_not_in_the_table_do_not_match() {
    assert_eq!(op(Method::PATCH, false, "/apps"), None);
    assert_eq!(op(Method::HEAD, false, "/apps"), None);
    assert_eq!(op(Method::OPTIONS, false, "/apps"), None);
    assert_eq!(op(Method::HEAD, false, "/system"), None);
    assert_eq!(op(Method::DELETE, false, "/system"), None);
    assert_eq!(op(Method::POST, false, "/apps/a/processes/p"), None);
    let trace = Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(op(trace, false, "/apps"), None);
    assert_eq!(
        op(Method::OPTIONS, false, "/resources"),
        Some("rack resources types")
    );
}

#[test]
fn operations_are_exactly_the_documented_names() {
    let mut expected = vec![
        "login",
        "apps",
        "apps create",
        "apps info",
        "apps update",
        "apps delete",
        "apps cancel",
        "apps diagnose",
        "logs",
        "apps manifest",
        "apps metrics",
        "budget show",
        "budget set",
        "budget clear",
        "budget reset",
        "budget simulate-shutdown",
        "budget dismiss-recovery",
        "cost",
        "balancers",
        "configs",
        "configs get",
        "configs set",
        "build",
        "builds export",
        "builds info",
        "builds import",
        "builds import-image",
        "builds",
        "builds logs",
        "builds update",
        "objects delete",
        "objects exists",
        "objects fetch",
        "objects",
        "objects store",
        "releases create",
        "releases info",
        "releases",
        "releases promote",
        "run",
        "ps info",
        "ps",
        "ps stop",
        "exec",
        "files delete",
        "files download",
        "files upload",
        "proxy",
        "proxy http",
        "resources console",
        "resources export",
        "resources info",
        "resources import",
        "resources",
        "services",
        "services metrics",
        "restart",
        "services scale-override",
        "services triggers disable",
        "services triggers enable",
        "services triggers threshold-set",
        "scale",
        "ssl update",
        "certs import",
        "certs delete",
        "certs renew",
        "certs generate",
        "certs",
        "letsencrypt config",
        "letsencrypt config set",
        "events send",
        "rack capacity",
        "instances keyroll",
        "instances",
        "instances ssh",
        "instances terminate",
        "registries add",
        "registries",
        "registries remove",
        "registry proxy",
        "rack",
        "rack update",
        "rack logs",
        "rack metrics",
        "rack access key rotate",
        "rack access",
        "rack ps",
        "rack releases",
        "rack karpenter cleanup",
        "rack resources create",
        "rack resources delete",
        "rack resources info",
        "rack resources link",
        "rack resources",
        "rack resources types",
        "rack resources unlink",
        "rack resources update",
        "kubernetes",
        "probe",
    ];
    expected.sort_unstable();
    let ops = operations();
    assert!(ops.windows(2).all(|w| w[0] < w[1]), "sorted and deduped");
    assert_eq!(ops, expected);
}

#[test]
fn markdown_table_has_one_row_per_route() {
    let table = markdown_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "| Method | Path | Operation | Stream | CLI commands | Notes |"
    );
    assert_eq!(lines[1], "|---|---|---|---|---|---|");
    assert_eq!(lines.len(), ROUTES.len() + 2);
    for (line, route) in lines[2..].iter().zip(ROUTES) {
        assert!(line.starts_with(&format!(
            "| {} | `{}` |",
            route.method.as_str(),
            route.pattern
        )));
        // Six cells: seven unescaped pipes.
        let pipes = line.replace("\\|", "").matches('|').count();
        assert_eq!(pipes, 7, "{line}");
        assert!(!line.contains('\n'));
    }
    assert!(table.contains(
        "| SOCKET | `/apps/{app}/processes/{pid}/exec` | `exec` | WS bidi + exit code |"
    ));
}
