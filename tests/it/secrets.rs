//! Secrets and side doors through the real server: masked reads for
//! identities without `secrets read`, the env round-trip of `convox env
//! set/unset` (placeholders kept, protected keys, per-role key patterns),
//! the build side doors, and no secret value in responses or logs.

use std::time::Duration;

use rack_gateway::dev::mock_rack::{Recorded, MOCK_PRIVATE_KEY};
use rack_gateway::rack::form::parse_form;

use crate::support::*;

/// Secret values the mock rack holds for `myapp` (release env, resource
/// URL) and the rack password.
const SECRETS: &[&str] = &[
    "s3cr3t",
    "dbsecret",
    "dbpass",
    RACK_PASSWORD,
    "mock-private-key-material",
];

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Roles added to the shipped ones.
const ROLES: &[(&str, &str)] = &[
    ("featurer", "inherits: [deployer]\nenv_keys: [FEATURE_*]\n"),
    (
        "keeper",
        "inherits: [deployer]\npermissions: [env protected]\n",
    ),
    (
        "external",
        "inherits: [deployer]\npermissions: [builds external]\n",
    ),
    ("reader", "allow: [resources info, instances keyroll]\n"),
];

const GATEWAY_POLICY: &str = "policy:\n  protected_env:\n    \"staging/myapp\": [DATABASE_URL]\n  exceptions:\n    - {role: reader, operations: [instances keyroll]}\n    - {role: admin, operations: [instances keyroll]}\n";

const ROLE_NAMES: &[&str] = &[
    "viewer", "deployer", "ops", "admin", "featurer", "keeper", "external", "reader",
];

/// The one-rack fixture with an identity per role in [`ROLE_NAMES`], and
/// what the rack received.
struct Setup(Staging);

impl std::ops::Deref for Setup {
    type Target = Staging;
    fn deref(&self) -> &Staging {
        &self.0
    }
}

impl Setup {
    async fn start() -> Setup {
        Setup(Staging::per_role(ROLE_NAMES, ROLES, GATEWAY_POLICY).await)
    }

    /// Requests the rack received whose path starts with `prefix`.
    fn received(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        self.rack
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.target.starts_with(prefix))
            .collect()
    }

    /// The `env` the rack received on the last release creation.
    fn forwarded_env(&self) -> String {
        let posts = self.received("POST", "/apps/myapp/releases");
        let last = posts.last().expect("a release creation reached the rack");
        let form = parse_form(std::str::from_utf8(&last.body).unwrap());
        form.iter()
            .find(|(k, _)| k == "env")
            .map(|(_, v)| v.clone())
            .expect("an env field was forwarded")
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s:?}: {text}");
    }
}

#[tokio::test]
async fn releases_are_masked_without_secrets_read() {
    let s = Setup::start().await;
    for role in ["viewer", "deployer"] {
        for path in [
            "/apps/myapp/releases/RMYAPPRELAB",
            "/apps/myapp/releases?limit=10",
        ] {
            let r = s.get(role, path).await;
            assert_eq!(r.status, 200, "{role} {path}: {}", r.text());
            let text = r.text();
            assert!(
                text.contains(r"DATABASE_URL=******\nSECRET_KEY=******\nFEATURE_X=******"),
                "{role} {path}: {text}"
            );
            assert_no_secret(&format!("{role} {path}"), &text);
            assert_eq!(
                r.headers["content-length"].to_str().unwrap(),
                r.body.len().to_string()
            );
        }
    }
    let r = s.get("admin", "/apps/myapp/releases/RMYAPPRELAB").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("SECRET_KEY=s3cr3t"), "{}", r.text());
}

#[tokio::test]
async fn resources_and_keyroll_are_masked_without_secrets_read() {
    let s = Setup::start().await;
    let r = s.get("viewer", "/apps/myapp/resources").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()[0]["url"],
        "postgres://app:******@db.myapp.mock:5432/app"
    );
    assert_no_secret("viewer resources", &r.text());

    let r = s.get("reader", "/apps/myapp/resources/db").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["url"],
        "postgres://app:******@db.myapp.mock:5432/app"
    );
    let r = s.get("admin", "/apps/myapp/resources/db").await;
    assert_eq!(
        r.json()["url"],
        "postgres://app:dbpass@db.myapp.mock:5432/app"
    );

    let r = send(
        "POST",
        &s.url("/instances/keyroll"),
        Some(&role_token("reader")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["private-key"], "******");
    assert_eq!(r.json()["name"], "convox-keyroll");
    let r = send(
        "POST",
        &s.url("/instances/keyroll"),
        Some(&role_token("admin")),
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["private-key"], MOCK_PRIVATE_KEY);
}

#[tokio::test]
async fn external_builds_need_permission_and_never_show_the_rack_password() {
    let s = Setup::start().await;
    let r = s
        .post_form("deployer", "/apps/myapp/builds", &[("external", "true")])
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("`builds external` permission"),
        "{}",
        r.text()
    );
    let r = send(
        "POST",
        &s.url("/apps/myapp/builds?external=1"),
        Some(&role_token("deployer")),
        &[FORM],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "query: {}", r.text());
    assert!(s.received("POST", "/apps/myapp/builds").is_empty());

    for role in ["external", "admin"] {
        let r = s
            .post_form(role, "/apps/myapp/builds", &[("external", "true")])
            .await;
        assert_eq!(r.status, 200, "{role}: {}", r.text());
        assert_eq!(
            r.json()["repository"],
            "https://convox:******@api.mock/myapp"
        );
        assert_no_secret(role, &r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        let r = s.get(role, &format!("/apps/myapp/builds/{id}")).await;
        assert_no_secret("build info", &r.text());
        let r = s.get(role, "/apps/myapp/builds").await;
        assert_no_secret("build list", &r.text());
    }
}

#[tokio::test]
async fn placeholders_keep_values_and_unset_removes() {
    let s = Setup::start().await;
    // `convox env set FEATURE_X=2` after a masked read.
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[("env", "DATABASE_URL=******\nFEATURE_X=2\nSECRET_KEY=******")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_secret("release create response", &r.text());
    assert_eq!(
        s.forwarded_env(),
        "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nFEATURE_X=2\nSECRET_KEY=s3cr3t"
    );
    // Placeholders and the diff come from the active release.
    let app_reads = s.received("GET", "/apps/myapp");
    assert!(
        app_reads.iter().any(|r| r.target == "/apps/myapp"),
        "{app_reads:?}"
    );

    // `convox env unset SECRET_KEY`.
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[("env", "DATABASE_URL=******\nFEATURE_X=******")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.forwarded_env(),
        "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nFEATURE_X=2"
    );

    // `--release`: the placeholders come from the named parent.
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[
                ("env", "DATABASE_URL=******\nSECRET_KEY=******"),
                ("parent-release", "RMYAPPRELAA"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        s.forwarded_env(),
        "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nSECRET_KEY=s3cr3t"
    );
    let last = s.received("POST", "/apps/myapp/releases").pop().unwrap();
    assert_eq!(
        last.header("content-length").unwrap(),
        last.body.len().to_string()
    );

    // A placeholder for a key the parent lacks is refused.
    let before = s.received("POST", "/apps/myapp/releases").len();
    let r = s
        .post_form("deployer", "/apps/myapp/releases", &[("env", "NEW=******")])
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // env in the query string (the rack reads it there too) is refused.
    let r = send(
        "POST",
        &s.url("/apps/myapp/releases?env=SECRET_KEY%3Dx"),
        Some(&role_token("deployer")),
        &[FORM],
        "",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("form body"), "{}", r.text());
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before);
}

#[tokio::test]
async fn protected_keys_are_kept_unless_permitted() {
    let s = Setup::start().await;
    // Removing a protected key without permission keeps it.
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[("env", "FEATURE_X=******\nSECRET_KEY=******")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        s.forwarded_env()
            .contains("DATABASE_URL=postgres://u:dbsecret@db:5432/x"),
        "{}",
        s.forwarded_env()
    );
    // Changing it is refused, and nothing is forwarded.
    let before = s.received("POST", "/apps/myapp/releases").len();
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[(
                "env",
                "DATABASE_URL=postgres://evil\nFEATURE_X=******\nSECRET_KEY=******",
            )],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("DATABASE_URL is protected"),
        "{}",
        r.text()
    );
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before);

    // keeper has `env protected`: change, then remove.
    let r = s
        .post_form(
            "keeper",
            "/apps/myapp/releases",
            &[(
                "env",
                "DATABASE_URL=postgres://new\nFEATURE_X=******\nSECRET_KEY=******",
            )],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(s
        .forwarded_env()
        .starts_with("DATABASE_URL=postgres://new\n"));
    let r = s
        .post_form(
            "keeper",
            "/apps/myapp/releases",
            &[("env", "FEATURE_X=******\nSECRET_KEY=******")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!s.forwarded_env().contains("DATABASE_URL"));

    // Other apps have no protected keys.
    let r = s
        .post_form(
            "deployer",
            "/apps/billing/releases",
            &[("env", "FEATURE_X=******\nSTRIPE_KEY=******")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn env_key_patterns_limit_what_a_role_changes() {
    let s = Setup::start().await;
    let r = s
        .post_form(
            "featurer",
            "/apps/myapp/releases",
            &[(
                "env",
                "DATABASE_URL=******\nFEATURE_X=0\nFEATURE_Y=1\nSECRET_KEY=******",
            )],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(s.forwarded_env().contains("FEATURE_Y=1"));
    let before = s.received("POST", "/apps/myapp/releases").len();
    for env in [
        "DATABASE_URL=******\nFEATURE_X=0\nSECRET_KEY=other",
        "DATABASE_URL=******\nFEATURE_X=0\nFEATURE_Y=1",
    ] {
        let r = s
            .post_form("featurer", "/apps/myapp/releases", &[("env", env)])
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(
            r.error(),
            "gateway: denied: env key SECRET_KEY may not be changed by this identity (it may change only FEATURE_*)"
        );
    }
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before);
}

#[tokio::test]
async fn build_side_doors_are_refused_and_not_forwarded() {
    let s = Setup::start().await;
    for (url, query) in [
        ("dir:///etc", false),
        ("object://billing/tmp/x.tgz", false),
        ("https://example.com/x.tgz", false),
        ("object://myapp.evil/x", false),
        ("dir:///etc", true),
        ("object://billing/tmp/x.tgz", true),
    ] {
        let r = if query {
            let q = rack_gateway::rack::form::encode_form(&[("url".into(), url.into())]);
            s.post_form(
                "admin",
                &format!("/apps/myapp/builds?{q}"),
                &[("description", "x")],
            )
            .await
        } else {
            s.post_form("admin", "/apps/myapp/builds", &[("url", url)])
                .await
        };
        assert_eq!(r.status, 403, "{url} (query {query}): {}", r.text());
        assert!(
            r.error().contains("must be object://myapp/<key>"),
            "{}",
            r.text()
        );
    }
    // The rack merges the query into the form: a url given in both is
    // ambiguous, and refused whichever way round.
    let q = rack_gateway::rack::form::encode_form(&[("url".into(), "dir:///etc".into())]);
    let r = s
        .post_form(
            "admin",
            &format!("/apps/myapp/builds?{q}"),
            &[("url", "object://myapp/tmp/ok.tgz")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("more than once"), "{}", r.text());
    // Dot segments in the object key would reach another app's objects.
    let r = s
        .post_form(
            "admin",
            "/apps/myapp/builds",
            &[("url", "object://myapp/../billing/x.tgz")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("segment"), "{}", r.text());
    // build-args values are pasted unquoted into the build command.
    let r = s
        .post_form(
            "admin",
            "/apps/myapp/builds",
            &[
                ("url", "object://myapp/tmp/ok.tgz"),
                ("build-args", "A=1 -method x"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("whitespace"), "{}", r.text());
    let r = send(
        "POST",
        &s.url("/apps/myapp/builds"),
        Some(&role_token("admin")),
        &[("Content-Type", "multipart/form-data; boundary=x")],
        "--x\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\ndir:///etc\r\n--x--\r\n",
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(s.received("POST", "/apps/myapp/builds").is_empty());

    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/builds",
            &[("url", "object://myapp/tmp/ok.tgz")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.received("POST", "/apps/myapp/builds").len(), 1);

    let r = send(
        "POST",
        &s.url("/apps/myapp/services/build/processes"),
        Some(&role_token("admin")),
        &[("Command", "sh")],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.error().contains("on service build is refused"),
        "{}",
        r.text()
    );
    assert!(s.received("POST", "/apps/myapp/services/build").is_empty());
}

#[tokio::test]
async fn tcp_proxy_is_refused_for_non_admin_roles() {
    let s = Setup::start().await;
    for role in ["viewer", "deployer", "ops"] {
        let mut c = rack_gateway::rack::ws::client_connect(
            s.running.addr,
            "/proxy/db.myapp.mock/5432",
            &[("Authorization", &basic(&role_token(role)))],
        )
        .await
        .unwrap();
        let text = in_band_text(&mut c).await;
        assert!(
            text.contains("ERROR: gateway: denied:") && text.contains("\"proxy\""),
            "{role}: {text}"
        );
    }
    assert!(s
        .rack
        .requests()
        .iter()
        .all(|r| !r.target.starts_with("/proxy")));
}

#[tokio::test]
async fn can_says_whether_secrets_are_shown() {
    let s = Setup::start().await;
    let offline = |role: &str, operation: &str| {
        let out = std::process::Command::new(bin())
            .args([
                "can", role, operation, "--rack", "staging", "--app", "myapp",
            ])
            .arg("--config")
            .arg(s.dir.path())
            .env("RACK_PW", RACK_PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for (role, operation, note) in [
        (
            "viewer",
            "releases info",
            Some("secrets masked (no `secrets read`)"),
        ),
        (
            "deployer",
            "resources",
            Some("secrets masked (no `secrets read`)"),
        ),
        (
            "admin",
            "releases info",
            Some("secrets shown (`secrets read`)"),
        ),
        ("viewer", "apps", None),
    ] {
        let (allowed, online) = s.can(role, operation).await;
        assert!(allowed, "{role} {operation}: {online}");
        let printed = offline(role, operation);
        assert!(printed.starts_with("allow: "), "{printed}");
        match note {
            Some(note) => {
                assert!(online.ends_with(note), "{role} {operation}: {online}");
                assert!(
                    printed.trim_end().ends_with(note),
                    "{role} {operation}: {printed}"
                );
            }
            None => {
                assert!(!online.contains("secrets"), "{online}");
                assert!(!printed.contains("secrets"), "{printed}");
            }
        }
    }
}

#[tokio::test]
async fn tcp_proxy_reaches_only_the_apps_resources() {
    let s = Setup::start().await;
    let auth = basic(&role_token("admin"));
    let mut c = rack_gateway::rack::ws::client_connect(
        s.running.addr,
        "/proxy/db.myapp.mock/5432",
        &[("Authorization", &auth)],
    )
    .await
    .unwrap();
    c.send(&rack_gateway::rack::ws::Frame::text("SELECT 1"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.payload, b"SELECT 1");
    assert_eq!(s.received("GET", "/proxy/db.myapp.mock/5432").len(), 1);

    let rack_port = s.rack.addr().port().to_string();
    for (host, port) in [
        ("169.254.169.254", "80"),
        ("127.0.0.1", rack_port.as_str()),
        ("db.myapp.mock", "5433"),
        ("db.other.mock", "5432"),
    ] {
        let path = format!("/proxy/{host}/{port}");
        let mut c = rack_gateway::rack::ws::client_connect(
            s.running.addr,
            &path,
            &[("Authorization", &auth)],
        )
        .await
        .unwrap();
        let text = in_band_text(&mut c).await;
        assert!(
            text.contains("ERROR: gateway: denied:")
                && text.contains(&format!("{host}:{port} is not a resource")),
            "{path}: {text}"
        );
        assert!(s.received("GET", &path).is_empty(), "{path} was forwarded");
    }
}

#[tokio::test]
async fn no_secret_reaches_a_viewer_or_the_logs() {
    init();
    let rack = mock().await;
    let mut cfg = ConfigDir::new()
        .rack("staging", &rack.url())
        .extra(GATEWAY_POLICY)
        .ci(&[
            ("viewer", &role_token("viewer"), "viewer", "staging/*"),
            ("deployer", &role_token("deployer"), "deployer", "staging/*"),
        ]);
    for (name, text) in ROLES {
        cfg = cfg.role(name, text);
    }
    let dir = cfg.write();
    let p = spawn_serve(dir.path(), &[("RACK_PW", RACK_PASSWORD)]).await;
    let base = format!("http://{}", p.addr);
    let mut bodies = String::new();
    for path in [
        "/apps/myapp/releases/RMYAPPRELAB",
        "/apps/myapp/releases",
        "/apps/myapp/resources",
        "/apps/myapp/builds",
    ] {
        for role in ["viewer", "deployer"] {
            let r = get(&format!("{base}{path}"), Some(&role_token(role))).await;
            assert_eq!(r.status, 200, "{role} {path}: {}", r.text());
            bodies.push_str(&r.text());
        }
    }
    let env = rack_gateway::rack::form::encode_form(&[(
        "env".into(),
        "DATABASE_URL=******\nFEATURE_X=9\nNEW_KEY=v\nSECRET_KEY=******".into(),
    )]);
    let r = send(
        "POST",
        &format!("{base}/apps/myapp/releases"),
        Some(&role_token("deployer")),
        &[FORM],
        env,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    bodies.push_str(&r.text());
    assert_no_secret("responses", &bodies);

    let logs = p.stop().await;
    assert!(logs.matches("decision").count() >= 9, "{logs}");
    assert_no_secret("logs", &logs);
    assert!(
        logs.contains("add:NEW_KEY change:FEATURE_X"),
        "the audit names the changed keys: {logs}"
    );
}

/// The rack trims env keys and keeps the last duplicate (rack-semantics.md
/// §3.1): a deployer without `env protected` must not overwrite
/// DATABASE_URL by spelling it ` DATABASE_URL`, with a tab or NBSP, behind a
/// carriage return, or twice. Each is refused and never forwarded; the
/// same edit of an unprotected key goes through (control).
#[tokio::test]
async fn env_keys_are_read_the_way_the_rack_reads_them() {
    let s = Setup::start().await;
    let before = s.received("POST", "/apps/myapp/releases").len();
    for (tail, why) in [
        ("DATABASE_URL =evil", "surrounding whitespace"),
        ("DATABASE_URL\t=evil", "surrounding whitespace"),
        ("\u{a0}DATABASE_URL=evil", "surrounding whitespace"),
        ("FEATURE_X=2\r\nDATABASE_URL=evil", "carriage return"),
        ("FEATURE_X=2\rDATABASE_URL=evil", "carriage return"),
        ("FEATURE_X=2\nFEATURE_X=3", "more than once"),
    ] {
        let env = format!("SECRET_KEY=******\n{tail}");
        let r = s
            .post_form("deployer", "/apps/myapp/releases", &[("env", &env)])
            .await;
        assert_eq!(r.status, 400, "{tail:?}: {}", r.text());
        assert!(r.error().contains(why), "{tail:?}: {}", r.error());
        assert!(!r.error().contains("evil"), "{}", r.error());
    }
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before);
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[("env", "DATABASE_URL=******\nSECRET_KEY=******\nFEATURE_X=2")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // What the rack made of it: the protected value unchanged.
    let created = r.json()["id"].as_str().unwrap().to_string();
    let r = s
        .get("admin", &format!("/apps/myapp/releases/{created}"))
        .await;
    let env = r.json()["env"].as_str().unwrap().to_string();
    let parsed = rack_gateway::dev::mock_rack::parse_env(&env).unwrap();
    assert_eq!(parsed["DATABASE_URL"], "postgres://u:dbsecret@db:5432/x");
    assert_eq!(parsed["FEATURE_X"], "2");
}

/// Without an `env` field the rack copies the parent (or newest) release's
/// env: a rollback that restores an old protected value is a change of it,
/// decided against the active release.
#[tokio::test]
async fn a_rollback_is_checked_like_an_env_edit() {
    let s = Setup::start().await;
    // An admin stages (without promoting) a release with another DB URL.
    let r = s
        .post_form(
            "admin",
            "/apps/myapp/releases",
            &[(
                "env",
                "DATABASE_URL=postgres://old\nSECRET_KEY=s3cr3t\nFEATURE_X=1",
            )],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let staged = r.json()["id"].as_str().unwrap().to_string();
    let before = s.received("POST", "/apps/myapp/releases").len();
    for form in [vec![("parent-release", staged.as_str())], vec![]] {
        let r = s.post_form("deployer", "/apps/myapp/releases", &form).await;
        assert_eq!(r.status, 403, "{form:?}: {}", r.text());
        assert!(
            r.error().contains("DATABASE_URL is protected"),
            "{}",
            r.error()
        );
    }
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before);
    // Control: a rollback that changes only unprotected keys.
    let r = s
        .post_form(
            "deployer",
            "/apps/myapp/releases",
            &[("parent-release", "RMYAPPRELAA")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.received("POST", "/apps/myapp/releases").len(), before + 1);
}
