//! The audit file: an append-only, hash-chained JSONL sink ([`Sink`]), its
//! verifier ([`verify`], [`verify_command`]) and the value redaction
//! helpers audit records use ([`CommandRedactor`], [`is_sensitive_field`]).
//!
//! # File format
//!
//! One JSON object per line, each line ended by `\n` (values never contain
//! a raw newline: JSON escapes it). The sink appends three fields as the
//! **last** fields of every record, in this order, with no whitespace:
//!
//! ```text
//! {<the record's own fields>,"seq":N,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! (a record without fields of its own is `{"seq":N,"prev":"…","hash":"…"}`).
//!
//! * `seq`: 1 for the first record of a chain, then +1 per record; it
//!   continues across rotated files.
//! * `prev`: lowercase hex SHA-256 of the previous record's complete line
//!   (every byte of it, without the `\n`); 64 zeros ([`GENESIS_PREV`]) for
//!   record 1.
//! * `hash`: lowercase hex of SHA-256 — or of HMAC-SHA-256 under the chain
//!   key when one is configured — over the line's bytes from its first byte
//!   (`{`) up to and including the closing quote of the `prev` value, i.e.
//!   the whole line minus its last 75 bytes (`,"hash":"` + 64 hex + `"}`).
//!   A verifier recomputes it from the line text alone, without
//!   re-serializing anything.
//!
//! The keys `seq`, `prev` and `hash` are reserved: a submitted record's own
//! fields with those names are removed before it is sealed.
//!
//! What the chain proves: without a key, it detects accidental damage and
//! naive edits (a changed, removed, inserted or reordered line breaks a
//! hash or a link), but anyone with write access to the file can rewrite
//! the chain from the edited record on, recomputing every hash. With a key
//! (HMAC), someone who can write the file but does not hold the key cannot
//! produce valid hashes, so every edit or forged record is detected.
//! Neither mode can detect records cut off the **end** of the chain (or
//! whole files removed from the end): compare the verifier's last seq with
//! an independent anchor (the gateway's `written` counter, a shipped copy).
//!
//! # Rotation
//!
//! With `rotate_bytes`, before a write that would make the file larger than
//! that, the file is renamed to `<path>.<UTC YYYYmmddTHHMMSSZ>` (plus `.1`,
//! `.2`, … if taken) and a fresh file starts at `<path>`, continuing `seq`
//! and `prev`: one chain spans all files. A rename is atomic; if the
//! process dies between the rename and the first write to the new file,
//! [`Sink::open`] finds no (or an empty) file and resumes the chain from
//! the newest rotated sibling, so a rotation never breaks the chain.
//!
//! # Dropped records
//!
//! When the queue overflows, the records that did not fit are counted
//! ([`Sink::dropped`]) and the writer seals a marker record with
//! `"event":"audit_records_dropped"`, `"count":N` and `"time"` (RFC 3339
//! UTC) at their place in the chain, so the hole is visible in the file
//! itself. Call [`Sink::flush`] (or [`Sink::flush_timeout`]) before the
//! process exits: the writer thread drains the queue after the last clone
//! is dropped, but nothing waits for it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};
use serde_json::{Map, Value};

/// `prev` of record 1.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records buffered between submitters and the writer thread.
pub const QUEUE_CAPACITY: usize = 64 * 1024;

/// How long the writer waits before retrying a failed write.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// `,"hash":"` + 64 hex + `"}`: what follows the hashed part of a line.
const HASH_TAIL_LEN: usize = 9 + 64 + 2;

/// The reserved keys the sink appends.
const RESERVED: [&str; 3] = ["seq", "prev", "hash"];

// ---------------------------------------------------------------------------
// Chain primitives
// ---------------------------------------------------------------------------

/// Computes `hash` values: SHA-256, or HMAC-SHA-256 under a key.
#[derive(Clone)]
struct Chain {
    key: Option<hmac::Key>,
}

impl Chain {
    fn new(key: Option<&[u8]>) -> Chain {
        Chain {
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        }
    }

    fn keyed(&self) -> bool {
        self.key.is_some()
    }

    fn tag(&self, hashed: &[u8]) -> String {
        match &self.key {
            Some(k) => hex(hmac::sign(k, hashed).as_ref()),
            None => sha256_hex(hashed),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// The `prev` value a record following `line` must carry: hex SHA-256 of
/// the line's bytes (pass it without its `\n`).
pub fn line_digest(line: &str) -> String {
    sha256_hex(line.as_bytes())
}

/// Seals one record into a chain line (without the trailing `\n`): the
/// record's fields, minus any reserved `seq`/`prev`/`hash`, then `seq`,
/// `prev` and `hash` as described in the module documentation. This is
/// exactly what the sink writes; exposed for tools and tests.
pub fn seal(record: &Map<String, Value>, seq: u64, prev: &str, key: Option<&[u8]>) -> String {
    let line = seal_line(&Chain::new(key), record, seq, prev);
    String::from_utf8(line).expect("serde_json writes UTF-8")
}

fn seal_line(chain: &Chain, record: &Map<String, Value>, seq: u64, prev: &str) -> Vec<u8> {
    let mut line = if RESERVED.iter().any(|k| record.contains_key(*k)) {
        let mut own = record.clone();
        for k in RESERVED {
            own.remove(k);
        }
        body(&own)
    } else {
        body(record)
    };
    // `{…}` minus the closing brace; a comma unless there are no fields.
    line.pop();
    if line.len() > 1 {
        line.push(b',');
    }
    line.extend_from_slice(format!("\"seq\":{seq},\"prev\":\"{prev}\"").as_bytes());
    let hash = chain.tag(&line);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
    line
}

fn body(record: &Map<String, Value>) -> Vec<u8> {
    // Serializing a map of JSON values cannot fail (no non-string keys, no
    // non-finite numbers); keep the writer thread panic-free regardless.
    serde_json::to_vec(record)
        .ok()
        .filter(|b| b.first() == Some(&b'{') && b.last() == Some(&b'}'))
        .unwrap_or_else(|| b"{\"event\":\"audit_record_unserializable\"}".to_vec())
}

/// The chain fields of one line, read from its text.
struct Sealed {
    seq: u64,
    prev: String,
    hash: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a line's structure (not its hash): a JSON object whose last
/// fields are exactly `"seq":N,"prev":"…","hash":"…"}`.
fn parse_line(line: &[u8]) -> Result<Sealed, String> {
    let obj: Map<String, Value> = match serde_json::from_slice(line) {
        Ok(o) => o,
        Err(e) => return Err(format!("not a JSON object ({e})")),
    };
    let seq = match obj.get("seq") {
        None => return Err("no seq field".into()),
        Some(v) => v
            .as_u64()
            .filter(|s| *s > 0)
            .ok_or("seq is not a positive integer")?,
    };
    let text = |k: &str| -> Result<String, String> {
        match obj.get(k) {
            None => Err(format!("no {k} field")),
            Some(Value::String(s)) if is_hex64(s) => Ok(s.clone()),
            Some(_) => Err(format!("{k} is not 64 lowercase hex digits")),
        }
    };
    let prev = text("prev")?;
    let hash = text("hash")?;
    let tail = format!("\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}");
    let structured = line.ends_with(tail.as_bytes()) && {
        let before = line.len() - tail.len();
        (before == 1 && line[0] == b'{') || (before > 1 && line[before - 1] == b',')
    };
    if !structured {
        return Err("seq, prev and hash are not the line's last fields, in that order".into());
    }
    Ok(Sealed { seq, prev, hash })
}

/// Reads the last line of a non-empty file: `Ok(Err(why))` when the file
/// does not end with a newline.
fn last_line(file: &File, len: u64) -> io::Result<Result<Vec<u8>, String>> {
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] != b'\n' {
        return Ok(Err("the last line has no newline: it was cut off".into()));
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let content = &buf[..buf.len() - 1];
        if let Some(i) = content.iter().rposition(|b| *b == b'\n') {
            return Ok(Ok(content[i + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Ok(content.to_vec()));
        }
        window = window.saturating_mul(2);
    }
}

/// Reads and checks a file's last record: its seq and line digest.
fn chain_tail(path: &Path, chain: &Chain) -> io::Result<Option<(u64, String)>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "audit file {}: the last line is not a valid chain record ({why}); \
                 inspect it with `rack-gateway audit verify`, then move the file aside \
                 to start a new file",
                path.display()
            ),
        )
    };
    let line = last_line(&file, len)?.map_err(invalid)?;
    let sealed = parse_line(&line).map_err(invalid)?;
    if chain.tag(&line[..line.len() - HASH_TAIL_LEN]) != sealed.hash {
        return Err(invalid(
            "its hash does not match its content (or the chain key differs)".into(),
        ));
    }
    Ok(Some((sealed.seq, sha256_hex(&line))))
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `20260101T010101Z`: the rotated-file suffix.
fn compact_utc(ts: i64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(ts);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-01-01T01:01:01Z`.
fn rfc3339(ts: i64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(ts);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Whether `name` is `<base>.<YYYYmmddTHHMMSSZ>[.<n>]`.
fn is_rotated_name(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    let (stamp, n) = match rest.split_once('.') {
        Some((s, n)) => (s, Some(n)),
        None => (rest, None),
    };
    let b = stamp.as_bytes();
    let stamp_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    stamp_ok && n.is_none_or(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The rotated files next to `path`.
fn rotated_siblings(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(base), dir) = (path.file_name().and_then(|n| n.to_str()), parent_dir(path)) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if is_rotated_name(name, base) && entry.file_type()?.is_file() {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// Where and how the sink writes.
#[derive(Clone)]
pub struct FileSettings {
    /// The active file; rotated files are created next to it.
    pub path: PathBuf,
    /// Rotate before a write would make the file larger than this.
    pub rotate_bytes: Option<u64>,
    /// The chain key: `hash` becomes HMAC-SHA-256 under it.
    pub key: Option<Vec<u8>>,
    /// The gateway refuses requests while the sink is unhealthy.
    pub fail_closed: bool,
    /// `fdatasync` after every batch (and sync the directory on rotation).
    pub fsync: bool,
}

impl fmt::Debug for FileSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSettings")
            .field("path", &self.path)
            .field("rotate_bytes", &self.rotate_bytes)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("fail_closed", &self.fail_closed)
            .field("fsync", &self.fsync)
            .finish()
    }
}

/// The audit file sink: cheap to clone, shared by all request handlers.
/// A dedicated thread does all file I/O; the writer thread stops once every
/// clone is dropped and the queue is written (or at once if it cannot be).
#[derive(Clone)]
pub struct Sink {
    handle: Arc<Handle>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("healthy", &self.healthy())
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Owned by the sink's clones; tells the writer to stop when dropped.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits on it for records (or shutdown).
    wake: Condvar,
    /// Flush waiters wait on it for `done` to advance.
    progress: Condvar,
    capacity: usize,
    fail_closed: bool,
    io_ok: AtomicBool,
    overflowed: AtomicBool,
    dropped: AtomicU64,
    written: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Item {
    Record(Map<String, Value>),
    /// This many records did not fit here.
    Dropped(u64),
}

struct Queue {
    items: VecDeque<Item>,
    /// Records accepted into the queue so far.
    accepted: u64,
    /// Records written so far (out of `accepted`).
    done: u64,
    /// The writer is waiting for records: a submitter must wake it.
    idle: bool,
    shutdown: bool,
}

impl Sink {
    /// Opens (creating it with mode 0600 if missing) the audit file and
    /// resumes the chain from its last line — or, if the file is missing or
    /// empty, from the newest rotated sibling (a crash between a rotation's
    /// rename and the first write to the new file). Refuses to start if
    /// that last line is not a valid chain record (cut off, edited, or
    /// sealed under another key), so an operator notices a damaged tail;
    /// to start a new chain, move the file and its rotated siblings aside.
    pub fn open(settings: FileSettings) -> io::Result<Sink> {
        Sink::open_with_capacity(settings, QUEUE_CAPACITY)
    }

    fn open_with_capacity(settings: FileSettings, capacity: usize) -> io::Result<Sink> {
        if settings.key.as_ref().is_some_and(Vec::is_empty) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the audit chain key is empty",
            ));
        }
        let chain = Chain::new(settings.key.as_deref());
        let (seq, prev) = resume(&settings.path, &chain)?;
        let mut writer = Writer {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    items: VecDeque::new(),
                    accepted: 0,
                    done: 0,
                    idle: false,
                    shutdown: false,
                }),
                wake: Condvar::new(),
                progress: Condvar::new(),
                capacity: capacity.max(1),
                fail_closed: settings.fail_closed,
                io_ok: AtomicBool::new(true),
                overflowed: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
                written: AtomicU64::new(0),
            }),
            path: settings.path,
            rotate_bytes: settings.rotate_bytes,
            fsync: settings.fsync,
            chain,
            next_seq: seq + 1,
            prev,
            pending: VecDeque::new(),
            out: None,
            good: None,
            buf: Vec::new(),
        };
        writer.ensure_open()?;
        let shared = Arc::clone(&writer.shared);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())?;
        Ok(Sink {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// Queues one record; never waits for disk I/O. When the queue is full
    /// the record is dropped and counted, and in fail-closed mode the sink
    /// turns unhealthy until the writer has caught up.
    pub fn submit(&self, record: Map<String, Value>) {
        let shared = &self.handle.shared;
        let mut q = shared.lock();
        if q.items.len() >= shared.capacity {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            match q.items.back_mut() {
                Some(Item::Dropped(n)) => *n += 1,
                _ => q.items.push_back(Item::Dropped(1)),
            }
            if shared.fail_closed {
                shared.overflowed.store(true, Ordering::Release);
            }
            return;
        }
        q.items.push_back(Item::Record(record));
        q.accepted += 1;
        if q.idle {
            q.idle = false;
            drop(q);
            shared.wake.notify_one();
        }
    }

    /// False while the file cannot be written, and — in fail-closed mode —
    /// after a queue overflow until the writer has caught up. The writer
    /// retries a failed write every second without losing or reordering
    /// records, and the sink turns healthy when a write succeeds.
    pub fn healthy(&self) -> bool {
        let s = &self.handle.shared;
        s.io_ok.load(Ordering::Acquire) && !s.overflowed.load(Ordering::Acquire)
    }

    pub fn fail_closed(&self) -> bool {
        self.handle.shared.fail_closed
    }

    /// Records lost to queue overflow.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.load(Ordering::Relaxed)
    }

    /// Submitted records written to the file (drop markers not counted):
    /// once flushed, `written + dropped` is the number submitted.
    pub fn written(&self) -> u64 {
        self.handle.shared.written.load(Ordering::Relaxed)
    }

    /// Blocks until every record queued before the call is written (and
    /// fsynced when configured). While the file cannot be written this
    /// waits for the writer's retries to succeed; use [`Sink::flush_timeout`]
    /// where waiting forever is not acceptable (shutdown).
    pub fn flush(&self) {
        let shared = &self.handle.shared;
        let mut q = shared.lock();
        let target = q.accepted;
        while q.done < target {
            q = shared.progress.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// [`Sink::flush`] giving up after `timeout`; true if everything queued
    /// before the call was written.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        let shared = &self.handle.shared;
        let deadline = std::time::Instant::now() + timeout;
        let mut q = shared.lock();
        let target = q.accepted;
        while q.done < target {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            q = shared
                .progress
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The last sealed seq and line digest to continue from.
fn resume(path: &Path, chain: &Chain) -> io::Result<(u64, String)> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => {
            let tail = chain_tail(path, chain)?.expect("the file is not empty");
            return Ok(tail);
        }
        // A device (/dev/full, a FIFO): nothing to resume from.
        Ok(m) if !m.is_file() => return Ok((0, GENESIS_PREV.into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut best: Option<(u64, String)> = None;
    for sibling in rotated_siblings(path)? {
        if let Some(tail) = chain_tail(&sibling, chain)? {
            if best.as_ref().is_none_or(|b| tail.0 > b.0) {
                best = Some(tail);
            }
        }
    }
    Ok(best.unwrap_or_else(|| (0, GENESIS_PREV.into())))
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

type FileId = (u64, u64);

struct Out {
    file: File,
    /// Bytes of complete lines in the file.
    size: u64,
    id: FileId,
}

/// One sealed line waiting to be written.
struct Line {
    bytes: Vec<u8>,
    /// 1 for a submitted record, 0 for a drop marker.
    records: u64,
}

struct Writer {
    shared: Arc<Shared>,
    path: PathBuf,
    rotate_bytes: Option<u64>,
    fsync: bool,
    chain: Chain,
    next_seq: u64,
    prev: String,
    /// Sealed, in order, not yet written: kept across failed writes.
    pending: VecDeque<Line>,
    out: Option<Out>,
    /// The file and size as of the last successful write: a reopen cuts
    /// off whatever a failed write left after it.
    good: Option<(FileId, u64)>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        loop {
            if self.pending.is_empty() {
                let items = {
                    let mut q = self.shared.lock();
                    loop {
                        if !q.items.is_empty() {
                            break;
                        }
                        if q.shutdown {
                            return;
                        }
                        q.idle = true;
                        q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                    q.idle = false;
                    std::mem::take(&mut q.items)
                };
                for item in items {
                    self.seal(item);
                }
            }
            if let Err(e) = self.write_pending() {
                if self.shared.io_ok.swap(false, Ordering::AcqRel) {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "cannot write the audit file; retrying every second"
                    );
                }
                let q = self.shared.lock();
                if q.shutdown {
                    return;
                }
                let q = self
                    .shared
                    .wake
                    .wait_timeout(q, RETRY_EVERY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                if q.shutdown {
                    return;
                }
            }
        }
    }

    fn seal(&mut self, item: Item) {
        let (record, records) = match item {
            Item::Record(r) => (r, 1),
            Item::Dropped(n) => {
                let mut m = Map::new();
                m.insert("event".into(), "audit_records_dropped".into());
                m.insert("count".into(), n.into());
                m.insert("time".into(), rfc3339(now_secs()).into());
                (m, 0)
            }
        };
        let mut line = seal_line(&self.chain, &record, self.next_seq, &self.prev);
        self.prev = sha256_hex(&line);
        self.next_seq += 1;
        line.push(b'\n');
        self.pending.push_back(Line {
            bytes: line,
            records,
        });
    }

    /// Opens the file if needed, and reopens it if the path no longer names
    /// the open file (deleted, moved away, replaced).
    fn ensure_open(&mut self) -> io::Result<()> {
        if let Some(out) = &self.out {
            match fs::metadata(&self.path) {
                Ok(m) if (m.dev(), m.ino()) == out.id => return Ok(()),
                Ok(_) => tracing::warn!(
                    path = %self.path.display(),
                    "the audit file was replaced; continuing the chain in the new file"
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => tracing::warn!(
                    path = %self.path.display(),
                    "the audit file disappeared; continuing the chain in a new file"
                ),
                Err(e) => return Err(e),
            }
            self.out = None;
        }
        let file = open_append(&self.path)?;
        let m = file.metadata()?;
        let id = (m.dev(), m.ino());
        let mut size = m.len();
        if m.is_file() && size > 0 {
            let keep = match self.good {
                // Our own file: drop whatever a failed write left behind.
                Some((gid, gsize)) if gid == id && size >= gsize => gsize,
                // Otherwise drop at most a partial last line.
                _ => {
                    let mut last = [0u8];
                    file.read_exact_at(&mut last, size - 1)?;
                    if last[0] == b'\n' {
                        size
                    } else {
                        partial_line_start(&file, size)?
                    }
                }
            };
            if keep != size {
                file.set_len(keep)?;
                size = keep;
            }
        }
        self.good = Some((id, size));
        self.out = Some(Out { file, size, id });
        Ok(())
    }

    fn write_pending(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.ensure_open()?;
            let limit = self.rotate_bytes;
            let size = self.out.as_ref().map_or(0, |o| o.size);
            let first = self.pending[0].bytes.len() as u64;
            if limit.is_some_and(|l| size > 0 && size + first > l) {
                self.rotate()?;
                continue;
            }
            // As many lines as fit before the next rotation (at least one).
            let mut n = 0;
            let mut bytes = 0u64;
            let mut records = 0;
            self.buf.clear();
            for line in &self.pending {
                let len = line.bytes.len() as u64;
                if n > 0 && limit.is_some_and(|l| size + bytes + len > l) {
                    break;
                }
                self.buf.extend_from_slice(&line.bytes);
                n += 1;
                bytes += len;
                records += line.records;
            }
            let out = self.out.as_mut().expect("ensure_open opened it");
            let result = out.file.write_all(&self.buf).and_then(|()| {
                if self.fsync {
                    out.file.sync_data()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                // Cut off a partly written batch now, or at the reopen.
                if out.file.set_len(out.size).is_err() {
                    self.out = None;
                }
                return Err(e);
            }
            out.size += bytes;
            self.good = Some((out.id, out.size));
            self.pending.drain(..n);
            self.shared.written.fetch_add(records, Ordering::Relaxed);
            let mut q = self.shared.lock();
            q.done += records;
            if !self.shared.io_ok.swap(true, Ordering::AcqRel) {
                tracing::warn!(path = %self.path.display(), "the audit file is writable again");
            }
            if q.items.len() < self.shared.capacity.div_ceil(2) {
                self.shared.overflowed.store(false, Ordering::Release);
            }
            drop(q);
            self.shared.progress.notify_all();
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .to_os_string();
        let stamp = compact_utc(now_secs());
        let mut n = 0u32;
        let target = loop {
            let mut candidate = name.clone();
            candidate.push(format!(".{stamp}"));
            if n > 0 {
                candidate.push(format!(".{n}"));
            }
            let candidate = self.path.with_file_name(candidate);
            match fs::symlink_metadata(&candidate) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => break candidate,
                Err(e) => return Err(e),
                Ok(_) => n += 1,
            }
        };
        fs::rename(&self.path, &target)?;
        self.out = None;
        self.good = None;
        tracing::info!(rotated = %target.display(), "audit file rotated");
        self.ensure_open()?;
        if self.fsync {
            File::open(parent_dir(&self.path))?.sync_all()?;
        }
        Ok(())
    }
}

/// Where the partial last line of a file starts (just after its last
/// newline, or 0).
fn partial_line_start(file: &File, size: u64) -> io::Result<u64> {
    let mut end = size;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------
// Verifier
// ---------------------------------------------------------------------------

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub files: usize,
    pub records: u64,
    /// The first record's seq (0 without records). Greater than 1 when the
    /// earliest files were not given: accepted unless
    /// [`VerifyOptions::require_start`] is set.
    pub first_seq: u64,
    pub last_seq: u64,
}

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// A record's content no longer matches its hash, or (without a key)
    /// was changed with its hash recomputed, which its successor's `prev`
    /// reveals.
    Edited,
    /// Records are missing: a gap in seq the rest of the chain does not
    /// fill (also a rotated file missing between two given files).
    Deleted,
    /// A record that is not part of the chain: a copy of an earlier record
    /// or a forged one claiming a slot another record holds.
    Inserted,
    /// Records out of order: a seq appears before a smaller one.
    Reordered,
    /// A line that is not JSON or lacks the chain fields.
    Malformed,
    /// The last line of a file is cut off (no newline).
    Truncated,
    /// A file could not be read: an I/O error, not evidence of tampering
    /// ([`verify_command`] exits 2 for it).
    Unreadable,
}

impl TamperKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Edited => "edited",
            TamperKind::Deleted => "deleted",
            TamperKind::Inserted => "inserted",
            TamperKind::Reordered => "reordered",
            TamperKind::Malformed => "malformed",
            TamperKind::Truncated => "truncated",
            TamperKind::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for TamperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem found. `line` is 1-based (0 for a file that could not
/// be opened); `seq` is the record concerned (for [`TamperKind::Deleted`],
/// the first missing one), if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub file: PathBuf,
    pub line: usize,
    pub seq: Option<u64>,
    pub kind: TamperKind,
    pub detail: String,
}

/// `<file>:<line>: record <seq> <kind>: <detail>` (without a known seq:
/// `<file>:<line>: <kind>: <detail>`).
impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "record {seq} ")?;
        }
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Tamper {}

/// Verification options beyond the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    pub key: Option<&'a [u8]>,
    /// Require the chain's beginning: the earliest given record must be
    /// seq 1, else its absence is reported as [`TamperKind::Deleted`].
    /// Off by default, so the files still kept after old ones were
    /// archived verify on their own; the summary's `first_seq` (and
    /// [`verify_command`]'s note) says where the checked chain starts.
    pub require_start: bool,
}

/// Verifies files forming one chain, given in any order (they are ordered
/// by their first seq; a path given twice counts once); reports the first
/// problem. Accepts a chain that starts after seq 1 (see
/// [`VerifyOptions::require_start`]). Records cut off the end of the chain
/// cannot be detected from the files alone.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<VerifySummary, Tamper> {
    verify_with(
        files,
        &VerifyOptions {
            key,
            require_start: false,
        },
    )
}

/// The `rack-gateway audit verify <file...>` command body: prints
/// `ok: N records in M files (seq A..B)` to stdout (plus a note when the
/// chain does not start at seq 1), or the [`Tamper`] line to stderr.
/// Exit code 0 when intact, 1 when tampered, 2 for usage or I/O errors.
pub fn verify_command(files: &[PathBuf], key: Option<&[u8]>) -> ExitCode {
    if files.is_empty() {
        eprintln!("usage: rack-gateway audit verify <file>...");
        return ExitCode::from(2);
    }
    match verify(files, key) {
        Ok(s) => {
            println!("{}", summary_line(&s));
            if s.records > 0 && s.first_seq != 1 {
                println!(
                    "note: the chain starts at seq {}: the files holding records 1..{} were not given and are not checked",
                    s.first_seq,
                    s.first_seq - 1
                );
            }
            ExitCode::SUCCESS
        }
        Err(t) => {
            eprintln!("{t}");
            ExitCode::from(if t.kind == TamperKind::Unreadable {
                2
            } else {
                1
            })
        }
    }
}

/// `ok: N records in M files (seq A..B)`.
pub fn summary_line(s: &VerifySummary) -> String {
    if s.records == 0 {
        format!("ok: 0 records in {} files", s.files)
    } else {
        format!(
            "ok: {} records in {} files (seq {}..{})",
            s.records, s.files, s.first_seq, s.last_seq
        )
    }
}

/// [`verify`] with options.
pub fn verify_with(files: &[PathBuf], opts: &VerifyOptions<'_>) -> Result<VerifySummary, Tamper> {
    let chain = Chain::new(opts.key);
    let mut unique: Vec<PathBuf> = Vec::new();
    let mut seen = Vec::new();
    for f in files {
        let canonical = fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        if !seen.contains(&canonical) {
            seen.push(canonical);
            unique.push(f.clone());
        }
    }
    // Order by first seq; empty files last.
    let mut keyed = Vec::with_capacity(unique.len());
    for (i, f) in unique.iter().enumerate() {
        let one = std::slice::from_ref(f);
        match Reader::new(one, &chain).next() {
            None => keyed.push((None, i)),
            Some(Entry::Rec(r)) => keyed.push((Some(r.seq), i)),
            Some(Entry::Bad(t)) => return Err(t),
        }
    }
    keyed.sort_by_key(|(seq, i)| (seq.is_none(), *seq, *i));
    let ordered: Vec<PathBuf> = keyed.iter().map(|(_, i)| unique[*i].clone()).collect();

    let mut reader = Reader::new(&ordered, &chain);
    let mut tip: Option<Rec> = None;
    let mut records = 0u64;
    let mut first_seq = 0u64;
    while let Some(entry) = reader.next() {
        let r = match entry {
            Entry::Bad(t) => return Err(t),
            Entry::Rec(r) => r,
        };
        let checker = Checker {
            files: &ordered,
            chain: &chain,
        };
        checker.check(&mut reader, tip.as_ref(), &r, opts)?;
        if records == 0 {
            first_seq = r.seq;
        }
        records += 1;
        tip = Some(r);
    }
    Ok(VerifySummary {
        files: ordered.len(),
        records,
        first_seq,
        last_seq: tip.map_or(0, |t| t.seq),
    })
}

/// One structurally valid record as read from a file.
#[derive(Debug, Clone)]
struct Rec {
    /// Index into the ordered files.
    file: usize,
    line: usize,
    seq: u64,
    prev: String,
    /// SHA-256 of the whole line: what the next record's prev must be.
    digest: String,
    /// The hash verifies (under the key, if any).
    hash_ok: bool,
    /// Keyed chain only: the hash is a plain SHA-256 of the content.
    plain: bool,
}

enum Entry {
    Rec(Rec),
    Bad(Tamper),
}

/// Reads lines across the ordered files, with one entry of look-ahead.
struct Reader<'a> {
    files: &'a [PathBuf],
    chain: &'a Chain,
    fi: usize,
    src: Option<BufReader<File>>,
    line: usize,
    buf: Vec<u8>,
    peeked: Option<Option<Entry>>,
}

impl<'a> Reader<'a> {
    fn new(files: &'a [PathBuf], chain: &'a Chain) -> Reader<'a> {
        Reader {
            files,
            chain,
            fi: 0,
            src: None,
            line: 0,
            buf: Vec::new(),
            peeked: None,
        }
    }

    /// Starts at the beginning of the ordered file `fi`.
    fn at_file(files: &'a [PathBuf], chain: &'a Chain, fi: usize) -> Reader<'a> {
        let mut r = Reader::new(files, chain);
        r.fi = fi;
        r
    }

    fn next(&mut self) -> Option<Entry> {
        match self.peeked.take() {
            Some(e) => e,
            None => self.read(),
        }
    }

    fn peek(&mut self) -> Option<&Entry> {
        if self.peeked.is_none() {
            let e = self.read();
            self.peeked = Some(e);
        }
        self.peeked.as_ref().and_then(Option::as_ref)
    }

    fn bad(&self, line: usize, seq: Option<u64>, kind: TamperKind, detail: String) -> Entry {
        Entry::Bad(Tamper {
            file: self.files[self.fi].clone(),
            line,
            seq,
            kind,
            detail,
        })
    }

    fn read(&mut self) -> Option<Entry> {
        loop {
            if self.fi >= self.files.len() {
                return None;
            }
            let src = match &mut self.src {
                Some(s) => s,
                None => match File::open(&self.files[self.fi]) {
                    Ok(f) => {
                        self.line = 0;
                        self.src.insert(BufReader::with_capacity(64 * 1024, f))
                    }
                    Err(e) => {
                        let bad = self.bad(0, None, TamperKind::Unreadable, e.to_string());
                        self.fi += 1;
                        return Some(bad);
                    }
                },
            };
            self.buf.clear();
            match src.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.src = None;
                    self.fi += 1;
                }
                Ok(_) => {
                    self.line += 1;
                    let entry = self.entry();
                    return Some(entry);
                }
                Err(e) => {
                    let bad = self.bad(self.line + 1, None, TamperKind::Unreadable, e.to_string());
                    self.src = None;
                    self.fi += 1;
                    return Some(bad);
                }
            }
        }
    }

    fn entry(&self) -> Entry {
        let Some(line) = self.buf.strip_suffix(b"\n") else {
            let seq = parse_line(&self.buf).ok().map(|s| s.seq);
            return self.bad(
                self.line,
                seq,
                TamperKind::Truncated,
                "the last line has no newline: the file was cut off here \
                 (or the line was still being written)"
                    .into(),
            );
        };
        let sealed = match parse_line(line) {
            Ok(s) => s,
            Err(why) => return self.bad(self.line, None, TamperKind::Malformed, why),
        };
        let hashed = &line[..line.len() - HASH_TAIL_LEN];
        let hash_ok = self.chain.tag(hashed) == sealed.hash;
        Entry::Rec(Rec {
            file: self.fi,
            line: self.line,
            seq: sealed.seq,
            prev: sealed.prev,
            digest: sha256_hex(line),
            hash_ok,
            plain: !hash_ok && self.chain.keyed() && sha256_hex(hashed) == sealed.hash,
        })
    }
}

/// Classifies the first anomaly; rescans the files when the look-ahead is
/// not enough (only once, since verification stops there).
struct Checker<'a> {
    files: &'a [PathBuf],
    chain: &'a Chain,
}

impl Checker<'_> {
    fn at(&self, r: &Rec, seq: Option<u64>, kind: TamperKind, detail: String) -> Tamper {
        Tamper {
            file: self.files[r.file].clone(),
            line: r.line,
            seq,
            kind,
            detail,
        }
    }

    /// `line 7` in the same file as `from`, else `<file>:7`.
    fn place(&self, r: &Rec, from: &Rec) -> String {
        if r.file == from.file {
            format!("line {}", r.line)
        } else {
            format!("{}:{}", self.files[r.file].display(), r.line)
        }
    }

    fn check(
        &self,
        reader: &mut Reader<'_>,
        tip: Option<&Rec>,
        r: &Rec,
        opts: &VerifyOptions<'_>,
    ) -> Result<(), Tamper> {
        use TamperKind::*;
        let mut peek_next = || match reader.peek() {
            Some(Entry::Rec(n)) => Some(n.clone()),
            _ => None,
        };
        if !r.hash_ok {
            // Not part of the chain if the chain goes on around it.
            if let (Some(t), Some(n)) = (tip, &peek_next()) {
                if n.seq == t.seq + 1 && n.prev == t.digest {
                    return Err(self.at(
                        r,
                        Some(r.seq),
                        Inserted,
                        format!(
                            "not part of the chain: its hash does not verify and the next \
                             record (seq {}, {}) links to the record before it",
                            n.seq,
                            self.place(n, r)
                        ),
                    ));
                }
            }
            let why = if r.plain {
                "its hash is a plain SHA-256 of the content: the line was changed and \
                 its hash recomputed without the chain key"
            } else if self.chain.keyed() {
                "its hash does not match the line's content under the given key \
                 (the line was changed, or the key is not the chain's)"
            } else {
                "its hash does not match the line's content (the line was changed, \
                 or the chain is keyed and no key was given)"
            };
            return Err(self.at(r, Some(r.seq), Edited, why.into()));
        }
        let Some(t) = tip else {
            if r.seq == 1 && r.prev != GENESIS_PREV {
                return Err(self.at(
                    r,
                    Some(1),
                    Edited,
                    "record 1 must link to 64 zeros (the chain's start)".into(),
                ));
            }
            if r.seq != 1 && r.prev == GENESIS_PREV {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Edited,
                    "only record 1 may link to 64 zeros".into(),
                ));
            }
            if opts.require_start && r.seq != 1 {
                return Err(self.at(
                    r,
                    Some(1),
                    Deleted,
                    format!(
                        "{} missing: the chain's beginning was not given",
                        range(1, r.seq - 1)
                    ),
                ));
            }
            return Ok(());
        };
        if r.seq == t.seq + 1 {
            if r.prev == t.digest {
                return Ok(());
            }
            if let Some(n) = &peek_next() {
                if n.seq == r.seq && n.prev == t.digest {
                    return Err(self.at(
                        r,
                        Some(r.seq),
                        Inserted,
                        format!(
                            "not part of the chain: the next record ({}) has the same seq \
                             and links to the record before this one",
                            self.place(n, r)
                        ),
                    ));
                }
            }
            return Err(self.at(
                t,
                Some(t.seq),
                Edited,
                format!(
                    "record {} ({}) links to different content: this record was changed \
                     and its hash recomputed",
                    r.seq,
                    self.place(r, t)
                ),
            ));
        }
        if r.seq > t.seq + 1 {
            let (a, b) = (t.seq + 1, r.seq - 1);
            if let Some(later) = self.find_after(r, |s| (a..=b).contains(&s)) {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Reordered,
                    format!(
                        "record {} comes before record {} ({})",
                        r.seq,
                        later.seq,
                        self.place(&later, r)
                    ),
                ));
            }
            if r.prev == t.digest {
                return Err(self.at(
                    r,
                    Some(r.seq),
                    Edited,
                    format!(
                        "seq jumps from {} to {} but the record links to record {}: its seq \
                         was changed and its hash recomputed",
                        t.seq, r.seq, t.seq
                    ),
                ));
            }
            let detail = if r.file != t.file && r.line == 1 {
                format!(
                    "{} missing between {} (ends at seq {}) and this file: a rotated file is missing?",
                    range(a, b),
                    self.files[t.file].display(),
                    t.seq
                )
            } else {
                format!(
                    "{} missing (the chain jumps from {} to {} here)",
                    range(a, b),
                    t.seq,
                    r.seq
                )
            };
            return Err(self.at(r, Some(a), Deleted, detail));
        }
        // r.seq <= t.seq: the seq repeats or goes back.
        let earlier = self.find_before(r, r.seq);
        if let Some(e) = earlier.as_ref().filter(|e| e.digest == r.digest) {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!("a copy of record {} ({})", e.seq, self.place(e, r)),
            ));
        }
        if r.seq == t.seq && r.prev == t.prev {
            // Two records for one slot: the chain goes on from the genuine one.
            if let Some(n) = &peek_next() {
                if n.seq == r.seq + 1 && n.prev == r.digest {
                    return Err(self.at(
                        t,
                        Some(t.seq),
                        Inserted,
                        format!(
                            "not part of the chain: {} has the same seq and prev, and the \
                             chain continues from it",
                            self.place(r, t)
                        ),
                    ));
                }
            }
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!(
                    "not part of the chain: {} already holds seq {} with the same prev",
                    self.place(t, r),
                    r.seq
                ),
            ));
        }
        if let Some(e) = earlier.as_ref().filter(|e| e.prev == r.prev) {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!(
                    "not part of the chain: claims seq {}, which {} already holds",
                    r.seq,
                    self.place(e, r)
                ),
            ));
        }
        if r.seq == t.seq {
            return Err(self.at(
                r,
                Some(r.seq),
                Inserted,
                format!("repeats seq {} ({})", r.seq, self.place(t, r)),
            ));
        }
        Err(self.at(
            r,
            Some(r.seq),
            Reordered,
            format!("seq goes back from {} to {}", t.seq, r.seq),
        ))
    }

    /// The first record after `r` whose seq satisfies `want`.
    fn find_after(&self, r: &Rec, want: impl Fn(u64) -> bool) -> Option<Rec> {
        let mut reader = Reader::at_file(self.files, self.chain, r.file);
        while let Some(e) = reader.next() {
            if let Entry::Rec(x) = e {
                if (x.file, x.line) > (r.file, r.line) && want(x.seq) {
                    return Some(x);
                }
            }
        }
        None
    }

    /// The (accepted) record with `seq` before `r`.
    fn find_before(&self, r: &Rec, seq: u64) -> Option<Rec> {
        let mut reader = Reader::new(self.files, self.chain);
        while let Some(e) = reader.next() {
            if let Entry::Rec(x) = e {
                if (x.file, x.line) >= (r.file, r.line) {
                    return None;
                }
                if x.seq == seq {
                    return Some(x);
                }
            }
        }
        None
    }
}

/// `record 5` or `records 5..7`.
fn range(a: u64, b: u64) -> String {
    if a == b {
        format!("record {a} is")
    } else {
        format!("records {a}..{b} are")
    }
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

/// Redacts run/exec commands before they are audited.
///
/// * Operator patterns (`audit.redact_commands`): each is a glob matched
///   against the **whole** command, where `*` matches any run of
///   characters (including none) and every other character matches itself
///   (case-sensitive). A matching command is replaced entirely by
///   `[redacted: matches <i>]`, `<i>` being the 0-based index of the first
///   matching pattern.
/// * Built-in rules, applied to every other command, replace a value by
///   `[redacted]`:
///   - assignments `NAME=value` at the start of a word (also after `;`,
///     `&`, `|`, `(`, a quote or a backtick) whose name, uppercased,
///     contains `PASSWORD`, `PASSWD`, `SECRET`, `TOKEN`, `CREDENTIAL` or
///     `PRIVATE`, or ends with `KEY`, `PASS` or `PWD` (but not `PWD` and
///     `OLDPWD` themselves);
///   - long flags `--name=value`, `--name value`, `-name=value` and
///     `-name value` (names of two or more characters; `_` and `-` alike)
///     whose name contains `password`, `passwd`, `secret`, `token`,
///     `credential` or `private`, ends with `key` or `pass`, or is `pwd`,
///     `auth`, `authorization` or `cookie`; in the separated form the next
///     word is the value unless it starts with `-`;
///   - the word after `Bearer` or `Basic` (any case): HTTP credentials;
///   - the password in URL user info: `scheme://user:[redacted]@host`.
///
///   A value runs to the next whitespace or `;`, `&`, `|`, `(`, `)`, quote
///   or backtick; a value that starts with a quote runs to the matching
///   quote. Short flags (`-p secret`) are not recognized: add a pattern.
#[derive(Debug, Clone)]
pub struct CommandRedactor {
    patterns: Vec<String>,
}

impl CommandRedactor {
    /// Compiles the patterns; an empty pattern is an error.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        for (i, p) in patterns.iter().enumerate() {
            if p.is_empty() {
                return Err(format!("audit.redact_commands[{i}]: empty pattern"));
            }
        }
        Ok(CommandRedactor {
            patterns: patterns.to_vec(),
        })
    }

    /// The command as it may be recorded.
    pub fn apply(&self, command: &str) -> String {
        if let Some(i) = self
            .patterns
            .iter()
            .position(|p| glob_match(p.as_bytes(), command.as_bytes()))
        {
            return format!("[redacted: matches {i}]");
        }
        mask_url_passwords(&mask_values(command))
    }
}

/// Whole-string glob with `*` wildcards.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == s[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// Characters after which a new word starts.
fn is_break(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b';' | b'&' | b'|' | b'(' | b')' | b'\'' | b'"' | b'`')
}

fn sensitive_env_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("KEY")
        || n.ends_with("PASS")
        || (n.ends_with("PWD") && n != "PWD" && n != "OLDPWD")
}

fn sensitive_flag_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("key")
        || n.ends_with("pass")
        || matches!(n.as_str(), "pwd" | "auth" | "authorization" | "cookie")
}

/// The end of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
        let q = b[j];
        j += 1;
        while j < b.len() && b[j] != q {
            j += 1;
        }
        return (j + 1).min(b.len());
    }
    while j < b.len() && !is_break(b[j]) {
        j += 1;
    }
    j
}

/// Appends `[redacted]` for a non-empty value at `i`; returns where the
/// scan continues.
fn redact_value(b: &[u8], i: usize, out: &mut Vec<u8>) -> usize {
    let end = value_end(b, i);
    if end > i {
        out.extend_from_slice(b"[redacted]");
    }
    end
}

/// The built-in assignment, flag and HTTP credential rules.
fn mask_values(command: &str) -> String {
    let b = command.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut word_start = true;
    while i < b.len() {
        let c = b[i];
        if is_break(c) {
            out.push(c);
            i += 1;
            word_start = true;
            continue;
        }
        if word_start {
            word_start = false;
            // Word characters: [A-Za-z0-9_-].
            let word_end = |from: usize| {
                let mut j = from;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-')
                {
                    j += 1;
                }
                j
            };
            if c == b'-' {
                let dashes = if b.get(i + 1) == Some(&b'-') { 2 } else { 1 };
                let name_start = i + dashes;
                let name_end = word_end(name_start);
                let name = &command[name_start..name_end];
                if name.len() >= 2
                    && name.as_bytes()[0].is_ascii_alphanumeric()
                    && sensitive_flag_name(name)
                {
                    out.extend_from_slice(&b[i..name_end]);
                    i = name_end;
                    if b.get(i) == Some(&b'=') {
                        out.push(b'=');
                        i = redact_value(b, i + 1, &mut out);
                        continue;
                    }
                    if i < b.len() && !b[i].is_ascii_whitespace() {
                        continue;
                    }
                    let mut j = i;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j < b.len() && b[j] != b'-' && !matches!(b[j], b';' | b'&' | b'|' | b')') {
                        out.extend_from_slice(&b[i..j]);
                        i = redact_value(b, j, &mut out);
                    }
                    continue;
                }
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let name_end = word_end(i);
                let name = &command[i..name_end];
                if b.get(name_end) == Some(&b'=') && !name.contains('-') && sensitive_env_name(name)
                {
                    out.extend_from_slice(&b[i..=name_end]);
                    i = redact_value(b, name_end + 1, &mut out);
                    continue;
                }
                if (name.eq_ignore_ascii_case("bearer") || name.eq_ignore_ascii_case("basic"))
                    && b.get(name_end).is_some_and(|c| *c == b' ' || *c == b'\t')
                {
                    let mut j = name_end;
                    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                        j += 1;
                    }
                    out.extend_from_slice(&b[i..j]);
                    i = redact_value(b, j, &mut out);
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII was cut or inserted, at ASCII boundaries.
    String::from_utf8(out).unwrap_or_else(|_| "[redacted: not UTF-8]".into())
}

/// `scheme://user:secret@host` -> `scheme://user:[redacted]@host`.
fn mask_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let auth_len = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || "'\"`;&|()".contains(c)
            })
            .unwrap_or(tail.len());
        let authority = &tail[..auth_len];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let colon = authority[..at].find(':').expect("checked");
                out.push_str(&authority[..=colon]);
                out.push_str("[redacted]");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[auth_len..];
    }
    out.push_str(rest);
    out
}

/// Whether a form, query, header or JSON field's value must never be
/// recorded. Case-insensitive; `_` and `-` are the same. Sensitive:
/// * names containing `password`, `passwd`, `secret`, `token`,
///   `credential`, `cookie`, `private` or `authorization`;
/// * names ending in `key` (`key`, `api-key`, `X-Api-Key`, `apiKey`);
/// * names with a `-`-separated word `pass`, `pwd`, `auth`, `creds`,
///   `session` or `signature` (`src-creds-pass`, `x-auth-user`);
/// * the value-carrying convox fields `value`, `values`, `env`,
///   `environment` and `params`.
pub fn is_sensitive_field(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    if [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "cookie",
        "private",
        "authorization",
    ]
    .iter()
    .any(|w| n.contains(w))
    {
        return true;
    }
    if n.ends_with("key") {
        return true;
    }
    if n.split('-').any(|w| {
        matches!(
            w,
            "pass" | "pwd" | "auth" | "creds" | "session" | "signature"
        )
    }) {
        return true;
    }
    matches!(
        n.as_str(),
        "value" | "values" | "env" | "environment" | "params"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event".into(), "request".into());
        m.insert("n".into(), i.into());
        m
    }

    #[test]
    fn seal_layout_and_hash_construction() {
        let line = seal(&rec(7), 3, GENESIS_PREV, None);
        assert_eq!(
            &line[..line.len() - HASH_TAIL_LEN],
            format!("{{\"event\":\"request\",\"n\":7,\"seq\":3,\"prev\":\"{GENESIS_PREV}\"")
        );
        let hashed = &line.as_bytes()[..line.len() - HASH_TAIL_LEN];
        assert_eq!(
            line,
            format!(
                "{}{},\"hash\":\"{}\"}}",
                "",
                std::str::from_utf8(hashed).unwrap(),
                sha256_hex(hashed)
            )
        );
        let parsed = parse_line(line.as_bytes()).unwrap();
        assert_eq!((parsed.seq, parsed.prev.as_str()), (3, GENESIS_PREV));
        // Keyed: HMAC-SHA-256 over the same bytes.
        let keyed = seal(&rec(7), 3, GENESIS_PREV, Some(b"k"));
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"k"), hashed);
        assert!(keyed.ends_with(&format!(",\"hash\":\"{}\"}}", hex(tag.as_ref()))));
        assert_ne!(keyed, line);
    }

    #[test]
    fn seal_empty_record_and_reserved_keys() {
        let line = seal(&Map::new(), 1, GENESIS_PREV, None);
        assert!(line.starts_with("{\"seq\":1,\"prev\":\""));
        assert!(parse_line(line.as_bytes()).is_ok());
        let mut m = rec(1);
        m.insert("seq".into(), "mine".into());
        m.insert("hash".into(), 5.into());
        let line = seal(&m, 9, GENESIS_PREV, None);
        assert_eq!(line.matches("\"seq\"").count(), 1);
        assert_eq!(line.matches("\"hash\"").count(), 1);
        assert!(line.starts_with("{\"event\":\"request\",\"n\":1,\"seq\":9,"));
    }

    #[test]
    fn parse_line_rejects_misplaced_chain_fields() {
        let good = seal(&rec(1), 1, GENESIS_PREV, None);
        // Whitespace after a colon: valid JSON, not the sealed layout.
        let spaced = good.replacen("\"seq\":1", "\"seq\": 1", 1);
        assert_eq!(
            parse_line(spaced.as_bytes()).err().unwrap(),
            "seq, prev and hash are not the line's last fields, in that order"
        );
        assert_eq!(parse_line(b"{\"a\":1}").err().unwrap(), "no seq field");
        assert!(parse_line(b"nope")
            .err()
            .unwrap()
            .starts_with("not a JSON object"));
        let upper = good.replace(GENESIS_PREV, &"A".repeat(64));
        assert_eq!(
            parse_line(upper.as_bytes()).err().unwrap(),
            "prev is not 64 lowercase hex digits"
        );
    }

    #[test]
    fn time_formats() {
        assert_eq!(compact_utc(0), "19700101T000000Z");
        assert_eq!(compact_utc(1_767_225_600 + 3661), "20260101T010101Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rotated_names() {
        assert!(is_rotated_name(
            "audit.jsonl.20260101T010101Z",
            "audit.jsonl"
        ));
        assert!(is_rotated_name(
            "audit.jsonl.20260101T010101Z.12",
            "audit.jsonl"
        ));
        assert!(!is_rotated_name(
            "audit.jsonl.20260101T010101Z.",
            "audit.jsonl"
        ));
        assert!(!is_rotated_name("audit.jsonl.2026-01-01", "audit.jsonl"));
        assert!(!is_rotated_name("audit.jsonl", "audit.jsonl"));
        assert!(!is_rotated_name("other.20260101T010101Z", "audit.jsonl"));
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"psql*", b"psql -h db"));
        assert!(glob_match(b"*secret*", b"echo secret stuff"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(!glob_match(b"psql", b"psql -h db"));
        assert!(!glob_match(b"*psql", b"psql -h db"));
    }

    fn wait_unhealthy(sink: &Sink) {
        // A liveness guard, not a timing assertion.
        for _ in 0..6000 {
            if !sink.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the sink never noticed the unwritable file");
    }

    /// Overflow while the file is unwritable: the overflowed records are
    /// counted, a marker takes their place in the chain, fail-closed turns
    /// unhealthy, and everything accepted is written after recovery.
    #[test]
    fn overflow_marker_and_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        fs::create_dir(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let sink = Sink::open_with_capacity(
            FileSettings {
                path: path.clone(),
                rotate_bytes: None,
                key: None,
                fail_closed: true,
                fsync: false,
            },
            4,
        )
        .unwrap();
        sink.submit(rec(1));
        sink.flush();
        // The path stops resolving (its directory becomes a regular file),
        // which fails even for root.
        let moved = tmp.path().join("sub.moved");
        fs::rename(&dir, &moved).unwrap();
        fs::write(&dir, b"not a directory").unwrap();
        sink.submit(rec(2));
        wait_unhealthy(&sink);
        for i in 3..=6 {
            sink.submit(rec(i));
        }
        for i in 7..=9 {
            sink.submit(rec(i));
        }
        assert_eq!(sink.dropped(), 3);
        assert!(!sink.healthy());
        fs::remove_file(&dir).unwrap();
        fs::rename(&moved, &dir).unwrap();
        sink.flush();
        assert!(sink.healthy());
        assert_eq!(sink.written(), 6);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7);
        let ns: Vec<Option<u64>> = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["n"].as_u64())
            .collect();
        assert_eq!(
            ns,
            vec![Some(1), Some(2), Some(3), Some(4), Some(5), Some(6), None]
        );
        let marker: Value = serde_json::from_str(lines[6]).unwrap();
        assert_eq!(marker["event"], "audit_records_dropped");
        assert_eq!(marker["count"], 3);
        assert_eq!(marker["seq"], 7);
        let summary = verify(&[path], None).unwrap();
        assert_eq!(
            (summary.records, summary.first_seq, summary.last_seq),
            (7, 1, 7)
        );
    }
}
