//! The one-rack fixture: a mock rack `staging` behind an in-process
//! gateway, for the tests that need only one rack and their own identities
//! and roles (masking, secrets, processes, policy), with the requests
//! those tests send: as a role's identity, and `convox run` / `exec`.

use rack_gateway::dev::mock_rack::MockRack;
use rack_gateway::server::listener::Running;

use rack_gateway::rack::ws;

use super::{basic, get, init, mock, send, targets, ConfigDir, Resp};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// The app the process helpers work on.
const APP: &str = "/racks/staging/apps/myapp";

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

    /// `POST /_gateway/can` as `role`'s identity for `operation` on
    /// `staging/myapp`: whether it is allowed, and the reason.
    pub async fn can(&self, role: &str, operation: &str) -> (bool, String) {
        let body = format!(r#"{{"operation": "{operation}", "rack": "staging", "app": "myapp"}}"#);
        let r = send(
            "POST",
            &self.url("/_gateway/can"),
            Some(&role_token(role)),
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (
            j["allowed"].as_bool().unwrap(),
            j["reason"].as_str().unwrap().to_string(),
        )
    }

    /// `convox run` step 1: a process of `myapp`'s `service` (with
    /// `Command: sleep 3600` when attached).
    pub async fn create_process(
        &self,
        token: &str,
        service: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let url = self.url(&format!("{APP}/services/{service}/processes?"));
        send("POST", &url, Some(token), headers, "").await
    }

    /// `convox run` step 2: `command` in process `pid` of `myapp`, over
    /// an upgraded websocket, with the headers the CLI sends there.
    pub async fn exec(&self, token: &str, pid: &str, command: &str) -> ws::ClientConn {
        self.exec_with(
            token,
            pid,
            command,
            &[("Entrypoint", "true"), ("Tty", "false")],
        )
        .await
    }

    /// [`Staging::exec`] with `headers` in place of the run's options.
    pub async fn exec_with(
        &self,
        token: &str,
        pid: &str,
        command: &str,
        headers: &[(&str, &str)],
    ) -> ws::ClientConn {
        let auth = basic(token);
        let mut all = vec![("Authorization", auth.as_str()), ("Command", command)];
        all.extend_from_slice(headers);
        let c = ws::client_connect(
            self.running.addr,
            &format!("{APP}/processes/{pid}/exec"),
            &all,
        )
        .await
        .unwrap();
        assert_eq!(c.status, 101);
        c
    }
}
