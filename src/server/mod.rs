//! The front door: the listener ([`listener`]) and the dispatcher that
//! sends each canonical request either to the gateway's own endpoints
//! ([`endpoints`]) or to rack traffic ([`crate::proxy`]), siblings that never
//! import each other.

pub mod dispatch;
pub mod endpoints;
pub mod listener;
