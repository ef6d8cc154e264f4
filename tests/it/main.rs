//! All integration tests in one binary (one link step on 2 cores). Each
//! test starts real servers on ephemeral loopback ports.
#![allow(clippy::unwrap_used)] // test fixtures: a failed set-up step should fail the test

mod support;

mod auditlog;
mod binary;
mod browser;
mod canon_table;
mod client;
mod demo;
mod faults;
mod flows;
mod gitsource;
mod identity;
mod inputs;
mod limits;
mod masking;
mod operations;
mod packaging;
mod policy;
mod processes;
mod readme;
mod reload;
mod review;
mod secrets;
mod sessions;
mod streaming;
mod tls_upstream;
mod websocket;
