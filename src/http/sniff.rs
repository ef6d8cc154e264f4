//! Watches the raw bytes of each HTTP/1.1 request head on a connection, to
//! catch framing that hyper normalises away before the gateway sees it.
//!
//! hyper accepts a request with both `Content-Length` and
//! `Transfer-Encoding` (it uses chunked, drops `Content-Length` from the
//! header map and closes the connection afterwards), and merges repeated
//! equal `Content-Length` lines. Neither is smuggling through the gateway,
//! but both are ambiguous framing that the gateway promises to refuse, so
//! this observer parses each head with the same parser hyper uses
//! (httparse), follows the body framing to find the next head, and marks
//! requests whose framing was ambiguous. The proxy answers those with 400.
//!
//! The observer never changes bytes. If it loses track (an upgrade, a head
//! too large, a malformed body), it stops watching for the rest of the
//! connection; hyper still parses and rejects malformed input itself.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head the observer (and the server) accepts.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Marker put in a request's extensions when its raw head had ambiguous
/// framing (`Content-Length` with `Transfer-Encoding`, or several
/// `Content-Length` lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AmbiguousFraming;

/// One flag per request head seen on the connection, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heads(Arc<Mutex<VecDeque<bool>>>);

impl Heads {
    /// Whether the next request (in arrival order) had ambiguous framing.
    pub(crate) fn next_ambiguous(&self) -> bool {
        self.0
            .lock()
            .map(|mut q| q.pop_front().unwrap_or(false))
            .unwrap_or(false)
    }

    fn push(&self, ambiguous: bool) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(ambiguous);
        }
    }
}

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd,
    Trailer(Vec<u8>),
    Off,
}

/// An IO wrapper that feeds the bytes it reads to the framing observer.
pub(crate) struct Sniff<T> {
    inner: T,
    state: State,
    heads: Heads,
}

impl<T> Sniff<T> {
    pub fn new(inner: T) -> (Self, Heads) {
        let heads = Heads::default();
        (
            Sniff {
                inner,
                state: State::Head(Vec::new()),
                heads: heads.clone(),
            },
            heads,
        )
    }

    /// Advances the framing state machine over `data`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Fixed(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkDataEnd;
                    }
                }
                State::ChunkDataEnd => {
                    // CRLF (or a bare LF, which httparse tolerates).
                    match data[0] {
                        b'\r' => data = &data[1..],
                        b'\n' => {
                            data = &data[1..];
                            self.state = State::ChunkSize(Vec::new());
                        }
                        _ => self.state = State::Off,
                    }
                }
                State::ChunkSize(line) | State::Trailer(line) => {
                    let Some(pos) = data.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..pos]);
                    data = &data[pos + 1..];
                    let text = std::mem::take(line);
                    let text = text.strip_suffix(b"\r").unwrap_or(&text);
                    self.state = if matches!(self.state, State::Trailer(_)) {
                        if text.is_empty() {
                            State::Head(Vec::new())
                        } else {
                            State::Trailer(Vec::new())
                        }
                    } else {
                        chunk_size(text)
                    };
                }
                State::Head(buf) => {
                    let before = buf.len();
                    buf.extend_from_slice(data);
                    let mut headers = [httparse::EMPTY_HEADER; 128];
                    let mut req = httparse::Request::new(&mut headers);
                    match req.parse(buf) {
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_HEAD {
                                self.state = State::Off;
                            }
                            return;
                        }
                        Ok(httparse::Status::Complete(len)) => {
                            let (mut cl, mut te, mut upgrade) = (0usize, 0usize, false);
                            let mut length = None;
                            for h in req.headers.iter() {
                                if h.name.eq_ignore_ascii_case("content-length") {
                                    cl += 1;
                                    length = std::str::from_utf8(h.value)
                                        .ok()
                                        .and_then(|v| v.trim().parse::<u64>().ok());
                                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                    te += 1;
                                } else if h.name.eq_ignore_ascii_case("upgrade") {
                                    upgrade = true;
                                }
                            }
                            let connect = req.method == Some("CONNECT");
                            self.heads.push(cl > 1 || (cl > 0 && te > 0));
                            let consumed = len - before;
                            data = &data[consumed.min(data.len())..];
                            self.state = if upgrade || connect {
                                // After a 101 the bytes are no longer HTTP.
                                State::Off
                            } else if te > 0 {
                                State::ChunkSize(Vec::new())
                            } else {
                                match (cl, length) {
                                    (0, _) | (_, Some(0)) => State::Head(Vec::new()),
                                    (_, Some(n)) => State::Fixed(n),
                                    (_, None) => State::Off,
                                }
                            };
                        }
                        Err(_) => {
                            self.state = State::Off;
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn chunk_size(line: &[u8]) -> State {
    let hex = line.split(|b| *b == b';').next().unwrap_or(&[]);
    let hex = std::str::from_utf8(hex).map(str::trim).unwrap_or("");
    match u64::from_str_radix(hex, 16) {
        Ok(0) => State::Trailer(Vec::new()),
        Ok(n) => State::ChunkData(n),
        Err(_) => State::Off,
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniff<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if !matches!(this.state, State::Off) {
                this.feed(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniff<T> {
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
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(chunks: &[&[u8]]) -> Vec<bool> {
        let (mut s, heads) = Sniff::new(tokio::io::empty());
        for c in chunks {
            s.feed(c);
        }
        let mut out = Vec::new();
        while let Ok(mut q) = heads.0.lock() {
            match q.pop_front() {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    #[test]
    fn flags_ambiguous_framing_per_request() {
        let a = b"GET /apps HTTP/1.1\r\nHost: x\r\n\r\n";
        let b = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let c = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let d = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let mut all = Vec::new();
        for part in [&a[..], &b[..], &c[..], &a[..], &d[..]] {
            all.extend_from_slice(part);
        }
        assert_eq!(flags(&[&all]), [false, false, false, false, true]);
        // The same bytes one at a time.
        let singles: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(flags(&singles), [false, false, false, false, true]);
        let dup = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(flags(&[dup]), [true]);
    }

    #[test]
    fn chunk_extensions_trailers_and_bodies_that_look_like_heads() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req = format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(flags(&[&req]), [false, false]);
    }

    #[test]
    fn stops_after_upgrade() {
        let up = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
        assert_eq!(flags(&[up]), [false]);
    }
}
