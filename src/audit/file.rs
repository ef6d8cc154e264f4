//! The audit file sink ([`Sink`]): an append-only, hash-chained JSONL file
//! (the line format is [`super::chain`]'s) written by one thread, with
//! rotation, resume after a restart or crash, and the health fail-closed
//! mode refuses requests on. Submitters never wait for disk I/O; a caller
//! that must not answer before its record is on disk awaits
//! [`Sink::durable`] with the number [`Sink::submit`] gave it.
//!
//! # Durability
//!
//! The writer takes every queued record as one batch, writes it, and (with
//! `fsync`) `fdatasync`s once: group commit, one sync per batch however
//! many requests wait on it. After each batch it publishes how many
//! submitted records are on disk in a `tokio::sync::watch` channel, so an
//! async waiter never blocks a runtime thread; while writes fail it
//! publishes that too, so no waiter hangs on a broken disk.
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
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;

use super::chain::{parse_line, seal_line, sha256_hex, Chain, GENESIS_PREV, HASH_TAIL_LEN};
use crate::clock::{compact_utc, rfc3339, unix_now};

/// Records buffered between submitters and the writer thread.
const QUEUE_CAPACITY: usize = 64 * 1024;

/// How long the writer waits before retrying a failed write.
const RETRY_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Resume: the chain's last record
// ---------------------------------------------------------------------------

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
// Rotation
// ---------------------------------------------------------------------------

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
    /// Answers released without their record confirmed on disk (fail-open
    /// with the file failing, or the record lost to overflow).
    unconfirmed: AtomicU64,
    fsync: bool,
    /// What the writer has made durable, for [`Sink::durable`].
    synced: watch::Sender<Synced>,
}

/// The writer's progress as waiters see it.
#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// Submitted records written (and fsynced when configured), in order.
    done: u64,
    /// The last write failed: waiters stop waiting.
    failing: bool,
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
                unconfirmed: AtomicU64::new(0),
                fsync: settings.fsync,
                synced: watch::Sender::new(Synced::default()),
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

    /// Queues one record; never waits for disk I/O. Returns its number for
    /// [`Sink::durable`], or `None` when the queue was full: then the record
    /// is dropped and counted, and in fail-closed mode the sink turns
    /// unhealthy until the writer has caught up.
    pub fn submit(&self, record: Map<String, Value>) -> Option<u64> {
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
            return None;
        }
        q.items.push_back(Item::Record(record));
        q.accepted += 1;
        let n = q.accepted;
        if q.idle {
            q.idle = false;
            drop(q);
            shared.wake.notify_one();
        }
        Some(n)
    }

    /// Resolves once record `n` (from [`Sink::submit`]) and every record
    /// before it are written — and fsynced, with `fsync` — giving true; or,
    /// without waiting for the retries, false as soon as a write fails (or
    /// the writer stopped short of it). Never blocks a thread.
    pub fn durable(&self, n: u64) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut rx = self.handle.shared.synced.subscribe();
        async move {
            let reached = |p: &Synced| p.done >= n;
            let waited = rx
                .wait_for(|p| reached(p) || p.failing)
                .await
                .map(|p| reached(&p));
            waited.unwrap_or_else(|_| reached(&rx.borrow()))
        }
    }

    /// Whether records are fsynced, so that [`Sink::durable`] means on disk.
    pub fn fsync(&self) -> bool {
        self.handle.shared.fsync
    }

    /// Counts an answer released without its record confirmed durable.
    pub(crate) fn count_unconfirmed(&self) {
        self.handle
            .shared
            .unconfirmed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Answers released without their record confirmed on disk.
    pub fn unconfirmed(&self) -> u64 {
        self.handle.shared.unconfirmed.load(Ordering::Relaxed)
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
                self.shared.synced.send_modify(|p| p.failing = true);
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
                m.insert("time".into(), rfc3339(unix_now()).into());
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
            // Under the lock, so whoever sees `done` (flush) sees it here.
            self.shared.synced.send_replace(Synced {
                done: q.done,
                failing: false,
            });
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
        let stamp = compact_utc(unix_now());
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

#[cfg(test)]
mod tests;
