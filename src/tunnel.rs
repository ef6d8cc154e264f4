//! Websocket sessions after the handshake: splicing the bytes between client
//! and rack, and refusing a session in-band.
//!
//! Splicing raw bytes (rather than relaying parsed frames) is what keeps the
//! stock CLI working: text frames with invalid UTF-8, the empty binary EOF
//! frame and the exit-code marker frame arrive exactly as sent, pings pass
//! through, and nothing is buffered beyond a copy buffer.
//!
//! Refusals are in-band because the CLI prints only "bad handshake" for a
//! refused upgrade (convox-api.md §7.2): the gateway accepts the upgrade,
//! sends `ERROR: <msg>`, the exit marker on exec/shell routes, the empty
//! binary EOF frame and a close frame.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::ws::{self, Frame, Opcode, EXIT_MARKER};

/// How a spliced session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides finished; bytes client→rack and rack→client.
    Closed {
        up: u64,
        down: u64,
    },
    /// One side failed.
    Error,
    IdleTimeout,
    MaxSession,
    /// The gateway is shutting down.
    Shutdown,
}

impl SpliceEnd {
    pub fn as_str(&self) -> &'static str {
        match self {
            SpliceEnd::Closed { .. } => "closed",
            SpliceEnd::Error => "error",
            SpliceEnd::IdleTimeout => "idle-timeout",
            SpliceEnd::MaxSession => "max-session",
            SpliceEnd::Shutdown => "shutdown",
        }
    }
}

/// Copies bytes both ways until both sides are done, the session is idle
/// for `idle`, lasts longer than `max`, or `stop` resolves.
pub async fn splice<A, B>(
    client: A,
    rack: B,
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
    let watchdog = async {
        loop {
            let deadline = base + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut rack) => match r {
            Ok((up, down)) => SpliceEnd::Closed { up, down },
            Err(_) => SpliceEnd::Error,
        },
        _ = watchdog => SpliceEnd::IdleTimeout,
        _ = tokio::time::sleep(max) => SpliceEnd::MaxSession,
        _ = stop => SpliceEnd::Shutdown,
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

    #[tokio::test(start_paused = true)]
    async fn splice_idle_timeout() {
        let (c1, _c2) = tokio::io::duplex(64);
        let (r1, _r2) = tokio::io::duplex(64);
        let end = splice(
            c1,
            r1,
            Duration::from_secs(5),
            Duration::from_secs(100),
            std::future::pending(),
        )
        .await;
        assert_eq!(end, SpliceEnd::IdleTimeout);
    }

    #[tokio::test]
    async fn splice_copies_both_ways() {
        let (c1, mut c2) = tokio::io::duplex(64);
        let (r1, mut r2) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(
            c1,
            r1,
            Duration::from_secs(5),
            Duration::from_secs(100),
            std::future::pending(),
        ));
        c2.write_all(b"\xff\xfeup").await.unwrap();
        let mut buf = [0u8; 4];
        r2.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"\xff\xfeup");
        r2.write_all(b"down").await.unwrap();
        c2.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"down");
        drop(c2);
        drop(r2);
        assert_eq!(task.await.unwrap(), SpliceEnd::Closed { up: 4, down: 4 });
    }
}
