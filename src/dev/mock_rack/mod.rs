//! An in-process mock of a Convox v3 rack API that records what it receives
//! and how it interpreted it.
//!
//! Integration tests, `rack-gateway demo` and the benchmark put it behind the
//! gateway. It is derived from the real rack's behaviour
//! (`/work/shared/rack-semantics.md`, `convox-api.md`), never from what the
//! gateway expects, so a test passes only if the rack would really execute
//! what was authorized:
//!
//! - HTTP Basic auth on every matched route, the password compared exactly
//!   as sent (still percent-escaped); the `jwt` username is refused. An empty
//!   password disables auth, as on the real rack.
//! - Unmatched paths get mux's `404 page not found` without any auth.
//! - Inputs are read as Go and stdapi read them (`form.rs`): urlencoded bodies
//!   only for POST/PUT/PATCH, multipart for every method, `Value(n)` falling
//!   through to the header `N` on every route that uses it.
//! - Releases store their env verbatim and fork from `parent-release` or the
//!   newest release (`releases.rs`); the env parser is [`parse_env`].
//! - Processes (`processes.rs`): run pods, exec resolving `{pid}` as a service
//!   name first, app `system` as the rack itself, files routes.
//! - Secret-bearing fields are returned where the rack returns them; the
//!   seeded secrets are the `SECRET_*` constants.
//! - Websocket routes need `GET` plus exactly `Upgrade: websocket`; the
//!   upgrade happens *before* auth, so auth and lookup failures arrive
//!   in-band as `ERROR: <msg>\n`. Every stream ends with an empty binary
//!   frame and a close 1000.
//! - Errors are `text/plain` `msg\n`, or `{"error":…}` when `Accept`
//!   mentions `application/json`.
//!
//! Seeded state: apps `myapp` (releases `RMYAPPRELAA`, `RMYAPPRELAB`
//! (current), build `BMYAPPBLDAA`, processes `web-abc12`, `worker-xyz34` and
//! the running build pod `build-mq2x7`) and `billing` (releases
//! `RBILLINGRAA`, `RBILLINGRAB` (current), build `BBILLINGBAA`, processes
//! `web-def56` and `worker-uvw78`); each app has a `db` postgres resource
//! whose URL holds a password, the config `api-token`, and services `web`
//! and `worker`. The rack has app `system` (pod `api-7d9f2`), the registry
//! `registry.mock` and the webhook resource `alerts`.
//!
//! Exec (`…/processes/{pid}/exec`, `/instances/{id}/shell`) runs a scripted
//! "process": `exit N` exits with N, `echo ARGS…` prints the words,
//! `emit-invalid-utf8` sends the bytes `66 ff fe 0a` in a text frame, `env`
//! prints the pod's env, and anything else exits 0. Stdin text frames are
//! echoed back unchanged; the exit marker follows the client's empty binary
//! (stdin EOF) frame, or 30 s, or immediately with `Disable-Stdin: true`.
//!
//! Object keys `generated/{n}` stream `n` bytes of [`generated_byte`]
//! without buffering, for large-download tests. A `Mock-Delay-Ms: N`
//! request header delays the response by N ms.
//!
//! Recording: every request is recorded on arrival (in a ring buffer of
//! `max_recorded` entries; 0 disables recording and body hashing for the
//! benchmark), with its decoded path and query, Go's view of the form, and
//! [`Recorded::interpreted`] notes saying what the mock did with it. Request
//! bodies are always streamed: hashed incrementally, only the first 64 KiB
//! kept in the record and at most 1 MiB in memory. A request's body fields
//! are final before its response is sent, and websocket frames from the
//! client are appended as they arrive.

mod body;
mod env;
pub(crate) mod form;
mod processes;
mod releases;
mod rest;
mod shell;
mod socket;
mod state;
#[cfg(test)]
mod tests;

pub use body::generated_byte;
pub use env::{parse_env, EnvTooLong, MAX_ENV_LINE};
pub use form::canonical_header_name;
pub use state::{
    JWT_TOKEN_PREFIX, SECRET_BUDGET_WEBHOOK, SECRET_BUILD_ARG, SECRET_BUILD_AUTH,
    SECRET_CONFIG_VALUE, SECRET_LOG_LINE, SECRET_MANIFEST_ENV, SECRET_REGISTRY_PASSWORD,
    SECRET_WEBHOOK_URL,
};

/// What `POST /instances/keyroll` answers: the new instance key pair's
/// private half, which only identities with `secrets read` may see.
pub const MOCK_PRIVATE_KEY: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nmock-private-key-material\n-----END RSA PRIVATE KEY-----";

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::rack::ws::Frame;
use body::{not_found_page, ApiError, Resp};
use socket::{is_socket_request, socket_route, upgrade};
use state::State;

/// How much of each request body a [`Recorded`] keeps.
const RECORDED_BODY_LIMIT: usize = 64 << 10;
/// How much of a request body is held in memory: form parsing and stored
/// object contents need it; anything longer is only counted and hashed.
const KEPT_BODY_LIMIT: usize = 1 << 20;
/// Size of the streamed `builds/{id}.tgz` export.
pub(crate) const BUILD_EXPORT_LEN: u64 = 256 << 10;
/// Size of streamed file and resource-data downloads.
pub(crate) const SMALL_STREAM_LEN: u64 = 64 << 10;
/// Upper bound for the `Mock-Delay-Ms` knob.
const MAX_DELAY_MS: u64 = 600_000;
/// First path segments the real rack (or its ingress) serves; anything else
/// is mux's unmatched-route 404.
const KNOWN_PREFIXES: &[&str] = &[
    "apps",
    "auth",
    "certificates",
    "custom",
    "events",
    "instances",
    "kubernetes",
    "letsencrypt",
    "proxy",
    "registries",
    "resources",
    "system",
    "v2",
];

pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// How to run a [`MockRack`].
#[derive(Clone)]
pub struct MockOptions {
    /// Usually `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The rack password; empty disables auth, as on the real rack.
    pub password: String,
    /// Serve HTTPS with this config when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Ring-buffer size of recorded requests; 0 records nothing.
    pub max_recorded: usize,
}

impl MockOptions {
    /// Plain HTTP on an ephemeral loopback port, recording up to 10 000
    /// requests.
    pub fn new(password: impl Into<String>) -> Self {
        MockOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            password: password.into(),
            tls: None,
            max_recorded: 10_000,
        }
    }
}

/// What the mock received in one request.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub method: String,
    /// The request-target as received: path plus `?query`, a trailing `?`
    /// included.
    pub target: String,
    /// All headers in arrival order with duplicates kept (hyper groups
    /// repeated names together). Names are lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: u64,
    /// Hex SHA-256 of the whole body; empty until the body has ended.
    pub body_sha256: String,
    /// The first 64 KiB of the body.
    pub body: Vec<u8>,
    /// True once the request was upgraded to a websocket.
    pub websocket: bool,
    /// Data frames (text, binary, continuation) the client sent on the
    /// websocket, in order, capped at 10 000.
    pub frames_in: Vec<Frame>,
    /// The percent-decoded path the routes matched on.
    pub decoded_path: String,
    /// The URL query decoded as Go's `URL.Query()` decodes it, in order.
    pub query_pairs: Vec<(String, String)>,
    /// `r.Form` as the rack saw it (urlencoded body, query, multipart), for
    /// REST requests and the exec upgrade.
    pub form: Vec<(String, String)>,
    /// What the mock made of the request, in order: `(key, value)` notes
    /// such as `exec.pod`, `exec.command`, `run.pod`, `run.command`,
    /// `run.release`, `release.base`, `release.env`, `release.build`,
    /// `build.url`, `config.value`, `files.file`, and `input.<name>` for
    /// each input a route read (through the header fallback or not).
    pub interpreted: Vec<(String, String)>,
}

impl Recorded {
    /// The first value of a header (case-insensitive), lossily decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of a header (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The raw query, if the target had a `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The last note recorded under `key` (see [`Recorded::interpreted`]).
    pub fn interpretation(&self, key: &str) -> Option<&str> {
        self.interpreted
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a handler writes what it made of the request; a no-op when
/// recording is off.
#[derive(Clone, Default)]
pub(crate) struct Notes(Option<Entry>);

impl Notes {
    pub(crate) fn note(&self, key: impl Into<String>, value: impl Into<String>) {
        if let Some(entry) = &self.0 {
            lock(entry).interpreted.push((key.into(), value.into()));
        }
    }

    fn with(&self, f: impl FnOnce(&mut Recorded)) {
        if let Some(entry) = &self.0 {
            f(&mut lock(entry));
        }
    }
}

/// A running mock rack. Dropping it stops the listener, every connection
/// and every websocket session.
pub struct MockRack {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl MockRack {
    /// Binds the listener and starts serving in the background.
    pub async fn start(opts: MockOptions) -> io::Result<MockRack> {
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&opts)?);
        let (stop, stop_rx) = watch::channel(false);
        let tls = opts.tls.is_some();
        let acceptor = opts.tls.map(TlsAcceptor::from);
        tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stop_rx));
        Ok(MockRack {
            addr,
            tls,
            shared,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Snapshot of the recorded requests, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorder.entries)
            .iter()
            .map(|entry| lock(entry).clone())
            .collect()
    }

    /// The most recent recorded request.
    pub fn last_request(&self) -> Option<Recorded> {
        lock(&self.shared.recorder.entries)
            .back()
            .map(|entry| lock(entry).clone())
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        lock(&self.shared.recorder.entries).clear();
    }

    /// Stops the mock (the same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for MockRack {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

type Entry = Arc<Mutex<Recorded>>;

struct Recorder {
    cap: usize,
    entries: Mutex<VecDeque<Entry>>,
}

impl Recorder {
    fn arrive(&self, req: &Request<Incoming>) -> Option<Entry> {
        if self.cap == 0 {
            return None;
        }
        let uri = req.uri();
        let target = match (uri.scheme(), uri.path_and_query()) {
            (None, Some(pq)) => pq.as_str().to_owned(),
            _ => uri.to_string(),
        };
        let entry = Arc::new(Mutex::new(Recorded {
            method: req.method().as_str().to_owned(),
            target,
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            ..Recorded::default()
        }));
        let mut entries = lock(&self.entries);
        if entries.len() >= self.cap {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        Some(entry)
    }
}

/// Cheap non-cryptographic ids (request ids, process suffixes, release
/// ids): a splitmix64 sequence seeded from the system RNG.
struct Ids {
    state: AtomicU64,
}

impl Ids {
    fn new() -> io::Result<Self> {
        let mut seed = [0u8; 8];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| io::Error::other("system random number generator failed"))?;
        Ok(Ids {
            state: AtomicU64::new(u64::from_le_bytes(seed)),
        })
    }

    fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn string(&self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[(self.next() % alphabet.len() as u64) as usize]))
            .collect()
    }
}

struct Shared {
    password: String,
    state: Mutex<State>,
    recorder: Recorder,
    ids: Ids,
}

impl Shared {
    fn new(opts: &MockOptions) -> io::Result<Self> {
        Ok(Shared {
            password: opts.password.clone(),
            state: Mutex::new(State::seeded(&opts.password)),
            recorder: Recorder {
                cap: opts.max_recorded,
                entries: Mutex::new(VecDeque::new()),
            },
            ids: Ids::new()?,
        })
    }

    /// The rack's Basic check: username ignored unless `jwt` (refused, the
    /// mock has no signing key), password compared in constant time exactly
    /// as sent.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.password.is_empty() {
            return true;
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(&value[6..]) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        user != b"jwt" && constant_time_eq(password, self.password.as_bytes())
    }

    fn release_id(&self) -> String {
        format!("R{}", self.ids.string(UPPER, 10))
    }

    fn build_id(&self) -> String {
        format!("B{}", self.ids.string(UPPER, 10))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Usually EMFILE under load: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(TokioIo::new(tls), shared, stop).await;
                    }
                }
                None => serve(TokioIo::new(tcp), shared, stop).await,
            }
        });
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_stop = stop.clone();
    let service = service_fn(move |req| handle(shared.clone(), svc_stop.clone(), req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        () = stopped(&mut stop) => {}
    }
}

/// The request body after streaming it to the end.
#[derive(Default)]
struct Drained {
    len: u64,
    /// The first 1 MiB.
    kept: Vec<u8>,
}

impl Drained {
    fn complete(&self) -> bool {
        self.len == self.kept.len() as u64
    }
}

/// Streams the body to its end: counts, hashes (only when recording) and
/// keeps the first 1 MiB, then fills in the record.
async fn drain(mut body: Incoming, entry: Option<&Entry>) -> Result<Drained, hyper::Error> {
    let mut hasher = entry.map(|_| ring::digest::Context::new(&ring::digest::SHA256));
    let mut drained = Drained::default();
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                failure = Some(err);
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&data);
        }
        let room = KEPT_BODY_LIMIT.saturating_sub(drained.kept.len());
        drained
            .kept
            .extend_from_slice(&data[..room.min(data.len())]);
        drained.len += data.len() as u64;
    }
    if let (Some(entry), Some(hasher)) = (entry, hasher) {
        let mut rec = lock(entry);
        rec.body_len = drained.len;
        rec.body_sha256 = crate::hex::encode(hasher.finish().as_ref());
        rec.body = drained.kept[..drained.kept.len().min(RECORDED_BODY_LIMIT)].to_vec();
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(drained),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
}

/// Splits the decoded path into segments. `None` when a segment a route
/// variable would need is empty (mux variables never match empty text);
/// only an object key may contain empty segments.
fn split_path(path: &str) -> Option<Vec<&str>> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let strict = match segs.as_slice() {
        ["apps", _, "objects", _, ..] => 3,
        _ => segs.len(),
    };
    segs[..strict].iter().all(|s| !s.is_empty()).then_some(segs)
}

async fn handle(
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let entry = shared.recorder.arrive(&req);
    let delay = header_text(req.headers(), "mock-delay-ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.min(MAX_DELAY_MS)));
    let wants_json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("application/json"));
    let path = percent_decode(req.uri().path().as_bytes())
        .decode_utf8_lossy()
        .into_owned();
    let segs = split_path(&path);
    let notes = Notes(entry.clone());
    notes.with(|rec| {
        rec.decoded_path = path.clone();
        rec.query_pairs = form::parse_query(req.uri().query().unwrap_or(""));
    });

    let socket = segs.as_deref().and_then(socket_route);
    let mut resp = match (segs.as_deref(), socket) {
        (Some(_), Some(route)) if is_socket_request(&req) => {
            upgrade(&shared, stop, req, route, entry).await
        }
        (Some(segs), None) if KNOWN_PREFIXES.contains(&segs[0]) => {
            let (parts, body) = req.into_parts();
            match drain(body, entry.as_ref()).await {
                Err(_) => ApiError::new(StatusCode::BAD_REQUEST, "error reading request body")
                    .render(wants_json),
                Ok(_) if !shared.authorized(&parts.headers) => {
                    let mut resp =
                        ApiError::new(StatusCode::UNAUTHORIZED, "invalid authentication")
                            .render(wants_json);
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"convox\""),
                    );
                    resp
                }
                Ok(body) => {
                    let input = form::Input::new(
                        &parts.method,
                        &parts.headers,
                        parts.uri.query(),
                        &body.kept,
                    );
                    notes.with(|rec| rec.form = input.form().cloned().collect());
                    let ctx = rest::Req {
                        method: &parts.method,
                        segs,
                        input,
                        body,
                        notes,
                    };
                    rest::rest(&shared, &ctx).unwrap_or_else(|err| err.render(wants_json))
                }
            }
        }
        _ => {
            // Unmatched routes (and socket paths without the exact upgrade
            // header) are mux's 404; the body is still read so the record is
            // complete.
            let _ = drain(req.into_body(), entry.as_ref()).await;
            not_found_page()
        }
    };

    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let request_id = shared.ids.string(ALNUM, 12);
    let headers = resp.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", id);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(resp)
}
