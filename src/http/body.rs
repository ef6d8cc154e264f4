//! The one body type the gateway passes around, and the idle-timeout
//! wrapper that keeps streams streaming without a total deadline.
//!
//! Bodies are never collected: request bodies go to the rack frame by frame
//! and response bodies come back the same way, so backpressure holds and a
//! multi-hundred-MB upload costs no more memory than a small one. The only
//! exceptions are the few small, capped form requests and JSON responses
//! that carry secrets (see `secrets.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub(crate) fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// The stream went silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("stream idle for more than {0:?}")]
pub(crate) struct IdleTimeout(pub Duration);

pin_project! {
    /// Fails the body if no frame arrives for `idle`; the timer restarts on
    /// every frame, so long transfers that keep moving never time out.
    pub(crate) struct Idle<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
    }
}

impl<B> Idle<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Idle {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
        }
    }
}

impl<B> http_body::Body for Idle<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(r) => {
                let idle = *this.idle;
                this.sleep.as_mut().reset(Instant::now() + idle);
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Adds the data bytes that pass through to a shared counter, for the
    /// audit record's byte counts.
    pub(crate) struct Counted<B> {
        #[pin]
        inner: B,
        count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Counted { inner, count }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                this.count
                    .fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a response body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Sent to the end.
    Complete,
    /// The stream from the rack failed (or timed out).
    Failed,
    /// Dropped before its end: the client went away.
    Abandoned,
}

pin_project! {
    /// Calls `on_end` exactly once, when the body ends, fails or is dropped
    /// unfinished: the point where a streamed request is really complete.
    pub(crate) struct OnEnd<B: http_body::Body, F: FnOnce(End)> {
        #[pin]
        inner: B,
        on_end: Option<F>,
    }

    impl<B: http_body::Body, F: FnOnce(End)> PinnedDrop for OnEnd<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                // An empty body may be dropped without ever being polled.
                f(if this.inner.is_end_stream() { End::Complete } else { End::Abandoned });
            }
        }
    }
}

impl<B: http_body::Body, F: FnOnce(End)> OnEnd<B, F> {
    pub fn new(inner: B, on_end: F) -> Self {
        OnEnd {
            inner,
            on_end: Some(on_end),
        }
    }
}

impl<B, F> http_body::Body for OnEnd<B, F>
where
    B: http_body::Body<Data = Bytes>,
    F: FnOnce(End),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        let end = match &r {
            Poll::Ready(None) => Some(End::Complete),
            Poll::Ready(Some(Err(_))) => Some(End::Failed),
            _ => None,
        };
        if let Some(end) = end {
            if let Some(f) = this.on_end.take() {
                f(end);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
