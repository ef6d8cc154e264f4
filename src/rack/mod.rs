//! Outbound to Convox: the route table ([`routes`]), one pooled client per
//! rack ([`upstream`]), the websocket codec ([`ws`]) and tunnel ([`tunnel`]),
//! and the rack's response semantics for secrets ([`secrets`]).

pub mod routes;
pub mod secrets;
pub mod tunnel;
pub mod upstream;
pub mod ws;
