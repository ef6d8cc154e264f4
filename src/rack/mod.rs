//! Outbound to Convox: the route table ([`routes`]), one pooled client per
//! rack ([`upstream`]), the websocket codec ([`ws`]) and tunnel ([`tunnel`]),
//! how the rack reads forms ([`form`]), which requests it would read
//! differently than the gateway ([`inputs`]) and which responses carry
//! secrets ([`mask`]).

pub mod form;
pub mod inputs;
pub mod mask;
pub mod routes;
pub mod tunnel;
pub mod upstream;
pub mod ws;
