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
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Longest wait for the peers' close frames once ours are sent.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Longest wait for the final socket shutdown (TCP FIN, TLS close_notify).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Copy buffer per direction.
const COPY_BUF: usize = 16 * 1024;

/// What the spliced bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
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
    pub fn from_upgrade(value: Option<&http::HeaderValue>) -> Self {
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
pub enum EndReason {
    /// Both sides finished (EOF both ways).
    Closed,
    /// One side failed while copying.
    Error,
    IdleTimeout,
    MaxSession,
    /// The gateway is shutting down.
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Error => "error",
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::MaxSession => "max-session",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// The close frame (code, reason) the gateway sends both sides when it
    /// ends the session itself; `None` when a side ended it.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            EndReason::Shutdown => Some((1001, "gateway shutting down")),
            EndReason::IdleTimeout => Some((1000, "idle timeout")),
            EndReason::MaxSession => Some((1008, "session too long")),
            EndReason::Closed | EndReason::Error => None,
        }
    }
}

/// How a spliced session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceEnd {
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
pub async fn splice<A, B>(
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
        let up_done = up.poll_forward(cx, &mut client, &mut rack)?.is_ready();
        let down_done = down.poll_forward(cx, &mut rack, &mut client)?.is_ready();
        if up_done && down_done {
            Poll::Ready(Ok::<(), io::Error>(()))
        } else {
            Poll::Pending
        }
    });
    let reason = tokio::select! {
        r = forward => match r {
            Ok(()) => EndReason::Closed,
            Err(_) => EndReason::Error,
        },
        _ = watchdog => EndReason::IdleTimeout,
        _ = tokio::time::sleep(max) => EndReason::MaxSession,
        _ = stop => EndReason::Shutdown,
    };
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
    /// side (as `copy_bidirectional` does). Ready at once when done.
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
            if self.pos == self.cap
                && !self.read_eof
                && self.poll_fill(cx, src, usize::MAX)?.is_pending()
            {
                ready!(self.poll_flush(cx, dst))?;
                return Poll::Pending;
            }
            ready!(self.poll_write_pending(cx, dst))?;
            if self.read_eof {
                ready!(self.poll_flush(cx, dst))?;
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.phase = Phase::Done;
                return Poll::Ready(Ok(()));
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
                            self.out = ws::encode(&Frame::close(self.close.0, self.close.1), mask);
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
pub async fn refuse_in_band(on_upgrade: OnUpgrade, message: String, exit_marker: bool) {
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
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn refusal_frames_in_order() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write_refusal(&mut a, "gateway: denied\nsecond line", true)
            .await
            .unwrap();
        drop(a);
        let mut frames = Vec::new();
        while let Some(f) = ws::read_frame(&mut b, 4096).await.unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames[0],
            Frame::text("ERROR: gateway: denied second line\n")
        );
        assert_eq!(frames[1], Frame::text(format!("{EXIT_MARKER}:1\n")));
        assert_eq!(frames[2], Frame::binary(Vec::new()));
        assert_eq!(frames[3].opcode, Opcode::Close);
        assert_eq!(frames.len(), 4);
    }

    type Peer = tokio::io::DuplexStream;

    /// Starts a websocket splice between two duplex pipes; returns the
    /// client's and the rack's far ends and a trigger for `stop`.
    fn start(
        framing: Framing,
        idle: Duration,
        max: Duration,
    ) -> (
        tokio::task::JoinHandle<SpliceEnd>,
        Peer,
        Peer,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (c1, c2) = tokio::io::duplex(4096);
        let (r1, r2) = tokio::io::duplex(4096);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(splice(c1, r1, framing, idle, max, stop));
        (task, c2, r2, tx)
    }

    fn start_ws() -> (
        tokio::task::JoinHandle<SpliceEnd>,
        Peer,
        Peer,
        tokio::sync::oneshot::Sender<()>,
    ) {
        start(
            Framing::Websocket,
            Duration::from_secs(3600),
            Duration::from_secs(36_000),
        )
    }

    async fn read_n(r: &mut Peer, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        r.read_exact(&mut buf).await.unwrap();
        buf
    }

    /// True if nothing arrives for a (virtual) second.
    async fn silent(r: &mut Peer) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(1), r.read(&mut byte))
            .await
            .is_err()
    }

    /// Reads one close frame, checking its mask bit on the wire.
    async fn read_close(r: &mut Peer, masked: bool) -> Frame {
        let head = read_n(r, 2).await;
        assert_eq!(head[0], 0x88, "a final close frame: {head:?}");
        assert_eq!(head[1] & 0x80 != 0, masked, "mask bit: {head:?}");
        let len = usize::from(head[1] & 0x7f) + if masked { 4 } else { 0 };
        let mut raw = head;
        raw.extend(read_n(r, len).await);
        ws::read_frame(&mut raw.as_slice(), 125)
            .await
            .unwrap()
            .unwrap()
    }

    async fn assert_eof(r: &mut Peer) {
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    }

    fn masked(frame: &Frame) -> Vec<u8> {
        ws::encode(frame, Some([0xa1, 0xb2, 0xc3, 0xd4]))
    }

    fn unmasked(frame: &Frame) -> Vec<u8> {
        ws::encode(frame, None)
    }

    #[tokio::test]
    async fn splice_copies_raw_bytes_both_ways() {
        let (task, mut c2, mut r2, _stop) = start_ws();
        c2.write_all(b"\xff\xfeup").await.unwrap();
        assert_eq!(read_n(&mut r2, 4).await, b"\xff\xfeup");
        r2.write_all(b"down").await.unwrap();
        assert_eq!(read_n(&mut c2, 4).await, b"down");
        drop(c2);
        drop(r2);
        let end = task.await.unwrap();
        assert_eq!(
            end,
            SpliceEnd {
                reason: EndReason::Closed,
                up: 4,
                down: 4,
                exit_code: None
            }
        );
        assert_eq!(end.as_str(), "closed");
    }

    /// Invalid UTF-8 text, the empty binary EOF frame, pings and the exit
    /// marker pass byte for byte; the exit code is captured.
    #[tokio::test]
    async fn splice_copies_frames_exactly_and_captures_the_exit_code() {
        let (task, mut c2, mut r2, _stop) = start_ws();
        let up: Vec<u8> = [
            masked(&Frame::text(b"ls \xff\xfe\n".to_vec())),
            masked(&Frame::ping(b"k".to_vec())),
            masked(&Frame::binary(Vec::new())),
        ]
        .concat();
        let down: Vec<u8> = [
            unmasked(&Frame::text(b"\xe2\x82".to_vec())),
            unmasked(&Frame::text(vec![0xac; 300])),
            unmasked(&Frame::pong(b"k".to_vec())),
            unmasked(&Frame::exit_code(3)),
            unmasked(&Frame::binary(Vec::new())),
        ]
        .concat();
        c2.write_all(&up).await.unwrap();
        r2.write_all(&down).await.unwrap();
        assert_eq!(read_n(&mut r2, up.len()).await, up);
        assert_eq!(read_n(&mut c2, down.len()).await, down);
        drop(c2);
        drop(r2);
        assert_eq!(
            task.await.unwrap(),
            SpliceEnd {
                reason: EndReason::Closed,
                up: up.len() as u64,
                down: down.len() as u64,
                exit_code: Some(3)
            }
        );
    }

    /// The marker frame arrives in three reads (inside the header, inside
    /// the payload); the last marker wins.
    #[tokio::test]
    async fn exit_code_captured_across_reads() {
        let (task, mut c2, mut r2, _stop) = start_ws();
        let first = unmasked(&Frame::exit_code(1));
        r2.write_all(&first).await.unwrap();
        assert_eq!(read_n(&mut c2, first.len()).await, first);
        let marker = unmasked(&Frame::exit_code(-42));
        for piece in [&marker[..1], &marker[1..20], &marker[20..]] {
            r2.write_all(piece).await.unwrap();
            // Wait until it passed, so the next piece is a separate read.
            assert_eq!(read_n(&mut c2, piece.len()).await, piece);
        }
        drop(c2);
        drop(r2);
        let end = task.await.unwrap();
        assert_eq!(end.exit_code, Some(-42));
        assert_eq!(end.down, (first.len() + marker.len()) as u64);
    }

    /// Stop while both directions are inside a frame: nothing is injected
    /// inside a frame; each frame completes, then the close frame follows
    /// (unmasked to the client, masked to the rack); bytes after the frame
    /// are dropped; the peers' close frames end the session.
    #[tokio::test(start_paused = true)]
    async fn stop_mid_frame_closes_after_the_frame() {
        let (task, mut c2, mut r2, stop) = start_ws();
        let down_frame = unmasked(&Frame::text(vec![0xff; 200]));
        let up_frame = masked(&Frame::binary(vec![7; 300]));
        // Rack: header (4 bytes) and 98 of 200. Client: header (8) and 50 of 300.
        r2.write_all(&down_frame[..102]).await.unwrap();
        assert_eq!(read_n(&mut c2, 102).await, &down_frame[..102]);
        c2.write_all(&up_frame[..58]).await.unwrap();
        assert_eq!(read_n(&mut r2, 58).await, &up_frame[..58]);

        stop.send(()).unwrap();
        assert!(silent(&mut c2).await, "no close frame inside a frame");
        assert!(silent(&mut r2).await, "no close frame inside a frame");

        // Each side finishes its frame and sends one more, which must not
        // be forwarded after the gateway's close frame.
        r2.write_all(&down_frame[102..]).await.unwrap();
        r2.write_all(&unmasked(&Frame::text("late"))).await.unwrap();
        c2.write_all(&up_frame[58..]).await.unwrap();
        c2.write_all(&masked(&Frame::text("late"))).await.unwrap();

        assert_eq!(
            read_n(&mut c2, down_frame.len() - 102).await,
            &down_frame[102..]
        );
        let close = read_close(&mut c2, false).await;
        assert_eq!(close, Frame::close(1001, "gateway shutting down"));
        assert_eq!(read_n(&mut r2, up_frame.len() - 58).await, &up_frame[58..]);
        let close = read_close(&mut r2, true).await;
        assert_eq!(close, Frame::close(1001, "gateway shutting down"));

        c2.write_all(&masked(&Frame::close(1001, "")))
            .await
            .unwrap();
        r2.write_all(&unmasked(&Frame::close(1001, "")))
            .await
            .unwrap();
        assert_eof(&mut c2).await;
        assert_eof(&mut r2).await;
        assert_eq!(
            task.await.unwrap(),
            SpliceEnd {
                reason: EndReason::Shutdown,
                up: up_frame.len() as u64,
                down: down_frame.len() as u64,
                exit_code: None
            }
        );
    }

    /// A close frame that already went one way is not repeated: the client
    /// closed first, so on stop only the client gets the gateway's close.
    #[tokio::test(start_paused = true)]
    async fn stop_after_peer_close_sends_no_second_close() {
        let (task, mut c2, mut r2, stop) = start_ws();
        let client_close = masked(&Frame::close(1000, "bye"));
        c2.write_all(&client_close).await.unwrap();
        assert_eq!(read_n(&mut r2, client_close.len()).await, client_close);
        stop.send(()).unwrap();
        let close = read_close(&mut c2, false).await;
        assert_eq!(close.close_code(), Some(1001));
        r2.write_all(&unmasked(&Frame::close(1000, "bye")))
            .await
            .unwrap();
        assert_eof(&mut r2).await;
        assert_eof(&mut c2).await;
        let end = task.await.unwrap();
        assert_eq!(end.reason, EndReason::Shutdown);
        assert_eq!(end.up, client_close.len() as u64);
        assert_eq!(end.down, 0);
    }

    /// A frame that never completes is not cut: after the drain limit the
    /// connections are dropped without a close frame on that side.
    #[tokio::test(start_paused = true)]
    async fn stop_gives_up_on_a_frame_that_never_ends() {
        let (task, mut c2, mut r2, stop) = start_ws();
        let frame = unmasked(&Frame::text(vec![1; 100]));
        r2.write_all(&frame[..10]).await.unwrap();
        assert_eq!(read_n(&mut c2, 10).await, &frame[..10]);
        stop.send(()).unwrap();
        // The client→rack direction is between frames: the rack gets its
        // close frame at once.
        let close = read_close(&mut r2, true).await;
        assert_eq!(close.close_code(), Some(1001));
        assert_eof(&mut c2).await;
        let end = task.await.unwrap();
        assert_eq!(end.reason, EndReason::Shutdown);
        assert_eq!((end.up, end.down), (0, 10));
    }

    async fn gateway_end(reason: EndReason, idle: Duration, max: Duration) {
        let (code, text) = reason.close_frame().unwrap();
        let (task, mut c2, mut r2, _stop) = start(Framing::Websocket, idle, max);
        let up = masked(&Frame::text("whoami\n"));
        let down = unmasked(&Frame::text(b"root\n\xff".to_vec()));
        c2.write_all(&up).await.unwrap();
        assert_eq!(read_n(&mut r2, up.len()).await, up);
        r2.write_all(&down).await.unwrap();
        assert_eq!(read_n(&mut c2, down.len()).await, down);
        // Neither side answers the close frames: the gateway waits briefly,
        // then shuts the sockets.
        assert_eq!(read_close(&mut c2, false).await, Frame::close(code, text));
        assert_eq!(read_close(&mut r2, true).await, Frame::close(code, text));
        assert_eof(&mut c2).await;
        assert_eof(&mut r2).await;
        assert_eq!(
            task.await.unwrap(),
            SpliceEnd {
                reason,
                up: up.len() as u64,
                down: down.len() as u64,
                exit_code: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_sends_close_frames() {
        gateway_end(
            EndReason::IdleTimeout,
            Duration::from_secs(5),
            Duration::from_secs(100),
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_session_sends_close_frames() {
        gateway_end(
            EndReason::MaxSession,
            Duration::from_secs(100),
            Duration::from_secs(5),
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_without_traffic() {
        let (task, mut c2, mut r2, _stop) = start(
            Framing::Websocket,
            Duration::from_secs(5),
            Duration::from_secs(100),
        );
        assert_eq!(
            read_close(&mut c2, false).await,
            Frame::close(1000, "idle timeout")
        );
        assert_eq!(read_close(&mut r2, true).await.close_code(), Some(1000));
        let end = task.await.unwrap();
        assert_eq!(end.reason, EndReason::IdleTimeout);
        assert_eq!((end.up, end.down, end.exit_code), (0, 0, None));
    }

    /// Other upgraded protocols get no websocket frames from the gateway.
    #[tokio::test(start_paused = true)]
    async fn opaque_sessions_are_only_shut() {
        let (task, mut c2, mut r2, stop) = start(
            Framing::Opaque,
            Duration::from_secs(3600),
            Duration::from_secs(36_000),
        );
        c2.write_all(b"\x00\x01spdy").await.unwrap();
        assert_eq!(read_n(&mut r2, 6).await, b"\x00\x01spdy");
        stop.send(()).unwrap();
        assert_eof(&mut c2).await;
        assert_eof(&mut r2).await;
        let end = task.await.unwrap();
        assert_eq!(end.reason, EndReason::Shutdown);
        assert_eq!((end.up, end.down, end.exit_code), (6, 0, None));
    }

    #[test]
    fn framing_from_the_upgrade_header() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(
            Framing::from_upgrade(Some(&v("websocket"))),
            Framing::Websocket
        );
        assert_eq!(
            Framing::from_upgrade(Some(&v("WebSocket"))),
            Framing::Websocket
        );
        assert_eq!(Framing::from_upgrade(Some(&v("SPDY/3.1"))), Framing::Opaque);
        assert_eq!(Framing::from_upgrade(None), Framing::Opaque);
    }

    #[test]
    fn end_reasons_and_close_codes() {
        assert_eq!(
            EndReason::Shutdown.close_frame(),
            Some((1001, "gateway shutting down"))
        );
        assert_eq!(
            EndReason::IdleTimeout.close_frame(),
            Some((1000, "idle timeout"))
        );
        assert_eq!(
            EndReason::MaxSession.close_frame(),
            Some((1008, "session too long"))
        );
        assert_eq!(EndReason::Closed.close_frame(), None);
        assert_eq!(EndReason::Error.close_frame(), None);
        assert_eq!(EndReason::IdleTimeout.as_str(), "idle-timeout");
        assert_eq!(EndReason::MaxSession.as_str(), "max-session");
        assert_eq!(EndReason::Shutdown.as_str(), "shutdown");
        assert_eq!(EndReason::Error.as_str(), "error");
    }
}
