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

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(b: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// The stream went silent for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("stream idle for more than {0:?}")]
pub struct IdleTimeout(pub Duration);

pin_project! {
    /// Fails the body if no frame arrives for `idle`; the timer restarts on
    /// every frame, so long transfers that keep moving never time out.
    pub struct Idle<B> {
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
    /// Signals once the inner body has yielded its last frame, so the proxy
    /// knows when the upload is complete.
    pub struct NotifyEnd<B> {
        #[pin]
        inner: B,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    }
}

impl<B> NotifyEnd<B> {
    pub fn new(inner: B, done: tokio::sync::oneshot::Sender<()>) -> Self {
        NotifyEnd {
            inner,
            done: Some(done),
        }
    }
}

impl<B> http_body::Body for NotifyEnd<B>
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
        if let Poll::Ready(None) = r {
            if let Some(tx) = this.done.take() {
                let _ = tx.send(());
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
