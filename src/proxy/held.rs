//! The body of a streamed rack answer when answers wait for their audit
//! records (`--audit-fsync`): the client must not see the answer end before
//! its record is on disk, yet the body must keep streaming.
//!
//! [`Held`] keeps a one-frame lookahead: frame N goes out when frame N+1
//! arrives. When the rack's body ends, the request is recorded, and the
//! last frame (and the end) go out only once that record is durable; if it
//! cannot be (fail-closed with the audit file failing) the stream is cut
//! instead, so the client never takes the answer as complete.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::audit::Unrecorded;
use crate::http::body::{BoxError, End};

/// Resolves once the request's record is durable.
pub(crate) type Durable = Pin<Box<dyn Future<Output = Result<(), Unrecorded>> + Send>>;

/// The stream was cut because its audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the audit record of this answer could not be written (fail-closed)")]
pub(crate) struct AuditUnavailable;

pin_project! {
    /// Streams `inner`, calling `on_end` exactly once when it ends, fails
    /// or is dropped unfinished (like `body::OnEnd`); the future `on_end`
    /// returns holds back the last frame and the end.
    pub(crate) struct Held<B, F>
    where
        B: http_body::Body,
        F: FnOnce(End) -> Durable,
    {
        #[pin]
        inner: B,
        on_end: Option<F>,
        // The newest frame, sent once the next one (or durability) comes.
        held: Option<Frame<Bytes>>,
        // The record's durability being awaited. In a mutex only so the
        // body is `Sync`; it is reached through `&mut`, never locked.
        waiting: Option<Mutex<Durable>>,
        // The rack's stream failed: sent after the held frame.
        failed: Option<BoxError>,
        // The rack's body is over (ended or failed).
        ended: bool,
    }

    impl<B, F> PinnedDrop for Held<B, F>
    where
        B: http_body::Body,
        F: FnOnce(End) -> Durable,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                // An empty body may be dropped without ever being polled.
                drop(f(if this.inner.is_end_stream() { End::Complete } else { End::Abandoned }));
            }
        }
    }
}

impl<B, F> Held<B, F>
where
    B: http_body::Body,
    F: FnOnce(End) -> Durable,
{
    pub(crate) fn new(inner: B, on_end: F) -> Self {
        Held {
            inner,
            on_end: Some(on_end),
            held: None,
            waiting: None,
            failed: None,
            ended: false,
        }
    }
}

impl<B, F> http_body::Body for Held<B, F>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(End) -> Durable,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if let Some(w) = this.waiting.as_mut() {
                let durable = w.get_mut().unwrap_or_else(PoisonError::into_inner);
                let r = ready!(durable.as_mut().poll(cx));
                *this.waiting = None;
                if r.is_err() {
                    *this.held = None;
                    return Poll::Ready(Some(Err(Box::new(AuditUnavailable))));
                }
            }
            if *this.ended {
                if let Some(frame) = this.held.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                return Poll::Ready(this.failed.take().map(Err));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let previous = this.held.replace(frame);
                    if this.inner.is_end_stream() {
                        *this.ended = true;
                        *this.waiting = this.on_end.take().map(|f| Mutex::new(f(End::Complete)));
                    }
                    if let Some(previous) = previous {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                None => {
                    *this.ended = true;
                    *this.waiting = this.on_end.take().map(|f| Mutex::new(f(End::Complete)));
                }
                Some(Err(e)) => {
                    // A failed stream is no complete answer: nothing to hold.
                    *this.ended = true;
                    *this.failed = Some(e.into());
                    drop(this.on_end.take().map(|f| f(End::Failed)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.waiting.is_none() && self.held.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let extra = self
            .held
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + extra);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tokio::sync::{mpsc, Notify};

    /// A body fed frame by frame through a channel.
    struct Fed(mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
        }
    }

    type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

    fn poll_now<B>(b: &mut B) -> Polled
    where
        B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        Pin::new(b).poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
    }

    fn data(p: Polled) -> Option<Bytes> {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_data().ok(),
            _ => None,
        }
    }

    /// Frame N goes out when N+1 arrives; the last one and the end only
    /// once the record is durable; the body never waits for the whole.
    #[tokio::test]
    async fn holds_only_the_last_frame_until_durable() {
        let (tx, rx) = mpsc::channel(4);
        let ended = Arc::new(Notify::new());
        let (e2, durable) = (ended.clone(), Arc::new(Notify::new()));
        let d2 = durable.clone();
        let mut body = Box::pin(Held::new(Fed(rx), move |end| {
            assert_eq!(end, End::Complete);
            e2.notify_one();
            Box::pin(async move {
                d2.notified().await;
                Ok(())
            }) as Durable
        }));
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        assert!(poll_now(&mut body).is_pending(), "the first frame is held");
        tx.send(Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(data(poll_now(&mut body)).as_deref(), Some(&b"one"[..]));
        drop(tx);
        assert!(poll_now(&mut body).is_pending(), "the last frame waits");
        ended.notified().await;
        assert!(!http_body::Body::is_end_stream(&body));
        durable.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"two");
    }

    /// Fail-closed with the record not durable: the stream is cut, never
    /// ended cleanly (control: the test above ends cleanly).
    #[tokio::test]
    async fn cuts_the_stream_when_the_record_cannot_be_written() {
        let (tx, rx) = mpsc::channel(4);
        let mut body = Box::pin(Held::new(Fed(rx), |_| {
            Box::pin(async { Err(Unrecorded) }) as Durable
        }));
        tx.send(Bytes::from_static(b"only")).await.unwrap();
        drop(tx);
        let r = body.as_mut().frame().await.unwrap();
        assert!(r.unwrap_err().is::<AuditUnavailable>());
    }
}
