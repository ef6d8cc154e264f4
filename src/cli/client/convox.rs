//! Running the stock `convox` CLI through the gateway.
//!
//! The convox CLI takes its rack from `RACK_URL`, credential included, so
//! the gateway token goes there and nowhere else (not in argv, which other
//! users can read in `ps`). rack-gateway then *replaces itself* with convox
//! (`execve`) instead of running it as a child: signals (a terminal's
//! Ctrl-C, a `kill` aimed at rack-gateway), stdin/stdout/stderr and the
//! exit status all belong to convox with nothing in between to forward or
//! get wrong, and a signal death is reported to the shell as such (128 +
//! signal), exactly as if convox had been run directly.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::select::{self, Session};
use super::store::Store;
use super::ClientError;
use crate::cli::out::outln;

/// Where people get the convox CLI.
pub const INSTALL_URL: &str = "https://docs.convox.com/installation/cli";

/// `convox` on `PATH`, like a shell finds it.
fn find_convox(path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("convox"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `--rack`/`-r` among convox's own arguments would be silently ignored
/// (convox lets `RACK_URL` win), so `rack-gateway deploy -r production`
/// would deploy to the *selected* rack. Arguments after `--` are the
/// command's own and are left alone.
fn rack_flag_after_command(args: &[OsString]) -> Option<String> {
    args.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .find(|a| a == "--rack" || a == "-r" || a.starts_with("--rack=") || a.starts_with("-r="))
        .map(|a| a.split('=').next().unwrap_or_default().to_string())
}

/// Selects the rack and its login, with the expiry reminder.
fn session(flag: Option<&str>) -> Result<Session, ClientError> {
    let store = Store::load()?;
    let (rack, _) = select::rack(flag, &store)?;
    let session = select::session(&store, &rack)?;
    session.remind();
    Ok(session)
}

/// `rack-gateway [--rack R] <convox command...>`: only returns on failure.
pub fn passthrough(flag: Option<&str>, args: Vec<OsString>) -> Result<ExitCode, ClientError> {
    let convox =
        find_convox(std::env::var_os("PATH").as_deref()).ok_or(ClientError::ConvoxMissing)?;
    if let Some(flag) = rack_flag_after_command(&args) {
        return Err(ClientError::RackAfterCommand {
            flag,
            command: args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    let session = session(flag)?;
    let source = std::process::Command::new(&convox)
        .args(&args)
        .env(
            "RACK_URL",
            session.gateway.rack_url(&session.token, &session.rack),
        )
        .exec();
    Err(ClientError::Exec {
        path: convox,
        source,
    })
}

/// Quotes `s` for POSIX shells.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `rack-gateway env`: the `export RACK_URL=...` line for `eval`.
pub fn env(flag: Option<&str>) -> Result<ExitCode, ClientError> {
    let session = session(flag)?;
    outln!(
        "export RACK_URL={}",
        shell_quote(&session.gateway.rack_url(&session.token, &session.rack))
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn rack_flags_after_the_command_are_caught_before_dashdash() {
        assert_eq!(
            rack_flag_after_command(&args(&["deploy", "-r", "production"])).as_deref(),
            Some("-r")
        );
        assert_eq!(
            rack_flag_after_command(&args(&["apps", "--rack=production"])).as_deref(),
            Some("--rack")
        );
        assert_eq!(
            rack_flag_after_command(&args(&["run", "web", "--", "grep", "-r", "x"])),
            None
        );
        assert_eq!(
            rack_flag_after_command(&args(&["run", "command", "rake db:migrate -r", "-a", "x"])),
            None
        );
        assert_eq!(
            rack_flag_after_command(&args(&["env", "set", "A=-r"])),
            None
        );
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(
            shell_quote("https://convox:t@h/racks/s"),
            "'https://convox:t@h/racks/s'"
        );
    }

    #[test]
    fn convox_is_found_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("convox");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths(["/nonexistent".as_ref(), dir.path()]).unwrap();
        assert_eq!(find_convox(Some(&path)), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_convox(Some(&path)), Some(p));
        assert_eq!(find_convox(None), None);
    }
}
