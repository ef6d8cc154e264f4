//! The one-rack fixture: a mock rack `staging` behind an in-process
//! gateway, for the tests that need only one rack and their own identities
//! and roles (masking, secrets, processes, policy).

use rack_gateway::dev::mock_rack::MockRack;
use rack_gateway::server::listener::Running;

use super::{get, init, mock, send, targets, ConfigDir, Resp};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// One mock rack `staging`, no racks from the environment.
pub fn staging_only(rack: &MockRack) -> ConfigDir {
    ConfigDir::new()
        .no_rack_discovery()
        .rack("staging", &rack.url())
}

/// The static token of the identity [`Staging::per_role`] names after `role`.
pub fn role_token(role: &str) -> String {
    format!("tok-{role}-0123456789abcdefghijklmnop")
}

pub struct Staging {
    pub rack: MockRack,
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Staging {
    /// A gateway whose ci.yaml has the identities `(name, token, role,
    /// scope)`; `roles` are added to the shipped ones and `extra` is
    /// appended to gateway.yaml.
    pub async fn start(
        ci: &[(&str, &str, &str, &str)],
        roles: &[(&str, &str)],
        extra: &str,
    ) -> Staging {
        init();
        let rack = mock().await;
        let mut cfg = staging_only(&rack).extra(extra).ci(ci);
        for (name, text) in roles {
            cfg = cfg.role(name, text);
        }
        let (running, dir) = cfg.start().await;
        Staging { rack, running, dir }
    }

    /// [`Staging::start`] with one identity per role in `names`, named
    /// after it, with [`role_token`] and scope `staging/*`.
    pub async fn per_role(names: &[&str], roles: &[(&str, &str)], extra: &str) -> Staging {
        let tokens: Vec<String> = names.iter().map(|r| role_token(r)).collect();
        let ci: Vec<(&str, &str, &str, &str)> = names
            .iter()
            .zip(&tokens)
            .map(|(r, t)| (*r, t.as_str(), *r, "staging/*"))
            .collect();
        Self::start(&ci, roles, extra).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// `METHOD target` of everything the rack received.
    pub fn received(&self) -> Vec<String> {
        targets(&self.rack.requests())
    }

    /// `GET path` as the [`Staging::per_role`] identity of `role`.
    pub async fn get(&self, role: &str, path: &str) -> Resp {
        get(&self.url(path), Some(&role_token(role))).await
    }

    /// A form `POST path` as the [`Staging::per_role`] identity of `role`.
    pub async fn post_form(&self, role: &str, path: &str, form: &[(&str, &str)]) -> Resp {
        let pairs: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let body = rack_gateway::rack::form::encode_form(&pairs);
        send(
            "POST",
            &self.url(path),
            Some(&role_token(role)),
            &[FORM],
            body,
        )
        .await
    }
}
