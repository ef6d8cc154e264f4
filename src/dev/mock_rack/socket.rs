//! The websocket routes: the upgrade (gorilla's handshake checks, before
//! auth), exec with its `{pid}` resolution and `Value("command")`, log
//! streams, console and proxy echo sessions, and stdapi's stream ending.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::body::{respond, MockBody, Resp};
use super::form::Input;
use super::{drain, header_text, lock, processes, shell, stopped, Entry, Notes, Shared};
use crate::rack::ws::{self, Frame, Opcode};

/// Largest websocket frame the mock accepts from a client.
const MAX_WS_PAYLOAD: usize = 16 << 20;
/// Most client frames kept per recorded websocket.
const MAX_RECORDED_FRAMES: usize = 10_000;
/// How long exec waits for the client's stdin EOF frame.
const STDIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the mock waits for the client's close frame after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A websocket route the rack registers (`SOCKET` in the route table).
pub(crate) enum SocketRoute {
    Exec { app: String, pid: String },
    Shell,
    Logs(LogSource),
    Console { app: String, resource: String },
    Proxy,
}

pub(crate) enum LogSource {
    App(String),
    Service { app: String, service: String },
    Process { app: String, pid: String },
    Build { app: String, id: String },
    System,
}

pub(crate) fn socket_route(segs: &[&str]) -> Option<SocketRoute> {
    let s = |v: &str| v.to_owned();
    Some(match segs {
        ["apps", app, "logs"] => SocketRoute::Logs(LogSource::App(s(app))),
        ["apps", app, "services", service, "logs"] => SocketRoute::Logs(LogSource::Service {
            app: s(app),
            service: s(service),
        }),
        ["apps", app, "processes", pid, "logs"] => SocketRoute::Logs(LogSource::Process {
            app: s(app),
            pid: s(pid),
        }),
        ["apps", app, "builds", id, "logs"] => SocketRoute::Logs(LogSource::Build {
            app: s(app),
            id: s(id),
        }),
        ["apps", app, "processes", pid, "exec"] => SocketRoute::Exec {
            app: s(app),
            pid: s(pid),
        },
        ["apps", app, "resources", resource, "console"] => SocketRoute::Console {
            app: s(app),
            resource: s(resource),
        },
        ["proxy", _, _] => SocketRoute::Proxy,
        ["system", "logs"] => SocketRoute::Logs(LogSource::System),
        ["instances", _, "shell"] => SocketRoute::Shell,
        _ => return None,
    })
}

/// mux's SOCKET matcher: `GET` and `Upgrade` exactly `websocket`.
pub(crate) fn is_socket_request(req: &Request<Incoming>) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes() == b"websocket")
}

/// gorilla's handshake checks, in its order; `None` means acceptable.
fn handshake_refusal(headers: &HeaderMap) -> Option<StatusCode> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return Some(StatusCode::BAD_REQUEST);
    }
    if header_text(headers, "sec-websocket-version").as_deref() != Some("13") {
        return Some(StatusCode::BAD_REQUEST);
    }
    if let Some(origin) = header_text(headers, "origin") {
        let host = header_text(headers, "host").unwrap_or_default();
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        if !origin_host.eq_ignore_ascii_case(&host) {
            return Some(StatusCode::FORBIDDEN);
        }
    }
    let key_ok = header_text(headers, "sec-websocket-key")
        .and_then(|k| STANDARD.decode(k.trim()).ok())
        .is_some_and(|k| k.len() == 16);
    if !key_ok {
        return Some(StatusCode::BAD_REQUEST);
    }
    None
}

/// Everything a session needs from the upgrade request.
struct SocketCtx {
    shared: Arc<Shared>,
    route: SocketRoute,
    authorized: bool,
    /// The command the handler reads: `Value("command")` for exec (query
    /// or multipart before the `Command` header), the header for shell.
    command: String,
    /// exec's `Entrypoint` option (`true` only, as stdapi reads a `*bool`).
    entrypoint: bool,
    follow: bool,
    disable_stdin: bool,
    notes: Notes,
}

pub(crate) async fn upgrade(
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut req: Request<Incoming>,
    route: SocketRoute,
    entry: Option<Entry>,
) -> Resp {
    if let Some(status) = handshake_refusal(req.headers()) {
        let reason = status.canonical_reason().unwrap_or("Bad Request");
        let mut resp = respond(
            status,
            "text/plain; charset=utf-8",
            MockBody::full(format!("{reason}\n")),
        );
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return resp;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    // Go parses a multipart body even on a hijacked upgrade, so a body is
    // read before switching protocols.
    let body = drain(body, entry.as_ref()).await.unwrap_or_default();
    let input = Input::new(&Method::GET, &parts.headers, parts.uri.query(), &body.kept);
    let notes = Notes(entry.clone());
    notes.with(|rec| rec.form = input.form().cloned().collect());
    let key = header_text(&parts.headers, "sec-websocket-key").unwrap_or_default();
    let accept = ws::accept_key(key.trim());
    let command = match route {
        SocketRoute::Exec { .. } => input.value("command"),
        _ => input.header("command").unwrap_or_default(),
    };
    let ctx = SocketCtx {
        shared: shared.clone(),
        route,
        authorized: shared.authorized(&parts.headers),
        command,
        entrypoint: input.header_bool("entrypoint", false),
        follow: input.header_bool("follow", true),
        disable_stdin: input.header_bool("disable-stdin", false),
        notes,
    };
    if let Some(entry) = &entry {
        lock(entry).websocket = true;
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut conn = WsConn {
            io: TokioIo::new(upgraded),
            entry,
        };
        tokio::select! {
            _ = run_socket(&mut conn, ctx) => {}
            () = stopped(&mut stop) => {}
        }
    });

    let mut resp = Response::new(MockBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// The server end of an upgraded connection.
struct WsConn<S> {
    io: S,
    entry: Option<Entry>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    async fn send(&mut self, frame: Frame) -> io::Result<()> {
        ws::write_frame(&mut self.io, &frame, None).await
    }

    /// The next data or close frame; pings are answered on the way and data
    /// frames recorded.
    async fn recv(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let Some(frame) = ws::read_frame(&mut self.io, MAX_WS_PAYLOAD).await? else {
                return Ok(None);
            };
            match frame.opcode {
                Opcode::Ping => self.send(Frame::pong(frame.payload)).await?,
                Opcode::Pong => {}
                Opcode::Close => return Ok(Some(frame)),
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    if let Some(entry) = &self.entry {
                        let mut rec = lock(entry);
                        if rec.frames_in.len() < MAX_RECORDED_FRAMES {
                            rec.frames_in.push(frame.clone());
                        }
                    }
                    return Ok(Some(frame));
                }
                Opcode::Reserved(_) => return Ok(Some(frame)),
            }
        }
    }

    /// stdapi's ending: an error line when there is one, the empty binary
    /// EOF frame, then close 1000 and a short wait for the client's close.
    async fn finish(&mut self, error: Option<&str>) -> io::Result<()> {
        if let Some(message) = error {
            self.send(Frame::text(format!("ERROR: {message}\n")))
                .await?;
        }
        self.send(Frame::binary(Vec::new())).await?;
        self.send(Frame::close(1000, "")).await?;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(Some(frame)) = self.recv().await {
                if frame.opcode == Opcode::Close {
                    break;
                }
            }
        })
        .await;
        self.io.shutdown().await
    }

    /// Answers a client-initiated close and ends the connection.
    async fn close_reply(&mut self) -> io::Result<()> {
        self.send(Frame::close(1000, "")).await?;
        self.io.shutdown().await
    }
}

/// What an authorised websocket does after the lookup succeeded.
enum Session {
    /// A command in a pod (`env` is the pod's; empty for instance shells).
    Exec {
        words: Vec<String>,
        env: Vec<(String, String)>,
    },
    Logs {
        lines: Vec<String>,
        finite: bool,
    },
    Echo,
}

fn log_lines(prefix: &str) -> Vec<String> {
    (1..=3)
        .map(|n| format!("2026-01-01T00:00:00Z {prefix} line {n}\n"))
        .collect()
}

/// ProcessExec with `Entrypoint` (k/process.go:61-85): the entrypoint of
/// the build of the pod's release, split as shell words, goes before the
/// command; nothing is added when the build has none.
fn with_entrypoint(
    app: &super::state::AppState,
    pod: &super::state::Process,
    words: Vec<String>,
) -> Result<Vec<String>, String> {
    let release = app
        .release(&pod.release)
        .ok_or_else(|| format!("release not found: {}", pod.release))?;
    let build = app
        .build(&release.build)
        .ok_or_else(|| format!("build not found: {}", release.build))?;
    if build.entrypoint.is_empty() {
        return Ok(words);
    }
    let mut all = shell::split(&build.entrypoint).map_err(|err| err.to_string())?;
    all.extend(words);
    Ok(all)
}

/// Looks up what the route names, as the rack's handler would before
/// streaming; `Err` is the in-band error message.
fn prepare(ctx: &SocketCtx) -> Result<Session, String> {
    let shared = &ctx.shared;
    let state = lock(&shared.state);
    let app = |name: &str| {
        state
            .app(name)
            .ok_or_else(|| format!("app not found: {name}"))
    };
    Ok(match &ctx.route {
        SocketRoute::Exec { app: name, pid } => {
            let pod = processes::resolve_exec(app(name)?, pid, shared.ids.next())?;
            ctx.notes.note("exec.pod", pod.id.as_str());
            ctx.notes.note("exec.command", ctx.command.as_str());
            let mut words = shell::split(&ctx.command).map_err(|err| err.to_string())?;
            if ctx.entrypoint {
                words = with_entrypoint(app(name)?, pod, words)?;
            }
            ctx.notes.note("exec.argv", shell::join(&words));
            Session::Exec {
                words,
                env: pod.env.clone(),
            }
        }
        SocketRoute::Shell => Session::Exec {
            words: shell::split(&ctx.command).map_err(|err| err.to_string())?,
            env: Vec::new(),
        },
        SocketRoute::Console {
            app: name,
            resource,
        } => {
            if !app(name)?.resources.iter().any(|r| &r.name == resource) {
                return Err(format!("resource not found: {resource}"));
            }
            Session::Echo
        }
        SocketRoute::Proxy => Session::Echo,
        SocketRoute::Logs(source) => {
            let (prefix, finite) = match source {
                LogSource::App(name) => {
                    let prefix = app(name)?
                        .processes
                        .values()
                        .find(|p| p.kind == "service")
                        .map_or_else(
                            || format!("app/{name}"),
                            |p| format!("service/{}/{}", p.name, p.id),
                        );
                    (prefix, false)
                }
                LogSource::Service { app: name, service } => {
                    let pid = app(name)?
                        .processes
                        .values()
                        .find(|p| &p.name == service)
                        .map_or_else(|| format!("{service}-00000"), |p| p.id.clone());
                    (format!("service/{service}/{pid}"), false)
                }
                LogSource::Process { app: name, pid } => {
                    let process = app(name)?
                        .processes
                        .get(pid)
                        .ok_or_else(|| format!("process not found: {pid}"))?;
                    (format!("service/{}/{pid}", process.name), false)
                }
                // Mock builds are already complete, so their log stream
                // always ends (the CLI sends no Follow header for them).
                LogSource::Build { app: name, id } => {
                    if !app(name)?.builds.iter().any(|b| &b.id == id) {
                        return Err(format!("build not found: {id}"));
                    }
                    (format!("build/{id}"), true)
                }
                LogSource::System => ("system/rack".to_owned(), false),
            };
            Session::Logs {
                lines: log_lines(&prefix),
                finite,
            }
        }
    })
}

async fn run_socket<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut WsConn<S>,
    ctx: SocketCtx,
) -> io::Result<()> {
    if !ctx.authorized {
        return conn.finish(Some("invalid authentication")).await;
    }
    let session = match prepare(&ctx) {
        Ok(session) => session,
        Err(message) => return conn.finish(Some(&message)).await,
    };
    match session {
        Session::Exec { words, env } => exec_session(conn, &ctx, &words, &env).await,
        Session::Logs { lines, finite } => {
            for line in lines {
                conn.send(Frame::text(line)).await?;
            }
            if finite || !ctx.follow {
                return conn.finish(None).await;
            }
            loop {
                match conn.recv().await? {
                    None => return Ok(()),
                    Some(frame) if frame.opcode == Opcode::Close => {
                        return conn.close_reply().await
                    }
                    Some(_) => {}
                }
            }
        }
        Session::Echo => loop {
            match conn.recv().await? {
                None => return Ok(()),
                Some(frame) => match frame.opcode {
                    Opcode::Close => return conn.close_reply().await,
                    Opcode::Binary => return conn.finish(None).await,
                    Opcode::Text if !frame.payload.is_empty() => {
                        conn.send(Frame::text(frame.payload)).await?;
                    }
                    _ => {}
                },
            }
        },
    }
}

/// The scripted "process": output for the command, stdin echo until EOF,
/// then the exit marker.
async fn exec_session<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut WsConn<S>,
    ctx: &SocketCtx,
    words: &[String],
    env: &[(String, String)],
) -> io::Result<()> {
    let mut code = 0;
    match words.first().map(String::as_str) {
        Some("exit") => {
            code = words.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
        Some("echo") => {
            conn.send(Frame::text(format!("{}\n", words[1..].join(" "))))
                .await?;
        }
        Some("emit-invalid-utf8") => {
            conn.send(Frame::text(vec![0x66, 0xff, 0xfe, 0x0a])).await?;
        }
        Some("env") => {
            let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            conn.send(Frame::text(lines)).await?;
        }
        _ => {}
    }
    if !ctx.disable_stdin {
        let deadline = tokio::time::Instant::now() + STDIN_TIMEOUT;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, conn.recv()).await else {
                break;
            };
            let Some(frame) = next? else {
                return Ok(());
            };
            match frame.opcode {
                Opcode::Close => return conn.close_reply().await,
                Opcode::Binary => break,
                Opcode::Text if !frame.payload.is_empty() => {
                    conn.send(Frame::text(frame.payload)).await?;
                }
                _ => {}
            }
        }
    }
    conn.send(Frame::exit_code(code)).await?;
    conn.finish(None).await
}
