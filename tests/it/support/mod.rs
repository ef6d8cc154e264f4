//! Test fixtures, one copy each: mock racks and a real gateway on
//! ephemeral loopback ports ([`Gw`]), config directories
//! ([`ConfigDir`]), the real binary as a process
//! ([`Proc`]), the OpenID provider mock ([`OidcMock`]) and a gateway to
//! log in to ([`LoginGateway`]), the one-rack
//! fixture ([`Staging`]), token keys, git remotes, and small HTTP,
//! websocket and waiting helpers.

#![allow(dead_code)]

mod binary;
mod ci_issuer;
mod config;
mod keys;
mod oidc;
mod remote;
mod requests;
mod staging;
mod wait;
mod ws;

use std::net::SocketAddr;
use std::path::Path;

use rack_gateway::dev::mock_rack::{MockOptions, MockRack};
use rack_gateway::server::listener::Running;

pub use self::binary::{audit_verify, bin, cli, run, spawn_serve, PastedLogin, Proc};
pub use self::ci_issuer::{CiIssuer, CiKey};
pub use self::config::{
    ci_yaml, copy_roles, git_mode_settings, load, start_gateway, with_lifted_limits, write_config,
    ConfigDir,
};
pub use self::keys::*;
pub use self::oidc::{identity_yaml, LoginGateway, OidcMock};
pub use self::remote::{git, run_ok, scribble, Daemon};
pub use self::requests::{
    answers, basic, free_port, get, location, query_param, raw, send, targets, urlencode, Resp,
};
pub use self::staging::{role_token, staging_only, Staging};
pub use self::wait::{eventually, eventually_by, DEADLINE};
pub use self::ws::{in_band_text, read_until_eof, recv, FRAME_TIMEOUT};

pub const RACK_PASSWORD: &str = "rack-password-s3cr3t-9f8e7d";
pub const CI_STAGING: &str = "ci-staging-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
pub const CI_ALL: &str = "ci-all-token-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

pub fn init() {
    rack_gateway::http::tls::install_crypto_provider();
}

pub fn sha(token: &str) -> String {
    rack_gateway::hex::encode(&rack_gateway::identity::credentials::token_sha256(token))
}

pub async fn mock() -> MockRack {
    MockRack::start(MockOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: RACK_PASSWORD.to_string(),
        tls: None,
        max_recorded: 100_000,
    })
    .await
    .expect("mock rack starts")
}

/// The standard setup: racks `staging` and `production` (each its own mock
/// rack), tokens `ci-staging` (staging only) and `ci-all` (every rack).
pub struct Gw {
    pub staging: MockRack,
    pub production: MockRack,
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Gw {
    pub async fn start() -> Gw {
        Self::start_with("").await
    }

    /// `extra` is appended to the generated gateway.yaml.
    pub async fn start_with(extra: &str) -> Gw {
        init();
        let staging = mock().await;
        let production = mock().await;
        let (running, dir) = standard_racks(&staging.url(), &production.url())
            .no_rack_discovery()
            .extra(extra)
            .start()
            .await;
        Gw {
            staging,
            production,
            running,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// Every request either mock rack received.
    pub fn forwarded_count(&self) -> usize {
        self.staging.requests().len() + self.production.requests().len()
    }
}

/// Racks `staging` and `production` at these URLs; `ci-staging` may use
/// staging only, `ci-all` both.
pub fn standard_racks(staging: &str, production: &str) -> ConfigDir {
    ConfigDir::new()
        .rack("staging", staging)
        .rack("production", production)
        .ci(&[
            ("ci-staging", CI_STAGING, "admin", "staging/*"),
            ("ci-all", CI_ALL, "admin", "*"),
        ])
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
