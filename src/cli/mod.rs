//! The command line: `serve`, `check`, `demo`, `routes`, `token`, and the
//! `mock-rack` used by the benchmark for operators; `login`, `racks`,
//! `whoami`, `env`, `can` and any convox command for people (see
//! [`crate::cli::client`]). Parsing is clap derive; each command is a small
//! function returning an exit code.

pub mod client;
pub mod logsink;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{self, Env};

/// Exit code for configuration errors (BSD `EX_USAGE`-style `EX_CONFIG`
/// family; 64 is what operators' tooling expects from linkerd and friends).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "rack-gateway",
    version,
    about = "Access gateway for Convox racks: per-person identity, least-privilege roles, \
             command allowlists, rate limits and an audit trail, transparent to the stock convox CLI.",
    arg_required_else_help = true,
    after_help = "Any other command runs the stock convox CLI against the selected rack through \
                  its gateway, e.g. `rack-gateway apps`, `rack-gateway --rack staging ps -a myapp`. \
                  The rack is --rack, else RACK_GATEWAY_RACK, else the file .rack-gateway/rack in \
                  this directory or a parent, else the current rack (`rack-gateway switch`)."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RACK_GATEWAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The rack to use [default: RACK_GATEWAY_RACK, .rack-gateway/rack,
    /// the current rack]; before a convox command: `--rack staging apps`.
    #[arg(long, short = 'r', global = true, value_name = "RACK")]
    pub rack: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// `file:line:col: message`
    Text,
    /// GitHub Actions annotations: `::error file=...,line=...::message`
    Github,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: from a config directory (watched, reloaded on
    /// change), or in git mode from a repository named by a local settings
    /// file.
    Serve {
        /// The config directory holding gateway.yaml.
        #[arg(
            long,
            short,
            env = "RACK_GATEWAY_CONFIG",
            required_unless_present = "git",
            conflicts_with = "git"
        )]
        config: Option<PathBuf>,
        /// Git mode: the local settings file (listen, tls, repository).
        #[arg(long, env = "RACK_GATEWAY_GIT")]
        git: Option<PathBuf>,
        /// Directory mode: re-read the directory this often even without
        /// file events (which network file systems may not deliver).
        #[arg(long, default_value = "15s", value_parser = parse_interval)]
        poll_interval: std::time::Duration,
        #[command(flatten)]
        audit: AuditArgs,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Validate a config directory and run its policy tests; exit 0 (valid)
    /// or 1 (every problem printed with file:line).
    Check {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format for problems.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
    },
    /// Ask whether something is allowed, like `kubectl auth can-i`: prints
    /// allow/deny and the reason (exit 0 allow, 1 deny, 2 error).
    ///
    /// `can <operation> [--rack R] [--app A] ...` (one word) asks the gateway
    /// for you, as logged in to the rack. `can <identity> <operation> --rack R`
    /// and `can <identity> --list` read the policy offline from a config
    /// directory, for anyone: two words, --list, or a config directory
    /// (--config or RACK_GATEWAY_CONFIG) select the offline form.
    Can {
        /// The operation as in `rack-gateway routes` (e.g. "releases promote",
        /// run, exec); or, offline, the identity: a user email (users.yaml)
        /// or CI identity name (ci.yaml).
        #[arg(value_name = "OPERATION|IDENTITY")]
        first: String,
        /// Offline form: the operation.
        #[arg(value_name = "OPERATION")]
        second: Option<String>,
        #[arg(long)]
        app: Option<String>,
        /// The service (for run), or the target process's service (for exec, ps stop).
        #[arg(long)]
        service: Option<String>,
        /// The command, for run and exec.
        #[arg(long)]
        command: Option<String>,
        /// For exec and ps stop: the target process's own command (e.g.
        /// "sleep 3600" for the process an attached `convox run` created).
        #[arg(long)]
        process_command: Option<String>,
        /// Offline form: print everything the identity may do, per rack and app.
        #[arg(long)]
        list: bool,
        /// Offline form: the config directory [default: .]
        #[arg(long, short, env = "RACK_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo: mock racks plus the gateway on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Print the route table (every rack route and its operation name).
    Routes {
        #[arg(long)]
        markdown: bool,
    },
    /// Static token helpers.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the mock rack alone (for benchmarks and manual testing).
    MockRack {
        #[arg(long, default_value = "127.0.0.1:5443")]
        listen: SocketAddr,
        /// Environment variable holding the mock rack's password.
        #[arg(long, default_value = "MOCK_RACK_PASSWORD")]
        password_env: String,
    },
    /// Log in to a rack through its gateway in the browser (single sign-on)
    /// and make it the current rack.
    Login {
        /// The rack's name at the gateway, e.g. staging.
        #[arg(value_name = "RACK")]
        rack_name: String,
        /// The gateway's address, e.g. https://gateway.example.com (https is
        /// assumed; plain http only for 127.0.0.1 and localhost).
        #[arg(value_name = "GATEWAY_URL")]
        gateway: String,
        /// Don't open a browser or listen on 127.0.0.1: print the login link
        /// and read the one-time code the gateway shows from stdin (SSH
        /// sessions, a browser on another machine).
        #[arg(long)]
        no_browser: bool,
    },
    /// Remove the token for a rack from this machine (the selected rack by
    /// default).
    Logout {
        #[arg(value_name = "RACK")]
        rack_name: Option<String>,
    },
    /// List the racks you have logged in to; `*` marks the current one.
    Racks,
    /// Make a rack you have logged in to the current one.
    Switch {
        #[arg(value_name = "RACK")]
        rack_name: String,
    },
    /// Ask the gateway who you are on the selected rack: identity, grants,
    /// token expiry.
    Whoami,
    /// Print `export RACK_URL=...` for the selected rack, for
    /// `eval "$(rack-gateway env)"`: plain `convox` then goes through the
    /// gateway. With arguments it is convox's own `env` command
    /// (`rack-gateway env set A=1 -a myapp`).
    Env {
        /// Arguments for `convox env` (then this runs `convox env ...`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CONVOX_ENV_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `rack-gateway man | man -l -`.
    Man,
    /// Any other command: the stock convox CLI through the gateway.
    #[command(external_subcommand)]
    Convox(Vec<OsString>),
}

/// The hash-chained audit file (process settings, like the listener).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Also append every audit record to this hash-chained JSONL file.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
    /// Rotate the file at this size (bytes, or with K/M/G); the chain
    /// continues across files.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_ROTATE", default_value = "100M", value_parser = parse_size)]
    audit_rotate: u64,
    /// Key the chain with HMAC-SHA256 (a file holding the key), so that
    /// someone who can write the file but lacks the key cannot rewrite it.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_KEY_FILE")]
    audit_key_file: Option<PathBuf>,
    /// Refuse requests (503) while the audit file cannot be written.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_FAIL_CLOSED")]
    audit_fail_closed: bool,
    /// fsync after every batch of records.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_FSYNC")]
    audit_fsync: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a hash-chained audit file (and its rotated predecessors):
    /// reports the first edited, deleted, inserted or reordered record.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The chain's HMAC key file, if the gateway used one.
        #[arg(long, env = "RACK_GATEWAY_AUDIT_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1),
        Some((i, _)) => {
            let m = match t[i..].to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return Err(format!("`{s}`: use bytes or a K/M/G suffix")),
            };
            (&t[..i], m)
        }
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large")),
        _ => Err(format!("`{s}` is not a positive size")),
    }
}

fn read_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let key = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trimmed = key.trim_ascii_end().to_vec();
    if trimmed.len() < 16 {
        return Err(format!(
            "{}: the key must be at least 16 bytes",
            path.display()
        ));
    }
    Ok(trimmed)
}

/// Opens the audit file before serving: a gateway asked to keep one never
/// serves without it.
fn open_audit_file(args: &AuditArgs) -> Result<(), String> {
    let Some(path) = &args.audit_file else {
        return Ok(());
    };
    let key = args.audit_key_file.as_deref().map(read_key).transpose()?;
    let sink = crate::audit::file::Sink::open(crate::audit::file::FileSettings {
        path: path.clone(),
        rotate_bytes: Some(args.audit_rotate),
        key,
        fail_closed: args.audit_fail_closed,
        fsync: args.audit_fsync,
    })
    .map_err(|e| format!("audit file {}: {e}", path.display()))?;
    crate::audit::install_file(sink);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new Ed25519 signing key for the gateway's own tokens (PKCS#8
    /// PEM, mode 0600) and print its key id and public key.
    Keygen {
        /// Where to write the private key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a new random token once, and the gateway.yaml snippet holding only its hash.
    Generate {
        /// The CI identity's name (lower-case letters, digits, - or _).
        #[arg(long)]
        name: String,
        /// The role to grant in the snippet.
        #[arg(long, default_value = "deployer")]
        role: String,
        /// The scope of the grant: `<rack glob>/<app glob>`.
        #[arg(long, default_value = "staging/*")]
        scope: String,
        /// Expiry (mandatory in ci.yaml): a date like 2027-06-30.
        #[arg(long)]
        expires: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped at the end of main, after everything logged is written.
    let _log = init_logging(cli.log_format);
    crate::http::tls::install_crypto_provider();
    match cli.command {
        Command::Serve {
            config,
            git,
            poll_interval,
            audit,
        } => {
            if let Err(e) = open_audit_file(&audit) {
                eprintln!("rack-gateway: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let code = match (config, git) {
                (Some(dir), _) => serve(dir, poll_interval),
                (None, Some(file)) => serve_git(file),
                (None, None) => {
                    eprintln!("rack-gateway serve: give --config <dir> or --git <settings.yaml>");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
            if !crate::audit::flush(std::time::Duration::from_secs(5)) {
                eprintln!("rack-gateway: some audit records could not be written to the audit file before exit");
            }
            code
        }
        Command::Audit {
            command: AuditCommand::Verify { files, key_file },
        } => match key_file.as_deref().map(read_key).transpose() {
            Ok(key) => crate::audit::verify::verify_command(&files, key.as_deref()),
            Err(e) => {
                eprintln!("rack-gateway audit verify: {e}");
                ExitCode::from(2)
            }
        },
        Command::Check { dir, format } => check(dir, format),
        Command::Can {
            first,
            second: None,
            app,
            service,
            command,
            process_command,
            list: false,
            config: None,
        } => crate::cli::client::can(
            cli.rack.as_deref(),
            crate::cli::client::CanQuery {
                operation: first,
                app,
                service,
                command,
                process_command,
            },
        ),
        Command::Can {
            first,
            second,
            app,
            service,
            command,
            process_command,
            list,
            config,
        } => can(
            &config.unwrap_or_else(|| PathBuf::from(".")),
            &first,
            CanQuery {
                operation: second,
                rack: cli.rack,
                app,
                service,
                command,
                process_command,
                list,
            },
        ),
        Command::Demo { listen } => runtime().block_on(crate::dev::demo::run(listen)),
        Command::Routes { markdown } => {
            if markdown {
                print!("{}", crate::rack::routes::markdown_table());
            } else {
                for r in crate::rack::routes::ROUTES {
                    println!("{:<8} {:<55} {}", r.method.as_str(), r.pattern, r.operation);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Token { command } => {
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
                    let hash = config::hex(&crate::identity::credentials::token_sha256(&token));
                    println!("token (shown once; store it in your CI system's secret store):\n  {token}\n");
                    println!("ci.yaml entry (holds only the hash):");
                    println!(
                    "ci:\n  {name}:\n    token_sha256: {hash}\n    expires: {expires}\n    grants:\n      - role: {role}\n        scope: \"{scope}\""
                );
                    ExitCode::SUCCESS
                }
            }
        }
        Command::MockRack {
            listen,
            password_env,
        } => runtime().block_on(mock_rack(listen, password_env)),
        Command::Login {
            rack_name,
            gateway,
            no_browser,
        } => crate::cli::client::login(&rack_name, &gateway, no_browser),
        Command::Logout { rack_name } => {
            crate::cli::client::logout(cli.rack.as_deref(), rack_name.as_deref())
        }
        Command::Racks => crate::cli::client::racks(),
        Command::Switch { rack_name } => crate::cli::client::switch(&rack_name),
        Command::Whoami => crate::cli::client::whoami(cli.rack.as_deref()),
        Command::Env { args } if args.is_empty() => crate::cli::client::env(cli.rack.as_deref()),
        Command::Env { mut args } => {
            args.insert(0, "env".into());
            crate::cli::client::passthrough(cli.rack.as_deref(), args)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "rack-gateway", &mut out);
            print_generated(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print_generated(&out),
                Err(e) => {
                    eprintln!("rack-gateway man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Convox(args) => crate::cli::client::passthrough(cli.rack.as_deref(), args),
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
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
    println!(
        "wrote {} (keep it out of Git; give it to the gateway as identity.signing_key)",
        out.display()
    );
    println!("key id: {kid}");
    print!("{public}");
    ExitCode::SUCCESS
}

/// Writes generated text to stdout; a reader that stops early
/// (`rack-gateway man | head`) is not an error.
fn print_generated(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("rack-gateway: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

fn init_logging(format: LogFormat) -> crate::cli::logsink::LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RACK_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (sink, guard) = crate::cli::logsink::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

fn print_config_errors(errors: &config::ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

fn check(dir: PathBuf, format: CheckFormat) -> ExitCode {
    match config::load_dir(&dir, &Env::from_process().secrets_optional()) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} rack(s), {} role(s), {} user(s), {} CI identit{}, {} policy test(s) passed)",
                dir.display(),
                cfg.racks.len(),
                cfg.policy.roles.len(),
                cfg.policy.users.len(),
                cfg.policy.ci.len(),
                if cfg.policy.ci.len() == 1 { "y" } else { "ies" },
                cfg.policy_cases
            );
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
                println!("::error {loc}::{msg}");
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
struct CanQuery {
    operation: Option<String>,
    rack: Option<String>,
    app: Option<String>,
    service: Option<String>,
    command: Option<String>,
    process_command: Option<String>,
    list: bool,
}

fn can(dir: &std::path::Path, identity: &str, q: CanQuery) -> ExitCode {
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
        println!("{}:", subject.name);
        for line in policy.describe(subject) {
            println!("  {line}");
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
    let process = crate::policy::Process {
        service: q.service.clone().unwrap_or_default(),
        command: q.process_command.unwrap_or_else(|| "-".into()),
    };
    let facts = crate::policy::Facts {
        rack: &rack,
        operation: &operation,
        app: q.app.as_deref(),
        service: q.service.as_deref(),
        command: q.command.as_deref(),
        command_shown: None,
        process: None,
        run_headers: &[],
    };
    let verdict = policy.decide_assuming(subject, &facts, &process);
    match verdict {
        crate::policy::Verdict::Allow(r) => {
            match crate::rack::mask::can_note(policy, subject, &facts) {
                Some(note) => println!("allow: {r}; {note}"),
                None => println!("allow: {r}"),
            }
            ExitCode::SUCCESS
        }
        other => {
            println!("deny: {}", other.reason());
            ExitCode::FAILURE
        }
    }
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match config::parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

fn serve(dir: PathBuf, poll: std::time::Duration) -> ExitCode {
    let env = Env::from_process();
    let fetch = crate::reload::DirFetch(dir.clone());
    let first = match crate::reload::Fetch::fetch(&fetch, None) {
        Ok(Some(f)) => f,
        Ok(None) => unreachable!("a first fetch always returns files"),
        Err(e) => {
            eprintln!("rack-gateway: {}", e.message);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cfg = match config::load(&first.files, &env) {
        Ok(c) => c,
        Err(e) => {
            print_config_errors(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    runtime().block_on(async move {
        let runtime = match crate::gateway::Runtime::from_config(&cfg) {
            Ok(mut rt) => {
                rt.version = first.version.clone();
                rt
            }
            Err(e) => {
                print_config_errors(&e);
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let serving = crate::server::listener::Serving {
            listen: cfg.listen,
            tls: cfg.tls.clone(),
            header_read: cfg.timeouts.header_read,
            shutdown_grace: cfg.timeouts.shutdown_grace,
        };
        let running = match start(&serving, Some(runtime)).await {
            Ok(r) => r,
            Err(code) => return code,
        };
        tracing::info!(
            addr = %running.addr,
            racks = cfg.racks.len(),
            version = %first.version,
            "rack-gateway serving"
        );
        let reloader = crate::reload::Reloader::new(
            running.gateway.clone(),
            std::sync::Arc::new(fetch),
            env,
            poll,
        );
        reloader.started_with(&first, cfg.policy_cases);
        tokio::spawn(reloader.run(Some(dir), running.shutdown_handle().subscribe()));
        run_until_signalled(running).await
    })
}

/// Git mode: the listener comes from the local settings file, and rack
/// traffic is refused with 503 until the first valid commit is loaded.
fn serve_git(file: PathBuf) -> ExitCode {
    let env = Env::from_process();
    let settings = match config::load_git_serve(&file, &env) {
        Ok(s) => s,
        Err(e) => {
            print_config_errors(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // git2's first use changes the process environment: do it before the
    // runtime starts threads.
    crate::reload::git::init();
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    let fetch = match crate::reload::GitFetch::new(&settings.repo, base) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rack-gateway: {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    runtime().block_on(async move {
        let serving = crate::server::listener::Serving {
            listen: settings.listen,
            tls: settings.tls.clone(),
            header_read: settings.header_read,
            shutdown_grace: settings.shutdown_grace,
        };
        let running = match start(&serving, None).await {
            Ok(r) => r,
            Err(code) => return code,
        };
        tracing::info!(
            addr = %running.addr,
            repository = %settings.repo.url,
            "rack-gateway serving (git mode): fetching the configuration"
        );
        if let Some(secret) = settings.repo.webhook_secret.clone() {
            running.gateway.reload.set_webhook_secret(secret);
        }
        let reloader = crate::reload::Reloader::new(
            running.gateway.clone(),
            std::sync::Arc::new(fetch),
            env,
            settings.repo.poll_interval,
        );
        tokio::spawn(reloader.run(None, running.shutdown_handle().subscribe()));
        run_until_signalled(running).await
    })
}

async fn start(
    serving: &crate::server::listener::Serving,
    runtime: Option<crate::gateway::Runtime>,
) -> Result<crate::server::listener::Running, ExitCode> {
    match crate::server::listener::Running::bind(serving, runtime).await {
        Ok(r) => Ok(r),
        Err(crate::server::listener::StartError::Config(e)) => {
            print_config_errors(&e);
            Err(ExitCode::from(EXIT_CONFIG))
        }
        Err(e) => {
            eprintln!("rack-gateway: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Serves until SIGTERM/SIGINT (graceful shutdown); SIGHUP asks the
/// reloader for an immediate, forced reload.
async fn run_until_signalled(running: crate::server::listener::Running) -> ExitCode {
    let gateway = running.gateway.clone();
    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => gateway.reload.trigger(),
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = shutdown.send(true);
    });
    running.wait().await;
    ExitCode::SUCCESS
}

async fn mock_rack(listen: SocketAddr, password_env: String) -> ExitCode {
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
    println!("mock rack listening on {}", mock.url());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
