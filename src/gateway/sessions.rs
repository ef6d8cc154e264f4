//! Open websocket sessions and the signal that closes them at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Open websocket sessions. At shutdown the server first lets REST
/// requests finish, then asks every session to close (each sends close
/// frames at its next frame boundary) and waits for them.
pub struct Sessions {
    close: tokio::sync::watch::Sender<bool>,
    live: Arc<AtomicU64>,
    ended: Arc<tokio::sync::Notify>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            close: tokio::sync::watch::channel(false).0,
            live: Default::default(),
            ended: Default::default(),
        }
    }
}

/// One open session; dropping it (however the session's task ends) marks
/// the session ended, here and in the metrics.
pub struct SessionGuard {
    close: tokio::sync::watch::Receiver<bool>,
    live: Arc<AtomicU64>,
    ended: Arc<tokio::sync::Notify>,
    metrics: Arc<crate::metrics::Metrics>,
    kind: &'static str,
}

impl Sessions {
    pub(crate) fn open(
        &self,
        metrics: Arc<crate::metrics::Metrics>,
        kind: &'static str,
    ) -> SessionGuard {
        self.live.fetch_add(1, Ordering::SeqCst);
        metrics.session_opened(kind);
        SessionGuard {
            close: self.close.subscribe(),
            live: self.live.clone(),
            ended: self.ended.clone(),
            metrics,
            kind,
        }
    }

    /// Sessions currently open (a metric).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    /// Asks every open (and future) session to close.
    pub fn close_all(&self) {
        self.close.send_replace(true);
    }

    /// Waits until no session is open, or `limit` passes.
    pub async fn wait_closed(&self, limit: Duration) {
        let all_ended = async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.live() == 0 {
                    return;
                }
                ended.await;
            }
        };
        let _ = tokio::time::timeout(limit, all_ended).await;
    }
}

impl SessionGuard {
    /// Resolves once the sessions are asked to close.
    pub(crate) fn closing(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.close.clone();
        async move {
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.metrics.session_closed(self.kind);
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.ended.notify_waiters();
    }
}
