//! Connections to racks: one pooled hyper client per rack, with that rack's
//! TLS trust (system roots, a CA bundle, a pinned certificate, or an explicit
//! opt-out), and the headers every forwarded request carries.
//!
//! ALPN is pinned to `http/1.1`: the rack speaks HTTP/1.1 and websocket
//! upgrades only work there. Redirects are never followed (hyper doesn't).

use std::sync::Arc;

use base64::Engine;
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use thiserror::Error;

use crate::config::{RackConfig, Timeouts, UpstreamTls};
use crate::http::body::Body;

pub(crate) type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("cannot read CA bundle {path}: {source}")]
    CaFile {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA bundle {0} holds no usable certificate")]
    EmptyCa(String),
    #[error("rack url {0} has no usable host")]
    BadUrl(String),
}

/// A rack as the proxy uses it: where to send requests and with which
/// credential. Cloned cheaply per request.
pub struct Rack {
    pub name: String,
    /// `https://host:port` plus an optional base path (without trailing `/`).
    scheme_authority: String,
    base_path: String,
    /// `Host` header for upstream requests.
    pub host: HeaderValue,
    /// `Origin` for websocket upgrades: the rack's upgrader requires the
    /// Origin host to equal Host.
    pub origin: HeaderValue,
    /// `Basic base64(convox:<rack password>)`, marked sensitive.
    pub authorization: HeaderValue,
    /// The rack password itself, so responses can be scrubbed of it.
    password: String,
    /// One pooled client per worker thread, so a request and the upstream
    /// connection serving it run on the same thread.
    clients: Vec<HttpsClient>,
}

thread_local! {
    /// The worker thread's index into [`Rack`]'s clients (0 elsewhere).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `i` (see [`Rack::client`]).
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// How many worker threads serve requests.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl std::fmt::Debug for Rack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rack")
            .field("name", &self.name)
            .field("url", &self.scheme_authority)
            .finish_non_exhaustive()
    }
}

impl Rack {
    pub fn new(cfg: &RackConfig, timeouts: &Timeouts) -> Result<Rack, UpstreamError> {
        let bad = || UpstreamError::BadUrl(cfg.url.to_string());
        let scheme = cfg.url.scheme_str().ok_or_else(bad)?;
        let authority = cfg.url.authority().ok_or_else(bad)?;
        let base_path = cfg.url.path().trim_end_matches('/').to_string();
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?;
        let origin = HeaderValue::from_str(&format!("{scheme}://{}", authority.as_str()))
            .map_err(|_| bad())?;
        let cred = base64::engine::general_purpose::STANDARD
            .encode(format!("convox:{}", cfg.password.expose()));
        let mut authorization =
            HeaderValue::from_str(&format!("Basic {cred}")).map_err(|_| bad())?;
        authorization.set_sensitive(true);
        Ok(Rack {
            name: cfg.name.clone(),
            scheme_authority: format!("{scheme}://{}", authority.as_str()),
            base_path,
            host,
            origin,
            authorization,
            password: cfg.password.expose().to_string(),
            clients: (0..workers())
                .map(|_| client(&cfg.tls, timeouts))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The rack password (never logged: [`Rack`]'s Debug leaves it out).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// This worker thread's pooled client.
    pub fn client(&self) -> &HttpsClient {
        let i = WORKER.with(|w| w.get());
        &self.clients[i % self.clients.len()]
    }

    /// The upstream URI for a canonical path-and-query.
    pub fn uri(&self, target: &str) -> Result<Uri, http::uri::InvalidUri> {
        format!("{}{}{}", self.scheme_authority, self.base_path, target).parse()
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Builds the rustls client config for a trust mode.
pub(crate) fn client_tls(tls: &UpstreamTls) -> Result<rustls::ClientConfig, UpstreamError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut config = match tls {
        UpstreamTls::Verify { ca_file } => {
            let mut roots = rustls::RootCertStore::empty();
            match ca_file {
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|source| UpstreamError::CaFile {
                            path: path.display().to_string(),
                            source,
                        })?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(UpstreamError::EmptyCa(path.display().to_string()));
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        UpstreamTls::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny {
                pin: Some(*pin),
                provider,
            }))
            .with_no_client_auth(),
        UpstreamTls::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny {
                pin: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client(tls: &UpstreamTls, timeouts: &Timeouts) -> Result<HttpsClient, UpstreamError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeouts.connect));
    // Built from parts rather than the builder, which refuses a preset ALPN
    // list and sends none at all when only HTTP/1.1 is enabled.
    let connector = hyper_rustls::HttpsConnector::from((http, client_tls(tls)?));
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector))
}

/// Accepts the certificate whose SHA-256 matches the pin (or any
/// certificate when no pin is set), while still checking that the server
/// owns the key: handshake signatures are verified normally.
#[derive(Debug)]
struct PinnedOrAny {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
                if got.as_ref() == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(
                        "rack certificate does not match pin_sha256".into(),
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
