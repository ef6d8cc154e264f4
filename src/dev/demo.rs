//! `rack-gateway demo`: two mock racks and the gateway on loopback, loaded
//! with the project's example policy (roles/, users.yaml.example,
//! ci.yaml.example, tests/example-policy.yaml), plus the demo identity
//! provider ([`crate::dev::idp`]) so `rack-gateway login` works too. A
//! newcomer sees the product work with nothing else installed. Everything
//! runs in this process and stops on Ctrl-C.

use crate::cli::out::outln;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::config::{self, Env, MemSource};
use crate::dev::idp::DemoIdp;
use crate::dev::mock_rack::{MockOptions, MockRack};

/// The example config files, embedded so the demo needs no checkout.
pub(crate) const EXAMPLE_FILES: &[(&str, &str)] = &[
    ("roles/viewer.yaml", include_str!("../../roles/viewer.yaml")),
    ("roles/ops.yaml", include_str!("../../roles/ops.yaml")),
    (
        "roles/deployer.yaml",
        include_str!("../../roles/deployer.yaml"),
    ),
    ("roles/admin.yaml", include_str!("../../roles/admin.yaml")),
    ("users.yaml", include_str!("../../users.yaml.example")),
    ("ci.yaml", include_str!("../../ci.yaml.example")),
    (
        "tests/example-policy.yaml",
        include_str!("../../tests/example-policy.yaml"),
    ),
];

/// Demo CI identities: (name, role, scope). Their tokens are random per run.
pub(crate) const DEMO_IDENTITIES: &[(&str, &str, &str)] = &[
    ("demo-deployer", "deployer", "staging/*"),
    ("demo-viewer", "viewer", "*"),
    ("demo-admin", "admin", "*"),
];

/// The demo's config repository: the example files, a gateway.yaml pointing
/// at the mock racks, and the demo identities appended to ci.yaml.
pub(crate) fn demo_source(
    listen: SocketAddr,
    staging: &str,
    production: &str,
    issuer: &str,
    tokens: &[String],
) -> MemSource {
    let mut files: BTreeMap<String, String> = EXAMPLE_FILES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    files.insert(
        config::GATEWAY_FILE.into(),
        format!(
            "listen: {listen}\n\
             discover_racks_from_env: false\n\
             racks:\n  \
               staging:\n    url: {staging}\n    password_env: DEMO_RACK_PASSWORD\n  \
               production:\n    url: {production}\n    password_env: DEMO_RACK_PASSWORD\n\
             identity:\n  \
               url: http://{listen}\n  \
               token_ttl: 12h\n  \
               signing_key: {{env: DEMO_SIGNING_KEY}}\n  \
               oidc:\n    issuer: {issuer}\n    client_id: {{env: DEMO_OIDC_CLIENT_ID}}\n"
        ),
    );
    let ci = files.get_mut("ci.yaml").expect("ci.yaml is embedded");
    for ((name, role, scope), token) in DEMO_IDENTITIES.iter().zip(tokens) {
        ci.push_str(&format!(
            "  {name}:\n    description: rack-gateway demo\n    token_sha256: {}\n    expires: 2099-01-01\n    grants:\n      - role: {role}\n        scope: \"{scope}\"\n",
            crate::hex::encode(&crate::identity::credentials::token_sha256(token))
        ));
    }
    MemSource {
        files,
        label: "demo:".into(),
        base: std::env::temp_dir(),
    }
}

pub async fn run(listen: SocketAddr) -> ExitCode {
    // The login callback URL names the port, so it must be known first.
    let listen = match resolve_port(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rack-gateway demo: cannot listen on {listen}: {e} (pass --listen 127.0.0.1:<free port>)");
            return ExitCode::FAILURE;
        }
    };
    if !listen.ip().is_loopback() {
        eprintln!("rack-gateway demo: --listen {listen} is not a loopback address: the demo (and its test login) listens on 127.0.0.1 only");
        return ExitCode::FAILURE;
    }
    let idp = match DemoIdp::start(format!("http://{listen}/_gateway/login/callback")).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("rack-gateway demo: cannot start the demo identity provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = crate::identity::credentials::generate_token("mock_");
    let start_mock = || {
        MockRack::start(MockOptions {
            listen: "127.0.0.1:0".parse().expect("loopback address parses"),
            password: password.clone(),
            tls: None,
            max_recorded: 1000,
        })
    };
    let (staging, production) = match (start_mock().await, start_mock().await) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("rack-gateway demo: cannot start the mock racks: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tokens: Vec<String> = DEMO_IDENTITIES
        .iter()
        .map(|_| crate::identity::credentials::generate_token("demo_"))
        .collect();
    let src = demo_source(
        listen,
        &staging.url(),
        &production.url(),
        &idp.issuer,
        &tokens,
    );
    let signing_key = crate::identity::token::generate_private_pem();
    let env = Env::from_pairs([
        ("DEMO_RACK_PASSWORD", password.as_str()),
        ("DEMO_SIGNING_KEY", signing_key.as_str()),
        ("DEMO_OIDC_CLIENT_ID", crate::dev::idp::CLIENT_ID),
    ]);
    let cfg = match config::load(&src, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rack-gateway demo: the embedded config is invalid (a bug):\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match crate::server::listener::Running::start(&cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rack-gateway demo: {e} (pass --listen 127.0.0.1:<free port>)");
            return ExitCode::FAILURE;
        }
    };
    let addr = running.addr;
    let base = format!("http://{addr}");
    let (deployer, viewer, admin) = (&tokens[0], &tokens[1], &tokens[2]);
    outln!("rack-gateway demo is running at {base}");
    outln!("mock racks: staging, production; policy: the example roles/, users.yaml.example, ci.yaml.example");
    outln!("({} policy tests passed on load)\n", cfg.policy_cases);
    outln!("Identities (tokens are new every run):");
    for ((name, role, scope), token) in DEMO_IDENTITIES.iter().zip(&tokens) {
        outln!("  {name:<14} {role} on {scope:<10} RACK_URL=http://convox:{token}@{addr}/racks/staging");
    }
    outln!("\nWith the stock convox CLI:");
    outln!("  export RACK_URL=http://convox:{deployer}@{addr}/racks/staging");
    outln!("  convox apps; convox ps -a myapp; convox run command 'rake db:migrate' -a myapp");
    outln!("  convox run command 'rails console' -a myapp     # refused: deployers may run only the listed commands");
    outln!("\nWith curl:");
    outln!("  # allowed: a deployer lists apps on staging");
    outln!("  curl -s -u convox:{deployer} {base}/racks/staging/apps");
    outln!("  # refused (403): the deployer has no grant on production");
    outln!("  curl -s -u convox:{deployer} {base}/racks/production/apps");
    outln!(
        "  # masked: viewers read releases, but env values arrive as ****** (no `secrets read`)"
    );
    outln!("  curl -s -u convox:{viewer} {base}/racks/staging/apps/myapp/releases/RMYAPPRELAB");
    outln!("  # refused (403): `rack update` is blocked for everyone, admins included");
    outln!("  curl -s -u convox:{admin} -X PUT {base}/racks/staging/system");
    outln!("  # refused (401): no token");
    outln!("  curl -s {base}/racks/staging/apps");
    outln!(
        "\nLog in as a person (DEMO identity provider at {}: pick alice@example.com, bob@... or carol@...; not a real login):",
        idp.issuer
    );
    outln!("  rack-gateway login staging {base}          # opens a browser; add --no-browser to paste a code");
    outln!("  rack-gateway whoami                        # who you are and what you may do");
    outln!("  rack-gateway racks                         # the racks you are logged in to");
    outln!("  rack-gateway login production {base} && rack-gateway switch staging");
    outln!("  rack-gateway apps                          # any other command runs the stock convox CLI through the gateway");
    outln!("\nPress Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    drop(idp);
    ExitCode::SUCCESS
}

/// Port 0 becomes a free port picked now.
fn resolve_port(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    std::net::TcpListener::bind(listen)?.local_addr()
}
