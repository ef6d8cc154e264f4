//! Inbound HTTP primitives that hold no gateway state: what a request head
//! means ([`canon`], [`sniff`]), who sent it ([`clientip`]), the body type
//! ([`body`]), refusals turned into bytes ([`respond`]) and the listener's
//! TLS ([`tls`]).

pub mod body;
pub mod canon;
pub mod clientip;
pub mod respond;
pub mod sniff;
pub mod tls;

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

/// A request as the dispatcher hands it on: canonical, with its request id
/// and arrival time.
pub(crate) struct Inbound {
    pub request_id: String,
    pub started: Instant,
    pub peer: SocketAddr,
    pub parts: ::http::request::Parts,
    pub canon: canon::Canonical,
    pub body: Incoming,
    pub on_upgrade: Option<OnUpgrade>,
}
