//! Who is calling: credentials on requests ([`credentials`]), the gateway's
//! own signed tokens ([`token`]), sealed login state ([`seal`]), the browser
//! login ([`login`]) and the identity providers ([`oidc`]). Two small
//! modules hold what several of those share: JWT segment handling
//! (`jwt`) and random values, digests and constant-time comparison
//! (`secret`).

pub mod credentials;
mod jwt;
pub mod login;
pub mod oidc;
pub mod seal;
mod secret;
pub mod token;
