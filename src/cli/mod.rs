//! The command line: `serve`, `check`, `demo`, `routes`, `token`, and the
//! `mock-rack` used by the benchmark for operators; `login`, `racks`,
//! `whoami`, `env`, `can` and any convox command for people (see
//! [`crate::cli::client`]). Parsing is clap derive; each command is a small
//! function returning an exit code.
//!
//! Layout: this module holds the clap types and the dispatch; [`serve`] is
//! the composition root of the gateway process; [`operator`] the commands
//! that need no running gateway; [`review`] the access review (`diff`,
//! `who-can`).

pub mod client;
pub mod logsink;
mod operator;
pub(crate) mod out;
mod review;
mod serve;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config;

/// Exit code for configuration errors (BSD `EX_USAGE`-style `EX_CONFIG`
/// family; 64 is what operators' tooling expects from linkerd and friends).
pub(crate) const EXIT_CONFIG: u8 = 64;

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
    /// Log format on stderr (serve, demo, mock-rack also take it after the
    /// command).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "RACK_GATEWAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The rack for a convox command, whoami, env, can or logout
    /// [default: RACK_GATEWAY_RACK, .rack-gateway/rack, the current rack]:
    /// `rack-gateway --rack staging apps`.
    #[arg(long, short = 'r', value_name = "RACK")]
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
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// `--log-format` after the commands that log (serve, demo, mock-rack).
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log format on stderr [default: the one before the command, text].
    #[arg(long = "log-format", value_enum, value_name = "LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// `--rack` after the commands it selects a rack for.
#[derive(Debug, clap::Args)]
pub struct RackArg {
    /// The rack [default: --rack before the command, RACK_GATEWAY_RACK,
    /// .rack-gateway/rack, the current rack].
    #[arg(long = "rack", short = 'r', value_name = "RACK")]
    rack: Option<String>,
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
        #[command(flatten)]
        log: LogArgs,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Validate a config directory as serve would load it (secrets present,
    /// files, CA bundles, keys) and run its policy tests; exit 0 (valid) or
    /// 1 (every problem printed with file:line).
    Check {
        /// The config directory holding gateway.yaml.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format for problems.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Skip what needs the gateway host (secrets' presence, the files
        /// and credentials they name, CA bundles, signing keys): for
        /// reviewers and CI without secrets. Says what it skipped.
        #[arg(long)]
        offline: bool,
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
        #[command(flatten)]
        rack: RackArg,
        /// The app the operation is on.
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
        /// Offline form: after the answer, the trace: the identity's entry,
        /// each grant and whether it covers the request, each covering role
        /// and the roles it inherits, step-up, the blocked list, command
        /// rules, and the rule that decided.
        #[arg(long, conflicts_with = "list")]
        explain: bool,
        /// Offline form: the config directory [default: .]
        #[arg(long, short, env = "RACK_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Compare the effective access of two configs: OLD NEW directories, or
    /// with --repo two revisions (OLDREV NEWREV, or a range main...HEAD)
    /// read from their trees. Exit 0 unchanged, 1 changed, 2 error.
    Diff {
        /// OLD NEW (directories), or with --repo OLDREV NEWREV or A...B.
        #[arg(required = true, num_args = 1..=2, value_name = "OLD NEW")]
        args: Vec<String>,
        /// Read OLD and NEW as revisions of this Git repository.
        #[arg(long)]
        repo: Option<PathBuf>,
        /// text (terminal), markdown (a pull-request comment) or json.
        #[arg(long, value_enum, default_value_t = review::DiffFormat::Text)]
        format: review::DiffFormat,
    },
    /// List every identity that may perform an operation on --rack/--app,
    /// with the grant that allows it (offline, reading the config).
    WhoCan {
        /// The operation as in `rack-gateway routes`.
        operation: String,
        /// The rack the operation is on (required).
        #[arg(long, short = 'r')]
        rack: Option<String>,
        /// The app (for app operations).
        #[arg(long)]
        app: Option<String>,
        /// The service, for run and exec.
        #[arg(long)]
        service: Option<String>,
        /// The command, for run and exec.
        #[arg(long)]
        command: Option<String>,
        /// The config directory [default: .]
        #[arg(long, short, env = "RACK_GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo: mock racks plus the gateway on loopback.
    Demo {
        /// Where the gateway listens (loopback).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Print the route table (every rack route and its operation name).
    Routes {
        /// As the README's markdown table, with the convox commands.
        #[arg(long)]
        markdown: bool,
    },
    /// Tokens and signing keys: CI tokens for ci.yaml, the key the gateway
    /// signs its own tokens with.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the mock rack alone (for benchmarks and manual testing).
    MockRack {
        /// Where the mock rack listens.
        #[arg(long, default_value = "127.0.0.1:5443")]
        listen: SocketAddr,
        /// Environment variable holding the mock rack's password.
        #[arg(long, default_value = "MOCK_RACK_PASSWORD")]
        password_env: String,
        #[command(flatten)]
        log: LogArgs,
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
        /// The rack to log out of [default: the selected rack].
        #[arg(value_name = "RACK")]
        rack_name: Option<String>,
    },
    /// List the racks you have logged in to; `*` marks the current one.
    Racks,
    /// Make a rack you have logged in to the current one.
    Switch {
        /// A rack name from `rack-gateway racks`.
        #[arg(value_name = "RACK")]
        rack_name: String,
    },
    /// Ask the gateway who you are on the selected rack: identity, grants,
    /// token expiry.
    Whoami {
        #[command(flatten)]
        rack: RackArg,
    },
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
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
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
    /// fsync after every batch of records, and end no answer before its
    /// record is on disk: every request whose answer a client received
    /// complete (a refusal, a rack answer's last bytes, a login, a
    /// session's 101) has its record even after `kill -9` or a power loss.
    /// A streamed answer's last frame waits for the fsync. While the file
    /// cannot be written, fail-closed answers 503 (or cuts the stream);
    /// fail-open answers without the guarantee and counts it in
    /// rack_gateway_audit_fsync_unconfirmed_total.
    #[arg(long, env = "RACK_GATEWAY_AUDIT_FSYNC")]
    audit_fsync: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a hash-chained audit file (and its rotated predecessors):
    /// reports the first edited, deleted, inserted or reordered record.
    Verify {
        /// The audit files, oldest first.
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

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new Ed25519 signing key for the gateway's own tokens (PKCS#8
    /// PEM, mode 0600) and print its key id and public key.
    Keygen {
        /// Where to write the private key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a new random CI token once, and the ci.yaml entry holding
    /// only its SHA-256 (paste it under `ci:`).
    Generate {
        /// The CI identity's name (lower-case letters, digits, - or _).
        #[arg(long)]
        name: String,
        /// The role to grant in the entry.
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
    let log_format = match &cli.command {
        Command::Serve { log, .. } | Command::Demo { log, .. } | Command::MockRack { log, .. } => {
            log.log_format.unwrap_or(cli.log_format)
        }
        _ => cli.log_format,
    };
    // Dropped at the end of main, after everything logged is written.
    let _log = init_logging(log_format);
    crate::http::tls::install_crypto_provider();
    if let (Some(_), Some(name)) = (&cli.rack, takes_no_rack(&cli.command)) {
        eprintln!(
            "rack-gateway: --rack selects the rack for a convox command, whoami, env, can or logout; `{name}` takes none (drop --rack)"
        );
        return ExitCode::from(2);
    }
    let top_rack = cli.rack;
    match cli.command {
        Command::Serve {
            config,
            git,
            poll_interval,
            audit,
            log: _,
        } => serve::run(config, git, poll_interval, &audit),
        Command::Audit {
            command: AuditCommand::Verify { files, key_file },
        } => operator::audit_verify(&files, key_file.as_deref()),
        Command::Check {
            dir,
            format,
            offline,
        } => operator::check(dir, format, offline),
        Command::Can {
            first,
            second: None,
            rack,
            app,
            service,
            command,
            process_command,
            list: false,
            explain: false,
            config: None,
        } => crate::cli::client::can(
            rack.rack.or(top_rack).as_deref(),
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
            rack,
            app,
            service,
            command,
            process_command,
            list,
            explain,
            config,
        } => operator::can(
            &config.unwrap_or_else(|| PathBuf::from(".")),
            &first,
            operator::CanQuery {
                operation: second,
                rack: rack.rack.or(top_rack),
                app,
                service,
                command,
                process_command,
                list,
                explain,
            },
        ),
        Command::Diff { args, repo, format } => review::diff(&args, repo.as_deref(), format),
        Command::WhoCan {
            operation,
            rack,
            app,
            service,
            command,
            config,
        } => review::who_can(review::WhoCanQuery {
            operation,
            rack,
            app,
            service,
            command,
            config,
        }),
        Command::Demo { listen, log: _ } => runtime().block_on(crate::dev::demo::run(listen)),
        Command::Routes { markdown } => operator::routes(markdown),
        Command::Token { command } => operator::token(command),
        Command::MockRack {
            listen,
            password_env,
            log: _,
        } => runtime().block_on(operator::mock_rack(listen, password_env)),
        Command::Login {
            rack_name,
            gateway,
            no_browser,
        } => crate::cli::client::login(&rack_name, &gateway, no_browser),
        Command::Logout { rack_name } => {
            crate::cli::client::logout(top_rack.as_deref(), rack_name.as_deref())
        }
        Command::Racks => crate::cli::client::racks(),
        Command::Switch { rack_name } => crate::cli::client::switch(&rack_name),
        Command::Whoami { rack } => crate::cli::client::whoami(rack.rack.or(top_rack).as_deref()),
        Command::Env { args } if args.is_empty() => crate::cli::client::env(top_rack.as_deref()),
        Command::Env { mut args } => {
            args.insert(0, "env".into());
            crate::cli::client::passthrough(top_rack.as_deref(), args)
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
        Command::Convox(args) => crate::cli::client::passthrough(top_rack.as_deref(), args),
    }
}

/// The name of a command a rack means nothing to (`--rack` before it is
/// refused rather than ignored).
fn takes_no_rack(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Serve { .. } => "serve",
        Command::Audit { .. } => "audit",
        Command::Check { .. } => "check",
        Command::Demo { .. } => "demo",
        Command::Routes { .. } => "routes",
        Command::Token { .. } => "token",
        Command::MockRack { .. } => "mock-rack",
        Command::Diff { .. } => "diff",
        Command::WhoCan { .. } => "who-can (it takes its own --rack after the command)",
        Command::Login { .. } => "login",
        Command::Racks => "racks",
        Command::Switch { .. } => "switch",
        Command::Completions { .. } => "completions",
        Command::Man => "man",
        Command::Can { .. }
        | Command::Logout { .. }
        | Command::Whoami { .. }
        | Command::Env { .. }
        | Command::Convox(_) => return None,
    })
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
    if matches!(format, LogFormat::Json) {
        crate::cli::logsink::route_json_lines(&sink);
    }
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

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match config::error::parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_flag_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version") && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "rack-gateway", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }

    /// `--rack` shows only on the commands it selects a rack for.
    #[test]
    fn rack_is_offered_only_where_it_means_something() {
        let mut cli = Cli::command();
        cli.build();
        let has_rack = |name: &str| {
            cli.find_subcommand(name)
                .is_some_and(|c| c.get_arguments().any(|a| a.get_long() == Some("rack")))
        };
        for name in [
            "serve",
            "check",
            "demo",
            "token",
            "audit",
            "routes",
            "mock-rack",
        ] {
            assert!(!has_rack(name), "{name}");
        }
        assert!(has_rack("whoami") && has_rack("can"));
        let token = cli
            .find_subcommand("token")
            .map(|c| c.get_about().map(ToString::to_string));
        assert!(
            token
                .flatten()
                .is_some_and(|a| a.starts_with("Tokens and signing keys")),
            "token's about"
        );
        let generate = cli
            .find_subcommand("token")
            .and_then(|t| t.find_subcommand("generate"))
            .and_then(|g| g.get_about().map(ToString::to_string));
        assert!(generate.is_some_and(|a| a.contains("ci.yaml entry")));
    }

    #[test]
    fn rack_before_a_command_that_takes_none_is_refused() {
        let cli = Cli::try_parse_from(["rack-gateway", "--rack", "x", "routes"]);
        assert_eq!(
            cli.ok().and_then(|c| takes_no_rack(&c.command)),
            Some("routes")
        );
        let cli = Cli::try_parse_from(["rack-gateway", "--rack", "x", "apps"]);
        assert_eq!(cli.ok().and_then(|c| takes_no_rack(&c.command)), None);
        assert!(Cli::try_parse_from(["rack-gateway", "serve", "--rack", "x"]).is_err());
        assert!(Cli::try_parse_from(["rack-gateway", "whoami", "--rack", "x"]).is_ok());
    }
}
