//! The env parsers against §3.1 of rack-semantics.md, and the release
//! decision against the active release.

use super::*;

fn rules<'a>(
    protected: &'a dyn Fn(&str) -> bool,
    may: bool,
    allowed: Option<&'a dyn Fn(&str) -> bool>,
) -> EnvRules<'a> {
    EnvRules {
        protected,
        may_change_protected: may,
        allowed_key: allowed,
        allowed_desc: "FEATURE_*",
    }
}

const ACTIVE: &str = "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=1\nSECRET_KEY=s3cr3t";

/// A release creation whose base (what `convox env` showed) is also the
/// active release, the common case.
fn decide(
    posted: Option<&str>,
    active: &str,
    r: &EnvRules<'_>,
) -> Result<(Option<String>, EnvChanges), EnvError> {
    release_env(
        posted,
        Releases {
            base: active,
            active,
        },
        r,
    )
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_rack_trims_keys_keeps_values_and_the_last_duplicate_wins() {
    let env = "A=1\r\n B =2\n\tC\u{a0}= v \nno equals\n=x\n#D=3\nexport E=4\nA=last\rX=y\n";
    assert_eq!(
        rack_env(env).unwrap(),
        map(&[
            ("A", "last\rX=y"),
            ("B", "2"),
            ("C", " v "),
            ("#D", "3"),
            ("export E", "4"),
        ])
    );
    assert_eq!(rack_env("").unwrap(), map(&[]));
    assert_eq!(rack_env("A=1\r").unwrap(), map(&[("A", "1")]));
    let long = format!("A={}", "x".repeat(MAX_LINE));
    assert_eq!(rack_env(&long), Err(EnvError::TooLong(1)));
}

#[test]
fn a_posted_env_that_the_rack_could_read_differently_is_refused() {
    assert_eq!(
        posted_env("A=1\n\nB=x=y").unwrap(),
        map(&[("A", "1"), ("B", "x=y")])
    );
    for (env, want) in [
        ("DATABASE_URL =evil", "surrounding whitespace"),
        ("DATABASE_URL\t=evil", "surrounding whitespace"),
        ("\u{a0}DATABASE_URL=evil", "surrounding whitespace"),
        ("A=1\r\nB=2", "carriage return"),
        ("A=1\rDATABASE_URL=x", "carriage return"),
        ("A=1\nA=2", "more than once"),
        ("no equals", "not KEY=VALUE"),
        ("#C=3", "not a valid name"),
        ("export X=1", "not a valid name"),
        ("1A=1", "not a valid name"),
        ("=x", "not a valid name"),
    ] {
        let e = posted_env(env).unwrap_err().to_string();
        assert!(e.contains(want), "{env:?}: {e}");
    }
    let long = format!("A={}", "x".repeat(MAX_LINE));
    assert!(matches!(posted_env(&long), Err(EnvError::TooLong(1))));
}

#[test]
fn every_accepted_posted_env_reads_the_same_to_the_rack() {
    for env in ["A=1", "A=1\nB=2\n", "A= spaced \n\nB=", "_X=a=b=c"] {
        assert_eq!(posted_env(env).unwrap(), rack_env(env).unwrap(), "{env:?}");
    }
}

#[test]
fn placeholders_keep_values_and_missing_keys_are_removed() {
    let none = |_: &str| false;
    let r = rules(&none, false, None);
    let posted = "DATABASE_URL=******\nFEATURE_X=2\nNEW=1";
    let (env, changes) = decide(Some(posted), ACTIVE, &r).unwrap();
    assert_eq!(
        env.unwrap(),
        "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=2\nNEW=1"
    );
    assert_eq!(
        changes.summary(),
        "add:NEW change:FEATURE_X remove:SECRET_KEY"
    );
    assert_eq!(
        decide(Some("GHOST=******"), ACTIVE, &r),
        Err(EnvError::PlaceholderWithoutValue("GHOST".into()))
    );
}

#[test]
fn protected_keys_are_kept_or_refused_unless_permitted() {
    let prot = |k: &str| k == "DATABASE_URL";
    let r = rules(&prot, false, None);
    // Left out: kept, not removed.
    let (env, changes) = decide(Some("FEATURE_X=1\nSECRET_KEY=******"), ACTIVE, &r).unwrap();
    assert!(env
        .unwrap()
        .contains("DATABASE_URL=postgres://u:dbsecret@db/x"));
    assert_eq!(changes.summary(), "kept:DATABASE_URL");
    // Changed: refused, whatever spelling the key has on the wire.
    assert_eq!(
        decide(Some("DATABASE_URL=evil"), ACTIVE, &r),
        Err(EnvError::Protected("DATABASE_URL".into()))
    );
    assert!(decide(Some("DATABASE_URL =evil"), ACTIVE, &r).is_err());
    // Permitted: changes and removals pass (control).
    let may = rules(&prot, true, None);
    let (_, changes) = decide(Some("DATABASE_URL=new"), ACTIVE, &may).unwrap();
    assert_eq!(
        changes.summary(),
        "change:DATABASE_URL remove:FEATURE_X,SECRET_KEY"
    );
}

#[test]
fn a_rollback_without_env_is_diffed_against_the_active_release() {
    let prot = |k: &str| k == "DATABASE_URL";
    let r = rules(&prot, false, None);
    let old = "DATABASE_URL=postgres://old\nFEATURE_X=1\nSECRET_KEY=s3cr3t";
    assert_eq!(
        release_env(
            None,
            Releases {
                base: old,
                active: ACTIVE
            },
            &r
        ),
        Err(EnvError::Protected("DATABASE_URL".into()))
    );
    // Placeholders come from the base (what `convox env` showed), the
    // diff from the active release.
    let (env, changes) = release_env(
        Some("DATABASE_URL=******\nFEATURE_X=1\nSECRET_KEY=******"),
        Releases {
            base: old,
            active: ACTIVE,
        },
        &rules(&prot, true, None),
    )
    .unwrap();
    assert!(env.unwrap().contains("postgres://old"));
    assert_eq!(changes.summary(), "change:DATABASE_URL");
    // The same env as the active one: nothing changes, nothing forwarded.
    let (env, changes) = release_env(
        None,
        Releases {
            base: ACTIVE,
            active: ACTIVE,
        },
        &r,
    )
    .unwrap();
    assert_eq!((env, changes.summary()), (None, String::new()));
    // A base whose only difference is an unprotected key (control).
    let base = "DATABASE_URL=postgres://u:dbsecret@db/x\nFEATURE_X=0\nSECRET_KEY=s3cr3t";
    let (_, changes) = release_env(
        None,
        Releases {
            base,
            active: ACTIVE,
        },
        &r,
    )
    .unwrap();
    assert_eq!(changes.summary(), "change:FEATURE_X");
    // `env=` removes everything: every key must be removable.
    assert_eq!(
        decide(Some(""), ACTIVE, &r).unwrap().1.summary(),
        "remove:FEATURE_X,SECRET_KEY kept:DATABASE_URL"
    );
}

#[test]
fn key_patterns_limit_changes() {
    let none = |_: &str| false;
    let feature = |k: &str| k.starts_with("FEATURE_");
    let r = rules(&none, false, Some(&feature));
    let (_, changes) = decide(
        Some("DATABASE_URL=******\nFEATURE_X=0\nFEATURE_Y=1\nSECRET_KEY=******"),
        ACTIVE,
        &r,
    )
    .unwrap();
    assert_eq!(changes.summary(), "add:FEATURE_Y change:FEATURE_X");
    assert_eq!(
        decide(
            Some("DATABASE_URL=******\nFEATURE_X=1\nSECRET_KEY=other"),
            ACTIVE,
            &r
        ),
        Err(EnvError::KeyNotAllowed {
            key: "SECRET_KEY".into(),
            allowed: "FEATURE_*".into()
        })
    );
}

mod model {
    //! The gateway's reading of an accepted env equals the rack's, on
    //! generated inputs (the mock rack's parser is the rack's model).
    use super::*;
    use proptest::prelude::*;

    fn piece() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "A", "B", "_x", "=", " ", "\t", "\r", "\n", "\u{a0}", "v", "#", "=v",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #[test]
        fn accepted_envs_read_the_same(parts in prop::collection::vec(piece(), 0..24)) {
            let env: String = parts.concat();
            if let Ok(ours) = posted_env(&env) {
                let rack = crate::dev::mock_rack::parse_env(&env).expect("the mock parses it");
                prop_assert_eq!(&ours, &rack);
                prop_assert_eq!(ours, rack_env(&env).unwrap());
            }
        }
    }
}
