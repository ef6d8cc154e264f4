//! The real `rack-gateway` binary as a process: run a command to
//! completion, set one up as a person runs it ([`cli`]), or start a server
//! ([`Proc`]) that is waited on until it listens, has everything it writes
//! collected, and is killed on drop; or log in with a pasted code
//! ([`PastedLogin`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use super::wait::DEADLINE;

/// Path of the built binary, for tests that run it as a process.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rack-gateway"))
}

/// Runs `rack-gateway <args>` with exactly `env` to completion: (exit
/// code, stdout, stderr).
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        DEADLINE,
        Command::new(bin())
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("rack-gateway {args:?} did not exit"))
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rack-gateway <args>` as a person runs it from the throwaway home
/// `root`: a cleared environment, `root/bin` first on PATH, HOME
/// `root/home` and the config under `root/config`; killed on drop.
pub fn cli(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", root.join("bin").display()),
        )
        .env("HOME", root.join("home"))
        .env("XDG_CONFIG_HOME", root.join("config"))
        .kill_on_drop(true);
    c
}

/// A running `rack-gateway` server; everything it writes (stdout and
/// stderr, line by line) is collected.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    out: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(r: impl AsyncRead + Unpin + Send + 'static, out: Arc<Mutex<String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut line).await {
            if n == 0 {
                break;
            }
            let mut o = out.lock().unwrap();
            o.push_str(&String::from_utf8_lossy(&line));
            if !line.ends_with(b"\n") {
                o.push('\n');
            }
            line.clear();
        }
    })
}

/// The listening address from the start-up line (text or JSON format).
fn serving_addr(out: &str) -> Option<SocketAddr> {
    let line = out.lines().find(|l| l.contains("rack-gateway serving"))?;
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return v["addr"].as_str()?.parse().ok();
    }
    let rest = line.split("addr=").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The demo's address, once it has printed everything up to "Press Ctrl-C".
fn demo_addr(out: &str) -> Option<SocketAddr> {
    if !out.contains("Press Ctrl-C") {
        return None;
    }
    let rest = out
        .split("rack-gateway demo is running at http://")
        .nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

impl Proc {
    /// Starts `rack-gateway <args>` with exactly `env` and waits for it to
    /// listen.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_until(args, env, serving_addr).await
    }

    /// [`Proc::spawn`] with JSON logs (`RACK_GATEWAY_LOG_FORMAT=json`).
    pub async fn spawn_json(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut all = vec![("RACK_GATEWAY_LOG_FORMAT", "json")];
        all.extend_from_slice(env);
        Proc::spawn(args, &all).await
    }

    /// `rack-gateway demo` on a free loopback port with exactly `env`,
    /// waited on until it has printed its identities and instructions.
    pub async fn demo(env: &[(&str, &str)]) -> Proc {
        Proc::spawn_until(&["demo", "--listen", "127.0.0.1:0"], env, demo_addr).await
    }

    /// Starts `rack-gateway <args>` with exactly `env` and waits until
    /// `ready` finds the listening address in everything written so far.
    async fn spawn_until(
        args: &[&str],
        env: &[(&str, &str)],
        ready: fn(&str) -> Option<SocketAddr>,
    ) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), out.clone()),
        ];
        let until = Instant::now() + DEADLINE;
        let addr = loop {
            if let Some(a) = ready(&out.lock().unwrap()) {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("gateway exited {status:?}: {}", out.lock().unwrap());
            }
            assert!(
                Instant::now() < until,
                "gateway did not start: {}",
                out.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        Proc {
            child,
            addr,
            out,
            readers,
        }
    }

    /// `rack-gateway serve --config <dir> <args>` with exactly `env`.
    pub async fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut all = vec!["serve", "--config", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        Proc::spawn(&all, env).await
    }

    /// [`Proc::serve`] with the racks' password (`RACK_PW`) and `env`.
    pub async fn serve_racks(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut all = vec![("RACK_PW", super::RACK_PASSWORD)];
        all.extend_from_slice(env);
        Proc::serve(dir, args, &all).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id, for tools that act on the running process.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends `sig` (as `kill` spells it: `-HUP`, `-TERM`).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Whether the process has exited (it should not have).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Everything written so far.
    pub fn log(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for a clean exit (after [`Proc::sigterm`]) and returns all
    /// output.
    pub async fn wait_exit(mut self) -> String {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(DEADLINE, r).await;
        }
        let out = self.log();
        assert!(status.success(), "{status:?}\n{out}");
        out
    }

    /// SIGTERM; the process must exit cleanly. Returns all output.
    pub async fn stop(self) -> String {
        self.sigterm();
        self.wait_exit().await
    }
}

/// `rack-gateway audit verify FILE`: (exit code, stdout, stderr).
pub fn audit_verify(file: &Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin())
        .args(["audit", "verify"])
        .arg(file)
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `serve --config <dir>` with trace logging and exactly `env` besides.
pub async fn spawn_serve(dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut all = vec![("RACK_GATEWAY_LOG", "trace")];
    all.extend_from_slice(env);
    Proc::serve(dir, &[], &all).await
}

/// A `login --no-browser` under way: the CLI printed its [`link`] and
/// waits for the code, which the test gets by playing the person's browser.
///
/// [`link`]: PastedLogin::link
pub struct PastedLogin {
    pub link: String,
    child: Child,
    stderr: Lines<BufReader<ChildStderr>>,
    printed: String,
}

impl PastedLogin {
    /// Spawns `command` with its stdio piped and reads its stderr until
    /// the first `http://` link.
    pub async fn start(command: &mut Command, limit: Duration) -> PastedLogin {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut printed = String::new();
        let link = tokio::time::timeout(limit, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(at) = line.find("http://") {
                    return line[at..].trim().to_string();
                }
            }
            panic!("no login link printed:\n{printed}");
        })
        .await
        .expect("the link is printed");
        PastedLogin {
            link,
            child,
            stderr,
            printed,
        }
    }

    /// Pastes `input` and waits for the CLI to exit: its status, stdout
    /// and all of stderr.
    pub async fn paste(mut self, input: &str, limit: Duration) -> (ExitStatus, String, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(limit, self.child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            self.printed,
        )
    }
}
