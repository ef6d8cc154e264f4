//! An in-process mock of a Convox v3 rack API that records what it receives.
//!
//! Integration tests, `rack-gateway demo` and the benchmark put it behind the
//! gateway, so it mimics the real rack where the gateway or the stock CLI
//! can tell the difference (§1.3, §1.4, §6.2 and §12 of the Convox rack API
//! reference):
//!
//! - HTTP Basic auth on every matched route, the password compared exactly
//!   as sent (still percent-escaped); the `jwt` username is refused. An empty
//!   password disables auth, as on the real rack.
//! - Unmatched paths get mux's `404 page not found` without any auth.
//! - Websocket routes need `GET` plus exactly `Upgrade: websocket`; the
//!   upgrade happens *before* auth, so auth and lookup failures arrive
//!   in-band as `ERROR: <msg>\n`. Every stream ends with an empty binary
//!   frame and a close 1000.
//! - Errors are `text/plain` `msg\n`, or `{"error":…}` when `Accept`
//!   mentions `application/json`.
//!
//! Seeded state: apps `myapp` (releases `RMYAPPRELAA`, `RMYAPPRELAB`
//! (current), build `BMYAPPBLDAA`, processes `web-abc12` and `worker-xyz34`)
//! and `billing` (releases `RBILLINGRAA`, `RBILLINGRAB` (current), build
//! `BBILLINGBAA`, processes `web-def56` and `worker-uvw78`); each app has a
//! `db` postgres resource whose URL holds a password, and services `web` and
//! `worker`.
//!
//! Exec (`…/processes/{pid}/exec`, `/instances/{id}/shell`) reads the
//! command from `?command=` first, then the `Command` header (as the rack
//! does): `exit N` exits with N, `echo ARGS…` prints the words,
//! `emit-invalid-utf8` sends the bytes `66 ff fe 0a` in a text frame, and
//! anything else exits 0. Stdin text frames are echoed back unchanged; the
//! exit marker follows the client's empty binary (stdin EOF) frame, or 30 s,
//! or immediately with `Disable-Stdin: true`.
//!
//! Object keys `generated/{n}` stream `n` bytes of [`generated_byte`]
//! without buffering, for large-download tests. A `Mock-Delay-Ms: N`
//! request header delays the response by N ms.
//!
//! Recording: every request is recorded on arrival (in a ring buffer of
//! `max_recorded` entries; 0 disables recording and body hashing for the
//! benchmark). Request bodies are always streamed: hashed incrementally,
//! only the first 64 KiB kept in the record and at most 1 MiB in memory.
//! A request's body fields are final before its response is sent, and
//! websocket frames from the client are appended as they arrive.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::rack::ws::{self, Frame, Opcode};

/// How much of each request body a [`Recorded`] keeps.
const RECORDED_BODY_LIMIT: usize = 64 << 10;
/// How much of a request body is held in memory: form parsing and stored
/// object contents need it; anything longer is only counted and hashed.
const KEPT_BODY_LIMIT: usize = 1 << 20;
/// Chunk size of generated (streamed) response bodies.
const STREAM_CHUNK: usize = 64 << 10;
/// Period of the [`generated_byte`] pattern.
const PATTERN_PERIOD: usize = 251;
/// Size of the streamed `builds/{id}.tgz` export.
const BUILD_EXPORT_LEN: u64 = 256 << 10;
/// Size of streamed file and resource-data downloads.
const SMALL_STREAM_LEN: u64 = 64 << 10;
/// Largest websocket frame the mock accepts from a client.
const MAX_WS_PAYLOAD: usize = 16 << 20;
/// Most client frames kept per recorded websocket.
const MAX_RECORDED_FRAMES: usize = 10_000;
/// How long exec waits for the client's stdin EOF frame.
const STDIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the mock waits for the client's close frame after its own.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
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

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";

const SEED_MANIFEST: &str = "services:\n  web:\n    build: .\n    command: bin/web\n    port: 3000\n  worker:\n    build: .\n    command: bin/worker\n";

/// Byte `i` of the deterministic pattern served for `generated/{n}` objects
/// and other streamed downloads.
pub fn generated_byte(i: u64) -> u8 {
    ((i * 31 + 7) % PATTERN_PERIOD as u64) as u8
}

/// One period plus one chunk of the pattern, so any chunk at any offset is a
/// zero-copy slice of it.
fn pattern_table() -> &'static Bytes {
    static TABLE: OnceLock<Bytes> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..(PATTERN_PERIOD + STREAM_CHUNK) as u64)
            .map(generated_byte)
            .collect::<Vec<u8>>()
            .into()
    })
}

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
            state: Mutex::new(State::seeded()),
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

// ---------------------------------------------------------------------------
// State and wire shapes (pkg/structs in convox/convox)
// ---------------------------------------------------------------------------

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct App {
    generation: String,
    locked: bool,
    name: String,
    release: String,
    router: String,
    status: String,
    parameters: BTreeMap<String, String>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Release {
    id: String,
    app: String,
    build: String,
    env: String,
    manifest: String,
    description: String,
    created: String,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Build {
    id: String,
    app: String,
    description: String,
    entrypoint: String,
    git_sha: String,
    logs: String,
    manifest: String,
    process: String,
    release: String,
    reason: String,
    repository: String,
    status: String,
    started: String,
    ended: String,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Process {
    id: String,
    app: String,
    command: String,
    cpu: f64,
    host: String,
    image: String,
    instance: String,
    memory: f64,
    /// The service name.
    name: String,
    ports: Vec<String>,
    release: String,
    started: String,
    status: String,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Resource {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    parameters: BTreeMap<String, String>,
    status: String,
    #[serde(rename = "type")]
    kind: String,
    url: String,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ServicePort {
    balancer: u16,
    certificate: String,
    container: u16,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Service {
    count: u32,
    cpu: u32,
    domain: String,
    gpu: u32,
    gpu_vendor: String,
    memory: u32,
    name: String,
    nlb: Vec<ServicePort>,
    ports: Vec<ServicePort>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct System {
    count: u32,
    domain: String,
    name: String,
    provider: String,
    rack_domain: String,
    region: String,
    status: String,
    #[serde(rename = "type")]
    kind: String,
    version: String,
}

struct StoredObject {
    /// Kept only for bodies up to 1 MiB.
    content: Option<Bytes>,
    len: u64,
}

struct AppState {
    app: App,
    /// Oldest first.
    releases: Vec<Release>,
    /// Oldest first.
    builds: Vec<Build>,
    processes: BTreeMap<String, Process>,
    resources: Vec<Resource>,
    services: Vec<Service>,
    objects: HashMap<String, StoredObject>,
}

struct State {
    apps: BTreeMap<String, AppState>,
}

struct Seed<'a> {
    name: &'a str,
    short: &'a str,
    env_old: &'a str,
    env: &'a str,
    processes: [(&'a str, &'a str); 2],
    db_url: &'a str,
}

impl State {
    fn seeded() -> Self {
        let seeds = [
            Seed {
                name: "myapp",
                short: "MYAPP",
                env_old: "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nSECRET_KEY=s3cr3t",
                env: "DATABASE_URL=postgres://u:dbsecret@db:5432/x\nSECRET_KEY=s3cr3t\nFEATURE_X=1",
                processes: [("web-abc12", "web"), ("worker-xyz34", "worker")],
                db_url: "postgres://app:dbpass@db.myapp.mock:5432/app",
            },
            Seed {
                name: "billing",
                short: "BILLING",
                env_old: "DATABASE_URL=postgres://b:billsecret@db:5432/billing\nSTRIPE_KEY=sk_test_mock",
                env: "DATABASE_URL=postgres://b:billsecret@db:5432/billing\nSTRIPE_KEY=sk_test_mock\nFEATURE_X=0",
                processes: [("web-def56", "web"), ("worker-uvw78", "worker")],
                db_url: "postgres://app:billpass@db.billing.mock:5432/app",
            },
        ];
        let apps = seeds
            .iter()
            .map(|s| (s.name.to_owned(), seed_app(s)))
            .collect();
        State { apps }
    }
}

/// Pads an id body with `A`s to the rack's 10-letter form
/// (`MYAPP` + `BLD` → `MYAPPBLDAA`).
fn padded_id(prefix: char, body: &str) -> String {
    format!("{prefix}{body:A<10}")
}

fn seed_app(seed: &Seed<'_>) -> AppState {
    let name = seed.name.to_owned();
    let (rel_suffix, bld_suffix) = if seed.short.len() > 5 {
        ("R", "B")
    } else {
        ("REL", "BLD")
    };
    let build_id = padded_id('B', &format!("{}{bld_suffix}", seed.short));
    let old_id = padded_id('R', &format!("{}{rel_suffix}", seed.short));
    let current_id = format!("{}B", &old_id[..old_id.len() - 1]);
    let release = |id: &str, env: &str, created: &str| Release {
        id: id.to_owned(),
        app: name.clone(),
        build: build_id.clone(),
        env: env.to_owned(),
        manifest: SEED_MANIFEST.to_owned(),
        description: String::new(),
        created: created.to_owned(),
    };
    let processes = seed
        .processes
        .iter()
        .map(|(id, service)| {
            let process = Process {
                id: (*id).to_owned(),
                app: name.clone(),
                command: format!("bin/{service}"),
                cpu: 0.0,
                host: String::new(),
                image: format!("registry.mock/{name}:{service}.{build_id}"),
                instance: "node-1".to_owned(),
                memory: 0.0,
                name: (*service).to_owned(),
                ports: Vec::new(),
                release: current_id.clone(),
                started: "2026-01-02T00:00:00Z".to_owned(),
                status: "running".to_owned(),
            };
            ((*id).to_owned(), process)
        })
        .collect();
    let service = |service: &str, count: u32, ports: Vec<ServicePort>| Service {
        count,
        cpu: 256,
        domain: if ports.is_empty() {
            String::new()
        } else {
            format!("{service}.{name}.router.mock")
        },
        gpu: 0,
        gpu_vendor: String::new(),
        memory: 512,
        name: service.to_owned(),
        nlb: Vec::new(),
        ports,
    };
    let web_ports = vec![ServicePort {
        balancer: 443,
        certificate: String::new(),
        container: 3000,
    }];
    AppState {
        app: App {
            generation: "3".to_owned(),
            locked: false,
            name: name.clone(),
            release: current_id.clone(),
            router: "router.mock".to_owned(),
            status: "running".to_owned(),
            parameters: BTreeMap::new(),
        },
        releases: vec![
            release(&old_id, seed.env_old, "2026-01-01T00:00:00Z"),
            release(&current_id, seed.env, "2026-01-02T00:00:00Z"),
        ],
        builds: vec![Build {
            id: build_id.clone(),
            app: name.clone(),
            description: "initial".to_owned(),
            entrypoint: String::new(),
            git_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            logs: String::new(),
            manifest: SEED_MANIFEST.to_owned(),
            process: String::new(),
            release: old_id.clone(),
            reason: String::new(),
            repository: String::new(),
            status: "complete".to_owned(),
            started: "2026-01-01T00:00:00Z".to_owned(),
            ended: "2026-01-01T00:01:00Z".to_owned(),
        }],
        processes,
        resources: vec![Resource {
            name: "db".to_owned(),
            parameters: BTreeMap::new(),
            status: "running".to_owned(),
            kind: "postgres".to_owned(),
            url: seed.db_url.to_owned(),
        }],
        services: vec![
            service("web", 2, web_ports),
            service("worker", 1, Vec::new()),
        ],
        objects: HashMap::new(),
    }
}

// ---------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------

/// Response body: a buffer, or a lazily generated pattern stream (chunked
/// on the wire, as the rack's streamed responses are).
enum MockBody {
    Full(Option<Bytes>),
    Pattern { offset: u64, remaining: u64 },
}

impl MockBody {
    fn empty() -> Self {
        MockBody::Full(None)
    }

    fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        MockBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    fn pattern(len: u64) -> Self {
        MockBody::Pattern {
            offset: 0,
            remaining: len,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            MockBody::Full(bytes) => bytes.take().map(http_body::Frame::data),
            MockBody::Pattern { offset, remaining } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(STREAM_CHUNK as u64) as usize;
                    let start = (*offset % PATTERN_PERIOD as u64) as usize;
                    *offset += n as u64;
                    *remaining -= n as u64;
                    Some(http_body::Frame::data(
                        pattern_table().slice(start..start + n),
                    ))
                }
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Pattern { .. } => SizeHint::default(),
        }
    }
}

type Resp = Response<MockBody>;

fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn ok() -> Resp {
    respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        MockBody::full("ok\n"),
    )
}

/// stdapi renders objects pretty-printed with two-space indents.
fn json<T: Serialize + ?Sized>(value: &T) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    respond(StatusCode::OK, "application/json", MockBody::full(body))
}

fn stream(len: u64) -> Resp {
    respond(
        StatusCode::OK,
        "application/octet-stream",
        MockBody::pattern(len),
    )
}

fn not_found_page() -> Resp {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        MockBody::full("404 page not found\n"),
    )
}

/// A handler error the way stdapi renders it.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(kind: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{kind} not found: {id}"))
    }

    fn render(self, wants_json: bool) -> Resp {
        if wants_json {
            let body = serde_json::json!({ "error": self.message }).to_string();
            respond(self.status, "application/json", MockBody::full(body))
        } else {
            respond(
                self.status,
                "text/plain; charset=utf-8",
                MockBody::full(format!("{}\n", self.message)),
            )
        }
    }
}

type ApiResult = Result<Resp, ApiError>;

// ---------------------------------------------------------------------------
// Server plumbing
// ---------------------------------------------------------------------------

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
        rec.body_sha256 = hex(hasher.finish().as_ref());
        rec.body = drained.kept[..drained.kept.len().min(RECORDED_BODY_LIMIT)].to_vec();
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(drained),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
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
    mut req: Request<Incoming>,
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

    let socket = segs.as_deref().and_then(socket_route);
    let mut resp = match (segs.as_deref(), socket) {
        (Some(_), Some(route)) if is_socket_request(&req) => {
            upgrade(&shared, stop, &mut req, route, entry)
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
                    let ctx = Req::new(&parts, segs, body);
                    rest(&shared, &ctx).unwrap_or_else(|err| err.render(wants_json))
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

// ---------------------------------------------------------------------------
// REST routes
// ---------------------------------------------------------------------------

/// A drained REST request with its form parsed.
struct Req<'a> {
    method: &'a Method,
    segs: &'a [&'a str],
    headers: &'a HeaderMap,
    /// Form body values first, then query values, as Go's `r.Form` orders
    /// them.
    form: Vec<(String, String)>,
    body: Drained,
}

impl<'a> Req<'a> {
    fn new(parts: &'a http::request::Parts, segs: &'a [&'a str], body: Drained) -> Self {
        let mut form = Vec::new();
        let is_form = header_text(&parts.headers, "content-type")
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if is_form && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            parse_urlencoded(&body.kept, &mut form);
        }
        if let Some(query) = parts.uri.query() {
            parse_urlencoded(query.as_bytes(), &mut form);
        }
        Req {
            method: &parts.method,
            segs,
            headers: &parts.headers,
            form,
            body,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        header_text(self.headers, name)
    }
}

fn parse_urlencoded(input: &[u8], out: &mut Vec<(String, String)>) {
    let decode = |raw: &[u8]| {
        let plus_as_space: Vec<u8> = raw
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_decode(&plus_as_space)
            .decode_utf8_lossy()
            .into_owned()
    };
    for pair in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        out.push((decode(key), decode(value)));
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (Go's time JSON form).
fn rfc3339(secs: u64) -> String {
    crate::clock::rfc3339(secs as i64)
}

fn system() -> System {
    System {
        count: 3,
        domain: "router.mock".to_owned(),
        name: "mock".to_owned(),
        provider: "aws".to_owned(),
        rack_domain: "api.mock".to_owned(),
        region: "us-east-1".to_owned(),
        status: "running".to_owned(),
        kind: "production".to_owned(),
        version: "3.18.11".to_owned(),
    }
}

/// What the mock answers for a path the rack serves but the mock does not
/// model.
/// What `POST /instances/keyroll` answers: the new instance key pair's
/// private half, which only identities with `secrets read` may see.
pub const MOCK_PRIVATE_KEY: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nmock-private-key-material\n-----END RSA PRIVATE KEY-----";

fn generic(method: &Method) -> Resp {
    match *method {
        Method::GET => json(&serde_json::json!({})),
        Method::HEAD => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            MockBody::empty(),
        ),
        _ => ok(),
    }
}

fn rest(shared: &Shared, req: &Req<'_>) -> ApiResult {
    let method = req.method;
    match (method, req.segs) {
        (&Method::GET, ["auth"]) => Ok(ok()),
        (&Method::GET, ["system"]) => Ok(json(&system())),
        (&Method::PUT, ["system"]) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "direct rack doesn't support update, make sure you are not using RACK_URL environment variable",
        )),
        (&Method::POST, ["instances", "keyroll"]) => Ok(json(&serde_json::json!({
            "name": "convox-keyroll",
            "private-key": MOCK_PRIVATE_KEY,
        }))),
        (&Method::POST, ["system", "jwt", "token"]) => Ok(json(&serde_json::json!({
            "token": format!("mock.{}", shared.ids.string(ALNUM, 32)),
        }))),
        (&Method::GET, ["system", "processes"]) => {
            let state = lock(&shared.state);
            let all: Vec<&Process> = state
                .apps
                .values()
                .flat_map(|a| a.processes.values())
                .collect();
            Ok(json(&all))
        }
        (&Method::GET, ["system", "releases"])
        | (&Method::GET, ["instances"])
        | (&Method::GET, ["certificates"])
        | (&Method::GET, ["registries"])
        | (&Method::GET, ["resources"])
        | (&Method::OPTIONS, ["resources"]) => Ok(json(&[(); 0])),
        (&Method::GET, ["apps"]) => {
            let state = lock(&shared.state);
            let apps: Vec<&App> = state.apps.values().map(|a| &a.app).collect();
            Ok(json(&apps))
        }
        (&Method::POST, ["apps"]) => app_create(shared, req),
        (_, ["apps", app, rest @ ..]) => app_route(shared, req, app, rest),
        _ => Ok(generic(method)),
    }
}

fn app_create(shared: &Shared, req: &Req<'_>) -> ApiResult {
    let name = req
        .param("name")
        .map(str::to_owned)
        .or_else(|| req.header("name").map(Cow::into_owned))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "name required"))?;
    let mut state = lock(&shared.state);
    if state.apps.contains_key(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("app already exists: {name}"),
        ));
    }
    let app = App {
        generation: req.param("generation").unwrap_or("2").to_owned(),
        locked: false,
        name: name.clone(),
        release: String::new(),
        router: "router.mock".to_owned(),
        status: "running".to_owned(),
        parameters: BTreeMap::new(),
    };
    let resp = json(&app);
    state.apps.insert(
        name,
        AppState {
            app,
            releases: Vec::new(),
            builds: Vec::new(),
            processes: BTreeMap::new(),
            resources: Vec::new(),
            services: Vec::new(),
            objects: HashMap::new(),
        },
    );
    Ok(resp)
}

fn app_route(shared: &Shared, req: &Req<'_>, name: &str, rest: &[&str]) -> ApiResult {
    let mut state = lock(&shared.state);
    let Some(app) = state.apps.get_mut(name) else {
        return Err(ApiError::not_found("app", name));
    };
    let method = req.method;
    match (method, rest) {
        (&Method::GET, []) => Ok(json(&app.app)),
        (&Method::PUT, []) => {
            if let Some(lock) = req.param("lock").and_then(parse_bool) {
                app.app.locked = lock;
            }
            if let Some(params) = req.param("parameters") {
                let mut pairs = Vec::new();
                parse_urlencoded(params.as_bytes(), &mut pairs);
                app.app.parameters.extend(pairs);
            }
            Ok(ok())
        }
        (&Method::DELETE, []) => {
            state.apps.remove(name);
            Ok(ok())
        }
        (&Method::POST, ["cancel"]) => Ok(ok()),
        (&Method::GET, ["budget"]) => Ok(json(&serde_json::json!({"config": null, "state": null}))),
        (&Method::GET, ["balancers"]) | (&Method::GET, ["configs"]) => Ok(json(&[(); 0])),
        (&Method::GET, ["services"]) => Ok(json(&app.services)),
        (&Method::PUT, ["services", _]) | (&Method::POST, ["services", _, "restart"]) => Ok(ok()),
        (&Method::POST, ["services", service, "processes"]) => {
            let release = req
                .header("release")
                .map(Cow::into_owned)
                .unwrap_or_else(|| app.app.release.clone());
            let process = Process {
                id: format!("{service}-{}", shared.ids.string(LOWER_ALNUM, 5)),
                app: name.to_owned(),
                command: req
                    .header("command")
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
                cpu: 0.0,
                host: String::new(),
                image: format!("registry.mock/{name}:{service}"),
                instance: "node-1".to_owned(),
                memory: 0.0,
                name: (*service).to_owned(),
                ports: Vec::new(),
                release,
                started: now_rfc3339(),
                status: "running".to_owned(),
            };
            let resp = json(&process);
            app.processes.insert(process.id.clone(), process);
            Ok(resp)
        }
        (&Method::GET, ["processes"]) => {
            let service = req.param("service").filter(|s| !s.is_empty());
            let release = req.param("release").filter(|s| !s.is_empty());
            let list: Vec<&Process> = app
                .processes
                .values()
                .filter(|p| service.is_none_or(|s| p.name == s))
                .filter(|p| release.is_none_or(|r| p.release == r))
                .collect();
            Ok(json(&list))
        }
        (&Method::GET, ["processes", pid]) => app
            .processes
            .get(*pid)
            .map(json)
            .ok_or_else(|| ApiError::not_found("process", pid)),
        (&Method::DELETE, ["processes", pid]) => app
            .processes
            .remove(*pid)
            .map(|_| ok())
            .ok_or_else(|| ApiError::not_found("process", pid)),
        (_, ["processes", pid, "files"]) => {
            if !app.processes.contains_key(*pid) {
                return Err(ApiError::not_found("process", pid));
            }
            Ok(match *method {
                Method::GET => stream(SMALL_STREAM_LEN),
                _ => ok(),
            })
        }
        (&Method::GET, ["releases"]) => {
            let limit = req
                .param("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(10);
            let list: Vec<&Release> = app.releases.iter().rev().take(limit).collect();
            Ok(json(&list))
        }
        (&Method::GET, ["releases", id]) => app
            .releases
            .iter()
            .find(|r| r.id == *id)
            .map(json)
            .ok_or_else(|| ApiError::not_found("release", id)),
        (&Method::POST, ["releases"]) => release_create(shared, req, app),
        (&Method::POST, ["releases", id, "promote"]) => {
            if !app.releases.iter().any(|r| r.id == *id) {
                return Err(ApiError::not_found("release", id));
            }
            app.app.release = (*id).to_owned();
            app.app.status = "running".to_owned();
            Ok(ok())
        }
        (&Method::GET, ["builds"]) => {
            let limit = req
                .param("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(10);
            let list: Vec<&Build> = app.builds.iter().rev().take(limit).collect();
            Ok(json(&list))
        }
        (&Method::POST, ["builds"]) | (&Method::POST, ["builds", "import"]) => {
            let external = req.param("external").and_then(parse_bool) == Some(true);
            Ok(json(&build_create(shared, req, app, external)))
        }
        (&Method::GET, ["builds", file]) if file.ends_with(".tgz") => {
            let id = file.trim_end_matches(".tgz");
            if !app.builds.iter().any(|b| b.id == id) {
                return Err(ApiError::not_found("build", id));
            }
            Ok(stream(BUILD_EXPORT_LEN))
        }
        (&Method::GET, ["builds", id]) => app
            .builds
            .iter()
            .find(|b| b.id == *id)
            .map(json)
            .ok_or_else(|| ApiError::not_found("build", id)),
        (&Method::PUT, ["builds", id]) => {
            let build = app
                .builds
                .iter_mut()
                .find(|b| b.id == *id)
                .ok_or_else(|| ApiError::not_found("build", id))?;
            let fields: [(&str, &mut String); 5] = [
                ("release", &mut build.release),
                ("manifest", &mut build.manifest),
                ("status", &mut build.status),
                ("logs", &mut build.logs),
                ("entrypoint", &mut build.entrypoint),
            ];
            for (param, field) in fields {
                if let Some(value) = req.param(param) {
                    *field = value.to_owned();
                }
            }
            Ok(json(build))
        }
        (&Method::GET, ["objects"]) => {
            let mut keys: Vec<&String> = app.objects.keys().collect();
            keys.sort();
            Ok(json(&keys))
        }
        (_, ["objects", key @ ..]) if !key.is_empty() => object_route(req, app, &key.join("/")),
        (&Method::GET, ["resources"]) => Ok(json(&app.resources)),
        (_, ["resources", resource, more @ ..]) => {
            let Some(found) = app.resources.iter().find(|r| r.name == *resource) else {
                return Err(ApiError::not_found("resource", resource));
            };
            match (method, more) {
                (&Method::GET, []) => Ok(json(found)),
                (&Method::GET, ["data"]) => Ok(stream(SMALL_STREAM_LEN)),
                (&Method::PUT, ["data"]) => Ok(ok()),
                _ => Ok(generic(method)),
            }
        }
        _ => Ok(generic(method)),
    }
}

fn release_create(shared: &Shared, req: &Req<'_>, app: &mut AppState) -> ApiResult {
    let parent = match req.param("parent-release").filter(|p| !p.is_empty()) {
        Some(id) => Some(
            app.releases
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| ApiError::not_found("release", id))?,
        ),
        None => app.releases.last(),
    };
    let mut release = Release {
        id: shared.release_id(),
        app: app.app.name.clone(),
        build: parent.map(|p| p.build.clone()).unwrap_or_default(),
        env: parent.map(|p| p.env.clone()).unwrap_or_default(),
        manifest: parent.map(|p| p.manifest.clone()).unwrap_or_default(),
        description: req.param("description").unwrap_or_default().to_owned(),
        created: now_rfc3339(),
    };
    if let Some(build) = req.param("build").filter(|b| !b.is_empty()) {
        let found = app
            .builds
            .iter()
            .find(|b| b.id == build)
            .ok_or_else(|| ApiError::not_found("build", build))?;
        release.build = found.id.clone();
        release.manifest = found.manifest.clone();
    }
    if let Some(env) = req.param("env") {
        release.env = env.to_owned();
    }
    let resp = json(&release);
    app.releases.push(release);
    Ok(resp)
}

/// Builds complete at once (with a new release); external builds stay
/// `created` and expose the rack password in `repository`, as the real
/// rack does.
fn build_create(shared: &Shared, req: &Req<'_>, app: &mut AppState, external: bool) -> Build {
    let now = now_rfc3339();
    let mut build = Build {
        id: shared.build_id(),
        app: app.app.name.clone(),
        description: req.param("description").unwrap_or_default().to_owned(),
        entrypoint: String::new(),
        git_sha: req.param("git-sha").unwrap_or_default().to_owned(),
        logs: String::new(),
        manifest: SEED_MANIFEST.to_owned(),
        process: String::new(),
        release: String::new(),
        reason: String::new(),
        repository: String::new(),
        status: "created".to_owned(),
        started: now.clone(),
        ended: String::new(),
    };
    if external {
        build.repository = format!(
            "https://convox:{}@api.mock/{}",
            shared.password, app.app.name
        );
    } else {
        let parent = app.releases.last();
        let release = Release {
            id: shared.release_id(),
            app: app.app.name.clone(),
            build: build.id.clone(),
            env: parent.map(|p| p.env.clone()).unwrap_or_default(),
            manifest: build.manifest.clone(),
            description: build.description.clone(),
            created: now.clone(),
        };
        build.release = release.id.clone();
        build.status = "complete".to_owned();
        build.ended = now;
        app.releases.push(release);
    }
    app.builds.push(build.clone());
    build
}

fn object_route(req: &Req<'_>, app: &mut AppState, key: &str) -> ApiResult {
    match *req.method {
        Method::POST => {
            let content = req
                .body
                .complete()
                .then(|| Bytes::copy_from_slice(&req.body.kept));
            app.objects.insert(
                key.to_owned(),
                StoredObject {
                    content,
                    len: req.body.len,
                },
            );
            Ok(json(&serde_json::json!({
                "Url": format!("object://{}/{key}", app.app.name),
            })))
        }
        Method::GET => {
            if let Some(n) = key.strip_prefix("generated/").and_then(|n| n.parse().ok()) {
                return Ok(stream(n));
            }
            let object = app
                .objects
                .get(key)
                .ok_or_else(|| ApiError::not_found("object", key))?;
            match &object.content {
                Some(content) => Ok(respond(
                    StatusCode::OK,
                    "application/octet-stream",
                    MockBody::full(content.clone()),
                )),
                None => Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "mock rack kept no content for object {key} ({} bytes)",
                        object.len
                    ),
                )),
            }
        }
        Method::HEAD => {
            let exists = app.objects.contains_key(key) || key.starts_with("generated/");
            let status = if exists {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            Ok(respond(
                status,
                "text/plain; charset=utf-8",
                MockBody::empty(),
            ))
        }
        Method::DELETE => app
            .objects
            .remove(key)
            .map(|_| ok())
            .ok_or_else(|| ApiError::not_found("object", key)),
        _ => Ok(generic(req.method)),
    }
}

// ---------------------------------------------------------------------------
// Websockets
// ---------------------------------------------------------------------------

/// A websocket route the rack registers (`SOCKET` in the route table).
enum SocketRoute {
    Exec { app: String, pid: String },
    Shell,
    Logs(LogSource),
    Console { app: String, resource: String },
    Proxy,
}

enum LogSource {
    App(String),
    Service { app: String, service: String },
    Process { app: String, pid: String },
    Build { app: String, id: String },
    System,
}

fn socket_route(segs: &[&str]) -> Option<SocketRoute> {
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
fn is_socket_request(req: &Request<Incoming>) -> bool {
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
    command: String,
    follow: bool,
    disable_stdin: bool,
}

fn upgrade(
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    req: &mut Request<Incoming>,
    route: SocketRoute,
    entry: Option<Entry>,
) -> Resp {
    let headers = req.headers();
    if let Some(status) = handshake_refusal(headers) {
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
    let key = header_text(headers, "sec-websocket-key").unwrap_or_default();
    let accept = ws::accept_key(key.trim());
    let mut query_form = Vec::new();
    if let Some(query) = req.uri().query() {
        parse_urlencoded(query.as_bytes(), &mut query_form);
    }
    // ProcessExec reads `command` from the form (the query, for a GET)
    // before the header.
    let command = query_form
        .into_iter()
        .find(|(k, _)| k == "command")
        .map(|(_, v)| v)
        .or_else(|| header_text(headers, "command").map(Cow::into_owned))
        .unwrap_or_default();
    let ctx = SocketCtx {
        shared: shared.clone(),
        route,
        authorized: shared.authorized(headers),
        command,
        follow: header_text(headers, "follow")
            .and_then(|v| parse_bool(v.trim()))
            .unwrap_or(true),
        disable_stdin: header_text(headers, "disable-stdin")
            .and_then(|v| parse_bool(v.trim()))
            .unwrap_or(false),
    };
    if let Some(entry) = &entry {
        lock(entry).websocket = true;
    }
    let on_upgrade = hyper::upgrade::on(req);
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
    Exec,
    Logs { lines: Vec<String>, finite: bool },
    Echo,
}

fn log_lines(prefix: &str) -> Vec<String> {
    (1..=3)
        .map(|n| format!("2026-01-01T00:00:00Z {prefix} line {n}\n"))
        .collect()
}

/// Looks up what the route names, as the rack's handler would before
/// streaming; `Err` is the in-band error message.
fn prepare(shared: &Shared, route: &SocketRoute) -> Result<Session, String> {
    let state = lock(&shared.state);
    let app = |name: &str| {
        state
            .apps
            .get(name)
            .ok_or_else(|| format!("app not found: {name}"))
    };
    Ok(match route {
        SocketRoute::Exec { app: name, pid } => {
            if !app(name)?.processes.contains_key(pid) {
                return Err(format!("process not found: {pid}"));
            }
            Session::Exec
        }
        SocketRoute::Shell => Session::Exec,
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
                    let prefix = app(name)?.processes.values().next().map_or_else(
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
    let session = match prepare(&ctx.shared, &ctx.route) {
        Ok(session) => session,
        Err(message) => return conn.finish(Some(&message)).await,
    };
    match session {
        Session::Exec => exec_session(conn, &ctx).await,
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
) -> io::Result<()> {
    let words = shell_words(&ctx.command);
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

/// Splits a command into words with POSIX-shell quoting (what the rack's
/// `shellquote.Split` does); unterminated quotes are tolerated.
fn shell_words(input: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => word.push(n),
                            Some('\n') | None => {}
                            Some(n) => {
                                word.push('\\');
                                word.push(n);
                            }
                        },
                        _ => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next().filter(|n| *n != '\n') {
                    word.push(n);
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    const PASSWORD: &str = "pa%2Fss";

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    async fn start() -> MockRack {
        MockRack::start(MockOptions::new(PASSWORD)).await.unwrap()
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Answer {
        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("json body")
        }
    }

    async fn call(
        rack: &MockRack,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: MockBody,
    ) -> Answer {
        let client = Client::builder(TokioExecutor::new()).build_http::<MockBody>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{target}", rack.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client.request(req.body(body).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes().to_vec(),
        }
    }

    async fn authed(rack: &MockRack, method: &str, target: &str) -> Answer {
        let auth = basic("convox", PASSWORD);
        call(
            rack,
            method,
            target,
            &[("authorization", &auth)],
            MockBody::empty(),
        )
        .await
    }

    #[tokio::test]
    async fn auth_is_checked_exactly_as_sent() {
        let rack = start().await;
        let none = call(&rack, "GET", "/apps?", &[], MockBody::empty()).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        assert_eq!(none.body, b"invalid authentication\n");
        assert_eq!(none.headers["www-authenticate"], "Basic realm=\"convox\"");
        assert_eq!(none.headers["request-id"].len(), 12);
        assert_eq!(none.headers["x-frame-options"], "DENY");
        assert_eq!(none.headers["x-content-type-options"], "nosniff");

        for auth in [
            basic("convox", "pa/ss"),
            basic("jwt", PASSWORD),
            "Bearer x".into(),
        ] {
            let refused = call(
                &rack,
                "GET",
                "/apps",
                &[("authorization", &auth)],
                MockBody::empty(),
            )
            .await;
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{auth}");
        }
        let ok = call(
            &rack,
            "GET",
            "/auth",
            &[("authorization", &basic("anyone", PASSWORD))],
            MockBody::empty(),
        )
        .await;
        assert_eq!(
            (ok.status, ok.body.as_slice()),
            (StatusCode::OK, &b"ok\n"[..])
        );

        let rec = rack.requests();
        assert_eq!(rec.len(), 5);
        assert_eq!(rec[0].target, "/apps?");
        assert_eq!(rec[0].path(), "/apps");
        assert_eq!(rec[0].query(), Some(""));
        assert_eq!(
            rec[4].header("Authorization"),
            Some(basic("anyone", PASSWORD))
        );
    }

    #[tokio::test]
    async fn json_routes_errors_and_404s() {
        let rack = start().await;
        let system = authed(&rack, "GET", "/system?").await;
        assert_eq!(system.headers["content-type"], "application/json");
        assert_eq!(system.json()["version"], "3.18.11");
        assert_eq!(system.json()["rack-domain"], "api.mock");

        let apps = authed(&rack, "GET", "/apps").await.json();
        let names: Vec<&str> = apps
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["billing", "myapp"]);
        assert_eq!(apps[1]["generation"], "3");
        assert_eq!(apps[1]["release"], "RMYAPPRELAB");

        let budget = authed(&rack, "GET", "/apps/myapp/budget?").await.json();
        assert_eq!(budget, serde_json::json!({"config": null, "state": null}));

        let release = authed(&rack, "GET", "/apps/myapp/releases/RMYAPPRELAB")
            .await
            .json();
        assert!(release["env"]
            .as_str()
            .unwrap()
            .contains("SECRET_KEY=s3cr3t"));
        let db = authed(&rack, "GET", "/apps/billing/resources/db")
            .await
            .json();
        assert!(db["url"].as_str().unwrap().contains("billpass"));

        let missing = authed(&rack, "GET", "/apps/nope").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.body, b"app not found: nope\n");
        let auth = basic("convox", PASSWORD);
        let as_json = call(
            &rack,
            "GET",
            "/apps/nope",
            &[("authorization", &auth), ("accept", "application/json")],
            MockBody::empty(),
        )
        .await;
        assert_eq!(as_json.json()["error"], "app not found: nope");

        for path in ["/machines?", "/racks?", "/", "/apps//x"] {
            let page = call(&rack, "GET", path, &[], MockBody::empty()).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(page.body, b"404 page not found\n");
        }
        // A socket path without the exact upgrade header is unmatched too.
        let plain = authed(&rack, "GET", "/apps/myapp/logs").await;
        assert_eq!(plain.status, StatusCode::NOT_FOUND);
        let generic = authed(&rack, "GET", "/certificates/x/unknown").await;
        assert_eq!(generic.json(), serde_json::json!({}));
    }

    #[tokio::test]
    async fn process_run_get_stop_cycle() {
        let rack = start().await;
        let auth = basic("convox", PASSWORD);
        let run = call(
            &rack,
            "POST",
            "/apps/myapp/services/web/processes?",
            &[("authorization", &auth), ("command", "sleep 3600")],
            MockBody::empty(),
        )
        .await
        .json();
        let pid = run["id"].as_str().unwrap().to_owned();
        assert!(pid.starts_with("web-") && pid.len() == 9, "{pid}");
        assert_eq!(run["name"], "web");
        assert_eq!(run["command"], "sleep 3600");
        assert_eq!(run["release"], "RMYAPPRELAB");

        let got = authed(&rack, "GET", &format!("/apps/myapp/processes/{pid}?"))
            .await
            .json();
        assert_eq!(got["status"], "running");
        let web = authed(&rack, "GET", "/apps/myapp/processes?service=web")
            .await
            .json();
        assert_eq!(web.as_array().unwrap().len(), 2);

        let stop = authed(&rack, "DELETE", &format!("/apps/myapp/processes/{pid}?")).await;
        assert_eq!(stop.body, b"ok\n");
        let gone = authed(&rack, "GET", &format!("/apps/myapp/processes/{pid}")).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn releases_create_and_promote() {
        let rack = start().await;
        let auth = basic("convox", PASSWORD);
        let created = call(
            &rack,
            "POST",
            "/apps/myapp/releases?",
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            MockBody::full("env=A%3D1%0ANEW%3Dva%3Dlue&description=hi+there"),
        )
        .await
        .json();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with('R') && id.len() == 11);
        assert_eq!(created["env"], "A=1\nNEW=va=lue");
        assert_eq!(created["build"], "BMYAPPBLDAA");
        assert_eq!(created["description"], "hi there");

        let latest = authed(&rack, "GET", "/apps/myapp/releases?limit=1")
            .await
            .json();
        assert_eq!(latest[0]["id"], id.as_str());
        let promote = call(
            &rack,
            "POST",
            &format!("/apps/myapp/releases/{id}/promote?"),
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            MockBody::full("force=false"),
        )
        .await;
        assert_eq!(promote.body, b"ok\n");
        assert_eq!(
            authed(&rack, "GET", "/apps/myapp").await.json()["release"],
            id.as_str()
        );
        let promoted = rack
            .requests()
            .into_iter()
            .find(|r| r.path().ends_with("/promote"))
            .unwrap();
        assert_eq!(promoted.body, b"force=false");
        assert_eq!(promoted.body_len, 11);
    }

    #[tokio::test]
    async fn streamed_upload_is_hashed_and_download_generated() {
        let rack = start().await;
        let auth = basic("convox", PASSWORD);
        let len = 3 * 1024 * 1024 + 17;
        let stored = call(
            &rack,
            "POST",
            "/apps/myapp/objects/tmp/abc.tgz?",
            &[
                ("authorization", &auth),
                ("content-type", "application/octet-stream"),
            ],
            MockBody::pattern(len),
        )
        .await;
        assert_eq!(stored.json()["Url"], "object://myapp/tmp/abc.tgz");

        let expected: Vec<u8> = (0..len).map(generated_byte).collect();
        let rec = rack.last_request().unwrap();
        assert_eq!(rec.body_len, len);
        assert_eq!(
            rec.body_sha256,
            hex(ring::digest::digest(&ring::digest::SHA256, &expected).as_ref())
        );
        assert_eq!(rec.body, expected[..RECORDED_BODY_LIMIT]);

        let download = authed(&rack, "GET", "/apps/myapp/objects/generated/200003").await;
        assert_eq!(download.status, StatusCode::OK);
        assert_eq!(download.body, expected[..200_003]);

        let small = call(
            &rack,
            "POST",
            "/apps/myapp/objects/small",
            &[("authorization", &auth)],
            MockBody::full("hello"),
        )
        .await;
        assert_eq!(small.status, StatusCode::OK);
        assert_eq!(
            authed(&rack, "GET", "/apps/myapp/objects/small").await.body,
            b"hello"
        );
    }

    async fn exec(rack: &MockRack, pid: &str, command: &str) -> ws::ClientConn {
        let auth = basic("convox", PASSWORD);
        let origin = format!("http://{}", rack.addr());
        let conn = ws::client_connect(
            rack.addr(),
            &format!("/apps/myapp/processes/{pid}/exec"),
            &[
                ("Authorization", &auth),
                ("Command", command),
                ("Origin", &origin),
            ],
        )
        .await
        .unwrap();
        assert_eq!(conn.status, 101);
        conn
    }

    async fn expect_end(conn: &mut ws::ClientConn) {
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::binary(Vec::new())));
        assert_eq!(
            conn.recv().await.unwrap().and_then(|f| f.close_code()),
            Some(1000)
        );
    }

    #[tokio::test]
    async fn exec_echoes_stdin_and_ends_with_marker() {
        let rack = start().await;
        let mut conn = exec(&rack, "web-abc12", "echo 'hi  there' x").await;
        assert_eq!(
            conn.recv().await.unwrap(),
            Some(Frame::text("hi  there x\n"))
        );
        conn.send(&Frame::text(vec![b'a', 0xff])).await.unwrap();
        assert_eq!(
            conn.recv().await.unwrap(),
            Some(Frame::text(vec![b'a', 0xff]))
        );
        conn.send(&Frame::ping("p")).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::pong("p")));
        conn.send(&Frame::binary(Vec::new())).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::exit_code(0)));
        expect_end(&mut conn).await;
        conn.send(&Frame::close(1000, "")).await.unwrap();

        let rec = rack.last_request().unwrap();
        assert!(rec.websocket);
        assert_eq!(rec.header("command").as_deref(), Some("echo 'hi  there' x"));
        assert_eq!(
            rec.frames_in,
            [Frame::text(vec![b'a', 0xff]), Frame::binary(Vec::new())]
        );

        let mut conn = exec(&rack, "web-abc12", "exit 7").await;
        conn.send(&Frame::binary(Vec::new())).await.unwrap();
        let marker = conn.recv().await.unwrap().unwrap();
        assert_eq!(ws::parse_exit_code(&marker.payload), Some(7));
        expect_end(&mut conn).await;

        // `?command=` beats the header, and Disable-Stdin skips the wait.
        let auth = basic("convox", PASSWORD);
        let mut conn = ws::client_connect(
            rack.addr(),
            "/apps/myapp/processes/web-abc12/exec?command=exit+5",
            &[
                ("Authorization", &auth),
                ("Command", "exit 1"),
                ("Disable-Stdin", "true"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::exit_code(5)));
        expect_end(&mut conn).await;

        let mut conn = exec(&rack, "web-abc12", "emit-invalid-utf8").await;
        assert_eq!(
            conn.recv().await.unwrap(),
            Some(Frame::text(vec![0x66, 0xff, 0xfe, 0x0a]))
        );
    }

    #[tokio::test]
    async fn websocket_refusals() {
        let rack = start().await;
        let wrong = basic("convox", "nope");
        let mut conn = ws::client_connect(
            rack.addr(),
            "/apps/myapp/processes/web-abc12/exec",
            &[("Authorization", &wrong), ("Command", "ls")],
        )
        .await
        .unwrap();
        assert_eq!(conn.status, 101);
        assert_eq!(
            conn.recv().await.unwrap(),
            Some(Frame::text("ERROR: invalid authentication\n"))
        );
        expect_end(&mut conn).await;

        let auth = basic("convox", PASSWORD);
        let mut conn = ws::client_connect(
            rack.addr(),
            "/apps/myapp/processes/web-nope1/exec",
            &[("Authorization", &auth)],
        )
        .await
        .unwrap();
        assert_eq!(
            conn.recv().await.unwrap(),
            Some(Frame::text("ERROR: process not found: web-nope1\n"))
        );

        let mut conn = ws::client_connect(
            rack.addr(),
            "/apps/myapp/logs",
            &[("Authorization", &auth), ("Origin", "https://evil.example")],
        )
        .await
        .unwrap();
        assert_eq!(conn.status, 403);
        assert_eq!(conn.read_body().await.unwrap(), b"Forbidden\n");
    }

    #[tokio::test]
    async fn logs_stream_and_follow() {
        let rack = start().await;
        let auth = basic("convox", PASSWORD);
        let mut conn = ws::client_connect(
            rack.addr(),
            "/apps/myapp/logs",
            &[
                ("Authorization", &auth),
                ("Follow", "false"),
                ("Prefix", "true"),
            ],
        )
        .await
        .unwrap();
        for n in 1..=3 {
            let line = format!("2026-01-01T00:00:00Z service/web/web-abc12 line {n}\n");
            assert_eq!(conn.recv().await.unwrap(), Some(Frame::text(line)));
        }
        expect_end(&mut conn).await;

        let mut conn = ws::client_connect(rack.addr(), "/system/logs", &[("Authorization", &auth)])
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(conn.recv().await.unwrap().unwrap().opcode, Opcode::Text);
        }
        conn.send(&Frame::ping("k")).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(Frame::pong("k")));
        conn.send(&Frame::close(1000, "")).await.unwrap();
        assert_eq!(
            conn.recv().await.unwrap().and_then(|f| f.close_code()),
            Some(1000)
        );
    }

    #[tokio::test]
    async fn delay_knob_and_https() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let rack = MockRack::start(MockOptions {
            tls: Some(Arc::new(server)),
            ..MockOptions::new(PASSWORD)
        })
        .await
        .unwrap();
        assert!(rack.url().starts_with("https://127.0.0.1:"));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(rack.addr()).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let started = std::time::Instant::now();
        let req = Request::get("/auth")
            .header("host", "localhost")
            .header("authorization", basic("convox", PASSWORD))
            .header("mock-delay-ms", "150")
            .body(MockBody::empty())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok\n");
    }

    #[tokio::test]
    async fn recording_can_be_disabled() {
        let rack = MockRack::start(MockOptions {
            max_recorded: 0,
            ..MockOptions::new(PASSWORD)
        })
        .await
        .unwrap();
        assert_eq!(authed(&rack, "GET", "/auth").await.status, StatusCode::OK);
        assert!(rack.requests().is_empty());
    }

    #[test]
    fn helpers() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600 + 3661), "2026-01-01T01:01:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            shell_words(r#"bash -c 'echo hi' "a \"b\" c" d\ e"#),
            ["bash", "-c", "echo hi", "a \"b\" c", "d e"]
        );
        assert_eq!(generated_byte(0), 7);
        assert_eq!(generated_byte(251), 7);
        assert_eq!(
            split_path("/apps/x/objects/a//b"),
            Some(vec!["apps", "x", "objects", "a", "", "b"])
        );
        assert_eq!(split_path("/apps/"), None);
    }
}
