//! Decisions over form bodies, pure and over facts fetched beforehand:
//! the build side doors (`POST /apps/{app}/builds`) and the inputs of
//! `POST /apps/{app}/releases`, whose env is decided in [`super::env`].

use super::env::{release_env, EnvChanges, EnvRules, Releases};
use super::{Facts, Policy, SecretAccess, Subject, Verdict};

/// What a build request asks for, from its form body and query string
/// (the rack reads form values from both).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BuildForm {
    pub external: bool,
}

/// Checks `POST /apps/{app}/builds`: every `url` must be
/// `object://{app}/<key>` (no `dir://`, no other app, no other scheme).
pub(crate) fn check_build(app: &str, fields: &[(String, String)]) -> Result<BuildForm, String> {
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

// ---------------------------------------------------------------------------
// The decisions the proxy asks, over the parsed form and fetched facts

/// Why a form is refused: by policy (403) or as malformed (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormRefusal {
    Denied(String),
    Invalid(String),
}

/// `POST /apps/{app}/builds`: the source must be this app's object, and an
/// external build needs `builds external`. The rack reads form values from
/// the body and the query, so both are checked.
pub(crate) fn check_build_form(
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
pub(crate) struct ReleaseInputs {
    /// The posted env, if any.
    pub env: Option<String>,
    /// The posted `parent-release`, if non-empty.
    pub parent: Option<String>,
}

/// The env and parent of `POST /apps/{app}/releases`; both must come from
/// the body, once each.
pub(crate) fn release_inputs(
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

/// `build` and `parent-release` on a release creation select code (a
/// deploy, or a rollback that restores an old build and env): they need
/// what deploying and promoting need, not just `releases create`, which
/// `convox env set` uses.
pub(crate) fn check_release_code(
    policy: &Policy,
    subject: &Subject,
    base: &Facts<'_>,
    app: &str,
    body: &[(String, String)],
) -> Result<(), FormRefusal> {
    for (field, op) in [("build", "build"), ("parent-release", "releases promote")] {
        if !body.iter().any(|(k, v)| k == field && !v.is_empty()) {
            continue;
        }
        let facts = Facts {
            rack: base.rack,
            operation: op,
            app: Some(app),
            now: base.now,
            auth: base.auth,
            ..Default::default()
        };
        if let Verdict::Deny(why) = policy.decide(subject, &facts) {
            return Err(FormRefusal::Denied(format!(
                "the `{field}` field selects code, which needs `{op}` ({why})"
            )));
        }
    }
    Ok(())
}

/// Decides a release creation's env ([`super::env::release_env`]). The caller's
/// `access` and the rack/app's protected keys decide which keys may
/// change. Returns the env to forward (when one was posted) and the key
/// names that change.
pub(crate) fn check_release_env(
    policy: &Policy,
    rack: &str,
    app: &str,
    access: &SecretAccess,
    posted: Option<&str>,
    releases: Releases<'_>,
) -> Result<(Option<String>, EnvChanges), FormRefusal> {
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
        allowed_desc: &allowed_desc,
    };
    release_env(posted, releases, &rules).map_err(|e| {
        if e.is_denial() {
            FormRefusal::Denied(e.to_string())
        } else {
            FormRefusal::Invalid(e.to_string())
        }
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
}
