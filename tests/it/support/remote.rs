//! Git on the command line for tests that need a real remote: `git` with
//! an isolated configuration and a fixed author, and `git daemon` serving
//! bare repositories on a loopback port.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::free_port;

/// Runs `git <args>` in `dir` with `home` as HOME, no system or global
/// configuration, and the test author; fails the test if git fails.
pub fn git(dir: &Path, home: &Path, args: &[&str]) {
    run_ok(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Policy Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Policy Author")
            .env("GIT_COMMITTER_EMAIL", "author@example.com"),
    );
}

/// Runs a command (no stdin) to completion; fails the test, showing its
/// output, if it fails.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `git daemon` serving a base directory; killed (by its own handle) on drop.
pub struct Daemon {
    child: std::process::Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        let port = free_port();
        let mut child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                &format!("--base-path={}", base.display()),
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                base.to_str().unwrap(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Readiness, not a timed assertion: poll until the port accepts.
        for _ in 0..400 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Daemon { child, port };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("git daemon exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        panic!("git daemon did not start listening on {port}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Overwrites every regular file under `path` (or `path` itself) with
/// garbage of its length: a damaged git cache.
pub fn scribble(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            scribble(&entry.unwrap().path());
        }
        return;
    }
    let len = std::fs::metadata(path).unwrap().len() as usize;
    // Loose objects are read-only; the owner may still replace them.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, vec![b'#'; len.max(1)]).unwrap();
}
