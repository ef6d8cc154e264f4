//! The dispatcher: gives each request its id, canonicalizes it once, and
//! sends it either to the gateway's own endpoints (`/_gateway/…`) or to
//! rack traffic. The two are siblings: neither imports the other.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::endpoints;
use crate::gateway::Gateway;
use crate::http::body::Body;
use crate::http::canon::{self, Upgrade};
use crate::http::respond::Refusal;
use crate::http::Inbound;
use crate::proxy;
use crate::proxy::ctx::Ctx;

/// The first path segment of the gateway's own endpoints. No rack route
/// starts with an underscore, so it can never shadow one.
pub(crate) const GATEWAY_PREFIX: &str = "_gateway";

/// Handles one request end to end. Never fails: every outcome is a
/// response.
pub async fn handle(gw: &Gateway, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let request_id = new_request_id();
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let (parts, body) = req.into_parts();
    let canon = match canon::canonicalize(&parts) {
        Ok(c) => c,
        Err(r) => {
            let path = parts.uri.path().chars().take(256).collect();
            let ctx = Ctx::new(&request_id, started, &parts, peer, None, gw, path);
            return ctx.refuse(None, Refusal::bad_request(r)).await;
        }
    };
    let rt = gw.runtime();
    let inbound = Inbound {
        request_id,
        started,
        peer,
        parts,
        canon,
        body,
        on_upgrade,
    };
    if inbound.canon.segments.first().map(String::as_str) != Some(GATEWAY_PREFIX) {
        return proxy::handle(gw, rt, inbound).await;
    }
    if inbound.canon.upgrade != Upgrade::None {
        let ctx = Ctx::of(&inbound, gw, rt, inbound.canon.path_from(0));
        return ctx
            .refuse(
                None,
                Refusal::bad_request("gateway endpoints do not upgrade"),
            )
            .await;
    }
    endpoints::handle(gw, rt.as_deref(), inbound).await
}

/// 12 characters like the rack's own request ids: a random per-process
/// prefix and a counter, so ids are unique without a syscall per request.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("system randomness is available");
        u64::from_le_bytes(b)
    });
    // 4 characters of process prefix, 8 of counter (36^8 ≈ 2.8e12 ids).
    let mut n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut p = prefix;
    let mut out = [0u8; 12];
    for slot in out[..4].iter_mut() {
        *slot = ALPHABET[(p % 36) as usize];
        p /= 36;
    }
    for slot in out[4..].iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}
