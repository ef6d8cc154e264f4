//! The operator commands that need no running gateway: `check`, offline
//! `can`, `token`, `routes`, `audit verify` and `mock-rack`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{print_config_errors, read_key, CheckFormat, TokenCommand, EXIT_CONFIG};
use crate::cli::out::{out, outln};
use crate::config::{self, Env};

/// `audit verify`: checks the chain of the given files.
pub(super) fn audit_verify(files: &[PathBuf], key_file: Option<&Path>) -> ExitCode {
    match key_file.map(read_key).transpose() {
        Ok(key) => crate::audit::verify::verify_command(files, key.as_deref()),
        Err(e) => {
            eprintln!("rack-gateway audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// What `check --offline` leaves out.
const OFFLINE_SKIPS: &str = "not checked (--offline): secrets' presence, the files and credentials they name, CA bundles, signing keys";

/// `check`: validates a config directory as serve would load it — every
/// secret present (never printed), CA bundles and keys loadable — and
/// runs its policy tests; `offline` skips what needs the gateway host.
pub(super) fn check(dir: PathBuf, format: CheckFormat, offline: bool) -> ExitCode {
    let env = match offline {
        true => Env::from_process().secrets_optional(),
        false => Env::from_process(),
    };
    let loaded = config::load_dir(&dir, &env).and_then(|cfg| match offline {
        true => Ok(cfg),
        false => crate::gateway::Runtime::from_config(&cfg).map(|_| cfg),
    });
    let code = report(&dir, format, loaded);
    if offline {
        match code == ExitCode::SUCCESS {
            true => outln!("{}: {OFFLINE_SKIPS}", dir.display()),
            false => eprintln!("note: {OFFLINE_SKIPS}"),
        }
    }
    code
}

fn report(
    dir: &Path,
    format: CheckFormat,
    loaded: Result<config::Config, config::ConfigErrors>,
) -> ExitCode {
    match loaded {
        Ok(cfg) => {
            outln!(
                "{}: ok ({} rack(s), {} role(s), {} user(s), {} CI identit{}, {} policy test(s) passed)",
                dir.display(),
                cfg.racks.len(),
                cfg.policy.roles.len(),
                cfg.policy.users.len(),
                cfg.policy.ci.len(),
                if cfg.policy.ci.len() == 1 { "y" } else { "ies" },
                cfg.policy_cases
            );
            // Expired grants count for nothing but are not errors: the
            // break-glass PR that added one merged; a cleanup PR removes it.
            let prefix = format!("{}/", dir.display());
            for (at, msg) in cfg.policy.expired(crate::clock::unix_now()) {
                if format == CheckFormat::Github {
                    let file = at.file.strip_prefix(&prefix).unwrap_or(&at.file);
                    println!("::warning file={file},line={}::{msg}", at.line);
                } else {
                    eprintln!("warning: {at}: {msg}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) if format == CheckFormat::Github => {
            let prefix = format!("{}/", dir.display());
            for err in &e.0 {
                let file = err.file.strip_prefix(&prefix).unwrap_or(&err.file);
                let mut loc = format!("file={file}");
                if let Some(l) = err.line {
                    loc.push_str(&format!(",line={l}"));
                }
                if let Some(c) = err.column {
                    loc.push_str(&format!(",col={c}"));
                }
                // Annotation messages end at a newline; % , : are escaped.
                let msg = err
                    .message
                    .replace('%', "%25")
                    .replace('\r', "%0D")
                    .replace('\n', "%0A");
                outln!("::error {loc}::{msg}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            print_config_errors(&e);
            ExitCode::FAILURE
        }
    }
}

/// What `can` asks.
pub(super) struct CanQuery {
    pub(super) operation: Option<String>,
    pub(super) rack: Option<String>,
    pub(super) app: Option<String>,
    pub(super) service: Option<String>,
    pub(super) command: Option<String>,
    pub(super) process_command: Option<String>,
    pub(super) list: bool,
    pub(super) explain: bool,
}

pub(super) fn can(dir: &Path, identity: &str, q: CanQuery) -> ExitCode {
    let cfg = match config::load_dir(dir, &Env::from_process().secrets_optional()) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors(&e);
            return ExitCode::from(2);
        }
    };
    let policy = &cfg.policy;
    let Some(subject) = policy.find_subject(identity) else {
        eprintln!("rack-gateway can: `{identity}` is neither a user in users.yaml nor a CI identity in ci.yaml");
        return ExitCode::from(2);
    };
    if q.list {
        outln!("{}:", subject.name);
        for line in policy.describe(subject) {
            outln!("  {line}");
        }
        return ExitCode::SUCCESS;
    }
    let (Some(operation), Some(rack)) = (q.operation, q.rack) else {
        eprintln!(
            "rack-gateway can: the offline form needs `can <identity> <operation> --rack R` or \
             `can <identity> --list` (`can <operation>` alone asks the gateway)"
        );
        return ExitCode::from(2);
    };
    if crate::policy::op_index(&operation).is_none() {
        eprintln!("rack-gateway can: unknown operation `{operation}` (see `rack-gateway routes`)");
        return ExitCode::from(2);
    }
    let question = crate::policy::can::Question {
        rack: &rack,
        operation: &operation,
        app: q.app.as_deref(),
        service: q.service.as_deref(),
        command: q.command.as_deref(),
        process_command: q.process_command.as_deref(),
        now: crate::clock::unix_now(),
        auth: None,
    };
    let (allowed, reason) = crate::policy::can::answer(policy, subject, &question);
    outln!("{}: {reason}", if allowed { "allow" } else { "deny" });
    if q.explain {
        outln!("why:");
        for line in crate::policy::can::explain(policy, subject, &question).lines {
            outln!("  {line}");
        }
    }
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `token keygen` and `token generate`.
pub(super) fn token(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Keygen { out } => keygen(&out),
        TokenCommand::Generate {
            name,
            role,
            scope,
            expires,
        } => {
            let expires = match expires {
                Some(e) if crate::policy::load::parse_time(&e).is_some() => e,
                Some(e) => {
                    eprintln!("rack-gateway token generate: --expires `{e}` is not a date like 2027-06-30");
                    return ExitCode::from(2);
                }
                // A year from now, as a date.
                None => crate::cli::client::utc(crate::clock::unix_now() + 365 * 86_400)
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            let token = crate::identity::credentials::generate_token("rgw_");
            let hash = crate::hex::encode(&crate::identity::credentials::token_sha256(&token));
            outln!("token (shown once; store it in your CI system's secret store):\n  {token}\n");
            outln!("ci.yaml entry (holds only the hash):");
            outln!(
            "ci:\n  {name}:\n    token_sha256: {hash}\n    expires: {expires}\n    grants:\n      - role: {role}\n        scope: \"{scope}\""
        );
            ExitCode::SUCCESS
        }
    }
}

fn keygen(out: &Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = crate::identity::token::generate_private_pem();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out);
    let written = file.and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        eprintln!(
            "rack-gateway token keygen: cannot write {}: {e}",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    let (Ok(kid), Ok(public)) = (
        crate::identity::token::key_id(&pem),
        crate::identity::token::public_pem(&pem),
    ) else {
        eprintln!("rack-gateway token keygen: the generated key is unusable (a bug)");
        return ExitCode::FAILURE;
    };
    outln!(
        "wrote {} (keep it out of Git; give it to the gateway as identity.signing_key)",
        out.display()
    );
    outln!("key id: {kid}");
    out!("{public}");
    ExitCode::SUCCESS
}

/// `routes`: the route table, as text or markdown.
pub(super) fn routes(markdown: bool) -> ExitCode {
    if markdown {
        out!("{}", crate::rack::routes::markdown_table());
    } else {
        for r in crate::rack::routes::ROUTES {
            outln!("{:<8} {:<55} {}", r.method.as_str(), r.pattern, r.operation);
        }
    }
    ExitCode::SUCCESS
}

/// `mock-rack`: the mock rack alone, until Ctrl-C.
pub(super) async fn mock_rack(listen: SocketAddr, password_env: String) -> ExitCode {
    let Some(password) = std::env::var(&password_env).ok().filter(|p| !p.is_empty()) else {
        eprintln!("rack-gateway mock-rack: set {password_env} to the password the mock rack should accept");
        return ExitCode::from(EXIT_CONFIG);
    };
    let mock = match crate::dev::mock_rack::MockRack::start(crate::dev::mock_rack::MockOptions {
        listen,
        password,
        tls: None,
        max_recorded: 0,
    })
    .await
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("rack-gateway mock-rack: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    outln!("mock rack listening on {}", mock.url());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
