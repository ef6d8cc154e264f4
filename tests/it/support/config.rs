//! Config directories for tests: a builder for the usual gateway.yaml
//! (ephemeral loopback listener, racks pointing at mock racks, extra YAML)
//! with its ci.yaml, users and roles, and the loaders that turn one into a
//! running in-process gateway.

use std::path::{Path, PathBuf};

use rack_gateway::config::{self, Env};
use rack_gateway::server::listener::Running;

use super::{sha, RACK_PASSWORD};

/// A config directory to write: `gateway.yaml` is
///
/// ```yaml
/// listen: 127.0.0.1:0                # or .listen(..)
/// discover_racks_from_env: false     # with .no_rack_discovery()
/// racks:                             # each .rack(name, url)
///   <name>:
///     url: <url>
///     password_env: RACK_PW
/// <extra>                            # .extra(..), appended as given
/// ```
///
/// plus the project's roles (and any `.role(..)`), a ci.yaml with the
/// `.ci(..)` identities and, with `.users(..)`, a users.yaml.
#[derive(Clone)]
pub struct ConfigDir {
    listen: String,
    no_discovery: bool,
    racks: Vec<(String, String)>,
    extra: String,
    ci: Vec<(String, String, String, String)>,
    users: Option<String>,
    roles: Vec<(String, String)>,
}

impl Default for ConfigDir {
    fn default() -> Self {
        ConfigDir::new()
    }
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            listen: "127.0.0.1:0".into(),
            no_discovery: false,
            racks: Vec::new(),
            extra: String::new(),
            ci: Vec::new(),
            users: None,
            roles: Vec::new(),
        }
    }

    /// A fixed listen address, for a gateway whose URL must be known
    /// before it starts (its own token issuer).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    pub fn no_rack_discovery(mut self) -> Self {
        self.no_discovery = true;
        self
    }

    /// A rack whose password comes from `RACK_PW`.
    pub fn rack(mut self, name: &str, url: &str) -> Self {
        self.racks.push((name.into(), url.into()));
        self
    }

    /// YAML appended to gateway.yaml after the racks.
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// Static-token CI identities `(name, token, role, scope)`.
    pub fn ci(mut self, ci: &[(&str, &str, &str, &str)]) -> Self {
        self.ci.extend(
            ci.iter()
                .map(|(n, t, r, s)| (n.to_string(), t.to_string(), r.to_string(), s.to_string())),
        );
        self
    }

    pub fn users(mut self, yaml: &str) -> Self {
        self.users = Some(yaml.into());
        self
    }

    /// `roles/<name>.yaml`, added to (or replacing) a shipped role.
    pub fn role(mut self, name: &str, yaml: &str) -> Self {
        self.roles.push((name.into(), yaml.into()));
        self
    }

    /// The gateway.yaml text (before rate limits are lifted).
    pub fn gateway_yaml(&self) -> String {
        let mut yaml = format!("listen: {}\n", self.listen);
        if self.no_discovery {
            yaml.push_str("discover_racks_from_env: false\n");
        }
        yaml.push_str("racks:\n");
        for (name, url) in &self.racks {
            yaml.push_str(&format!(
                "  {name}:\n    url: {url}\n    password_env: RACK_PW\n"
            ));
        }
        yaml.push_str(&self.extra);
        yaml
    }

    pub fn write(&self) -> tempfile::TempDir {
        let ci: Vec<(&str, &str, &str, &str)> = self
            .ci
            .iter()
            .map(|(n, t, r, s)| (n.as_str(), t.as_str(), r.as_str(), s.as_str()))
            .collect();
        let dir = write_repo(&self.gateway_yaml(), &ci);
        if let Some(users) = &self.users {
            std::fs::write(dir.path().join("users.yaml"), users).unwrap();
        }
        for (name, text) in &self.roles {
            std::fs::write(dir.path().join("roles").join(format!("{name}.yaml")), text).unwrap();
        }
        dir
    }

    /// Writes the directory and starts a gateway on it in this process.
    pub async fn start(&self) -> (Running, tempfile::TempDir) {
        let dir = self.write();
        (start_gateway(dir.path()).await, dir)
    }
}

/// Loads a config directory with exactly `env`.
pub fn load(dir: &Path, env: &[(&str, &str)]) -> config::Config {
    config::load_dir(dir, &Env::from_pairs(env.iter().copied()))
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// Starts a gateway in this process on a config directory whose racks take
/// their password from `RACK_PW`.
pub async fn start_gateway(dir: &Path) -> Running {
    let cfg = load(dir, &[("RACK_PW", RACK_PASSWORD)]);
    Running::start(&cfg).await.expect("gateway starts")
}

/// A config repository: `gateway_yaml`, the project's shipped roles, and a
/// ci.yaml with static-token identities `(name, token, role, scope)`.
fn write_repo(gateway_yaml: &str, ci: &[(&str, &str, &str, &str)]) -> tempfile::TempDir {
    let dir = write_config(gateway_yaml);
    copy_roles(dir.path());
    std::fs::write(dir.path().join("ci.yaml"), ci_yaml(ci)).unwrap();
    dir
}

/// A ci.yaml with static-token identities `(name, token, role, scope)`.
pub fn ci_yaml(ci: &[(&str, &str, &str, &str)]) -> String {
    let mut yaml = String::from("ci:\n");
    for (name, token, role, scope) in ci {
        yaml.push_str(&format!(
            "  {name}:\n    token_sha256: {}\n    expires: 2099-01-01\n    grants:\n      - role: {role}\n        scope: \"{scope}\"\n",
            sha(token)
        ));
    }
    yaml
}

/// Copies the project's `roles/` into a config directory.
pub fn copy_roles(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
    std::fs::create_dir_all(dir.join("roles")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("roles").join(e.file_name())).unwrap();
    }
}

/// A config directory with `yaml` as gateway.yaml. Rate limits are lifted
/// unless `yaml` sets its own: most tests send bursts (and failed logins)
/// from one address and one identity; tests/it/limits.rs tests the limits.
pub fn write_config(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), with_lifted_limits(yaml)).unwrap();
    dir
}

pub fn with_lifted_limits(yaml: &str) -> String {
    if yaml.contains("rate_limits:") {
        return yaml.to_string();
    }
    format!("{yaml}\n{LIFTED_LIMITS}")
}

const LIFTED_LIMITS: &str = "rate_limits: {default: 1000000/s, ci: 1000000/s, expensive: 1000000/s, auth_failures: 1000000/s}\n";

/// A git-mode settings file `dir/settings.yaml`: an ephemeral loopback
/// listener, branch `main` of `url`, the cache under `dir/cache`, a 1h
/// poll interval, and `extra` (indented repository keys).
pub fn git_mode_settings(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let file = dir.join("settings.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:0\n\
             repository:\n  url: {url}\n  branch: main\n  \
             cache_dir: {}\n  poll_interval: 1h\n{extra}",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    file
}
