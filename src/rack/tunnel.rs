//! Websocket sessions after the handshake: splicing the bytes between client
//! and rack, ending a session cleanly, and refusing a session in-band.
//!
//! Splicing raw bytes (rather than relaying parsed frames) is what keeps the
//! stock CLI working: text frames with invalid UTF-8, the empty binary EOF
//! frame and the exit-code marker frame arrive exactly as sent, pings pass
//! through, and nothing is buffered beyond a copy buffer.
//!
//! While copying, a [`ws::FrameTracker`] per direction follows the frame
//! boundaries (it only looks at the bytes) and picks the exit code out of
//! the rack's marker frame. When the gateway ends a session itself
//! (shutdown, idle timeout, session too long) it lets each direction finish
//! the frame in flight, then sends a close frame to each side, waits briefly
//! for the close frames back and shuts both sockets:
//!
//! | Reason | Close code | Reason text | What the convox CLI does |
//! |---|---|---|---|
//! | [`EndReason::Shutdown`] | 1001 going away | `gateway shutting down` | treats it as EOF |
//! | [`EndReason::IdleTimeout`] | 1000 normal closure | `idle timeout` | treats it as EOF: nothing was happening, a quiet end |
//! | [`EndReason::MaxSession`] | 1008 policy violation | `session too long` | reports an error with the reason: a live session was cut by policy |
//! | [`EndReason::Revoked`] | 1008 policy violation | `access revoked` | prints the `ERROR:` line sent just before (a reload no longer allows the session) |
//!
//! The rack gets the same code in a masked frame (the gateway is the
//! rack's websocket client). Sessions of other upgraded protocols
//! ([`Framing::Opaque`], e.g. SPDY on kubernetes routes) are copied blindly
//! and only have their sockets shut.
//!
//! Refusals are in-band because the CLI prints only "bad handshake" for a
//! refused upgrade (convox-api.md §7.2): the gateway accepts the upgrade,
//! sends `ERROR: <msg>`, the exit marker on exec/shell routes, the empty
//! binary EOF frame and a close frame.
//!
//! The rack ends every session with the empty binary frame (stdapi sends
//! it when the handler returns). When the rack's connection ends or fails
//! before that, at a frame boundary, the client is told the same way a
//! refusal is ([`RACK_LOST`], the exit marker with code 1 on exec routes so
//! the CLI exits non-zero, the EOF frame, close 1011) instead of seeing a
//! bare "unexpected EOF"; the session ends as an error. Cut inside a frame,
//! nothing can follow it and the client's connection is just shut.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::rack::ws::{self, Frame, FrameTracker, Opcode, EXIT_MARKER};

/// Longest wait, once the gateway decides to end a session, for each
/// direction to finish the frame in flight and take the close frame. After
/// that the connections are dropped without one.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Longest wait for the peers' close frames once ours are sent.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Longest wait for the final socket shutdown (TCP FIN, TLS close_notify).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Copy buffer per direction.
const COPY_BUF: usize = 16 * 1024;

/// What the client is told when the rack's side of a session ends before
/// the rack said it was over.
pub(crate) const RACK_LOST: &str =
    "gateway: the rack's connection ended before the session did (the command's outcome is unknown)";

/// What the spliced bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// RFC 6455 frames: boundaries are tracked, the exit code is captured,
    /// and a gateway-initiated end sends close frames.
    Websocket,
    /// Any other upgraded protocol: copied blindly; a gateway-initiated end
    /// only shuts the sockets.
    Opaque,
}

impl Framing {
    /// The framing of an upgraded connection, from the `Upgrade` header of
    /// the rack's 101 response: `websocket` (any case) or anything else.
    pub(crate) fn from_upgrade(value: Option<&http::HeaderValue>) -> Self {
        match value {
            Some(v) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") => {
                Framing::Websocket
            }
            _ => Framing::Opaque,
        }
    }
}

/// Why a spliced session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Both sides finished (EOF both ways).
    Closed,
    /// One side failed while copying.
    Error,
    IdleTimeout,
    MaxSession,
    /// The gateway is shutting down.
    Shutdown,
    /// A reload no longer allows the session.
    Revoked,
}

/// Why the gateway asks a session to end (the `stop` of [`splice_until`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    Shutdown,
    /// Tell the client `message` in-band (as a refusal would: `ERROR:`
    /// line, the exit marker when `exit_marker`, the EOF frame), then close.
    Revoked {
        message: String,
        exit_marker: bool,
    },
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Error => "error",
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::MaxSession => "max-session",
            EndReason::Shutdown => "shutdown",
            EndReason::Revoked => "revoked",
        }
    }

    /// The close frame (code, reason) the gateway sends both sides when it
    /// ends the session itself; `None` when a side ended it.
    pub(crate) fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            EndReason::Shutdown => Some((1001, "gateway shutting down")),
            EndReason::IdleTimeout => Some((1000, "idle timeout")),
            EndReason::MaxSession => Some((1008, "session too long")),
            EndReason::Revoked => Some((1008, "access revoked")),
            EndReason::Closed | EndReason::Error => None,
        }
    }
}

/// How a spliced session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpliceEnd {
    pub reason: EndReason,
    /// Bytes forwarded client→rack, whatever the reason. Close frames the
    /// gateway sent itself and bytes read but dropped while closing are not
    /// counted.
    pub up: u64,
    /// Bytes forwarded rack→client, counted the same way.
    pub down: u64,
    /// The code in the last exit-marker frame the rack sent (exec and
    /// shell sessions), if any. A marker that arrives after the gateway
    /// sent its close frame still counts, though the client never sees it.
    pub exit_code: Option<i32>,
}

impl SpliceEnd {
    /// The end reason, for the audit log.
    pub fn as_str(&self) -> &'static str {
        self.reason.as_str()
    }
}

/// Copies bytes both ways until both sides are done, the session is idle
/// (no bytes read either way) for `idle`, lasts longer than `max`, or
/// `stop` resolves. In the last three cases a websocket session is closed
/// as the module documentation describes; that takes at most
/// [`DRAIN_LIMIT`] + [`CLOSE_WAIT`] + 1 s more.
#[cfg(test)]
pub(crate) async fn splice<A, B>(
    client: A,
    rack: B,
    framing: Framing,
    idle: Duration,
    max: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> SpliceEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let stop = async {
        stop.await;
        Stop::Shutdown
    };
    splice_until(client, rack, framing, false, idle, max, stop).await
}

/// [`splice`], where `stop` also says why: a revoked session tells the
/// client why before the close frame (at a frame boundary, like the close).
/// `exit_marker`: the route's client reads an exit code (exec, shell), so
/// notices the gateway sends carry one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn splice_until<A, B>(
    client: A,
    rack: B,
    framing: Framing,
    exit_marker: bool,
    idle: Duration,
    max: Duration,
    stop: impl std::future::Future<Output = Stop>,
) -> SpliceEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let base = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Activity {
        inner: client,
        last: last.clone(),
        base,
    };
    let mut rack = Activity {
        inner: rack,
        last: last.clone(),
        base,
    };
    // The gateway is the rack's client, so what it adds towards the rack
    // is masked; towards the client it is not.
    let mut up = Leg::new(framing, true);
    let mut down = Leg::new(framing, false);
    if down.tracker.is_some() {
        down.lost = notice_frames(RACK_LOST, exit_marker);
        down.lost.extend(ws::encode(
            &Frame::close(1011, "rack connection lost"),
            None,
        ));
    }
    let watchdog = async {
        loop {
            let deadline = base + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let forward = poll_fn(|cx| {
        // Once the client closed or went away, a rack that drops the
        // connection lost nothing the client waits for.
        if up.read_eof || up.tracker.as_ref().is_some_and(FrameTracker::close_seen) {
            down.lost.clear();
        }
        let up_done = up.poll_forward(cx, &mut client, &mut rack)?.is_ready();
        let down_done = down.poll_forward(cx, &mut rack, &mut client)?.is_ready();
        // A lost rack ends the session once the client was told: nothing
        // the client sends can reach the rack any more.
        if (up_done || down.source_lost) && down_done {
            Poll::Ready(Ok::<(), io::Error>(()))
        } else {
            Poll::Pending
        }
    });
    let mut notice = Vec::new();
    let reason = tokio::select! {
        r = forward => match r {
            Ok(()) => EndReason::Closed,
            Err(_) => EndReason::Error,
        },
        _ = watchdog => EndReason::IdleTimeout,
        _ = tokio::time::sleep(max) => EndReason::MaxSession,
        why = stop => match why {
            Stop::Shutdown => EndReason::Shutdown,
            Stop::Revoked { message, exit_marker } => {
                notice = notice_frames(&message, exit_marker);
                EndReason::Revoked
            }
        },
    };
    // The rack was lost and the client told: an error, however the
    // client's side ended afterwards.
    let reason = if down.source_lost && reason == EndReason::Closed {
        EndReason::Error
    } else {
        reason
    };
    if down.source_lost && up.phase != Phase::Done {
        // Let the client read the notice and answer the close before the
        // sockets drop (a reset could discard what it has not read yet).
        up.phase = Phase::Discard;
        let answered = poll_fn(|cx| up.poll_close(cx, &mut client, &mut rack));
        let _ = tokio::time::timeout(CLOSE_WAIT, answered).await;
    }
    down.notice = notice;
    if let Some((code, text)) = reason.close_frame() {
        close_both(&mut up, &mut down, &mut client, &mut rack, code, text).await;
    }
    SpliceEnd {
        reason,
        up: up.bytes,
        down: down.bytes,
        exit_code: down.tracker.as_ref().and_then(FrameTracker::exit_code),
    }
}

/// Ends a session from the gateway's side: each direction finishes its
/// frame in flight and gets a close frame (within [`DRAIN_LIMIT`], else
/// everything is dropped), the peers get [`CLOSE_WAIT`] to answer, then
/// both sockets are shut.
async fn close_both<A, B>(
    up: &mut Leg,
    down: &mut Leg,
    client: &mut A,
    rack: &mut B,
    code: u16,
    text: &'static str,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    up.begin_close(code, text);
    down.begin_close(code, text);
    let sent = poll_fn(|cx| {
        poll_close_both(cx, up, down, client, rack);
        if up.close_sent() && down.close_sent() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    if tokio::time::timeout(DRAIN_LIMIT, sent).await.is_err() {
        return;
    }
    let answered = poll_fn(|cx| {
        if poll_close_both(cx, up, down, client, rack) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let _ = tokio::time::timeout(CLOSE_WAIT, answered).await;
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
        let _ = client.shutdown().await;
        let _ = rack.shutdown().await;
    })
    .await;
}

/// Polls both legs' closing phases; true when both are done. A leg that
/// is not done has registered its waker.
fn poll_close_both<A, B>(
    cx: &mut Context<'_>,
    up: &mut Leg,
    down: &mut Leg,
    client: &mut A,
    rack: &mut B,
) -> bool
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let up_done = up.poll_close(cx, client, rack).is_ready();
    let down_done = down.poll_close(cx, rack, client).is_ready();
    up_done && down_done
}

/// Where a [`Leg`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Copying.
    Forward,
    /// Closing: copying the rest of the frame in flight, reading no further.
    Drain,
    /// Closing: writing the gateway's close frame to the destination.
    Inject,
    /// Closing: reading the source and dropping it, until the source's
    /// close frame or EOF.
    Discard,
    /// Nothing more to do.
    Done,
}

/// One direction of a splice: source → destination.
struct Leg {
    buf: Box<[u8]>,
    /// Bytes read but not yet written: `buf[pos..cap]`.
    pos: usize,
    cap: usize,
    need_flush: bool,
    read_eof: bool,
    /// `None` for opaque sessions.
    tracker: Option<FrameTracker>,
    /// Bytes written to the destination (forwarded, not injected).
    bytes: u64,
    phase: Phase,
    /// Whether injected frames are masked (towards the rack).
    mask: bool,
    close: (u16, &'static str),
    /// Frames sent just before the close frame (a revocation's message).
    notice: Vec<u8>,
    /// Frames sent if the source ends (or fails) at a frame boundary
    /// without having ended the stream itself; empty when nothing is.
    lost: Vec<u8>,
    /// The source ended that way and `lost` was sent.
    source_lost: bool,
    /// The source's read error, kept while `lost` may still be sent.
    failed: Option<io::Error>,
    /// The encoded close frame and how much of it is written.
    out: Vec<u8>,
    out_pos: usize,
}

impl Leg {
    fn new(framing: Framing, mask: bool) -> Self {
        Leg {
            buf: vec![0; COPY_BUF].into_boxed_slice(),
            pos: 0,
            cap: 0,
            need_flush: false,
            read_eof: false,
            tracker: (framing == Framing::Websocket).then(FrameTracker::new),
            bytes: 0,
            phase: Phase::Forward,
            mask,
            close: (1000, ""),
            notice: Vec::new(),
            lost: Vec::new(),
            source_lost: false,
            failed: None,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Reads up to `limit` bytes into the empty buffer. `Ok(0)` is EOF.
    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let limit = limit.min(self.buf.len());
        let mut rb = ReadBuf::new(&mut self.buf[..limit]);
        ready!(Pin::new(src).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            self.read_eof = true;
        } else if let Some(t) = &mut self.tracker {
            t.feed(&self.buf[..n]);
        }
        self.pos = 0;
        self.cap = n;
        Poll::Ready(Ok(n))
    }

    /// Writes what was read and not yet written.
    fn poll_write_pending<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<io::Result<()>> {
        while self.pos < self.cap {
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.buf[self.pos..self.cap]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
            self.bytes += n as u64;
            self.need_flush = true;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut W,
    ) -> Poll<io::Result<()>> {
        if self.need_flush {
            ready!(Pin::new(dst).poll_flush(cx))?;
            self.need_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Copies until the source's EOF, then shuts the destination's write
    /// side (as `copy_bidirectional` does). Ready at once when done. A
    /// source that ends or fails short of ending the stream gets `lost`
    /// written after it, when there is one and the cut is between frames.
    fn poll_forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.phase == Phase::Done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.read_eof {
                match self.poll_fill(cx, src, usize::MAX) {
                    Poll::Pending => {
                        ready!(self.poll_flush(cx, dst))?;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) if self.lost.is_empty() => return Poll::Ready(Err(e)),
                    // The source failed: past this it ended, as an error.
                    Poll::Ready(Err(e)) => {
                        self.read_eof = true;
                        self.failed = Some(e);
                    }
                    Poll::Ready(Ok(_)) => {}
                }
            }
            ready!(self.poll_write_pending(cx, dst))?;
            if self.read_eof {
                let cut_short = self
                    .tracker
                    .as_ref()
                    .is_some_and(|t| t.at_boundary() && !t.end_seen());
                if cut_short && !self.lost.is_empty() {
                    self.out = std::mem::take(&mut self.lost);
                    self.out_pos = 0;
                    self.source_lost = true;
                }
                // Never more than `lost`: `out` is empty otherwise.
                while self.out_pos < self.out.len() {
                    let n = ready!(Pin::new(&mut *dst).poll_write(cx, &self.out[self.out_pos..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    self.out_pos += n;
                    self.need_flush = true;
                }
                ready!(self.poll_flush(cx, dst))?;
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.phase = Phase::Done;
                return Poll::Ready(match self.failed.take() {
                    Some(e) if !self.source_lost => Err(e),
                    _ => Ok(()),
                });
            }
        }
    }

    /// Starts closing with this close frame. A leg already done stays
    /// done; an opaque leg has nothing to finish or send.
    fn begin_close(&mut self, code: u16, text: &'static str) {
        self.close = (code, text);
        self.phase = match (self.phase, &self.tracker) {
            (Phase::Done, _) | (_, None) => Phase::Done,
            _ => Phase::Drain,
        };
    }

    /// True once this leg's close frame is written (or will never be).
    fn close_sent(&self) -> bool {
        matches!(self.phase, Phase::Discard | Phase::Done)
    }

    /// Drives the closing phases; Ready when the leg is done. I/O errors
    /// end the leg: the session is ending anyway.
    fn poll_close<R, W>(&mut self, cx: &mut Context<'_>, src: &mut R, dst: &mut W) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match self.poll_close_inner(cx, src, dst) {
            Poll::Ready(Ok(())) => {
                self.phase = Phase::Done;
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                self.phase = Phase::Done;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close_inner<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let Some(tracker) = self.tracker.as_ref() else {
                return Poll::Ready(Ok(()));
            };
            let (until_boundary, close_seen) = (tracker.until_boundary(), tracker.close_seen());
            match self.phase {
                Phase::Forward | Phase::Done => return Poll::Ready(Ok(())),
                Phase::Drain => {
                    ready!(self.poll_write_pending(cx, dst))?;
                    if until_boundary == 0 {
                        // Between frames. A close that already went this
                        // way (the source closed first) is not repeated.
                        if !close_seen {
                            let mask = self.mask.then(|| {
                                // A fixed key only if the system RNG fails;
                                // the frame is still well-formed.
                                ws::random_mask().unwrap_or([0x52, 0x47, 0x57, 0x59])
                            });
                            self.out = std::mem::take(&mut self.notice);
                            self.out.extend(ws::encode(
                                &Frame::close(self.close.0, self.close.1),
                                mask,
                            ));
                        }
                        self.phase = Phase::Inject;
                        continue;
                    }
                    if self.read_eof {
                        // The source ended inside a frame: nothing can be
                        // added after it.
                        return Poll::Ready(Ok(()));
                    }
                    if self.poll_fill(cx, src, until_boundary)?.is_pending() {
                        ready!(self.poll_flush(cx, dst))?;
                        return Poll::Pending;
                    }
                }
                Phase::Inject => {
                    while self.out_pos < self.out.len() {
                        let n =
                            ready!(Pin::new(&mut *dst).poll_write(cx, &self.out[self.out_pos..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        self.out_pos += n;
                        self.need_flush = true;
                    }
                    ready!(self.poll_flush(cx, dst))?;
                    self.phase = Phase::Discard;
                }
                Phase::Discard => {
                    if self.read_eof || close_seen {
                        return Poll::Ready(Ok(()));
                    }
                    ready!(self.poll_fill(cx, src, usize::MAX))?;
                    // Dropped: nothing may follow a close frame.
                    self.pos = self.cap;
                }
            }
        }
    }
}

/// Records the time of the last successful read, for the idle watchdog.
struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    base: Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.base.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends the refusal frames on an accepted upgrade, then waits briefly for
/// the client's close so the message isn't lost to a reset.
pub(crate) async fn refuse_in_band(on_upgrade: OnUpgrade, message: String, exit_marker: bool) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let _ = write_refusal(&mut io, &message, exit_marker).await;
    let drain = async {
        while let Ok(Some(f)) = ws::read_frame(&mut io, 64 * 1024).await {
            if f.opcode == Opcode::Close {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    let _ = io.shutdown().await;
}

/// The frames that tell the client why the gateway ends its session, as
/// [`write_refusal`] sends them minus the close (unmasked: towards the
/// client).
fn notice_frames(message: &str, exit_marker: bool) -> Vec<u8> {
    let line = message.replace(['\r', '\n'], " ");
    let mut out = ws::encode(&Frame::text(format!("ERROR: {line}\n")), None);
    if exit_marker {
        out.extend(ws::encode(&Frame::text(format!("{EXIT_MARKER}:1\n")), None));
    }
    out.extend(ws::encode(&Frame::binary(Vec::new()), None));
    out
}

async fn write_refusal<W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &str,
    exit_marker: bool,
) -> io::Result<()> {
    // One line, as the CLI prints it; never starts with 0x00 (ECS exec).
    let line = message.replace(['\r', '\n'], " ");
    ws::write_frame(io, &Frame::text(format!("ERROR: {line}\n")), None).await?;
    if exit_marker {
        ws::write_frame(io, &Frame::text(format!("{EXIT_MARKER}:1\n")), None).await?;
    }
    ws::write_frame(io, &Frame::binary(Vec::new()), None).await?;
    ws::write_frame(io, &Frame::close(1000, ""), None).await?;
    io.flush().await
}

#[cfg(test)]
mod tests;
