//! rack-gateway: an access gateway for Convox racks.
//!
//! The stock `convox` CLI talks to the gateway as if it were the rack. A
//! request travels one straight line, each step in its own module:
//!
//! ```text
//! server (listener → dispatch) → http::canon → rack::routes → gateway::identify
//!   → ratelimit → policy (pure) → proxy (forward) → audit
//! ```
//!
//! Module map (each module's own doc says what it owns):
//! - [`server`]: the listener, the dispatcher and the `/_gateway/*` endpoints.
//! - [`gateway`]: the live runtime (swapped whole on reload), process state,
//!   sessions, and the one identification step.
//! - [`proxy`]: rack traffic: look-ups, form checks, REST and upgrade forwarding.
//! - [`rack`]: outbound to Convox: the route table, upstream clients, the
//!   websocket codec and tunnel, and the rack's request/response semantics.
//! - [`http`]: inbound primitives with no gateway state (canonicalization,
//!   framing sniffing, client address, bodies, refusals as responses, TLS).
//! - [`identity`]: credentials, gateway tokens, sealing, login and OIDC.
//! - [`policy`]: the pure decision engine and its loader.
//! - [`reload`]: hot reload from a directory or a Git repository.
//! - [`audit`]: records, the hash-chained file, its verifier, redaction.
//! - [`ratelimit`], [`metrics`], [`config`], [`clock`], [`hex`]: as named.
//! - [`cli`]: the command line (operators and people).
//! - [`dev`]: the mock rack and the demo (not used by `serve`).
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod hex;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rack;
pub mod ratelimit;
pub mod reload;
pub mod server;
