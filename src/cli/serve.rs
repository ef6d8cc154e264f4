//! `serve`, the composition root: opens the audit file (the gateway's
//! [`Auditor`], held in its state, never a global), loads the first
//! configuration (a directory, or git mode's settings and repository),
//! binds the listener, starts the reloader and runs until a signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{print_config_errors, read_key, runtime, AuditArgs, EXIT_CONFIG};
use crate::audit::Auditor;
use crate::config::{self, Env};

/// `serve`: the audit file first (a gateway asked to keep one never serves
/// without it), then directory or git mode, then a last audit flush.
pub(super) fn run(
    config: Option<PathBuf>,
    git: Option<PathBuf>,
    poll_interval: Duration,
    audit: &AuditArgs,
) -> ExitCode {
    let auditor = match open_audit_file(audit) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rack-gateway: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match (config, git) {
        (Some(dir), _) => serve(dir, poll_interval, auditor.clone()),
        (None, Some(file)) => serve_git(file, auditor.clone()),
        (None, None) => {
            eprintln!("rack-gateway serve: give --config <dir> or --git <settings.yaml>");
            ExitCode::from(EXIT_CONFIG)
        }
    };
    if !auditor.flush(Duration::from_secs(5)) {
        eprintln!(
            "rack-gateway: some audit records could not be written to the audit file before exit"
        );
    }
    code
}

/// Opens the audit file before serving: a gateway asked to keep one never
/// serves without it.
fn open_audit_file(args: &AuditArgs) -> Result<Auditor, String> {
    let Some(path) = &args.audit_file else {
        return Ok(Auditor::default());
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
    Ok(Auditor::new(Some(sink)))
}

fn serve(dir: PathBuf, poll: Duration, audit: Auditor) -> ExitCode {
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
        let _xfsz = survive_file_size_limits();
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
            audit,
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
fn serve_git(file: PathBuf, audit: Auditor) -> ExitCode {
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
    let base = file.parent().unwrap_or(Path::new("."));
    let fetch = match crate::reload::GitFetch::new(&settings.repo, base) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rack-gateway: {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    runtime().block_on(async move {
        let _xfsz = survive_file_size_limits();
        let serving = crate::server::listener::Serving {
            listen: settings.listen,
            tls: settings.tls.clone(),
            header_read: settings.header_read,
            shutdown_grace: settings.shutdown_grace,
            audit,
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

/// A full disk or a file-size limit (`RLIMIT_FSIZE`) must make the audit
/// file fail (closed or open, as configured), not kill the gateway:
/// SIGXFSZ's default action terminates the process, so it gets a handler.
fn survive_file_size_limits() -> Option<tokio::signal::unix::Signal> {
    const SIGXFSZ: i32 = 25;
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)).ok()
}
