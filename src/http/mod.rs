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
