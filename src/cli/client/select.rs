//! Which rack a command is about, and whether there is a usable login for
//! it.
//!
//! The order mirrors the convox CLI's own (`--rack`, `CONVOX_RACK`,
//! `.convox/rack`, the current rack) so a project directory can pin its
//! rack: `--rack`, then `RACK_GATEWAY_RACK`, then `.rack-gateway/rack` in
//! the current directory or a parent, then the current rack.

use std::fmt;
use std::path::{Path, PathBuf};

use super::gateway::GatewayUrl;
use super::store::{RackLogin, Store, StoreError};
use super::{describe_expiry, ClientError};
use crate::clock::unix_now;

/// Environment variable naming the rack.
pub(crate) const RACK_ENV: &str = "RACK_GATEWAY_RACK";
/// The per-project file naming the rack, relative to a directory.
pub(crate) const PROJECT_FILE: &str = ".rack-gateway/rack";
/// Fewer seconds than this left on a token earn a reminder.
const REMIND_WITHIN: i64 = 3 * 24 * 3600;

/// Where the rack name came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File(PathBuf),
    Current,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("--rack"),
            Origin::Env => f.write_str(RACK_ENV),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Current => f.write_str("the current rack"),
        }
    }
}

fn checked(name: &str, origin: Origin) -> Result<(String, Origin), ClientError> {
    let name = name.trim();
    if crate::config::valid_rack_name(name) {
        Ok((name.to_string(), origin))
    } else {
        Err(ClientError::BadRackName {
            name: name.to_string(),
            origin: origin.to_string(),
        })
    }
}

/// The nearest `.rack-gateway/rack` from `dir` upwards.
fn project_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(PROJECT_FILE))
        .find(|p| p.is_file())
}

/// The rack a command is about, before anything is checked about logins.
pub fn rack(flag: Option<&str>, store: &Store) -> Result<(String, Origin), ClientError> {
    if let Some(name) = flag {
        return checked(name, Origin::Flag);
    }
    if let Some(name) = std::env::var(RACK_ENV).ok().filter(|v| !v.is_empty()) {
        return checked(&name, Origin::Env);
    }
    if let Some(path) = std::env::current_dir().ok().and_then(|d| project_file(&d)) {
        let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Read {
            path: path.clone(),
            source,
        })?;
        return checked(&text, Origin::File(path));
    }
    match &store.logins.current {
        Some(name) => checked(name, Origin::Current),
        None => Err(ClientError::NoRack),
    }
}

/// A rack with a token that hasn't expired.
pub struct Session {
    pub rack: String,
    pub gateway: GatewayUrl,
    pub token: String,
    pub login: RackLogin,
}

impl Session {
    /// How to get a new token for this rack.
    pub(crate) fn relogin(&self) -> String {
        format!("rack-gateway login {} {}", self.rack, self.gateway.base())
    }

    /// Prints a reminder on stderr when the token expires within 3 days.
    pub(crate) fn remind(&self) {
        if let Some(exp) = self.login.expires_at {
            if exp - unix_now() < REMIND_WITHIN {
                eprintln!(
                    "rack-gateway: your login to rack `{}` expires {}; renew it with `{}`",
                    self.rack,
                    describe_expiry(exp),
                    self.relogin()
                );
            }
        }
    }
}

/// The login for `rack`, refusing missing, logged-out and expired ones with
/// the command that fixes them.
pub fn session(store: &Store, rack: &str) -> Result<Session, ClientError> {
    let login = store.logins.racks.get(rack);
    let gateway_hint = login
        .map(|l| l.gateway.clone())
        .unwrap_or_else(|| "<gateway-url>".into());
    let (Some(login), Some(token)) = (login, login.and_then(|l| l.token.clone())) else {
        return Err(ClientError::NotLoggedIn {
            rack: rack.to_string(),
            gateway: gateway_hint,
        });
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: store.path.clone(),
        reason: format!("rack `{rack}`: {reason}"),
    };
    let gateway = GatewayUrl::parse(&login.gateway).map_err(|e| corrupt(e.to_string()))?;
    if !super::login::token_is_url_safe(&token) {
        return Err(corrupt("the token is malformed".into()).into());
    }
    if let Some(exp) = login.expires_at {
        if exp <= unix_now() {
            return Err(ClientError::Expired {
                rack: rack.to_string(),
                gateway: gateway.base(),
                when: describe_expiry(exp),
            });
        }
    }
    Ok(Session {
        rack: rack.to_string(),
        gateway,
        token,
        login: login.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_files_are_found_in_parents() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(project_file(&deep), None);
        std::fs::create_dir_all(dir.path().join("a/.rack-gateway")).unwrap();
        std::fs::write(dir.path().join("a/.rack-gateway/rack"), "staging\n").unwrap();
        assert_eq!(
            project_file(&deep),
            Some(dir.path().join("a/.rack-gateway/rack"))
        );
    }

    #[test]
    fn rack_names_are_checked_with_their_origin() {
        assert_eq!(checked(" staging\n", Origin::Flag).unwrap().0, "staging");
        let err = checked("../etc", Origin::File("/p/.rack-gateway/rack".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/p/.rack-gateway/rack"), "{err}");
        assert!(err.contains("`../etc`"), "{err}");
    }
}
