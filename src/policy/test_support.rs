//! Policies for the engine's unit tests, loaded from a config repository
//! held in memory through the real config loader, so the tests see what a
//! deployment would.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Policy;
use crate::config::{load, ConfigErrors, Env, MemSource};

/// Two racks, so grants can name `staging` and `production`.
pub(crate) const GATEWAY: &str = "racks:\n  staging:\n    url: https://staging.example.com\n    password_env: PW\n  production:\n    url: https://production.example.com\n    password_env: PW\n";

/// Loads [`GATEWAY`] as gateway.yaml plus `files`; a later file of the
/// same name (gateway.yaml too) replaces an earlier one.
pub(crate) fn try_load(files: &[(&str, &str)]) -> Result<Policy, ConfigErrors> {
    let mut map = BTreeMap::new();
    map.insert("gateway.yaml".to_string(), GATEWAY.to_string());
    for (k, v) in files {
        map.insert(k.to_string(), v.to_string());
    }
    let src = MemSource {
        files: map,
        label: "t:".into(),
        base: PathBuf::from("."),
    };
    load(&src, &Env::from_pairs([("PW", "x")])).map(|c| c.policy)
}

/// [`try_load`] that must succeed.
pub(crate) fn policy(files: &[(&str, &str)]) -> Policy {
    try_load(files).unwrap_or_else(|e| panic!("policy does not load:\n{e}"))
}
