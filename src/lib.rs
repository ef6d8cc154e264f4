//! rack-gateway: an access gateway for Convox racks.
//!
//! The stock `convox` CLI talks to the gateway as if it were the rack; the
//! gateway canonicalizes each request ([`canon`]), maps it to a named
//! operation ([`routes`]), authenticates the caller ([`auth`]), decides,
//! forwards it with the rack's own credential ([`proxy`], [`upstream`],
//! [`tunnel`]) and audits it ([`audit`]).
#![forbid(unsafe_code)]

pub mod audit;
pub mod auditlog;
pub mod auth;
pub mod body;
pub mod canon;
pub mod cli;
pub mod client;
pub mod clientip;
pub mod config;
pub mod demo;
pub mod gateway_api;
pub mod gitops;
pub mod gitsource;
pub mod login;
pub mod logsink;
pub mod metrics;
pub mod mock_rack;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod seal;
pub mod secrets;
pub mod server;
pub mod sniff;
pub mod tls;
pub mod token;
pub mod tunnel;
pub mod upstream;
pub mod utc;
pub mod ws;
