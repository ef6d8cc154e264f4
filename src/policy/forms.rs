//! Decisions over form bodies, pure and over facts fetched beforehand:
//! the build side doors (`POST /apps/{app}/builds`) and the env round-trip
//! of `POST /apps/{app}/releases` (placeholders restored, protected keys
//! and per-role key patterns enforced against the parent release's env).

use std::collections::BTreeMap;

use super::{Policy, SecretAccess};
use crate::rack::mask::PLACEHOLDER;

/// What a build request asks for, from its form body and query string
/// (the rack reads form values from both).
#[derive(Debug, PartialEq, Eq)]
pub struct BuildForm {
    pub external: bool,
}

/// Checks `POST /apps/{app}/builds`: every `url` must be
/// `object://{app}/<key>` (no `dir://`, no other app, no other scheme).
pub fn check_build(app: &str, fields: &[(String, String)]) -> Result<BuildForm, String> {
    let prefix = format!("object://{app}/");
    for (k, v) in fields {
        if k == "url" {
            let shown: String = v.chars().take(80).collect();
            let Some(key) = v.strip_prefix(&prefix).filter(|k| !k.is_empty()) else {
                return Err(format!(
                    "the build source url must be {prefix}<key> (an object uploaded to this app); got \"{shown}\""
                ));
            };
            // `object://app/../billing/x` would reach another app's object.
            crate::rack::inputs::check_object_key(key).map_err(|e| e.to_string())?;
        }
        if k == "build-args" {
            // The rack pastes each value unquoted into the build command,
            // which is then split on whitespace: a space adds build flags.
            if let Some(arg) = v.split(',').find(|a| a.chars().any(char::is_whitespace)) {
                let shown: String = arg
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(40)
                    .collect();
                return Err(format!(
                    "build-args value of `{shown}` contains whitespace, which the rack would split into extra build flags"
                ));
            }
        }
    }
    // The rack honours exactly `true`, but a deny rule must not be evaded
    // by a spelling: anything but absent or `false` counts as external.
    Ok(BuildForm {
        external: fields.iter().any(|(k, v)| k == "external" && v != "false"),
    })
}

/// Who may change what in an app's env.
pub struct EnvRules<'a> {
    /// Whether a key is protected in this app.
    pub protected: &'a dyn Fn(&str) -> bool,
    /// The identity may change and remove protected keys.
    pub may_change_protected: bool,
    /// Key patterns the identity may change; `None` is any key.
    pub allowed_key: Option<&'a dyn Fn(&str) -> bool>,
}

/// The key names (never values) a release creation changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Protected keys left out of the post and kept.
    pub kept: Vec<String>,
}

impl EnvChanges {
    /// `add:A,B change:C remove:D kept:E` (empty parts left out).
    pub fn summary(&self) -> String {
        [
            ("add", &self.added),
            ("change", &self.changed),
            ("remove", &self.removed),
            ("kept", &self.kept),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| format!("{n}:{}", v.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// Why a posted env is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("env line {0} is not KEY=VALUE")]
    Malformed(usize),
    #[error("{0}={PLACEHOLDER} keeps a value, but the parent release has no {0}")]
    PlaceholderWithoutValue(String),
    #[error(
        "env key {0} is protected in this app; changing it needs the `env protected` permission"
    )]
    Protected(String),
    #[error("env key {key} may not be changed by this identity (it may change only {allowed})")]
    KeyNotAllowed { key: String, allowed: String },
}

/// Parses `KEY=VALUE` lines (blank lines ignored), later keys winning.
pub fn parse_env(env: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for (i, line) in env.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => return Err(EnvError::Malformed(i + 1)),
        }
    }
    Ok(out)
}

/// The env to forward for a posted env and the parent release's env:
/// placeholders restored, protected and per-key rules applied. `allowed`
/// describes the key patterns for the error message.
pub fn merge_env(
    posted: &str,
    parent: &str,
    rules: &EnvRules<'_>,
    allowed: &str,
) -> Result<(String, EnvChanges), EnvError> {
    let posted = parse_env(posted)?;
    let parent = parse_env(parent)?;
    let mut out = BTreeMap::new();
    let mut changes = EnvChanges::default();
    let may_touch = |key: &str| -> Result<(), EnvError> {
        if (rules.protected)(key) && !rules.may_change_protected {
            return Err(EnvError::Protected(key.to_string()));
        }
        if let Some(ok) = rules.allowed_key {
            if !ok(key) {
                return Err(EnvError::KeyNotAllowed {
                    key: key.to_string(),
                    allowed: allowed.to_string(),
                });
            }
        }
        Ok(())
    };
    for (k, v) in posted {
        let old = parent.get(&k);
        let value = if v == PLACEHOLDER {
            match old {
                Some(o) => o.clone(),
                None => return Err(EnvError::PlaceholderWithoutValue(k)),
            }
        } else {
            v
        };
        match old {
            Some(o) if *o == value => {}
            Some(_) => {
                may_touch(&k)?;
                changes.changed.push(k.clone());
            }
            None => {
                may_touch(&k)?;
                changes.added.push(k.clone());
            }
        }
        out.insert(k, value);
    }
    for (k, v) in parent {
        if out.contains_key(&k) {
            continue;
        }
        if (rules.protected)(&k) && !rules.may_change_protected {
            changes.kept.push(k.clone());
            out.insert(k, v);
            continue;
        }
        may_touch(&k)?;
        changes.removed.push(k);
    }
    let env = out
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok((env, changes))
}

// ---------------------------------------------------------------------------
// The decisions the proxy asks, over the parsed form and fetched facts

/// Why a form is refused: by policy (403) or as malformed (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormRefusal {
    Denied(String),
    Invalid(String),
}

/// `POST /apps/{app}/builds`: the source must be this app's object, and an
/// external build needs `builds external`. The rack reads form values from
/// the body and the query, so both are checked.
pub fn check_build_form(
    app: &str,
    body: &[(String, String)],
    query: &[(String, String)],
    access: &SecretAccess,
) -> Result<(), FormRefusal> {
    let all: Vec<(String, String)> = body.iter().chain(query).cloned().collect();
    let build = check_build(app, &all).map_err(FormRefusal::Denied)?;
    if build.external && !access.builds_external {
        return Err(FormRefusal::Denied(
            "external builds (external=true) need the `builds external` permission".into(),
        ));
    }
    Ok(())
}

/// What a release creation posts that its decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInputs {
    /// The posted env, if any.
    pub env: Option<String>,
    /// The posted `parent-release`, if non-empty.
    pub parent: Option<String>,
}

/// The env and parent of `POST /apps/{app}/releases`; both must come from
/// the body, once each.
pub fn release_inputs(
    body: &[(String, String)],
    query: &[(String, String)],
) -> Result<ReleaseInputs, FormRefusal> {
    let sensitive = ["env", "parent-release"];
    if query.iter().any(|(k, _)| sensitive.contains(&k.as_str())) {
        return Err(FormRefusal::Invalid(
            "env and parent-release must be sent in the form body, not the query string".into(),
        ));
    }
    for name in sensitive {
        if body.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(FormRefusal::Invalid(format!(
                "the form field {name} appears more than once"
            )));
        }
    }
    let value = |name: &str| body.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    Ok(ReleaseInputs {
        env: value("env"),
        parent: value("parent-release").filter(|v| !v.is_empty()),
    })
}

/// The env to forward for `posted`, given the parent release's env: the
/// caller's `access` and the rack/app's protected keys decide which keys
/// may change. Returns the env and the key names it changes.
pub fn check_release_env(
    policy: &Policy,
    rack: &str,
    app: &str,
    access: &SecretAccess,
    posted: &str,
    parent_env: &str,
) -> Result<(String, EnvChanges), FormRefusal> {
    let protected = |k: &str| policy.is_protected_env(rack, app, k);
    let globs = access.env_keys.as_ref();
    let allowed_fn = |k: &str| globs.into_iter().flatten().any(|g| g.matches(k));
    let allowed_desc = globs
        .into_iter()
        .flatten()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let rules = EnvRules {
        protected: &protected,
        may_change_protected: access.env_protected,
        allowed_key: globs
            .is_some()
            .then_some(&allowed_fn as &dyn Fn(&str) -> bool),
    };
    merge_env(posted, parent_env, &rules, &allowed_desc).map_err(|e| match e {
        EnvError::Protected(_) | EnvError::KeyNotAllowed { .. } => {
            FormRefusal::Denied(e.to_string())
        }
        _ => FormRefusal::Invalid(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_urls_must_name_the_app() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_build("myapp", &f(&[("url", "object://myapp/tmp/a.tgz")])).is_ok());
        for bad in [
            "object://other/tmp/a.tgz",
            "dir:///etc",
            "object://myapp/",
            "object://myapp",
            "object://myapp.evil/x",
            "https://x/y",
        ] {
            assert!(check_build("myapp", &f(&[("url", bad)])).is_err(), "{bad}");
        }
        assert!(check_build(
            "myapp",
            &f(&[("url", "object://myapp/a"), ("url", "dir:///x")])
        )
        .is_err());
        assert!(
            check_build("myapp", &f(&[("external", "TRUE")]))
                .unwrap()
                .external
        );
        assert!(
            !check_build("myapp", &f(&[("external", "false")]))
                .unwrap()
                .external
        );
    }

    fn rules<'a>(
        protected: &'a dyn Fn(&str) -> bool,
        may: bool,
        allowed: Option<&'a dyn Fn(&str) -> bool>,
    ) -> EnvRules<'a> {
        EnvRules {
            protected,
            may_change_protected: may,
            allowed_key: allowed,
        }
    }

    const PARENT: &str = "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=1\nSECRET_KEY=s3cr3t";

    #[test]
    fn placeholders_keep_values_and_missing_keys_are_removed() {
        let none = |_: &str| false;
        let (env, ch) = merge_env(
            "DATABASE_URL=******\nFEATURE_X=2\nNEW=n",
            PARENT,
            &rules(&none, false, None),
            "",
        )
        .unwrap();
        assert_eq!(
            env,
            "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=2\nNEW=n"
        );
        assert_eq!(ch.added, ["NEW"]);
        assert_eq!(ch.changed, ["FEATURE_X"]);
        assert_eq!(ch.removed, ["SECRET_KEY"]);
        assert_eq!(ch.summary(), "add:NEW change:FEATURE_X remove:SECRET_KEY");
    }

    #[test]
    fn protected_keys_are_kept_or_refused_unless_permitted() {
        let prot = |k: &str| k == "DATABASE_URL";
        let (env, ch) = merge_env(
            "FEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, false, None),
            "",
        )
        .unwrap();
        assert!(
            env.contains("DATABASE_URL=postgres://u:dbsecret@db/x"),
            "{env}"
        );
        assert_eq!(ch.kept, ["DATABASE_URL"]);
        assert_eq!(
            merge_env(
                "DATABASE_URL=x\nFEATURE_X=1\nSECRET_KEY=******",
                PARENT,
                &rules(&prot, false, None),
                ""
            ),
            Err(EnvError::Protected("DATABASE_URL".into()))
        );
        let (env, ch) = merge_env(
            "DATABASE_URL=x\nFEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, true, None),
            "",
        )
        .unwrap();
        assert!(env.starts_with("DATABASE_URL=x\n"), "{env}");
        assert_eq!(ch.changed, ["DATABASE_URL"]);
        let (env, _) = merge_env(
            "FEATURE_X=1\nSECRET_KEY=******",
            PARENT,
            &rules(&prot, true, None),
            "",
        )
        .unwrap();
        assert!(!env.contains("DATABASE_URL"), "{env}");
    }

    #[test]
    fn key_patterns_limit_changes() {
        let none = |_: &str| false;
        let feature = |k: &str| k.starts_with("FEATURE_");
        let r = rules(&none, false, Some(&feature));
        assert!(merge_env(
            "DATABASE_URL=******\nFEATURE_X=0\nFEATURE_Y=1\nSECRET_KEY=******",
            PARENT,
            &r,
            "FEATURE_*"
        )
        .is_ok());
        let err = merge_env(
            "DATABASE_URL=******\nFEATURE_X=0\nSECRET_KEY=new",
            PARENT,
            &r,
            "FEATURE_*",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "env key SECRET_KEY may not be changed by this identity (it may change only FEATURE_*)"
        );
        assert!(matches!(
            merge_env("FEATURE_X=1", PARENT, &r, "FEATURE_*"),
            Err(EnvError::KeyNotAllowed { .. })
        ));
    }

    #[test]
    fn malformed_and_orphan_placeholders_are_refused() {
        let none = |_: &str| false;
        assert_eq!(
            merge_env("A=1\njunk", "", &rules(&none, false, None), ""),
            Err(EnvError::Malformed(2))
        );
        assert_eq!(
            merge_env("NEW=******", PARENT, &rules(&none, false, None), ""),
            Err(EnvError::PlaceholderWithoutValue("NEW".into()))
        );
    }
}
