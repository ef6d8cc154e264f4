//! Expiring grants, step-up and CI claim requirements, with a pinned
//! clock: loaded through the real config loader, decided by the engine.

use super::*;
use crate::config::ConfigError;
use crate::policy::load::parse_time;
use crate::policy::test_support::{self, GATEWAY};
use crate::policy::{Policy, SubjectKind, Verdict};

const VIEWER: &str = "allow: [apps, apps info, ps]\n";
const BUILDER: &str = "inherits: [viewer]\nallow: [build]\n";
const DEPLOYER: &str = "inherits: [builder]\nallow: [releases promote]\n";
const ADMIN: &str = "allow: ['*']\n";

/// This file's four roles, then `files` (which may replace them).
fn try_load(files: &[(&str, &str)]) -> Result<Policy, Vec<ConfigError>> {
    let mut all = vec![
        ("roles/viewer.yaml", VIEWER),
        ("roles/builder.yaml", BUILDER),
        ("roles/deployer.yaml", DEPLOYER),
        ("roles/admin.yaml", ADMIN),
    ];
    all.extend_from_slice(files);
    test_support::try_load(&all).map_err(|e| e.0)
}

fn policy(files: &[(&str, &str)]) -> Policy {
    try_load(files).unwrap_or_else(|e| panic!("policy does not load: {e:?}"))
}

fn errors(files: &[(&str, &str)]) -> String {
    match try_load(files) {
        Ok(_) => panic!("expected load errors"),
        Err(e) => e.iter().map(|e| format!("{e}\n")).collect(),
    }
}

fn t(s: &str) -> i64 {
    parse_time(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn decide(
    p: &Policy,
    who: &str,
    rack: &str,
    op: &str,
    now: Option<i64>,
    auth: Option<&Auth>,
) -> Verdict {
    let s = p.find_subject(who).unwrap_or_else(|| panic!("no {who}"));
    p.decide(
        s,
        &Facts {
            rack,
            operation: op,
            app: Some("billing"),
            now,
            auth,
            ..Default::default()
        },
    )
}

const BREAK_GLASS: &str = "\
users:
  alice@example.com:
    grants:
      - {role: viewer, scope: production/*}
      - role: admin
        scope: production/*
        expires: 2026-12-01T14:00:00Z
        reason: INC-123
  bob@example.com:
    expires: 2026-12-01
    reason: contractor
    grants:
      - {role: viewer, scope: staging/*}
";

#[test]
fn an_expired_grant_counts_for_nothing_from_its_expiry_on() {
    let p = policy(&[("users.yaml", BREAK_GLASS)]);
    let before = decide(
        &p,
        "alice@example.com",
        "production",
        "releases create",
        Some(t("2026-12-01T13:59:59Z")),
        None,
    );
    assert!(before.is_allow(), "{before:?}");
    let at = decide(
        &p,
        "alice@example.com",
        "production",
        "releases create",
        Some(t("2026-12-01T14:00:00Z")),
        None,
    );
    assert!(!at.is_allow(), "{at:?}");
    // Only the live grant was considered, and it is named with its line.
    assert!(
        at.reason()
            .ends_with("(granted there: viewer users.yaml:4)"),
        "{at:?}"
    );
    // The grant without expiry keeps working (control).
    let view = decide(
        &p,
        "alice@example.com",
        "production",
        "apps",
        Some(t("2026-12-02")),
        None,
    );
    assert!(view.is_allow(), "{view:?}");
    // An unknown clock lets no expiring grant count.
    assert!(!decide(
        &p,
        "alice@example.com",
        "production",
        "releases create",
        None,
        None
    )
    .is_allow());
}

#[test]
fn an_expired_user_has_no_access_and_the_reason_says_so() {
    let p = policy(&[("users.yaml", BREAK_GLASS)]);
    let ok = decide(
        &p,
        "bob@example.com",
        "staging",
        "apps",
        Some(t("2026-11-30T23:59:59Z")),
        None,
    );
    assert!(ok.is_allow(), "{ok:?}");
    let late = decide(
        &p,
        "bob@example.com",
        "staging",
        "apps",
        Some(t("2026-12-01")),
        None,
    );
    assert_eq!(
        late.reason(),
        "denied: the access of bob@example.com expired at 2026-12-01T00:00:00Z (users.yaml:10, reason: contractor)"
    );
}

#[test]
fn check_lists_expired_grants_with_their_lines() {
    let p = policy(&[("users.yaml", BREAK_GLASS)]);
    assert!(p.expired(t("2026-11-30")).is_empty());
    let w: Vec<String> = p
        .expired(t("2026-12-01T15:00:00Z"))
        .into_iter()
        .map(|(at, m)| format!("{at}: {m}"))
        .collect();
    assert_eq!(
        w,
        [
            "users.yaml:5: grant admin on production/* of alice@example.com expired at 2026-12-01T14:00:00Z and counts for nothing",
            "users.yaml:10: bob@example.com expired at 2026-12-01T00:00:00Z and counts for nothing",
        ]
    );
}

#[test]
fn policy_tests_pin_the_clock() {
    let cases = "\
cases:
  - {identity: alice@example.com, rack: production, app: billing, operation: releases create, at: '2026-12-01T13:00:00Z', expect: allow}
  - {identity: alice@example.com, rack: production, app: billing, operation: releases create, at: '2026-12-01T14:00:00Z', expect: deny}
";
    policy(&[("users.yaml", BREAK_GLASS), ("tests/expiry.yaml", cases)]);
    let wrong = "cases:\n  - {identity: alice@example.com, rack: production, app: billing, operation: releases create, at: '2026-12-01T15:00:00Z', expect: allow}\n";
    let e = errors(&[("users.yaml", BREAK_GLASS), ("tests/expiry.yaml", wrong)]);
    assert!(e.contains("expected allow, got deny"), "{e}");
    let bad = "cases:\n  - {identity: alice@example.com, rack: production, operation: apps, at: tomorrow, expect: allow}\n";
    let e = errors(&[("users.yaml", BREAK_GLASS), ("tests/expiry.yaml", bad)]);
    assert!(e.contains("at: `tomorrow` is not a date"), "{e}");
}

#[test]
fn a_malformed_expiry_is_an_error_with_its_line() {
    let users = "users:\n  a@example.com:\n    grants:\n      - role: admin\n        scope: staging/*\n        expires: next week\n";
    let e = errors(&[("users.yaml", users)]);
    assert!(e.contains("users.yaml:6"), "{e}");
    assert!(e.contains("expires must be a date"), "{e}");
}

const STEP_UP_USERS: &str = "\
users:
  alice@example.com:
    grants:
      - {role: viewer, scope: production/*}
      - role: deployer
        scope: production/*
        require: {mfa: true, max_auth_age: 12h}
";

fn login(amr: &[&str], auth_time: i64) -> Auth {
    Auth {
        amr: amr.iter().map(|s| s.to_string()).collect(),
        auth_time: Some(auth_time),
        login_url: Some("https://gw.example.com".into()),
        ..Default::default()
    }
}

#[test]
fn step_up_needs_a_recent_mfa_login_and_says_how_to_get_one() {
    let p = policy(&[("users.yaml", STEP_UP_USERS)]);
    let now = t("2026-12-01T10:00:00Z");
    let fresh = login(&["pwd", "otp"], now - 3600);
    let v = decide(
        &p,
        "alice@example.com",
        "production",
        "releases promote",
        Some(now),
        Some(&fresh),
    );
    assert!(v.is_allow(), "{v:?}");
    let want = "denied: deployer on production/* (users.yaml:7) needs a login with MFA in the last 12h: run rack-gateway login production https://gw.example.com";
    let password_only = login(&["pwd"], now - 60);
    let v = decide(
        &p,
        "alice@example.com",
        "production",
        "releases promote",
        Some(now),
        Some(&password_only),
    );
    assert_eq!(v.reason(), want);
    let stale = login(&["pwd", "hwk"], now - 13 * 3600);
    let v = decide(
        &p,
        "alice@example.com",
        "production",
        "releases promote",
        Some(now),
        Some(&stale),
    );
    assert_eq!(v.reason(), want);
    // What the viewer grant allows needs no step-up (control).
    let v = decide(
        &p,
        "alice@example.com",
        "production",
        "apps",
        Some(now),
        Some(&password_only),
    );
    assert!(v.is_allow(), "{v:?}");
}

#[test]
fn a_role_requirement_applies_to_every_grant_of_it_and_is_inherited() {
    let roles = "inherits: [deployer]\nrequire: {mfa: true}\n";
    let users = "users:\n  a@example.com:\n    grants:\n      - {role: strict, scope: staging/*}\n";
    let p = policy(&[("roles/strict.yaml", roles), ("users.yaml", users)]);
    let now = t("2026-12-01T10:00:00Z");
    let v = decide(
        &p,
        "a@example.com",
        "staging",
        "build",
        Some(now),
        Some(&login(&["pwd"], now)),
    );
    assert!(
        v.reason()
            .contains("needs a login with MFA: run rack-gateway login staging"),
        "{v:?}"
    );
    let v = decide(
        &p,
        "a@example.com",
        "staging",
        "build",
        Some(now),
        Some(&login(&["mfa"], now)),
    );
    assert!(v.is_allow(), "{v:?}");
    let child = "inherits: [strict]\n";
    let users = "users:\n  a@example.com:\n    grants:\n      - {role: child, scope: staging/*}\n";
    let p = policy(&[
        ("roles/strict.yaml", roles),
        ("roles/child.yaml", child),
        ("users.yaml", users),
    ]);
    let v = decide(
        &p,
        "a@example.com",
        "staging",
        "build",
        Some(now),
        Some(&login(&["pwd"], now)),
    );
    assert!(!v.is_allow(), "{v:?}");
}

#[test]
fn the_mfa_amr_list_is_configurable() {
    let gateway = format!("{GATEWAY}policy:\n  mfa_amr: [hwk]\n");
    let p = policy(&[("gateway.yaml", &gateway), ("users.yaml", STEP_UP_USERS)]);
    let now = t("2026-12-01T10:00:00Z");
    let otp = login(&["otp"], now);
    assert!(!decide(
        &p,
        "alice@example.com",
        "production",
        "build",
        Some(now),
        Some(&otp)
    )
    .is_allow());
    let hwk = login(&["hwk"], now);
    assert!(decide(
        &p,
        "alice@example.com",
        "production",
        "build",
        Some(now),
        Some(&hwk)
    )
    .is_allow());
}

const CI: &str = "\
ci:
  app-workflow:
    federated:
      issuer: https://token.actions.githubusercontent.com
      audience: rack-gateway
      claims: {repository: example/app}
    expires: 2027-06-30
    grants:
      - {role: builder, scope: production/*}
      - role: deployer
        scope: production/*
        require:
          claims: {environment: production}
";

fn ci_token(claims: &[(&str, &str)]) -> Auth {
    Auth {
        ci: true,
        claims: claims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn deploy_approval_is_the_protected_environment_claim() {
    let p = policy(&[("ci.yaml", CI)]);
    let now = Some(t("2026-12-01T10:00:00Z"));
    let approved = ci_token(&[("repository", "example/app"), ("environment", "production")]);
    let v = decide(
        &p,
        "app-workflow",
        "production",
        "releases promote",
        now,
        Some(&approved),
    );
    assert!(v.is_allow(), "{v:?}");
    let plain = ci_token(&[("repository", "example/app"), ("ref", "refs/heads/main")]);
    let v = decide(
        &p,
        "app-workflow",
        "production",
        "releases promote",
        now,
        Some(&plain),
    );
    assert!(
        v.reason().starts_with("denied: deployer on production/* (ci.yaml:13) needs a CI token whose `environment` claim matches `production`"),
        "{v:?}"
    );
    let v = decide(&p, "app-workflow", "production", "build", now, Some(&plain));
    assert!(v.is_allow(), "{v:?}");
    let staging = ci_token(&[("environment", "staging")]);
    assert!(!decide(
        &p,
        "app-workflow",
        "production",
        "releases promote",
        now,
        Some(&staging)
    )
    .is_allow());
}

#[test]
fn ci_identities_never_satisfy_mfa() {
    let p = policy(&[("roles/strict.yaml", "inherits: [deployer]\nrequire: {mfa: true}\n"), ("users.yaml", "users:\n  a@example.com:\n    grants:\n      - {role: strict, scope: staging/*}\n"), ("ci.yaml", "ci:\n  bot:\n    token_sha256: 6f1219c6778344693b80e8a33775d5df26fd0fc89e133c68ea3c2778ff7af0e0\n    expires: 2027-06-30\n    grants:\n      - {role: strict, scope: staging/*}\n")]);
    let now = t("2026-12-01T10:00:00Z");
    let mut bot = login(&["mfa"], now);
    bot.ci = true;
    let v = decide(&p, "bot", "staging", "build", Some(now), Some(&bot));
    assert!(
        v.reason()
            .ends_with("needs a login with MFA, which a CI identity never has"),
        "{v:?}"
    );
    assert_eq!(
        p.subject(SubjectKind::Ci, "bot").map(|s| s.grants.len()),
        Some(1)
    );
}

#[test]
fn requirements_nobody_can_meet_are_check_errors() {
    let ci_mfa = "ci:\n  bot:\n    token_sha256: 6f1219c6778344693b80e8a33775d5df26fd0fc89e133c68ea3c2778ff7af0e0\n    expires: 2027-06-30\n    grants:\n      - role: deployer\n        scope: staging/*\n        require: {mfa: true}\n";
    let e = errors(&[("ci.yaml", ci_mfa)]);
    assert!(
        e.contains("ci.yaml:8") && e.contains("a CI identity never satisfies mfa"),
        "{e}"
    );
    let strict = "inherits: [deployer]\nrequire: {max_auth_age: 1h}\n";
    let ci_role = "ci:\n  bot:\n    token_sha256: 6f1219c6778344693b80e8a33775d5df26fd0fc89e133c68ea3c2778ff7af0e0\n    expires: 2027-06-30\n    grants:\n      - {role: strict, scope: staging/*}\n";
    let e = errors(&[("roles/strict.yaml", strict), ("ci.yaml", ci_role)]);
    assert!(
        e.contains("role `strict` requires mfa or max_auth_age, but only CI identities hold it"),
        "{e}"
    );
    // Held by a person too: not an error (control).
    let users = "users:\n  a@example.com:\n    grants:\n      - {role: strict, scope: staging/*}\n";
    policy(&[
        ("roles/strict.yaml", strict),
        ("ci.yaml", ci_role),
        ("users.yaml", users),
    ]);
    let user_claims = "users:\n  a@example.com:\n    grants:\n      - role: deployer\n        scope: staging/*\n        require: {claims: {environment: production}}\n";
    let e = errors(&[("users.yaml", user_claims)]);
    assert!(
        e.contains("a person's login carries no CI token claims"),
        "{e}"
    );
    let bad_age = "users:\n  a@example.com:\n    grants:\n      - role: deployer\n        scope: staging/*\n        require: {max_auth_age: soon}\n";
    let e = errors(&[("users.yaml", bad_age)]);
    assert!(e.contains("`soon` is not a duration"), "{e}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("12h"), Some(43_200));
    assert_eq!(parse_duration("30m"), Some(1_800));
    assert_eq!(parse_duration("2d"), Some(172_800));
    assert_eq!(parse_duration("90"), Some(90));
    assert_eq!(parse_duration("0h"), None);
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(duration(43_200), "12h");
    assert_eq!(duration(5_400), "90m");
    assert_eq!(duration(61), "61s");
}

#[test]
fn liveness_fails_closed_without_a_clock() {
    assert!(live(None, None));
    assert!(live(Some(10), Some(9)));
    assert!(!live(Some(10), Some(10)));
    assert!(!live(Some(10), None));
}
