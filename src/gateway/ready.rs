//! Readiness of the racks behind the gateway: one shared, cached probe of
//! each rack (`GET /system` with the gateway's credentials), saying why a
//! rack is unreachable in words an operator acts on. Process state, so it
//! lives with the gateway; `/_gateway/readyz` reads it.

use http::{header, StatusCode};

use super::Runtime;
use crate::http::body;

/// Each rack's answer to the readiness probe: `Ok`, or why not.
pub(crate) type RackChecks = Vec<(String, Result<(), String>)>;

/// The last readiness probe, shared by concurrent callers: however often
/// load balancers (or anyone, unauthenticated) poll readyz, each rack gets
/// at most one probe per [`READY_CACHE`].
#[derive(Default)]
pub struct ReadyCache(tokio::sync::Mutex<Option<(std::time::Instant, String, RackChecks)>>);

/// How long a readiness probe's result is reused.
const READY_CACHE: std::time::Duration = std::time::Duration::from_secs(2);

impl ReadyCache {
    pub(crate) async fn probe(&self, rt: &Runtime) -> RackChecks {
        let mut last = self.0.lock().await;
        if let Some((at, version, results)) = last.as_ref() {
            if *version == rt.version && at.elapsed() < READY_CACHE {
                return results.clone();
            }
        }
        let results = probe_racks(rt).await;
        *last = Some((
            std::time::Instant::now(),
            rt.version.clone(),
            results.clone(),
        ));
        results
    }
}

/// `GET /system` on every rack with the gateway's credentials, concurrently.
async fn probe_racks(rt: &Runtime) -> RackChecks {
    let mut checks = tokio::task::JoinSet::new();
    for rack in rt.racks.values().cloned() {
        checks.spawn(async move {
            let mut req = http::Request::new(body::empty());
            *req.uri_mut() = match rack.uri("/system") {
                Ok(u) => u,
                Err(_) => return (rack.name.clone(), Err("invalid URL".to_string())),
            };
            let h = req.headers_mut();
            h.insert(header::HOST, rack.host.clone());
            h.insert(header::AUTHORIZATION, rack.authorization.clone());
            let answer = tokio::time::timeout(READY_TIMEOUT, rack.client().request(req)).await;
            let verdict = match answer {
                Ok(Ok(r)) if r.status().is_success() => Ok(()),
                Ok(Ok(r)) if r.status() == StatusCode::UNAUTHORIZED => Err(
                    "the rack refused the gateway's credentials (401): check its password"
                        .to_string(),
                ),
                Ok(Ok(r)) => Err(format!("the rack answered {}", r.status().as_u16())),
                Ok(Err(e)) => Err(unreachable_because(&e)),
                Err(_) => Err("timeout: no answer within 3s".to_string()),
            };
            (rack.name.clone(), verdict)
        });
    }
    checks.join_all().await
}

const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a rack could not be reached, in words an operator acts on:
/// connection refused, a TLS failure (with rustls' reason), a connect
/// timeout, or the innermost error.
fn unreachable_because(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut innermost = None;
    let mut src: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return format!("unreachable: TLS: {tls}");
        }
        innermost = Some(s.to_string());
        src = s.source();
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return "unreachable: connection refused".to_string()
                }
                std::io::ErrorKind::TimedOut => {
                    return "unreachable: connect timed out".to_string()
                }
                _ => {}
            }
            // An io::Error's source skips the error it wraps: look inside.
            if let Some(inner) = io.get_ref() {
                src = Some(inner);
            }
        }
    }
    let why = innermost.unwrap_or_else(|| e.to_string());
    format!("unreachable: {why}")
}
