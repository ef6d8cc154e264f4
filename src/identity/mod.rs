//! Who is calling: credentials on requests ([`credentials`]), the gateway's
//! own signed tokens ([`token`]), sealed login state ([`seal`]), the browser
//! login ([`login`]) and the identity providers ([`oidc`]).

pub mod credentials;
pub mod login;
pub mod oidc;
pub mod seal;
pub mod token;
