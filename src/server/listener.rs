//! The listener: accepts connections, terminates TLS, serves HTTP/1.1 with
//! keep-alive and upgrades, and drains connections on shutdown.
//!
//! The address is bound once, without `SO_REUSEPORT`, and every worker
//! runtime accepts on a clone of that one socket: a second gateway started
//! on the same address fails at once instead of silently sharing the
//! traffic (and serving a different policy).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;

/// Listener settings that can't change without a restart.
#[derive(Clone)]
pub struct Listener {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves until `shutdown` turns true, then stops accepting, lets in-flight
/// requests finish within the grace period, and returns.
pub async fn serve(
    listener: TcpListener,
    settings: Listener,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = settings.tls.clone().map(TlsAcceptor::from);
    // Each connection task holds a sender; when all are dropped, every
    // connection has finished.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    // A timer due within a second, always. tokio wakes its own driver (an
    // eventfd write and one more epoll round) whenever a timer is set
    // earlier than the earliest one the driver sleeps toward, and hyper sets
    // a header-read timer at every keep-alive request; with this tick
    // pending, that timer is never the earliest. One syscall pair fewer per
    // request, for one idle wake-up per second per worker.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = tick.tick() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let done = done_tx.clone();
        let header_read = settings.header_read_timeout;
        tokio::spawn(async move {
            let _done = done;
            match acceptor {
                None => serve_conn(stream, peer, gateway, header_read, shutdown).await,
                Some(acc) => match tokio::time::timeout(header_read, acc.accept(stream)).await {
                    Ok(Ok(tls)) => serve_conn(tls, peer, gateway, header_read, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    drop(done_tx);
    if tokio::time::timeout(settings.shutdown_grace, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    // Websocket sessions (logs, exec) can last hours: once requests are
    // done, close them with close frames rather than cutting the sockets.
    gateway.sessions.close_all();
    gateway.sessions.wait_closed(SESSION_CLOSE_WAIT).await;
}

/// How long closing websocket sessions may take at shutdown: the splice's
/// own bounds (a frame in flight, the peer's close) plus a margin.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(10);

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    header_read: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (io, heads) = crate::http::sniff::Sniff::new(io);
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if heads.next_ambiguous() {
            req.extensions_mut()
                .insert(crate::http::sniff::AmbiguousFraming);
        }
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(super::dispatch::handle(&gateway, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .max_buf_size(crate::http::sniff::MAX_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Binds the one listening socket. `SO_REUSEADDR` only lets a restart
/// bind past connections in TIME_WAIT; without `SO_REUSEPORT` an address
/// another process listens on is refused (`EADDRINUSE`).
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let failed = |source: std::io::Error| StartError::bind(addr, source);
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    socket
        .listen(1024)
        .map_err(failed)?
        .into_std()
        .map_err(failed)
}

/// How the listener is set up; fixed for the life of the process (a
/// reload that changes these is logged as needing a restart).
#[derive(Debug, Clone)]
pub struct Serving {
    pub listen: SocketAddr,
    pub tls: Option<crate::config::ServerTls>,
    pub header_read: std::time::Duration,
    pub shutdown_grace: std::time::Duration,
    /// Where audit records go (the log, and the audit file if opened).
    pub audit: crate::audit::Auditor,
}

/// A gateway serving on a bound listener; what `serve`, `demo` and the
/// integration tests run.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr}: address in use (another process, perhaps another \
         rack-gateway, is listening there): stop it, or listen on another address"
    )]
    InUse { addr: SocketAddr },
}

impl StartError {
    fn bind(addr: SocketAddr, source: std::io::Error) -> StartError {
        match source.kind() {
            std::io::ErrorKind::AddrInUse => StartError::InUse { addr },
            _ => StartError::Bind { addr, source },
        }
    }
}

impl Running {
    /// Validates everything that can fail (racks, TLS files) before binding,
    /// then binds `cfg.listen` and serves in the background.
    pub async fn start(cfg: &crate::config::Config) -> Result<Running, StartError> {
        let runtime = crate::gateway::Runtime::from_config(cfg)?;
        let serving = Serving {
            listen: cfg.listen,
            tls: cfg.tls.clone(),
            header_read: cfg.timeouts.header_read,
            shutdown_grace: cfg.timeouts.shutdown_grace,
            audit: crate::audit::Auditor::default(),
        };
        Running::bind(&serving, Some(runtime)).await
    }

    /// Binds and serves with `runtime`; with `None` every rack request is
    /// refused with 503 until a reloader swaps a valid config in.
    pub async fn bind(
        serving: &Serving,
        runtime: Option<crate::gateway::Runtime>,
    ) -> Result<Running, StartError> {
        let tls = match &serving.tls {
            Some(t) => Some(
                crate::http::tls::server_config(t)
                    .map_err(|e| crate::config::ConfigErrors(vec![e]))?,
            ),
            None => None,
        };
        let listener = bind(serving.listen)?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::bind(serving.listen, source))?;
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "SERVING PLAIN HTTP ON A NON-LOOPBACK ADDRESS (allow_plaintext: true): \
                 tokens cross the network in clear unless a TLS proxy fronts this port"
            );
        }
        let (tx, rx) = watch::channel(false);
        let gateway = Gateway::new(runtime, serving.audit.clone());
        tokio::spawn(forget_idle_limiter_keys(gateway.clone(), rx.clone()));
        let settings = Listener {
            tls,
            header_read_timeout: serving.header_read,
            shutdown_grace: serving.shutdown_grace,
        };
        // One single-threaded runtime per core, each accepting on its own
        // handle of the one socket: a request and its upstream connection
        // stay on one thread, so no cross-thread wake-ups on the hot path.
        let workers = crate::rack::upstream::workers();
        let mut handles = Vec::with_capacity(workers);
        for _ in 1..workers {
            handles.push(
                listener
                    .try_clone()
                    .map_err(|source| StartError::bind(addr, source))?,
            );
        }
        handles.push(listener);
        let mut done = Vec::new();
        for (i, l) in handles.into_iter().enumerate() {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            done.push(done_rx);
            let settings = settings.clone();
            let gateway = gateway.clone();
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || {
                    crate::rack::upstream::set_worker(i);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("worker runtime starts");
                    rt.block_on(async move {
                        match TcpListener::from_std(l) {
                            Ok(l) => serve(l, settings, gateway, rx).await,
                            Err(e) => tracing::error!(error = %e, "worker listener failed"),
                        }
                    });
                    let _ = done_tx.send(());
                })
                .expect("worker thread starts");
        }
        let task = tokio::spawn(async move {
            for d in done {
                let _ = d.await;
            }
        });
        Ok(Running {
            addr,
            gateway,
            shutdown: tx,
            task,
        })
    }

    /// Stops accepting, drains in-flight requests, and waits for the end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// A sender that starts the shutdown when it sends `true`.
    pub(crate) fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Waits until the server task ends (after a shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Rate limiters keep one entry per identity and address they have seen;
/// dropping the idle ones every minute keeps memory bounded.
async fn forget_idle_limiter_keys(gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = every.tick() => gateway.limiters().retain_recent(),
            _ = stop.changed() => return,
        }
    }
}
